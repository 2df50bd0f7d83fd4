"""Figures: panels side by side, one row per experiment (contrast) in each, a value a dot with its [lo, hi]
whisker, and the dose-response as lines over the doses; what is not drawn is counted in red under it. Each
`*_figures` function returns matplotlib Figures (constrained layout; never pyplot, whose state a notebook's user
owns), split into parts on one value axis when there are more rows, panels or lines than one image holds;
write_figure writes a Figure's PNG (at most MAX_WIDTH_PX wide) and PDF, part_paths names the parts' files."""
import io
import math
import os
import textwrap

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_pdf import FigureCanvasPdf
from matplotlib.figure import Figure

from racecomp import files
from racecomp.tables.formatting import format_number, interval_text

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")  # matplotlib's tab10: one colour per experiment or line
NOTE_COLOUR = "#c80000"
DPI = 100
MAX_WIDTH_PX = 2400  # widest PNG: a 182-run sweep once gave 12,000 px images no viewer shows whole
ROWS_PER_PART = 40  # experiments, contrasts or doses in one image
PANELS_PER_PART = 8  # races (or dose-response lines) side by side in one image
ROW_IN = 0.28  # inches per row
CHAR_IN = 0.085  # inches of an average character at FONT_SIZE
LABEL_CHARS = 80  # longest row or legend label; longer ones are cut with "..."
FONT_SIZE = 10
FORMATS = (".png", ".pdf")  # the files of one figure, in figure_files' order


def _points(values):
    """(value, lo, hi) tuples as floats; None or '' (a blank CSV cell) as NaN."""
    return tuple(math.nan if v is None or v == "" else float(v) for v in values)


def _cut(text, chars=LABEL_CHARS):
    text = str(text)
    return text if len(text) <= chars else text[:chars - 3] + "..."


def _value_range(points, zero):
    """(low, high) of the value axis: every number of the points with a finite value (and 0), padded by 8%."""
    bounds = [v for p in points if math.isfinite(p[0]) for v in p if math.isfinite(v)] + ([0.0] if zero else [])
    low, high = (min(bounds), max(bounds)) if bounds else (0.0, 1.0)
    pad = (high - low) * 0.08 if high > low else max(abs(high) * 0.05, 1e-3)
    return low - pad, high + pad


def _parts(count, size):
    """range(count) in as few consecutive runs of at most `size` as possible, of about equal size ([[]] for 0)."""
    return [list(part) for part in np.array_split(np.arange(count), math.ceil(count / size))] if count else [[]]


def _notes(points, why):
    """What is not drawn, counted: non-finite values, and values without a whisker (`why`)."""
    not_drawn = sum(not math.isfinite(p[0]) for p in points)
    whiskerless = sum(math.isfinite(p[0]) and (math.isnan(p[1]) or math.isnan(p[2])) for p in points)
    return ([f"{not_drawn} non-finite value(s) not drawn"] if not_drawn else []) + \
        ([f"{whiskerless} value(s) without whiskers ({why})"] if whiskerless else [])


def _figure(title, number, parts, width_in, height_in, notes):
    """A Figure at most MAX_WIDTH_PX wide, its title (and part number) wrapped above, red notes below."""
    width_in = min(MAX_WIDTH_PX / DPI, width_in)
    figure = Figure(figsize=(width_in, height_in + 1.3 + 0.2 * len(notes)), dpi=DPI, layout="constrained")
    title = str(title) if parts == 1 else f"{title} (part {number} of {parts})"
    figure.suptitle(textwrap.fill(title, max(20, int(width_in / (1.2 * CHAR_IN))), max_lines=3, placeholder="...")
                    or " ", fontsize=FONT_SIZE + 2)
    if notes:
        figure.supxlabel("\n".join(notes), x=0.01, ha="left", fontsize=FONT_SIZE - 1, color=NOTE_COLOUR)
    return figure


def _draw(axes, rows, points, colours, low, high):
    """Each finite (value, lo, hi) on its row: the value a dot (gid "estimates"), [lo, hi] a whisker (gid
    "whiskers"; an infinite end clipped to the axis, none when an end is NaN) capped at each finite end (gid
    "caps"). One artist per kind: an artist per point made a 182-run figure take seconds."""
    drawn = [(y, p, c) for y, p, c in zip(rows, points, colours) if math.isfinite(p[0])]
    ranged = [(y, p, c) for y, p, c in drawn if not (math.isnan(p[1]) or math.isnan(p[2]))]
    if ranged:
        axes.hlines([y for y, _, _ in ranged], [max(p[1], low) for _, p, _ in ranged],
                    [min(p[2], high) for _, p, _ in ranged], colors=[c for *_, c in ranged], linewidth=1.5,
                    gid="whiskers")
    for gid, marks, style in (("caps", [(end, y, c) for y, p, c in ranged for end in p[1:] if math.isfinite(end)],
                               {"marker": "|", "s": 40, "linewidths": 1.5}),
                              ("estimates", [(p[0], y, c) for y, p, c in drawn], {"s": 30, "zorder": 3})):
        if marks:
            axes.scatter([x for x, _, _ in marks], [y for _, y, _ in marks], c=[c for *_, c in marks], gid=gid, **style)


def _rows_figures(title, value_label, panel_titles, labels, points, colours, zero_line, why, label_colours, texts=()):
    """Panels side by side (one per panel title), one row per label in each, the first on top; points[row][panel]
    = (value, lo, hi) or None (nothing there); texts: written at the right of each row (one panel only)."""
    low, high = _value_range([p for row in points for p in row if p], zero_line)
    parts = [(c, r) for c in _parts(len(panel_titles), PANELS_PER_PART) for r in _parts(len(labels), ROWS_PER_PART)]
    figures = []
    for number, (columns, rows) in enumerate(parts, 1):
        shown = [p for r in rows for c in columns if (p := points[r][c])]
        width = CHAR_IN * max([len(_cut(labels[r])) for r in rows] + [4]) + 2.4 * max(1, len(columns)) + 0.4 + \
            (CHAR_IN * max(len(texts[r]) for r in rows) + 5.0 if texts and rows else 0)
        figure = _figure(title, number, len(parts), width, ROW_IN * max(3, len(rows)), _notes(shown, why))
        panels = figure.subplots(1, max(1, len(columns)), sharey=True, squeeze=False)[0]
        for panel, c in zip(panels, columns):
            panel.set_title(_cut(panel_titles[c], 30), fontsize=FONT_SIZE + 1)
            panel.set_xlim(low, high)
            panel.grid(axis="x", color="#e8e8e8")
            panel.tick_params(labelsize=FONT_SIZE - 1)
            if zero_line and low < 0 < high:
                panel.axvline(0.0, color="#5a5a5a", linewidth=1.2)
            _draw(panel, range(len(rows)), [points[r][c] or (math.nan,) * 3 for r in rows], [colours[r] for r in rows],
                  low, high)
            panel.set_xlabel(_cut(value_label, 120 if texts else 40), fontsize=FONT_SIZE - 1)
        sides = [(panels[0], [_cut(labels[r]) for r in rows])]
        if texts:  # on a twin axis (a twin pickles for the worker processes)
            sides.append((panels[0].twinx(), [texts[r] for r in rows]))
        for side, names in sides:
            side.set_yticks(range(len(rows)), names, fontsize=FONT_SIZE)
            side.set_ylim(max(1, len(rows)) - 0.5, -0.5)
            for tick, r in zip(side.get_yticklabels(), rows):
                tick.set_color(label_colours[r])
        figures.append(figure)
    return figures


def interval_figures(title, value_label, categories, series, zero_line=False):
    """One panel per category (race) side by side, one row per series (experiment) in each, a colour per series.
    series: [(label, {category: (value, lo, hi)})]; lo = hi = NaN: a dot without whisker (n=1, no interval)."""
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(series))]  # the labels coloured as their dots
    return _rows_figures(title, value_label, [str(c) for c in categories], [str(label) for label, _ in series],
                         [[_points(by[c]) if c in by else None for c in categories] for _, by in series], colours,
                         zero_line, "n=1: no interval", colours)


def _forest_text(estimate, lo, hi):
    if not math.isfinite(estimate):
        return f"{format_number(estimate)}: not drawn"
    return f"{format_number(estimate)} (no interval)" if math.isnan(lo) or math.isnan(hi) else \
        interval_text(estimate, lo, hi, 2)


def forest_figures(title, x_label, rows):
    """One row per (label, estimate, lo, hi), a line at zero, 'estimate [lo, hi]' written at the right; a row with
    a non-finite estimate is listed (in red) but not drawn."""
    points = [[_points(row[1:])] for row in rows]
    return _rows_figures(title, x_label, [""], [str(row[0]) for row in rows], points, [PALETTE[0]] * len(rows), True,
                         "no interval", ["black" if math.isfinite(p[0][0]) else NOTE_COLOUR for p in points],
                         [_forest_text(*p[0]) for p in points])


def dose_response_figures(title, y_label, x_values, series, zero_line=True, x_label=""):
    """A dose-response: the doses (e.g. under-sampling weights) along x in the order given, one line per series
    (label -> one (y, lo, hi) per x value, or None where that dose was not run: the line goes past it; a
    non-finite y breaks the line) with its whiskers, each line shifted a little so that none hides another;
    parts of at most len(PALETTE) lines (a colour each) and ROWS_PER_PART doses."""
    for label, points in series.items():
        if len(points) != len(x_values):
            raise ValueError(f"dose-response series {label!r}: {len(points)} points for {len(x_values)} x values")
    labels = list(series)
    low, high = _value_range([_points(p) for points in series.values() for p in points if p], zero_line)
    parts = [(lines, doses) for lines in _parts(len(labels), len(PALETTE))
             for doses in _parts(len(x_values), ROWS_PER_PART)]
    figures = []
    for number, (lines, doses) in enumerate(parts, 1):
        points = [[(x, _points(series[labels[i]][d])) for x, d in enumerate(doses) if series[labels[i]][d]]
                  for i in lines]
        figure = _figure(title, number, len(parts), 0.9 * len(doses) + 4.0, 3.0 + 0.2 * len(lines),
                         _notes([p for line in points for _, p in line], "n=1: no interval"))
        axes = figure.subplots()
        for k, line in enumerate(points):
            if not line:
                continue
            shift = 0.2 * (k - (len(lines) - 1) / 2) / max(1, len(lines))
            x = np.array([x for x, _ in line], dtype=np.float64) + shift
            value, lo, hi = (np.array(column, dtype=np.float64).reshape(-1) for column in zip(*[p for _, p in line]))
            axes.plot(x, np.where(np.isfinite(value), value, np.nan), color=PALETTE[k], marker="o", gid="estimates",
                      label=_cut(labels[lines[k]]))
            ranged = np.isfinite(value) & ~np.isnan(lo) & ~np.isnan(hi)
            axes.errorbar(x[ranged], value[ranged], [value[ranged] - np.maximum(lo[ranged], low),
                                                     np.minimum(hi[ranged], high) - value[ranged]],
                          fmt="none", ecolor=PALETTE[k], capsize=3, gid="whiskers")
        if zero_line and low < 0 < high:
            axes.axhline(0.0, color="#5a5a5a", linewidth=1.2, gid="zero")
        axes.set_xticks(range(len(doses)), [_cut(x_values[d], 12) for d in doses], fontsize=FONT_SIZE - 1)
        axes.set(xlim=(-0.5, len(doses) - 0.5), ylim=(low, high))
        axes.set_xlabel(_cut(x_label, 60), fontsize=FONT_SIZE - 1)
        axes.set_ylabel(_cut(y_label, 60), fontsize=FONT_SIZE - 1)
        axes.grid(axis="y", color="#e8e8e8")
        figure.legend(loc="outside lower center", fontsize=FONT_SIZE - 1, frameon=False)
        figures.append(figure)
    return figures


def part_paths(path, count):
    """The file of each of the `count` images of the plot `path`: `path` itself for one, else
    <stem>_part01<ext>, <stem>_part02<ext>, ... (numbers padded to sort)."""
    if count == 1:
        return [path]
    stem, ext = os.path.splitext(path)
    return [f"{stem}_part{number:0{max(2, len(str(count)))}d}{ext}" for number in range(1, count + 1)]


def figure_files(figure):
    """{".png": bytes, ".pdf": bytes} of one Figure: the PNG at DPI, the PDF vector without a creation date (the
    same figure gives the same files)."""
    png, pdf = io.BytesIO(), io.BytesIO()
    FigureCanvasAgg(figure).print_png(png, metadata={"Software": None})
    FigureCanvasPdf(figure).print_pdf(pdf, metadata={"CreationDate": None})
    return {".png": png.getvalue(), ".pdf": pdf.getvalue()}


def write_figure(figure, paths):
    """Write the PNG and PDF of `figure` to `paths` (FORMATS' order), each atomically; summarize runs this in
    worker processes (rendering is most of a figure's cost)."""
    for path, data in zip(paths, figure_files(figure).values()):
        files.write_bytes(path, data)
