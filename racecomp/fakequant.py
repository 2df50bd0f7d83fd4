"""The arithmetic of simulated ("fake") quantization: a value rounded onto the 2^b levels of a range, in
either of two conventions, with a straight-through gradient. racecomp.quant places it in models.

Two conventions (`quantize_model(..., convention=...)`), the same placement, per-channel/per-tensor split,
activation range rule and straight-through gradient; widths 2..8 bits, weights `wbits` and activations `abits` set
apart. A quantizer maps a range [lo, hi] onto 2^b levels.

"quantface" (default): exactly QuantFace (github.com/fdbtrs/QuantFace, `quantization_utils/quant_utils.py`
`asymmetric_linear_quantization_params` and `AsymmetricQuantFunction`, from ZeroQ), in its own float32 arithmetic:

    m          = (2^b - 1) / max(hi - lo, 1e-8)                  levels per unit (QuantFace calls it `scale`)
    zero_point = round(m * lo) + 2^(b-1)                         not clamped
    q          = clamp(round(m * x - zero_point), -2^(b-1), 2^(b-1) - 1)      signed codes
    x_hat      = (q + zero_point) / m

  - weight ranges (conv / linear, per output channel) and PReLU slope ranges (per tensor) are the raw [min, max]
    of the current values: a one-signed channel keeps its full 2^b levels and 0 need not be on its grid;
  - PReLU slopes are quantized at the *activation* bits (QuantFace builds `QuantActPreLu(act_bit=...)`);
  - activation ranges start at 0 and grow (QuantAct's zero-initialized running min/max), so they include 0.
  Rounding is torch.round (half to even) of the signed, shifted code, so an exact tie can land one level off the
  zero-inclusive convention's (range [-1, 2] at 2 bits: 0.5 -> 1.0 here, 0.0 there); apart from ties the two
  arithmetics agree up to the last float32 bit of x_hat.

"zero-inclusive" (racecomp.quant's earlier behaviour, torch's observer convention): every range is first widened to
include 0 (lo = min(lo, 0), hi = max(hi, 0)), so 0.0 is exactly representable and the zero point never needs
clamping; PReLU slopes are quantized at the *weight* bits (they are weights). Then

    scale      = (hi - lo) / (2^b - 1)          (at least float32 eps, as torch's observers)
    zero_point = clamp(round(-lo / scale), 0, 2^b - 1)
    q          = clamp(round(x * (1 / scale)) + zero_point, 0, 2^b - 1)       quant_min 0, quant_max 2^b - 1
    x_hat      = (q - zero_point) * scale

which is bit for bit `torch.fake_quantize_per_channel_affine` / `torch.fake_quantize_per_tensor_affine` with that
scale and zero point (tested), i.e. what torch's own quantized kernels would compute. Its departures from QuantFace:
a weight or slope range that does not straddle 0 is widened, so its step is coarser (a depthwise channel with
weights in [0.1, 0.45] gets a 29% larger step: 0.45/255 instead of 0.35/255 at 8 bits); PReLU slopes at wbits
(the same for W8A8 / W6A6; at W4A8 slopes [0, 0.3] get a step of 0.02 instead of 0.0012); ties rounded as above.

Both: gradients use the straight-through estimator: identity everywhere, also where x was clamped (torch's
fake_quantize masks those; QuantFace/ZeroQ pass them, and so do we). It is computed as `x_hat.detach() + (x -
x.detach())`, the same gradient with a forward value exactly x_hat (`x + (x_hat - x).detach()` rounds twice, and in
bfloat16 lands off the grid for values far outside the range).
"""
import torch

QUANTFACE_MIN_RANGE = 1e-8  # QuantFace's floor on hi - lo (quant_utils.py asymmetric_linear_quantization_params)


def quantization_params(min_val, max_val, bits):
    """Zero-inclusive convention: (scale, zero_point) float32 tensors of the grid {0..2^bits-1} covering
    [min(min_val,0), max(max_val,0)].

    Elementwise: 0-d ranges give a per-tensor grid, 1-d ranges one grid per channel. zero_point holds integers.
    """
    qmax = 2 ** bits - 1
    lo = torch.clamp(min_val.float(), max=0.0)
    hi = torch.clamp(max_val.float(), min=0.0)
    scale = torch.clamp((hi - lo) / qmax, min=torch.finfo(torch.float32).eps)
    zero_point = torch.clamp(torch.round(-lo / scale), 0, qmax)
    return scale, zero_point


def fake_quantize(x, scale, zero_point, bits, axis=None):
    """x rounded onto the grid scale * (q - zero_point), q in {0..2^bits-1}; no gradient (see `straight_through`).

    `axis` None: scale/zero_point are 0-d (per tensor); else 1-d with one entry per slice of x along `axis`.
    x is multiplied by the float32 reciprocal of scale, as torch's fake_quantize kernels do, so results match them
    exactly.
    """
    if axis is not None:
        shape = [1] * x.dim()
        shape[axis] = -1
        scale, zero_point = scale.view(shape), zero_point.view(shape)
    q = torch.clamp(torch.round(x * torch.reciprocal(scale)) + zero_point, 0, 2 ** bits - 1)
    return (q - zero_point) * scale


def quantface_fake_quantize(x, min_val, max_val, bits, axis=None):
    """QuantFace convention: x (float32) rounded onto the 2^bits levels spanning the raw range [min_val, max_val];
    no gradient. QuantFace's float32 arithmetic, operation for operation (see the module docstring).

    `axis` None: min_val/max_val are 0-d (per tensor); else 1-d with one entry per slice of x along `axis`.
    """
    half = 2 ** (bits - 1)
    min_val, max_val = min_val.float(), max_val.float()
    levels_per_unit = (2 ** bits - 1) / torch.clamp(max_val - min_val, min=QUANTFACE_MIN_RANGE)
    zero_point = torch.round(levels_per_unit * min_val) + half
    if axis is not None:
        shape = [1] * x.dim()
        shape[axis] = -1
        levels_per_unit, zero_point = levels_per_unit.view(shape), zero_point.view(shape)
    q = torch.clamp(torch.round(levels_per_unit * x - zero_point), -half, half - 1)
    return (q + zero_point) / levels_per_unit


def fake_quantize_range(x, min_val, max_val, bits, convention, axis=None):
    """x rounded onto the `convention`'s grid for the range [min_val, max_val]; no gradient."""
    if convention == "quantface":
        return quantface_fake_quantize(x, min_val, max_val, bits, axis)
    scale, zero_point = quantization_params(min_val, max_val, bits)
    return fake_quantize(x, scale, zero_point, bits, axis)


def straight_through(x, x_hat):
    """x_hat (exactly) in the forward pass, identity gradient to x in the backward pass."""
    return x_hat.detach() + (x - x.detach())


def quantize_weight(weight, bits, per_channel=True, convention="quantface"):
    """Weight on its min/max grid (per output channel = dim 0, or per tensor), straight-through gradient.

    "quantface": the raw [min, max]; "zero-inclusive": widened to include 0.
    """
    w = weight.detach().float()
    if per_channel:
        flat = w.reshape(w.shape[0], -1)
        w_hat = fake_quantize_range(w, flat.amin(dim=1), flat.amax(dim=1), bits, convention, axis=0)
    else:
        w_hat = fake_quantize_range(w, w.min(), w.max(), bits, convention)
    return straight_through(weight, w_hat.to(weight.dtype))
