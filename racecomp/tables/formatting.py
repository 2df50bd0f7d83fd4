"""How every number of tables.md (and of the PNG labels) is written: one rule for values, intervals and p-values.

The CSVs keep full precision; this is only the text a reader (or a paper) sees.
"""
import decimal
import math
import re

import numpy as np

DIGITS = 3  # significant digits of a value, or of the largest number of a cell
P_FLOOR = 0.001  # p-values below it print as "<0.001"
# |values| below it print as 0: the floating-point rounding of equal values (an STD of equal means is 1e-16, not
# a number to print), far below the resolution of any metric here (dB, SSIM, percent, cosine).
ZERO_BELOW = 1e-9
EXACT = decimal.Context(prec=400, rounding=decimal.ROUND_HALF_UP)  # enough digits for any float's integer part


def format_number(value, magnitude=None, digits=DIGITS):
    """`value` in fixed point with `digits` significant digits of `magnitude` (default: the value itself).

    The decimals follow the magnitude, so a small difference keeps its digits (0.000412, not 0.00), and the
    numbers of one cell, given the cell's largest magnitude, share their decimals (32.1 [31.8, 32.4]). Ties
    round half up, as by hand from the number's shortest text (92.5 -> 93, 0.125 -> 0.13). A number that
    rounds to zero prints without a sign ("0.000", never "-0.000"). Whole numbers (counts) print
    as they are, blanks as "", infinities as "inf" / "-inf", NaN as "nan"; |value| < ZERO_BELOW as zero.
    """
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if abs(value) < ZERO_BELOW:
        value = 0.0
    scale = abs(value if magnitude is None else magnitude)
    decimals = 0
    if math.isfinite(scale) and scale > 0:
        exponent = math.floor(math.log10(scale))
        if round(scale, digits - 1 - exponent) >= 10.0 ** (exponent + 1):  # 9.996 rounds up to 10.0
            exponent += 1
        decimals = max(0, digits - 1 - exponent)
    text = str(decimal.Decimal(repr(value)).quantize(decimal.Decimal(1).scaleb(-decimals), context=EXACT))
    return text.lstrip("-") if float(text) == 0.0 else text


def cell_magnitude(*numbers):
    """The largest finite |number|: the magnitude that sets the decimals of a value and its interval."""
    finite = [abs(float(n)) for n in numbers if n not in ("", None) and math.isfinite(float(n))]
    return max([n for n in finite if n >= ZERO_BELOW], default=0.0)


def interval_text(value, lo, hi, n, missing="no CI", note=""):
    """'value [lo, hi]' with shared decimals (and ' (note)'), or 'value (n=1, no CI)' when n < 2 or the interval
    is unknown (NaN or unbounded on both sides): a one-item (or one-seed) interval has no width, and [v, v]
    would claim certainty. `missing` names what is missing ("no seed range" for a range over seeds)."""
    known = not (math.isnan(lo) or math.isnan(hi) or (math.isinf(lo) and math.isinf(hi)))
    if n < 2 or not known:
        return f"{format_number(value)} (n={n}, {missing})"
    magnitude = cell_magnitude(value, lo, hi)
    text = f"{format_number(value, magnitude)} [{format_number(lo, magnitude)}, {format_number(hi, magnitude)}]"
    return f"{text} ({note})" if note else text


def p_text(p):
    """A p-value with 2 significant digits ("0.43", "0.050", "0.0043", "1.0") or "<0.001"."""
    return f"<{P_FLOOR:g}" if p < P_FLOOR else format_number(p, digits=2)


def markdown_text(value):
    """`value` (text that may come from a run folder: a column value, a path, a message) as text that stays what
    it is in a markdown line or table cell: line breaks as spaces (no heading or list can start), `|` escaped
    (no new cell), an HTML tag's `<` as `&lt;` (no markup runs). Numbers and "<0.001" are left as they are."""
    text = " ".join(str(value).splitlines())
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text.replace("|", "\\|"))
