"""Face-recognition backbones: 112x112 RGB face in [-1, 1] -> (B, 512) embedding (not L2-normalized).

Two families:
- `iresnet18/34/50/100` and `mobilefacenet`: the architectures of insightface `recognition/arcface_torch`
  (backbones/iresnet.py, backbones/mobilefacenet.py "mbf"), with the same module names and shapes, so a public
  `backbone.pth` state dict loads key for key (strict). Input must be exactly 112x112 (their `fc` / GDC head
  assume a 7x7 final map). Unlike arcface_torch there is no `fp16=` autocast inside: precision is the training
  loop's job.
- `EmbeddingNet`: a timm encoder from `racecomp.encoders` (ResNet50, FastViT) plus a small embedding head; its
  encoder is built with the same call as the upscalers' encoder, so an upscaler's `encoder.*` weights transfer
  key for key (`load_encoder_from_upscaler`). Any input size works.
"""
import os
import pickle

import torch
from torch import nn

from racecomp.encoders import ENCODER_NAMES, create_encoder
from racecomp.errors import InputError

FACE_IMAGE_SIZE = 112  # px, side of the aligned face every backbone here is trained on
IRESNET_LAYERS = {  # residual blocks per stage (arcface_torch r18, r34, r50, r100)
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}
FACE_MODEL_NAMES = tuple(IRESNET_LAYERS) + ("mobilefacenet",) + ENCODER_NAMES


def _check_face_size(x, model_name):
    if x.shape[-2:] != (FACE_IMAGE_SIZE, FACE_IMAGE_SIZE):
        raise InputError(f"{model_name} expects {FACE_IMAGE_SIZE}x{FACE_IMAGE_SIZE} faces (its head assumes a 7x7 "
                         f"final map), got {tuple(x.shape[-2:])}")


def _conv3x3(in_channels, out_channels, stride=1):
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation-style IResNet block: BN-conv3x3-BN-PReLU-conv3x3(stride)-BN, plus the shortcut.

    No activation after the sum (as in arcface_torch). `downsample` (1x1 conv + BN) is set when the stride or
    the width changes.
    """

    def __init__(self, in_channels, channels, stride=1, downsample=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=1e-5)
        self.conv1 = _conv3x3(in_channels, channels)
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-5)
        self.prelu = nn.PReLU(channels)
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn3 = nn.BatchNorm2d(channels, eps=1e-5)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """arcface_torch IResNet: stem conv3x3 (stride 1) -> 4 stages of stride 2 (64, 128, 256, 512 channels)
    -> BN -> flatten 512x7x7 -> dropout -> fc -> BatchNorm1d `features` whose scale is fixed at 1.

    Input (B, 3, 112, 112) RGB in [-1, 1]; output (B, num_features), not normalized.
    """

    def __init__(self, layers, num_features=512, dropout=0.0):
        super().__init__()
        self.conv1 = _conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        widths = (64, 128, 256, 512)
        in_channels = 64
        for index, (channels, blocks) in enumerate(zip(widths, layers)):
            self.add_module(f"layer{index + 1}", self._make_stage(in_channels, channels, blocks))
            in_channels = channels
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        # The initialisation arcface_torch trains from: conv N(0, 0.1), BN (1, 0), embedding BN scale frozen at 1.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad = False

    @staticmethod
    def _make_stage(in_channels, channels, blocks):
        # Every stage halves the resolution in its first block, so each first block has a projection shortcut.
        downsample = nn.Sequential(nn.Conv2d(in_channels, channels, kernel_size=1, stride=2, bias=False),
                                   nn.BatchNorm2d(channels, eps=1e-5))
        stage = [IBasicBlock(in_channels, channels, stride=2, downsample=downsample)]
        stage += [IBasicBlock(channels, channels) for _ in range(blocks - 1)]
        return nn.Sequential(*stage)

    def forward(self, x):
        _check_face_size(x, type(self).__name__)
        x = self.prelu(self.bn1(self.conv1(x)))  # (B, 64, 112, 112)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512, 7, 7)
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def iresnet18(num_features=512):
    return IResNet(IRESNET_LAYERS["iresnet18"], num_features)


def iresnet34(num_features=512):
    return IResNet(IRESNET_LAYERS["iresnet34"], num_features)


def iresnet50(num_features=512):
    return IResNet(IRESNET_LAYERS["iresnet50"], num_features)


def iresnet100(num_features=512):
    return IResNet(IRESNET_LAYERS["iresnet100"], num_features)


# MobileFaceNet building blocks. Each keeps its sub-modules in a Sequential named `layers`, because the
# arcface_torch checkpoint keys are spelled that way (e.g. `layers.2.layers.0.layers.1.running_var`).
class ConvBNPReLU(nn.Module):
    def __init__(self, in_channels, out_channels, kernel=1, stride=1, padding=0, groups=1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.PReLU(out_channels))

    def forward(self, x):
        return self.layers(x)


class ConvBN(nn.Module):
    """Convolution + BN with no activation (the linear bottleneck projection)."""

    def __init__(self, in_channels, out_channels, kernel=1, stride=1, padding=0, groups=1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels))

    def forward(self, x):
        return self.layers(x)


class DepthWiseBlock(nn.Module):
    """Inverted bottleneck: 1x1 expand to `hidden` -> depthwise 3x3 (stride) -> 1x1 linear projection,
    with an identity shortcut when `residual` (only used at stride 1 with equal widths)."""

    def __init__(self, in_channels, out_channels, hidden, stride, residual):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBNPReLU(in_channels, hidden),
            ConvBNPReLU(hidden, hidden, kernel=3, stride=stride, padding=1, groups=hidden),
            ConvBN(hidden, out_channels))

    def forward(self, x):
        out = self.layers(x)
        return x + out if self.residual else out


class ResidualStack(nn.Module):
    def __init__(self, channels, blocks, hidden):
        super().__init__()
        self.layers = nn.Sequential(*[DepthWiseBlock(channels, channels, hidden, stride=1, residual=True)
                                      for _ in range(blocks)])

    def forward(self, x):
        return self.layers(x)


class GDCHead(nn.Module):
    """Global depthwise convolution: 7x7 depthwise conv over the 7x7 map (a learned spatial pooling),
    flatten, Linear without bias, BatchNorm1d."""

    def __init__(self, num_features):
        super().__init__()
        self.layers = nn.Sequential(
            ConvBN(512, 512, kernel=7, groups=512),
            nn.Flatten(),
            nn.Linear(512, num_features, bias=False),
            nn.BatchNorm1d(num_features))

    def forward(self, x):
        return self.layers(x)


class MobileFaceNet(nn.Module):
    """arcface_torch "mbf" (blocks (1, 4, 6, 2), width scale 2), 4 stride-2 steps 112 -> 7, GDC head.

    Input (B, 3, 112, 112) RGB in [-1, 1]; output (B, num_features), not normalized.
    """

    def __init__(self, num_features=512):
        super().__init__()
        # (module, output size) per entry; channel and expansion widths as in arcface_torch get_mbf (including
        # the second stem conv's 64 groups, which is not depthwise at 128 channels).
        self.layers = nn.ModuleList([
            ConvBNPReLU(3, 128, kernel=3, stride=2, padding=1),  # 56x56
            ConvBNPReLU(128, 128, kernel=3, stride=1, padding=1, groups=64),
            DepthWiseBlock(128, 128, hidden=128, stride=2, residual=False),  # 28x28
            ResidualStack(128, blocks=4, hidden=128),
            DepthWiseBlock(128, 256, hidden=256, stride=2, residual=False),  # 14x14
            ResidualStack(256, blocks=6, hidden=256),
            DepthWiseBlock(256, 256, hidden=512, stride=2, residual=False),  # 7x7
            ResidualStack(256, blocks=2, hidden=256),
        ])
        self.conv_sep = ConvBNPReLU(256, 512)
        self.features = GDCHead(num_features)
        # arcface_torch's initialisation: Kaiming normal (fan_out) for convs and the linear layer, BN (1, 0).
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        _check_face_size(x, type(self).__name__)
        for layer in self.layers:
            x = layer(x)
        return self.features(self.conv_sep(x))  # (B, 512, 7, 7) -> (B, num_features)


def mobilefacenet(num_features=512):
    return MobileFaceNet(num_features)


class EmbeddingNet(nn.Module):
    """timm encoder (`racecomp.encoders.create_encoder`, attribute `encoder`) + embedding head.

    Input (B, 3, H, W) RGB in [-1, 1], any size (112x112 for faces). It is mapped to [0, 1] and normalized
    with the encoder's `pretrained_cfg` mean/std (ImageNet's for every ENCODER_NAMES entry; fixed,
    non-persistent buffers) before the encoder, as the upscalers do and as timm's ImageNet weights expect:
    transferred weights get the input statistics they were trained on.
    Head, on the last (stride-32) feature map: global average pooling -> BatchNorm1d(C) -> Linear(C, E, no
    bias: a BN follows) -> BatchNorm1d(E) with its scale fixed at 1 (as arcface_torch's IResNet `features`).
    Output (B, E), not normalized.
    """

    def __init__(self, encoder_name, embedding_size=512, pretrained=False, pretrained_path=None):
        super().__init__()
        self.encoder = create_encoder(encoder_name, pretrained=pretrained, pretrained_path=pretrained_path)
        channels = self.encoder.feature_info.channels()[-1]
        config = self.encoder.pretrained_cfg
        self.register_buffer("mean", torch.tensor(config["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config["std"]).view(1, 3, 1, 1), persistent=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.bn1 = nn.BatchNorm1d(channels)
        self.fc = nn.Linear(channels, embedding_size, bias=False)
        self.features = nn.BatchNorm1d(embedding_size)
        self.features.weight.requires_grad = False  # stays at its initial 1

    def forward(self, x):
        x = ((x + 1.0) / 2.0 - self.mean) / self.std
        x = self.encoder(x)[-1]  # (B, C, H/32, W/32)
        x = self.bn1(torch.flatten(self.pool(x), 1))
        return self.features(self.fc(x))


_ARCFACE_TORCH_MODELS = {"iresnet18": iresnet18, "iresnet34": iresnet34, "iresnet50": iresnet50,
                         "iresnet100": iresnet100, "mobilefacenet": mobilefacenet}


def get_model(name, embedding_size=512, pretrained=False, pretrained_path=None):
    """Face-recognition model by name (one of FACE_MODEL_NAMES), embedding size `embedding_size`.

    `pretrained`: for the arcface_torch architectures, load an arcface_torch `backbone.pth` (or our own
    checkpoint) from `pretrained_path` (required: nothing is downloaded); for the timm encoder names, load
    timm's ImageNet weights into the encoder (from `pretrained_path` when given, see `create_encoder`).
    """
    if name not in FACE_MODEL_NAMES:
        raise InputError(f"unknown face model {name!r}; valid: {', '.join(FACE_MODEL_NAMES)}")
    if name in ENCODER_NAMES:
        return EmbeddingNet(name, embedding_size, pretrained=pretrained, pretrained_path=pretrained_path)
    if pretrained_path is not None and not pretrained:
        raise InputError("--pretrained-path given without --pretrained")
    if pretrained and pretrained_path is None:
        raise InputError(f"{name}: pretrained weights are never downloaded; pass --pretrained-path pointing to an "
                         f"arcface_torch backbone.pth (or a RaceComp checkpoint) for this architecture")
    model = _ARCFACE_TORCH_MODELS[name](embedding_size)
    if pretrained:
        load_backbone_weights(model, pretrained_path)
    return model


def _key_list(keys, limit=10):
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_backbone_weights(model, path):
    """Load a state dict into `model` strictly: an arcface_torch `backbone.pth` (a raw state dict) or a RaceComp
    checkpoint (a dict whose "model" entry is the state dict).

    Only tensors and plain containers are unpickled (`weights_only=True`); anything else is refused.
    Raises ValueError naming the file and listing missing keys, unexpected keys and shape mismatches: a
    checkpoint that does not fit is an error, never a model left with random weights.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise InputError(f"{path}: refused, it holds more than tensors and plain containers "
                         f"(weights_only load failed: {error})") from error
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    if not isinstance(state, dict) or not all(torch.is_tensor(value) for value in state.values()):
        raise InputError(f"{path}: expected a state dict of tensors or a checkpoint with a 'model' state dict")
    expected = model.state_dict()
    missing = expected.keys() - state.keys()
    unexpected = state.keys() - expected.keys()
    mismatched = [f"{key} {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
                  for key in sorted(expected.keys() & state.keys()) if state[key].shape != expected[key].shape]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys: {_key_list(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys: {_key_list(unexpected)}")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatches: {'; '.join(mismatched[:10])}")
        raise InputError(f"{path} does not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def load_encoder_from_upscaler(model, upscaler_state_dict):
    """Copy every `encoder.*` tensor (weights and BN statistics) of an upscaler state dict into `model.encoder`.

    The two encoder key sets must be equal with equal shapes (same encoder architecture), else ValueError.
    Returns the number of tensors copied.
    """
    prefix = "encoder."
    source = {key[len(prefix):]: value for key, value in upscaler_state_dict.items() if key.startswith(prefix)}
    if not source:
        raise InputError("upscaler state dict has no 'encoder.*' keys: not a UNet upscaler checkpoint")
    target = model.encoder.state_dict()
    missing = target.keys() - source.keys()
    unexpected = source.keys() - target.keys()
    mismatched = [f"{key} {tuple(source[key].shape)} vs {tuple(target[key].shape)}"
                  for key in sorted(target.keys() & source.keys()) if source[key].shape != target[key].shape]
    if missing or unexpected or mismatched:
        raise InputError(f"upscaler encoder does not fit this model's encoder (different architecture?): "
                         f"{len(missing)} missing ({_key_list(missing, 5)}), {len(unexpected)} unexpected "
                         f"({_key_list(unexpected, 5)}), {len(mismatched)} shape mismatches "
                         f"({'; '.join(mismatched[:5])})")
    model.encoder.load_state_dict(source, strict=True)
    return len(source)
