import argparse
import contextlib
import dataclasses
import io
import math
import os
import re
import sys

import pytest
import torch
from torch import nn

from racecomp import cli, engine, files, losses, precision, rngstate, schedules
from racecomp.errors import InputError


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


def make_trainer(model, tmp_path, batches, accum=1, epochs=1, optimizer=None, log_every=0, **settings):
    """A Trainer over `batches` (AdamW at 1e-2 unless `optimizer` is given), silent, with `settings` added."""
    optimizer = optimizer or engine.build_optimizer(model, lr=1e-2, weight_decay=0.0)
    steps = math.ceil(len(batches) / accum)
    settings = engine.TrainingSettings(epochs=epochs, accum_steps=accum, log_every=log_every, **settings)
    return engine.Trainer(model, mse_loss, optimizer, str(tmp_path), settings, steps)


def test_lr_factor_warmup_then_cosine():
    assert schedules.lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert schedules.lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert schedules.lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert schedules.lr_factor(55, 100, 10) == pytest.approx(0.5)  # half-way through the cosine
    assert schedules.lr_factor(100, 100, 10) == pytest.approx(0.0, abs=1e-12)


def test_training_settings_from_the_training_flags():
    parser = argparse.ArgumentParser()
    cli.add_training_arguments(parser)
    args = parser.parse_args(["--epochs", "4", "--accum-steps", "2", "--amp", "bf16", "--clip-grad", "0.5",
                              "--warmup-steps", "3", "--unfreeze", "1,3", "--log-every", "0", "--deterministic",
                              "--channels-last", "--compile"])
    assert engine.TrainingSettings.from_args(args) == engine.TrainingSettings(
        epochs=4, accum_steps=2, amp="bf16", clip_grad=0.5, warmup_steps=3, finetune="full", unfreeze=(1, 3),
        log_every=0, deterministic=True, channels_last=True, compile=True)
    defaults = engine.TrainingSettings.from_args(parser.parse_args([]))
    assert defaults.unfreeze == () and defaults.clip_grad == 1.0  # the flags' defaults, not the dataclass's
    assert defaults.amp == "auto" and not (defaults.deterministic or defaults.channels_last or defaults.compile)
    assert engine.TrainingSettings(unfreeze=[0, 2]).unfreeze == (0, 2)  # stored as a tuple: hashable, frozen


def test_cosine_restarts_restart_the_cosine_while_the_whole_model_trains(tmp_path):
    # The RaceComp source's runs: a new CosineAnnealingLR per stage, every stage training everything.
    parser = argparse.ArgumentParser()
    cli.add_training_arguments(parser)
    settings = engine.TrainingSettings.from_args(parser.parse_args(
        ["--schedule", "cosine-stages", "--cosine-restarts", "2", "--warmup-steps", "0", "--epochs", "3"]))
    assert (settings.cosine_restarts, settings.unfreeze, settings.restart_epochs) == ((2,), (), (2,))
    model = nn.Linear(2, 2)
    optimizer = engine.build_optimizer(model, lr=1.0, weight_decay=0.0)
    trainer = engine.Trainer(model, None, optimizer, str(tmp_path), settings, steps_per_epoch=4)
    factors = []
    for _ in range(12):
        factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: nothing moves
        trainer.scheduler.step()
    first = [0.5 * (1 + math.cos(math.pi * t / 8)) for t in range(8)]  # epochs 0-1: 8 steps
    second = [0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)]  # epoch 2: 4 steps, from the top again
    assert factors == pytest.approx(first + second, rel=1e-12, abs=1e-15)
    assert all(p.requires_grad for p in model.parameters())


def test_decay_all_decays_norms_and_biases_too():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.PReLU())
    kept = engine.build_optimizer(model, lr=1.0, weight_decay=0.1)
    assert sorted((g["name"], g["weight_decay"], len(g["params"])) for g in kept.param_groups) == [
        ("rest", 0.1, 1), ("rest_no_decay", 0.0, 4)]  # weight; bias, BN weight and bias, PReLU slope
    every = engine.build_optimizer(model, lr=1.0, weight_decay=0.1, decay_all=True)
    assert [(g["name"], g["weight_decay"], len(g["params"])) for g in every.param_groups] == [("rest", 0.1, 5)]


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
    ({"schedule": "cosine-stages"}, "give --unfreeze (staged unfreezing) or --cosine-restarts"),
    ({"cosine_restarts": (2,)}, "--cosine-restarts gives the stages of --schedule cosine-stages"),
    ({"cosine_restarts": (2,), "schedule": "cosine-stages", "unfreeze": (0, 2)}, "with --unfreeze"),
])
def test_training_settings_refuse_bad_values(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        engine.TrainingSettings(**settings)


def fake_cuda(monkeypatch, capability, name="Tesla T4"):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)


@pytest.mark.parametrize("capability, auto", [((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_amp_auto_follows_the_device_capability(monkeypatch, capability, auto):
    fake_cuda(monkeypatch, capability)
    assert precision.resolve_amp("auto", "cuda:0") == auto
    for explicit in ("fp16", "off"):
        assert precision.resolve_amp(explicit, "cuda:0") == explicit
    assert precision.resolve_amp("auto", "cpu") == "off"
    assert precision.resolve_amp("bf16", "cpu") == "bf16"


def test_emulated_bf16_is_refused(monkeypatch):
    # A T4 (sm75): torch.cuda.is_bf16_supported() says yes there (emulation counts), resolve_amp does not.
    fake_cuda(monkeypatch, (7, 5))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    with pytest.raises(ValueError, match=r"--amp bf16: Tesla T4 \(compute capability 7.5\) only emulates bf16"):
        precision.resolve_amp("bf16", "cuda:0")
    fake_cuda(monkeypatch, (8, 6), "NVIDIA A10")
    assert precision.resolve_amp("bf16", "cuda:0") == "bf16"


SYNCING_METHODS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")


def _to_the_cpu(frame, args, kwargs):
    """Whether Tensor.to(*args, **kwargs) called in `frame` names the CPU as its device: from a GPU, a copy the
    host waits for. batches.to_device's copies of the batch go the other way (to the training device, the CPU
    in these tests), so they are not counted."""
    targets = [*args, kwargs.get("device")]
    return frame.f_code.co_name != "to_device" and any(
        isinstance(t, (str, torch.device)) and torch.device(t).type == "cpu" for t in targets)


def count_reads_by(monkeypatch, prefixes):
    """{method: calls} of the Tensor methods that make the host wait for a GPU (and of .to() naming the CPU),
    called from modules whose name starts with one of `prefixes` (torch's own CPU-side bookkeeping, e.g. AdamW's
    step counters, is not counted)."""
    calls = {}
    for name in (*SYNCING_METHODS, "to"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            frame = sys._getframe(1)
            if frame.f_globals.get("__name__", "").startswith(prefixes) and (
                    _name != "to" or _to_the_cpu(frame, args, kwargs)):
                calls[_name] = calls.get(_name, 0) + 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


@pytest.mark.parametrize("amp", ["off", "fp16"])
@pytest.mark.parametrize("main_rank", [True, False])
def test_no_host_sync_per_step_only_per_epoch(tmp_path, monkeypatch, amp, main_rank):
    """At the default --log-every (10 steps, more than these epochs have) a rank reads nothing per step; a rank
    other than 0 not even once its epoch is older than the progress interval (0 s here: rank 0 prints at every
    step, which reads the loss, so it is not asked of rank 0)."""
    loss_fn = losses.SRLoss("l1")

    def sr_loss(model, batch):
        return loss_fn(model(batch["x"]), batch["y"])

    if not main_rank:
        monkeypatch.setattr(engine.distributed, "is_main", lambda: False)
        monkeypatch.setattr(engine, "EVERY_SECONDS", 0.0)
    reads = {}
    for micro_batches in (2, 6):
        torch.manual_seed(0)
        model = TinyNet()
        batches = make_batches(4 * micro_batches, 4)
        trainer = make_trainer(model, tmp_path / str(micro_batches), batches, accum=2,
                               log_every=engine.TrainingSettings.log_every)
        trainer.compute_loss = sr_loss
        trainer.scaler = torch.amp.GradScaler("cpu", enabled=amp == "fp16")  # fp16's path on the CPU
        with monkeypatch.context() as patch:
            calls = count_reads_by(patch, ("racecomp", __name__))
            with contextlib.redirect_stdout(io.StringIO()):
                trainer.train_epoch(batches)
        reads[micro_batches] = calls
    assert reads[2] == reads[6]  # a fixed number per epoch (the means, the non-finite check), none per step
    assert sum(reads[6].values()) <= 3


def test_nonfinite_loss_found_at_a_log_step_names_its_micro_batch(tmp_path):
    model = TinyNet()
    batches = make_batches(24, 4)

    def nan_from_micro_batch_2(model, batch):
        loss, parts = mse_loss(model, batch)
        nan_from_micro_batch_2.calls += 1
        return (loss * float("nan") if nan_from_micro_batch_2.calls > 2 else loss), parts
    nan_from_micro_batch_2.calls = 0

    trainer = make_trainer(model, tmp_path, batches, accum=2, epochs=2)
    trainer.settings = dataclasses.replace(trainer.settings, log_every=2)
    trainer.compute_loss = nan_from_micro_batch_2
    with pytest.raises(engine.NonFiniteLossError, match="epoch 0, micro-batch 2, optimizer step 1"):
        trainer.fit(batches)
    # Found at the first log step after it (optimizer step 2, after micro-batch 3), not at the epoch's end (6).
    assert nan_from_micro_batch_2.calls == 4
    assert not os.path.exists(trainer.checkpoint_path())


def test_each_process_restores_its_own_device_generator(monkeypatch):
    # A checkpoint saved by a single process on a 4-GPU machine (the old get_rng_state_all layout held 4 states)
    # resumed on a 1-GPU machine: only this process's device generator is set, from its own state.
    restored = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state, device)))
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: torch.full((4,), 7, dtype=torch.uint8))
    saved = rngstate.rng_checkpoint(torch.device("cuda", 0))
    assert len(saved["cuda"]) == 1 and torch.equal(saved["cuda"][0], torch.full((4,), 7, dtype=torch.uint8))
    states = [torch.full((4,), index, dtype=torch.uint8) for index in range(4)]
    rngstate.restore_rng(dict(saved, cuda=states), torch.device("cuda", 0))
    rngstate.restore_rng(dict(saved, cuda=states), torch.device("cuda", 1), rank=1)  # rank 1 of a torchrun job
    assert [(int(state[0]), device) for state, device in restored] == [(0, torch.device("cuda", 0)),
                                                                       (1, torch.device("cuda", 1))]
    rngstate.restore_rng(dict(saved, cuda=states), torch.device("cpu"))  # resumed on the CPU: nothing to set
    assert len(restored) == 2
    with pytest.raises(ValueError, match="none for rank 4"):
        rngstate.restore_rng(dict(saved, cuda=states), torch.device("cuda", 0), rank=4)


def test_kernel_choice_deterministic_or_autotuned(tmp_path, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        make_trainer(TinyNet(), tmp_path, make_batches(4, 4), deterministic=True)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and not torch.backends.cudnn.benchmark
        precision.configure_kernels("cuda", deterministic=False)
        assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
        assert torch.get_float32_matmul_precision() == "high"  # TF32 matmuls on a GPU that has them
        make_trainer(TinyNet(), tmp_path, make_batches(4, 4))  # on the CPU: nothing to autotune, float32 exact
        assert not torch.backends.cudnn.benchmark and torch.get_float32_matmul_precision() == "highest"
    finally:
        precision.configure_kernels("cpu", deterministic=False)


def test_channels_last_trains_the_same_model_to_rounding(tmp_path):
    batches = make_batches(8, 4)
    trained = {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = TinyNet()
        seen = []

        def loss_recording_layout(model, batch):
            seen.append(batch["x"].is_contiguous(memory_format=torch.channels_last))
            return mse_loss(model, batch)
        # SGD: AdamW's first steps are about sign(gradient), which a rounding difference can flip.
        trainer = make_trainer(model, tmp_path / str(channels_last), batches, channels_last=channels_last,
                               optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
        trainer.compute_loss = loss_recording_layout
        trainer.fit(batches)
        assert seen == [channels_last] * 2
        assert model.encoder.stem[0].weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        trained[channels_last] = model.state_dict()
    for key, value in trained[False].items():
        torch.testing.assert_close(trained[True][key], value, rtol=1e-5, atol=1e-6)


def test_compile_wraps_the_training_forward_only(tmp_path, monkeypatch):
    compiled = []

    class Compiled(nn.Module):  # what torch.compile returns, without compiling (seconds on this CPU)
        def __init__(self, module):
            super().__init__()
            self._orig_mod = module
            compiled.append(module)

        def forward(self, *args):
            return self._orig_mod(*args)

    monkeypatch.setattr(torch, "compile", Compiled)
    model = TinyNet()
    batches = make_batches(8, 4)
    received = []

    def recording_loss(module, batch):
        received.append(module)
        return mse_loss(module, batch)
    trainer = make_trainer(model, tmp_path, batches, epochs=2, compile=True)
    trainer.compute_loss = recording_loss
    trainer.select = lambda module: received.append(module) or 0.0
    trainer.fit(batches)
    assert compiled == [model]  # once, kept over epochs
    assert [type(module) for module in received] == [Compiled, Compiled, TinyNet] * 2  # selection: the plain model
    assert set(files.load_checkpoint(trainer.checkpoint_path())["model"]) == set(model.state_dict())
    loader = engine.make_loader(torch.utils.data.TensorDataset(torch.zeros(10, 1)), 4, 0, "cpu", drop_last=True)
    assert [len(batch[0]) for batch in loader] == [4, 4]  # one input shape: no recompiling for the last batch


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


def test_resume_in_another_precision_is_refused_saying_what_to_pass(tmp_path):
    """--amp auto resolves per GPU class; a run resumes only in the precision it trained in (old checkpoints: the
    resolved --amp their args recorded)."""
    batches = make_batches(8, 4)
    make_trainer(TinyNet(), tmp_path, batches, epochs=2).fit(batches[:1] * 2)  # trained in "off" (the CPU)
    elsewhere = make_trainer(TinyNet(), tmp_path, batches, epochs=2, amp="bf16")
    with pytest.raises(InputError, match=r"trained in off but --amp bf16 runs bf16 on cpu.*start with --amp fp16"):
        elsewhere.resume()
    make_trainer(TinyNet(), tmp_path, batches, epochs=2, amp="auto").resume()  # auto gives "off" here too
    state = files.load_checkpoint(os.path.join(tmp_path, "checkpoint.pth"))
    del state["amp"]
    state["args"] = {"amp": "bf16"}  # a checkpoint from before the precision was saved, trained in bf16
    files.save_checkpoint(state, os.path.join(tmp_path, "checkpoint.pth"))
    with pytest.raises(InputError, match="trained in bf16 but --amp auto runs off"):
        make_trainer(TinyNet(), tmp_path, batches, epochs=2, amp="auto").resume()
    make_trainer(TinyNet(), tmp_path, batches, epochs=2, amp="bf16").resume()
