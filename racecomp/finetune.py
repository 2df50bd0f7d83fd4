"""Fine-tuning strategies: which parts of a pretrained encoder train, and staged unfreezing by stage.

A model fine-tuned here has its pretrained part under `model.encoder` (UNet upscalers, EmbeddingNet); the
rest (decoder, head) always trains. engine.Trainer applies the strategy and the unfreezing schedule.
"""
import re

import torch

from racecomp.errors import InputError

FINETUNE_STRATEGIES = ("full", "frozen", "bn_stats", "bn_affine", "bn_skip")
_BN_TYPES = (torch.nn.modules.batchnorm._BatchNorm,)
# Projection shortcuts of residual blocks (timm ResNet and arcface iresnet both call them `downsample`).
_SKIP_PATTERN = re.compile(r"(^|\.)layer\d+\.\d+\.downsample\.")


def _encoder_modules(model):
    if not hasattr(model, "encoder"):
        raise InputError(f"{type(model).__name__} has no `encoder`; fine-tuning strategies need one")
    return model.encoder


def configure_finetune(model, strategy):
    """Set requires_grad for `strategy` on the pretrained part (`model.encoder`); the rest always trains.

    full: everything trains. frozen: encoder fixed, its BatchNorm statistics too.
    bn_stats: encoder weights fixed, only its BatchNorm running statistics adapt.
    bn_affine: bn_stats plus BatchNorm weight and bias train. bn_skip: bn_affine plus the residual
    projection shortcuts (`layerN.M.downsample`, ResNet/iresnet); a model without them is refused.
    """
    if strategy not in FINETUNE_STRATEGIES:
        raise InputError(f"unknown fine-tuning strategy {strategy!r}; valid: {', '.join(FINETUNE_STRATEGIES)}")
    for param in model.parameters():
        param.requires_grad_(True)
    if strategy == "full":
        return
    encoder = _encoder_modules(model)
    for param in encoder.parameters():
        param.requires_grad_(False)
    if strategy in ("bn_affine", "bn_skip"):
        for module in encoder.modules():
            if isinstance(module, _BN_TYPES):
                for param in module.parameters():
                    param.requires_grad_(True)
    if strategy == "bn_skip":
        skip = [p for name, p in encoder.named_parameters() if _SKIP_PATTERN.search(name)]
        if not skip:
            raise InputError("bn_skip: this encoder has no residual projection shortcuts (layerN.M.downsample)")
        for param in skip:
            param.requires_grad_(True)


def set_train_mode(model, strategy, frozen_prefixes=()):
    """model.train(), then BatchNorm layers whose statistics must not move go to eval mode.

    Under `frozen`, every encoder BatchNorm; under staged unfreezing, BatchNorms of still-frozen stages
    (`frozen_prefixes`, names relative to the model). bn_stats/bn_affine/bn_skip keep encoder BN in train
    mode: adapting those statistics is their point.
    """
    model.train()
    for name, module in model.named_modules():
        if not isinstance(module, _BN_TYPES):
            continue
        if strategy == "frozen" and name.startswith("encoder."):
            module.eval()
        elif any(name.startswith(prefix) for prefix in frozen_prefixes):
            module.eval()


def parse_unfreeze(text, flag="--unfreeze"):
    """'0,2,4' -> (0, 2, 4), epochs of `flag`: for --unfreeze, at epoch e_k the last k encoder stages train
    (before e_1 only the decoder/head)."""
    if not text:
        return ()
    try:
        epochs = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"{flag} {text!r}: expected comma-separated epochs like 1,3,5") from None
    check_unfreeze(epochs, f"{flag} {text!r}")
    return epochs


def check_unfreeze(epochs, name):
    if list(epochs) != sorted(epochs) or any(e < 0 for e in epochs):
        raise InputError(f"{name}: epochs must be non-negative and increasing")


def apply_unfreeze(model, schedule, stage_prefixes, epoch):
    """Freeze encoder parameters by name except the last k stages, k = number of schedule epochs <= epoch.

    `stage_prefixes` lists encoder stages in input-to-output order, each a name prefix (relative to the
    model, e.g. "encoder.layer4.") or a tuple of them (encoders.encoder_stage_prefixes).
    Returns the prefixes that stay frozen (for set_train_mode). Parameters outside every stage (the decoder,
    head, and encoder parts the model trains with them) are left as they are.
    """
    n_open = sum(1 for start in schedule if epoch >= start)
    stages = [[stage] if isinstance(stage, str) else list(stage) for stage in stage_prefixes]  # a stage may
    frozen = [prefix for stage in stages[:max(0, len(stages) - n_open)] for prefix in stage]  # span modules
    staged = tuple(prefix for stage in stages for prefix in stage)
    for name, param in model.named_parameters():
        if name.startswith(staged):  # the encoder, less what the model trains with its decoder
            param.requires_grad_(not name.startswith(tuple(frozen)))
    return frozen
