"""Training images/s of the upscalers: with real data loading, and with one batch already on the device.

    python -m bench.bench_train --arch fastvit_t8 --scale 2 4 --batch-size 8 --repeats 3

Each step is engine.Trainer's own: Trainer.train_epoch runs it (forward under the AMP context, L1 loss
through losses.SRLoss and studies.upscale.sr_compute_loss, non-finite check on the device, backward, clipping at
1.0 as the scripts' default, AdamW from engine.build_optimizer, scheduler step), so every per-step cost
of a real run is in the figure, and nothing else (no checkpoints, no selection pass).
  loader:    a DataLoader (engine.make_loader) over FairFaceSR on a generated demo FairFace at --hr-size,
             --workers processes, training flips on, MinoritySampler in its balanced mode: the real path.
             With --source cache it reads imagecache.CachedFairFaceSR instead of decoding JPEGs.
  synthetic: the same fixed batch (random hr, lr = downscale(hr)) on the device every step:
             the compute ceiling, with no data loading at all.
Each run times --steps steps after --warmup untimed ones (worker start-up, first allocations, compiling);
the median over --repeats runs is reported, and the ratio loader / synthetic when both are measured.
"""
import argparse
import statistics
import tempfile
import time

import torch

from bench import common
from racecomp import datasets, engine, imagecache, losses, toydata, upscalers
from racecomp.studies import upscale

TRAINABLE_ARCHS = tuple(name for name in upscalers.ARCH_NAMES if name != "bicubic")


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=[common.bench_parser()],
                                     add_help=add_help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    group = parser.add_argument_group("training")
    group.add_argument("--arch", nargs="+", choices=TRAINABLE_ARCHS, default=["fastvit_t8"],
                       help="upscaler encoders to measure ('fastvit' = fastvit_sa24)")
    group.add_argument("--mode", nargs="+", choices=("loader", "synthetic"), default=["loader", "synthetic"],
                       help="real data loading, and/or a fixed batch already on the device")
    group.add_argument("--steps", type=int, default=5, help="timed optimizer steps per run")
    group.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (loader mode)")
    group.add_argument("--source", choices=("jpeg", "cache"), default="jpeg",
                       help="loader mode: decode JPEGs (FairFaceSR) or read the uint8 image cache")
    group.add_argument("--images", type=int, default=256, help="demo FairFace train images (loader mode)")
    group.add_argument("--amp", choices=engine.AMP_CHOICES, default="off", help="autocast precision (auto: as "
                       "the studies' default picks it for the device)")
    group.add_argument("--channels-last", action="store_true",
                       help="model weights and input batches in channels_last memory format (the studies' flag)")
    group.add_argument("--compile", action="store_true", help="torch.compile the training forward (the studies' "
                       "flag)")
    return parser


class TimedBatches:
    """Feeds `count` batches of `batches` to Trainer.train_epoch and reads the clock between steps.

    stamps[i] is read when the trainer asks for batch i, i.e. once step i - 1 has finished (after a device
    synchronize); stamps[i + 1] - stamps[i] covers waiting for batch i plus its whole training step.
    """

    def __init__(self, batches, count, device):
        self.batches = batches
        self.count = count
        self.device = device
        self.stamps = []

    def __len__(self):
        return self.count

    def __iter__(self):
        self.stamps = []
        iterator = iter(self.batches)
        for _ in range(self.count):
            common.synchronize(self.device)
            self.stamps.append(time.perf_counter())
            yield next(iterator)
        common.synchronize(self.device)
        self.stamps.append(time.perf_counter())

    def images_per_second(self, batch_size, warmup):
        """Images/s over the steps after the first `warmup` ones."""
        return batch_size * (self.count - warmup) / (self.stamps[-1] - self.stamps[warmup])


def repeat_batch(batch, count):
    for _ in range(count):
        yield batch


def build_trainer(args, arch, scale, device, out_dir, total_steps):
    """The Trainer of a run_upscale run with these flags: --amp, --channels-last and --compile are its own."""
    model = upscalers.build_upscaler(arch, scale).to(device)
    optimizer = engine.build_optimizer(model, lr=1e-4)
    compute_loss = upscale.sr_compute_loss(losses.SRLoss(pixel="l1").to(device))
    settings = engine.TrainingSettings(epochs=1, amp=args.amp, clip_grad=1.0, log_every=0,
                                       channels_last=args.channels_last, compile=args.compile)
    return engine.Trainer(model, compute_loss, optimizer, out_dir, settings, total_steps, device=device)


def data_loader(args, scale, device, steps_per_run):
    """DataLoader of the demo FairFace, balanced MinoritySampler drawing exactly `steps_per_run` batches."""
    records = datasets.read_fairface(common.demo_fairface(args.hr_size, args.images), "train")
    if args.source == "cache":
        path = imagecache.default_cache_path(records, args.hr_size, toydata.default_cache_dir())
        cache = imagecache.open_image_cache(path, records, args.hr_size, workers=args.workers)
        dataset = imagecache.CachedFairFaceSR(cache, records, scale, train=True)
    else:
        dataset = datasets.FairFaceSR(records, scale, hr_size=args.hr_size, train=True)
    sampler = datasets.MinoritySampler(records, None, 1.0, seed=0, num_samples=steps_per_run * args.batch_size)
    return engine.make_loader(dataset, args.batch_size, args.workers, device, sampler=sampler)


def measure(args, arch, scale, device):
    """{mode: images/s of each of --repeats runs}; the modes take turns, so both see the same background load."""
    steps_per_run = args.warmup + args.steps
    with tempfile.TemporaryDirectory() as out_dir:  # the trainer writes nothing during train_epoch
        trainers, batches = {}, {}
        for mode in args.mode:
            trainers[mode] = build_trainer(args, arch, scale, device, out_dir, steps_per_run * args.repeats)
            if mode == "loader":
                batches[mode] = data_loader(args, scale, device, steps_per_run)
            else:
                hr = torch.rand(args.batch_size, 3, args.hr_size, args.hr_size, device=device)
                batches[mode] = {"hr": hr, "lr": datasets.downscale(hr, scale)}
        rates = {mode: [] for mode in args.mode}
        for _ in range(args.repeats):
            for mode in args.mode:
                source = batches[mode] if mode == "loader" else repeat_batch(batches[mode], steps_per_run)
                timed = TimedBatches(source, steps_per_run, device)
                trainers[mode].train_epoch(timed)
                rates[mode].append(timed.images_per_second(args.batch_size, args.warmup))
    return rates


def main(args):
    device, info = common.setup(args)
    print(f"step: engine.Trainer.train_epoch (L1 loss, clip 1.0, AdamW), amp {args.amp}, channels_last "
          f"{args.channels_last}, compile {args.compile}; loader: {args.source}, {args.workers} workers")
    results = []
    for arch in args.arch:
        for scale in args.scale:
            rates = measure(args, arch, scale, device)
            medians = {}
            for mode in args.mode:
                medians[mode] = statistics.median(rates[mode])
                print(f"{arch} x{scale} {args.hr_size // scale}->{args.hr_size} {mode:<9}: "
                      f"{common.median_summary(rates[mode])}", flush=True)
                common.record(args, info, bench="train", arch=arch, scale=scale, mode=mode, rates=rates[mode],
                              median=medians[mode])
            if len(medians) == 2:
                ratio = medians["loader"] / medians["synthetic"]
                print(f"{arch} x{scale} loader / synthetic: {100 * ratio:.0f}% of the on-device ceiling "
                      f"(target >= 90%: {'met' if ratio >= 0.9 else 'not met'})", flush=True)
            results.append({"arch": arch, "scale": scale, **medians})
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
