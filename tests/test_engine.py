import argparse
import math
import re

import pytest
import torch
from torch import nn

from racecomp import cli, engine


class TinyFeatureInfo:
    """The part of timm's FeatureInfo that encoders.encoder_stage_prefixes reads: each stage's last module."""

    def module_name(self):
        return ["stem", "layer1"]


class TinyEncoder(nn.Module):
    """Two 'stages' with BatchNorm and a resnet-style projection shortcut (layer1.0.downsample)."""

    def __init__(self, bn=True):
        super().__init__()
        norm = nn.BatchNorm2d if bn else nn.Identity
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norm(8), nn.ReLU())
        self.layer1 = nn.ModuleList([nn.ModuleDict({"conv": nn.Conv2d(8, 8, 3, padding=1), "bn": norm(8),
                                                    "downsample": nn.Conv2d(8, 8, 1)})])
        self.feature_info = TinyFeatureInfo()

    def forward(self, x):
        x = self.stem(x)
        block = self.layer1[0]
        return torch.relu(block["bn"](block["conv"](x)) + block["downsample"](x))


class TinyNet(nn.Module):
    def __init__(self, bn=True):
        super().__init__()
        self.encoder = TinyEncoder(bn)
        self.decoder = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        return self.decoder(self.encoder(x))


def mse_loss(model, batch):
    loss = ((model(batch["x"]) - batch["y"]) ** 2).mean()
    return loss, {}


def make_batches(n_images, batch_size, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n_images, 3, 8, 8, generator=generator, dtype=dtype)
    y = torch.randn(n_images, 3, 8, 8, generator=generator, dtype=dtype)
    return [{"x": x[i:i + batch_size], "y": y[i:i + batch_size]} for i in range(0, n_images, batch_size)]


def make_trainer(model, tmp_path, batches, accum=1, epochs=1, optimizer=None, **settings):
    """A Trainer over `batches` (AdamW at 1e-2 unless `optimizer` is given), silent, with `settings` added."""
    optimizer = optimizer or engine.build_optimizer(model, lr=1e-2, weight_decay=0.0)
    steps = math.ceil(len(batches) / accum)
    settings = engine.TrainingSettings(epochs=epochs, accum_steps=accum, log_every=0, **settings)
    return engine.Trainer(model, mse_loss, optimizer, str(tmp_path), settings, steps)


def test_lr_factor_warmup_then_cosine():
    assert engine.lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert engine.lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert engine.lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert engine.lr_factor(55, 100, 10) == pytest.approx(0.5)  # half-way through the cosine
    assert engine.lr_factor(100, 100, 10) == pytest.approx(0.0, abs=1e-12)


def test_training_settings_from_the_training_flags():
    parser = argparse.ArgumentParser()
    cli.add_training_arguments(parser)
    args = parser.parse_args(["--epochs", "4", "--accum-steps", "2", "--amp", "bf16", "--clip-grad", "0.5",
                              "--warmup-steps", "3", "--unfreeze", "1,3", "--log-every", "0"])
    assert engine.TrainingSettings.from_args(args) == engine.TrainingSettings(
        epochs=4, accum_steps=2, amp="bf16", clip_grad=0.5, warmup_steps=3, finetune="full", unfreeze=(1, 3),
        log_every=0)
    defaults = engine.TrainingSettings.from_args(parser.parse_args([]))
    assert defaults.unfreeze == () and defaults.clip_grad == 1.0  # the flags' defaults, not the dataclass's
    assert engine.TrainingSettings(unfreeze=[0, 2]).unfreeze == (0, 2)  # stored as a tuple: hashable, frozen


@pytest.mark.parametrize("settings, message", [
    ({"accum_steps": 0}, "--accum-steps 0: must be >= 1"),
    ({"epochs": -1}, "--epochs -1"),
    ({"warmup_steps": -2}, "--warmup-steps -2"),
    ({"log_every": -1}, "--log-every -1"),
    ({"amp": "fp8"}, "--amp 'fp8'"),
    ({"clip_grad": -1.0}, "--clip-grad -1.0"),
    ({"clip_grad": float("nan")}, "--clip-grad nan"),
    ({"finetune": "lora"}, "--finetune 'lora'"),
    ({"unfreeze": (3, 1)}, "increasing"),
    ({"unfreeze": (-1,)}, "non-negative"),
    ({"unfreeze": (1,), "finetune": "frozen"}, "--finetune full only"),
])
def test_training_settings_refuse_bad_values(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        engine.TrainingSettings(**settings)


def test_trainer_refuses_unfreezing_a_model_without_encoder_stages(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 3, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="no timm encoder"):
        engine.Trainer(model, mse_loss, optimizer, str(tmp_path), engine.TrainingSettings(unfreeze=(1,)), 1)
    with pytest.raises(TypeError, match="TrainingSettings"):
        engine.Trainer(model, mse_loss, optimizer, str(tmp_path), argparse.Namespace(epochs=1), 1)
    with pytest.raises(ValueError, match="steps_per_epoch 0"):
        engine.Trainer(model, mse_loss, optimizer, str(tmp_path), engine.TrainingSettings(), 0)


def one_sgd_step(model, tmp_path, batches, accum):
    """The parameter change of one optimizer step of SGD(lr=1) over `batches`: minus the step's gradient."""
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = make_trainer(model, tmp_path, batches, accum=accum, optimizer=torch.optim.SGD(model.parameters(), lr=1.0))
    trainer.fit(batches)
    assert trainer.step == 1
    return {name: p.detach() - before[name] for name, p in model.named_parameters()}


def test_accumulation_two_by_four_equals_batch_eight(tmp_path):
    # SGD with lr 1 makes the step the gradient itself, so a window-sized error in the loss scaling (e.g.
    # no division by the window: twice the gradient) is off by the gradient's own size. Batch 8 and 2 x 4
    # sum in other orders, so they agree to float64 rounding relative to the gradient, not bit for bit.
    torch.manual_seed(0)
    reference = TinyNet(bn=False).double()
    accumulated = TinyNet(bn=False).double()
    accumulated.load_state_dict(reference.state_dict())
    start = _snapshot(reference)
    step_8 = one_sgd_step(reference, tmp_path / "a", make_batches(8, 8, dtype=torch.float64), accum=1)
    step_4x2 = one_sgd_step(accumulated, tmp_path / "b", make_batches(8, 4, dtype=torch.float64), accum=2)
    # The step of batch 8 is minus the gradient of its mean loss, computed here without the Trainer.
    model = TinyNet(bn=False).double()
    model.load_state_dict(start)
    batch = make_batches(8, 8, dtype=torch.float64)[0]
    mse_loss(model, batch)[0].backward()
    gradient = {name: p.grad for name, p in model.named_parameters()}
    norm = torch.sqrt(sum(g.square().sum() for g in gradient.values()))
    assert norm > 0 and all(torch.count_nonzero(g) > 0 for g in gradient.values())
    for name, g in gradient.items():
        assert (step_8[name] + g).abs().max() / norm < 1e-12, name
        assert (step_4x2[name] - step_8[name]).abs().max() / norm < 1e-12, name


def test_short_last_window_is_averaged_over_its_real_size(tmp_path):
    torch.manual_seed(0)
    model = TinyNet(bn=False)
    batches = make_batches(12, 4)  # 3 micro-batches, accum 2 -> windows of 2 and 1
    raw_losses, backward_losses = [], []

    def recording_loss(model, batch):
        loss, parts = mse_loss(model, batch)
        raw_losses.append(loss.item())
        return loss, parts

    trainer = make_trainer(model, tmp_path, batches, accum=2)
    trainer.compute_loss = recording_loss
    original_backward = torch.Tensor.backward

    def spy(loss, *args, **kwargs):
        backward_losses.append(loss.item())
        return original_backward(loss, *args, **kwargs)

    torch.Tensor.backward = spy
    try:
        trainer.fit(batches)
    finally:
        torch.Tensor.backward = original_backward
    assert trainer.step == 2
    ratios = [b / r for b, r in zip(backward_losses, raw_losses)]
    assert ratios == [0.5, 0.5, 1.0]  # division by 2 or 1 is exact in floating point


def test_scheduler_steps_once_per_optimizer_step(tmp_path):
    model = TinyNet(bn=False)
    batches = make_batches(20, 4)  # 5 micro-batches, accum 2 -> 3 optimizer steps
    trainer = make_trainer(model, tmp_path, batches, accum=2, epochs=2)
    trainer.fit(batches)
    assert trainer.step == 6
    assert trainer.scheduler.last_epoch == 6


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_staged_unfreezing_freezes_by_name(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    batches = make_batches(8, 4)
    before = _snapshot(model)
    trainer = make_trainer(model, tmp_path, batches, epochs=3, unfreeze=(1, 2))
    assert trainer.stage_prefixes == [("encoder.stem.",), ("encoder.layer1.",)]  # derived from the model
    trainer.epochs = 1
    trainer.fit(batches)  # epoch 0: only the decoder trains
    after = _snapshot(model)
    for key in before:
        if key.startswith("encoder."):
            assert torch.equal(before[key], after[key]), f"{key} moved while frozen"
    assert not torch.equal(before["decoder.weight"], after["decoder.weight"])
    trainer.epochs = 2
    trainer.fit(batches)  # epoch 1: the last encoder stage opens, the stem stays frozen
    final = _snapshot(model)
    assert torch.equal(after["encoder.stem.0.weight"], final["encoder.stem.0.weight"])
    assert torch.equal(after["encoder.stem.1.running_mean"], final["encoder.stem.1.running_mean"])
    assert not torch.equal(after["encoder.layer1.0.conv.weight"], final["encoder.layer1.0.conv.weight"])


@pytest.mark.parametrize("strategy", ["frozen", "bn_stats", "bn_affine", "bn_skip"])
def test_finetune_strategies_touch_only_what_they_name(tmp_path, strategy):
    torch.manual_seed(0)
    model = TinyNet()
    batches = make_batches(8, 4)
    before = _snapshot(model)
    make_trainer(model, tmp_path, batches, finetune=strategy).fit(batches)
    after = _snapshot(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    encoder_changed = {k for k in changed if k.startswith("encoder.")}
    bn_stats = {k for k in before if k.startswith("encoder.") and ("running_" in k or "num_batches" in k)}
    bn_affine = {"encoder.stem.1.weight", "encoder.stem.1.bias", "encoder.layer1.0.bn.weight",
                 "encoder.layer1.0.bn.bias"}
    skip = {"encoder.layer1.0.downsample.weight", "encoder.layer1.0.downsample.bias"}
    expected = {"frozen": set(), "bn_stats": bn_stats, "bn_affine": bn_stats | bn_affine,
                "bn_skip": bn_stats | bn_affine | skip}[strategy]
    assert encoder_changed == expected
    assert "decoder.weight" in changed


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    batches = make_batches(16, 4)

    def run(out, stop_after=None):
        torch.manual_seed(0)
        model = TinyNet()
        trainer = make_trainer(model, out, batches, epochs=3)
        if stop_after is None:
            trainer.fit(batches)
            return model
        trainer.epochs = stop_after
        trainer.fit(batches)
        torch.manual_seed(123)  # a fresh process would start from other RNG state
        model = TinyNet()
        trainer = make_trainer(model, out, batches, epochs=3)
        trainer.resume()
        assert trainer.epoch == stop_after and trainer.step == stop_after * 4
        trainer.fit(batches)
        return model

    reference = run(tmp_path / "a")
    resumed = run(tmp_path / "b", stop_after=1)
    for key, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_nonfinite_loss_stops_with_the_step(tmp_path):
    model = TinyNet()
    batches = make_batches(8, 4)

    def bad_loss(model, batch):
        return model(batch["x"]).mean() * float("nan"), {}

    trainer = make_trainer(model, tmp_path, batches)
    trainer.compute_loss = bad_loss
    with pytest.raises(engine.NonFiniteLossError, match="micro-batch 0, optimizer step 0"):
        trainer.fit(batches)


class InfiniteGradient(torch.autograd.Function):
    """Identity forward, infinite backward: what an fp16 overflow in the backward pass looks like."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def test_fp16_scaler_skips_are_counted_not_fatal(tmp_path):
    model = TinyNet(bn=False)
    batches = make_batches(8, 4)
    trainer = make_trainer(model, tmp_path, batches)
    trainer.scaler = torch.amp.GradScaler("cpu", enabled=True)
    before = _snapshot(model)

    def overflowing_loss(model, batch):
        loss, parts = mse_loss(model, batch)
        return InfiniteGradient.apply(loss), parts

    trainer.compute_loss = overflowing_loss
    trainer.fit(batches)
    assert trainer.skipped_steps == 2 and trainer.step == 2
    for key, value in before.items():
        assert torch.equal(value, model.state_dict()[key]), "a skipped step must not move weights"
