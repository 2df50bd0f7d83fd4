"""Data-loading images/s per DataLoader worker count: JPEG decoding (FairFaceSR) vs the uint8 image cache.

    python -m bench.bench_data --scale 2 --batch-size 16 --workers 0 1 2 --images 256 --repeats 3

Both sources give the same training items (flip, then lr = downscale(hr)); `jpeg` decodes and
resizes each image every epoch, `cache` reads it from imagecache's memory-mapped uint8 array (built once
here: its build time is printed, and it is reused by later runs). Each run is one pass of engine.make_loader
with a balanced MinoritySampler over the demo FairFace at --hr-size; the first --warmup batches (worker
start-up, pipeline fill) are not timed. No model runs: this is the ceiling the loader alone can feed.
"""
import argparse
import statistics
import time

from bench import common
from racecomp import datasets, engine, imagecache, toydata


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=[common.bench_parser()],
                                     add_help=add_help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    group = parser.add_argument_group("data")
    group.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts to measure")
    group.add_argument("--source", nargs="+", choices=("jpeg", "cache"), default=["jpeg", "cache"],
                       help="decode JPEGs every epoch, or read the pre-decoded uint8 cache")
    group.add_argument("--images", type=int, default=256, help="demo FairFace train images (one pass per run)")
    return parser


def one_pass(loader, warmup):
    """Images/s over one pass of `loader`, from the arrival of batch `warmup` to the last one."""
    stamps, sizes = [], []
    for batch in loader:
        stamps.append(time.perf_counter())
        sizes.append(len(batch["index"]))
    if len(stamps) < warmup + 2:
        raise ValueError(f"{len(stamps)} batches per pass: need more than --warmup + 1; raise --images")
    return sum(sizes[warmup + 1:]) / (stamps[-1] - stamps[warmup])


def main(args):
    device, info = common.setup(args)
    records = datasets.read_fairface(common.demo_fairface(args.hr_size, args.images), "train")
    datasets_by_source = {}
    for source in args.source:
        for scale in args.scale:
            if source == "jpeg":
                datasets_by_source[source, scale] = datasets.FairFaceSR(records, scale, hr_size=args.hr_size,
                                                                        train=True)
                continue
            path = imagecache.default_cache_path(records, args.hr_size, toydata.default_cache_dir())
            started = time.perf_counter()
            cache = imagecache.open_image_cache(path, records, args.hr_size, workers=max(args.workers))
            print(f"cache {path}: {'built' if cache.built else 'reused'} in {time.perf_counter() - started:.1f} s, "
                  f"{len(cache)} images of {cache.shape[1]}x{cache.shape[2]} px, "
                  f"{len(cache) * cache.shape[1] * cache.shape[2] * 3 / 1e6:.0f} MB")
            datasets_by_source[source, scale] = imagecache.CachedFairFaceSR(cache, records, scale, train=True)
    results = {}
    for scale in args.scale:
        for workers in args.workers:
            sampler = datasets.MinoritySampler(records, None, 1.0, seed=0)
            loaders = {source: engine.make_loader(datasets_by_source[source, scale], args.batch_size, workers,
                                                  device, sampler=sampler) for source in args.source}
            rates = {source: [] for source in args.source}
            for _ in range(args.repeats):  # sources take turns, so they see the same background load
                for source in args.source:
                    rates[source].append(one_pass(loaders[source], args.warmup))
            for source in args.source:
                median = statistics.median(rates[source])
                print(f"x{scale} {source:<5} workers {workers}: {common.median_summary(rates[source])}", flush=True)
                common.record(args, info, bench="data", scale=scale, source=source, workers=workers,
                              rates=rates[source], median=median)
                results[scale, source, workers] = median
            if len(args.source) == 2:
                print(f"x{scale} workers {workers}: cache / jpeg {rates_ratio(rates):.2f}x", flush=True)
    return results


def rates_ratio(rates):
    return statistics.median(rates["cache"]) / statistics.median(rates["jpeg"])


if __name__ == "__main__":
    main(get_args_parser().parse_args())
