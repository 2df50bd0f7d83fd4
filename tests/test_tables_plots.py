"""racecomp.tables.plots: axis ticks and the PNG dot plot."""
import math

import numpy as np
import pytest
from PIL import Image

from racecomp.tables.plots import PALETTE, _nice_ticks, plot_intervals


@pytest.mark.parametrize("low, high, ticks, decimals", [
    (0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], 1),
    (0.0, 25.0, [0.0, 5.0, 10.0, 15.0, 20.0, 25.0], 0),
    (0.0, 1.5, [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5], 2),  # a 2.5 step needs one more decimal
])
def test_nice_ticks(low, high, ticks, decimals):
    got, got_decimals = _nice_ticks(low, high)
    assert got == pytest.approx(ticks) and got_decimals == decimals


def test_plot_intervals_draws_finite_points_and_skips_the_rest(tmp_path):
    path = tmp_path / "plot.png"
    series = [("a", {"White": (-1.0, -1.5, -0.5), "Black": (0.5, 0.0, 1.0)}),
              ("b", {"White": (math.nan, math.nan, math.nan), "Black": (0.2, -0.1, 0.4)})]
    plot_intervals(str(path), "title", "difference (dB)", ["White", "Black"], series, zero_line=True)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 640 and image.height >= 400
        colours = {colour for _, colour in image.convert("RGB").getcolors(1 << 20)}
    assert PALETTE[0] in colours and PALETTE[1] in colours
    assert not [p for p in tmp_path.iterdir() if p.name != "plot.png"]  # no temporary file left


def column_of_colour(image, colour):
    """(top, bottom) rows of the pixels of `colour`."""
    pixels = np.argwhere(np.all(np.asarray(image.convert("RGB")) == colour, axis=-1))
    return pixels[:, 0].min(), pixels[:, 0].max()


def test_a_value_without_interval_is_a_dot_without_whisker(tmp_path):
    # n=1: lo = hi = NaN. The dot (10 px) and its value label above it are drawn; no whisker spans a range.
    series = [("one seed", {"White": (30.0, math.nan, math.nan)}), ("two", {"White": (31.0, 29.0, 33.0)})]
    plot_intervals(str(tmp_path / "one.png"), "t", "y", ["White"], series)
    with Image.open(tmp_path / "one.png") as image:
        top, bottom = column_of_colour(image.crop((96, 56, 640, 416)), PALETTE[0])
        whisker_top, whisker_bottom = column_of_colour(image.crop((96, 56, 640, 416)), PALETTE[1])
    assert bottom - top < 30 and whisker_bottom - whisker_top > 100
