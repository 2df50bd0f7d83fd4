r"""LaTeX tables (booktabs) a paper can \input, in the layout of the quantization paper's Table I: one row per
experiment (model, settings), one column per race, then Avg, STD and SER (accuracy only), each cell the value
over its interval [lo, hi] (\raceci{value}{lo}{hi}, defined at the top of the file). The numbers are the rows
of ci_<block>.csv, only formatted (tables.formatting: the same digits as tables.md); the file needs
\usepackage{booktabs} in the paper's preamble and nothing else.
"""
import math

from racecomp.tables.formatting import cell_magnitude, format_number

SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
           "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
SUMMARY_HEADERS = {"mean": "Avg", "std": "STD", "ser": "SER"}
# A cell: the value over its interval, stacked (half the width of one line). \providecommand: a paper that
# defines \raceci first (e.g. on one line: $#1$ [$#2$, $#3$]) keeps its own.
CELL_MACRO = r"\providecommand{\raceci}[3]{\begin{tabular}[t]{@{}r@{}}$#1$\\ {\scriptsize[$#2$, $#3$]}\end{tabular}}"


def escape(text):
    """`text` with LaTeX's special characters written as text (fastvit_t8 -> fastvit\\_t8)."""
    return "".join(SPECIAL.get(char, char) for char in str(text))


def _math(text):
    """A formatted number for math mode (a true minus sign): inf as \\infty."""
    return text.replace("inf", r"\infty")


def interval_cell(value, lo, hi, n):
    """\\raceci{value}{lo}{hi} (CELL_MACRO: the value over its interval in small type), with the decimals of
    formatting.interval_text; $value$ alone when n < 2 or the interval is unknown, as tables.md's 'no CI';
    -- for NaN."""
    if math.isnan(value):
        return "--"
    if n < 2 or math.isnan(lo) or math.isnan(hi) or (math.isinf(lo) and math.isinf(hi)):
        return f"${_math(format_number(value))}$"
    magnitude = cell_magnitude(value, lo, hi)
    return "\\raceci" + "".join(f"{{{_math(format_number(v, magnitude))}}}" for v in (value, lo, hi))


def fairness_table(caption, label, label_header, rows, races, summaries):
    r"""The Table I layout as a `table` float: label columns (`label_header`, e.g. arch, minority), Seeds, one
    column per race, then `summaries` (keys of SUMMARY_HEADERS). rows: [(label cells, n_seeds, {quantity: row
    of ci_<block>.csv with value, lo, hi, n_items})]; a race or summary an experiment lacks is left blank."""
    header = [escape(h) for h in label_header] + ["Seeds"] + [escape(r) for r in races] + \
        [SUMMARY_HEADERS[s] for s in summaries]
    alignment = "l" * len(label_header) + "r" * (len(header) - len(label_header))
    lines = [f"% RaceComp (summarize.py): {len(rows)} experiments. Needs \\usepackage{{booktabs}}; wider than a "
             "column of a two-column paper: \\begin{table*} or \\resizebox (graphicx).", CELL_MACRO,
             r"\begin{table}[t]", r"\centering", r"\small", r"\setlength{\tabcolsep}{4pt}",
             rf"\caption{{{escape(caption)}}}", rf"\label{{{label}}}", rf"\begin{{tabular}}{{{alignment}}}",
             r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    for cells, n_seeds, by_quantity in rows:
        numbers = [interval_cell(q["value"], q["lo"], q["hi"], q["n_items"]) if q else ""
                   for q in (by_quantity.get(key) for key in list(races) + list(summaries))]
        lines.append(" & ".join([escape(c) for c in cells] + [str(n_seeds)] + numbers) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
