"""Super-resolution models: a UNet on a timm encoder (ResNet50 or FastViT) and the bicubic baseline.

Every model maps a low-resolution RGB batch (B, 3, h, w) in [0, 1] to (B, 3, h*scale, w*scale) in the same
linear RGB range. The output is not clamped: evaluation decides how to quantize it.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from racecomp import encoders

SCALES = (2, 4)
UPSAMPLERS = ("pixelshuffle", "interp", "overscale")
# What FastViT's last-stage blocks train with: the encoder (its lr, opened with their stage), or the decoder.
LAST_BLOCKS = ("encoder", "decoder")
ARCH_NAMES = ("bicubic", "fastvit") + encoders.ENCODER_NAMES
# One width per decoder block, deepest first; an encoder with L stages uses the first L (ResNet50 5, FastViT 4),
# so both end at 64 channels at full low-resolution size.
DEFAULT_DECODER_CHANNELS = (256, 128, 64, 64, 64)


def bicubic_upsample(lr, scale):
    """Bicubic upsampling, (B, C, h, w) -> (B, C, h*scale, w*scale), no clamping (bicubic overshoots [0, 1])."""
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)


class Bicubic(nn.Module):
    """The `--arch bicubic` baseline: no parameters, goes through the same evaluation path as the UNets."""

    def __init__(self, scale):
        super().__init__()
        if scale not in SCALES:
            raise ValueError(f"scale {scale}: must be one of {SCALES}")
        self.scale = scale

    def forward(self, lr):  # (B, 3, h, w) in [0, 1] -> (B, 3, h*s, w*s)
        return bicubic_upsample(lr, self.scale)


class DecoderBlock(nn.Module):
    """Upsample to the skip's exact size, concatenate the skip, two 3x3 conv + ReLU.

    No BatchNorm: EDSR showed normalization layers hurt super-resolution (they remove range flexibility).
    Bilinear rather than nearest because the size ratio is not always 2 (odd inputs, FastViT's 4x last step).
    """

    def __init__(self, in_channels, skip_channels, out_channels):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels + skip_channels, out_channels, 3, padding=1)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        # A module per use, so hooks and quantization wrappers see each activation; `act` is the block output.
        self.act = nn.ReLU(inplace=True)

    def forward(self, x, skip):
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = self.act1(self.conv1(torch.cat([x, skip], dim=1)))
        return self.act(self.conv2(x))


def _nearest_conv_step(channels):
    """One x2 step of interpolation + convolution: nearest (as ESRGAN) then 3x3 conv + ReLU."""
    return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True)]


class Upsampler(nn.Module):
    """Features (B, C, h, w) -> (B, C, h*scale, w*scale); x4 is always two x2 steps.

    - pixelshuffle: per x2 step, 3x3 conv to 4C channels then PixelShuffle(2) (sub-pixel convolution), ReLU.
    - interp: per x2 step, nearest upsampling then 3x3 conv, ReLU.
    - overscale: interp steps up to 2*scale (one step past the target), then bilinear down-scaling with
      antialias=True to the exact target size: the convolutions work on a finer grid than the output and a fixed
      low-pass filter brings it back down.
    """

    def __init__(self, channels, scale, mode):
        super().__init__()
        if mode not in UPSAMPLERS:
            raise ValueError(f"upsampler {mode!r}: must be one of {', '.join(UPSAMPLERS)}")
        if scale not in SCALES:
            raise ValueError(f"scale {scale}: must be one of {SCALES}")
        self.scale = scale
        self.mode = mode
        steps = scale.bit_length() - 1  # number of x2 steps: 1 for x2, 2 for x4
        layers = []
        if mode == "pixelshuffle":
            for _ in range(steps):
                layers += [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(inplace=True)]
        else:
            for _ in range(steps + (mode == "overscale")):
                layers += _nearest_conv_step(channels)
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        target = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        x = self.body(x)
        if self.mode == "overscale":
            x = F.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=True)
        return x


class UNetUpscaler(nn.Module):
    """UNet super-resolution on a timm encoder: out = bicubic(lr) + residual, (B, 3, h, w) -> (B, 3, h*s, w*s).

    Input: RGB in [0, 1]. The encoder sees the low-resolution image normalized inside the model with the
    fixed mean/std of the encoder's timm pretrained_cfg (ImageNet's for ResNet50 and FastViT): its pretrained
    weights expect that input, and keeping it in the model means no data pipeline can forget it.
    The decoder walks back up every encoder reduction level (deepest first), with a skip from every encoder
    stage and a final skip from the normalized input itself at stride 1 (ResNet50's first map is stride 2,
    FastViT's stride 4, so the last block goes 2->1 or 4->1). Each block upsamples to its skip's exact size,
    so any input size works (28, 30, 33 px). The upsampler then takes the full low-resolution features to the
    high-resolution size and a 3x3 conv maps them to the 3-channel residual: no earlier stage has only 3
    channels. The output is linear (no activation), and the last conv starts at zero so the untrained model
    is exactly bicubic: training starts from that floor.
    A consequence: at the very first step only the last conv receives a gradient (the others get it from step 2).
    `last_blocks="decoder"` (FastViT only) has the optimizer and staged unfreezing treat the blocks of the
    encoder's last stage as part of the decoder (`trained_as_decoder`), as the RaceComp source's VitUpscaler
    did with them (its `out`); the computation and the parameter names are the same either way.
    """

    def __init__(self, encoder_name, scale, upsampler="pixelshuffle", decoder_channels=None, pretrained=False,
                 pretrained_path=None, last_blocks="encoder"):
        super().__init__()
        if scale not in SCALES:
            raise ValueError(f"scale {scale}: must be one of {SCALES}")
        self.scale = scale
        if last_blocks not in LAST_BLOCKS:
            raise ValueError(f"last_blocks {last_blocks!r}: must be one of {', '.join(LAST_BLOCKS)}")
        self.encoder = encoders.create_encoder(encoder_name, pretrained=pretrained, pretrained_path=pretrained_path)
        # Parameter-name prefixes build_optimizer and staged unfreezing treat as the decoder's.
        self.trained_as_decoder = (encoders.last_blocks_prefix(self),) if last_blocks == "decoder" else ()
        stage_channels = self.encoder.feature_info.channels()  # shallow to deep
        if decoder_channels is None:
            decoder_channels = DEFAULT_DECODER_CHANNELS[:len(stage_channels)]
        if len(decoder_channels) != len(stage_channels):
            raise ValueError(f"decoder_channels {tuple(decoder_channels)}: need one width per encoder stage "
                             f"({len(stage_channels)} for {encoder_name})")
        # Non-persistent: a fixed constant, not a weight, and keeps the state dict to encoder/decoder weights.
        cfg = self.encoder.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)
        skip_channels = list(stage_channels[-2::-1]) + [3]  # deep to shallow, then the input image
        blocks = []
        in_channels = stage_channels[-1]
        for skip, out_channels in zip(skip_channels, decoder_channels):
            blocks.append(DecoderBlock(in_channels, skip, out_channels))
            in_channels = out_channels
        self.decoder = nn.ModuleList(blocks)  # deepest first
        self.upsampler = Upsampler(in_channels, scale, upsampler)
        self.to_rgb = nn.Conv2d(in_channels, 3, 3, padding=1)
        nn.init.zeros_(self.to_rgb.weight)
        nn.init.zeros_(self.to_rgb.bias)

    def forward(self, lr):  # (B, 3, h, w) in [0, 1]
        x = (lr - self.mean) / self.std
        features = self.encoder(x)  # shallow to deep, strides feature_info.reduction()
        skips = features[-2::-1] + [x]
        y = features[-1]
        for block, skip in zip(self.decoder, skips):
            y = block(y, skip)
        y = self.upsampler(y)  # (B, C, h*s, w*s)
        return bicubic_upsample(lr, self.scale) + self.to_rgb(y)


def build_upscaler(arch, scale, upsampler="pixelshuffle", pretrained=False, pretrained_path=None,
                   last_blocks="encoder"):
    """Factory: "bicubic", "resnet50", a FastViT name from encoders.ENCODER_NAMES, or "fastvit" (the default one)."""
    if arch not in ARCH_NAMES:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCH_NAMES)}")
    if arch == "bicubic":
        if pretrained:
            raise ValueError("--pretrained has no meaning for --arch bicubic (it has no weights)")
        return Bicubic(scale)
    if arch == "fastvit":
        arch = encoders.DEFAULT_FASTVIT
    return UNetUpscaler(arch, scale, upsampler=upsampler, pretrained=pretrained, pretrained_path=pretrained_path,
                        last_blocks=last_blocks)


def count_parameters(model):
    """Number of parameters (all of them, trainable or frozen)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model, lr_size):
    """FLOPs of one forward pass on one (3, h, w) image, lr_size = h or (h, w); 1 multiply-accumulate = 2 FLOPs.

    torch.utils.flop_counter.FlopCounterMode counts convolutions, matmuls and attention (the math SDPA
    kernel is forced because the fused CPU kernel is not counted); interpolation, normalization and
    element-wise ops are not counted. Runs in eval mode without gradients, so BatchNorm statistics are
    untouched; the model's mode is restored afterwards.
    """
    h, w = (lr_size, lr_size) if isinstance(lr_size, int) else lr_size
    tensor = next(iter(model.parameters()), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(torch.rand(1, 3, h, w, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops()
