import pytest
import torch
import torch.nn.functional as F
from torch import nn

from racecomp import encoders, engine, finetune, upscalers

# Every upsampler and scale for both encoder families; the default FastViT (sa24, slower) once, via its alias.
COMBOS = ([(arch, up, scale) for arch in ("resnet50", "fastvit_t8") for up in upscalers.UPSAMPLERS for scale in (2, 4)]
          + [("fastvit", "pixelshuffle", 4)])


def bicubic(lr, scale):
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)


@pytest.mark.parametrize("arch, upsampler, scale", COMBOS)
def test_upscaler_is_bicubic_untrained_linear_and_trainable_end_to_end(arch, upsampler, scale):
    torch.manual_seed(0)
    model = upscalers.build_upscaler(arch, scale, upsampler)
    lr = torch.rand(2, 3, 15, 17)  # odd, not a multiple of 32: resnet50's stride-32 map is 1x1
    with torch.no_grad():
        out = model(lr)
    assert out.shape == (2, 3, 15 * scale, 17 * scale)
    assert torch.equal(out, bicubic(lr, scale))  # zero-initialised last conv adds exactly 0

    with torch.no_grad():  # as after some training; biases push R down and G up by 5
        model.to_rgb.weight.normal_(std=1e-2)
        model.to_rgb.bias.copy_(torch.tensor([-5.0, 5.0, 0.0]))
    out = model(lr)
    assert (out[:, 0] < 0).any() and (out[:, 1] > 1).any()  # no sigmoid/clamp: any value can be produced
    out.square().mean().backward()
    first_weight = next(model.encoder.parameters())
    assert torch.isfinite(first_weight.grad).all() and first_weight.grad.abs().sum() > 0


def test_zero_last_conv_gives_only_it_a_gradient_on_the_first_step():
    model = upscalers.build_upscaler("fastvit_t8", 2, "pixelshuffle")
    model(torch.rand(2, 3, 16, 16)).square().mean().backward()
    assert model.to_rgb.weight.grad.abs().sum() > 0
    assert all(torch.count_nonzero(p.grad) == 0 for name, p in model.named_parameters()
               if not name.startswith("to_rgb."))


@pytest.mark.parametrize("size", [(28, 28), (30, 33)])
def test_sizes_not_divisible_by_32(size):
    model = upscalers.build_upscaler("resnet50", 2, "interp")
    assert model(torch.rand(2, 3, *size)).shape == (2, 3, 2 * size[0], 2 * size[1])


def test_fastvit_alias_is_default_fastvit_and_normalization_is_imagenet():
    model = upscalers.build_upscaler("fastvit", 2, "pixelshuffle")
    assert model.encoder.pretrained_cfg["architecture"] == encoders.DEFAULT_FASTVIT == "fastvit_ma36"  # the study's
    torch.testing.assert_close(model.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(model.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))


@pytest.mark.parametrize("arch, channels, first_in, last_in", [
    ("resnet50", [64, 256, 512, 1024, 2048], 2048 + 1024, 64 + 3),
    ("fastvit_t8", [48, 96, 192, 384], 384 + 192, 64 + 3),
])
def test_decoder_has_one_block_per_stage_deepest_first(arch, channels, first_in, last_in):
    model = upscalers.UNetUpscaler(arch, 2)
    assert model.encoder.feature_info.channels() == channels
    assert len(model.decoder) == len(channels)
    assert model.decoder[0].conv1.in_channels == first_in  # deepest map + next skip
    assert model.decoder[-1].conv1.in_channels == last_in  # + the stride-1 input skip
    assert model.to_rgb.in_channels == 64  # no 3-channel bottleneck before the last layer


def test_decoder_channels_must_match_stage_count():
    with pytest.raises(ValueError, match="one width per encoder stage"):
        upscalers.UNetUpscaler("fastvit_t8", 2, decoder_channels=(64, 64))


def test_build_optimizer_gives_exactly_the_encoder_its_learning_rate():
    # The encoder/decoder split of --encoder-lr is by parameter name: everything of the timm encoder is under
    # `encoder.`, and nothing else is (blocks, upsampler and last conv train at --lr).
    model = upscalers.UNetUpscaler("fastvit_t8", 2)
    optimizer = engine.build_optimizer(model, lr=1e-3, encoder_lr=1e-4)
    by_lr = {}
    for group in optimizer.param_groups:
        by_lr.setdefault(group["lr"], []).extend(group["params"])
    assert sorted(by_lr) == [1e-4, 1e-3]
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    assert {id(p) for p in by_lr[1e-4]} == encoder_ids
    assert not encoder_ids & {id(p) for p in by_lr[1e-3]}
    assert len(by_lr[1e-4]) + len(by_lr[1e-3]) == len(list(model.parameters()))
    assert any(p is model.to_rgb.weight for p in by_lr[1e-3])


def test_fastvit_last_blocks_can_train_with_the_decoder():
    # --last-blocks decoder (the RaceComp source's VitUpscaler `out`): same model, other lr group and stages.
    torch.manual_seed(0)
    plain = upscalers.build_upscaler("fastvit_t8", 2)
    moved = upscalers.build_upscaler("fastvit_t8", 2, last_blocks="decoder")
    moved.load_state_dict(plain.state_dict())  # the same parameter names
    plain.eval(), moved.eval()
    lr = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        plain.to_rgb.weight.normal_()
        moved.to_rgb.weight.copy_(plain.to_rgb.weight)
        assert torch.equal(plain(lr), moved(lr))
    assert moved.trained_as_decoder == ("encoder.stages_3.blocks.",)
    stages = encoders.encoder_stage_prefixes(moved)
    assert stages[-1] == ("encoder.stages_3.downsample.",)
    assert stages[:-1] == encoders.encoder_stage_prefixes(plain)[:-1]
    optimizer = engine.build_optimizer(moved, lr=1e-3, encoder_lr=1e-4)
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    for name, param in moved.named_parameters():
        in_encoder = name.startswith("encoder.") and not name.startswith("encoder.stages_3.blocks.")
        assert lr_of[id(param)] == (1e-4 if in_encoder else 1e-3), name
    frozen = finetune.apply_unfreeze(moved, (1,), stages, epoch=0)  # no stage open yet: the blocks still train
    trainable = {name for name, p in moved.named_parameters() if p.requires_grad}
    assert frozen and not any(name.startswith(tuple(frozen)) for name in trainable)
    assert {name for name in trainable if name.startswith("encoder.")} == {
        name for name, _ in moved.named_parameters() if name.startswith("encoder.stages_3.blocks.")}
    with pytest.raises(ValueError, match="FastViT"):
        upscalers.build_upscaler("resnet50", 2, last_blocks="decoder")


def test_state_dict_has_encoder_keys_and_no_normalization_buffers():
    model = upscalers.UNetUpscaler("fastvit_t8", 2)
    keys = model.state_dict().keys()
    encoder_keys = {f"encoder.{k}" for k in model.encoder.state_dict()}
    assert encoder_keys <= set(keys)
    assert "mean" not in keys and "std" not in keys


def test_bicubic_baseline():
    model = upscalers.build_upscaler("bicubic", 4)
    assert isinstance(model, upscalers.Bicubic)
    assert upscalers.count_parameters(model) == 0 and len(list(model.buffers())) == 0
    lr = torch.rand(2, 3, 9, 11)
    assert torch.equal(model(lr), bicubic(lr, 4))
    constant = torch.full((1, 3, 5, 7), 0.3)
    torch.testing.assert_close(model(constant), torch.full((1, 3, 20, 28), 0.3))  # bicubic weights sum to 1
    assert upscalers.count_flops(model, 8) == 0


@pytest.mark.parametrize("call, message", [
    (lambda: upscalers.build_upscaler("vgg", 2), "unknown arch"),
    (lambda: upscalers.build_upscaler("bicubic", 3), "scale 3"),
    (lambda: upscalers.build_upscaler("fastvit_t8", 3), "scale 3"),
    (lambda: upscalers.build_upscaler("fastvit_t8", 2, "deconv"), "upsampler 'deconv'"),
    (lambda: upscalers.build_upscaler("bicubic", 2, pretrained=True), "no weights"),
])
def test_bad_options_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_count_flops_on_a_hand_computed_conv():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1))
    # 2 FLOPs per multiply-accumulate: 2 * Cin * Cout * k * k * H * W (bias adds are not counted)
    assert upscalers.count_flops(model, (10, 12)) == 2 * 3 * 8 * 3 * 3 * 10 * 12
    assert upscalers.count_parameters(model) == 3 * 8 * 9 + 8


class TinyAttention(nn.Module):
    def forward(self, x):  # (B, heads, tokens, dim) taken from the image tensor's layout
        return F.scaled_dot_product_attention(x, x, x)


def test_count_flops_counts_attention_matmuls():
    # Image (1, 3, 4, 8) read as 3 heads, 4 tokens, dim 8: QK^T and AV are each 2 * heads * L * L * D FLOPs.
    assert upscalers.count_flops(TinyAttention(), (4, 8)) == 2 * (2 * 3 * 4 * 4 * 8)


def test_count_flops_leaves_batchnorm_statistics_and_mode_alone():
    model = upscalers.UNetUpscaler("resnet50", 2)
    before = model.encoder.bn1.running_mean.clone()
    flops = upscalers.count_flops(model, 16)
    assert model.training
    assert torch.equal(model.encoder.bn1.running_mean, before)
    # at least the encoder's stem conv: 7x7, 3 -> 64 channels, on the 8x8 stride-2 map
    assert flops > 2 * 3 * 64 * 7 * 7 * 8 * 8
