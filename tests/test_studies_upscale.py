"""The upscaling study (racecomp.studies.upscale, run_upscale.py) end to end on tiny generated FairFace trees."""
import csv
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from racecomp import files, toyfairface
from racecomp.studies import upscale
from racecomp.races import FAIRFACE_RACES

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "run_upscale.py")


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tiny_fairface(tmp_path_factory):
    return toyfairface.make_fairface(str(tmp_path_factory.mktemp("ff") / "fairface"), n_train=70, n_val=28, size=32,
                                 seed=3)


@pytest.fixture(scope="module")
def hard_fairface(tmp_path_factory):
    return toyfairface.make_fairface(str(tmp_path_factory.mktemp("ffhard") / "fairface"), n_train=70, n_val=70,
                                 size=32, seed=4, hard_race="Black", hard_strength=1.0)


def run(data, out, *extra):
    args = upscale.get_args_parser().parse_args(
        ["--data", data, "--out", str(out), "--workers", "0", "--batch-size", "8", "--eval-batch-size", "16",
         "--log-every", "0", *extra])
    return upscale.main(args)


def test_trained_run_writes_every_output(tiny_fairface, tmp_path):
    out = tmp_path / "run"
    run(tiny_fairface, out, "--arch", "fastvit_t8", "--epochs", "1", "--minority", "black", "--weight", "0.2",
        "--save-samples", "1")
    record = json.loads((out / "args.json").read_text())
    assert record["args"]["minority"] == "black" and record["code_version"]
    assert record["args"]["amp"] == "auto" and record["amp_resolved"] == "off"  # asked (in the recipe), and what ran
    assert record["warnings"] == []  # the sanity checks ran, and a working model raises no false alarm
    counts = record["realized_counts"]
    assert counts["Black"]["available"] == 2  # round(0.2 * 9) of the 9 Black train images left after dev
    assert all(c["available"] == 9 for race, c in counts.items() if race != "Black")
    assert record["optimizer_steps"] == math.ceil(record["split_sizes"]["train"] / 8)  # equal compute
    images = read_csv(out / "per_image.csv")
    assert len(images) == 28
    assert set(images[0]) >= {"file", "race", "gender", "age", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"}
    table = read_csv(out / "per_race.csv")
    assert [row["race"] for row in table] == list(FAIRFACE_RACES)
    for row in table:  # every race mean is the mean of its own images, never a batch mean
        members = [float(r["psnr_y"]) for r in images if r["race"] == row["race"]]
        assert int(row["n"]) == len(members)
        assert float(row["psnr_y"]) == pytest.approx(sum(members) / len(members), rel=1e-12)
    assert len({round(float(r["psnr_y"]), 6) for r in images[:16]}) > 8  # one batch: distinct per-image values
    assert (out / "best.pth").exists() and (out / "samples_Black.png").exists()
    assert not (out / "checkpoint.pth").exists()  # the resumable state goes once the run has finished


def test_image_cache_trains_to_the_same_results(tiny_fairface, tmp_path, monkeypatch):
    monkeypatch.setenv("RACECOMP_CACHE", str(tmp_path / "cache"))
    common = ["--arch", "fastvit_t8", "--epochs", "1", "--save-samples", "0", "--seed", "2"]
    run(tiny_fairface, tmp_path / "jpeg", *common)
    run(tiny_fairface, tmp_path / "cached", *common, "--image-cache")
    assert list((tmp_path / "cache" / "imagecache").glob("*.npy"))
    assert read_csv(tmp_path / "jpeg" / "per_image.csv") == read_csv(tmp_path / "cached" / "per_image.csv")


def test_rerun_skips_finished_and_refuses_other_arguments(tiny_fairface, tmp_path, capsys):
    out = tmp_path / "run"
    run(tiny_fairface, out, "--arch", "bicubic", "--save-samples", "0")
    assert run(tiny_fairface, out, "--arch", "bicubic", "--save-samples", "0") is None
    assert "skipping" in capsys.readouterr().out
    with pytest.raises(ValueError, match="different arguments"):
        run(tiny_fairface, out, "--arch", "bicubic", "--scale", "4", "--save-samples", "0")


def test_bicubic_reads_only_the_val_split(tmp_path):
    data = toyfairface.make_fairface(str(tmp_path / "fairface"), n_train=7, n_val=7, size=32, seed=1)
    os.remove(os.path.join(data, "fairface_label_train.csv"))  # e.g. a val-only download
    table = run(data, tmp_path / "run", "--arch", "bicubic", "--save-samples", "0")
    assert sum(row["n"] for row in table) == 7


def test_planted_hard_group_gets_lower_psnr_with_bicubic_and_a_trained_model(hard_fairface, tmp_path):
    for arch, extra in (("bicubic", []), ("fastvit_t8", ["--epochs", "1"])):
        table = run(hard_fairface, tmp_path / arch, "--arch", arch, "--save-samples", "0", *extra)
        psnr = {row["race"]: row["psnr_y"] for row in table}
        others = [value for race, value in psnr.items() if race != "Black"]
        assert psnr["Black"] < min(others) - 1.0, (arch, psnr)


def test_sigkilled_run_resumes_to_the_same_weights_and_csvs(tiny_fairface, tmp_path):
    """Kill -9 a training run at a random point after its first checkpoint; re-running the same command
    continues from that checkpoint and ends exactly where an uninterrupted run ends."""
    def command(out):
        return [sys.executable, SCRIPT, "--data", tiny_fairface, "--out", str(out), "--workers", "0",
                "--batch-size", "8", "--log-every", "0", "--arch", "fastvit_t8", "--epochs", "2",
                "--save-samples", "0", "--seed", "1", "--keep-checkpoint"]

    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    # The uninterrupted run goes alongside (one thread each: the two share the cores rather than wait).
    whole_run = subprocess.Popen(command(tmp_path / "whole"), env=environment, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    victim = subprocess.Popen(command(tmp_path / "killed"), env=environment, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoint.pth"
    deadline = time.time() + 300
    while not checkpoint.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random().uniform(0.0, 0.5))
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "killed" / "per_race.csv").exists(), "killed too late: the run had finished"
    resumed = subprocess.run(command(tmp_path / "killed"), check=True, env=environment, capture_output=True,
                             text=True)
    assert "resuming" in resumed.stdout
    assert whole_run.wait() == 0
    whole = files.load_checkpoint(str(tmp_path / "whole" / "checkpoint.pth"))
    again = files.load_checkpoint(str(checkpoint))
    assert again["epoch"] == whole["epoch"] == 2
    for key, value in whole["model"].items():
        assert torch.equal(value, again["model"][key]), key
    assert read_csv(tmp_path / "whole" / "per_race.csv") == read_csv(tmp_path / "killed" / "per_race.csv")
    assert read_csv(tmp_path / "whole" / "per_image.csv") == read_csv(tmp_path / "killed" / "per_image.csv")


def test_bad_arguments_are_refused_with_the_valid_names(tiny_fairface, tmp_path):
    with pytest.raises(ValueError, match="valid names: .*latino_hispanic"):
        run(tiny_fairface, tmp_path / "a", "--minority", "latino hispanics")
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        run(tiny_fairface, tmp_path / "b", "--minority", "black", "--weight", "0")
    with pytest.raises(ValueError, match="needs --minority"):
        run(tiny_fairface, tmp_path / "c", "--weight", "0.5")


def test_a_corrupt_val_image_stops_the_run_before_training_and_skip_bad_continues(tiny_fairface, tmp_path):
    data = tmp_path / "fairface"
    shutil.copytree(tiny_fairface, data)
    (data / "val" / "3.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"1 unreadable image\(s\), found before training:\n  val/3\.jpg \(CSV line"):
        run(str(data), out, "--arch", "fastvit_t8", "--epochs", "1")
    assert not out.exists()  # nothing written, no optimizer step taken; the folder it made is gone
    run(str(data), out, "--arch", "fastvit_t8", "--epochs", "1", "--skip-bad", "--save-samples", "0")
    record = json.loads((out / "args.json").read_text())
    assert record["dropped_unreadable"] == {"train": 0, "dev": 0, "val": 1}
    assert len(read_csv(out / "per_image.csv")) == 27


def test_compile_runs_train_on_a_loader_that_drops_the_last_partial_batch(tiny_fairface, tmp_path, monkeypatch):
    """--compile compiles for one input shape: the study itself builds its training loader with drop_last."""
    built = []

    class Stop(Exception):
        pass

    def recording_make_loader(dataset, batch_size, workers, device, sampler=None, drop_last=False):
        if sampler is not None:  # the training loader (evaluation loaders have no sampler)
            built.append(drop_last)
            raise Stop
        return make_loader(dataset, batch_size, workers, device, sampler, drop_last)
    make_loader = upscale.engine.make_loader
    monkeypatch.setattr(upscale.engine, "make_loader", recording_make_loader)
    for extra in (["--compile"], []):
        with pytest.raises(Stop):
            run(tiny_fairface, tmp_path / str(len(extra)), "--arch", "fastvit_t8", "--epochs", "1", *extra)
    assert built == [True, False]


def test_a_16_bit_png_in_val_is_scored_as_its_pixels_not_as_white(small_study_data, tmp_path):
    data = tmp_path / "fairface"
    shutil.copytree(small_study_data["fairface"], data)
    with Image.open(data / "val" / "1.jpg") as image:
        grey = np.asarray(image.convert("L")).astype(np.uint16) * 257
    Image.fromarray(grey).save(data / "val" / "1.jpg", format="PNG")  # 16-bit grey, under its .jpg name
    run(str(data), tmp_path / "run", "--arch", "bicubic", "--save-samples", "0")
    row, = [row for row in read_csv(tmp_path / "run" / "per_image.csv") if row["file"] == "val/1.jpg"]
    assert math.isfinite(float(row["psnr_y"])) and float(row["ssim_y"]) < 1.0


def test_an_evaluation_only_run_sets_the_float32_matmul_precision_of_its_device(small_study_data, tmp_path):
    """The bicubic floor builds no Trainer; it still configures float32 matmuls for its device (exact on the CPU,
    TF32 on CUDA), so it rounds as the evaluation after a training run does."""
    torch.set_float32_matmul_precision("high")  # as a CUDA run earlier in this process would have left it
    try:
        run(small_study_data["fairface"], tmp_path / "floor", "--arch", "bicubic", "--save-samples", "0")
        assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.set_float32_matmul_precision("highest")
