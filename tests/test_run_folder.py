"""A run folder cannot mix or lie (racecomp.studies.run_folder): the data it ran on, the code it ran, one writer
at a time, a finished marker that belongs to its args.json. Bicubic runs on tiny demo data: no training needed
to reach every decision (a resume is set up as a killed run leaves it: args.json and checkpoint.pth)."""
import csv
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from racecomp import cli, files, toyfairface
from racecomp.datasets import fingerprint
from racecomp.studies import run_folder, upscale
from racecomp.tables import experiments as table_experiments, runs as table_runs


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def run(data, out, *extra):
    args = upscale.get_args_parser().parse_args(
        ["--data", str(data), "--out", str(out), "--workers", "0", "--eval-batch-size", "16", "--arch", "bicubic",
         "--save-samples", "0", *extra])
    return upscale.main(args)


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    """Two FairFace trees in two folders, each called `ff`, with the same label files and other images."""
    root = tmp_path_factory.mktemp("two")
    first = toyfairface.make_fairface(str(root / "a" / "ff"), n_train=7, n_val=14, size=32, seed=3)
    second = toyfairface.make_fairface(str(root / "b" / "ff"), n_train=7, n_val=14, size=32, seed=4)
    for name in ("fairface_label_train.csv", "fairface_label_val.csv"):
        shutil.copy(os.path.join(first, name), os.path.join(second, name))
    return first, second


def killed(out):
    """The folder as a run killed after its first checkpoint leaves it: args.json and checkpoint.pth."""
    os.remove(os.path.join(out, "per_race.csv"))
    files.write_bytes(os.path.join(out, "checkpoint.pth"), b"")


def test_fingerprint_follows_content_not_place_or_time(tmp_path, two_datasets):
    first, second = two_datasets
    copy = shutil.copytree(first, tmp_path / "copy")  # new mtimes, another path
    os.utime(copy / "val" / "1.jpg", (0, 0))
    (copy / ".DS_Store").write_bytes(b"x")
    same, moved = fingerprint.fingerprint(first), fingerprint.fingerprint(copy)
    assert same["id"] == moved["id"] and moved["root"] == str(copy)
    assert fingerprint.differences(same, moved) == []
    other = fingerprint.fingerprint(second)
    assert other["labels"] == same["labels"] and other["id"] != same["id"]
    (copy / "val" / "1.jpg").write_bytes(b"y" * (copy / "val" / "1.jpg").stat().st_size)  # same name and size
    changed = fingerprint.fingerprint(copy)  # 21 images: all of them sampled
    assert changed["listing"] == same["listing"]
    counts = f"{same['files']} files, {same['bytes']} bytes"
    assert fingerprint.differences(same, changed) == [f"image content differ ({counts} then; {counts} now)"]


def test_resume_on_other_data_under_the_same_name_is_refused(two_datasets, tmp_path, monkeypatch):
    first, second = two_datasets
    data, out = tmp_path / "data" / "ff", tmp_path / "run"
    shutil.copytree(first, data)
    monkeypatch.chdir(data.parent)
    run("ff", out)
    record = json.loads((out / "args.json").read_text())
    assert record["args"]["data"] == str(data)  # absolute, not as typed
    assert record["data_fingerprints"]["data"] == fingerprint.fingerprint(first) | {"root": str(data)}
    killed(out)
    monkeypatch.chdir(os.path.dirname(second))  # another folder whose ff is another dataset
    with pytest.raises(ValueError, match="different arguments \\(data\\)"):
        run("ff", out)
    shutil.rmtree(data)  # the same folder, now holding the other dataset
    shutil.copytree(second, data)
    with pytest.raises(ValueError, match=f"holds a run made on other data: --data {data}: file names or sizes, "
                                         f"image content differ"):
        run(data, out)


def test_runs_on_other_data_with_the_same_labels_are_never_pooled(two_datasets, tmp_path, monkeypatch, capsys):
    first, second = two_datasets
    for seed, data in ((0, first), (1, second)):
        monkeypatch.chdir(os.path.dirname(data))
        run("ff", tmp_path / f"seed{seed}", "--seed", str(seed))
    recipes = {read_csv(tmp_path / f"seed{seed}" / "per_race.csv")[0]["recipe"] for seed in (0, 1)}
    assert len(recipes) == 2
    problems = table_runs.Problems()
    loaded = [table_runs.load_run(str(tmp_path / f"seed{seed}"), problems) for seed in (0, 1)]
    assert len(table_experiments.group_experiments(loaded, problems)) == 2
    assert any("not pooled with" in message and "other data" in message for _, message in problems.entries)


def test_an_interrupted_overwrite_is_done_never_skipped(small_study_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run(small_study_data["fairface"], out)

    def killed_evaluation(*args, **kwargs):
        raise KeyboardInterrupt
    with monkeypatch.context() as patched:
        patched.setattr(upscale, "evaluate_to_dir", killed_evaluation)
        with pytest.raises(KeyboardInterrupt):
            run(small_study_data["fairface"], out, "--overwrite", "--scale", "4")
    assert json.loads((out / "args.json").read_text())["args"]["scale"] == 4
    assert not (out / "per_race.csv").exists()  # the old results went before the new args.json came
    assert run(small_study_data["fairface"], out, "--scale", "4") is not None
    assert {row["scale"] for row in read_csv(out / "per_race.csv")} == {"4"}


def test_a_stale_finished_marker_is_not_taken_for_the_run(small_study_data, tmp_path):
    """A folder an older version left after an interrupted --overwrite: args.json says x4, per_race.csv is x2."""
    out, other = tmp_path / "run", tmp_path / "x4"
    run(small_study_data["fairface"], out)
    run(small_study_data["fairface"], other, "--scale", "4")
    shutil.copy(other / "args.json", out / "args.json")
    with pytest.raises(ValueError, match="per_race.csv is not the result of these arguments \\(scale '2' there, 4 "
                                         "now; an interrupted --overwrite"):
        run(small_study_data["fairface"], out, "--scale", "4")
    run(small_study_data["fairface"], out, "--scale", "4", "--overwrite")
    assert {row["scale"] for row in read_csv(out / "per_race.csv")} == {"4"}


def test_a_finished_run_whose_recipe_is_hashed_otherwise_is_still_skipped(small_study_data, tmp_path, capsys):
    """A run made before data fingerprints (or by a version hashing recipes otherwise): same arguments, skipped."""
    out = tmp_path / "run"
    run(small_study_data["fairface"], out)
    record = json.loads((out / "args.json").read_text())
    del record["data_fingerprints"]
    files.write_json(str(out / "args.json"), record)
    rows = read_csv(out / "per_race.csv")
    for row in rows:
        row["recipe"] = "0123456789"  # hashed the data's path, then
    files.write_csv(str(out / "per_race.csv"), rows)
    assert run(small_study_data["fairface"], out) is None
    assert "skipping" in capsys.readouterr().out


def test_a_second_writer_is_refused_naming_the_holder(small_study_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / run_folder.LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid}))
        with pytest.raises(ValueError, match=f"in use by another run \\(host {socket.gethostname()}, pid "
                                             f"{holder.pid}"):
            run(small_study_data["fairface"], out)
        assert os.listdir(out) == [run_folder.LOCK_FILE]  # nothing read or written there
    finally:
        holder.kill()
        holder.wait()
    # Its process is gone: the lock is stale and taken over.
    assert run(small_study_data["fairface"], out) is not None
    assert not (out / run_folder.LOCK_FILE).exists()


def test_two_runs_started_at_once_on_one_folder_one_is_refused(tmp_path):
    out = str(tmp_path)
    first = run_folder.take_lock(out)
    with pytest.raises(ValueError, match=f"pid {os.getpid()}"):
        run_folder.take_lock(out)
    os.remove(first)
    assert run_folder.take_lock(out) == first


def test_a_resume_on_other_code_is_refused_unless_allowed_and_then_marked(small_study_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(files, "code_version", lambda: "aaaa")
    run(small_study_data["fairface"], out)
    killed(out)
    monkeypatch.setattr(files, "code_version", lambda: "bbbb")
    with pytest.raises(ValueError, match="made by code aaaa, this is bbbb.*--allow-code-change"):
        run(small_study_data["fairface"], out)
    run(small_study_data["fairface"], out, "--allow-code-change")
    record = json.loads((out / "args.json").read_text())
    assert record["code_changes"] == [{"from": "aaaa", "to": "bbbb"}]
    problems = table_runs.Problems()
    loaded = table_runs.load_run(str(out), problems)
    assert loaded.warnings == [run_folder.CODE_CHANGED]
    experiment, = table_experiments.group_experiments([loaded], problems)
    assert experiment.pooled_columns()["warnings"] == run_folder.CODE_CHANGED


def test_code_version_without_git_hashes_the_package(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")
    monkeypatch.setattr(subprocess, "run", no_git)
    assert files.code_version() == f"files-{files.package_hash()}"


def test_a_failed_run_leaves_the_users_own_empty_out_folder(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    args = upscale.get_args_parser().parse_args(["--data", str(tmp_path / "missing"), "--out", str(mine),
                                                 "--arch", "bicubic", "--workers", "0"])
    with pytest.raises(SystemExit, match="error: .*missing"):
        cli.run_script(upscale.main, args)
    assert mine.is_dir() and not any(mine.iterdir())  # the user's folder stays; the run's lock went
