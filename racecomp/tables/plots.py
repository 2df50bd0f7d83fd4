"""PNG dot plots with CI whiskers, drawn with PIL."""
import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from racecomp import files
from racecomp.tables.formatting import cell_magnitude, format_number

PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only its fixed bitmap font
        return ImageFont.load_default()


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


def plot_intervals(path, title, y_label, categories, series, zero_line=False):
    """Write a PNG dot plot: x = categories (races), per category one dot per series (experiment) with its
    [lo, hi] whisker and its value printed above (tables.formatting); one colour per series, legend below.

    series: [(label, {category: (value, lo, hi)})]; lo = hi = NaN: a dot without whisker (n=1, no interval).
    Non-finite values are not drawn; the counts of both are printed under the plot so that no gap goes
    unexplained.
    """
    font, small = _font(14), _font(12)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_size(text, which):
        box = measure.textbbox((0, 0), text, font=which)
        return box[2] - box[0], box[3] - box[1]

    points = [(s, c, v) for s, (_, values) in enumerate(series) for c, v in values.items() if c in categories]
    finite = [(s, c, v) for s, c, v in points if np.isfinite(v[0])]
    whiskerless = sum(not (np.isfinite(v[1]) and np.isfinite(v[2])) for _, _, v in finite)
    slot = 60
    category_width = max(120, slot * len(series) + 20)
    left, right, top, plot_height = 96, 24, 56, 360
    legend_width = max([text_size(label, small)[0] for label, _ in series] + [0]) + 60
    width = max(640, left + right + category_width * len(categories), left + legend_width,
                left + text_size(title, font)[0] + 20)
    height = top + plot_height + 50 + 20 * len(series) + 40  # legend, then up to two notes
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 14), title, fill="black", font=font)
    bounds = [x for _, _, v in finite for x in v if np.isfinite(x)] + ([0.0] if zero_line else [])
    low, high = (min(bounds), max(bounds)) if bounds else (0.0, 1.0)
    pad = (high - low) * 0.12 if high > low else max(abs(high) * 0.05, 1e-3)
    low, high = low - pad, high + pad

    def y_of(value):
        return top + plot_height * (high - value) / (high - low)

    x_end = left + category_width * len(categories)
    ticks, tick_decimals = _nice_ticks(low, high)
    for tick in ticks:
        y = y_of(tick)
        draw.line([(left, y), (x_end, y)], fill=(232, 232, 232))
        label = f"{tick:.{tick_decimals}f}"
        draw.text((left - 8 - text_size(label, small)[0], y - 7), label, fill="black", font=small)
    if zero_line and low < 0 < high:
        draw.line([(left, y_of(0.0)), (x_end, y_of(0.0))], fill=(90, 90, 90), width=2)
    draw.rectangle([left, top, x_end, top + plot_height], outline="black")
    axis_text = Image.new("RGB", (text_size(y_label, font)[0] + 8, 22), "white")
    ImageDraw.Draw(axis_text).text((4, 2), y_label, fill="black", font=font)
    rotated = axis_text.rotate(90, expand=True)
    image.paste(rotated, (6, top + max(0, (plot_height - rotated.height) // 2)))
    for column, category in enumerate(categories):
        x0 = left + column * category_width
        label_width = text_size(category, font)[0]
        draw.text((x0 + (category_width - label_width) / 2, top + plot_height + 8), category, fill="black",
                  font=font)
        if column:
            draw.line([(x0, top), (x0, top + plot_height)], fill=(200, 200, 200))
    first_x = (category_width - slot * len(series)) / 2 + slot / 2
    for s, category, (value, lo, hi) in finite:
        x = left + categories.index(category) * category_width + first_x + s * slot
        colour = PALETTE[s % len(PALETTE)]
        whisker = np.isfinite(lo) and np.isfinite(hi)
        if whisker:
            draw.line([(x, y_of(lo)), (x, y_of(hi))], fill=colour, width=2)
            for end in (lo, hi):
                draw.line([(x - 5, y_of(end)), (x + 5, y_of(end))], fill=colour, width=2)
        draw.ellipse([x - 5, y_of(value) - 5, x + 5, y_of(value) + 5], fill=colour)
        text = format_number(value, cell_magnitude(value, lo, hi))
        draw.text((x - text_size(text, small)[0] / 2, y_of(hi if whisker else value) - 20), text, fill=colour,
                  font=small)
    y = top + plot_height + 40
    for s, (label, _) in enumerate(series):
        colour = PALETTE[s % len(PALETTE)]
        draw.ellipse([left, y + 4, left + 10, y + 14], fill=colour)
        draw.text((left + 18, y), label, fill="black", font=small)
        y += 20
    notes = ([f"{len(points) - len(finite)} non-finite value(s) not drawn"] if len(finite) < len(points) else []) + \
        ([f"{whiskerless} value(s) without whiskers (n=1: no interval)"] if whiskerless else [])
    for note in notes:
        draw.text((left, y + 4), note, fill=(200, 0, 0), font=small)
        y += 20
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    files.write_bytes(path, encoded.getvalue())
