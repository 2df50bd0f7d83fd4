"""Procedural demo faces: made-up group styles, and the identity, view and landmark distributions drawn from
them; racecomp.toyrender draws a face from an identity and a view.

The "races" are made-up groups that only name parameter distributions (skin tone and tint, hair tint
and strand pattern, skin-texture orientation). They are not models of real people, and numbers
measured on faces drawn here say nothing about real populations. racecomp.toydata writes these faces
in the on-disk layouts of real datasets.

Fairness by construction: every feature's luminance contrast against the skin (eyes, brows, hair, lips,
marks, background, clothes) is an offset drawn from one distribution shared by all groups (group tints
have unit luminance), nothing clips, and all texture amplitudes and frequencies are shared, so at equal
`spread`, `variation`, `occlusion_probability` and `texture_gain` no group is meant to be easier to
upscale or to verify on average (see the tests for the measured check). Those knobs are how toydata
plants a difficulty.

Coordinates: landmarks are in canonical units, the ArcFace 112x112 template frame; racecomp.toyrender places
them in pixels by a similarity transform.
"""
import math

import numpy as np

_LUMA = np.array([0.299, 0.587, 0.114])


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
    geometry = feature_geometry(identity, view)
    (lx, ly), (rx, ry) = geometry["eyes"]
    mx, my, mw, curve = geometry["mouth"]
    return np.array([[lx, ly], [rx, ry], list(geometry["nose_tip"]), [mx - mw, my - curve], [mx + mw, my - curve]])


def feature_geometry(identity, view):
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
