"""Identity after upscaling: does a restored face keep the recognition embedding of the original?

Two uses of one convention:
- `IdentitySimilarity` (upscaling study, `--identity-model`): per image, the cosine similarity between the
  recognition embeddings of the upscaled face and of the high-resolution original (`id_cos`), batch by batch
  inside evaluation.evaluate_upscaler. The bicubic reference is the `--arch bicubic` run with the same
  `--identity-model` (its upscaled face is the bicubic one), so a model run pays for one set of faces only.
- `Restoration` (verification study, `--restore`): every RFW face degraded exactly as the upscaling study
  makes its low-resolution images (datasets.downscale) and restored by an upscaler, batch by batch
  inside verification.embed, before the standard RFW protocol.

The convention (`as_face`, then verification.embed_batch, then metrics.pair_scores): a face reaches the
recognition model as an 8-bit image (clamped to [0, 1] and rounded to the uint8 grid, as PSNR/SSIM see
it), resized with datasets.resize_bicubic (antialiased) to the model's square input (112 px for arcface_torch
backbones, else the verification run's --image-size) when it is not already that size. FairFace crops are
resized, not aligned: FairFace has no landmarks. Then the path of run_verify: RGB in [-1, 1], eval mode,
fp32, and the cosine of L2-normalized float64 embeddings. id_cos uses no flip test whatever the recognition
run did: both faces of a pair have the same orientation, and mirrored forwards would double the metric's
cost (bench/bench_identity.py); restored RFW faces get the recognition run's flip test, as its protocol does.
id_cos is a similarity of two images of one face, in [-1, 1] (1: the same embedding direction), not a
verification accuracy: it has no threshold and no impostors.
"""
import torch
from torch import nn

from racecomp import datasets, metrics, schema, verification

IDENTITY_KEYS = schema.OPTIONAL_RACE_METRICS["upscale"]  # per_image.csv / per_race.csv columns, cosine in [-1, 1]


def as_face(images, size):
    """Images (B, 3, H, W) float RGB, any range -> faces (B, 3, h, w) in [0, 1] on the uint8 grid.

    Clamped and rounded as if saved as an 8-bit image, then resized with datasets.resize_bicubic
    (antialiased) to `size` (an int for a square, or (h, w)) when (H, W) differs from it.
    """
    size = (size, size) if isinstance(size, int) else tuple(size)
    faces = (images.float().clamp(0.0, 1.0) * 255.0).round() / 255.0
    if tuple(faces.shape[-2:]) != size:
        faces = datasets.resize_bicubic(faces, size)
    return faces


class IdentitySimilarity:
    """id_cos of a batch: identity(output, hr) -> {"id_cos": [per-image cosine]}.

    `model`: a recognition backbone (facenets), on the device of the batches; `image_size`: its square
    input in px. The original and upscaled faces are embedded in one batched call (2B faces), fp32, eval
    mode, without the flip test; cosines are metrics.pair_scores on float64.
    """

    def __init__(self, model, image_size):
        self.model = model
        self.image_size = image_size

    @torch.no_grad()
    def __call__(self, output, hr):
        self.model.eval()
        count = len(hr)
        faces = torch.cat([as_face(images, self.image_size) for images in (hr, output)])  # (2B, 3, S, S)
        embeddings = verification.embed_batch(self.model, faces, flip=False).cpu().double().numpy()
        return {"id_cos": metrics.pair_scores(embeddings[count:], embeddings[:count]).tolist()}


class Restoration(nn.Module):
    """Faces (B, 3, S, S) in [0, 1] -> the same faces degraded to S/scale and restored to S by `upscaler`.

    The degradation is the upscaling study's own (datasets.downscale: antialiased `kernel`, 8-bit; the
    upscaler run's --lr-kernel),
    applied at the size the faces have (RFW: --image-size, 112 px: 56 px at x2, 28 px at x4); the restored
    face comes back through as_face (8-bit). The upscaler runs in fp32 (callers keep it in eval mode).
    """

    def __init__(self, upscaler, scale, kernel="bicubic"):
        super().__init__()
        self.upscaler = upscaler
        self.scale = scale
        self.kernel = kernel

    def forward(self, faces):
        restored = self.upscaler(datasets.downscale(faces, self.scale, self.kernel)).float()  # (B, 3, S, S)
        return as_face(restored, faces.shape[-2:])
