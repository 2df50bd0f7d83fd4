"""bench/gpu_check.sh at toy sizes on the CPU (GPU_CHECK_TINY=1): every step runs and every file and field is written."""
import csv
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = ("train", "data-2-cores", "data-all-cores", "eval", "summary")
ARCH = "fastvit_t8"  # the smallest encoder; on a GPU the script times resnet50 and fastvit_ma36


def read_lines(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_gpu_check_writes_every_figure_and_the_device(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "GPU_CHECK_TINY": "1", "GPU_CHECK_ARCHS": ARCH,
           "RACECOMP_CACHE": str(tmp_path / "cache"), "PYTHONPATH": ROOT}
    result = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(out / "status.csv", newline="", encoding="utf-8") as handle:
        status = {row["step"]: row["status"] for row in csv.DictReader(handle)}
    assert status == {step: "0" for step in STEPS}, status
    device = json.loads((out / "device.json").read_text())
    assert device["device_name"] and device["device"] == "cpu" and device["amp_auto"] == "off"
    train = read_lines(out / "train.jsonl")
    ceilings = [row for row in train if row["bench"] == "ceiling"]
    assert len(ceilings) == 1 and ceilings[0]["matmul"] > 0 and ceilings[0]["conv"] > 0
    steps = {(row["channels_last"], row["mode"]): row for row in train if row["bench"] == "train"}
    assert set(steps) == {(layout, mode) for layout in (False, True) for mode in ("loader", "synthetic")}
    for row in steps.values():
        assert row["arch"] == ARCH and row["scale"] == 2 and row["amp"] == "off"
        assert row["settings"]["recipe"] == "racecomp" and row["median"] > 0 and row["gflop_per_image"] > 0
        assert row["tflops"] > 0 and row["fraction_of_matmul"] > 0 and row["fraction_of_conv"] > 0
    data = read_lines(out / "data.jsonl")
    assert {(row["source"], row["workers"]) for row in data} >= {("jpeg", 2), ("cache", 2)}
    assert len(data) == 4 and all(row["median"] > 0 for row in data)
    evaluation = {row["name"]: row for row in read_lines(out / "eval.jsonl")}
    assert set(evaluation) == {"project (cpu)", f"evaluate_upscaler {ARCH}"}
    assert all(row["median"] > 0 and row["val_seconds"] > 0 for row in evaluation.values())
    with open(out / "summary.csv", newline="", encoding="utf-8") as handle:
        summary = list(csv.DictReader(handle))
    assert len(summary) == len(train) + len(data) + len(evaluation)
    assert all(row["median"] or row["matmul"] for row in summary)
