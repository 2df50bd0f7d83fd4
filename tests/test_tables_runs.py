"""racecomp.tables.runs and .experiments: reading a run folder and pooling seeds into experiments."""
import csv
import json

from racecomp.tables.experiments import Experiment, differing_settings, group_experiments
from racecomp.tables.runs import Problems, Run, load_run

COLUMNS = ("study", "arch", "weight", "recipe", "seed", "code_version")


def write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def run_of(folder, seed, weight="1.0", recipe="r1"):
    columns = {"study": "upscale", "arch": "resnet50", "weight": weight, "recipe": recipe, "seed": seed,
                "code_version": "abc"}
    return Run(folder, "upscale", "upscale", columns, {"White": {"n": 1}}, None)


def test_load_run_reads_identity_means_and_items(tmp_path):
    write_csv(tmp_path / "per_race.csv", list(COLUMNS) + ["race", "n", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"],
              [["upscale", "resnet50", "1.0", "r1", "0", "abc", "White", 2, 31.0, 0.85, 30.0, 0.84]])
    write_csv(tmp_path / "per_image.csv", ["file", "race", "psnr_y", "ssim_y"],
              [["a.jpg", "White", 30.0, 0.8], ["b.jpg", "White", 32.0, 0.9]])
    problems = Problems()
    run = load_run(str(tmp_path), problems)
    assert not problems.entries
    assert (run.family, run.kind) == ("upscale", "upscale")
    assert list(run.columns) == list(COLUMNS)  # every column before `race`, in file order
    assert run.per_race == {"White": {"n": 2, "ssim_y": 0.85, "psnr_y": 31.0, "ssim_rgb": 0.84, "psnr_rgb": 30.0}}
    assert [(i["key"], i["cluster"], i["psnr_y"]) for i in run.items] == [("a.jpg", "a.jpg", 30.0),
                                                                        ("b.jpg", "b.jpg", 32.0)]
    assert run.path == str(tmp_path / "per_race.csv")


def test_load_run_keeps_a_run_whose_items_disagree_with_its_means(tmp_path):
    write_csv(tmp_path / "per_race.csv", list(COLUMNS) + ["race", "n", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"],
              [["upscale", "resnet50", "1.0", "r1", "0", "abc", "White", 2, 35.0, 0.85, 30.0, 0.84]])
    write_csv(tmp_path / "per_image.csv", ["file", "race", "psnr_y", "ssim_y"],
              [["a.jpg", "White", 30.0, 0.8], ["b.jpg", "White", 32.0, 0.9]])
    problems = Problems()
    run = load_run(str(tmp_path), problems)
    assert run is not None and run.items is None  # per-race tables only
    ((path, message),) = problems.entries
    assert path == str(tmp_path / "per_image.csv") and "mean psnr_y of the rows is 31.0" in message


def test_group_experiments_pools_seeds_by_value_and_splits_recipes():
    runs = [run_of("b", "1", weight="1"), run_of("a", "0", weight="1.0"), run_of("c", "0", recipe="r2")]
    problems = Problems()
    pooled, other_recipe = group_experiments(runs, problems)
    assert not problems.entries
    assert [r.folder for r in pooled.runs] == ["a", "b"]  # '1' and '1.0' are one weight; sorted by seed
    assert pooled.pooled_columns() == {"n_seeds": 2, "seeds": "0;1", "code_version": "abc", "warnings": ""}
    assert "seed" not in pooled.columns and [r.folder for r in other_recipe.runs] == ["c"]


def test_group_experiments_leaves_out_every_run_of_a_clashing_seed():
    runs = [run_of("a", "0"), run_of("b", "1"), run_of("c", "1.0")]
    problems = Problems()
    (experiment,) = group_experiments(runs, problems)
    assert [r.folder for r in experiment.runs] == ["a"]
    assert sorted(path for path, _ in problems.entries) == ["b/per_race.csv", "c/per_race.csv"]


VERIFY_IDENTITY = ("study", "arch", "recipe", "seed", "code_version")
VERIFY_RACE_COLUMNS = ["race", "n_pairs", "accuracy"]


def verify_folder(path, pair_header, pair_rows):
    write_csv(path / "per_race.csv", list(VERIFY_IDENTITY) + VERIFY_RACE_COLUMNS,
              [["verify", "mobilefacenet", "r1", "0", "abc", "African", len(pair_rows), 50.0]])
    write_csv(path / "per_pair.csv", pair_header, pair_rows)


def test_load_run_reads_both_identities_of_a_pair(tmp_path):
    header = ["race", "fold", "line", "id1", "n1", "id2", "n2", "label", "score", "correct"]
    verify_folder(tmp_path, header, [["African", 0, 1, "m.01", 1, "m.01", 2, 1, 0.7, 1],
                                     ["African", 0, 2, "m.02", 1, "m.01", 3, 0, 0.2, 0]])
    problems = Problems()
    run = load_run(str(tmp_path), problems)
    assert not problems.entries
    assert [(i["key"], i["cluster"], i["cluster2"]) for i in run.items] == [
        (("African", 1), "m.01", "m.01"), (("African", 2), "m.02", "m.01")]  # genuine, then impostor


def test_load_run_without_the_second_identity_has_no_item_statistics(tmp_path):
    # Pairs sharing only their second identity cannot be clustered without id2: no CI rather than a narrow one.
    verify_folder(tmp_path, ["race", "fold", "line", "id1", "correct"], [["African", 0, 1, "m.01", 1],
                                                                        ["African", 0, 2, "m.02", 0]])
    problems = Problems()
    run = load_run(str(tmp_path), problems)
    assert run is not None and run.items is None
    assert any("missing column(s) ['id2']" in message for _, message in problems.entries)


def test_load_run_reads_id_cos_when_the_run_has_it_and_args_json(tmp_path):
    write_csv(tmp_path / "per_race.csv", list(COLUMNS) + ["race", "n", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb",
                                                           "id_cos"],
              [["upscale", "resnet50", "1.0", "r1", "0", "abc", "White", 2, 31.0, 0.85, 30.0, 0.84, 0.75]])
    write_csv(tmp_path / "per_image.csv", ["file", "race", "psnr_y", "ssim_y", "id_cos"],
              [["a.jpg", "White", 30.0, 0.8, 0.7], ["b.jpg", "White", 32.0, 0.9, 0.8]])
    (tmp_path / "args.json").write_text(json.dumps({"args": {"identity_model": "backbone.pth", "lr": 0.001}}))
    problems = Problems()
    run = load_run(str(tmp_path), problems)
    assert not problems.entries
    assert run.per_race["White"]["id_cos"] == 0.75 and [i["id_cos"] for i in run.items] == [0.7, 0.8]
    assert run.args == {"identity_model": "backbone.pth", "lr": 0.001}
    experiment = Experiment("upscale", "upscale", {}, [run])
    assert experiment.race_metrics() == ["ssim_y", "psnr_y", "ssim_rgb", "psnr_rgb", "id_cos"]
    assert experiment.setting("identity_model") == (True, "backbone.pth")
    assert experiment.setting("identity_arch") == (True, None)  # a flag args.json lacks reads as unset


def test_id_cos_of_only_some_seeds_is_not_a_metric_of_the_experiment():
    with_id_cos = Run("a", "upscale", "upscale", {"seed": "0"}, {"White": {"n": 1, "psnr_y": 30.0, "id_cos": 0.7}},
                      None, {"args": {"identity_model": "m"}})
    without = Run("b", "upscale", "upscale", {"seed": "1"}, {"White": {"n": 1, "psnr_y": 30.0}}, None)
    experiment = Experiment("upscale", "upscale", {}, [with_id_cos, without])
    assert "id_cos" not in experiment.race_metrics()
    assert experiment.setting("identity_model") == (False, None)  # one seed has no args.json: unknown


def test_load_run_reports_an_unreadable_args_json_and_keeps_the_run(tmp_path):
    write_csv(tmp_path / "per_race.csv", list(COLUMNS) + ["race", "n", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"],
              [["upscale", "resnet50", "1.0", "r1", "0", "abc", "White", 1, 31.0, 0.85, 30.0, 0.84]])
    (tmp_path / "args.json").write_text("{\"args\": {")
    problems = Problems()
    run = load_run(str(tmp_path), problems)
    assert run is not None and run.record is None
    assert any(path == str(tmp_path / "args.json") and "unreadable" in message for path, message in problems.entries)


def args_run(folder, **args):
    return Run(folder, "upscale", "upscale", {}, {}, None, {"args": args})


def test_differing_settings_are_those_that_set_recipes_apart():
    by_recipe = {
        "r1": [args_run("a", arch="resnet50", lr=0.001, epochs=2, seed=0, out="/a", save_samples=4),
               args_run("b", arch="resnet50", lr=0.001, epochs=2, seed=1, out="/b", save_samples=0)],
        "r2": [args_run("c", arch="resnet50", lr=0.002, epochs=2, seed=0, out="/c", save_samples=4, far=[0.1, 0.2])],
        "r3": [Run("d", "upscale", "upscale", {}, {}, None)],  # no args.json
    }
    settings, unknown = differing_settings(by_recipe, skip=("arch",))
    # lr differs; far is unset (None) in r1: it differs too. epochs agrees; seed, out (never a result), arch
    # (skipped: an identifying column) and save_samples (differs inside r1) are left out.
    assert settings == {"r1": {"far": None, "lr": 0.001}, "r2": {"far": [0.1, 0.2], "lr": 0.002}}
    assert unknown == ["r3"]
