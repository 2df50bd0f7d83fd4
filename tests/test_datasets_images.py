"""Bicubic downscale against PIL, face alignment onto the ArcFace template, and FaceImages."""
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from racecomp.alignment import ARCFACE_TEMPLATE_112, align_face, similarity_transform
from racecomp.datasets import check, images
from racecomp.datasets.images import FaceImages, downscale, load_rgb

# ---------------------------------------------------------------------------------------------- bicubic downscale

def random_image(size=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_downscale_matches_pil_bicubic(scale):
    pixels = random_image(48)
    lr = downscale(torch.from_numpy(pixels).permute(2, 0, 1), scale)
    assert torch.allclose(lr * 255, (lr * 255).round(), atol=1e-4)  # on the uint8 grid
    ours = (lr * 255).round().permute(1, 2, 0).numpy()
    small = (48 // scale, 48 // scale)
    pil_uint8 = np.asarray(Image.fromarray(pixels).resize(small, Image.BICUBIC)).astype(np.float64)
    assert np.abs(ours - pil_uint8).max() <= 1  # PIL rounds to uint8 between its two passes
    # PIL in float mode has no intermediate rounding: then the kernels agree exactly.
    pil_float = np.stack([np.asarray(Image.fromarray(pixels[..., c].astype(np.float32), "F")
                                     .resize(small, Image.BICUBIC)) for c in range(3)], axis=-1)
    assert np.array_equal(ours, np.clip(np.round(pil_float), 0, 255))


@pytest.mark.parametrize("scale", [2, 4])
def test_bilinear_downscale_is_torchvisions_resize_to_a_grey_level(scale):
    # The RaceComp source made LR images with torchvision's Resize (antialiased bilinear) on uint8 images.
    import torchvision.transforms.v2.functional as TF
    hr = torch.from_numpy(random_image(64, scale)).permute(2, 0, 1)
    lr = downscale(hr, scale, "bilinear")
    assert torch.allclose(lr * 255, (lr * 255).round(), atol=1e-4)  # on the uint8 grid
    source = TF.resize(hr, [64 // scale] * 2, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    difference = ((lr * 255).round() - source.float()).abs()
    assert difference.max() <= 1  # torchvision's uint8 kernel rounds in its own way
    assert difference.mean() < 0.25  # measured: 0.16 (x2), 0.10 (x4) of pixels differ, by one level
    assert not torch.equal(lr, downscale(hr, scale))  # another kernel than bicubic
    with pytest.raises(ValueError, match="--lr-kernel 'nearest'"):
        downscale(hr, scale, "nearest")


def test_downscale_shapes_dtypes_and_constant_image():
    batch = torch.from_numpy(np.stack([random_image(32, s) for s in range(2)])).permute(0, 3, 1, 2)
    lr = downscale(batch, 4)
    assert lr.shape == (2, 3, 8, 8) and lr.dtype == torch.float32
    assert torch.equal(downscale(batch[1], 4), lr[1])
    assert torch.equal(downscale(batch.float() / 255, 4), lr)
    constant = torch.full((3, 16, 16), 100, dtype=torch.uint8)
    assert torch.allclose(downscale(constant, 2), torch.full((3, 8, 8), 100 / 255))


def test_downscale_rejects_non_divisible_size_and_bad_shape():
    with pytest.raises(ValueError, match="30x32 is not divisible by scale 4"):
        downscale(torch.zeros(3, 30, 32), 4)
    with pytest.raises(ValueError, match="must be"):
        downscale(torch.zeros(1, 32, 32), 2)


# ---------------------------------------------------------------------------------------------- alignment

def known_similarity(angle_degrees=12.0, scale=1.7, shift=(5.0, -3.0)):
    angle = math.radians(angle_degrees)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return np.hstack([scale * rotation, np.array(shift)[:, None]])


def apply(matrix, points):
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_similarity_transform_recovers_known_transform():
    matrix = known_similarity()
    destination = apply(matrix, ARCFACE_TEMPLATE_112)
    assert np.allclose(similarity_transform(ARCFACE_TEMPLATE_112, destination), matrix, atol=1e-10)
    mirrored = ARCFACE_TEMPLATE_112 * np.array([-1.0, 1.0])  # a reflection is not a similarity
    fitted = similarity_transform(ARCFACE_TEMPLATE_112, mirrored)
    assert np.linalg.det(fitted[:, :2]) > 0
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), ARCFACE_TEMPLATE_112)


def blob_image(points, size=(140, 120), sigma=1.5):
    """Grey image, Gaussian dots centred at `points` (pixel-index coordinates)."""
    ys, xs = np.mgrid[0:size[1], 0:size[0]]
    field = sum(np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2)) for x, y in points)
    grey = np.clip(field * 255, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey] * 3, axis=-1))


def centroids(image, expected, radius=5):
    grey = np.asarray(image)[..., 0].astype(np.float64)
    found = []
    for x, y in expected:
        cx, cy = int(round(x)), int(round(y))
        window = grey[cy - radius:cy + radius + 1, cx - radius:cx + radius + 1]
        ys, xs = np.mgrid[cy - radius:cy + radius + 1, cx - radius:cx + radius + 1]
        found.append([(window * xs).sum() / window.sum(), (window * ys).sum() / window.sum()])
    return np.array(found)


@pytest.mark.parametrize("size", [112, 56])
def test_align_face_puts_landmarks_on_template(size):
    # Landmarks of a face 1.25x larger than the template, rotated and shifted inside a 140x120 image.
    landmarks = apply(known_similarity(angle_degrees=-15.0, scale=1.25, shift=(10.0, -15.0)), ARCFACE_TEMPLATE_112)
    aligned = align_face(blob_image(landmarks), landmarks, size=size)
    assert aligned.size == (size, size)
    template = ARCFACE_TEMPLATE_112 * size / 112
    # Within 0.25 px: a half-pixel convention error (PIL samples at pixel centres) would miss this.
    assert np.abs(centroids(aligned, template) - template).max() < 0.25


# ---------------------------------------------------------------------------------------------- FaceImages

def test_face_images_resize_align_and_flip(tmp_path):
    path = str(tmp_path / "face.jpg")
    landmarks = apply(known_similarity(angle_degrees=5.0, scale=1.1, shift=(8.0, 4.0)), ARCFACE_TEMPLATE_112)
    blob_image(landmarks).save(path, quality=95)
    plain = FaceImages([("k", path)], image_size=32)
    item = plain[0]
    assert item["image"].shape == (3, 32, 32) and item["index"] == 0 and torch.equal(plain[0]["image"], item["image"])
    aligned = FaceImages([("k", path)], image_size=56, align_landmarks={"k": landmarks})[0]["image"]
    pixels = (aligned.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    template = ARCFACE_TEMPLATE_112 / 2
    assert np.abs(centroids(Image.fromarray(pixels), template, radius=4) - template).max() < 0.5
    torch.manual_seed(0)
    flips = FaceImages([("k", path)], image_size=32, flip=True)
    results = [flips[0]["image"] for _ in range(12)]
    assert any(torch.equal(r, item["image"].flip(-1)) for r in results) and \
        any(torch.equal(r, item["image"]) for r in results)
    with pytest.raises(ValueError, match="no landmarks for 1 image"):
        FaceImages([("other", path)], align_landmarks={"k": landmarks})


# ---------------------------------------------------------------------------------------------- decoding


def test_a_16_bit_grey_png_is_read_by_its_range_not_as_white(tmp_path):
    levels = np.random.default_rng(0).integers(0, 65536, (16, 16)).astype(np.uint16)
    path = tmp_path / "1.jpg"  # as in the issue: a 16-bit PNG under a .jpg name
    Image.fromarray(levels).save(path, format="PNG")
    with Image.open(path) as image:
        assert image.mode.startswith("I")
    pixels = load_rgb(str(path), "val/1.jpg")
    expected = np.rint(levels.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 16, 16)
    assert all(np.array_equal(pixels[c].numpy(), expected) for c in range(3))


@pytest.mark.parametrize("mode", ["P", "L", "1", "CMYK", "RGBA", "LA"])
def test_palette_grey_cmyk_and_opaque_alpha_read_as_pil_converts_them(tmp_path, mode):
    rgb = Image.fromarray(random_image(16))
    image = rgb.convert(mode)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    image.save(path)
    with Image.open(path) as saved:
        expected = np.asarray(saved.convert("RGB"))
    assert np.array_equal(load_rgb(str(path), "x").permute(1, 2, 0).numpy(), expected)


def test_transparent_and_float_images_are_refused_naming_the_file(tmp_path):
    rgba = np.concatenate([random_image(8), np.full((8, 8, 1), 255, np.uint8)], axis=2)
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"val/a\.png: image .*a\.png has transparent pixels"):
        load_rgb(str(tmp_path / "a.png"), "val/a.png")
    Image.fromarray(np.zeros((8, 8), np.float32), "F").save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match=r"f\.tif holds floating-point pixels"):
        load_rgb(str(tmp_path / "f.tif"), "f")


def test_one_size_limit_for_the_loader_and_the_check(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    Image.fromarray(random_image(11)).save(tmp_path / "big.png")
    message = r"big\.png is 11x11 \(0\.0 megapixels\), over the limit of 0\.0 megapixels"
    with pytest.raises(ValueError, match=message):
        load_rgb(str(tmp_path / "big.png"), "big")
    size, error, _ = check._read_header(str(tmp_path / "big.png"))
    assert size is None and re.search(message, error)
