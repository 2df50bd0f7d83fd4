"""The learning-rate schedule: a pure function of the optimizer step (nothing to save in a checkpoint beyond
the step), and the LambdaLR that applies it."""
import math

import torch

SCHEDULES = ("cosine", "cosine-stages", "linear")


def lr_factor(step, total_steps, warmup_steps, min_factor=0.0, schedule="cosine", restarts=()):
    """Multiplier of the base learning rate at optimizer step `step` (0-based): linear warm-up over the first
    `warmup_steps`, then, over the rest of `total_steps`,
      cosine         one cosine from 1 to min_factor;
      cosine-stages  a cosine from 1 to min_factor restarted at each step of `restarts` (the first step of each
                     stage: of staged unfreezing, or of --cosine-restarts), as a CosineAnnealingLR made anew
                     for each stage;
      linear         a straight line from 1 to min_factor (arcface_torch's PolynomialLRWarmup, power 1).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    start, end = warmup_steps, total_steps
    if schedule == "cosine-stages":
        for boundary in sorted(restarts):
            if boundary <= step:
                start = max(start, boundary)
            elif boundary < end:
                end = boundary
    progress = min(1.0, max(0.0, (step - start) / max(1, end - start)))
    shape = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_factor + (1.0 - min_factor) * shape


def build_scheduler(optimizer, total_steps, warmup_steps, schedule="cosine", restarts=()):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, schedule=schedule, restarts=restarts))
