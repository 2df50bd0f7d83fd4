"""Evaluation images/s of PSNR + SSIM (metrics.image_quality): batched vs per-image loops, same values.

    python -m bench.bench_eval --scale 2 --batch-size 32 --images 64 --reference-images 8 --repeats 3

Three ways of computing the same four numbers per image (psnr_y, ssim_y, psnr_rgb, ssim_rgb) on pairs
of --hr-size px images (hr random on the uint8 grid, sr = hr plus noise, so no PSNR is infinite):
  batched:          metrics.image_quality on batches of --batch-size, on --device.
  per-image torch:  metrics.image_quality on one image at a time (B = 1), on the CPU.
  per-image numpy:  an independent float64 numpy reference of the same BasicSR/MATLAB convention, one
                    image at a time (as BasicSR's calculate_psnr / calculate_ssim loops): round to the
                    uint8 grid, crop `scale` px, MATLAB Y, Gaussian 11x11 window (sigma 1.5, separable,
                    valid region), E[x^2] - E[x]^2 statistics.
Both per-image loops are asserted equal to the batched values within 1e-9 (float64 sums taken in another
order differ in the last bits: B = 1 vs B = 32 already moves SSIM-RGB by one ulp); the largest gap is printed.
With --arch, evaluation.evaluate_upscaler (model forward + metrics + per-image rows) is also timed on
on-device batches. Every rate is extrapolated to the 10,954 images of FairFace val.
"""
import argparse
import math
import statistics
import time

import numpy as np
import torch

from bench import common
from racecomp import datasets, evaluation, metrics, upscalers

FAIRFACE_VAL_IMAGES = 10954
KEYS = evaluation.IMAGE_QUALITY_KEYS
# float64 sums taken in another order differ in the last digits; anything bigger is a real difference.
REFERENCE_TOLERANCE = 1e-9


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=[common.bench_parser()],
                                     add_help=add_help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    group = parser.add_argument_group("evaluation")
    group.add_argument("--images", type=int, default=64, help="image pairs timed per batched run")
    group.add_argument("--reference-images", type=int, default=8,
                       help="image pairs timed per per-image run (the first ones of the same set)")
    group.add_argument("--arch", nargs="*", choices=upscalers.ARCH_NAMES, default=[],
                       help="also time evaluate_upscaler with these models (untrained, pretrained=False)")
    return parser


# ---------------------------------------------------------------------------------------------- numpy reference

def _reference_taps():
    taps = np.array([math.exp(-((i - 5) ** 2) / (2 * 1.5**2)) for i in range(11)])
    return taps / taps.sum()


def _reference_filter(image, taps):
    """Valid-region 2-D Gaussian filtering of a 2-D float64 array, rows then columns."""
    size = len(taps)
    height, width = image.shape
    rows = sum(taps[k] * image[:, k:k + width - size + 1] for k in range(size))
    return sum(taps[k] * rows[k:k + height - size + 1, :] for k in range(size))


def _reference_ssim(x, y, taps):
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = _reference_filter(x, taps), _reference_filter(y, taps)
    var_x = _reference_filter(x * x, taps) - mu_x**2
    var_y = _reference_filter(y * y, taps) - mu_y**2
    cov = _reference_filter(x * y, taps) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def _reference_psnr(x, y):
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def reference_quality(sr, hr, scale):
    """One (3, H, W) float pair in [0, 1] -> {psnr_y, ssim_y, psnr_rgb, ssim_rgb}, numpy float64."""
    taps = _reference_taps()
    levels = []
    for image in (sr, hr):
        grid = np.round(np.clip(image.astype(np.float64), 0.0, 1.0) * 255.0)
        levels.append(grid[:, scale:-scale, scale:-scale] if scale else grid)
    sr_levels, hr_levels = levels
    y_sr, y_hr = (16.0 + (65.481 * v[0] + 128.553 * v[1] + 24.966 * v[2]) / 255.0 for v in levels)
    return {"psnr_y": _reference_psnr(y_sr, y_hr), "ssim_y": _reference_ssim(y_sr, y_hr, taps),
            "psnr_rgb": _reference_psnr(sr_levels, hr_levels),
            "ssim_rgb": float(np.mean([_reference_ssim(sr_levels[c], hr_levels[c], taps) for c in range(3)]))}


# ---------------------------------------------------------------------------------------------- timing

def image_pairs(count, size, seed=0):
    """(sr, hr), each (count, 3, size, size) float32 in [0, 1]: hr on the uint8 grid, sr = hr + N(0, 0.05)."""
    generator = torch.Generator().manual_seed(seed)
    hr = torch.randint(0, 256, (count, 3, size, size), generator=generator).float() / 255.0
    sr = hr + 0.05 * torch.randn(hr.shape, generator=generator)
    return sr, hr


def time_batched(sr, hr, scale, batch_size, device):
    """(seconds, {key: (N,) float64 cpu}) for image_quality over batches on `device`."""
    batches = [(s.to(device), h.to(device)) for s, h in zip(sr.split(batch_size), hr.split(batch_size))]
    common.synchronize(device)
    started = time.perf_counter()
    parts = [metrics.image_quality(s, h, scale) for s, h in batches]
    common.synchronize(device)
    seconds = time.perf_counter() - started
    return seconds, {key: torch.cat([part[key] for part in parts]).cpu() for key in KEYS}


def time_per_image_torch(sr, hr, scale):
    started = time.perf_counter()
    parts = [metrics.image_quality(sr[i:i + 1], hr[i:i + 1], scale) for i in range(len(sr))]
    seconds = time.perf_counter() - started
    return seconds, {key: torch.cat([part[key] for part in parts]) for key in KEYS}


def time_per_image_numpy(sr, hr, scale):
    sr_arrays, hr_arrays = sr.numpy(), hr.numpy()
    started = time.perf_counter()
    rows = [reference_quality(sr_arrays[i], hr_arrays[i], scale) for i in range(len(sr_arrays))]
    seconds = time.perf_counter() - started
    return seconds, {key: torch.tensor([row[key] for row in rows], dtype=torch.float64) for key in KEYS}


def check_close(batched, reference, name):
    count = len(reference["psnr_y"])
    gap = max(float((batched[key][:count] - reference[key]).abs().max()) for key in KEYS)
    if not gap <= REFERENCE_TOLERANCE:
        raise AssertionError(f"{name}: differs from the batched values by {gap:.3g} > {REFERENCE_TOLERANCE}")
    return gap


def evaluation_batches(sr, hr, scale, batch_size, device):
    """evaluate_upscaler batches: lr = downscale_bicubic(hr) on the device, with placeholder labels."""
    batches = []
    for start in range(0, len(hr), batch_size):
        hr_batch = hr[start:start + batch_size].to(device)
        count = len(hr_batch)
        batches.append({"hr": hr_batch, "lr": datasets.downscale_bicubic(hr_batch, scale),
                        "file": [f"{start + i}.jpg" for i in range(count)], "race": ["White"] * count,
                        "gender": ["Male"] * count, "age": ["20-29"] * count})
    return batches


def time_evaluate_upscaler(model, batches, scale, device):
    common.synchronize(device)
    started = time.perf_counter()
    rows = evaluation.evaluate_upscaler(model, batches, scale, device, show=False)
    common.synchronize(device)
    return time.perf_counter() - started, len(rows)


def report(args, info, name, scale, seconds_per_run, images, **extra):
    rates = [images / seconds for seconds in seconds_per_run]
    rate = statistics.median(rates)
    print(f"x{scale} {name:<26}: {common.median_summary(rates)}; {FAIRFACE_VAL_IMAGES} images in "
          f"{FAIRFACE_VAL_IMAGES / rate:.0f} s", flush=True)
    common.record(args, info, bench="eval", name=name, scale=scale, rates=rates, median=rate,
                  val_seconds=FAIRFACE_VAL_IMAGES / rate, **extra)
    return rate


def main(args):
    device, info = common.setup(args)
    if args.reference_images > args.images:
        raise ValueError("--reference-images must not exceed --images (they are the first of the same set)")
    sr, hr = image_pairs(args.images, args.hr_size)
    results = {}
    for scale in args.scale:
        warmup = args.warmup * args.batch_size
        time_batched(sr[:warmup], hr[:warmup], scale, args.batch_size, device)  # allocator and kernel warm-up
        seconds = {"batched": [], "per-image torch": [], "per-image numpy": []}
        gaps = {"per-image torch": 0.0, "per-image numpy": 0.0}
        for _ in range(args.repeats):  # the three take turns, so they see the same background load
            elapsed, batched = time_batched(sr, hr, scale, args.batch_size, device)
            seconds["batched"].append(elapsed)
            elapsed, per_image = time_per_image_torch(sr[:args.reference_images], hr[:args.reference_images], scale)
            gaps["per-image torch"] = max(gaps["per-image torch"], check_close(batched, per_image, "per-image torch"))
            seconds["per-image torch"].append(elapsed)
            elapsed, reference = time_per_image_numpy(sr[:args.reference_images], hr[:args.reference_images], scale)
            gaps["per-image numpy"] = max(gaps["per-image numpy"], check_close(batched, reference, "numpy reference"))
            seconds["per-image numpy"].append(elapsed)
        rates = {"batched": report(args, info, f"batched (B={args.batch_size})", scale, seconds["batched"],
                                   args.images)}
        for name in ("per-image torch", "per-image numpy"):
            rates[name] = report(args, info, name, scale, seconds[name], args.reference_images, max_gap=gaps[name])
            speedup = rates["batched"] / rates[name]
            print(f"x{scale} batched / {name}: {speedup:.1f}x (target >= 20x: {'met' if speedup >= 20 else 'not met'})")
        print(f"x{scale} largest gap to the batched values: per-image torch {gaps['per-image torch']:.2g}, numpy "
              f"reference {gaps['per-image numpy']:.2g} (asserted <= {REFERENCE_TOLERANCE:g})")
        for arch in args.arch:
            model = upscalers.build_upscaler(arch, scale).to(device)
            batches = evaluation_batches(sr, hr, scale, args.batch_size, device)
            time_evaluate_upscaler(model, batches[:args.warmup], scale, device)
            runs = [time_evaluate_upscaler(model, batches, scale, device)[0] for _ in range(args.repeats)]
            rates[f"evaluate_upscaler {arch}"] = report(args, info, f"evaluate_upscaler {arch}", scale, runs,
                                                        args.images)
        results[scale] = rates
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
