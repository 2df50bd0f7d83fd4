"""Training images/s of the upscalers on the step a recipe runs, and its achieved TFLOP/s against the device's ceiling.

    python -m bench.bench_train --arch fastvit_t8 --scale 2 4 --batch-size 8 --repeats 3

The step is the one `run_upscale.py --recipe racecomp` trains (--recipe none: the study's defaults, an L1 loss
alone): its flags are expanded and parsed by the study's own parser (racecomp.studies.upscale), and the model,
the loss (0.1 L1 + VGG19 perceptual for racecomp), the optimizer and engine.TrainingSettings come from them, as
in a run, with --batch-size images per micro-batch, --amp, --compile and --channels-last (--memory-format) on top and the encoder
not pretrained (the weights change no time). Trainer.train_epoch runs it at epoch 0: the recipe's first stage of
unfreezing (racecomp: the last encoder stage and the decoder train), its accumulation window, clipping, the
non-finite check on the device and the scheduler, so every per-step cost of a real run is in the figure, and
nothing else (no checkpoints, no selection pass). The VGG19 is loaded from --vgg-weights (a torchvision vgg19
state dict) when given, else randomly initialised (said in the output): its time and FLOPs do not depend on
its weights, and nothing is downloaded.
  loader:    a DataLoader (engine.make_loader) over FairFaceSR (uint8 items, made floats on the device) on a
             generated demo FairFace at --hr-size, --workers processes, training flips on, MinoritySampler in
             its balanced mode: the real path. With --source cache it reads imagecache.CachedFairFaceSR.
  synthetic: the same fixed uint8 batch (random hr, lr its downscale by the recipe's --lr-kernel) on the device every step: the
             compute ceiling of the step, with no data loading at all.
Each run times --steps micro-batches after --warmup untimed ones (worker start-up, first allocations,
compiling); the median over --repeats runs is reported, and the ratio loader / synthetic when both are
measured. The FLOPs of one training step per image are counted with torch.utils.flop_counter.FlopCounterMode
(matmuls and convolutions, forward and backward, VGG included); achieved TFLOP/s = FLOPs per image x
images/s, read against the device's own matmul and 3x3-convolution TFLOP/s in the step's precision
(common.measure_ceiling).
"""
import argparse
import dataclasses
import os
import statistics
import tempfile
import time

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from bench import common
from racecomp import datasets, engine, imagecache, precision, recipes, toydata, upscalers
from racecomp.studies import upscale

TRAINABLE_ARCHS = tuple(name for name in upscalers.ARCH_NAMES if name != "bicubic")
RECIPE_CHOICES = (*recipes.names(upscale.NAME), "none")


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=[common.bench_parser()],
                                     add_help=add_help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    group = parser.add_argument_group("training")
    group.add_argument("--arch", nargs="+", choices=TRAINABLE_ARCHS, default=["fastvit_t8"],
                       help="upscaler encoders to measure ('fastvit' = fastvit_ma36, the study's; fastvit_t8 is "
                            "the smallest, for a CPU)")
    group.add_argument("--recipe", choices=RECIPE_CHOICES, default="racecomp",
                       help="whose training step: a run_upscale --recipe (racecomp: 0.1 L1 + VGG19 perceptual), "
                            "or none (the study's defaults: L1 alone)")
    group.add_argument("--vgg-weights", default=None, help="local torchvision vgg19 state dict for the perceptual "
                       "loss (default: random initialisation, the same time and FLOPs)")
    group.add_argument("--mode", nargs="+", choices=("loader", "synthetic"), default=["loader", "synthetic"],
                       help="real data loading, and/or a fixed batch already on the device")
    group.add_argument("--steps", type=int, default=5, help="timed micro-batches per run")
    group.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (loader mode)")
    group.add_argument("--source", choices=("jpeg", "cache"), default="jpeg",
                       help="loader mode: decode JPEGs (FairFaceSR) or read the uint8 image cache")
    group.add_argument("--images", type=int, default=256, help="demo FairFace train images (loader mode)")
    group.add_argument("--amp", choices=precision.AMP_CHOICES, default="auto", help="autocast precision (auto: as "
                       "the studies' default picks it for the device)")
    group.add_argument("--memory-format", nargs="+", choices=("contiguous", "channels_last"), default=["contiguous"],
                       help="memory formats of the model weights and input batches to measure (channels_last: the "
                            "studies' --channels-last)")
    group.add_argument("--compile", action="store_true", help="torch.compile the training forward (the studies' "
                       "flag)")
    group.add_argument("--ceiling-size", type=int, default=4096,
                       help="side of the square matmul of the device's ceiling (common.measure_ceiling); 0: none")
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


def study_args(args, arch, scale, vgg_weights, channels_last=False):
    """The parsed run_upscale arguments of this step: the recipe's flags, then this benchmark's settings."""
    flags = ["--arch", arch, "--scale", str(scale), "--no-pretrained", "--batch-size", str(args.batch_size),
             "--amp", args.amp, "--log-every", "0", "--hr-size", str(args.hr_size)]
    flags += ["--channels-last"] * channels_last + ["--compile"] * args.compile
    if args.recipe != "none":
        flags += ["--recipe", args.recipe]
    parsed = upscale.get_args_parser().parse_args(flags)
    if parsed.perceptual_weight > 0:
        parsed.vgg_weights = vgg_weights
    return parsed


def build_trainer(run_args, device, out_dir, total_steps, plain=False):
    """The Trainer of a run_upscale run with `run_args` (study_args); plain: without --channels-last and
    --compile (counting FLOPs: the same operations)."""
    model = upscale.build_model(run_args).to(device)
    optimizer = engine.build_optimizer(model, run_args.lr, run_args.encoder_lr, run_args.weight_decay,
                                       optimizer=run_args.optimizer)
    compute_loss = upscale.sr_compute_loss(upscale.build_loss(run_args).to(device))
    settings = engine.TrainingSettings.from_args(run_args)
    if plain:
        settings = dataclasses.replace(settings, channels_last=False, compile=False)
    return engine.Trainer(model, compute_loss, optimizer, out_dir, settings, total_steps, device=device)


def synthetic_batch(args, scale, device, kernel):
    """One fixed batch on the device, uint8 as the loader gives it: random hr, lr its downscale by `kernel`."""
    hr = torch.randint(0, 256, (args.batch_size, 3, args.hr_size, args.hr_size), dtype=torch.uint8, device=device)
    return {"hr": hr, "lr": datasets.grey_levels(datasets.downscale(hr, scale, kernel))}


def flops_per_image(run_args, batch, device, out_dir):
    """FLOPs of one training step (forward, loss, backward) per image, by FlopCounterMode."""
    trainer = build_trainer(run_args, device, out_dir, 1, plain=True)
    with FlopCounterMode(display=False) as counter:
        trainer.train_epoch([batch])
    return counter.get_total_flops() / len(batch["hr"])


def vgg_weights_file(args, folder):
    """--vgg-weights, or the `features` of a randomly initialised torchvision vgg19 (all the perceptual loss reads)
    saved into `folder` as a vgg19 state dict: nothing downloaded."""
    if args.vgg_weights is not None:
        return args.vgg_weights
    path = os.path.join(folder, "vgg19_features_random.pth")
    features = torchvision.models.vgg19(weights=None).features
    torch.save({f"features.{key}": value for key, value in features.state_dict().items()}, path)
    return path


def data_loader(args, scale, device, steps_per_run, kernel):
    """DataLoader of the demo FairFace (LR by `kernel`), balanced MinoritySampler drawing `steps_per_run` batches."""
    records = datasets.read_fairface(common.demo_fairface(args.hr_size, args.images), "train")
    if args.source == "cache":
        path = imagecache.default_cache_path(records, args.hr_size, toydata.default_cache_dir())
        cache = imagecache.open_image_cache(path, records, args.hr_size, workers=args.workers)
        dataset = imagecache.CachedFairFaceSR(cache, records, scale, train=True, lr_kernel=kernel)
    else:
        dataset = datasets.FairFaceSR(records, scale, hr_size=args.hr_size, train=True, lr_kernel=kernel)
    sampler = datasets.MinoritySampler(records, None, 1.0, seed=0, num_samples=steps_per_run * args.batch_size)
    return engine.make_loader(dataset, args.batch_size, args.workers, device, sampler=sampler)


def measure(args, arch, scale, device):
    """({memory format: {mode: images/s of each of --repeats runs}}, FLOPs per image, the run's arguments); the
    settings take turns, so all see the same background load."""
    steps_per_run = args.warmup + args.steps
    with tempfile.TemporaryDirectory() as out_dir:  # the trainer writes nothing during train_epoch
        vgg_weights = vgg_weights_file(args, out_dir)
        run_args = study_args(args, arch, scale, vgg_weights)
        fixed_batch = synthetic_batch(args, scale, device, run_args.lr_kernel)
        flops = flops_per_image(run_args, fixed_batch, device, out_dir)
        settings = [(layout, mode) for layout in args.memory_format for mode in args.mode]
        trainers, batches = {}, {}
        for layout, mode in settings:
            layout_args = study_args(args, arch, scale, vgg_weights, channels_last=layout == "channels_last")
            trainers[layout, mode] = build_trainer(layout_args, device, out_dir, steps_per_run * args.repeats)
            if mode not in batches:
                batches[mode] = data_loader(args, scale, device, steps_per_run, run_args.lr_kernel) if mode == "loader" else fixed_batch
        rates = {layout: {mode: [] for mode in args.mode} for layout in args.memory_format}
        for _ in range(args.repeats):
            for layout, mode in settings:
                source = batches[mode] if mode == "loader" else repeat_batch(batches[mode], steps_per_run)
                timed = TimedBatches(source, steps_per_run, device)
                trainers[layout, mode].train_epoch(timed)
                rates[layout][mode].append(timed.images_per_second(args.batch_size, args.warmup))
    return rates, flops, run_args


def describe_step(run_args, vgg_weights):
    """One line: the loss, optimizer and training settings of the step timed."""
    terms = [f"{run_args.pixel_weight:g} {run_args.pixel_loss}"]
    if run_args.perceptual_weight > 0:
        weights = "ImageNet weights from " + vgg_weights if vgg_weights else "randomly initialised (no --vgg-weights)"
        terms.append(f"{run_args.perceptual_weight:g} VGG19 perceptual ({weights})")
    if run_args.ssim_weight > 0:
        terms.append(f"{run_args.ssim_weight:g} (1 - SSIM)")
    return (f"loss {' + '.join(terms)}; {run_args.optimizer}, clip {run_args.clip_grad:g}, accum-steps "
            f"{run_args.accum_steps}, finetune {run_args.finetune}, unfreeze {run_args.unfreeze or 'none'} (epoch 0)")


def main(args):
    device, info = common.setup(args)
    amp = precision.resolve_amp(args.amp, device)
    print(f"step: engine.Trainer.train_epoch of run_upscale --recipe {args.recipe}, amp {args.amp} ({amp} here), "
          f"compile {args.compile}; loader: {args.source}, {args.workers} workers")
    ceiling = {}
    if args.ceiling_size:
        ceiling = common.measure_ceiling(device, amp, args.ceiling_size)
        print(f"device ceiling ({amp}): matmul {ceiling['matmul']:.3g} TFLOP/s ({args.ceiling_size}^3), 3x3 conv "
              f"{ceiling['conv']:.3g} TFLOP/s", flush=True)
        common.record(args, info, bench="ceiling", amp=amp, size=args.ceiling_size, **ceiling)
    results = []
    for arch in args.arch:
        for scale in args.scale:
            rates, flops, run_args = measure(args, arch, scale, device)
            if arch == args.arch[0] and scale == args.scale[0]:
                print("step: " + describe_step(run_args, args.vgg_weights), flush=True)
            print(f"{arch} x{scale}: {flops / 1e9:.4g} GFLOP per image per training step (FlopCounterMode)")
            for layout, by_mode in rates.items():
                medians = {}
                for mode, runs in by_mode.items():
                    medians[mode] = statistics.median(runs)
                    achieved = flops * medians[mode] / 1e12
                    of_ceiling = "".join(f", {100 * achieved / value:.1f}% of the {name} ceiling"
                                         for name, value in ceiling.items())
                    print(f"{arch} x{scale} {args.hr_size // scale}->{args.hr_size} {layout} {mode:<9}: "
                          f"{common.median_summary(runs)}; {achieved:.3g} TFLOP/s{of_ceiling}", flush=True)
                    common.record(args, info, bench="train", arch=arch, scale=scale, mode=mode, amp=amp,
                                  channels_last=layout == "channels_last", rates=runs, median=medians[mode],
                                  gflop_per_image=flops / 1e9, tflops=achieved,
                                  **{f"fraction_of_{name}": achieved / value for name, value in ceiling.items()})
                if len(medians) == 2:
                    ratio = medians["loader"] / medians["synthetic"]
                    print(f"{arch} x{scale} {layout} loader / synthetic: {100 * ratio:.0f}% of the on-device step "
                          f"(target >= 90%: {'met' if ratio >= 0.9 else 'not met'})", flush=True)
                results.append({"arch": arch, "scale": scale, "memory_format": layout,
                                "gflop_per_image": flops / 1e9, **medians})
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
