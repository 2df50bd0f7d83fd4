"""PNG plots drawn with PIL: per-race dot plots with CI whiskers, forest plots of contrasts, dose-response lines.

Every image is at most MAX_WIDTH_PX wide whatever the number of runs (height is free): a plot that would be
wider is split into parts, written as <stem>_part01.png, <stem>_part02.png, ... (a plot of one part keeps
<stem>.png; part_paths), all parts of one plot on one value axis so that they compare. The `*_images`
functions render (PIL images, nothing written); write_pngs writes them; the `plot_*` functions do both.
"""
import io
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from racecomp import files
from racecomp.tables.formatting import cell_magnitude, format_number, interval_text

PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
MAX_WIDTH_PX = 2400  # widest image written: a 182-run sweep once gave 12,000 px PNGs no viewer shows whole
MIN_WIDTH_PX = 640
FOREST_ROWS = 40  # rows of a forest plot per image
LEFT, RIGHT, TOP = 96, 24, 56  # px: value-axis margin, right margin, top of the plot area below a 1-line title
PLOT_HEIGHT = 360  # px: the value axis of a dot or dose-response plot
SLOT = 60  # px per series in a category of a dot plot
CATEGORY_MIN = 120  # px: narrowest category of a dot plot
NOTE_COLOUR = (200, 0, 0)


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only its fixed bitmap font
        return ImageFont.load_default()


def _text_size(text, font):
    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    return box[2] - box[0], box[3] - box[1]


def _fit(text, font, width):
    """`text`, cut with '...' to at most `width` px."""
    if _text_size(text, font)[0] <= width:
        return text
    while text and _text_size(text + "...", font)[0] > width:
        text = text[:-1]
    return text + "..."


def _wrap(text, font, width):
    """`text` broken at spaces into lines of at most `width` px (a word too long alone is cut)."""
    lines = []
    for word in text.split(" "):
        if lines and _text_size(f"{lines[-1]} {word}", font)[0] <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(_fit(word, font, width))
    return lines or [""]


def _number(value):
    """float(value); None or '' (a blank CSV cell) as NaN."""
    return math.nan if value is None or value == "" else float(value)


def _nice_ticks(low, high, count=6):
    span = high - low
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    while first + len(ticks) * step <= high + 1e-12 * span:
        ticks.append(first + len(ticks) * step)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) + (1 if step / magnitude == 2.5 else 0)
    return ticks, decimals


def _value_range(values, zero):
    """(low, high) of the value axis: the finite `values` (and 0 when `zero`), padded by 12%."""
    bounds = [v for v in values if math.isfinite(v)] + ([0.0] if zero else [])
    low, high = (min(bounds), max(bounds)) if bounds else (0.0, 1.0)
    pad = (high - low) * 0.12 if high > low else max(abs(high) * 0.05, 1e-3)
    return low - pad, high + pad


def _chunks(count, parts):
    """range(count) in `parts` consecutive runs of sizes differing by at most one ([[]] for nothing)."""
    return [list(chunk) for chunk in np.array_split(np.arange(count), max(1, parts))] if count else [[]]


def _part_title(title, number, parts):
    return title if parts == 1 else f"{title} (part {number} of {parts})"


def _title(draw, title, font, width):
    """Draw the title (wrapped to the image) and return the top of what goes below it."""
    lines = _wrap(title, font, width - LEFT - RIGHT)
    for i, line in enumerate(lines):
        draw.text((LEFT, 14 + 18 * i), line, fill="black", font=font)
    return TOP + 18 * (len(lines) - 1)


def _title_height(title, font, width):
    return 18 * (len(_wrap(title, font, width - LEFT - RIGHT)) - 1)


def _value_axis(image, draw, low, high, top, x_end, y_label, zero_line, font, small):
    """Horizontal grid lines, tick labels and the rotated label of a vertical value axis; returns y_of."""
    def y_of(value):
        return top + PLOT_HEIGHT * (high - min(max(value, low), high)) / (high - low)

    ticks, decimals = _nice_ticks(low, high)
    for tick in ticks:
        label = f"{tick:.{decimals}f}"
        draw.line([(LEFT, y_of(tick)), (x_end, y_of(tick))], fill=(232, 232, 232))
        draw.text((LEFT - 8 - _text_size(label, small)[0], y_of(tick) - 7), label, fill="black", font=small)
    if zero_line and low < 0 < high:
        draw.line([(LEFT, y_of(0.0)), (x_end, y_of(0.0))], fill=(90, 90, 90), width=2)
    draw.rectangle([LEFT, top, x_end, top + PLOT_HEIGHT], outline="black")
    y_label = _fit(y_label, font, PLOT_HEIGHT)
    axis_text = Image.new("RGB", (_text_size(y_label, font)[0] + 8, 22), "white")
    ImageDraw.Draw(axis_text).text((4, 2), y_label, fill="black", font=font)
    rotated = axis_text.rotate(90, expand=True)
    image.paste(rotated, (6, top + max(0, (PLOT_HEIGHT - rotated.height) // 2)))
    return y_of


def _canvas(title, y_label, plot_width, labels, low, high, zero_line, font, small):
    """(image, draw, top, y_of) of a plot with a value axis: title, plot area `plot_width` px wide, room below for
    the x labels, one legend line per label and up to two notes; at most MAX_WIDTH_PX wide."""
    width = min(MAX_WIDTH_PX, max(MIN_WIDTH_PX, LEFT + RIGHT + plot_width, _legend_width(labels, small),
                                  LEFT + _text_size(title, font)[0] + 20))
    top = TOP + _title_height(title, font, width)
    image = Image.new("RGB", (width, top + PLOT_HEIGHT + 50 + 20 * len(labels) + 40), "white")
    draw = ImageDraw.Draw(image)
    _title(draw, title, font, width)
    y_of = _value_axis(image, draw, low, high, top, LEFT + plot_width, y_label, zero_line, font, small)
    return image, draw, top, y_of


def _legend(draw, y, labels, colours, font, width):
    """One coloured dot and label a line, from `y`; returns the y below it."""
    for label, colour in zip(labels, colours):
        draw.ellipse([LEFT, y + 4, LEFT + 10, y + 14], fill=colour)
        draw.text((LEFT + 18, y), _fit(label, font, width - LEFT - 18 - RIGHT), fill="black", font=font)
        y += 20
    return y


def _notes(draw, y, notes, font, width):
    for note in notes:
        draw.text((LEFT, y + 4), _fit(note, font, width - LEFT - RIGHT), fill=NOTE_COLOUR, font=font)
        y += 20


def _legend_width(labels, font):
    return LEFT + 18 + max([_text_size(label, font)[0] for label in labels] + [0]) + RIGHT


def _whisker(draw, x, y_lo, y_hi, colour):
    draw.line([(x, y_lo), (x, y_hi)], fill=colour, width=2)
    for y in (y_lo, y_hi):
        draw.line([(x - 5, y), (x + 5, y)], fill=colour, width=2)


def _dot(draw, x, y, colour):
    draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour)


def part_paths(path, count):
    """The file of each of the `count` images of the plot `path`: `path` itself for one, else
    <stem>_part01<ext>, <stem>_part02<ext>, ... (numbers padded to sort)."""
    if count == 1:
        return [path]
    stem, ext = os.path.splitext(path)
    digits = max(2, len(str(count)))
    return [f"{stem}_part{number:0{digits}d}{ext}" for number in range(1, count + 1)]


def png_bytes(image):
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    return encoded.getvalue()


def write_pngs(path, images):
    """Write the images of one plot (part_paths), each atomically; returns their paths."""
    paths = part_paths(path, len(images))
    for part, image in zip(paths, images):
        files.write_bytes(part, png_bytes(image))
    return paths


# ---------------------------------------------------------------------------------------------------------
# Dot plot: categories (races) on x, one dot per series (experiment) in each


def _dot_plot_parts(n_categories, n_series):
    """(category chunks, series chunks) so that every image fits MAX_WIDTH_PX: all categories in one image
    when they fit (then as many series as fit beside each other), else as few category chunks as fit."""
    usable = MAX_WIDTH_PX - LEFT - RIGHT
    category_parts = math.ceil(n_categories / (usable // CATEGORY_MIN)) if n_categories else 1
    per_image = math.ceil(n_categories / category_parts) if n_categories else 1
    series_fit = max(1, (usable // per_image - 20) // SLOT)
    return _chunks(n_categories, category_parts), _chunks(n_series, math.ceil(n_series / series_fit))


def interval_images(title, y_label, categories, series, zero_line=False):
    """Dot plot images: x = categories (races), per category one dot per series (experiment) with its [lo, hi]
    whisker and its value printed above (tables.formatting); one colour per series, legend below. Split into
    parts of MAX_WIDTH_PX (_dot_plot_parts), every part on the same value axis, a series in the same colour in
    every part.

    series: [(label, {category: (value, lo, hi)})]; lo = hi = NaN: a dot without whisker (n=1, no interval).
    Non-finite values are not drawn; the counts of both are printed under the plot so that no gap goes
    unexplained.
    """
    values = [tuple(map(_number, v)) for _, by_category in series for c, v in by_category.items() if c in categories]
    low, high = _value_range([x for v in values if math.isfinite(v[0]) for x in v], zero_line)
    category_chunks, series_chunks = _dot_plot_parts(len(categories), len(series))
    parts = [(c, s) for c in category_chunks for s in series_chunks]
    return [_interval_image(_part_title(title, number, len(parts)), y_label, [categories[i] for i in c],
                            [series[i] for i in s], [PALETTE[i % len(PALETTE)] for i in s], low, high, zero_line)
            for number, (c, s) in enumerate(parts, 1)]


def _interval_image(title, y_label, categories, series, colours, low, high, zero_line):
    font, small = _font(14), _font(12)
    points = [(s, c, tuple(map(_number, v))) for s, (_, by_category) in enumerate(series)
              for c, v in by_category.items() if c in categories]
    finite = [(s, c, v) for s, c, v in points if math.isfinite(v[0])]
    whiskerless = sum(not (math.isfinite(v[1]) and math.isfinite(v[2])) for _, _, v in finite)
    category_width = max(CATEGORY_MIN, SLOT * len(series) + 20)
    labels = [label for label, _ in series]
    image, draw, top, y_of = _canvas(title, y_label, category_width * len(categories), labels, low, high, zero_line,
                                     font, small)
    for column, category in enumerate(categories):
        x0 = LEFT + column * category_width
        label = _fit(category, font, category_width - 8)
        draw.text((x0 + (category_width - _text_size(label, font)[0]) / 2, top + PLOT_HEIGHT + 8), label,
                  fill="black", font=font)
        if column:
            draw.line([(x0, top), (x0, top + PLOT_HEIGHT)], fill=(200, 200, 200))
    first_x = (category_width - SLOT * len(series)) / 2 + SLOT / 2
    for s, category, (value, lo, hi) in finite:
        x = LEFT + categories.index(category) * category_width + first_x + s * SLOT
        colour = colours[s]
        whisker = math.isfinite(lo) and math.isfinite(hi)
        if whisker:
            _whisker(draw, x, y_of(lo), y_of(hi), colour)
        _dot(draw, x, y_of(value), colour)
        text = format_number(value, cell_magnitude(value, lo, hi))
        draw.text((x - _text_size(text, small)[0] / 2, y_of(hi if whisker else value) - 20), text, fill=colour,
                  font=small)
    width = image.width
    y = _legend(draw, top + PLOT_HEIGHT + 40, labels, colours, small, width)
    _notes(draw, y, ([f"{len(points) - len(finite)} non-finite value(s) not drawn"] if len(finite) < len(points)
                     else []) + ([f"{whiskerless} value(s) without whiskers (n=1: no interval)"] if whiskerless
                                 else []), small, width)
    return image


def plot_intervals(path, title, y_label, categories, series, zero_line=False):
    """Write the dot plot of interval_images; returns the paths written (part_paths)."""
    return write_pngs(path, interval_images(title, y_label, categories, series, zero_line))


# ---------------------------------------------------------------------------------------------------------
# Forest plot: one row per contrast, estimate and interval on a horizontal axis with its zero line


def forest_images(title, x_label, rows):
    """Forest plot images: one row per (label, estimate, lo, hi), the estimate a dot, [lo, hi] a horizontal
    whisker (an infinite end runs to the edge), a vertical line at zero, 'estimate [lo, hi]' written at the
    right; at most FOREST_ROWS rows an image, all images on the same axis. A row with a non-finite estimate is
    listed with its label and value but not drawn; lo = hi = NaN: a dot without whisker (no interval)."""
    rows = [(str(label), *map(_number, (estimate, lo, hi))) for label, estimate, lo, hi in rows]
    low, high = _value_range([v for _, e, lo, hi in rows if math.isfinite(e) for v in (e, lo, hi)], True)
    chunks = _chunks(len(rows), math.ceil(len(rows) / FOREST_ROWS))
    return [_forest_image(_part_title(title, number, len(chunks)), x_label, [rows[i] for i in chunk], low, high)
            for number, chunk in enumerate(chunks, 1)]


def _forest_image(title, x_label, rows, low, high):
    font, small = _font(14), _font(12)
    row_height, plot_width, gap = 26, 1000, 20
    texts = [f"{format_number(e)}: not drawn" if not math.isfinite(e) else interval_text(e, lo, hi, 2)
             if not (math.isnan(lo) or math.isnan(hi)) else f"{format_number(e)} (no interval)"
             for _, e, lo, hi in rows]
    label_width = min(900, max([_text_size(label, font)[0] for label, *_ in rows] + [0]))
    text_width = min(300, max([_text_size(text, small)[0] for text in texts] + [0]))
    x0 = 16 + label_width + gap  # left edge of the plot area
    width = min(MAX_WIDTH_PX, max(MIN_WIDTH_PX, x0 + plot_width + gap + text_width + RIGHT))
    top = TOP + _title_height(title, font, width)
    bottom = top + row_height * max(1, len(rows))
    not_drawn = sum(not math.isfinite(e) for _, e, _, _ in rows)
    height = bottom + 70 + (20 if not_drawn else 0)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    _title(draw, title, font, width)

    def x_of(value):
        return x0 + plot_width * (min(max(value, low), high) - low) / (high - low)

    ticks, decimals = _nice_ticks(low, high)
    for i in range(0, len(rows), 2):
        draw.rectangle([x0, top + i * row_height, x0 + plot_width, top + (i + 1) * row_height], fill=(245, 245, 245))
    for tick in ticks:
        label = f"{tick:.{decimals}f}"
        draw.line([(x_of(tick), top), (x_of(tick), bottom)], fill=(225, 225, 225))
        draw.text((x_of(tick) - _text_size(label, small)[0] / 2, bottom + 6), label, fill="black", font=small)
    if low < 0 < high:
        draw.line([(x_of(0.0), top), (x_of(0.0), bottom)], fill=(90, 90, 90), width=2)
    draw.rectangle([x0, top, x0 + plot_width, bottom], outline="black")
    label = _fit(x_label, font, plot_width)
    draw.text((x0 + (plot_width - _text_size(label, font)[0]) / 2, bottom + 26), label, fill="black", font=font)
    colour = PALETTE[0]
    for i, ((label, estimate, lo, hi), text) in enumerate(zip(rows, texts)):
        y = top + (i + 0.5) * row_height
        drawn = math.isfinite(estimate)
        draw.text((16, y - 8), _fit(label, font, label_width), fill="black" if drawn else NOTE_COLOUR, font=font)
        draw.text((x0 + plot_width + gap, y - 7), _fit(text, small, text_width), fill="black" if drawn
                  else NOTE_COLOUR, font=small)
        if not drawn:
            continue
        if not (math.isnan(lo) or math.isnan(hi)):
            draw.line([(x_of(lo), y), (x_of(hi), y)], fill=colour, width=2)
            for end in (lo, hi):
                if math.isfinite(end):
                    draw.line([(x_of(end), y - 5), (x_of(end), y + 5)], fill=colour, width=2)
        _dot(draw, x_of(estimate), y, colour)
    if not_drawn:
        _notes(draw, bottom + 46, [f"{not_drawn} row(s) with a non-finite estimate not drawn"], small, width)
    return image


def plot_forest(path, title, x_label, rows):
    """Write the forest plot of forest_images; returns the paths written (part_paths)."""
    return write_pngs(path, forest_images(title, x_label, rows))


# ---------------------------------------------------------------------------------------------------------
# Dose response: categorical x (e.g. the under-sampling weight), one line per series (e.g. an architecture)


def _x_text(value):
    return f"{value:g}" if isinstance(value, (int, float, np.number)) else str(value)


def dose_response_images(title, y_label, x_values, series, zero_line=True):
    """Line plot images: x = `x_values`, categorical, in the order given; per series (line label -> one
    (y, lo, hi) per x) dots joined by a line, [lo, hi] whiskers, the series side by side around each x; a
    horizontal line at zero. Too many x values for MAX_WIDTH_PX are split over parts on one value axis. A
    non-finite y is not drawn (the line breaks there) and counted under the plot; lo = hi = NaN: no whisker."""
    series = {str(label): [tuple(map(_number, point)) for point in points] for label, points in series.items()}
    for label, points in series.items():
        if len(points) != len(x_values):
            raise ValueError(f"dose-response series {label!r}: {len(points)} points for {len(x_values)} x values")
    low, high = _value_range([v for points in series.values() for p in points if math.isfinite(p[0]) for v in p],
                             zero_line)
    usable = MAX_WIDTH_PX - LEFT - RIGHT
    spacing_min, spacing_max = 60, 160
    chunks = _chunks(len(x_values), math.ceil(len(x_values) / (usable // spacing_min)))
    spacing = max(spacing_min, min(spacing_max, usable // max(1, max(len(c) for c in chunks))))
    return [_dose_response_image(_part_title(title, number, len(chunks)), y_label, [x_values[i] for i in chunk],
                                 {label: [points[i] for i in chunk] for label, points in series.items()},
                                 low, high, spacing, zero_line)
            for number, chunk in enumerate(chunks, 1)]


def _dose_response_image(title, y_label, x_values, series, low, high, spacing, zero_line):
    font, small = _font(14), _font(12)
    labels = list(series)
    image, draw, top, y_of = _canvas(title, y_label, spacing * len(x_values), labels, low, high, zero_line, font,
                                     small)
    for i, x in enumerate(x_values):
        text = _fit(_x_text(x), font, spacing - 6)
        draw.text((LEFT + (i + 0.5) * spacing - _text_size(text, font)[0] / 2, top + PLOT_HEIGHT + 8), text,
                  fill="black", font=font)
    dodge = min(10.0, 0.6 * spacing / max(1, len(labels)))  # px between the series at one x
    not_drawn = whiskerless = 0
    for s, label in enumerate(labels):
        colour = PALETTE[s % len(PALETTE)]
        xs = [LEFT + (i + 0.5) * spacing + (s - (len(labels) - 1) / 2) * dodge for i in range(len(x_values))]
        points = series[label]
        for i in range(len(points) - 1):
            if math.isfinite(points[i][0]) and math.isfinite(points[i + 1][0]):
                draw.line([(xs[i], y_of(points[i][0])), (xs[i + 1], y_of(points[i + 1][0]))], fill=colour, width=2)
        for x, (y, lo, hi) in zip(xs, points):
            if not math.isfinite(y):
                not_drawn += 1
                continue
            if math.isfinite(lo) and math.isfinite(hi):
                _whisker(draw, x, y_of(lo), y_of(hi), colour)
            else:
                whiskerless += 1
            _dot(draw, x, y_of(y), colour)
    width = image.width
    y = _legend(draw, top + PLOT_HEIGHT + 40, labels, PALETTE * (len(labels) // len(PALETTE) + 1), small, width)
    _notes(draw, y, ([f"{not_drawn} non-finite value(s) not drawn"] if not_drawn else [])
           + ([f"{whiskerless} value(s) without whiskers (no interval)"] if whiskerless else []), small, width)
    return image


def plot_dose_response(path, title, y_label, x_values, series):
    """Write the dose-response plot of dose_response_images (zero line drawn); returns the paths written."""
    return write_pngs(path, dose_response_images(title, y_label, x_values, series))
