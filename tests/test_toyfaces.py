"""Procedural demo faces: the template frame, landmarks under the placing transform, equal difficulty by group."""
import io
import math

import numpy as np
from PIL import Image

from racecomp import toyfaces, toyrender
from racecomp.alignment import ARCFACE_TEMPLATE_112
from racecomp.races import FAIRFACE_RACES, RFW_RACES


def bicubic_psnr(image):
    """PSNR (dB, 8-bit RGB) of a PIL image against its bicubic 4x down-then-up copy."""
    width, height = image.size
    restored = image.resize((width // 4, height // 4), Image.BICUBIC).resize((width, height), Image.BICUBIC)
    error = np.mean((np.asarray(image, np.float64) - np.asarray(restored, np.float64)) ** 2)
    return 10 * math.log10(255.0 ** 2 / error)


def test_mean_face_is_designed_in_the_arcface_template_frame():
    # spread=0 and variation=0 give the group's mean identity with a neutral, frontal view; its
    # landmarks are the design means, which round the template's coordinates.
    rng = np.random.default_rng(0)
    identity = toyfaces.sample_identity(rng, toyfaces.group_styles(RFW_RACES)["Indian"], spread=0.0)
    view = toyfaces.sample_view(rng, variation=0.0)
    assert np.abs(toyfaces.canonical_landmarks(identity, view) - ARCFACE_TEMPLATE_112).max() < 0.25


def test_render_face_landmarks_follow_the_transform():
    style = toyfaces.group_styles(RFW_RACES)["Asian"]
    rng = np.random.default_rng(0)
    identity = toyfaces.sample_identity(rng, style)
    view = toyfaces.sample_view(rng)
    # Hand-computed: scale 2, a quarter turn, canonical (56, 56) -> pixel (60, 50), so that
    # (u, v) -> (60 - 2 (v - 56), 50 + 2 (u - 56)).
    matrix = toyrender.similarity_matrix(2.0, math.pi / 2, (56.0, 56.0), (60.0, 50.0))
    np.testing.assert_allclose(matrix @ [57.0, 56.0, 1.0], [60.0, 52.0], atol=1e-12)
    np.testing.assert_allclose(matrix @ [56.0, 57.0, 1.0], [58.0, 50.0], atol=1e-12)
    pixels, landmarks = toyrender.render_face(identity, view, matrix, 120, 100, rng=rng)
    assert pixels.shape == (120, 100, 3) and pixels.dtype == np.uint8
    canonical = toyfaces.canonical_landmarks(identity, view)
    expected = np.c_[60 - 2 * (canonical[:, 1] - 56), 50 + 2 * (canonical[:, 0] - 56)]
    np.testing.assert_allclose(landmarks, expected, atol=1e-9)


def test_groups_are_equally_hard_to_upscale_when_nothing_is_planted():
    # Paired design: the same identity, view and noise drawn with each group's style, so the
    # difference isolates what the group changes (tone, tints, pattern orientation).
    styles = toyfaces.group_styles(FAIRFACE_RACES)
    size, draws = 64, 20
    scores = np.zeros((draws, len(styles)))
    for i in range(draws):
        for j, style in enumerate(styles.values()):
            rng = np.random.default_rng([123, i])
            identity = toyfaces.sample_identity(rng, style)
            view = toyfaces.sample_view(rng)
            matrix = toyrender.similarity_matrix(size / 112 * 0.62, 0.0, (56.0, 64.0), ((size - 1) / 2, (size - 1) / 2))
            pixels, _ = toyrender.render_face(identity, view, matrix, size, size, rng=rng)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
            scores[i, j] = bicubic_psnr(Image.open(buffer).convert("RGB"))
    effect = (scores - scores.mean(axis=1, keepdims=True)).mean(axis=0)  # dB per group vs the all-group mean
    assert np.abs(effect).max() < 0.15  # measured on 150 draws: within +-0.06 dB
