"""racecomp.tables.plots: what each matplotlib figure draws (read back from the Figure), its parts and width cap,
and the PNG and PDF files written from it."""
import math
import os
import subprocess
import sys

import pytest
from matplotlib.colors import to_hex
from PIL import Image

from racecomp.tables.output import MANIFEST, Output
from racecomp.tables.plots import (DPI, FONT_SIZE, MAX_WIDTH_PX, NOTE_COLOUR, PALETTE, ROWS_PER_PART,
                                   dose_response_figures, figure_files, forest_figures, interval_figures, part_paths)

RACES = ["White", "Black", "Indian", "East Asian", "Southeast Asian", "Middle Eastern", "Latino_Hispanic"]


def estimates(axes):
    """[(x, y, whisker (lo, hi) or None, colour)] of the dots drawn in `axes` (value axis horizontal)."""
    whiskers = {}
    for collection in [c for c in axes.collections if c.get_gid() == "whiskers"]:
        for start, end in collection.get_segments():
            whiskers[start[1]] = (start[0], end[0])
    return [(float(x), float(y), whiskers.get(y), to_hex(colour))
            for collection in axes.collections if collection.get_gid() == "estimates"
            for (x, y), colour in zip(collection.get_offsets(), collection.get_facecolors())]


def notes(figure):
    """The red notes under a figure (what was not drawn, and why), one a line."""
    return [line for t in figure.texts if to_hex(t.get_color()) == NOTE_COLOUR for line in t.get_text().splitlines()]


def width_px(figure):
    return figure.get_size_inches()[0] * DPI


def test_interval_figure_draws_each_value_in_its_race_panel_and_row():
    series = [("a", {"White": (-1.0, -1.5, -0.5), "Black": (0.5, 0.0, 1.0)}),
              ("b", {"White": (math.nan, math.nan, math.nan), "Black": (0.2, math.nan, math.nan)})]
    (figure,) = interval_figures("title", "difference (dB)", ["White", "Black"], series, zero_line=True)
    white, black = figure.axes
    assert (white.get_title(), black.get_title()) == ("White", "Black")
    assert estimates(white) == [(-1.0, 0.0, (-1.5, -0.5), PALETTE[0])]  # NaN value: not drawn
    assert estimates(black) == [(0.5, 0.0, (0.0, 1.0), PALETTE[0]), (0.2, 1.0, None, PALETTE[1])]  # n=1: no whisker
    assert [t.get_text() for t in white.get_yticklabels()] == ["a", "b"]
    assert [to_hex(t.get_color()) for t in white.get_yticklabels()] == list(PALETTE[:2])  # labels coloured as the dots
    assert white.get_xlim() == black.get_xlim() and white.get_xlim()[0] < -1.5 and black.get_xlim()[1] > 1.0
    assert [line.get_xdata()[0] for line in white.lines if line.get_linestyle() == "-" and
            len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1]] == [0.0]  # the zero line
    assert notes(figure) == ["1 non-finite value(s) not drawn", "1 value(s) without whiskers (n=1: no interval)"]


def test_interval_plot_of_a_182_run_sweep_is_a_few_readable_parts_on_one_axis():
    sweep = [(f"resnet50-minority-{s}-weight-0.{s}", {r: (30.0 + s / 100, 29.0 + s / 100, 31.0) for r in RACES})
             for s in range(182)]  # a 182-run sweep: once a 12,000 px wide image, or 37 parts of 5 runs
    figures = interval_figures("title", "PSNR-Y (dB)", RACES, sweep)
    assert len(figures) == math.ceil(182 / ROWS_PER_PART)
    assert all(width_px(f) <= MAX_WIDTH_PX and len(f.axes) == len(RACES) for f in figures)
    assert {f.axes[0].get_xlim() for f in figures} == {figures[0].axes[0].get_xlim()}  # parts compare
    rows = [t.get_text() for f in figures for t in f.axes[0].get_yticklabels()]
    assert rows == [label for label, _ in sweep]  # every run once, in order
    assert all(t.get_fontsize() >= FONT_SIZE for f in figures for t in f.axes[0].get_yticklabels())
    drawn = [(y, x, colour) for f in figures for y, x, _, colour in estimates(f.axes[1])]  # Black
    assert [x for x, _, _ in drawn] == pytest.approx([30.0 + s / 100 for s in range(182)])
    assert [c for _, _, c in drawn] == [PALETTE[s % len(PALETTE)] for s in range(182)]
    categories = [f"race {i}" for i in range(20)]  # many categories: split by panels too
    figures = interval_figures("t", "y", categories, [("a", {c: (1.0, 0.0, 2.0) for c in categories})])
    assert [len(f.axes) for f in figures] == [7, 7, 6]
    assert all(width_px(f) <= MAX_WIDTH_PX for f in figures)


def test_long_titles_and_labels_are_wrapped_or_cut_not_widened():
    figures = interval_figures("word " * 200, "y" * 300, ["c" * 400], [("x" * 500, {"c" * 400: (1.0, 0.0, 2.0)})])
    figures += forest_figures("word " * 200, "x" * 400, [("l" * 500, 1.0, 0.0, 2.0)])
    figures += dose_response_figures("word " * 200, "y", ["w" * 300], {"a" * 500: [(1, 0, 2)]})
    assert all(width_px(f) <= MAX_WIDTH_PX for f in figures)
    assert all(f._suptitle.get_text().count("\n") <= 2 for f in figures)
    assert len(figures[0].axes[0].get_yticklabels()[0].get_text()) < 100


def test_forest_plot_splits_long_lists_and_labels_rows_it_cannot_draw():
    rows = [(f"contrast {i}", i / 10 - 10, i / 10 - 11, i / 10 - 9) for i in range(200)]
    rows[3] = ("nan row", math.nan, math.nan, math.nan)
    rows[4] = ("inf row", math.inf, 0.0, math.inf)
    rows[5] = ("no interval", 1.0, math.nan, math.nan)
    rows[6] = ("unbounded above", 1.0, 0.5, math.inf)
    figures = forest_figures("Penalty per race", "difference (dB)", rows)
    assert len(figures) == 5 and all(width_px(f) <= MAX_WIDTH_PX for f in figures)
    first = figures[0].axes[0]
    labels = [t.get_text() for t in first.get_yticklabels()]
    assert labels[:7] == ["contrast 0", "contrast 1", "contrast 2", "nan row", "inf row", "no interval",
                          "unbounded above"]
    assert [to_hex(t.get_color()) for t in first.get_yticklabels()][2:5] == ["#000000", "#c80000", "#c80000"]
    drawn = {y: (x, whisker) for x, y, whisker, _ in estimates(first)}
    assert 3 not in drawn and 4 not in drawn  # non-finite estimates: listed, not drawn
    assert drawn[0] == (-10.0, (-11.0, -9.0)) and drawn[5] == (1.0, None)
    assert drawn[6][1] == (0.5, first.get_xlim()[1])  # an infinite end runs to the edge, without a cap
    caps = [c for c in first.collections if c.get_gid() == "caps"]
    assert [tuple(xy) for xy in caps[0].get_offsets() if xy[1] == 6] == [(0.5, 6.0)]
    right = [t.get_text() for t in figures[0].axes[1].get_yticklabels()]
    assert right[0] == "-10.0 [-11.0, -9.0]" and right[5] == "1.00 (no interval)" and right[3] == "nan: not drawn"
    assert notes(figures[0]) == ["2 non-finite value(s) not drawn", "1 value(s) without whiskers (no interval)"]
    assert not notes(figures[1])
    assert len(forest_figures("t", "x", [])) == 1


def lines(axes):
    """{label: [(x, y)]} of the lines drawn in `axes` (NaN y: a break), and {colour: [(x, lo, hi)]} of the whiskers."""
    drawn = {line.get_label(): list(zip(line.get_xdata(), line.get_ydata())) for line in axes.lines
             if line.get_gid() == "estimates"}
    whiskers = {}
    for collection in axes.collections:
        for (x, lo), (_, hi) in collection.get_segments():
            whiskers.setdefault(to_hex(collection.get_colors()[0]), []).append((x, lo, hi))
    return drawn, whiskers


def test_dose_response_draws_a_line_per_series_over_the_doses_with_whiskers():
    series = {"resnet50": [(-0.1, -0.3, 0.1), (-0.5, -0.8, -0.2), (math.nan, math.nan, math.nan), (-1.0, -1.2, -0.8)],
              "fastvit_sa24": [(0.0, math.nan, math.nan), (-0.2, -0.4, 0.0), (-0.6, -0.9, -0.3), (math.inf, 0, 1)]}
    (figure,) = dose_response_figures("Penalty vs weight", "penalty (dB)", ["0.5", "0.2", "0.1", "0.05"], series,
                                      x_label="weight")
    (axes,) = figure.axes
    assert [t.get_text() for t in axes.get_xticklabels()] == ["0.5", "0.2", "0.1", "0.05"]
    drawn, whiskers = lines(axes)
    resnet, fastvit = drawn["resnet50"], drawn["fastvit_sa24"]
    assert [y for _, y in resnet][:2] + [y for _, y in resnet][3:] == [-0.1, -0.5, -1.0]
    assert math.isnan(resnet[2][1]) and math.isnan(fastvit[3][1])  # NaN and inf: a break in the line, not a dot
    assert [y for _, y in fastvit][:3] == [0.0, -0.2, -0.6]
    assert all(x < x2 for (x, _), (x2, _) in zip(resnet, fastvit))  # shifted apart, in dose order
    assert [(lo, hi) for _, lo, hi in whiskers[PALETTE[0]]] == [(-0.3, 0.1), (-0.8, -0.2), (-1.2, -0.8)]
    assert [(lo, hi) for _, lo, hi in whiskers[PALETTE[1]]] == [(-0.4, 0.0), (-0.9, -0.3)]  # (0.0, n=1): none
    assert axes.get_ylim()[0] < -1.2 and axes.get_ylim()[1] > 0.1 and axes.get_xlabel() == "weight"
    assert [line.get_ydata()[0] for line in axes.lines if line.get_gid() == "zero"] == [0.0]
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["resnet50", "fastvit_sa24"]
    assert notes(figure) == ["2 non-finite value(s) not drawn", "1 value(s) without whiskers (n=1: no interval)"]
    gaps = {"a": [(-0.1, -0.2, 0.0), None, (-1.0, -1.5, -0.5)], "b": [None, None, None]}
    (figure,) = dose_response_figures("t", "y", ["0.5", "0.2", "0.1"], gaps)
    drawn, _ = lines(figure.axes[0])
    assert [(x, y) for x, y in drawn["a"]] == [(0.0 - 0.05, -0.1), (2.0 - 0.05, -1.0)]  # 0.2 not run: passed by
    assert "b" not in drawn and notes(figure) == []  # a dose not run is no value left undrawn
    many = {f"arch {a}": [(float(w), w - 1.0, w + 1.0) for w in range(200)] for a in range(12)}
    figures = dose_response_figures("t", "y", [str(w) for w in range(200)], many)
    assert len(figures) == 2 * 5 and all(width_px(f) <= MAX_WIDTH_PX for f in figures)  # 10 colours, 40 doses
    assert {f.axes[0].get_ylim() for f in figures} == {figures[0].axes[0].get_ylim()}  # parts compare
    with pytest.raises(ValueError, match="3 points for 4 x values"):
        dose_response_figures("t", "y", [1, 2, 3, 4], {"a": [(1, 0, 2)] * 3})


def test_output_writes_each_part_as_png_and_pdf_and_lists_them_in_its_manifest(tmp_path):
    output = Output(str(tmp_path / "out"))
    categories = [f"c{i}" for i in range(10)]
    paths = output.plot("dots.png", "t", "y", categories, [("a", {c: (1.0, 0.0, 2.0) for c in categories})])
    paths += output.figures("forest.png", forest_figures, "t", "x", [(f"r{i}", 1.0, 0.0, 2.0) for i in range(50)])
    output.close()  # the whole set is written: INCOMPLETE.txt goes
    listed = (tmp_path / "out" / MANIFEST).read_text().splitlines()[1:]
    assert listed == [os.path.basename(p) for p in paths] == [
        "dots_part01.png", "dots_part01.pdf", "dots_part02.png", "dots_part02.pdf",
        "forest_part01.png", "forest_part01.pdf", "forest_part02.png", "forest_part02.pdf"]
    assert sorted(os.listdir(tmp_path / "out")) == sorted(listed + [MANIFEST])
    for path in paths:
        if path.endswith(".png"):
            with Image.open(path) as image:
                assert image.format == "PNG" and 400 <= image.width <= MAX_WIDTH_PX and image.height >= 200
                assert image.convert("RGB").getpixel((image.width // 2, 2)) == (255, 255, 255)
        else:
            data = open(path, "rb").read()
            assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF") and b"/CreationDate" not in data


def test_the_same_figure_gives_the_same_files():
    def draw():
        return forest_figures("t", "x", [("a", 1.0, 0.0, 2.0)])[0]
    assert figure_files(draw()) == figure_files(draw())


def test_figures_leave_pyplot_and_the_backend_of_a_notebook_alone(tmp_path):
    # A notebook user's pyplot state (backend, open figures) is theirs: the tables never import pyplot.
    code = ("import sys, matplotlib\n"
            "from racecomp.tables.plots import figure_files, forest_figures\n"
            "figure_files(forest_figures('t', 'x', [('a', 1.0, 0.0, 2.0)])[0])\n"
            "assert 'matplotlib.pyplot' not in sys.modules\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_part_paths_number_the_parts_to_sort():
    assert part_paths("a/b.png", 1) == ["a/b.png"]
    assert part_paths("a/b.png", 2) == ["a/b_part01.png", "a/b_part02.png"]
    assert part_paths("b.png", 100)[-1] == "b_part100.png"


def test_figures_rendered_in_worker_processes_are_the_same_files(tmp_path):
    rows = [(f"r{i}", 1.0 + i, 0.0, 2.0 + i) for i in range(3)]
    for workers in (1, 2):
        output = Output(str(tmp_path / f"w{workers}"), workers=workers)
        output.figures("forest.png", forest_figures, "t", "x", rows)
        output.close()
    assert sorted(os.listdir(tmp_path / "w1")) == sorted(os.listdir(tmp_path / "w2"))
    for name in ("forest.png", "forest.pdf"):
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()
