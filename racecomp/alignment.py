"""The ArcFace 5-point face template and the similarity alignment onto it (insightface's convention).

One copy of the template for the whole project: RFW alignment (racecomp.datasets) uses it, and the demo
faces (racecomp.toyfaces) are designed in its frame (tests/test_toyfaces.py checks them against it).
numpy and Pillow only.
"""
import numpy as np
from PIL import Image

from racecomp.errors import InputError

# ArcFace 5-point template for a 112x112 crop (insightface `face_align.arcface_dst`), in pixel-index
# coordinates (pixel (0, 0) is centred on (0, 0), the OpenCV convention). Order: left eye, right eye,
# nose tip, left mouth corner, right mouth corner, as seen in the image.
ARCFACE_TEMPLATE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
])


def similarity_transform(src_pts, dst_pts):
    """Least-squares similarity (rotation, uniform scale, shift) taking src_pts onto dst_pts (Umeyama 1991).

    src_pts, dst_pts: (N, 2), N >= 2, same coordinate convention. Returns a 2x3 float64 matrix M with
    dst ~= M @ [x, y, 1]. Reflections are excluded.
    """
    src = np.asarray(src_pts, dtype=np.float64)
    dst = np.asarray(dst_pts, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise InputError(f"need two (N, 2) point arrays with N >= 2, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_centred, dst_centred = src - src_mean, dst - dst_mean
    src_variance = (src_centred ** 2).sum() / len(src)
    if src_variance == 0.0:
        raise InputError("source points all coincide: no similarity transform")
    covariance = dst_centred.T @ src_centred / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ np.diag(signs) @ vt
    scale = (singular * signs).sum() / src_variance
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def align_face(image, landmarks, size=112):
    """Warp a PIL image so its 5 landmarks land on the ArcFace template scaled to `size` x `size`.

    landmarks: (5, 2) pixel-index coordinates (pixel centres on integers, as RFW and insightface use),
    in template order. Returns an RGB PIL image `size` x `size`, bilinear, black outside the source.
    """
    template = ARCFACE_TEMPLATE_112 * (size / 112.0)
    forward = np.vstack([similarity_transform(landmarks, template), [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(forward)[:2]  # output pixel -> source pixel, pixel-index convention
    # Pillow samples output pixel (x, y) at (x + 0.5, y + 0.5) and reads the source with pixel centres
    # at +0.5 too: shift both sides by half a pixel so integer landmarks stay on pixel centres.
    linear, shift = inverse[:, :2], inverse[:, 2]
    pillow_shift = shift + 0.5 - linear @ np.array([0.5, 0.5])
    coefficients = (linear[0, 0], linear[0, 1], pillow_shift[0], linear[1, 0], linear[1, 1], pillow_shift[1])
    return image.convert("RGB").transform((size, size), Image.AFFINE, data=coefficients,
                                          resample=Image.BILINEAR)
