"""Synthetic demo face datasets in the exact on-disk layouts of FairFace, RFW and BUPT identity folders.

No real face data can be downloaded at run time, so a first run uses these. The faces are drawn
procedurally with numpy; the "races" are made-up groups that only name parameter distributions (skin
tone and tint, hair tint and strand pattern, skin-texture orientation). They are not models of real
people, and numbers measured on them say nothing about real populations.

Fairness by construction: every feature's luminance contrast against the skin (eyes, brows, hair, lips,
marks, background, clothes) is an offset drawn from one distribution shared by all groups (group tints
have unit luminance), nothing clips, and all texture amplitudes and frequencies are shared, so with
`hard_race=None` no group is meant to be easier to upscale or to verify on average (see the tests for the
measured check). `hard_race` plants a known difficulty in one group:
- FairFace: more fine, high-frequency skin and hair texture (lower bicubic-upscaling PSNR).
- RFW / identities: more within-identity variation (pose, lighting, expression, occlusion) and less
  between-identity spread (harder verification).
The images of the other groups are byte-identical with and without the knob, because every image and
identity draws from its own seeded random stream.

Coordinates: pixel centres are at integer (x, y), x = column; landmarks are in that convention. Faces
are designed in the ArcFace 112x112 template frame ("canonical units"), then placed by a similarity
transform.
"""
import argparse
import contextlib
import csv
import hashlib
import inspect
import json
import math
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from racecomp.alignment import ARCFACE_TEMPLATE_112
from racecomp.races import FAIRFACE_RACES, RFW_RACES, parse_race

# Bump when the drawing or the layout changes, so cached demo data is regenerated.
GENERATOR_VERSION = "1"

FAIRFACE_AGE_BINS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
FAIRFACE_GENDERS = ("Male", "Female")

RFW_FOLDS = 10
# Freebase-style ids (m.0 + characters of the Freebase id alphabet, '_' included as in real RFW ids
# such as m.0b__05j). The first character after "m.0" separates the namespaces, so demo RFW and demo
# identity-folder ids can never collide, whatever the seeds.
_ID_ALPHABET = "0123456789bcdfghjklmnpqrstvwxyz_"
_RFW_ID_LEADS = "bcdfgh"
_IDENTITY_ID_LEADS = "jklmnp"

# Distinct random-stream tags per dataset kind, so equal seeds give unrelated faces across kinds.
_STREAM_FAIRFACE, _STREAM_RFW, _STREAM_IDENTITIES = 11, 12, 13

_SUPERSAMPLE = 2  # shapes are drawn at 2x and box-averaged: antialiasing of sub-pixel features
_LUMA = np.array([0.299, 0.587, 0.114])

# Shared texture amplitudes (intensity units: 0..1 maps to 8-bit 0..255); the FairFace knob multiplies them.
_SKIN_TEXTURE_STD = 0.018
_HAIR_STRAND_AMPLITUDE = 0.05
_HAIR_NOISE_STD = 0.02
_SENSOR_NOISE_STD = 0.006
# Texture gain of the hard FairFace group: 1 + _FAIRFACE_HARD_GAIN * hard_strength.
_FAIRFACE_HARD_GAIN = 2.0
# Verification knob: within-identity variation x (1 + gain * strength), between-identity spread / (1 + gain * strength).
_WITHIN_HARD_GAIN = 2.0
_BETWEEN_HARD_GAIN = 1.0


# ----------------------------------------------------------------------------------------------------
# Group styles: abstract parameter distributions, one per label of a vocabulary.

def group_styles(vocabulary):
    """Drawing parameters of each group of `vocabulary`: dict label -> dict.

    Values are assigned procedurally from the label's index (spread evenly, then permuted), so they are
    arbitrary abstract palettes, not descriptions of any real population. Only colour tints, the mean
    skin luminance and pattern orientations differ by group; contrasts and texture strengths do not.
    """
    n = len(vocabulary)
    styles = {}
    for k, label in enumerate(vocabulary):
        rank = (3 * k) % n  # permuted so the order of the vocabulary says nothing about tone
        hue = 2 * math.pi * (2 * k + 1) / (2 * n)
        skin_tint = np.array([1.10 + 0.05 * math.cos(hue), 0.98 + 0.03 * math.sin(hue),
                              0.84 + 0.06 * math.cos(hue + 1.0)])
        hair_hue, iris_hue = hue + 2.0, hue + 4.0
        hair_tint = np.array([1.0 + 0.12 * math.cos(hair_hue), 1.0 + 0.05 * math.sin(hair_hue),
                              1.0 - 0.10 * math.cos(hair_hue)])
        iris_tint = np.array([1.0 + 0.15 * math.cos(iris_hue), 1.0 + 0.15 * math.sin(iris_hue),
                              1.0 + 0.15 * math.cos(iris_hue + 2.0)])
        styles[label] = {
            "skin_luma_mean": 0.40 + 0.14 * rank / max(n - 1, 1),
            "skin_tint": skin_tint / (_LUMA @ skin_tint),  # unit luminance: tint changes hue, not contrast
            "hair_tint": hair_tint / (_LUMA @ hair_tint),
            "iris_tint": iris_tint / (_LUMA @ iris_tint),
            "skin_texture_axis": k % 2,  # 0: pores elongated along x, 1: along y (same spectrum up to a swap)
            "hair_wave_length": 14.0 + 4.0 * (k % 3),  # canonical units along the strand
        }
    return styles


# ----------------------------------------------------------------------------------------------------
# Identity and per-image parameters.

def sample_identity(rng, style, spread=1.0):
    """Per-identity face parameters in canonical units (ArcFace 112 frame) for group `style`.

    `spread` scales every continuous deviation from the shared mean face: < 1 makes identities of the
    group look more alike.
    """
    def around(mean, std):
        return mean + spread * std * rng.standard_normal()

    def within(low, high):  # uniform on [low, high], shrunk toward the middle by `spread`
        return (low + high) / 2 + spread * (float(rng.uniform(low, high)) - (low + high) / 2)

    fa = around(36.0, 2.5)
    # Offsets from the skin span -0.26 .. +0.22 and lighting is at most x1.29: with skin luminance in
    # 0.34 .. 0.56 nothing clips, since clipping would lower the contrast of the lightest or darkest tones.
    skin_luma = float(np.clip(around(style["skin_luma_mean"], 0.03), 0.34, 0.56))
    identity = {
        "face_cx": around(56.0, 0.8), "face_cy": around(60.0, 1.5),
        "face_half_width": fa, "face_top": around(50.0, 3.0), "face_bottom": around(46.0, 3.0),
        "jaw": float(np.clip(around(0.3, 0.1), 0.05, 0.6)),
        "eye_half_spacing": around(17.6, 1.8), "eye_y": around(51.6, 1.8), "eye_tilt": around(0.0, 0.08),
        "eye_a": around(6.5, 0.8), "eye_b": around(3.2, 0.5), "iris_ratio": float(np.clip(around(0.95, 0.1), 0.7, 1.1)),
        "brow_gap": around(9.0, 1.5), "brow_thickness": float(np.clip(around(1.9, 0.5), 0.9, 3.2)),
        "brow_length": around(8.5, 1.2), "brow_angle": around(0.0, 0.12), "brow_arch": around(1.5, 0.8),
        "nose_y": around(71.7, 2.2), "nose_width": float(np.clip(around(5.2, 1.0), 3.0, 8.0)),
        "mouth_y": around(92.3, 2.2), "mouth_half_width": around(14.6, 1.8),
        "lip_thickness": float(np.clip(around(2.6, 0.7), 1.2, 4.5)),
        "skin_luma": skin_luma,
        "hair_offset": float(np.clip(around(0.2, 0.03), 0.14, 0.26)),
        "iris_offset_luma": float(np.clip(around(0.2, 0.03), 0.14, 0.26)),
        "hair_top": within(2.0, 16.0), "hair_side": within(1.0, 8.0),
        "hairline": within(12.0, 34.0), "hairline_curve": within(-6.0, 12.0), "hair_part": within(-6.0, 6.0),
        "hair_bottom": within(45.0, 140.0) if rng.random() < 0.5 else None,  # None: short hair
        "strand_angle": around(0.0, 0.35), "strand_period_px": float(rng.uniform(2.4, 3.4)),
        "skin_texture_axis": style["skin_texture_axis"], "hair_wave_length": style["hair_wave_length"],
        "skin_tint": style["skin_tint"], "hair_tint": style["hair_tint"], "iris_tint": style["iris_tint"],
        "clothes_offset": _signed_offset(rng, 0.1, 0.22),
        "glasses": bool(rng.random() < 0.15),
        "marks": [_sample_mark(rng, fa, spread) for _ in range(int(rng.integers(2, 5)))],
    }
    return identity


def _sample_mark(rng, face_half_width, spread):
    """One identity-specific skin mark (mole, patch, scar line or freckle cluster) in canonical units."""
    kind = ("dot", "patch", "line", "freckles")[int(rng.integers(4))]
    sign = 1 if rng.random() < 0.3 else -1
    mark = {
        "kind": kind,
        "u": 56.0 + rng.uniform(-0.75, 0.75) * face_half_width,
        "v": float(rng.choice([rng.uniform(36.0, 44.0), rng.uniform(58.0, 100.0)])),  # above brows or below eyes
        "angle": float(rng.uniform(0, math.pi)),
    }
    if kind == "dot":
        mark.update(radius=float(rng.uniform(0.9, 2.2)), contrast=sign * float(rng.uniform(0.12, 0.2)) * spread)
    elif kind == "patch":
        mark.update(radius=float(rng.uniform(3.0, 7.0)), contrast=sign * float(rng.uniform(0.05, 0.10)) * spread)
    elif kind == "line":
        mark.update(radius=float(rng.uniform(4.0, 9.0)), contrast=sign * float(rng.uniform(0.10, 0.18)) * spread)
    else:
        mark.update(radius=float(rng.uniform(0.6, 0.9)), contrast=-float(rng.uniform(0.08, 0.15)) * spread,
                    offsets=rng.uniform(-7.0, 7.0, size=(int(rng.integers(5, 11)), 2)))
    return mark


def sample_view(rng, variation=1.0, occlusion_probability=0.1):
    """Per-image parameters: expression, small yaw, lighting, occlusion and background, scaled by `variation`."""
    background_offset = _signed_offset(rng, 0.12, 0.22)
    view = {
        "yaw": float(np.clip(rng.normal(0.0, 0.04 * variation), -0.25, 0.25)),
        "eye_open": float(np.clip(1.0 - abs(rng.normal(0.0, 0.15 * variation)), 0.15, 1.1)),
        "mouth_open": float(np.clip(abs(rng.normal(0.0, 1.2 * variation)), 0.0, 6.0)),
        "smile": float(np.clip(rng.normal(0.0, 1.2 * variation), -3.0, 4.0)),
        "brow_raise": float(rng.normal(0.0, 0.8 * variation)),
        "gaze": rng.normal(0.0, 0.8 * variation, size=2),
        "brightness": float(np.clip(rng.normal(1.0, 0.05 * variation), 0.8, 1.12)),
        "light_gradient": float(min(abs(rng.normal(0.0, 0.12 * variation)), 0.3)),
        "light_angle": float(rng.uniform(0, 2 * math.pi)),
        "background_offset": background_offset,
        "background_gradient": float(rng.uniform(-0.05, 0.05)),
        "occlusion": None,
    }
    if rng.random() < min(occlusion_probability, 0.95):
        offset = _signed_offset(rng, 0.1, 0.22)
        view["occlusion"] = {"u": float(rng.uniform(25.0, 87.0)), "v": float(rng.uniform(45.0, 110.0)),
                             "a": float(rng.uniform(8.0, 18.0) * min(variation, 2.0)),
                             "b": float(rng.uniform(6.0, 14.0) * min(variation, 2.0)),
                             "angle": float(rng.uniform(0, math.pi)), "offset": offset}
    return view


def _signed_offset(rng, low, high):
    """Grey offset of magnitude U(low, high) and a fair random sign.

    The sign must not depend on the skin tone: hair is always darker than the skin, so a tone-dependent
    sign would change the hair-background contrast, hence the difficulty, by group.
    """
    return float(rng.uniform(low, high)) * (1 if rng.random() < 0.5 else -1)


def canonical_landmarks(identity, view):
    """The 5 landmarks (5, 2) in canonical units: left eye, right eye, nose tip, left/right mouth corner."""
    geometry = _feature_geometry(identity, view)
    (lx, ly), (rx, ry) = geometry["eyes"]
    mx, my, mw, curve = geometry["mouth"]
    return np.array([[lx, ly], [rx, ry], list(geometry["nose_tip"]), [mx - mw, my - curve], [mx + mw, my - curve]])


def _feature_geometry(identity, view):
    """Feature positions after yaw and expression (canonical units); shared by drawing and landmarks."""
    # Yaw shifts inner features sideways in proportion to their depth in front of the face outline.
    shift = view["yaw"] * identity["face_half_width"]
    cx = identity["face_cx"]
    eyes = []
    for side in (-1, 1):
        ex = cx + side * identity["eye_half_spacing"] * (1 - side * view["yaw"] * 0.5) + 0.6 * shift
        ey = identity["eye_y"] + side * identity["eye_tilt"] * identity["eye_half_spacing"]
        eyes.append((ex, ey))
    nose_tip = (cx + 1.2 * shift, identity["nose_y"])
    mouth_half_width = identity["mouth_half_width"] * (1 + 0.04 * max(view["smile"], 0.0))
    return {"eyes": eyes, "nose_tip": nose_tip,
            "mouth": (cx + 0.8 * shift, identity["mouth_y"], mouth_half_width, view["smile"])}


# ----------------------------------------------------------------------------------------------------
# Drawing.

def similarity_matrix(scale, angle, canonical_centre, pixel_centre):
    """2x3 matrix mapping canonical (u, v) to pixel (x, y): rotate by `angle` (radians), scale, translate."""
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    u0, v0 = canonical_centre
    x0, y0 = pixel_centre
    return np.array([[c, -s, x0 - c * u0 + s * v0], [s, c, y0 - s * u0 - c * v0]])


def _coverage(f):
    """Antialiased coverage in [0, 1] of the region f < 0, f sampled on the (supersampled) pixel grid."""
    # Central differences inside, one-sided at the border (what np.gradient does, without its overhead).
    gx, gy = np.empty_like(f), np.empty_like(f)
    gx[:, 1:-1] = 0.5 * (f[:, 2:] - f[:, :-2])
    gx[:, 0], gx[:, -1] = f[:, 1] - f[:, 0], f[:, -1] - f[:, -2]
    gy[1:-1] = 0.5 * (f[2:] - f[:-2])
    gy[0], gy[-1] = f[1] - f[0], f[-1] - f[-2]
    distance = f / np.maximum(np.hypot(gx, gy), 1e-9)  # signed distance in grid pixels, to first order
    return np.clip(0.5 - distance, 0.0, 1.0)


def _ellipse(u, v, cu, cv, a, b, angle=0.0):
    """Implicit function of an ellipse (negative inside) centred (cu, cv), half axes a, b, rotated by angle."""
    c, s = math.cos(angle), math.sin(angle)
    du, dv = u - cu, v - cv
    return ((c * du + s * dv) / a) ** 2 + ((-s * du + c * dv) / b) ** 2 - 1.0


class _Canvas:
    """Supersampled drawing grid: canonical coordinates (u, v) of every sample and the RGB image.

    Small shapes are evaluated only in a window around them (most of the drawing time otherwise).
    """

    def __init__(self, matrix, height, width, background):
        k = _SUPERSAMPLE
        self.matrix = matrix
        self.pixels_per_unit = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
        inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
        # Sample j of output pixel i sits at i + (j + 0.5) / k - 0.5, so a k x k mean is centred on i.
        x, y = np.meshgrid((np.arange(width * k) + 0.5) / k - 0.5, (np.arange(height * k) + 0.5) / k - 0.5)
        # float32 halves the memory traffic of the full-size layers; 1e-7 relative is far below a pixel.
        self.u = (inverse[0, 0] * x + inverse[0, 1] * y + inverse[0, 2]).astype(np.float32)
        self.v = (inverse[1, 0] * x + inverse[1, 1] * y + inverse[1, 2]).astype(np.float32)
        self.image = np.empty((height * k, width * k, 3), dtype=np.float32)
        self.image[:] = background

    def window(self, cu, cv, radius):
        """Slices of the grid covering the canonical disc (cu, cv, radius) plus a margin; None if off-grid."""
        x, y = self.matrix @ np.array([cu, cv, 1.0])
        k = _SUPERSAMPLE
        reach = radius * self.pixels_per_unit + 1.0
        rows, cols = self.u.shape
        y0, y1 = max(int((y - reach + 0.5) * k) - 2, 0), min(int((y + reach + 0.5) * k) + 3, rows)
        x0, x1 = max(int((x - reach + 0.5) * k) - 2, 0), min(int((x + reach + 0.5) * k) + 3, cols)
        if y1 - y0 < 2 or x1 - x0 < 2:  # np.gradient needs 2 samples per axis
            return None
        return slice(y0, y1), slice(x0, x1)

    def ellipse(self, cu, cv, a, b, angle=0.0):
        """(window, coverage) of an ellipse, or (None, None) when it is off the grid."""
        window = self.window(cu, cv, max(a, b))
        if window is None:
            return None, None
        return window, _coverage(_ellipse(self.u[window], self.v[window], cu, cv, a, b, angle))

    def paint(self, window, coverage, colour):
        """Alpha-blend `colour` (3,) into the image with `coverage` over `window` (None: whole grid)."""
        if coverage is None:
            return
        target = self.image if window is None else self.image[window]
        target += coverage[..., None] * (np.asarray(colour, dtype=np.float32) - target)


def render_face(identity, view, matrix, height, width, texture_gain=1.0, rng=None):
    """Draw one face: uint8 RGB array (height, width, 3) and its 5 landmarks (5, 2) in pixel coordinates.

    `matrix` (2x3) maps canonical units to output pixels (pixel centres at integers). `texture_gain`
    multiplies the fine skin and hair texture amplitudes. `rng` draws the per-image texture noise.
    """
    skin_luma = identity["skin_luma"]
    skin = skin_luma * identity["skin_tint"]

    def grey(offset):  # skin plus a grey offset: contrast against the skin is the same for every tone
        return skin + offset

    hair = (skin_luma - identity["hair_offset"]) * identity["hair_tint"]
    fx, fy = identity["face_cx"], identity["face_cy"]
    fa, ft, fb = identity["face_half_width"], identity["face_top"], identity["face_bottom"]
    geometry = _feature_geometry(identity, view)

    canvas = _Canvas(matrix, height, width, grey(view["background_offset"]))
    u, v = canvas.u, canvas.v
    canvas.image += (view["background_gradient"] * (v - 56.0) / 56.0)[..., None]

    # Neck, then clothes over its lower end.
    skin_region = _coverage(np.maximum(np.abs(u - fx) - 0.5 * fa, np.maximum(fy + 0.5 * fb - v, v - fy - fb - 40.0)))
    canvas.paint(None, skin_region, grey(-0.06))
    clothes = _coverage(_ellipse(u, v, fx, fy + fb + 52.0, fa * 2.4, 44.0))
    canvas.paint(None, clothes, grey(identity["clothes_offset"]))
    skin_region *= 1.0 - clothes

    # Ears, then hair behind the head: a cap around the face; long hair continues down to hair_bottom.
    for side in (-1, 1):
        window, ear = canvas.ellipse(fx + side * fa * 0.97, identity["eye_y"] + 9.0, 5.0, 10.0)
        canvas.paint(window, ear, grey(-0.03))
        if window is not None:
            skin_region[window] = np.maximum(skin_region[window], ear)
    cap = _ellipse(u, v, fx, fy, fa + identity["hair_side"], ft + identity["hair_top"])
    if identity["hair_bottom"] is not None:
        cap = np.minimum(cap, np.maximum(np.abs(u - fx) - fa - identity["hair_side"], fy - v))
        bottom = fy + identity["hair_bottom"] - 60.0
    else:
        bottom = identity["eye_y"] - 4.0
    hair_back = _coverage(np.maximum(cap, v - bottom))
    canvas.paint(None, hair_back, hair)

    # Face outline: ellipse whose lower half narrows toward the chin by `jaw`.
    dv = v - fy
    half_width = fa * (1.0 - identity["jaw"] * np.clip(dv / fb, 0.0, 1.0) ** 2)
    face = _coverage(((u - fx) / half_width) ** 2 + np.where(dv < 0, dv / ft, dv / fb) ** 2 - 1.0)
    canvas.paint(None, face, skin)
    skin_region = np.maximum(skin_region, face)

    # Marks (identity-specific): moles, patches, scar lines, freckle clusters; only on the face.
    for mark in identity["marks"]:
        mu, mv = mark["u"] + (fx - 56.0), mark["v"]
        if mark["kind"] == "freckles":
            spots = [(mu + du, mv + dv_, mark["radius"], mark["radius"], 0.0) for du, dv_ in mark["offsets"]]
        elif mark["kind"] == "line":
            spots = [(mu, mv, mark["radius"], 0.55, mark["angle"])]
        else:
            spots = [(mu, mv, mark["radius"], mark["radius"] * 0.85, mark["angle"])]
        for spot in spots:
            window, coverage = canvas.ellipse(*spot)
            if window is not None:
                canvas.paint(window, coverage * face[window], grey(mark["contrast"]))

    # Eyes: upper lid line, sclera (opening scaled by eye_open), iris and pupil clipped by the lids.
    gaze_u, gaze_v = 0.6 * view["gaze"][0], 0.4 * view["gaze"][1]
    for side, (ex, ey) in zip((-1, 1), geometry["eyes"]):
        tilt = side * identity["eye_tilt"]
        a, b = identity["eye_a"], identity["eye_b"] * view["eye_open"]
        window, lid = canvas.ellipse(ex, ey - 0.6, a * 1.08, b + 1.0, tilt)
        if window is not None:
            canvas.paint(window, lid * (v[window] < ey), grey(-0.2))
        window, sclera = canvas.ellipse(ex, ey, a, b, tilt)
        if window is not None:
            canvas.paint(window, sclera, grey(0.2))
            radius = identity["eye_b"] * identity["iris_ratio"]
            iris = _coverage(_ellipse(u[window], v[window], ex + gaze_u, ey + gaze_v, radius, radius))
            canvas.paint(window, iris * sclera, (skin_luma - identity["iris_offset_luma"]) * identity["iris_tint"])
            pupil = _coverage(_ellipse(u[window], v[window], ex + gaze_u, ey + gaze_v, 0.45 * radius, 0.45 * radius))
            canvas.paint(window, pupil * sclera, grey(-0.24))
        # Brow: a thin ellipse bent into an arch above the eye.
        bx, by = ex + side * 1.5, ey - identity["brow_gap"] - view["brow_raise"]
        length = identity["brow_length"]
        window = canvas.window(bx, by, length + identity["brow_arch"] + identity["brow_thickness"])
        if window is not None:
            angle = side * identity["brow_angle"]
            c, s = math.cos(angle), math.sin(angle)
            du, dv_ = u[window] - bx, v[window] - by
            along = c * du + s * dv_
            across = -s * du + c * dv_ + identity["brow_arch"] * (1.0 - (along / length) ** 2)
            brow = (along / length) ** 2 + (across / (identity["brow_thickness"] / 2 + 0.3)) ** 2 - 1.0
            canvas.paint(window, _coverage(brow), 0.5 * hair + 0.5 * grey(-0.2))
        if identity["glasses"]:
            window = canvas.window(ex, ey, a * 1.5)
            if window is not None:
                uw, vw = u[window], v[window]
                ring = np.maximum(_ellipse(uw, vw, ex, ey, a * 1.45, a * 1.2),
                                  -_ellipse(uw, vw, ex, ey, a * 1.45 - 0.9, a * 1.2 - 0.9))
                canvas.paint(window, _coverage(ring), grey(-0.25))
    if identity["glasses"]:
        (lx, ly), (rx, ry) = geometry["eyes"]
        canvas.paint(*canvas.ellipse((lx + rx) / 2, (ly + ry) / 2 - 2.0, (rx - lx) / 2 - identity["eye_a"] * 1.35, 0.5),
                     grey(-0.25))

    # Nose: bridge shadow on the side away from the yaw, tip highlight, nostrils. Landmark = tip.
    nx, ny = geometry["nose_tip"]
    nw, eye_y = identity["nose_width"], identity["eye_y"]
    bridge_side = 1 if view["yaw"] >= 0 else -1
    bridge = canvas.ellipse(nx - bridge_side * nw * 0.5, (eye_y + ny) / 2 + 2.0, 0.9, (ny - eye_y) / 2)
    canvas.paint(*bridge, grey(-0.07))
    canvas.paint(*canvas.ellipse(nx, ny - 0.8, nw * 0.45, nw * 0.35), grey(0.05))
    for side in (-1, 1):
        canvas.paint(*canvas.ellipse(nx + side * nw * 0.55, ny + 1.6, nw * 0.28, nw * 0.17, side * 0.3), grey(-0.2))

    # Mouth: lips in a frame bent by the smile (corners rise by `smile`), dark opening when open.
    mx, my, mw, curve = geometry["mouth"]
    open_half = view["mouth_open"] / 2
    window = canvas.window(mx, my, mw + abs(curve) + identity["lip_thickness"] + open_half)
    if window is not None:
        du = (u[window] - mx) / mw
        bent = v[window] - my + curve * np.clip(du, -1.5, 1.5) ** 2  # 0 on the mouth's centre line
        lips = du ** 2 + (bent / (identity["lip_thickness"] + open_half)) ** 2 - 1.0
        canvas.paint(window, _coverage(lips), skin + np.array([0.05, -0.06, -0.05]) - 0.09)
        gap = du ** 2 / 0.9 + (bent / (open_half + 0.35)) ** 2 - 1.0
        canvas.paint(window, _coverage(gap), grey(-0.26))

    # Hair in front: the cap above the hairline (fringe depth, side part).
    hairline = (fy - ft + identity["hairline"] + identity["hairline_curve"] * ((u - fx) / fa) ** 2
                + identity["hair_part"] * (u - fx) / fa)
    hair_front = _coverage(np.maximum(cap, v - hairline)) * np.maximum(face, hair_back)
    canvas.paint(None, hair_front, hair)
    hair_region = np.maximum(hair_front, hair_back * (1.0 - face))
    skin_region *= 1.0 - hair_front

    # Occluder (per image): an object in front of the face.
    occlusion = view["occlusion"]
    if occlusion is not None:
        window, occluder = canvas.ellipse(occlusion["u"] + fx - 56.0, occlusion["v"], occlusion["a"], occlusion["b"],
                                          occlusion["angle"])
        if window is not None:
            canvas.paint(window, occluder, grey(occlusion["offset"]))
            hair_region[window] *= 1.0 - occluder
            skin_region[window] *= 1.0 - occluder

    # Hair strands: a wavy grating across the strand direction, period in output pixels (fine texture).
    period = identity["strand_period_px"] / canvas.pixels_per_unit
    angle = identity["strand_angle"] + math.pi / 2
    along = math.cos(angle) * (u - fx) + math.sin(angle) * v
    across = -math.sin(angle) * (u - fx) + math.cos(angle) * v
    strands = np.sin(2 * math.pi * across / period + 2.0 * np.sin(2 * math.pi * along / identity["hair_wave_length"]))
    canvas.image += (texture_gain * _HAIR_STRAND_AMPLITUDE * strands * hair_region)[..., None]

    k = _SUPERSAMPLE
    image = canvas.image.reshape(height, k, width, k, 3).mean(axis=(1, 3))
    skin_region = skin_region.reshape(height, k, width, k).mean(axis=(1, 3))
    hair_region = hair_region.reshape(height, k, width, k).mean(axis=(1, 3))

    # Pixel-scale textures at output resolution: pores (elongated along one axis) and hair noise.
    rng = rng if rng is not None else np.random.default_rng(0)
    pores = rng.standard_normal((height, width))
    axis = 1 - identity["skin_texture_axis"]  # numpy axis 1 is x
    pores = (np.roll(pores, 1, axis) + 2 * pores + np.roll(pores, -1, axis)) / math.sqrt(6.0)  # unit variance
    image += (texture_gain * _SKIN_TEXTURE_STD * pores * skin_region)[..., None]
    image += (texture_gain * _HAIR_NOISE_STD * rng.standard_normal((height, width)) * hair_region)[..., None]

    # Lighting: overall brightness times a linear gradient; then sensor noise.
    gx, gy = np.meshgrid(np.arange(width) - (width - 1) / 2, np.arange(height) - (height - 1) / 2)
    direction = math.cos(view["light_angle"]) * gx + math.sin(view["light_angle"]) * gy
    light = view["brightness"] * (1.0 + view["light_gradient"] * direction / math.hypot(width, height))
    image = image * light[..., None] + _SENSOR_NOISE_STD * rng.standard_normal(image.shape)
    pixels = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)

    landmarks = canonical_landmarks(identity, view) @ matrix[:, :2].T + matrix[:, 2]
    return pixels, landmarks


def _save_jpeg(pixels, path):
    Image.fromarray(pixels).save(path, quality=95)


# ----------------------------------------------------------------------------------------------------
# Dataset writers.

def _prepare_output(out_dir):
    """Create `out_dir`; refuse a non-empty one, so leftovers of another run never mix into a dataset."""
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise ValueError(f"{out_dir}: folder is not empty; demo data is written only into a new or empty folder")
    os.makedirs(out_dir, exist_ok=True)
    return os.path.abspath(out_dir)


def _check_common(size, seed, hard_race, hard_strength, vocabulary):
    if size < 16:
        raise ValueError(f"size must be at least 16 px, got {size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if hard_strength < 0:
        raise ValueError(f"hard_strength must be >= 0, got {hard_strength}")
    if hard_race is not None and hard_race not in vocabulary:
        raise ValueError(f"hard_race {hard_race!r} is not one of {list(vocabulary)}")


def _balanced_labels(rng, count, vocabulary):
    """`count` labels, each label of `vocabulary` used count // len or +1 times, in seeded random order."""
    labels = [vocabulary[i % len(vocabulary)] for i in range(count)]
    rng.shuffle(labels)
    return labels


def make_fairface(out_dir, n_train=350, n_val=140, size=64, seed=0, hard_race=None, hard_strength=1.0):
    """Write a FairFace-layout demo set: fairface_label_{train,val}.csv and train/, val/ JPEGs (quality 95).

    Each image is a new identity; races are balanced to within one image over FAIRFACE_RACES in both
    splits (so each split needs at least 7 images). age, gender and service_test are random labels,
    independent of the image. `hard_race` gets `1 + 2 * hard_strength` times the fine skin/hair texture.
    Returns the absolute root path.
    """
    _check_common(size, seed, hard_race, hard_strength, FAIRFACE_RACES)
    for split, count in (("train", n_train), ("val", n_val)):
        if count < len(FAIRFACE_RACES):
            raise ValueError(f"n_{split}={count}: need at least {len(FAIRFACE_RACES)} images so every race is present")
    root = _prepare_output(out_dir)
    styles = group_styles(FAIRFACE_RACES)
    for split_index, (split, count) in enumerate((("train", n_train), ("val", n_val))):
        os.makedirs(os.path.join(root, split))
        label_rng = np.random.default_rng([seed, _STREAM_FAIRFACE, split_index])
        races = _balanced_labels(label_rng, count, FAIRFACE_RACES)
        rows = []
        for index, race in enumerate(races, start=1):
            rng = np.random.default_rng([seed, _STREAM_FAIRFACE, split_index, index])
            identity = sample_identity(rng, styles[race])
            view = sample_view(rng)
            # Loose crop with margin: the face spans about 60% of the image, small pose jitter.
            scale = size / 112.0 * 0.62 * float(np.exp(rng.normal(0.0, 0.05)))
            angle = math.radians(float(rng.normal(0.0, 5.0)))
            centre = ((size - 1) / 2 + rng.normal(0.0, 0.03 * size), (size - 1) / 2 + rng.normal(0.0, 0.03 * size))
            matrix = similarity_matrix(scale, angle, (56.0, 64.0), centre)
            gain = 1.0 + _FAIRFACE_HARD_GAIN * hard_strength if race == hard_race else 1.0
            pixels, _ = render_face(identity, view, matrix, size, size, texture_gain=gain, rng=rng)
            name = f"{split}/{index}.jpg"
            _save_jpeg(pixels, os.path.join(root, name))
            rows.append((name, FAIRFACE_AGE_BINS[int(label_rng.integers(len(FAIRFACE_AGE_BINS)))],
                         FAIRFACE_GENDERS[int(label_rng.integers(2))], race, str(bool(label_rng.random() < 0.5))))
        with open(os.path.join(root, f"fairface_label_{split}.csv"), "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["file", "age", "gender", "race", "service_test"])
            writer.writerows(rows)
    return root


def _make_ids(rng, count, leads, taken):
    """`count` new Freebase-style ids (m.0 + lead + 5 characters) not in `taken`; adds them to `taken`."""
    ids = []
    while len(ids) < count:
        middle = "".join(rng.choice(list(_ID_ALPHABET), size=4))
        tail = rng.choice(list(_ID_ALPHABET[:-1]))  # no trailing '_'
        identity_id = "m.0" + leads[int(rng.integers(len(leads)))] + middle + tail
        if identity_id not in taken:
            taken.add(identity_id)
            ids.append(identity_id)
    return ids


def _verification_knobs(race, hard_race, hard_strength):
    """(within-identity variation, between-identity spread, occlusion probability) of `race`."""
    if race != hard_race:
        return 1.0, 1.0, 0.1
    return (1.0 + _WITHIN_HARD_GAIN * hard_strength, 1.0 / (1.0 + _BETWEEN_HARD_GAIN * hard_strength),
            0.1 * (1.0 + 3.0 * hard_strength))


def _render_identity_images(identity, rng, count, size, variation, occlusion_probability, aligned):
    """`count` (pixels, landmarks) views of one identity: aligned crops at `size` or unaligned 2x canvases."""
    images = []
    for _ in range(count):
        view = sample_view(rng, variation, occlusion_probability)
        if aligned:
            # Template frame scaled to `size`, with small pose jitter (within-identity variation).
            scale = size / 112.0 * float(np.exp(rng.normal(0.0, 0.04 * variation)))
            angle = math.radians(float(rng.normal(0.0, 4.0 * variation)))
            shift = rng.normal(0.0, 0.025 * size * variation, size=2)
            centre = (56.0 * size / 112.0 + shift[0], 56.0 * size / 112.0 + shift[1])
            height = width = size
        else:
            # Bigger canvas, face off-centre and rotated, so alignment has real work to do.
            height = width = 2 * size
            scale = size / 112.0 * float(rng.uniform(0.8, 1.2))
            angle = math.radians(float(rng.uniform(-25.0, 25.0)))
            centre = (size + rng.uniform(-0.3, 0.3) * size, size + rng.uniform(-0.3, 0.3) * size)
        matrix = similarity_matrix(scale, angle, (56.0, 56.0), centre)
        images.append(render_face(identity, view, matrix, height, width, rng=rng))
    return images


def make_rfw(out_dir, n_ids=30, images_per_id=4, pairs_per_fold=10, size=112, seed=0, hard_race=None,
             hard_strength=1.0, aligned=True):
    """Write an RFW-layout demo test set: test/data, and per race the pairs and lmk files.

    `n_ids` identities per race, `images_per_id` images each (numbered from 1). Identities are split
    into 10 disjoint folds; each fold lists `pairs_per_fold` genuine then `pairs_per_fold` impostor
    pairs (impostors within the race and fold), without repeated pairs. The lmk file gives each image's
    true 5 landmarks; its middle field is the identity's index within the race. aligned=True: `size`
    px crops near the ArcFace template; False: 2*size px canvases with the face off-centre and rotated.
    Returns the absolute root path.
    """
    _check_common(size, seed, hard_race, hard_strength, RFW_RACES)
    if n_ids < 2 * RFW_FOLDS:
        raise ValueError(f"n_ids={n_ids}: need at least {2 * RFW_FOLDS} identities per race "
                         "(2 per fold for impostor pairs)")
    if images_per_id < 2:
        raise ValueError(f"images_per_id={images_per_id}: genuine pairs need at least 2 images per identity")
    if pairs_per_fold < 1:
        raise ValueError(f"pairs_per_fold must be >= 1, got {pairs_per_fold}")
    ids_per_fold = n_ids // RFW_FOLDS  # the smallest fold decides how many distinct pairs exist
    genuine_available = ids_per_fold * images_per_id * (images_per_id - 1) // 2
    impostor_available = ids_per_fold * (ids_per_fold - 1) // 2 * images_per_id ** 2
    if pairs_per_fold > min(genuine_available, impostor_available):
        raise ValueError(f"pairs_per_fold={pairs_per_fold} exceeds the {min(genuine_available, impostor_available)} "
                         f"distinct pairs per fold that n_ids={n_ids}, images_per_id={images_per_id} allow")
    root = _prepare_output(out_dir)
    styles = group_styles(RFW_RACES)
    taken = set()
    for race_index, race in enumerate(RFW_RACES):
        variation, spread, occlusion_probability = _verification_knobs(race, hard_race, hard_strength)
        id_rng = np.random.default_rng([seed, _STREAM_RFW, race_index])
        ids = _make_ids(id_rng, n_ids, _RFW_ID_LEADS, taken)
        lmk_lines = []
        for label, identity_id in enumerate(ids):
            rng = np.random.default_rng([seed, _STREAM_RFW, race_index, label])
            identity = sample_identity(rng, styles[race], spread)
            folder = os.path.join(root, "test", "data", race, identity_id)
            os.makedirs(folder)
            images = _render_identity_images(identity, rng, images_per_id, size, variation, occlusion_probability,
                                             aligned)
            for n, (pixels, landmarks) in enumerate(images, start=1):
                name = f"{identity_id}_{n:04d}.jpg"
                _save_jpeg(pixels, os.path.join(folder, name))
                coordinates = "\t".join(f"{value:.2f}" for value in landmarks.reshape(-1))
                lmk_lines.append(f"test/data/{race}/{identity_id}/{name}\t{label}\t{coordinates}\n")
        pair_lines = _rfw_pairs(id_rng, ids, images_per_id, pairs_per_fold)
        txt_folder = os.path.join(root, "test", "txts", race)
        os.makedirs(txt_folder)
        with open(os.path.join(txt_folder, f"{race}_pairs.txt"), "w") as handle:
            handle.writelines(pair_lines)
        with open(os.path.join(txt_folder, f"{race}_lmk.txt"), "w") as handle:
            handle.writelines(lmk_lines)
    return root


def _rfw_pairs(rng, ids, images_per_id, pairs_per_fold):
    """Pair lines of one race: 10 folds over disjoint identities, each genuine lines then impostor lines."""
    order = rng.permutation(len(ids))
    lines = []
    for fold in range(RFW_FOLDS):
        members = [ids[i] for i in order[fold::RFW_FOLDS]]
        genuine = [(member, n1, n2) for member in members
                   for n1 in range(1, images_per_id + 1) for n2 in range(n1 + 1, images_per_id + 1)]
        impostor = [(a, n1, b, n2) for i, a in enumerate(members) for b in members[i + 1:]
                    for n1 in range(1, images_per_id + 1) for n2 in range(1, images_per_id + 1)]
        for index in rng.choice(len(genuine), size=pairs_per_fold, replace=False):
            lines.append("{}\t{}\t{}\n".format(*genuine[index]))
        for index in rng.choice(len(impostor), size=pairs_per_fold, replace=False):
            lines.append("{}\t{}\t{}\t{}\n".format(*impostor[index]))
    return lines


def make_identities(out_dir, n_ids_per_race=16, images_per_id=6, size=112, seed=0, hard_race=None,
                    hard_strength=1.0, overlap_with_rfw=None):
    """Write a BUPT-layout identity-folder demo set: <Race>/<id>/<id>_<NNNN>.jpg, aligned `size` px crops.

    Ids come from a namespace disjoint from make_rfw's, so the two never share an identity, whatever
    the seeds. overlap_with_rfw=<RFW root> deliberately copies one RFW identity that its pairs use
    (with its images) into the set, to test overlap guards. Returns the absolute root.
    """
    _check_common(size, seed, hard_race, hard_strength, RFW_RACES)
    if n_ids_per_race < 1 or images_per_id < 1:
        raise ValueError(f"need n_ids_per_race >= 1 and images_per_id >= 1, got {n_ids_per_race}, {images_per_id}")
    overlap = _first_rfw_identity(overlap_with_rfw) if overlap_with_rfw is not None else None
    root = _prepare_output(out_dir)
    styles = group_styles(RFW_RACES)
    taken = set()
    for race_index, race in enumerate(RFW_RACES):
        variation, spread, occlusion_probability = _verification_knobs(race, hard_race, hard_strength)
        ids = _make_ids(np.random.default_rng([seed, _STREAM_IDENTITIES, race_index]), n_ids_per_race,
                        _IDENTITY_ID_LEADS, taken)
        for label, identity_id in enumerate(ids):
            rng = np.random.default_rng([seed, _STREAM_IDENTITIES, race_index, label])
            identity = sample_identity(rng, styles[race], spread)
            folder = os.path.join(root, race, identity_id)
            os.makedirs(folder)
            images = _render_identity_images(identity, rng, images_per_id, size, variation, occlusion_probability, True)
            for n, (pixels, _) in enumerate(images, start=1):
                _save_jpeg(pixels, os.path.join(folder, f"{identity_id}_{n:04d}.jpg"))
    if overlap is not None:
        race, identity_id, source = overlap
        shutil.copytree(source, os.path.join(root, race, identity_id))
    return root


def _first_rfw_identity(rfw_root):
    """(race, id, folder) of the identity in the first line of the first race's pairs file of an RFW tree.

    Taken from the pairs, not the folders, so that the overlap is one that an evaluation actually uses.
    """
    for race in RFW_RACES:
        pairs_path = os.path.join(rfw_root, "test", "txts", race, f"{race}_pairs.txt")
        if os.path.isfile(pairs_path):
            with open(pairs_path) as handle:
                identity_id = handle.readline().split("\t")[0]
            folder = os.path.join(rfw_root, "test", "data", race, identity_id)
            if not os.path.isdir(folder):
                raise ValueError(f"{pairs_path}:1: identity {identity_id!r} has no folder {folder}")
            return race, identity_id, folder
    raise ValueError(f"overlap_with_rfw={rfw_root}: no test/txts/<Race>/<Race>_pairs.txt found")


# ----------------------------------------------------------------------------------------------------
# Cached demo data.

_MAKERS = {"fairface": make_fairface, "rfw": make_rfw, "identities": make_identities}


def default_cache_dir():
    """$RACECOMP_CACHE, else ~/.cache/racecomp."""
    return os.environ.get("RACECOMP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "racecomp")


def ensure_demo_data(kind, cache_dir=None, **params):
    """Path of the demo dataset `kind` ('fairface', 'rfw', 'identities'), generated on the first call.

    `params` go to make_<kind>; the folder is named from the kind and a hash of all (defaulted)
    arguments and GENERATOR_VERSION, so other parameters never reuse a stale set. Generation goes to a
    temporary folder beside it that is renamed into place only when complete.
    """
    if kind not in _MAKERS:
        raise ValueError(f"unknown demo data kind {kind!r}; valid: {', '.join(_MAKERS)}")
    maker = _MAKERS[kind]
    bound = inspect.signature(maker).bind("<out_dir>", **params)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    del arguments["out_dir"]
    key = json.dumps({"kind": kind, "version": GENERATOR_VERSION, "arguments": arguments}, sort_keys=True, default=str)
    cache_dir = cache_dir or default_cache_dir()
    path = os.path.join(cache_dir, f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:12]}")
    if not os.path.isdir(path):
        os.makedirs(cache_dir, exist_ok=True)
        temporary = tempfile.mkdtemp(dir=cache_dir, prefix=f".{os.path.basename(path)}.tmp-")
        try:
            maker(temporary, **arguments)
            with open(os.path.join(temporary, "demo_parameters.json"), "w") as handle:
                handle.write(key + "\n")
            try:
                os.rename(temporary, path)
            except OSError:
                if not os.path.isdir(path):  # not another process having finished first
                    raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(temporary)
    print(f"Using synthetic demo data (made-up groups, not real people): {kind} at {path}")
    return path


# ----------------------------------------------------------------------------------------------------
# Command line.

def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description="Write a synthetic demo face dataset (FairFace, RFW or "
                                     "BUPT identity-folder layout; made-up groups, not real people)", add_help=add_help)
    parser.add_argument("kind", choices=sorted(_MAKERS), help="dataset layout to write")
    parser.add_argument("--out", required=True, help="output folder (must be new or empty)")
    parser.add_argument("--size", type=int, default=None,
                        help="image side in pixels (default: 64 fairface, 112 rfw and identities; "
                             "unaligned rfw canvases are 2x)")
    parser.add_argument("--count", type=int, default=None,
                        help="fairface: train images (val = 40%% of it, default 350); rfw: identities per race "
                             "(default 30); identities: identities per race (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed gives byte-identical files")
    parser.add_argument("--hard-race", default="none",
                        help="group given planted difficulty (slug, e.g. east_asian or african), or none")
    parser.add_argument("--hard-strength", type=float, default=1.0, help="planted difficulty, 0 = none")
    parser.add_argument("--unaligned", action="store_true",
                        help="rfw only: write 2x larger unaligned images (face off-centre, rotated)")
    return parser


def main(args):
    vocabulary = FAIRFACE_RACES if args.kind == "fairface" else RFW_RACES
    hard_race = parse_race(args.hard_race, vocabulary, allow_none=True)
    if args.unaligned and args.kind != "rfw":
        raise ValueError("--unaligned applies to rfw only")
    common = {"seed": args.seed, "hard_race": hard_race, "hard_strength": args.hard_strength}
    if args.size is not None:
        common["size"] = args.size
    if args.kind == "fairface":
        if args.count is not None:
            common.update(n_train=args.count, n_val=max(len(FAIRFACE_RACES), round(0.4 * args.count)))
        root = make_fairface(args.out, **common)
        counts = {}
        for split in ("train", "val"):
            with open(os.path.join(root, f"fairface_label_{split}.csv")) as handle:
                counts[split] = sum(1 for _ in handle) - 1  # minus the header
        print(f"wrote FairFace layout: {counts['train']} train + {counts['val']} val images in {root}")
    elif args.kind == "rfw":
        if args.count is not None:
            common["n_ids"] = args.count
        root = make_rfw(args.out, aligned=not args.unaligned, **common)
        images = sum(len(files) for _, _, files in os.walk(os.path.join(root, "test", "data")))
        print(f"wrote RFW layout: {images} images, pairs and landmarks for {', '.join(RFW_RACES)} in {root}")
    else:
        if args.count is not None:
            common["n_ids_per_race"] = args.count
        root = make_identities(args.out, **common)
        images = sum(len(files) for _, _, files in os.walk(root))
        print(f"wrote identity-folder layout: {images} images for {', '.join(RFW_RACES)} in {root}")
    print(f"these are synthetic demo groups, not real people (hard race: {hard_race}, strength {args.hard_strength})")
    return root


if __name__ == "__main__":
    main(get_args_parser().parse_args())
