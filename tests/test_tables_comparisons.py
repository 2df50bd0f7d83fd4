"""racecomp.tables.comparisons: Table 2 rows from per-race means, and finding a run's reference."""
import pytest

from racecomp.tables.comparisons import find_reference, race_columns_row
from racecomp.tables.runs import Experiment, Problems, Run


def experiment_of(family, columns, per_race=None, folder="r"):
    """An Experiment of one seed with the given identifying columns (per-race means only)."""
    run = Run(folder, family, family, {**columns, "seed": "0", "code_version": "x"}, per_race or {}, None)
    return Experiment(family, family, dict(columns), [run])


def test_table2_avg_std_ser_of_table_one_vector():
    # The vector of "Compressed Models Decompress Race Biases" Table I style: Avg 91.83, STD 2.41, SER 2.09.
    run = Run("r", "verify", "verify", {"study": "verify", "seed": "0", "code_version": "x"},
              {race: {"n": 6000, "accuracy": value} for race, value in
               zip(("African", "Asian", "Caucasian", "Indian"), (95.18, 92.00, 89.93, 90.22))}, None)
    experiment = Experiment("verify", "verify", {"study": "verify"}, [run])
    row = race_columns_row(experiment, "accuracy", ["African", "Asian", "Caucasian", "Indian"], Problems())
    assert row["Avg"] == pytest.approx(91.8325)
    assert row["STD"] == pytest.approx(2.4120, abs=1e-4)  # sample std, ddof=1 (ddof=0 would give 2.089)
    assert row["SER"] == pytest.approx(10.07 / 4.82)
    assert (round(row["Avg"], 2), round(row["STD"], 2), round(row["SER"], 2)) == (91.83, 2.41, 2.09)
    assert row["African_n"] == 6000


def test_find_reference_most_agreeing_wins_and_a_tie_is_reported():
    base = {"study": "upscale", "arch": "resnet50", "scale": "2"}
    under = experiment_of("upscale", {**base, "minority": "Black", "weight": "0.2", "minority_mode": "subsample"},
                          folder="under")
    same_mode = experiment_of("upscale", {**base, "minority": "none", "weight": "1.0", "minority_mode": "subsample"})
    other_mode = experiment_of("upscale", {**base, "minority": "none", "weight": "1.0", "minority_mode": "oversample"})
    other_arch = experiment_of("upscale", {**base, "arch": "vgg", "minority": "none", "weight": "0.2",
                                           "minority_mode": "subsample"})
    problems = Problems()
    assert find_reference(under, [under, other_mode, same_mode, other_arch], "balanced", problems) is same_mode
    assert not problems.entries
    tie = experiment_of("upscale", {**base, "minority": "none", "weight": "0.2", "minority_mode": "oversample"})
    assert find_reference(under, [under, same_mode, tie], "balanced", problems) is None
    ((path, message),) = problems.entries
    assert path.startswith("under") and "ambiguous balanced counterpart" in message


def test_find_reference_bicubic_of_the_same_scale_by_value():
    model = experiment_of("upscale", {"study": "upscale", "arch": "resnet50", "scale": "2", "minority": "none"})
    bicubic_2 = experiment_of("upscale", {"study": "upscale", "arch": "bicubic", "scale": "2.0", "minority": "none"})
    bicubic_4 = experiment_of("upscale", {"study": "upscale", "arch": "bicubic", "scale": "4", "minority": "none"})
    problems = Problems()
    assert find_reference(model, [bicubic_4, model, bicubic_2], "bicubic", problems) is bicubic_2  # '2' == '2.0'
    assert find_reference(model, [bicubic_4, model], "bicubic", problems) is None
    assert "no bicubic counterpart (arch=bicubic, minority=none, same study, same scale)" in problems.entries[0][1]
