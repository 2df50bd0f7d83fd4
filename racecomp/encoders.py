"""timm encoders shared by the upscalers and the recognition backbones, and their stages.

Both studies build the encoder with the same call, so an upscaler's `encoder.*` weights load key for key
into a recognition backbone (`--init-from`), and staged unfreezing finds the same stages in both.
"""
import os

import timm

from racecomp.errors import InputError

ENCODER_NAMES = ("resnet50", "fastvit_t8", "fastvit_t12", "fastvit_s12", "fastvit_sa12", "fastvit_sa24",
                 "fastvit_sa36", "fastvit_ma36")
# The FastViT of the upscaling study this project reproduces (Maltomatic/RaceComp general_trainer.py L78); for a
# FastViT of ResNet50's size (23.5M encoder parameters) name fastvit_sa24 (20.4M).
DEFAULT_FASTVIT = "fastvit_ma36"


def create_encoder(name, pretrained=False, pretrained_path=None):
    """timm `features_only` encoder returning every stage's feature map (stride 2..32 for ResNet50, 4..32 FastViT).

    `pretrained` loads timm's ImageNet weights: from `pretrained_path` (a local state dict of the full timm
    model, as saved by `torch.save(timm.create_model(name, pretrained=True).state_dict(), path)`) when given,
    else from the hub. Never falls back to random weights: a missing file or an offline hub is an error
    that says how to provide the file.
    """
    if name not in ENCODER_NAMES:
        raise InputError(f"unknown encoder {name!r}; valid: {', '.join(ENCODER_NAMES)}")
    if pretrained_path is not None and not pretrained:
        raise InputError("--pretrained-path given without --pretrained")
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
        raise InputError(
            f"could not load ImageNet weights for {name} from the hub ({error}). Offline, save them on a "
            f"machine with internet: torch.save(timm.create_model({name!r}, pretrained=True).state_dict(), "
            f"'{name}.pth'), then pass --pretrained-path {name}.pth") from error


def encoder_stage_prefixes(model):
    """Parameter-name prefixes of `model.encoder`'s stages, input to output, one tuple per feature_info entry.

    Each prefix is a full parameter-name prefix ending in "." (e.g. "encoder.layer4."), so
    `name.startswith(prefix)` selects exactly that sub-module. Modules before the first feature map go with the
    first stage (ResNet50: conv1, bn1 -> ("encoder.conv1.", "encoder.bn1."); FastViT: stem_0..2 with stages_0).
    Only sub-modules holding parameters are listed; parts the model trains with its decoder
    (`model.trained_as_decoder`, see last_blocks_prefix) are left out of every stage. Works for any model
    whose timm features_only encoder is stored as `model.encoder` (UNet upscalers and facenets.EmbeddingNet
    alike); a model without one
    (iresnet, mobilefacenet) has no stages to open and is refused with ValueError.
    """
    encoder = getattr(model, "encoder", None)
    if encoder is None or not hasattr(encoder, "feature_info"):
        raise InputError(f"{type(model).__name__} has no timm encoder (`model.encoder` with feature_info), so it "
                         f"has no encoder stages to unfreeze; staged unfreezing (--unfreeze) needs a model built "
                         f"on {', '.join(ENCODER_NAMES)}")
    # timm's FeatureListNet flattens nested names: feature module "stages.0" is the child "stages_0".
    stage_ends = [name.replace(".", "_") for name in encoder.feature_info.module_name()]
    stages, current = [], []
    for name, child in encoder.named_children():
        if len(stages) == len(stage_ends):
            if any(True for _ in child.parameters()):
                raise InputError(f"encoder module {name!r} comes after the last feature stage {stage_ends[-1]!r}")
            continue
        if any(True for _ in child.parameters()):
            current.append(f"encoder.{name}.")
        if name == stage_ends[len(stages)]:
            stages.append(tuple(current))
            current = []
    if len(stages) != len(stage_ends):
        raise InputError(f"encoder feature modules {stage_ends[len(stages):]} are not direct children of the encoder")
    as_decoder = tuple(getattr(model, "trained_as_decoder", ()))
    return [tuple(part for prefix in stage for part in _prefixes_without(model, prefix, as_decoder))
            for stage in stages]


def _prefixes_without(model, prefix, excluded):
    """[prefix], or, when an `excluded` prefix lies under it, the prefixes of its sub-modules holding parameters
    outside every excluded one."""
    if not any(name.startswith(prefix) for name in excluded):
        return [prefix]
    if prefix in excluded:
        return []
    module = model.get_submodule(prefix[:-1])
    return [part for name, child in module.named_children() if any(True for _ in child.parameters())
            for part in _prefixes_without(model, f"{prefix}{name}.", excluded)]


def last_blocks_prefix(model):
    """Parameter-name prefix of the blocks of a FastViT encoder's last stage (after its downsampling and
    positional encoding: the attention blocks), e.g. "encoder.stages_3.blocks."; InputError for other encoders."""
    last = model.encoder.feature_info.module_name()[-1].replace(".", "_")
    stage = getattr(model.encoder, last)
    if not hasattr(stage, "blocks") or not hasattr(stage, "downsample"):
        raise InputError(f"{type(stage).__name__}: --last-blocks decoder is for FastViT encoders (their last stage's "
                         f"blocks), not this one")
    return f"encoder.{last}.blocks."
