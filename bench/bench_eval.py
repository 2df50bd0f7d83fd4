"""Evaluation images/s of PSNR + SSIM (metrics.image_quality) on the CPU or a device, against reference loops.

    python -m bench.bench_eval --scale 2 4 --batch-size 32 --images 64 --repeats 3 --threads 1

Four ways of computing the same four numbers per image (psnr_y, ssim_y, psnr_rgb, ssim_rgb) on the same
--images pairs of --hr-size px images (hr random on the uint8 grid, sr = hr plus noise, so no PSNR is
infinite), taking turns within each repeat so they see the same background load:
  project:        metrics.image_quality on batches of --batch-size on --device, its default chunking
                  (one image at a time on the CPU, the whole batch on a GPU).
  whole batch:    the same with chunk = the batch: what the CPU path was before it chunked.
  numpy loop:     an independent float64 numpy reference of the same BasicSR/MATLAB convention, one image
                  at a time (as BasicSR's calculate_psnr / calculate_ssim loops): round to the uint8 grid,
                  crop `scale` px, MATLAB Y, Gaussian 11x11 window (sigma 1.5, separable, valid region).
  scikit-image:   skimage.metrics.structural_similarity (gaussian_weights, sigma 1.5, population
                  covariance, data_range 255: its 11x11 window; the reflected border it filters is cropped
                  before the mean, so it is the valid region) and peak_signal_noise_ratio, one image at a
                  time on the same rounded, cropped grey levels and Y. Needs scikit-image (a bench-only
                  dependency: pip install scikit-image); left out with a note when it is missing.
Every loop's values are asserted equal to the project's within REFERENCE_TOLERANCE (float64 sums taken in
another order differ in the last bits); the largest gap and each loop's time / project's time are printed.
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
# float64 sums taken in another order differ in the last digits (~1e-14 dB); anything bigger is a real difference.
REFERENCE_TOLERANCE = 1e-12


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=[common.bench_parser()],
                                     add_help=add_help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    group = parser.add_argument_group("evaluation")
    group.add_argument("--images", type=int, default=64, help="image pairs timed per run of each way")
    group.add_argument("--arch", nargs="*", choices=upscalers.ARCH_NAMES, default=[],
                       help="also time evaluate_upscaler with these models (untrained, pretrained=False)")
    group.add_argument("--only-project", action="store_true", help="time the project's way (and --arch) only, "
                       "none of the others: a full-val-size run on a GPU, where the CPU loops would take minutes")
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


def grey_levels(sr, hr, scale):
    """One (3, H, W) float pair in [0, 1] -> (sr, hr) float64 grey levels on the uint8 grid, cropped, and
    (y_sr, y_hr) their MATLAB Y (numpy)."""
    levels = []
    for image in (sr, hr):
        grid = np.round(np.clip(image.astype(np.float64), 0.0, 1.0) * 255.0)
        levels.append(grid[:, scale:-scale, scale:-scale] if scale else grid)
    luma = [16.0 + (65.481 * v[0] + 128.553 * v[1] + 24.966 * v[2]) / 255.0 for v in levels]
    return levels, luma


def reference_quality(sr, hr, scale):
    """One (3, H, W) float pair in [0, 1] -> {psnr_y, ssim_y, psnr_rgb, ssim_rgb}, numpy float64."""
    taps = _reference_taps()
    (sr_levels, hr_levels), (y_sr, y_hr) = grey_levels(sr, hr, scale)
    return {"psnr_y": _reference_psnr(y_sr, y_hr), "ssim_y": _reference_ssim(y_sr, y_hr, taps),
            "psnr_rgb": _reference_psnr(sr_levels, hr_levels),
            "ssim_rgb": float(np.mean([_reference_ssim(sr_levels[c], hr_levels[c], taps) for c in range(3)]))}


def skimage_quality(sr, hr, scale):
    """The same four numbers from scikit-image's metrics on the same grey levels (see the module doc)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    (sr_levels, hr_levels), (y_sr, y_hr) = grey_levels(sr, hr, scale)
    options = dict(data_range=255.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    return {"psnr_y": peak_signal_noise_ratio(y_hr, y_sr, data_range=255.0),
            "ssim_y": structural_similarity(y_sr, y_hr, **options),
            "psnr_rgb": peak_signal_noise_ratio(hr_levels, sr_levels, data_range=255.0),
            "ssim_rgb": structural_similarity(sr_levels, hr_levels, channel_axis=0, **options)}


# ---------------------------------------------------------------------------------------------- timing

def image_pairs(count, size, seed=0):
    """(sr, hr), each (count, 3, size, size) float32 in [0, 1]: hr on the uint8 grid, sr = hr + N(0, 0.05)."""
    generator = torch.Generator().manual_seed(seed)
    hr = torch.randint(0, 256, (count, 3, size, size), generator=generator).float() / 255.0
    sr = hr + 0.05 * torch.randn(hr.shape, generator=generator)
    return sr, hr


def time_project(sr, hr, scale, batch_size, device, chunk=None):
    """(seconds, {key: (N,) float64 cpu}) for image_quality over batches on `device`."""
    batches = [(s.to(device), h.to(device)) for s, h in zip(sr.split(batch_size), hr.split(batch_size))]
    common.synchronize(device)
    started = time.perf_counter()
    parts = [metrics.image_quality(s, h, scale, chunk) for s, h in batches]
    common.synchronize(device)
    seconds = time.perf_counter() - started
    return seconds, {key: torch.cat([part[key] for part in parts]).cpu() for key in KEYS}


def time_loop(quality, sr, hr, scale):
    """(seconds, values) of quality(sr_i, hr_i, scale) -> {key: float}, one numpy image at a time."""
    sr_arrays, hr_arrays = sr.numpy(), hr.numpy()
    started = time.perf_counter()
    rows = [quality(sr_arrays[i], hr_arrays[i], scale) for i in range(len(sr_arrays))]
    seconds = time.perf_counter() - started
    return seconds, {key: torch.tensor([row[key] for row in rows], dtype=torch.float64) for key in KEYS}


def largest_gap(project, other, name):
    gap = max(float((project[key] - other[key]).abs().max()) for key in KEYS)
    if not gap <= REFERENCE_TOLERANCE:
        raise AssertionError(f"{name}: differs from the project's values by {gap:.3g} > {REFERENCE_TOLERANCE}")
    return gap


def evaluation_batches(sr, hr, scale, batch_size, device):
    """evaluate_upscaler batches: lr = downscale(hr) on the device, with placeholder labels."""
    batches = []
    for start in range(0, len(hr), batch_size):
        hr_batch = hr[start:start + batch_size].to(device)
        count = len(hr_batch)
        batches.append({"hr": hr_batch, "lr": datasets.downscale(hr_batch, scale),
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


def ways(args):
    """name -> function(sr, hr, scale, device) -> (seconds, values) of each way (module doc)."""
    found = {"project": lambda sr, hr, scale, device: time_project(sr, hr, scale, args.batch_size, device)}
    if args.only_project:
        return found
    found |= {"whole batch": lambda sr, hr, scale, device: time_project(sr, hr, scale, args.batch_size, device,
                                                                        chunk=args.batch_size),
              "numpy loop": lambda sr, hr, scale, device: time_loop(reference_quality, sr, hr, scale)}
    try:
        import skimage.metrics  # noqa: F401 (only whether it is there)
        found["scikit-image"] = lambda sr, hr, scale, device: time_loop(skimage_quality, sr, hr, scale)
    except ImportError:
        print("scikit-image is not installed (pip install scikit-image): its loop is left out")
    return found


def main(args):
    device, info = common.setup(args)
    sr, hr = image_pairs(args.images, args.hr_size)
    timed = ways(args)
    results = {}
    for scale in args.scale:
        warmup = args.warmup * args.batch_size
        for way in timed.values():  # allocator and kernel warm-up, imports
            way(sr[:warmup], hr[:warmup], scale, device)
        seconds = {name: [] for name in timed}
        gaps = {name: 0.0 for name in timed if name != "project"}
        for _ in range(args.repeats):  # the ways take turns, so they see the same background load
            values = {}
            for name, way in timed.items():
                elapsed, values[name] = way(sr, hr, scale, device)
                seconds[name].append(elapsed)
            for name in gaps:
                gaps[name] = max(gaps[name], largest_gap(values["project"], values[name], name))
        rates = {name: report(args, info, name if name != "project" else f"project ({device.type})", scale,
                              seconds[name], args.images, max_gap=gaps.get(name, 0.0))
                 for name in timed}
        for name, gap in gaps.items():
            print(f"x{scale} {name} time / project time: {rates['project'] / rates[name]:.2f}; largest gap "
                  f"to the project's values {gap:.2g} (asserted <= {REFERENCE_TOLERANCE:g})")
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
