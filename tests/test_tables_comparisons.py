"""racecomp.tables.comparisons: per-race means rows (Table I layout), finding a run's reference, and the scope of a
comparison (model difference with one seed, recipe difference with several)."""
import math
from dataclasses import replace

import numpy as np
import pytest

from racecomp.tables import comparisons
from racecomp.tables.comparisons import fairness_interval_rows, find_reference, race_columns_row, reference_comparisons
from racecomp.tables.experiments import Experiment
from racecomp.tables.runs import Problems, Run
from test_fairness_simulations import compare


def experiment_of(family, columns, per_race=None, folder="r"):
    """An Experiment of one seed with the given identifying columns (per-race means only)."""
    run = Run(folder, family, family, {**columns, "seed": "0", "code_version": "x"}, per_race or {}, None)
    return Experiment(family, family, dict(columns), [run])


def test_means_row_avg_std_ser_of_table_one_vector():
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
    assert ("no bicubic counterpart (arch=bicubic, minority=none, same study, same scale, same lr_kernel)"
            in problems.entries[0][1])


def seeds_experiment(values, seeds, minority="none"):
    """Upscale Experiment: values (seeds, images) of PSNR-Y on images img0.. (first half Black, then White)."""
    columns = {"study": "upscale", "arch": "resnet50", "minority": minority}
    n = values.shape[1]
    runs = [Run(f"{minority}-{seed}", "upscale", "upscale", {**columns, "seed": str(seed), "code_version": "x"}, {},
                [{"key": f"img{i}", "race": "Black" if i < n // 2 else "White", "cluster": f"img{i}", "psnr_y": v,
                  "ssim_y": 0.5} for i, v in enumerate(row)]) for seed, row in zip(seeds, values)]
    return Experiment("upscale", "upscale", columns, runs)


def test_compare_with_one_seed_is_a_model_difference_not_a_recipe_effect():
    generator = np.random.default_rng(0)
    base = generator.normal(30.0, 2.0, 40)
    under = seeds_experiment(base - 1.0 + generator.normal(0.0, 0.1, (3, 40)), (0, 1, 2), minority="Black")
    one_seed = seeds_experiment(base[None, :], (0,))
    result = compare(under, one_seed, "psnr_y", 100, 0, 0.95, Problems())["groups"]["Black"]
    assert result["scope"] == "model difference (1 seed; not a recipe effect)" and result["level"] == "model"
    assert result["lo"] == result["image_lo"] and result["hi"] == result["image_hi"]


def test_compare_pairs_seeds_only_when_both_sides_have_the_same_seeds():
    generator = np.random.default_rng(1)
    base = generator.normal(30.0, 2.0, 40)
    under = seeds_experiment(base - 1.0 + generator.normal(0.0, 0.1, (3, 40)), (0, 1, 2), minority="Black")
    same = seeds_experiment(base + generator.normal(0.0, 0.1, (3, 40)), ("0", "1.0", "2"))
    other = seeds_experiment(base + generator.normal(0.0, 0.1, (3, 40)), (3, 4, 5))
    paired = compare(under, same, "psnr_y", 100, 0, 0.95, Problems())["groups"]["Black"]
    unpaired = compare(under, other, "psnr_y", 100, 0, 0.95, Problems())["groups"]["Black"]
    assert paired["level"] == unpaired["level"] == "recipe"
    assert paired["seeds_paired"] and paired["df"] == 2.0
    assert not unpaired["seeds_paired"] and math.isnan(unpaired["seed_sd_difference"])


def test_paired_tests_in_several_processes_give_the_same_numbers_and_problems(monkeypatch):
    monkeypatch.setattr(comparisons, "MIN_DRAWS_FOR_PROCESSES", 0)  # processes even for this little work
    generator = np.random.default_rng(4)
    base = generator.normal(30.0, 2.0, 40)
    balanced = seeds_experiment(base + generator.normal(0.0, 0.1, (2, 40)), (0, 1))
    under = [seeds_experiment(base - shift + generator.normal(0.0, 0.1, (2, 40)), (0, 1), minority=minority)
             for shift, minority in ((1.0, "Black"), (0.5, "White"))]
    outcomes = []
    for workers in (1, 2):
        problems = Problems()
        found = reference_comparisons([balanced, *under], 50, 0, 0.95, problems, workers=workers)
        results = [found[e]["balanced"]["results"] for e in under]
        assert all(set(r) == {"psnr_y", "ssim_y"} for r in results)
        outcomes.append((repr(results), problems.entries))
    assert outcomes[0] == outcomes[1]  # bit for bit (repr keeps every digit), problems in the same order


def test_items_missing_from_a_seed_are_left_out_and_reported():
    values = np.random.default_rng(2).normal(30.0, 2.0, (2, 40))
    full = seeds_experiment(values, (0, 1))
    seed_one = full.runs[1]
    experiment = replace(full, runs=(full.runs[0], replace(seed_one, items=seed_one.items[:-1])))  # lacks img39
    problems = Problems()
    rows = {row["quantity"]: row for row in fairness_interval_rows(experiment, "psnr_y", 50, 0, 0.95, problems)}
    assert rows["White"]["n_items"] == 19 and rows["White"]["n"] == 38
    ((path, message),) = problems.entries
    assert "1 items evaluated by only some seeds are left out" in message


def bicubic_of(identity_model, id_cos, recipe, args=True):
    """A bicubic experiment (scale 2) with per-race means, with or without id_cos and args.json."""
    columns = {"study": "upscale", "arch": "bicubic", "scale": "2", "minority": "none", "recipe": recipe}
    per_race = {"White": {"n": 1, "psnr_y": 28.0, **({"id_cos": 0.7} if id_cos else {})}}
    run = Run(recipe, "upscale", "upscale", {**columns, "seed": "0", "code_version": "x"}, per_race, None,
              {"args": {"identity_model": identity_model}} if args else None)
    return Experiment("upscale", "upscale", columns, [run])


def model_of(identity_model, args=True):
    experiment = bicubic_of(identity_model, identity_model is not None, f"model-{identity_model}", args)
    return replace(experiment, identifying={**experiment.columns, "arch": "resnet50"})


def test_bicubic_floors_with_and_without_identity_model_are_not_a_tie():
    plain, with_x = bicubic_of(None, False, "b-plain"), bicubic_of("X", True, "b-x")
    floors = [plain, with_x]
    problems = Problems()
    assert find_reference(model_of("X"), floors, "bicubic", problems) is with_x  # the same recognizer
    assert find_reference(model_of(None), floors, "bicubic", problems) is plain
    # Another recognizer (or no args.json to tell): the floor without id_cos, whose PSNR/SSIM are the same.
    assert find_reference(model_of("Y"), floors, "bicubic", problems) is plain
    unknown = [bicubic_of(None, False, "b-plain", args=False), bicubic_of("X", True, "b-x", args=False)]
    assert find_reference(model_of("X", args=False), unknown, "bicubic", problems) is unknown[0]
    assert not problems.entries
    # Two floors of the same recognizer that differ in their recipe (e.g. other val images) stay ambiguous.
    assert find_reference(model_of("X"), [with_x, bicubic_of("X", True, "b-x-other-data")], "bicubic", problems) is None
    assert "ambiguous bicubic counterpart" in problems.entries[0][1]


def test_the_bicubic_floor_of_a_run_is_made_from_the_same_lr_images():
    def with_args(experiment, args):
        return replace(experiment, runs=[replace(experiment.runs[0], record={"args": args})])

    # A run made before --lr-kernel (no lr_kernel in args.json) made its LR images bicubic.
    old_floor = with_args(bicubic_of(None, False, "b-old"), {"identity_model": None})
    bilinear_floor = with_args(bicubic_of(None, False, "b-bilinear"), {"lr_kernel": "bilinear"})
    bilinear_model = with_args(model_of(None), {"lr_kernel": "bilinear"})
    old_model = with_args(model_of(None), {})
    problems = Problems()
    assert find_reference(bilinear_model, [old_floor, bilinear_floor], "bicubic", problems) is bilinear_floor
    assert find_reference(old_model, [old_floor, bilinear_floor], "bicubic", problems) is old_floor
    assert not problems.entries
    assert find_reference(bilinear_model, [old_floor], "bicubic", problems) is None
    assert "same lr_kernel" in problems.entries[0][1]


def test_find_reference_of_a_run_on_original_faces_ignores_restored_runs():
    base = {"study": "verify", "arch": "iresnet50", "init": "weights", "weight": "1.0"}
    under = experiment_of("verify", {**base, "minority": "African"})
    balanced = experiment_of("verify", {**base, "minority": "none"})
    balanced_restored = experiment_of("verify", {**base, "minority": "none", "restore": "bicubic-x2",
                                                 "restore_model": "none"})
    under_restored = experiment_of("verify", {**base, "minority": "African", "restore": "bicubic-x2",
                                              "restore_model": "none"})
    everything = [under, balanced, balanced_restored, under_restored]
    problems = Problems()
    assert find_reference(under, everything, "balanced", problems) is balanced  # restore must agree, even absent
    assert find_reference(under_restored, everything, "balanced", problems) is balanced_restored
    assert find_reference(under_restored, everything, "hr", problems) is under  # restored - original faces
    assert find_reference(balanced_restored, everything, "hr", problems) is balanced
    assert not problems.entries
