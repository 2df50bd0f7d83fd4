"""What every study shares: one surface, run columns that carry every result-changing flag, flags that act.

Regression tests for results that were wrong when the studies' pieces were spread over the scripts:
verification runs that differed in recipe were pooled as seeds, quantization dropped the model run's
evaluation settings, and run_verify accepted under-sampling flags it never read.
"""
import argparse
import ast
import csv
import json
import os
import re

import pytest
import torch

from racecomp import facenets, studies, toyrfw
from racecomp.schema import STUDIES as STUDY_NAMES
from racecomp.studies import quantize, upscale, verify

STUDIES = {name: studies.get(name) for name in STUDY_NAMES}

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("run_upscale.py", "run_verify.py", "run_quantize.py", "summarize.py")
# A base command line per study that passes its checks, with something under-sampled so --weight can vary.
BASE = {"upscale": ["--minority", "black", "--weight", "0.5"],
        "verify": ["--minority", "african", "--weight", "0.5", "--arch", "fastvit_t8"],
        "quantize": ["--model-run", "/runs/verify/model"]}
# Values to switch to where "the default, changed" has to be a valid value of that flag.
VALID_CHANGES = {"minority": {"upscale": "white", "verify": "asian"},
                 "arch": {"upscale": "fastvit_t8", "verify": "iresnet18"},
                 "races": "african", "unfreeze": "1",
                 "calib_race_weights": "caucasian=1", "bits": ["w4a4"], "restore": "bicubic-x2"}
MODEL_IDENTITY = {"study": "verify", "arch": "fastvit_t8", "seed": 0}  # stands for the model of --model-run


def changed(action, value, study):
    """A valid value of `action` other than `value`."""
    special = VALID_CHANGES.get(action.dest)
    if special is not None:
        return special.get(study, special) if isinstance(special, dict) else special
    if isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)):
        return not value
    if action.choices:
        options = [c for c in action.choices if c != (value[0] if isinstance(value, list) else value)]
        return [options[0]] if action.nargs == "+" else options[0]
    if action.nargs == "+":
        return [v * 0.5 for v in value] if value and isinstance(value[0], float) else ["/other"]
    if action.type is int:
        return 3 if value is None else value + 1
    if action.type is float:
        return 0.5 if not value else value * 0.5
    return "/some/other" if value is None else value + "x"


def experiment_rows(study_name, args):
    """What identifies the run's results in per_race.csv, minus the seed and code version: one tuple per
    per_race.csv the run writes (quantization writes one per setting)."""
    study = STUDIES[study_name]
    if study_name == "quantize":
        rows = [quantize.run_columns(quantize.setting_args(args, setting), "v", model=MODEL_IDENTITY)
                for setting in quantize.settings(args)]
    else:
        rows = [study.run_columns(args, "v")]
    return sorted(tuple(sorted((k, str(v)) for k, v in row.items() if k not in ("seed", "code_version")))
                  for row in rows)


@pytest.mark.parametrize("study_name", sorted(STUDIES))
def test_every_study_has_the_shape_run_study_runs(study_name):
    """racecomp.studies.run_folder.run_study calls these, and nothing else of a study."""
    study = STUDIES[study_name]
    assert study.NAME == study_name
    for name in ("default_out", "data_folders", "run_columns", "build_model", "prepare", "evaluate"):
        assert callable(getattr(study, name)), name
    assert study.train is None if study_name == "quantize" else callable(study.train)
    assert set(study.DATA_ARGS) <= {action.dest for action in study.get_args_parser()._actions}


@pytest.mark.parametrize("study_name", sorted(STUDIES))
def test_every_flag_changes_the_run_columns_or_is_declared_result_neutral(study_name):
    study = STUDIES[study_name]
    parser = study.get_args_parser()
    base_args = parser.parse_args(BASE[study_name])
    base = experiment_rows(study_name, base_args)
    dests = {action.dest for action in parser._actions if action.dest != "help"}
    assert set(study.NON_RESULT_ARGS) <= dests, "a result-neutral name that is not a flag"
    for action in parser._actions:
        if action.dest == "help" or (study_name == "quantize" and action.dest in quantize.MODEL_FLAGS):
            continue  # they stand for the model: test_quantize_recipe_follows_the_model_not_its_folder
        args = argparse.Namespace(**vars(base_args))
        setattr(args, action.dest, changed(action, getattr(args, action.dest), study_name))
        rows = experiment_rows(study_name, args)
        if action.dest in study.NON_RESULT_ARGS or action.dest == "seed":
            assert rows == base, f"--{action.dest} is declared result-neutral but changes the run's columns"
        else:
            assert rows != base, (f"--{action.dest} changes results but not the run's columns: add it to the "
                                  f"recipe or declare it in NON_RESULT_ARGS with the reason")


def test_verify_runs_that_differ_in_recipe_are_different_experiments():
    parse = verify.get_args_parser().parse_args
    base = experiment_rows("verify", parse([]))
    for flags in (["--margin", "cosface"], ["--lr", "1e-3"], ["--epochs", "2"], ["--align"], ["--no-flip"],
                  ["--races", "african"]):
        assert experiment_rows("verify", parse(flags)) != base, flags
    assert experiment_rows("verify", parse(["--seed", "3", "--workers", "0"])) == base


def test_bicubic_floor_recipe_ignores_training_flags_and_keeps_its_data():
    parse = upscale.get_args_parser().parse_args
    base = experiment_rows("upscale", parse(["--arch", "bicubic"]))
    for flags in (["--epochs", "7"], ["--lr", "0.1"], ["--batch-size", "3"], ["--pixel-loss", "charbonnier"],
                  ["--dev-fraction", "0.2"]):
        assert experiment_rows("upscale", parse(["--arch", "bicubic", *flags])) == base, flags
    for flags in (["--data", "/other"], ["--hr-size", "112"], ["--scale", "4"], ["--skip-bad"]):
        assert experiment_rows("upscale", parse(["--arch", "bicubic", *flags])) != base, flags
    with pytest.raises(ValueError, match="bicubic trains nothing"):
        upscale.check_args(parse(["--arch", "bicubic", "--minority", "black", "--weight", "0.2"]))
    with pytest.raises(ValueError, match="at least one epoch"):
        upscale.check_args(parse(["--arch", "resnet50", "--epochs", "0"]))


def test_quantize_recipe_follows_the_model_not_its_folder():
    args = quantize.get_args_parser().parse_args(["--model-run", "/a/run"])
    moved = quantize.get_args_parser().parse_args(["--model-run", "/b/copy-of-run"])
    args, moved = (quantize.setting_args(parsed, quantize.settings(parsed)[0]) for parsed in (args, moved))
    assert (quantize.run_columns(args, "v", model=MODEL_IDENTITY)
            == quantize.run_columns(moved, "v", model=MODEL_IDENTITY))
    other_model = dict(MODEL_IDENTITY, recipe="0123456789")
    assert (quantize.run_columns(args, "v", model=other_model)["recipe"]
            != quantize.run_columns(args, "v", model=MODEL_IDENTITY)["recipe"])
    # Without --model-run the model is its architecture, weights file and crop size.
    identities = [quantize.model_identity(quantize.get_args_parser().parse_args(flags))
                  for flags in ([], ["--arch", "iresnet18"], ["--weights", "w.pth"], ["--image-size", "96"])]
    assert len({json.dumps(identity, sort_keys=True) for identity in identities}) == 4
    # With --model-run they would be ignored: refused.
    for flags in (["--arch", "iresnet18"], ["--weights", "w.pth"], ["--image-size", "96"]):
        with pytest.raises(ValueError, match="would be ignored"):
            quantize.check_args(quantize.get_args_parser().parse_args(["--model-run", "/a/run", *flags]))


@pytest.mark.parametrize("flags", [["--minority-mode", "reweight"], ["--skip-bad"], ["--epoch-size", "10"]])
def test_verify_refuses_flags_it_would_not_act_on(flags, capsys):
    with pytest.raises(SystemExit):
        verify.get_args_parser().parse_args(["--minority", "african", "--weight", "0.5", *flags])
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize("study_name", sorted(STUDIES))
def test_help_names_only_flags_that_exist(study_name):
    # A help text may point at another study's flag (quantize: "a run_verify --epochs 0 run"), never at none.
    flags = {option for study in STUDIES.values() for action in study.get_args_parser()._actions
             for option in action.option_strings}
    named = set(re.findall(r"--[a-z][a-z-]*[a-z]", STUDIES[study_name].get_args_parser().format_help()))
    assert named <= flags, f"help names flags that do not exist: {sorted(named - flags)}"


def test_no_script_imports_another_script_and_nothing_edits_sys_path():
    for script in SCRIPTS:
        with open(os.path.join(REPO_ROOT, script), encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not {name for name in imported if name and name.split(".")[0] + ".py" in SCRIPTS}, script
    for folder, _, names in os.walk(os.path.join(REPO_ROOT, "racecomp")):
        for name in names:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    assert "sys.path" not in handle.read(), name


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_quantization_scores_with_the_model_runs_own_protocol(tmp_path):
    """A model run scored on aligned faces, one race, without the flip test: the quantization study's fp32
    baseline must reproduce its per-pair scores exactly (the same protocol), and score only that race."""
    size = 32
    rfw = toyrfw.make_rfw(tmp_path / "rfw", n_ids=20, images_per_id=2, pairs_per_fold=2, size=size, seed=3,
                           aligned=False)
    torch.manual_seed(0)
    torch.save(facenets.get_model("fastvit_t8", 32).state_dict(), tmp_path / "w.pth")
    model_run = tmp_path / "model"
    verify.main(verify.get_args_parser().parse_args(
        ["--arch", "fastvit_t8", "--embedding-size", "32", "--image-size", str(size), "--weights",
         str(tmp_path / "w.pth"), "--epochs", "0", "--rfw", rfw, "--races", "asian", "--align", "--no-flip",
         "--out", str(model_run), "--workers", "0"]))
    out = tmp_path / "quant"
    quantize.main(quantize.get_args_parser().parse_args(
        ["--model-run", str(model_run), "--bits", "w8a8", "--calib", "datafree", "--calib-size", "4",
         "--datafree-steps", "1", "--out", str(out), "--workers", "0"]))
    model_pairs = read_csv(model_run / "per_pair.csv")
    fp32_pairs = read_csv(out / "fp32" / "per_pair.csv")
    assert {row["race"] for row in fp32_pairs} == {"Asian"}
    assert [row["score"] for row in fp32_pairs] == [row["score"] for row in model_pairs]
    assert {row["race"] for row in read_csv(out / "w8a8-datafree" / "per_race.csv")} == {"Asian"}
    record = json.loads((out / "fp32" / "args.json").read_text())
    assert record["evaluation_args"]["align"] is True and record["evaluation_args"]["no_flip"] is True


@pytest.mark.parametrize("study_name, flags, message", [
    ("upscale", ["--accum-steps", "0"], "--accum-steps 0"),
    ("upscale", ["--unfreeze", "1", "--finetune", "frozen"], "--finetune full only"),
    ("verify", ["--unfreeze", "1"], "has none"),
    ("verify", ["--amp", "off", "--warmup-steps", "-1"], "--warmup-steps"),
])
def test_training_flags_are_checked_before_any_work(study_name, flags, message):
    study = STUDIES[study_name]
    with pytest.raises(ValueError, match=message):
        study.check_args(study.get_args_parser().parse_args(flags))
