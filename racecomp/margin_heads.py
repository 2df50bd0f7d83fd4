"""Additive-margin softmax heads for face-recognition training: embeddings + labels -> logits for cross-entropy.

Each head holds one centre per class (`weight`, (num_classes, embedding_size)). cos(theta) is the cosine between
the L2-normalized embedding and each L2-normalized centre; the margin is applied to the true class only and
every logit is scaled by `s`. Computed in float32 with autocast disabled, whatever the caller's precision:
bf16 keeps 8 significant bits, so cos(theta) would be rounded to ~0.004 and s * cos(theta) near 64 to a 0.25 grid.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

MARGIN_HEAD_NAMES = ("arcface", "cosface")
# ArcFace's true-class logit and its gradient: the formula's own, or arcface_torch's (margin under no_grad).
MARGIN_GRADIENTS = ("exact", "arcface_torch")


def _check_labels(labels, num_classes, batch_size):
    if labels.shape != (batch_size,):
        raise ValueError(f"labels must have shape ({batch_size},), got {tuple(labels.shape)}")
    # Reading the range back would make the host wait for the GPU every step; there one_hot and cross_entropy
    # stop on an out-of-range label themselves (a device-side assertion), so it is checked on the CPU only.
    if labels.device.type == "cpu" and labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{labels.min().item()}, "
                         f"{labels.max().item()}]")


class _MarginHead(nn.Module):
    """Class centres and the shared cosine computation; subclasses define `_margin_cosine(cosine)`, the
    true-class logit before scaling from cos(theta) (float32, in [-1, 1])."""

    def __init__(self, embedding_size, num_classes, s, m):
        super().__init__()
        self.s = s
        self.m = m
        # N(0, 0.01) as arcface_torch's PartialFC initialises its centres; only their direction matters.
        self.weight = nn.Parameter(torch.normal(0.0, 0.01, (num_classes, embedding_size)))

    def forward(self, embeddings, labels):
        """embeddings (B, embedding_size) any float dtype, labels (B,) int in [0, num_classes)
        -> logits (B, num_classes) float32: s * margin(cos theta) for the true class, s * cos theta elsewhere."""
        _check_labels(labels, self.weight.shape[0], embeddings.shape[0])
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cosine = F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float()))
            cosine = cosine.clamp(-1.0, 1.0)  # rounding can step just past +-1
            true_class = F.one_hot(labels, cosine.shape[1]).bool()
            logits = torch.where(true_class, self._margin_cosine(cosine), cosine)
            return self.s * logits


class ArcFace(_MarginHead):
    """Additive angular margin: true-class logit s * cos(theta + m) (Deng et al., ArcFace, 2019).

    cos(theta + m) only decreases with theta while theta + m <= pi. Past that point (cos theta <= cos(pi - m)) the
    logit is cos(theta) - m * sin(m) instead, keeping it decreasing: the `easy_margin=False` rule of insightface,
    used by arcface_torch's losses.ArcFace/CombinedMarginLoss from Jan 2022 (commit 2e2e8c97) until Dec 2022. Since
    commit 657ae30e arcface_torch computes cos(arccos(cos theta) + m) under no_grad instead (losses.py L42-48
    @7fadd420): same value for theta + m <= pi, no fallback, gradient passed straight through as if there were
    no margin. `gradient` (MARGIN_GRADIENTS) picks: "exact", the formula's value and gradient; "arcface_torch",
    that one. `easy_margin=True` applies the margin only where cos theta > 0 (theta < pi/2), exact gradient.
    """

    def __init__(self, embedding_size, num_classes, s=64.0, m=0.5, easy_margin=False, gradient="exact"):
        super().__init__(embedding_size, num_classes, s, m)
        if gradient not in MARGIN_GRADIENTS:
            raise ValueError(f"margin gradient {gradient!r}: must be one of {', '.join(MARGIN_GRADIENTS)}")
        if easy_margin and gradient != "exact":
            raise ValueError("easy_margin has the exact gradient only")
        self.easy_margin = easy_margin
        self.gradient = gradient

    def _margin_cosine(self, cosine):
        if self.gradient == "arcface_torch":
            # Value cos(arccos(cos theta) + m), gradient 1 with respect to cos theta: the margin adds no gradient.
            shifted = torch.cos(torch.acos(cosine.detach()) + self.m)
            return cosine - cosine.detach() + shifted
        # The floor keeps the sqrt's gradient finite at cos theta = +-1 (where the clamp's gradient is not relied
        # on to be zero); it changes sin theta by at most 1e-6.
        sine = torch.sqrt((1.0 - cosine * cosine).clamp(min=1e-12))
        cos_theta_plus_m = cosine * math.cos(self.m) - sine * math.sin(self.m)
        if self.easy_margin:
            return torch.where(cosine > 0.0, cos_theta_plus_m, cosine)
        return torch.where(cosine > math.cos(math.pi - self.m), cos_theta_plus_m, cosine - self.m * math.sin(self.m))


class CosFace(_MarginHead):
    """Additive cosine margin: true-class logit s * (cos theta - m) (Wang et al., CosFace, 2018; the paper's
    m = 0.35; arcface_torch's CosFace defaults to 0.40)."""

    def __init__(self, embedding_size, num_classes, s=64.0, m=0.35):
        super().__init__(embedding_size, num_classes, s, m)

    def _margin_cosine(self, cosine):
        return cosine - self.m


def get_margin_head(name, embedding_size, num_classes, s=64.0, m=None, gradient="exact"):
    """Margin head by name ("arcface" or "cosface"); `m=None` takes the head's default margin (0.5 rad / 0.35);
    `gradient` (MARGIN_GRADIENTS) is ArcFace's (CosFace's margin has the exact gradient only)."""
    heads = {"arcface": ArcFace, "cosface": CosFace}
    if name not in heads:
        raise ValueError(f"unknown margin head {name!r}; valid: {', '.join(MARGIN_HEAD_NAMES)}")
    if name != "arcface" and gradient != "exact":
        raise ValueError(f"margin gradient {gradient!r} is ArcFace's; {name} has the exact one only")
    options = {"gradient": gradient} if name == "arcface" else {}
    if m is not None:
        options["m"] = m
    return heads[name](embedding_size, num_classes, s=s, **options)
