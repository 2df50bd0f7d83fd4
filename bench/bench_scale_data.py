"""The upscaling study's data layer on a FairFace-size folder: time and peak memory of each phase.

    python -m racecomp.toydata fairface --out /data/fairface --count 86744 --val-count 10954 --size 224
    python -m bench.bench_scale_data --data /data/fairface --minority black --weight 0.2 --workers 2

Phases, each through the study's own functions (racecomp.studies.upscale) with the given run_upscale.py
flags: label reading, dev split and the up-front image check (upscale.load_splits: train headers, dev and
val decoded in full), the under-sampling sampler (MinoritySampler: realized counts and one epoch's order),
the --image-cache build (imagecache, into --cache-dir) and its reopening, and --batches batches of the
training loader from the cache. Each line gives the phase's seconds and the process's peak resident memory
so far (ru_maxrss; DataLoader and check workers are separate processes, their own peaks are printed by
ru_maxrss of the children). Nothing here holds the images in memory: the cache is a memory-mapped file.
"""
import argparse
import os
import resource
import time

from racecomp import cpus, datasets, engine, imagecache
from racecomp.studies import upscale


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", required=True, help="FairFace-layout folder (e.g. made by racecomp.toydata)")
    parser.add_argument("--minority", default="black", help="under-sampled race (run_upscale.py --minority)")
    parser.add_argument("--weight", type=float, default=0.2, help="its weight (run_upscale.py --weight)")
    parser.add_argument("--workers", type=int, default=cpus.available_cores(), help="worker processes")
    parser.add_argument("--hr-size", type=int, default=224, help="high-resolution side, px")
    parser.add_argument("--cache-dir", required=True, help="where the uint8 image cache is written")
    parser.add_argument("--batches", type=int, default=50, help="training batches read from the cache")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size")
    return parser


def peak_mib(who=resource.RUSAGE_SELF):
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


class Phases:
    """Prints each phase's seconds and the peak memory so far."""

    def __init__(self):
        self.started = time.perf_counter()

    def done(self, name, detail=""):
        now = time.perf_counter()
        print(f"{name:<34} {now - self.started:8.1f} s  peak RSS {peak_mib():7.0f} MiB (workers' peak "
              f"{peak_mib(resource.RUSAGE_CHILDREN):.0f} MiB)  {detail}", flush=True)
        self.started = now


def main(args):
    run_args = upscale.get_args_parser().parse_args(
        ["--arch", "fastvit_t8", "--data", args.data, "--minority", args.minority, "--weight", str(args.weight),
         "--workers", str(args.workers), "--hr-size", str(args.hr_size), "--batch-size", str(args.batch_size),
         "--image-cache"])
    minority = upscale.check_args(run_args)
    print(f"data {args.data}, {args.workers} workers, {cpus.available_cores()} cores, load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    phases = Phases()
    splits = upscale.load_splits(run_args)
    phases.done("labels, dev split, image check", ", ".join(f"{k} {len(v)}" for k, v in splits.items()
                                                           if k != "dropped"))
    sampler = datasets.MinoritySampler(splits["train"], minority, run_args.weight, seed=run_args.seed, flips=True)
    order = list(sampler)
    counts = sampler.realized_counts()
    phases.done("under-sampling: counts + 1 epoch", f"{len(order)} draws; {minority} available "
                                                     f"{counts[minority]['available']}")
    path = imagecache.default_cache_path(splits["train"], args.hr_size, args.cache_dir)
    built = os.path.exists(path)
    cache = imagecache.open_image_cache(path, splits["train"], args.hr_size, workers=args.workers)
    phases.done("image cache " + ("reopened (existed)" if built else "built"),
                f"{os.path.getsize(path) / 2**30:.2f} GiB at {path}")
    cache = imagecache.open_image_cache(path, splits["train"], args.hr_size, workers=args.workers)
    phases.done("image cache reopened")
    loader = engine.make_loader(imagecache.CachedFairFaceSR(cache, splits["train"], run_args.scale, train=True),
                                args.batch_size, args.workers, "cpu", sampler=sampler)
    images = 0
    for index, batch in enumerate(loader):
        images += len(batch["hr"])
        if index + 1 == args.batches:
            break
    phases.done(f"{args.batches} training batches (cache)", f"{images} images")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
