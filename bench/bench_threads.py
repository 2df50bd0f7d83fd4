"""Wall time of a study command with each thread setting, on a quiet CPU and under a synthetic load.

    python -m bench.bench_threads --load 2 --timeout 600 -- --arch resnet50 --minority black --weight 0.2

Runs `run_upscale.py <arguments after -->` (into a temporary --out, demo data unless --data is given) once per
thread setting and load:
  chosen:       no OMP_NUM_THREADS: the study picks its threads (racecomp.cpus: the idle cores, >= 1);
  all cores:    OMP_NUM_THREADS = the available cores (torch's own default on this machine);
  1 thread:     OMP_NUM_THREADS=1.
Load: none, then --load busy processes (pure Python loops, one core each) started before the command and
stopped after it, as other jobs on a shared machine. A command still running after --timeout seconds is
stopped and reported as "> timeout". The settings take turns within each load, so they see the same
background.
"""
import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time

from racecomp import cpus

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUSY_LOOP = "while True: pass"


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--load", type=int, default=2, help="busy processes of the loaded runs (0: quiet runs only)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a run is stopped")
    parser.add_argument("--settings", nargs="+", default=["chosen", "all cores", "1 thread"],
                        choices=["chosen", "all cores", "1 thread"], help="thread settings to run")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="run_upscale.py arguments, after --")
    return parser


@contextlib.contextmanager
def busy_processes(count):
    """`count` processes spinning on a core each, for the duration of the block."""
    workers = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(count)]
    try:
        time.sleep(1.0)  # let the scheduler see them before the command starts
        yield
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()


def run_command(arguments, setting, timeout):
    """(seconds or None after the timeout, the command's [threads] line) of run_upscale.py with `setting`."""
    environment = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    if setting != "chosen":
        environment["OMP_NUM_THREADS"] = str(cpus.available_cores() if setting == "all cores" else 1)
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, os.path.join(REPOSITORY, "run_upscale.py"), *arguments, "--out", out]
        started = time.perf_counter()
        try:
            result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, ""
        seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    threads = next((line for line in result.stdout.splitlines() if line.startswith("[threads]")), "")
    return seconds, threads


def main(args):
    arguments = [a for a in args.arguments if a != "--"]
    print(f"machine: {cpus.available_cores()} cores available, load average {os.getloadavg()[0]:.2f}; command: "
          f"run_upscale.py {' '.join(arguments)}", flush=True)
    results = {}
    loads = (0, args.load) if args.load else (0,)
    for load in loads:
        with busy_processes(load):
            for setting in args.settings:
                seconds, threads = run_command(arguments, setting, args.timeout)
                results[(load, setting)] = seconds
                shown = f"{seconds:.1f} s" if seconds is not None else f"> {args.timeout:.0f} s (stopped)"
                print(f"load {load} busy process(es), {setting:<9}: {shown}  {threads}", flush=True)
    for setting in args.settings if args.load else ():
        quiet, loaded = results[(0, setting)], results[(args.load, setting)]
        if quiet and loaded:
            print(f"{setting:<9}: loaded / quiet {loaded / quiet:.2f}")
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
