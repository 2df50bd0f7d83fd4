"""summarize at sweep size: generated finished upscaling runs of FairFace-val size, tabulated end to end.

    python -m bench.bench_summarize                          # 182 runs x 10,954 images, 1000 replicates
    python -m bench.bench_summarize --runs 26 --images 2000  # a quick look
    python -m bench.bench_summarize --work /tmp/sweep --keep # keep the runs; a later call reuses them

Not a test and not in CI. The runs are a sweep as racecomp.sweep expands it (the study's own parser and
checks, its folder names), with its docstring's --fixed flags:

    --grid arch=resnet50,fastvit_sa24 minority=none,<the 7 FairFace races> weight=0.2,0.05 scale=2,4 seed=0,1,2
    --grid arch=bicubic scale=2,4

that is 2 archs x 2 scales x 15 minority settings x 3 seeds = 180 trained runs and one bicubic floor per
scale: 182 folders (--runs; fewer take the floors and then whole experiments in order, more add seeds).
Each folder holds what a finished run writes (args.json, per_image.csv, per_race.csv last) through the same
functions (upscale.run_columns, evaluation.mean_by_group and write_results); per-image values are made up
by a seeded rng: image difficulty shared by every run (pairing is by file), a gain over bicubic per arch and
scale, seed-to-seed and seed-by-race noise, a minority penalty on the under-sampled race, rounded to float32
as torch's metrics are. Races are balanced as in FairFace val (10,954 images; --images scales them).

Prints the generation's wall time, peak memory and disk use, then summarize's wall and CPU time, experiments,
files written, problems, and peak memory (ru_maxrss of this process, which imports nothing but
racecomp.tables beforehand, torch with it; the runs are generated in a child process, so their cost is
separate). --profile N adds summarize's N most expensive functions.
"""
import argparse
import cProfile
import json
import math
import multiprocessing
import os
import pstats
import resource
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from racecomp.races import FAIRFACE_RACES, slug
from racecomp.tables import summarize

# FairFace val (fairface_label_val.csv, 0.25 padding): images per race.
FAIRFACE_VAL_COUNTS = {"White": 2085, "Black": 1556, "Latino_Hispanic": 1623, "East Asian": 1550,
                       "Southeast Asian": 1415, "Indian": 1516, "Middle Eastern": 1209}
AGES = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
ARCHS = ("resnet50", "fastvit_sa24")
SCALES = (2, 4)
WEIGHTS = (0.2, 0.05)
FIXED = {"epochs": "20", "batch-size": "64", "data": "/data/fairface", "amp": "bf16", "pretrained": None}
# Made-up but plausible per-image PSNR-Y (dB): bicubic floor per scale, gain of each arch over it, and the
# loss on the under-sampled race per weight.
FLOOR_DB = {2: 30.5, 4: 25.5}
GAIN_DB = {("resnet50", 2): 2.4, ("fastvit_sa24", 2): 2.6, ("resnet50", 4): 1.3, ("fastvit_sa24", 4): 1.4}
PENALTY_DB = {0.2: 0.12, 0.05: 0.35}
RACE_OFFSET_DB = dict(zip(FAIRFACE_RACES, (0.3, -0.4, 0.1, 0.2, -0.1, -0.3, 0.0)))
MARKER = "bench_summarize.json"  # in --work: the generation settings of the runs there (reused when equal)


def race_counts(n_images):
    """Images per race: FairFace val's proportions scaled to n_images (largest remainders)."""
    total = sum(FAIRFACE_VAL_COUNTS.values())
    exact = {race: n_images * count / total for race, count in FAIRFACE_VAL_COUNTS.items()}
    counts = {race: math.floor(value) for race, value in exact.items()}
    for race in sorted(exact, key=lambda r: counts[r] - exact[r])[:n_images - sum(counts.values())]:
        counts[race] += 1
    return counts


def sweep_runs(n_runs, work):
    """racecomp.sweep PlannedRuns of the grid above: the bicubic floors, then trained runs experiment by experiment
    (balanced first, seeds together), with as many seeds as n_runs needs; the first n_runs of them."""
    from racecomp import sweep

    trained = len(ARCHS) * len(SCALES) * (1 + len(FAIRFACE_RACES) * len(WEIGHTS))
    seeds = max(3, math.ceil((n_runs - len(SCALES)) / trained))
    grid = {"arch": ",".join(ARCHS), "minority": ",".join(["none"] + [slug(r) for r in FAIRFACE_RACES]),
            "weight": ",".join(map(str, WEIGHTS)), "scale": ",".join(map(str, SCALES)),
            "seed": ",".join(map(str, range(seeds)))}
    grids = [sweep.parse_grid(["arch=bicubic", f"scale={','.join(map(str, SCALES))}"]),
             sweep.parse_grid([f"{key}={values}" for key, values in grid.items()])]
    runs = sweep.expand("upscale", grids, FIXED, work)
    order = ["none"] + list(FAIRFACE_RACES)

    def position(run):
        a = run.args
        minority = "none" if a.minority == "none" else next(r for r in FAIRFACE_RACES if slug(r) == a.minority)
        return (a.arch != "bicubic", order.index(minority), -a.weight, ARCHS.index(a.arch) if a.arch in ARCHS
                else -1, a.scale, a.seed)

    return sorted(runs, key=position)[:n_runs]


def image_table(n_images, rng):
    """FairFace-val-like rows (file, race, gender, age) in file order, and each image's difficulty (dB)."""
    counts = race_counts(n_images)
    races = np.repeat(list(FAIRFACE_RACES), [counts[r] for r in FAIRFACE_RACES])
    races = races[rng.permutation(n_images)]
    genders = rng.choice(["Male", "Female"], n_images)
    ages = rng.choice(AGES, n_images, p=[0.02, 0.12, 0.11, 0.30, 0.22, 0.12, 0.07, 0.03, 0.01])
    rows = [{"file": f"val/{i + 1}.jpg", "race": str(race), "gender": str(gender), "age": str(age)}
            for i, (race, gender, age) in enumerate(zip(races, genders, ages))]
    return rows, rng.normal(0.0, 2.0, n_images)


def run_values(args, minority, difficulty, race_index, seed):
    """{metric: per-image list} of one run (minority: its under-sampled race or None), as float32 values
    (what torch's metrics give .tolist())."""
    n = len(difficulty)
    floor = FLOOR_DB[args.scale] + np.array(list(RACE_OFFSET_DB.values()))[race_index] + difficulty
    if args.arch == "bicubic":
        psnr, noise = floor, np.random.default_rng([seed, args.scale])
    else:
        arch = np.random.default_rng([seed, ARCHS.index(args.arch), args.scale])  # shared by the arch's runs
        noise = np.random.default_rng([seed, ARCHS.index(args.arch), args.scale, args.seed,
                                       FAIRFACE_RACES.index(minority) + 1 if minority else 0,
                                       int(args.weight * 100)])
        psnr = (floor + GAIN_DB[(args.arch, args.scale)] + 0.4 * arch.normal(size=n)
                + noise.normal(0.0, 0.05) + noise.normal(0.0, 0.03, len(FAIRFACE_RACES))[race_index]
                + 0.15 * noise.normal(size=n))
        if minority:
            psnr = psnr - PENALTY_DB[args.weight] * (race_index == FAIRFACE_RACES.index(minority))
    ssim = np.clip(1.0 / (1.0 + np.exp(-(psnr - 24.0) / 4.0)) + 0.005 * noise.normal(size=n), 0.0, 1.0)
    values = {"psnr_y": psnr, "ssim_y": ssim, "psnr_rgb": psnr - 1.2 + 0.2 * noise.normal(size=n),
              "ssim_rgb": np.clip(ssim - 0.015 + 0.005 * noise.normal(size=n), 0.0, 1.0)}
    return {key: value.astype(np.float32).tolist() for key, value in values.items()}


def record_of(args, code_version, n_images, rng):
    """args.json as run_upscale.py writes it (files.run_record plus the study's facts), plausible values."""
    record = {"args": dict(sorted(vars(args).items())), "code_version": code_version,
              "versions": {"python": "3.11.7", "torch": "2.5.1", "torchvision": "0.20.1", "timm": "1.0.11",
                           "numpy": "1.26.4", "pillow": "10.4.0", "platform": "Linux-x86_64"},
              "study": "upscale", "data_root": args.data, "device": "cuda", "world_size": 1,
              "split_sizes": {"train": 78_530 if args.arch != "bicubic" else 0,
                              "dev": 8_714 if args.arch != "bicubic" else 0, "val": n_images},
              "dropped_unreadable": {"train": 0, "dev": 0, "val": 0}, "train_seconds": 0.0}
    if args.arch != "bicubic":
        history = [{"epoch": epoch, "loss": 0.05 / (1 + epoch) + 0.02, "select_score": 32.0 + 0.1 * epoch}
                   for epoch in range(args.epochs)]
        record.update(parameters=32_000_000, best_epoch=args.epochs - 1, dev_psnr_y=33.0 + rng.normal(0.0, 0.1),
                      history=history, skipped_fp16_steps=0, optimizer_steps=args.epochs * 1227,
                      train_seconds=float(rng.uniform(20_000, 40_000)))
    return record


def generate(work, n_runs, n_images, seed):
    """Write the runs into <work>/runs (see the module docstring); returns their folders."""
    from racecomp import evaluation, files
    from racecomp.studies import upscale

    rng = np.random.default_rng(seed)
    rows, difficulty = image_table(n_images, rng)
    race_index = np.array([FAIRFACE_RACES.index(row["race"]) for row in rows])
    code_version = files.code_version()
    folders = []
    for run in sweep_runs(n_runs, os.path.join(work, "runs")):
        args = run.args  # args.out is the run's folder (absolute), as the script makes it
        os.makedirs(args.out)
        files.write_json(os.path.join(args.out, "args.json"), record_of(args, code_version, n_images, rng))
        values = run_values(args, upscale.check_args(args), difficulty, race_index, seed)
        image_rows = [{**row, **{key: column[i] for key, column in values.items()}} for i, row in enumerate(rows)]
        table = evaluation.mean_by_group(image_rows, evaluation.IMAGE_QUALITY_KEYS, order=FAIRFACE_RACES)
        evaluation.write_results(args.out, image_rows, table, run_columns=upscale.run_columns(args, code_version))
        folders.append(args.out)
    return folders


def _timed_generate(work, n_runs, n_images, seed):
    start = time.perf_counter()
    folders = generate(work, n_runs, n_images, seed)
    return len(folders), time.perf_counter() - start


def disk_bytes(root):
    return sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(root) for name in names)


def rss_mib():
    """Resident memory of this process now, MiB (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="utf-8") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except OSError:
        return math.nan


def max_rss_mib(who):
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    return resource.getrusage(who).ru_maxrss / 1024


def ensure_runs(args, work):
    """Generate the runs in a child process unless <work>/runs holds the same generation; print its cost."""
    runs_dir = os.path.join(work, "runs")
    settings = {"runs": args.runs, "images": args.images, "seed": args.seed}
    marker = os.path.join(work, MARKER)
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as handle:
            if json.load(handle) == settings and os.path.isdir(runs_dir):
                print(f"generation: reusing the runs in {runs_dir} ({disk_bytes(runs_dir) / 2 ** 20:.0f} MiB)")
                return runs_dir
        shutil.rmtree(runs_dir, ignore_errors=True)  # runs of other settings, generated here before
        os.remove(marker)
    elif os.path.exists(runs_dir):
        raise SystemExit(f"--work {work}: holds runs/ that this script did not generate; choose another --work")
    # A fresh interpreter (it imports the study and torch): its memory is not this process's, and its peak is
    # this process's RUSAGE_CHILDREN once it has exited.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as executor:
        count, seconds = executor.submit(_timed_generate, work, args.runs, args.images, args.seed).result()
    with open(marker, "w", encoding="utf-8") as handle:
        json.dump(settings, handle)
    print(f"generation: {count} runs x {args.images} images in {seconds:.1f} s, peak memory "
          f"{max_rss_mib(resource.RUSAGE_CHILDREN):.0f} MiB (child process), disk "
          f"{disk_bytes(runs_dir) / 2 ** 20:.0f} MiB in {runs_dir}")
    return runs_dir


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help)
    parser.add_argument("--runs", type=int, default=182, help="run folders (182: the whole grid, 180 trained "
                        "runs and the bicubic floors)")
    parser.add_argument("--images", type=int, default=10_954, help="images per run (FairFace val: 10,954)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (summarize's default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the made-up values")
    parser.add_argument("--work", default=None, help="folder for runs/ and tables/ (default: a temporary folder, "
                        "removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the runs and tables (a later call with the "
                        "same --work, --runs, --images and --seed reuses the runs)")
    parser.add_argument("--no-figures", action="store_true", help="summarize --no-figures: tables only (the "
                        "difference is the figures' share of the time)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also print summarize's N most expensive functions (cProfile, cumulative time)")
    return parser


def main(args):
    if args.runs < 1 or args.images < len(FAIRFACE_RACES):
        raise SystemExit(f"--runs {args.runs} --images {args.images}: need a run and an image per race")
    work = args.work or tempfile.mkdtemp(prefix="bench_summarize_")
    os.makedirs(work, exist_ok=True)
    print(f"settings: --runs {args.runs} --images {args.images} --n-boot {args.n_boot} --seed {args.seed} "
          f"--work {work}{' --no-figures' if args.no_figures else ''}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    try:
        runs_dir = ensure_runs(args, work)
        before = rss_mib()
        profile = cProfile.Profile() if args.profile else None
        start, cpu = time.perf_counter(), time.process_time()
        if profile:
            profile.enable()
        result = summarize([runs_dir], os.path.join(work, "tables"), n_boot=args.n_boot, seed=args.seed,
                           figures=not args.no_figures)
        if profile:
            profile.disable()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        # CPU time beside wall time: on a shared machine the wall time also counts other processes' turns.
        print(f"summarize: {seconds:.1f} s wall ({cpu:.1f} s CPU) for {args.runs} runs x {args.images} images, "
              f"n_boot {args.n_boot}"
              f"{' (under cProfile: slower)' if profile else ''}; {result['experiments']} experiments, "
              f"{len(result['written'])} files written, {len(result['problems'])} problem(s)")
        print(f"memory: peak {max_rss_mib(resource.RUSAGE_SELF):.0f} MiB (ru_maxrss of this process; "
              f"{before:.0f} MiB resident before summarize, imports included)")
        if profile:
            pstats.Stats(profile).sort_stats("cumulative").print_stats(args.profile)
        return {"seconds": seconds, "cpu_seconds": cpu, **result}
    finally:
        load = os.getloadavg()[0]
        print(f"load average at the end: {load:.2f}")
        if not args.keep:
            for name in ("runs", "tables", MARKER):
                path = os.path.join(work, name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.isfile(path):
                    os.remove(path)
            if args.work is None:
                os.rmdir(work)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
