"""racecomp.tables.plots: axis ticks, the PNG dot, forest and dose-response plots, and their width cap."""
import math
import os

import numpy as np
import pytest
from PIL import Image

from racecomp.tables.output import MANIFEST, Output
from racecomp.tables.plots import (MAX_WIDTH_PX, MIN_WIDTH_PX, PALETTE, _nice_ticks, forest_images, part_paths,
                                   plot_dose_response, plot_forest, plot_intervals)


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


def widths_and_colours(paths):
    """[(width, height, set of RGB colours)] of the PNGs at `paths`."""
    found = []
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG"
            found.append((image.width, image.height, {c for _, c in image.convert("RGB").getcolors(1 << 22)}))
    return found


def test_dot_plot_of_many_categories_or_runs_is_split_into_parts_at_most_max_width(tmp_path):
    categories = [f"race {i}" for i in range(200)]
    series = [(f"run {s}", {c: (float(i % 7), i % 7 - 1.0, i % 7 + 1.0) for i, c in enumerate(categories)})
              for s in range(3)]
    paths = plot_intervals(str(tmp_path / "wide.png"), "title", "y", categories, series)
    assert paths == part_paths(str(tmp_path / "wide.png"), len(paths)) and len(paths) > 1
    assert os.path.basename(paths[0]) == "wide_part01.png"
    found = widths_and_colours(paths)
    assert max(width for width, _, _ in found) <= MAX_WIDTH_PX
    assert all(colours & set(PALETTE[:3]) for _, _, colours in found)  # something drawn in every part
    assert set().union(*(colours for _, _, colours in found)) >= set(PALETTE[:3])  # each run, one colour
    races = ["White", "Black", "Indian", "East Asian", "Southeast Asian", "Middle Eastern", "Latino_Hispanic"]
    sweep = [(f"resnet50-minority-{s}-weight-0.{s}", {r: (30.0 + s / 100, 29.0, 31.0) for r in races})
             for s in range(182)]  # a 182-run sweep: once a 12,000 px wide image
    paths = plot_intervals(str(tmp_path / "sweep.png"), "t", "y", races, sweep)
    found = widths_and_colours(paths)
    assert max(width for width, _, _ in found) <= MAX_WIDTH_PX and all(c & set(PALETTE) for _, _, c in found)
    assert len(paths) <= 40
    assert plot_intervals(str(tmp_path / "small.png"), "t", "y", races, sweep[:2]) == [str(tmp_path / "small.png")]


def test_long_titles_and_labels_are_wrapped_or_cut_not_widened(tmp_path):
    series = [("x" * 500, {"White": (1.0, 0.0, 2.0)})]
    paths = plot_intervals(str(tmp_path / "p.png"), "word " * 200, "y" * 300, ["c" * 400], series)
    paths += plot_forest(str(tmp_path / "f.png"), "word " * 200, "x" * 400, [("l" * 500, 1.0, 0.0, 2.0)])
    paths += plot_dose_response(str(tmp_path / "d.png"), "word " * 200, "y", ["w" * 300], {"a" * 500: [(1, 0, 2)]})
    assert all(width <= MAX_WIDTH_PX for width, _, _ in widths_and_colours(paths))


def test_forest_plot_splits_long_lists_and_labels_rows_it_cannot_draw(tmp_path):
    rows = [(f"contrast {i}", i / 10 - 10, i / 10 - 11, i / 10 - 9) for i in range(200)]
    rows[3] = ("nan row", math.nan, math.nan, math.nan)
    rows[4] = ("inf row", math.inf, 0.0, math.inf)
    rows[5] = ("no interval", 1.0, math.nan, math.nan)
    rows[6] = ("unbounded above", 1.0, 0.5, math.inf)
    paths = plot_forest(str(tmp_path / "forest.png"), "Penalty per race", "difference (dB)", rows)
    assert len(paths) == 5  # 200 rows, at most FOREST_ROWS a part
    found = widths_and_colours(paths)
    assert all(width <= MAX_WIDTH_PX and PALETTE[0] in colours for width, _, colours in found)
    assert len({height for _, height, _ in found[1:]}) == 1  # equal parts (40 rows each)
    assert (200, 0, 0) in found[0][2]  # the note on the rows not drawn, in the first part only
    assert (200, 0, 0) not in found[1][2]
    assert plot_forest(str(tmp_path / "one.png"), "t", "x", rows[:3]) == [str(tmp_path / "one.png")]
    assert len(plot_forest(str(tmp_path / "empty.png"), "t", "x", [])) == 1


def test_dose_response_draws_each_series_and_caps_the_width(tmp_path):
    series = {"resnet50": [(-0.1, -0.3, 0.1), (-0.5, -0.8, -0.2), (math.nan, math.nan, math.nan), (-1.0, -1.2, -0.8)],
              "fastvit_sa24": [(0.0, math.nan, math.nan), (-0.2, -0.4, 0.0), (-0.6, -0.9, -0.3), (math.inf, 0, 1)]}
    paths = plot_dose_response(str(tmp_path / "dose.png"), "Penalty vs weight", "penalty (dB)",
                               [0.05, 0.1, 0.2, 0.5], series)
    assert paths == [str(tmp_path / "dose.png")]
    (width, _, colours), = widths_and_colours(paths)
    assert MIN_WIDTH_PX <= width <= MAX_WIDTH_PX and {PALETTE[0], PALETTE[1], (200, 0, 0)} <= colours
    many = {f"arch {a}": [(float(w), w - 1.0, w + 1.0) for w in range(200)] for a in range(3)}
    paths = plot_dose_response(str(tmp_path / "many.png"), "t", "y", list(range(200)), many)
    assert len(paths) > 1 and all(width <= MAX_WIDTH_PX for width, _, _ in widths_and_colours(paths))
    with pytest.raises(ValueError, match="3 points for 4 x values"):
        plot_dose_response(str(tmp_path / "bad.png"), "t", "y", [1, 2, 3, 4], {"a": [(1, 0, 2)] * 3})


def test_output_lists_every_part_of_a_split_plot_in_its_manifest(tmp_path):
    output = Output(str(tmp_path / "out"))
    categories = [f"c{i}" for i in range(40)]
    paths = output.plot("dots.png", "t", "y", categories, [("a", {c: (1.0, 0.0, 2.0) for c in categories})])
    paths += output.pngs("forest.png", forest_images("t", "x", [(f"r{i}", 1.0, 0.0, 2.0) for i in range(50)]))
    output.close()  # the whole set is written: INCOMPLETE.txt goes
    listed = (tmp_path / "out" / MANIFEST).read_text().splitlines()[1:]
    assert listed == [os.path.basename(p) for p in paths] == [
        "dots_part01.png", "dots_part02.png", "dots_part03.png", "forest_part01.png", "forest_part02.png"]
    assert sorted(os.listdir(tmp_path / "out")) == sorted(listed + [MANIFEST])
