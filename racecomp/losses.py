"""Super-resolution training losses: pixel (L1, Charbonnier), SSIM and VGG19 perceptual, and their weighted sum.

Every loss takes sr, hr: (B, 3, H, W) RGB on the [0, 1] scale (sr may stray outside it: the upscalers are
linear), returns a scalar tensor, and is computed in float32 even under autocast (the VGG network of the
perceptual loss runs in the autocast precision; its features are compared in float32).
"""
import os

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from racecomp import files, metrics
from racecomp.errors import InputError

CHARBONNIER_EPS = 1e-3
PIXEL_LOSSES = ("l1", "charbonnier")
PIXEL_SPACES = ("rgb", "imagenet")  # what the pixel loss compares (SRLoss)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Real-ESRGAN's / RealBasicVSR's VGG19 layers and weights (features indices 7, 16, 25, 34), before ReLU.
DEFAULT_VGG_LAYERS = ("conv2_2", "conv3_4", "conv4_4", "conv5_4")
DEFAULT_VGG_LAYER_WEIGHTS = (0.1, 1.0, 1.0, 1.0)


def _check_pair(sr, hr):
    # Broadcasting a mis-shaped target would give a plausible but wrong loss.
    if sr.dim() != 4 or sr.shape != hr.shape:
        raise InputError(f"sr and hr must be (B, C, H, W) of the same shape, got {tuple(sr.shape)} and "
                         f"{tuple(hr.shape)}")


def l1_loss(sr, hr):
    """Mean absolute error over all elements, in float32; 0 for equal inputs."""
    _check_pair(sr, hr)
    return (sr.float() - hr.float()).abs().mean()


def charbonnier_loss(sr, hr, eps=CHARBONNIER_EPS):
    """Mean of sqrt((sr - hr)^2 + eps^2) over all elements, in float32; eps = 1e-3 on the [0, 1] scale.

    A smooth L1: equal inputs give exactly eps (not 0), errors much larger than eps give about |sr - hr|.
    """
    _check_pair(sr, hr)
    diff = sr.float() - hr.float()
    return torch.sqrt(diff * diff + eps * eps).mean()


class SSIMLoss(nn.Module):
    """1 - mean SSIM (metrics.ssim: 11x11 Gaussian window, sigma 1.5, valid region, data_range 1.0), in
    float32, over RGB channels and the batch. Range [0, 2]; 0 for equal inputs. Inputs at least 11x11."""

    def forward(self, sr, hr):
        _check_pair(sr, hr)
        return 1.0 - metrics.ssim(sr.float(), hr.float(), data_range=1.0).mean()


def vgg19_conv_indices():
    """{"conv1_1": 0, ..., "conv5_4": 34}: torchvision vgg19 `features` index of each conv, derived from the
    layer list (block number increments after each max-pool, conv number within the block)."""
    with torch.device("meta"):
        features = torchvision.models.vgg19(weights=None).features
    indices, block, conv = {}, 1, 0
    for index, layer in enumerate(features):
        if isinstance(layer, nn.Conv2d):
            conv += 1
            indices[f"conv{block}_{conv}"] = index
        elif isinstance(layer, nn.MaxPool2d):
            block, conv = block + 1, 0
    return indices


def _load_vgg19_features(weights_path, depth):
    """vgg19 `features[:depth]` with ImageNet weights: from a local state dict or torchvision's download."""
    if weights_path is None:
        try:
            model = torchvision.models.vgg19(weights=torchvision.models.VGG19_Weights.IMAGENET1K_V1)
        except Exception as error:  # network, proxy, checksum: all mean the weights are not here
            raise InputError(
                f"could not download torchvision's VGG19 ImageNet weights ({error}). Offline, save them on a "
                "machine with internet: torch.save(torchvision.models.vgg19(weights='IMAGENET1K_V1')"
                ".state_dict(), 'vgg19.pth'), then pass that file as the VGG weights path "
                "(VGGPerceptualLoss(weights_path=...), SRLoss(vgg_weights_path=...))") from error
        return model.features[:depth]
    if not os.path.isfile(weights_path):
        raise FileNotFoundError(f"VGG19 weights file {weights_path}: no such file (expected a torchvision vgg19 "
                                "state dict, as saved by torch.save(torchvision.models.vgg19("
                                "weights='IMAGENET1K_V1').state_dict(), path))")
    state = files.load_checkpoint(weights_path)  # weights_only: a pickle that would run code is refused
    with torch.device("meta"):  # no memory for the random init that the file replaces
        features = torchvision.models.vgg19(weights=None).features[:depth]
    needed = features.state_dict().keys()
    missing = [f"features.{key}" for key in needed if f"features.{key}" not in state]
    if missing:
        raise InputError(f"VGG19 weights file {weights_path}: not a torchvision vgg19 state dict, missing "
                         f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    try:
        features.load_state_dict({key: state[f"features.{key}"] for key in needed}, assign=True)
    except RuntimeError as error:  # shape mismatch: a different VGG variant
        raise InputError(f"VGG19 weights file {weights_path}: {error}") from error
    return features


class VGGPerceptualLoss(nn.Module):
    """Weighted sum over layers of the L1 distance between VGG19 features of sr and hr (ESRGAN's loss).

    Features are conv outputs BEFORE their ReLU, as ESRGAN (after the activation, deep features are sparse
    and carry less signal). Inputs are RGB on [0, 1], normalized here with ImageNet mean/std. ImageNet
    weights come from `weights_path` (a torchvision vgg19 state dict, loaded with weights_only=True; only the
    `features.*` keys are used) or else torchvision's download; never random. The network is frozen, stays in
    eval mode and runs under the caller's autocast (bf16/fp16 convolutions on a GPU, like the model it trains);
    the kept features are compared in float32. Gradients flow to sr only.
    """

    def __init__(self, weights_path=None, layers=DEFAULT_VGG_LAYERS, layer_weights=DEFAULT_VGG_LAYER_WEIGHTS):
        super().__init__()
        conv_indices = vgg19_conv_indices()
        unknown = [name for name in layers if name not in conv_indices]
        if unknown or not layers:
            raise InputError(f"VGG layers {tuple(layers)}: each must be one of {', '.join(conv_indices)}")
        if len(layer_weights) != len(layers):
            raise InputError(f"{len(layer_weights)} layer weights for {len(layers)} VGG layers")
        self.layer_weights = {conv_indices[name]: float(weight) for name, weight in zip(layers, layer_weights)}
        self.features = _load_vgg19_features(weights_path, max(self.layer_weights) + 1)
        for layer in self.features:
            if isinstance(layer, nn.ReLU):
                layer.inplace = True  # one activation less per ReLU; _layer_features keeps copies of the features
        self.features.requires_grad_(False)
        self.features.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode=True):
        super().train(mode)
        self.features.eval()  # frozen: never in training mode, whatever the surrounding model does
        return self

    def _layer_features(self, x):  # {features index: (B, C_l, H_l, W_l) float32}
        x = (x.float() - self.mean) / self.std
        kept = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.layer_weights:
                # A float32 copy: the in-place ReLU that follows must not overwrite the pre-activation feature.
                kept[index] = x.to(torch.float32, copy=True)
        return kept

    def forward(self, sr, hr):
        _check_pair(sr, hr)
        sr_features = self._layer_features(sr)
        with torch.no_grad():
            hr_features = self._layer_features(hr)
        with torch.autocast(device_type=sr.device.type, enabled=False):
            return sum(weight * F.l1_loss(sr_features[index], hr_features[index])
                       for index, weight in self.layer_weights.items())


class SRLoss(nn.Module):
    """pixel_weight * pixel + perceptual_weight * VGG perceptual + ssim_weight * (1 - SSIM).

    The pixel loss compares the images in `pixel_space` (PIXEL_SPACES): "rgb", [0, 1]; "imagenet", each channel
    as (x - mean) / std with ImageNet's mean and std, as the RaceComp source computed its L1 (on its
    Normalize'd tensors; 1 / std is about 4.4, so its pixel weight 0.1 is about 0.44 in rgb units).

    Returns (total, parts): total a float32 scalar tensor; parts the unweighted terms for logging ("pixel", and
    "perceptual" / "ssim_loss" when their weight is non-zero) as detached scalar tensors, so that the training
    step never waits for the device to read them (engine.Trainer sums them there). The VGG network is built
    only when perceptual_weight > 0, with `vgg_layer_weights` for DEFAULT_VGG_LAYERS.
    """

    def __init__(self, pixel="l1", perceptual_weight=0.0, ssim_weight=0.0, vgg_weights_path=None, pixel_weight=1.0,
                 vgg_layer_weights=DEFAULT_VGG_LAYER_WEIGHTS, pixel_space="rgb"):
        super().__init__()
        if pixel not in PIXEL_LOSSES:
            raise InputError(f"pixel loss {pixel!r}: must be one of {', '.join(PIXEL_LOSSES)}")
        if pixel_space not in PIXEL_SPACES:
            raise InputError(f"--pixel-space {pixel_space!r}: must be one of {', '.join(PIXEL_SPACES)}")
        if min(pixel_weight, perceptual_weight, ssim_weight) < 0 or pixel_weight + perceptual_weight + ssim_weight == 0:
            raise InputError(f"loss weights must be non-negative and not all 0, got pixel {pixel_weight}, "
                             f"perceptual {perceptual_weight}, ssim {ssim_weight}")
        if vgg_weights_path is not None and perceptual_weight == 0:
            raise InputError("a VGG weights path was given but the perceptual weight is 0")
        self.pixel_loss = l1_loss if pixel == "l1" else charbonnier_loss
        self.pixel_weight = pixel_weight
        self.perceptual_weight = perceptual_weight
        self.ssim_weight = ssim_weight
        self.perceptual = (VGGPerceptualLoss(vgg_weights_path, layer_weights=vgg_layer_weights)
                           if perceptual_weight > 0 else None)
        self.ssim_loss = SSIMLoss()
        # The mean cancels in a difference; only the per-channel scale matters.
        scale = 1.0 / torch.tensor(IMAGENET_STD) if pixel_space == "imagenet" else torch.ones(3)
        self.register_buffer("pixel_scale", scale.view(1, 3, 1, 1), persistent=False)

    def forward(self, sr, hr):
        pixel = self.pixel_loss(sr.float() * self.pixel_scale, hr.float() * self.pixel_scale)
        total = self.pixel_weight * pixel
        parts = {"pixel": pixel.detach()}
        if self.perceptual is not None:
            perceptual = self.perceptual(sr, hr)
            total = total + self.perceptual_weight * perceptual
            parts["perceptual"] = perceptual.detach()
        if self.ssim_weight > 0:
            ssim_loss = self.ssim_loss(sr, hr)
            total = total + self.ssim_weight * ssim_loss
            parts["ssim_loss"] = ssim_loss.detach()
        return total, parts
