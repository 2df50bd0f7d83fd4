"""racecomp.tables.report: cell formatting and the row labels of a family's tables."""
import numpy as np

from racecomp.tables.report import _format, _scope_text, _seed_sd_text, _varying_columns
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


def test_scope_and_seed_spread_say_what_a_comparison_is_about():
    one_seed = {"level": "model", "scope": "model difference (1 seed; not a recipe effect)"}
    assert _scope_text(one_seed) == "model difference (1 seed; not a recipe effect)"
    assert _seed_sd_text(one_seed, 2) == "(1 seed)"
    seeds = {"level": "recipe", "scope": "recipe difference (seed and item variance)", "n_seeds_a": 3,
             "n_seeds_b": 3, "seeds_paired": True, "seed_sd_a": 0.12, "seed_sd_b": 0.2, "seed_sd_difference": 0.1}
    assert _scope_text(seeds) == "recipe difference (seed and item variance): 3 vs 3 seeds, seeds paired"
    assert _seed_sd_text(seeds, 2) == "0.12 / 0.20 (difference 0.10)"
