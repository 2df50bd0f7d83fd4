"""Image files to tensors: RGB decoding with errors that name the item, resampling, FaceImages.

Every image the data layer reads is decoded by `load_rgb`, and every resize (LR images included) goes
through `resize_bicubic` or `downscale` (both `_resize`), so all datasets (and racecomp.imagecache, which
stores what they would decode) agree pixel for pixel. Images on the uint8 grid travel as uint8 (`grey_levels`)
and become floats on the device (`unit_images`). The underscored helpers are internal to racecomp's data
code, not a user API.
"""
import functools

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from racecomp.errors import InputError
from racecomp.alignment import align_face


# One size limit for the runs and `datasets check`: larger images are refused before they are decoded (a
# 100-megapixel image is 300 MB as 8-bit RGB in every worker). Face datasets are far below it (FairFace 224 or
# 448 px, FFHQ 1024 px).
MAX_PIXELS = 4096 * 4096


def check_header(image, path, where):
    """InputError naming the file when the opened, not yet decoded, `image` is larger than MAX_PIXELS or holds
    pixels whose range is unknown (32-bit integers outside a PNG, floats)."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise InputError(f"{where}: image {path} is {width}x{height} ({width * height / 1e6:.1f} megapixels), over "
                         f"the limit of {MAX_PIXELS / 1e6:.1f} megapixels: resize it or leave it out")
    if image.mode == "F" or (image.mode == "I" and image.format != "PNG"):
        raise InputError(f"{where}: image {path} holds {'floating-point' if image.mode == 'F' else '32-bit'} "
                         f"pixels (PIL mode {image.mode}) of unknown range: save it as an 8- or 16-bit image")


def _rgb_array(image, path, where):
    """(H, W, 3) uint8 RGB of a checked image: 16-bit grey by its 0-65535 range, transparency refused, every
    other mode (palette, grey, CMYK, YCbCr, ...) through PIL's conversion."""
    if image.mode.startswith("I;16") or image.mode == "I":  # 16-bit grey (a PNG's mode I is 16-bit)
        values = np.asarray(image).astype(np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise InputError(f"{where}: image {path}: 16-bit pixels outside 0-65535 (PIL mode {image.mode})")
        grey = ((values * 255 + 32767) // 65535).astype(np.uint8)  # nearest 8-bit level
        return np.repeat(grey[..., None], 3, axis=2)
    if "A" in image.mode or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"))
        if (rgba[..., 3] != 255).any():
            raise InputError(f"{where}: image {path} has transparent pixels (PIL mode {image.mode}): what lies "
                             f"under them is not part of the picture; flatten it onto a background first")
        return rgba[..., :3]
    return np.asarray(image.convert("RGB"))


def load_rgb(path, where):
    """Decode `path` to a uint8 tensor (3, H, W), RGB (check_header's limits, _rgb_array's conversions). A
    corrupt, unreadable, too large or unconvertible image raises naming `where` and the file."""
    try:
        with Image.open(path) as image:
            check_header(image, path, where)
            array = _rgb_array(image, path, where)
    except (OSError, ValueError, Image.DecompressionBombError) as error:  # PIL's decode errors
        if isinstance(error, InputError):
            raise
        raise InputError(f"{where}: cannot decode image {path}: {error}") from error
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


# Kernels of the low-resolution images (--lr-kernel), both antialiased.
LR_KERNELS = ("bicubic", "bilinear")


def _resize(image, size, kernel):
    """Resize float (B, 3, H, W) in [0, 1] to `size` (h, w) with `kernel` and antialias, on the uint8 grid."""
    resized = F.interpolate(image, size=size, mode=kernel, antialias=True, align_corners=False)
    return (resized.clamp(0.0, 1.0) * 255.0).round() / 255.0


def grey_levels(images):
    """Float images on the uint8 grid (k / 255, as resize_bicubic returns them) -> uint8 grey levels k, exactly."""
    return (images * 255.0).round().to(torch.uint8)


@functools.lru_cache(maxsize=None)
def _unit_levels(device):
    """(256,) float32: k / 255 for k = 0..255, divided on the CPU, on `device`."""
    return (torch.arange(256, dtype=torch.float32) / 255.0).to(device)


def unit_images(images):
    """uint8 grey levels -> float32 in [0, 1] on their device, level k -> k / 255 looked up from values divided
    on the CPU, so every device gets the very floats the CPU computes (a CUDA division by a scalar multiplies by
    its reciprocal, which can be 1 ulp off). Datasets send images as uint8 (a quarter of the bytes through
    pinning and the copy); models and metrics take floats. Float images are returned as they are."""
    if images.dtype != torch.uint8:
        return images
    return _unit_levels(images.device)[images.long()]


def resize_bicubic(image, size):
    """Resize float (B, 3, H, W) in [0, 1] to `size` (h, w), bicubic a = -0.5 with antialias, on the uint8 grid."""
    return _resize(image, size, "bicubic")


def downscale(hr, scale, kernel="bicubic"):
    """Low-resolution image from `hr`: antialiased `kernel` resampling, quantized as if saved as an 8-bit image.

    hr: (B, 3, H, W) or (3, H, W), uint8 in [0, 255] or float in [0, 1], RGB, any device; H and W
    divisible by `scale`. Returns float32 of shape (..., 3, H/scale, W/scale), values in [0, 1] on the
    uint8 grid (k / 255), on hr's device. Kernels (LR_KERNELS), torch's `F.interpolate(mode=kernel,
    antialias=True, align_corners=False)`, each stretched by `scale` over its footprint:
      bicubic   Keys' cubic with a = -0.5, the same filter as PIL's Image.resize(BICUBIC) (torch's
                non-antialiased bicubic uses a = -0.75 instead). It equals PIL's float-mode ('F') resize after
                quantization; PIL's uint8 resize rounds to uint8 between its horizontal and vertical passes, so
                it differs by at most 1 grey level (on ~10% of pixels of random 64 px images).
      bilinear  the triangle filter of torchvision's Resize (antialias=True), which the RaceComp source
                applied to its uint8 images (load_redux.py: Resize(lr_size)); torchvision's uint8 kernel
                rounds in its own way, so single pixels may differ by a grey level.
    This is the only place LR images are made.
    """
    if hr.dim() not in (3, 4) or hr.shape[-3] != 3:
        raise InputError(f"hr must be (B, 3, H, W) or (3, H, W), got shape {tuple(hr.shape)}")
    if not isinstance(scale, int) or scale < 1:
        raise InputError(f"scale must be a positive integer, got {scale!r}")
    if kernel not in LR_KERNELS:
        raise InputError(f"--lr-kernel {kernel!r}: must be one of {', '.join(LR_KERNELS)}")
    height, width = hr.shape[-2:]
    if height % scale or width % scale:
        raise InputError(f"image size {height}x{width} is not divisible by scale {scale}")
    image = hr.float() / 255.0 if hr.dtype == torch.uint8 else hr.float()
    batch = image if image.dim() == 4 else image.unsqueeze(0)
    lr = _resize(batch, (height // scale, width // scale), kernel)
    return lr if hr.dim() == 4 else lr.squeeze(0)


class FaceImages(torch.utils.data.Dataset):
    """Face images for recognition: item = dict(image, index), `index` into `items`.

    items: list of (key, path). image: float32 (3, S, S) RGB in [0, 1], S = image_size. With
    `align_landmarks` (dict key -> (5, 2) landmarks) each image is aligned with align_face; without it
    images of another size are resized (bicubic, antialias). `flip=True` flips horizontally with
    probability 1/2 (training only). Used for RFW evaluation (unique images of all pairs), identity
    training and the FairFace probes: it knows image files, not any dataset's layout.
    """

    def __init__(self, items, image_size=112, align_landmarks=None, flip=False):
        self.items = list(items)
        self.image_size = image_size
        self.align_landmarks = align_landmarks
        self.flip = flip
        if align_landmarks is not None:
            missing = [key for key, _ in self.items if key not in align_landmarks]
            if missing:
                raise InputError(f"no landmarks for {len(missing)} image(s), e.g. {missing[:3]}")

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        key, path = self.items[index]
        image = load_rgb(path, str(key))
        if self.align_landmarks is not None:
            source = Image.fromarray(image.permute(1, 2, 0).numpy())
            aligned = align_face(source, self.align_landmarks[key], self.image_size)
            image = torch.from_numpy(np.asarray(aligned).copy()).permute(2, 0, 1).float() / 255.0
        else:
            image = image.float() / 255.0
            if tuple(image.shape[-2:]) != (self.image_size, self.image_size):
                image = resize_bicubic(image.unsqueeze(0), (self.image_size, self.image_size))[0]
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return dict(image=image, index=index)
