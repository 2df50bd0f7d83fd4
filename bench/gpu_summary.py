"""What bench/gpu_check.sh writes besides the bench scripts' own JSON lines: the device, and one summary table.

    python -m bench.gpu_summary OUT    # OUT/device.json (the GPU's name, what runs it), OUT/summary.csv (every
                                       # figure of OUT/{train,data,eval}.jsonl)
"""
import argparse
import csv
import json
import os
import shutil
import subprocess

import torch

from bench import common
from racecomp import cpus, precision

RESULT_FILES = ("train.jsonl", "data.jsonl", "eval.jsonl")
# summary.csv's columns: what a row measured (from its settings), its figure, and the machine.
SUMMARY_COLUMNS = ("bench", "name", "arch", "scale", "mode", "source", "workers", "amp", "channels_last", "median",
                   "unit", "gflop_per_image", "tflops", "fraction_of_matmul", "fraction_of_conv", "matmul", "conv",
                   "val_seconds", "device", "gpu", "cores", "code_version", "command")


def describe_device():
    """The device bench_* --device auto measures: name (torch and nvidia-smi), capability, precision, versions."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = {"device": str(device), "device_name": common.cpu_model(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cores": cpus.available_cores(), "memory_bytes": cpus.memory_bytes(),
            "amp_auto": precision.resolve_amp("auto", device), "nvidia_smi": None}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        info["gpu_memory_bytes"] = torch.cuda.get_device_properties(device).total_memory
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                 "--format=csv,noheader"]
        info["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip()
    return info


def summary_rows(out):
    """One row per JSON line of the bench scripts' result files in `out` (SUMMARY_COLUMNS)."""
    rows = []
    for name in RESULT_FILES:
        path = os.path.join(out, name)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                result = json.loads(line)
                result.pop("settings")  # the settings are in the bench's own JSON line, not the summary
                machine = result.pop("machine")
                row = {**result, "device": machine["device"],
                       "gpu": machine.get("gpu", ""), "cores": machine["cores"],
                       "code_version": machine["code_version"], "command": f"python -m bench.bench_{name[:-6]}"}
                row["unit"] = "TFLOP/s" if result["bench"] == "ceiling" else "img/s"
                if result["bench"] == "ceiling":
                    row["bench"] = "train ceiling"
                rows.append({column: row.get(column, "") for column in SUMMARY_COLUMNS})
    return rows


def main(args):
    with open(os.path.join(args.out, "device.json"), "w", encoding="utf-8") as handle:
        json.dump(describe_device(), handle, indent=1)
    rows = summary_rows(args.out)
    with open(os.path.join(args.out, "summary.csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"device.json; {len(rows)} figures in {os.path.join(args.out, 'summary.csv')}")


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help)
    parser.add_argument("out", help="the gpu_check output folder")
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
