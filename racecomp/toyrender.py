"""A numpy renderer of the procedural demo faces (racecomp.toyfaces): one function per layer, painted back to
front on a supersampled canvas they share, with shared texture amplitudes (see toyfaces on fairness by
construction).

Coordinates: pixel centres are at integer (x, y), x = column; landmarks are in that convention. Faces
are designed in the ArcFace 112x112 template frame ("canonical units"), then placed by a similarity
transform.
"""
import math

import numpy as np

from racecomp.toyfaces import canonical_landmarks, feature_geometry

_SUPERSAMPLE = 2  # shapes are drawn at 2x and box-averaged: antialiasing of sub-pixel features

# Shared texture amplitudes (intensity units: 0..1 maps to 8-bit 0..255); `texture_gain` multiplies them.
_SKIN_TEXTURE_STD = 0.018
_HAIR_STRAND_AMPLITUDE = 0.05
_HAIR_NOISE_STD = 0.02
_SENSOR_NOISE_STD = 0.006


# ----------------------------------------------------------------------------------------------------
# Drawing primitives.

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


# ----------------------------------------------------------------------------------------------------
# The face, one function per layer, painted back to front.

class _Palette:
    """Colours (RGB, 0..1) of one identity: features are the skin plus a grey offset (`grey`), so their
    contrast against the skin is the same for every tone; hair and iris are tints at an offset from it."""

    def __init__(self, identity):
        skin_luma = identity["skin_luma"]
        self.skin = skin_luma * identity["skin_tint"]
        self.hair = (skin_luma - identity["hair_offset"]) * identity["hair_tint"]
        self.iris = (skin_luma - identity["iris_offset_luma"]) * identity["iris_tint"]

    def grey(self, offset):
        return self.skin + offset


def render_face(identity, view, matrix, height, width, texture_gain=1.0, rng=None):
    """Draw one face: uint8 RGB array (height, width, 3) and its 5 landmarks (5, 2) in pixel coordinates.

    `matrix` (2x3) maps canonical units to output pixels (pixel centres at integers). `texture_gain`
    multiplies the fine skin and hair texture amplitudes. `rng` draws the per-image texture noise.
    Layers are painted back to front; skin_region and hair_region track where the textures go.
    """
    palette = _Palette(identity)
    canvas = _Canvas(matrix, height, width, palette.grey(view["background_offset"]))
    _draw_background(canvas, view)
    skin_region = _draw_neck_and_clothes(canvas, identity, palette)  # (height * k, width * k), k = _SUPERSAMPLE
    _draw_ears(canvas, identity, palette, skin_region)
    cap, hair_back = _draw_back_hair(canvas, identity, palette)
    face = _draw_face_outline(canvas, identity, palette)
    skin_region = np.maximum(skin_region, face)
    _draw_marks(canvas, identity, palette, face)
    geometry = feature_geometry(identity, view)
    for side, eye in zip((-1, 1), geometry["eyes"]):
        _draw_eye(canvas, identity, view, palette, side, eye)
        _draw_brow(canvas, identity, view, palette, side, eye)
        if identity["glasses"]:
            _draw_lens_rim(canvas, identity, palette, eye)
    if identity["glasses"]:
        _draw_glasses_bridge(canvas, identity, palette, geometry["eyes"])
    _draw_nose(canvas, identity, view, palette, geometry["nose_tip"])
    _draw_mouth(canvas, identity, view, palette, geometry["mouth"])
    hair_front = _draw_front_hair(canvas, identity, palette, cap, np.maximum(face, hair_back))
    hair_region = np.maximum(hair_front, hair_back * (1.0 - face))
    skin_region *= 1.0 - hair_front
    _draw_occluder(canvas, identity, view, palette, skin_region, hair_region)
    _add_hair_strands(canvas, identity, hair_region, texture_gain)

    image, skin_region, hair_region = (_box_mean(layer) for layer in (canvas.image, skin_region, hair_region))
    rng = rng if rng is not None else np.random.default_rng(0)
    _add_pixel_textures(image, identity, skin_region, hair_region, texture_gain, rng)
    pixels = _light_and_quantize(image, view, rng)
    landmarks = canonical_landmarks(identity, view) @ matrix[:, :2].T + matrix[:, 2]
    return pixels, landmarks


def _draw_background(canvas, view):
    """Vertical brightness gradient over the flat background colour the canvas starts with."""
    canvas.image += (view["background_gradient"] * (canvas.v - 56.0) / 56.0)[..., None]


def _draw_neck_and_clothes(canvas, identity, palette):
    """Neck, then clothes over its lower end; returns the coverage of the neck skin left visible."""
    u, v = canvas.u, canvas.v
    fx, fy, fa, fb = identity["face_cx"], identity["face_cy"], identity["face_half_width"], identity["face_bottom"]
    skin_region = _coverage(np.maximum(np.abs(u - fx) - 0.5 * fa, np.maximum(fy + 0.5 * fb - v, v - fy - fb - 40.0)))
    canvas.paint(None, skin_region, palette.grey(-0.06))
    clothes = _coverage(_ellipse(u, v, fx, fy + fb + 52.0, fa * 2.4, 44.0))
    canvas.paint(None, clothes, palette.grey(identity["clothes_offset"]))
    skin_region *= 1.0 - clothes
    return skin_region


def _draw_ears(canvas, identity, palette, skin_region):
    """Both ears, added to `skin_region` in place."""
    for side in (-1, 1):
        window, ear = canvas.ellipse(identity["face_cx"] + side * identity["face_half_width"] * 0.97,
                                     identity["eye_y"] + 9.0, 5.0, 10.0)
        canvas.paint(window, ear, palette.grey(-0.03))
        if window is not None:
            skin_region[window] = np.maximum(skin_region[window], ear)


def _draw_back_hair(canvas, identity, palette):
    """Hair behind the head: a cap around the face; long hair continues down to hair_bottom.

    Returns the cap's implicit function (negative inside; the front hair cuts it at the hairline) and
    the coverage painted.
    """
    u, v = canvas.u, canvas.v
    fx, fy, fa = identity["face_cx"], identity["face_cy"], identity["face_half_width"]
    cap = _ellipse(u, v, fx, fy, fa + identity["hair_side"], identity["face_top"] + identity["hair_top"])
    if identity["hair_bottom"] is not None:
        cap = np.minimum(cap, np.maximum(np.abs(u - fx) - fa - identity["hair_side"], fy - v))
        bottom = fy + identity["hair_bottom"] - 60.0
    else:
        bottom = identity["eye_y"] - 4.0
    hair_back = _coverage(np.maximum(cap, v - bottom))
    canvas.paint(None, hair_back, palette.hair)
    return cap, hair_back


def _draw_face_outline(canvas, identity, palette):
    """Face: an ellipse whose lower half narrows toward the chin by `jaw`; returns its coverage."""
    fa, ft, fb = identity["face_half_width"], identity["face_top"], identity["face_bottom"]
    du, dv = canvas.u - identity["face_cx"], canvas.v - identity["face_cy"]
    half_width = fa * (1.0 - identity["jaw"] * np.clip(dv / fb, 0.0, 1.0) ** 2)
    face = _coverage((du / half_width) ** 2 + np.where(dv < 0, dv / ft, dv / fb) ** 2 - 1.0)
    canvas.paint(None, face, palette.skin)
    return face


def _draw_marks(canvas, identity, palette, face):
    """Identity-specific moles, patches, scar lines and freckle clusters, clipped to the `face` coverage."""
    for mark in identity["marks"]:
        mu, mv = mark["u"] + (identity["face_cx"] - 56.0), mark["v"]
        if mark["kind"] == "freckles":
            spots = [(mu + du, mv + dv, mark["radius"], mark["radius"], 0.0) for du, dv in mark["offsets"]]
        elif mark["kind"] == "line":
            spots = [(mu, mv, mark["radius"], 0.55, mark["angle"])]
        else:
            spots = [(mu, mv, mark["radius"], mark["radius"] * 0.85, mark["angle"])]
        for spot in spots:
            window, coverage = canvas.ellipse(*spot)
            if window is not None:
                canvas.paint(window, coverage * face[window], palette.grey(mark["contrast"]))


def _draw_eye(canvas, identity, view, palette, side, centre):
    """One eye: upper lid line, sclera (opening scaled by eye_open), iris and pupil clipped by the lids."""
    ex, ey = centre
    tilt = side * identity["eye_tilt"]
    a, b = identity["eye_a"], identity["eye_b"] * view["eye_open"]
    window, lid = canvas.ellipse(ex, ey - 0.6, a * 1.08, b + 1.0, tilt)
    if window is not None:
        canvas.paint(window, lid * (canvas.v[window] < ey), palette.grey(-0.2))
    window, sclera = canvas.ellipse(ex, ey, a, b, tilt)
    if window is None:
        return
    canvas.paint(window, sclera, palette.grey(0.2))
    u, v = canvas.u[window], canvas.v[window]
    iu, iv = ex + 0.6 * view["gaze"][0], ey + 0.4 * view["gaze"][1]  # iris centre
    radius = identity["eye_b"] * identity["iris_ratio"]
    iris = _coverage(_ellipse(u, v, iu, iv, radius, radius))
    canvas.paint(window, iris * sclera, palette.iris)
    pupil = _coverage(_ellipse(u, v, iu, iv, 0.45 * radius, 0.45 * radius))
    canvas.paint(window, pupil * sclera, palette.grey(-0.24))


def _draw_brow(canvas, identity, view, palette, side, eye):
    """Brow above one eye: a thin ellipse bent into an arch."""
    bx, by = eye[0] + side * 1.5, eye[1] - identity["brow_gap"] - view["brow_raise"]
    length = identity["brow_length"]
    window = canvas.window(bx, by, length + identity["brow_arch"] + identity["brow_thickness"])
    if window is None:
        return
    angle = side * identity["brow_angle"]
    c, s = math.cos(angle), math.sin(angle)
    du, dv = canvas.u[window] - bx, canvas.v[window] - by
    along = c * du + s * dv
    across = -s * du + c * dv + identity["brow_arch"] * (1.0 - (along / length) ** 2)
    brow = (along / length) ** 2 + (across / (identity["brow_thickness"] / 2 + 0.3)) ** 2 - 1.0
    canvas.paint(window, _coverage(brow), 0.5 * palette.hair + 0.5 * palette.grey(-0.2))


def _draw_lens_rim(canvas, identity, palette, eye):
    """Glasses: the rim around one eye."""
    ex, ey = eye
    a = identity["eye_a"]
    window = canvas.window(ex, ey, a * 1.5)
    if window is None:
        return
    u, v = canvas.u[window], canvas.v[window]
    ring = np.maximum(_ellipse(u, v, ex, ey, a * 1.45, a * 1.2), -_ellipse(u, v, ex, ey, a * 1.45 - 0.9, a * 1.2 - 0.9))
    canvas.paint(window, _coverage(ring), palette.grey(-0.25))


def _draw_glasses_bridge(canvas, identity, palette, eyes):
    """Glasses: the bar between the two rims."""
    (lx, ly), (rx, ry) = eyes
    canvas.paint(*canvas.ellipse((lx + rx) / 2, (ly + ry) / 2 - 2.0, (rx - lx) / 2 - identity["eye_a"] * 1.35, 0.5),
                 palette.grey(-0.25))


def _draw_nose(canvas, identity, view, palette, tip):
    """Nose: bridge shadow on the side away from the yaw, tip highlight, nostrils. Its landmark is the tip."""
    nx, ny = tip
    nw, eye_y = identity["nose_width"], identity["eye_y"]
    bridge_side = 1 if view["yaw"] >= 0 else -1
    bridge = canvas.ellipse(nx - bridge_side * nw * 0.5, (eye_y + ny) / 2 + 2.0, 0.9, (ny - eye_y) / 2)
    canvas.paint(*bridge, palette.grey(-0.07))
    canvas.paint(*canvas.ellipse(nx, ny - 0.8, nw * 0.45, nw * 0.35), palette.grey(0.05))
    for side in (-1, 1):
        canvas.paint(*canvas.ellipse(nx + side * nw * 0.55, ny + 1.6, nw * 0.28, nw * 0.17, side * 0.3),
                     palette.grey(-0.2))


def _draw_mouth(canvas, identity, view, palette, mouth):
    """Mouth: lips in a frame bent by the smile (corners rise by `smile`), dark opening when open."""
    mx, my, mw, curve = mouth
    open_half = view["mouth_open"] / 2
    window = canvas.window(mx, my, mw + abs(curve) + identity["lip_thickness"] + open_half)
    if window is None:
        return
    du = (canvas.u[window] - mx) / mw
    bent = canvas.v[window] - my + curve * np.clip(du, -1.5, 1.5) ** 2  # 0 on the mouth's centre line
    lips = du ** 2 + (bent / (identity["lip_thickness"] + open_half)) ** 2 - 1.0
    canvas.paint(window, _coverage(lips), palette.skin + np.array([0.05, -0.06, -0.05]) - 0.09)
    gap = du ** 2 / 0.9 + (bent / (open_half + 0.35)) ** 2 - 1.0
    canvas.paint(window, _coverage(gap), palette.grey(-0.26))


def _draw_front_hair(canvas, identity, palette, cap, under):
    """Hair in front: the cap above the hairline (fringe depth, side part), only over `under`; returns its coverage."""
    du, fa = canvas.u - identity["face_cx"], identity["face_half_width"]
    hairline = (identity["face_cy"] - identity["face_top"] + identity["hairline"]
                + identity["hairline_curve"] * (du / fa) ** 2 + identity["hair_part"] * du / fa)
    hair_front = _coverage(np.maximum(cap, canvas.v - hairline)) * under
    canvas.paint(None, hair_front, palette.hair)
    return hair_front


def _draw_occluder(canvas, identity, view, palette, skin_region, hair_region):
    """The view's object in front of the face, if any; removed from both regions in place."""
    occlusion = view["occlusion"]
    if occlusion is None:
        return
    window, occluder = canvas.ellipse(occlusion["u"] + identity["face_cx"] - 56.0, occlusion["v"], occlusion["a"],
                                      occlusion["b"], occlusion["angle"])
    if window is None:
        return
    canvas.paint(window, occluder, palette.grey(occlusion["offset"]))
    hair_region[window] *= 1.0 - occluder
    skin_region[window] *= 1.0 - occluder


def _add_hair_strands(canvas, identity, hair_region, texture_gain):
    """Hair strands: a wavy grating across the strand direction, period in output pixels (fine texture)."""
    period = identity["strand_period_px"] / canvas.pixels_per_unit
    angle = identity["strand_angle"] + math.pi / 2
    du = canvas.u - identity["face_cx"]
    along = math.cos(angle) * du + math.sin(angle) * canvas.v
    across = -math.sin(angle) * du + math.cos(angle) * canvas.v
    strands = np.sin(2 * math.pi * across / period + 2.0 * np.sin(2 * math.pi * along / identity["hair_wave_length"]))
    canvas.image += (texture_gain * _HAIR_STRAND_AMPLITUDE * strands * hair_region)[..., None]


def _box_mean(samples):
    """Mean of each k x k block of supersamples: (H * k, W * k, ...) -> (H, W, ...)."""
    k = _SUPERSAMPLE
    rows, cols = samples.shape[:2]
    return samples.reshape(rows // k, k, cols // k, k, *samples.shape[2:]).mean(axis=(1, 3))


def _add_pixel_textures(image, identity, skin_region, hair_region, texture_gain, rng):
    """Pixel-scale textures at output resolution, in place: pores (elongated along one axis) and hair noise."""
    shape = skin_region.shape
    pores = rng.standard_normal(shape)
    axis = 1 - identity["skin_texture_axis"]  # numpy axis 1 is x
    pores = (np.roll(pores, 1, axis) + 2 * pores + np.roll(pores, -1, axis)) / math.sqrt(6.0)  # unit variance
    image += (texture_gain * _SKIN_TEXTURE_STD * pores * skin_region)[..., None]
    image += (texture_gain * _HAIR_NOISE_STD * rng.standard_normal(shape) * hair_region)[..., None]


def _light_and_quantize(image, view, rng):
    """Overall brightness times a linear gradient, then sensor noise; returns uint8 (H, W, 3)."""
    height, width = image.shape[:2]
    gx, gy = np.meshgrid(np.arange(width) - (width - 1) / 2, np.arange(height) - (height - 1) / 2)
    direction = math.cos(view["light_angle"]) * gx + math.sin(view["light_angle"]) * gy
    light = view["brightness"] * (1.0 + view["light_gradient"] * direction / math.hypot(width, height))
    image = image * light[..., None] + _SENSOR_NOISE_STD * rng.standard_normal(image.shape)
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
