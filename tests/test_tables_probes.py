"""racecomp.tables.probes: per-seed probe values and their seed-level t interval, on hand-made runs."""
import math

import pytest

from racecomp.tables.probes import probe_seed_values, seed_interval
from racecomp.tables.experiments import Experiment
from racecomp.tables.runs import Run

T_975_2DF = 4.302652729749  # Student t quantile 0.975 with 2 df (tables)


def run(seed, f1=None, bts=None):
    gender = None if f1 is None else [{"race": race, "n": 6, "f1_in": value, "f1_out": 0.5, "worst": 0.5,
                                       "gap": abs(value - 0.5), "accuracy": 0.9} for race, value in f1.items()]
    return Run(f"runs/{seed}", "verify", "verify", {"study": "verify", "seed": str(seed), "code_version": "abc"},
               {}, None, None, gender_probe=gender, bias_transfer_score=bts)


def test_probe_seed_values_per_metric_in_seed_order_only_seeds_with_the_probe():
    experiment = Experiment("verify", "verify", {"study": "verify"}, [
        run(0, {"Black": 0.80, "White": 0.90}, 0.5), run(1, {"White": 0.92, "Black": 0.76}), run(2, bts=0.7)])
    assert probe_seed_values(experiment) == {
        "probe_f1:White": {"0": 0.90, "1": 0.92}, "probe_f1:Black": {"0": 0.80, "1": 0.76},  # FairFace order
        "probe_f1_worst": {"0": 0.80, "1": 0.76}, "probe_f1_gap": {"0": pytest.approx(0.10), "1": pytest.approx(0.16)},
        "bias_transfer_score": {"0": 0.5, "2": 0.7}}
    assert list(probe_seed_values(experiment)) == ["probe_f1:White", "probe_f1:Black", "probe_f1_worst",
                                                   "probe_f1_gap", "bias_transfer_score"]
    assert probe_seed_values(Experiment("verify", "verify", {}, [run(0)])) == {}


def test_seed_interval_is_a_t_interval_over_seeds_clipped_to_the_range():
    mean, lo, hi, sd = seed_interval([0.5, 0.7, 0.6], 0.95)
    half = T_975_2DF * 0.1 / math.sqrt(3)
    assert (mean, sd) == pytest.approx((0.6, 0.1)) and (lo, hi) == pytest.approx((0.6 - half, 0.6 + half))
    assert seed_interval([0.9, 1.0, 0.95], 0.95, bounds=(0.0, 1.0))[2] == 1.0  # clipped at F1's maximum
    mean, lo, hi, sd = seed_interval([0.8], 0.95)
    assert mean == 0.8 and math.isnan(lo) and math.isnan(hi) and math.isnan(sd)


def test_seed_interval_of_seeds_that_agree_exactly_is_the_exact_sign_test_claim():
    # The one t-interval path (estimates.interval): 3 equal seeds have no spread to studentize, and the exact
    # sign test of 3 units (p = 1/4) cannot reject at 95%, so the interval is the whole range; 6 can (p = 1/32).
    assert seed_interval([0.75, 0.75, 0.75], 0.95, bounds=(0.0, 1.0)) == (0.75, 0.0, 1.0, 0.0)
    assert seed_interval([0.75] * 6, 0.95, bounds=(0.0, 1.0))[1:3] == (0.75, 0.75)
