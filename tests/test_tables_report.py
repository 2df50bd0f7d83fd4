"""racecomp.tables.report: cell formatting and the row labels of a family's tables."""
import numpy as np

from racecomp.tables.report import _format, _varying_columns
from racecomp.tables.runs import Experiment


def test_format_counts_as_integers_and_blanks_as_empty():
    assert _format(3, 2) == "3" and _format(np.int64(3), 2) == "3"
    assert _format(3.14159, 2) == "3.14" and _format(float("inf"), 2) == "inf"
    assert _format("", 2) == "" and _format(None, 2) == ""


def test_varying_columns_compare_values_not_spellings():
    experiments = [Experiment("upscale", "upscale", {"study": "upscale", "arch": arch, "scale": scale}, [])
                   for arch, scale in (("resnet50", "2"), ("vgg", "2.0"))]
    varying, constant = _varying_columns(experiments)
    assert varying == ["arch"] and constant == "scale=2"
