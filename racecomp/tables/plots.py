"""Figures drawn with matplotlib: per-race interval plots, forest plots of contrasts, dose-response lines.

Each `*_figures` function returns matplotlib Figures (nothing written); figure_files renders one as PNG (for the
page, at most MAX_WIDTH_PX wide at DPI) and PDF (vector, for print) from the same Figure. A plot with more rows
(experiments, contrasts) or columns (races, weights) than one readable image holds is split into parts, written
as <stem>_part01.png/.pdf, <stem>_part02..., all parts on one value axis so that they compare (part_paths).
Figures are built on matplotlib.figure.Figure with the Agg canvas: pyplot (and its global backend and figure
list, which a notebook user owns) is never touched.
"""
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
MAX_WIDTH_IN = MAX_WIDTH_PX / DPI
ROWS_PER_PART = 40  # experiments (interval plot) or contrasts (forest plot) in one image
PANELS_PER_PART = 8  # races of an interval plot side by side in one image
X_PER_PART = 30  # x values of a dose-response plot in one image
ROW_IN = 0.28  # inches per row
LABEL_CHARS = 60  # longest row or legend label; longer ones are cut with "..."
FONT_SIZE = 10


def _number(value):
    """float(value); None or '' (a blank CSV cell) as NaN."""
    return math.nan if value is None or value == "" else float(value)


def _cut(text, chars=LABEL_CHARS):
    text = str(text)
    return text if len(text) <= chars else text[:chars - 3] + "..."


def _wrapped(text, width_in, size=FONT_SIZE + 2):
    """`text` wrapped to lines that fit `width_in` inches at font `size` (at most 3 lines)."""
    return "\n".join(textwrap.wrap(str(text), max(20, int(width_in / _char_in(size))), max_lines=3,
                                   placeholder="...")) or " "


def _char_in(size=FONT_SIZE):
    """Inches of an average character of the default font (DejaVu Sans) at `size` points."""
    return 0.6 * size / 72


def _value_range(values, zero):
    """(low, high) of the value axis: the finite `values` (and 0 when `zero`), padded by 8%."""
    bounds = [v for v in values if math.isfinite(v)] + ([0.0] if zero else [])
    low, high = (min(bounds), max(bounds)) if bounds else (0.0, 1.0)
    pad = (high - low) * 0.08 if high > low else max(abs(high) * 0.05, 1e-3)
    return low - pad, high + pad


def _chunks(count, size):
    """range(count) in as few consecutive runs of at most `size` as possible, sizes differing by at most one
    ([[]] for nothing)."""
    if not count:
        return [[]]
    return [list(chunk) for chunk in np.array_split(np.arange(count), math.ceil(count / size))]


def _part_title(title, number, parts):
    return title if parts == 1 else f"{title} (part {number} of {parts})"


def _figure(plot_in, height_in, title, notes, left_in, right_in=0.3, bottom_in=0.75):
    """A Figure whose plot area is `plot_in` x `height_in` inches, with `left_in` / `right_in` inches for labels
    beside it, its title wrapped above and red `notes` below; at most MAX_WIDTH_IN wide (the plot area gives).
    Margins are set by hand, not by a layout engine: a layout pass per file doubled the time of a figure."""
    width_in = min(MAX_WIDTH_IN, left_in + plot_in + right_in)
    title_text = _wrapped(title, width_in)
    top_in = 0.35 + 0.22 * (title_text.count("\n") + 1)
    bottom_in += 0.2 * len(notes)
    total_in = top_in + height_in + bottom_in
    figure = Figure(figsize=(width_in, total_in), dpi=DPI)
    figure.suptitle(title_text, fontsize=FONT_SIZE + 2, y=1 - 0.1 / total_in, va="top")
    for i, note in enumerate(notes):
        figure.text(0.1 / width_in, (0.1 + 0.2 * (len(notes) - 1 - i)) / total_in, note, fontsize=FONT_SIZE - 1,
                    color=NOTE_COLOUR)
    figure.subplots_adjust(left=left_in / width_in, right=1 - right_in / width_in, top=1 - top_in / total_in,
                           bottom=bottom_in / total_in, wspace=0.08)
    return figure


def _draw_estimates(axes, positions, points, colours, low, high, horizontal):
    """Each finite (value, lo, hi) of `points` at its position: the value a dot (gid "estimates"), [lo, hi] a
    whisker (gid "whiskers"; an infinite end clipped to [low, high], none when an end is NaN) with a cap at each
    finite end (gid "caps"). One artist per kind for all points: per-point errorbar calls made a 182-run figure
    take seconds."""
    drawn = [(p, v, lo, hi, c) for p, (v, lo, hi), c in zip(positions, points, colours) if math.isfinite(v)]
    whiskers = [(p, max(lo, low), min(hi, high), c) for p, _, lo, hi, c in drawn if not (math.isnan(lo) or
                                                                                          math.isnan(hi))]
    ends = [(p, end, c) for p, _, lo, hi, c in drawn if not (math.isnan(lo) or math.isnan(hi))
            for end in (lo, hi) if math.isfinite(end)]  # a cap at each finite end: none where the whisker runs on
    if whiskers:
        (axes.hlines if horizontal else axes.vlines)(
            [p for p, *_ in whiskers], [lo for _, lo, _, _ in whiskers], [hi for *_, hi, _ in whiskers],
            colors=[c for *_, c in whiskers], linewidth=1.5, gid="whiskers")
    _scatter(axes, ends, horizontal, marker="|" if horizontal else "_", s=40, linewidths=1.5, gid="caps")
    _scatter(axes, [(p, v, c) for p, v, *_, c in drawn], horizontal, s=30, zorder=3, gid="estimates")


def _scatter(axes, points, horizontal, **style):
    """(position, value, colour) points as markers (nothing for none)."""
    if points:
        xy = [(value, position) if horizontal else (position, value) for position, value, _ in points]
        axes.scatter(*zip(*xy), c=[colour for *_, colour in points], **style)


def _counts_notes(not_drawn, whiskerless, why="n=1: no interval"):
    return ([f"{not_drawn} non-finite value(s) not drawn"] if not_drawn else []) + \
           ([f"{whiskerless} value(s) without whiskers ({why})"] if whiskerless else [])


def part_paths(path, count):
    """The file of each of the `count` images of the plot `path`: `path` itself for one, else
    <stem>_part01<ext>, <stem>_part02<ext>, ... (numbers padded to sort)."""
    if count == 1:
        return [path]
    stem, ext = os.path.splitext(path)
    digits = max(2, len(str(count)))
    return [f"{stem}_part{number:0{digits}d}{ext}" for number in range(1, count + 1)]


def figure_files(figure):
    """{".png": bytes, ".pdf": bytes} of one Figure (FORMATS): the PNG at DPI, the PDF vector (no creation
    date, so that the same figure gives the same file)."""
    png, pdf = io.BytesIO(), io.BytesIO()
    FigureCanvasAgg(figure).print_png(png, metadata={"Software": None})
    FigureCanvasPdf(figure).print_pdf(pdf, metadata={"CreationDate": None})
    return {".png": png.getvalue(), ".pdf": pdf.getvalue()}


FORMATS = (".png", ".pdf")  # the files of one figure, in figure_files' order


def write_figure(figure, paths):
    """Write the PNG and PDF of `figure` to `paths` (one per FORMATS entry), each atomically. Rendering is most
    of a figure's cost (about 0.5 s), so summarize runs this in worker processes."""
    for path, data in zip(paths, figure_files(figure).values()):
        files.write_bytes(path, data)


# ---------------------------------------------------------------------------------------------------------
# Interval plot: one panel per category (race), one row per series (experiment) in each, on one value axis


def interval_figures(title, value_label, categories, series, zero_line=False):
    """Interval plot figures: one panel per category (race) side by side, in each one row per series
    (experiment): its value a dot, [lo, hi] a whisker, one colour per series and the series labels on the left.
    At most ROWS_PER_PART series and PANELS_PER_PART categories an image (parts share the value axis; a series
    keeps its colour in every part).

    series: [(label, {category: (value, lo, hi)})]; lo = hi = NaN: a dot without whisker (n=1, no interval).
    Non-finite values are not drawn; the counts of both are written under the plot so that no gap goes
    unexplained.
    """
    series = [(str(label), {c: tuple(map(_number, v)) for c, v in by_category.items() if c in categories})
              for label, by_category in series]
    low, high = _value_range([x for _, by_category in series for v in by_category.values() if math.isfinite(v[0])
                              for x in v], zero_line)
    parts = [(c, s) for c in _chunks(len(categories), PANELS_PER_PART) for s in _chunks(len(series), ROWS_PER_PART)]
    return [_interval_figure(_part_title(title, number, len(parts)), value_label, [categories[i] for i in c],
                             [(series[i], PALETTE[i % len(PALETTE)]) for i in s], low, high, zero_line)
            for number, (c, s) in enumerate(parts, 1)]


def _interval_figure(title, value_label, categories, series, low, high, zero_line):
    points = [by_category[c] for (_, by_category), _ in series for c in categories if c in by_category]
    not_drawn = sum(not math.isfinite(v[0]) for v in points)
    whiskerless = sum(math.isfinite(v[0]) and (math.isnan(v[1]) or math.isnan(v[2])) for v in points)
    label_in = 0.2 + _char_in() * max([len(_cut(label)) for (label, _), _ in series] + [4])
    figure = _figure(2.2 * max(1, len(categories)), ROW_IN * max(3, len(series)), title,
                     _counts_notes(not_drawn, whiskerless), label_in)
    panels = figure.subplots(1, max(1, len(categories)), sharey=True, squeeze=False)[0]
    rows = np.arange(len(series))
    for panel, category in zip(panels, categories):
        panel.set_title(_cut(category, 30), fontsize=FONT_SIZE + 1)
        panel.set_xlim(low, high)
        panel.grid(axis="x", color="#e8e8e8")
        if zero_line and low < 0 < high:
            panel.axvline(0.0, color="#5a5a5a", linewidth=1.2)
        _draw_estimates(panel, rows, [by_category.get(category, (math.nan,) * 3) for (_, by_category), _ in series],
                        [colour for _, colour in series], low, high, horizontal=True)
        panel.set_xlabel(_cut(value_label, 40), fontsize=FONT_SIZE - 1)
        panel.tick_params(labelsize=FONT_SIZE - 1)
    panels[0].set_yticks(rows, [_cut(label) for (label, _), _ in series], fontsize=FONT_SIZE)
    for tick, (_, colour) in zip(panels[0].get_yticklabels(), series):
        tick.set_color(colour)
    panels[0].set_ylim(max(1, len(series)) - 0.5, -0.5)  # the first series on top
    return figure


# ---------------------------------------------------------------------------------------------------------
# Forest plot: one row per contrast, estimate and interval on a horizontal axis with its zero line


def forest_figures(title, x_label, rows):
    """Forest plot figures: one row per (label, estimate, lo, hi), the estimate a dot, [lo, hi] a horizontal
    whisker (an infinite end runs to the edge), a vertical line at zero, 'estimate [lo, hi]' written at the
    right; at most ROWS_PER_PART rows an image, all images on the same axis. A row with a non-finite estimate is
    listed with its label and value but not drawn; lo = hi = NaN: a dot without whisker (no interval)."""
    rows = [(str(label), *map(_number, (estimate, lo, hi))) for label, estimate, lo, hi in rows]
    low, high = _value_range([v for _, e, lo, hi in rows if math.isfinite(e) for v in (e, lo, hi)], True)
    chunks = _chunks(len(rows), ROWS_PER_PART)
    return [_forest_figure(_part_title(title, number, len(chunks)), x_label, [rows[i] for i in chunk], low, high)
            for number, chunk in enumerate(chunks, 1)]


def _forest_text(estimate, lo, hi):
    if not math.isfinite(estimate):
        return f"{format_number(estimate)}: not drawn"
    if math.isnan(lo) or math.isnan(hi):
        return f"{format_number(estimate)} (no interval)"
    return interval_text(estimate, lo, hi, 2)


def _forest_figure(title, x_label, rows, low, high):
    not_drawn = sum(not math.isfinite(e) for _, e, _, _ in rows)
    texts = [_forest_text(e, lo, hi) for _, e, lo, hi in rows]
    label_in = 0.2 + _char_in() * max([len(_cut(label, 90)) for label, *_ in rows] + [4])
    figure = _figure(8.0, ROW_IN * max(3, len(rows)), title,
                     [f"{not_drawn} row(s) with a non-finite estimate not drawn"] if not_drawn else [], label_in,
                     0.3 + _char_in(FONT_SIZE - 1) * max([len(t) for t in texts] + [4]))
    axes = figure.subplots()
    axes.set_xlim(low, high)
    axes.grid(axis="x", color="#e8e8e8")
    if low < 0 < high:
        axes.axvline(0.0, color="#5a5a5a", linewidth=1.2)
    positions = np.arange(len(rows))
    for row in positions[::2]:
        axes.axhspan(row - 0.5, row + 0.5, color="#f5f5f5", zorder=0)
    _draw_estimates(axes, positions, [point for _, *point in rows], [PALETTE[0]] * len(rows), low, high,
                    horizontal=True)
    axes.set_yticks(positions, [_cut(label, 90) for label, *_ in rows], fontsize=FONT_SIZE)
    right = axes.twinx()  # the values written at the right (a twin pickles for the worker processes)
    right.set_yticks(positions, texts, fontsize=FONT_SIZE - 1)
    for ticks in (axes.get_yticklabels(), right.get_yticklabels()):
        for tick, (_, estimate, _, _) in zip(ticks, rows):
            tick.set_color("black" if math.isfinite(estimate) else NOTE_COLOUR)
    for side in (axes, right):
        side.set_ylim(max(1, len(rows)) - 0.5, -0.5)
    axes.set_xlabel(_cut(x_label, 120), fontsize=FONT_SIZE)
    return figure


# ---------------------------------------------------------------------------------------------------------
# Dose response: categorical x (e.g. the under-sampling weight), one line per series (e.g. an architecture)


def _x_text(value):
    return f"{value:g}" if isinstance(value, (int, float, np.number)) else str(value)


def dose_response_figures(title, y_label, x_values, series, zero_line=True):
    """Line plot figures: x = `x_values`, categorical, in the order given; per series (line label -> one
    (y, lo, hi) per x) dots joined by a line, [lo, hi] whiskers, the series side by side around each x; a
    horizontal line at zero. More than X_PER_PART x values are split over parts on one value axis. A non-finite
    y is not drawn (the line breaks there) and counted under the plot; lo = hi = NaN: no whisker."""
    series = {str(label): [tuple(map(_number, point)) for point in points] for label, points in series.items()}
    for label, points in series.items():
        if len(points) != len(x_values):
            raise ValueError(f"dose-response series {label!r}: {len(points)} points for {len(x_values)} x values")
    low, high = _value_range([v for points in series.values() for p in points if math.isfinite(p[0]) for v in p],
                             zero_line)
    chunks = _chunks(len(x_values), X_PER_PART)
    return [_dose_response_figure(_part_title(title, number, len(chunks)), y_label, [x_values[i] for i in chunk],
                                  {label: [points[i] for i in chunk] for label, points in series.items()},
                                  low, high, zero_line)
            for number, chunk in enumerate(chunks, 1)]


def _dose_response_figure(title, y_label, x_values, series, low, high, zero_line):
    points = [p for line in series.values() for p in line]
    not_drawn = sum(not math.isfinite(y) for y, _, _ in points)
    whiskerless = sum(math.isfinite(y) and (math.isnan(lo) or math.isnan(hi)) for y, lo, hi in points)
    labels = [_cut(label) for label in series]
    figure = _figure(max(5.0, 0.8 * len(x_values)), 3.6, title, _counts_notes(not_drawn, whiskerless, "no interval"),
                     0.9, bottom_in=0.9 + 0.2 * len(labels))
    axes = figure.subplots()
    axes.set_ylim(low, high)
    axes.grid(axis="y", color="#e8e8e8")
    if zero_line and low < 0 < high:
        axes.axhline(0.0, color="#5a5a5a", linewidth=1.2)
    dodge = min(0.1, 0.6 / max(1, len(series)))  # x units between the series at one x
    for s, (label, line) in enumerate(series.items()):
        colour = PALETTE[s % len(PALETTE)]
        xs = np.arange(len(x_values)) + (s - (len(series) - 1) / 2) * dodge
        axes.plot(xs, [y if math.isfinite(y) else math.nan for y, _, _ in line], color=colour, linewidth=1.5,
                  label=labels[s])  # NaN breaks the line
        _draw_estimates(axes, xs, line, [colour] * len(line), low, high, horizontal=False)
    axes.set_xticks(np.arange(len(x_values)), [_cut(_x_text(x), 12) for x in x_values], fontsize=FONT_SIZE)
    axes.set_ylabel(_cut(y_label, 80), fontsize=FONT_SIZE)
    axes.legend(loc="upper left", bbox_to_anchor=(0.0, -0.6 / 3.6), fontsize=FONT_SIZE - 1, frameon=False)
    return figure
