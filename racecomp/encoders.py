"""timm encoders shared by the upscalers and the recognition backbones.

Both studies build the encoder with the same call, so an upscaler's `encoder.*` weights load key for key
into a recognition backbone (`--init-from`).
"""
import os

import timm
import torch

ENCODER_NAMES = ("resnet50", "fastvit_t8", "fastvit_t12", "fastvit_s12", "fastvit_sa12", "fastvit_sa24",
                 "fastvit_sa36", "fastvit_ma36")
# fastvit_sa24's encoder (20.4M parameters) is the FastViT closest in size to ResNet50's (23.5M).
DEFAULT_FASTVIT = "fastvit_sa24"


def create_encoder(name, pretrained=False, pretrained_path=None):
    """timm `features_only` encoder returning every stage's feature map (stride 2..32 for ResNet50, 4..32 FastViT).

    `pretrained` loads timm's ImageNet weights: from `pretrained_path` (a local state dict of the full timm
    model, as saved by `torch.save(timm.create_model(name, pretrained=True).state_dict(), path)`) when given,
    else from the hub. Never falls back to random weights: a missing file or an offline hub is an error
    that says how to provide the file.
    """
    if name not in ENCODER_NAMES:
        raise ValueError(f"unknown encoder {name!r}; valid: {', '.join(ENCODER_NAMES)}")
    if pretrained_path is not None and not pretrained:
        raise ValueError("--pretrained-path given without --pretrained")
    if not pretrained:
        return timm.create_model(name, pretrained=False, features_only=True)
    if pretrained_path is not None:
        if not os.path.isfile(pretrained_path):
            raise FileNotFoundError(f"--pretrained-path {pretrained_path}: no such file")
        # timm's own loader maps full-model keys onto the features_only module names (FastViT flattens them).
        return timm.create_model(name, pretrained=True, features_only=True,
                                 pretrained_cfg_overlay=dict(file=pretrained_path))
    try:
        return timm.create_model(name, pretrained=True, features_only=True)
    except Exception as error:  # timm raises several kinds (network, hub, file) for the same cause
        raise RuntimeError(
            f"could not load ImageNet weights for {name} from the hub ({error}). Offline, save them on a "
            f"machine with internet: torch.save(timm.create_model({name!r}, pretrained=True).state_dict(), "
            f"'{name}.pth'), then pass --pretrained-path {name}.pth") from error
