"""Identity after upscaling: does a restored face keep the recognition embedding of the original?

Two uses of one convention:
- `IdentitySimilarity` (upscaling study, `--identity-model`): per image, the cosine similarity between the
  recognition embeddings of the upscaled face and of the high-resolution original (`id_cos`), and of the
  bicubic upscale and the original (`id_cos_bicubic`), batch by batch inside evaluation.evaluate_upscaler.
- `Restoration` (verification study, `--restore`): every RFW face degraded exactly as the upscaling study
  makes its low-resolution images (datasets.downscale_bicubic) and restored by an upscaler, batch by batch
  inside verification.embed, before the standard RFW protocol.

The convention (`as_face`, then verification.embed_batch, then metrics.pair_scores): a face reaches the
recognition model as an 8-bit image (clamped to [0, 1] and rounded to the uint8 grid, as PSNR/SSIM see
it), resized with datasets.resize_bicubic (antialiased) to the model's square input (112 px for arcface_torch
backbones, else the verification run's --image-size) when it is not already that size. FairFace crops are
resized, not aligned: FairFace has no landmarks. Then the path of run_verify: RGB in [-1, 1], eval mode,
fp32, the flip test unless the recognition run used --no-flip, and the cosine of L2-normalized float64
embeddings. id_cos is a similarity of two images of one face, in [-1, 1] (1: the same embedding direction),
not a verification accuracy: it has no threshold and no impostors.
"""
import torch
from torch import nn

from racecomp import datasets, metrics, upscalers, verification

IDENTITY_KEYS = ("id_cos", "id_cos_bicubic")  # per_image.csv / per_race.csv columns, cosine in [-1, 1]


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
    """id_cos and id_cos_bicubic of a batch: identity(lr, output, hr) -> {column: [per-image cosine]}.

    `model`: a recognition backbone (facenets), on the device of the batches; `image_size`: its square
    input in px; `flip`: the flip test; `scale`: the upscaling factor (for the bicubic reference, the same
    upscalers.bicubic_upsample as `--arch bicubic`). The three sets of faces (original, upscaled, bicubic)
    are embedded in one batched call, fp32, eval mode; cosines are metrics.pair_scores on float64.
    """

    def __init__(self, model, image_size, flip, scale):
        self.model = model
        self.image_size = image_size
        self.flip = flip
        self.scale = scale

    @torch.no_grad()
    def __call__(self, lr, output, hr):
        self.model.eval()
        count = len(hr)
        faces = torch.cat([as_face(images, self.image_size)
                           for images in (hr, output, upscalers.bicubic_upsample(lr, self.scale))])  # (3B, 3, S, S)
        embeddings = verification.embed_batch(self.model, faces, self.flip).cpu().double().numpy()
        original, upscaled, bicubic = embeddings[:count], embeddings[count:2 * count], embeddings[2 * count:]
        return {"id_cos": metrics.pair_scores(upscaled, original).tolist(),
                "id_cos_bicubic": metrics.pair_scores(bicubic, original).tolist()}


class Restoration(nn.Module):
    """Faces (B, 3, S, S) in [0, 1] -> the same faces degraded to S/scale and restored to S by `upscaler`.

    The degradation is the upscaling study's own (datasets.downscale_bicubic: antialiased bicubic, 8-bit),
    applied at the size the faces have (RFW: --image-size, 112 px: 56 px at x2, 28 px at x4); the restored
    face comes back through as_face (8-bit). The upscaler runs in fp32 (callers keep it in eval mode).
    """

    def __init__(self, upscaler, scale):
        super().__init__()
        self.upscaler = upscaler
        self.scale = scale

    def forward(self, faces):
        restored = self.upscaler(datasets.downscale_bicubic(faces, self.scale)).float()  # (B, 3, S, S)
        return as_face(restored, faces.shape[-2:])
