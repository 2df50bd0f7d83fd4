"""racecomp.tables.formatting: how every number of tables.md is written, on hand-written cases."""
import math

import numpy as np
import pytest

from racecomp.tables.formatting import format_number, interval_text, p_text


@pytest.mark.parametrize("value, magnitude, text", [
    (32.123, None, "32.1"),  # 3 significant digits
    (0.8612, None, "0.861"),
    (95.18, None, "95.2"),
    (0.0004, None, "0.000400"),  # a small difference keeps its digits (it printed as -0.00 before)
    (-0.00041234, None, "-0.000412"),
    (9.996, None, "10.0"),  # rounding up to the next power of ten keeps 3 digits, not 4
    (1234.7, None, "1235"),  # never fewer than 0 decimals, never an exponent
    (92.5, 100.0, "93"),  # half up, as by hand
    (0.125, None, "0.125"),
    (0.125, 0.5, "0.125"),
    (0.1255, 0.5, "0.126"),
    (-0.0004, 0.5, "0.000"),  # rounds to zero: no "-0.000"
    (-0.0, None, "0"),
    (0.0, 0.5, "0.000"),
    (1.36e-16, None, "0"),  # floating-point rounding of equal values, not a number to print
    (2.0, 2.08, "2.00"),  # the decimals of the cell's largest number
    (math.inf, None, "inf"), (-math.inf, None, "-inf"), (math.nan, None, "nan"),
    (3, None, "3"), (np.int64(30), None, "30"),  # counts as they are
    ("", None, ""), (None, None, ""),
])
def test_format_number(value, magnitude, text):
    assert format_number(value, magnitude) == text


@pytest.mark.parametrize("args, text", [
    ((-1.0004, -1.08, -0.92, 30), "-1.00 [-1.08, -0.92]"),
    ((0.0004, 0.0001, 0.0007, 30), "0.000400 [0.000100, 0.000700]"),
    ((0.0004, -0.5, 0.5, 30), "0.000 [-0.500, 0.500]"),  # no digits the interval cannot support
    ((2.09, 1.3, math.inf, 100), "2.09 [1.30, inf]"),  # a one-sided bound is still an interval
    ((31.0, 31.0, 31.0, 1), "31.0 (n=1, no CI)"),  # one item: a zero-width interval would claim certainty
    ((29.0, -math.inf, math.inf, 5), "29.0 (n=5, no CI)"),  # unbounded: nothing known
    ((29.0, math.nan, math.nan, 5), "29.0 (n=5, no CI)"),
])
def test_interval_text(args, text):
    assert interval_text(*args) == text


def test_interval_text_names_what_is_missing_and_adds_a_note():
    assert interval_text(31.0, 31.0, 31.0, 1, missing="no seed range") == "31.0 (n=1, no seed range)"
    assert interval_text(32.12, 31.8, 32.4, 60, note="n=60") == "32.1 [31.8, 32.4] (n=60)"
    assert interval_text(32.12, 32.12, 32.12, 1, note="n=60") == "32.1 (n=1, no CI)"


@pytest.mark.parametrize("p, text", [
    (0.43, "0.43"),
    (0.0496, "0.050"),  # 2 significant digits: 0.0496 is not printed as 0.05
    (0.0043, "0.0043"),
    (0.001, "0.0010"),
    (0.00099, "<0.001"),
    (1e-12, "<0.001"),
    (1.0, "1.0"),
])
def test_p_text(p, text):
    assert p_text(p) == text
