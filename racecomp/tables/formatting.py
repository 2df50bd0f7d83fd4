"""How summarize writes a number or a cell: one rule for values, intervals and p-values, and the markdown and
LaTeX cells that hold them. The CSVs keep full precision; this is only the text a reader (or a paper) sees."""
import decimal
import math
import re

import numpy as np

DIGITS = 3  # significant digits of a value, or of the largest number of a cell
P_FLOOR = 0.001  # p-values below it print as "<0.001"
# |values| below it print as 0: the floating-point rounding of equal values (an STD of equal means is 1e-16),
# far below the resolution of any metric here (dB, SSIM, percent, cosine).
ZERO_BELOW = 1e-9
EXACT = decimal.Context(prec=400, rounding=decimal.ROUND_HALF_UP)  # enough digits for any float's integer part
LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
WARNINGS_NOTE = ("Rows with `warnings` come from runs that failed a sanity check after their evaluation (chance "
                 "accuracy, collapsed embeddings, below the bicubic floor; racecomp.sanity, the run's args.json and "
                 "the problems list name the numbers): a broken model, not a result.")


def format_number(value, magnitude=None, digits=DIGITS):
    """`value` in fixed point with `digits` significant digits of `magnitude` (default: the value itself), so that
    a small difference keeps its digits (0.000412) and the numbers of one cell share their decimals. Ties round
    half up from the number's shortest text (92.5 -> 93); a zero has no sign. Whole numbers (counts) print as
    they are, blanks as "", infinities as "inf" / "-inf", NaN as "nan", |value| < ZERO_BELOW as zero."""
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    value = 0.0 if abs(value) < ZERO_BELOW else value
    scale, decimals = abs(value if magnitude is None else magnitude), 0
    if math.isfinite(scale) and scale > 0:
        exponent = math.floor(math.log10(scale))
        exponent += round(scale, digits - 1 - exponent) >= 10.0 ** (exponent + 1)  # 9.996 rounds up to 10.0
        decimals = max(0, digits - 1 - exponent)
    text = str(decimal.Decimal(repr(value)).quantize(decimal.Decimal(1).scaleb(-decimals), context=EXACT))
    return text.lstrip("-") if float(text) == 0.0 else text


def cell_magnitude(*numbers):
    """The largest finite |number|: the magnitude that sets the decimals of a value and its interval."""
    finite = [abs(float(n)) for n in numbers if n not in ("", None) and math.isfinite(float(n))]
    return max([n for n in finite if n >= ZERO_BELOW], default=0.0)


def shared_decimals(*numbers):
    """The numbers of one cell (a value and its interval), written with the decimals of the largest."""
    magnitude = cell_magnitude(*numbers)
    return [format_number(n, magnitude) for n in numbers]


def has_interval(lo, hi, n):
    """Whether [lo, hi] is worth printing: n >= 2 (one item or seed has no width) and a bound is known."""
    return n >= 2 and not (math.isnan(lo) or math.isnan(hi) or (math.isinf(lo) and math.isinf(hi)))


def interval_text(value, lo, hi, n, missing="no CI", note=""):
    """'value [lo, hi]' (and ' (note)'), or 'value (n=1, no CI)' without an interval: [v, v] would claim
    certainty. `missing` names what is missing ("no seed range" for a range over seeds)."""
    if not has_interval(lo, hi, n):
        return f"{format_number(value)} (n={n}, {missing})"
    value, lo, hi = shared_decimals(value, lo, hi)
    return f"{value} [{lo}, {hi}]" + (f" ({note})" if note else "")


def p_text(p):
    """A p-value with 2 significant digits ("0.43", "0.050", "0.0043", "1.0") or "<0.001"."""
    return f"<{P_FLOOR:g}" if p < P_FLOOR else format_number(p, digits=2)


def markdown_text(value):
    """`value` (text that may come from a run folder) as text that stays what it is in a markdown line or cell:
    line breaks as spaces, `|` escaped, an HTML tag's `<` as `&lt;`."""
    text = " ".join(str(value).splitlines())
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text.replace("|", "\\|"))


def code_span(text):
    """`text` for a markdown code span: on one line, its backticks as quotes."""
    return " ".join(str(text).splitlines()).replace("`", "'")


def markdown_table(header, rows):
    """A markdown table of cells (markdown_text), followed by WARNINGS_NOTE when a row has warnings."""
    lines = ["| " + " | ".join(markdown_text(cell) for cell in row) + " |" for row in [header] + rows]
    lines.insert(1, "|" + "---|" * len(header))
    flagged = "warnings" in header and any(row[header.index("warnings")] for row in rows)
    return "\n".join(lines) + (f"\n\n{WARNINGS_NOTE}" if flagged else "")


def latex_escape(text):
    """`text` with LaTeX's special characters written as text (fastvit_t8 -> fastvit\\_t8)."""
    return "".join(LATEX_SPECIAL.get(char, char) for char in str(text))


def latex_cell(value, lo, hi, n):
    """\\raceci{value}{lo}{hi} with the decimals of interval_text, $value$ without an interval, -- for NaN; inf
    as \\infty."""
    if math.isnan(value):
        return "--"
    if not has_interval(lo, hi, n):
        return f"${format_number(value)}$".replace("inf", r"\infty")
    return "\\raceci" + "".join(f"{{{text}}}".replace("inf", r"\infty") for text in shared_decimals(value, lo, hi))
