"""What every benchmark shares: the flags, the machine description, timing medians, result lines."""
import argparse
import json
import os
import platform
import statistics
import time

import torch

from racecomp import cli, files, precision, toydata

# Never timed: the first steps/batches of each repeat (worker start-up, allocator and kernel warm-up).
DEFAULT_WARMUP = 2


def bench_parser():
    """Flags shared by the bench scripts (a parent parser)."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("benchmark")
    group.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... or auto")
    group.add_argument("--scale", type=int, nargs="+", choices=(2, 4), default=[2],
                       help="upscaling factors to measure (2: 112->224, 4: 56->224 at --hr-size 224)")
    group.add_argument("--hr-size", type=int, default=224, help="high-resolution image side, px")
    group.add_argument("--batch-size", type=int, default=8, help="images per batch")
    group.add_argument("--repeats", type=int, default=3, help="timed runs per setting; the median is reported")
    group.add_argument("--warmup", type=int, default=DEFAULT_WARMUP,
                       help="untimed batches at the start of each run")
    group.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    group.add_argument("--results", default=None, help="append one JSON line per measured row to this file")
    return parser


def setup(args):
    """Apply --threads, resolve --device, print the machine and settings; returns (device, machine dict)."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = cli.resolve_device(args.device)
    info = machine(device)
    print("machine: " + ", ".join(f"{key} {value}" for key, value in info.items()))
    print("settings: " + " ".join(f"--{key.replace('_', '-')} {value}" for key, value in sorted(vars(args).items())))
    return device, info


def cpu_model():
    """CPU model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(device):
    """CPU model, logical cores, torch threads, torch version, device (GPU name on CUDA), code version, load."""
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["code_version"] = files.code_version()
    # Other processes on a small machine change every figure: keep the load beside the numbers.
    info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


def synchronize(device):
    """Wait for queued GPU work, so a clock reading covers it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_ceiling(device, amp, size=4096, repeats=5):
    """{"matmul": TFLOP/s, "conv": TFLOP/s}: what the device achieves on a (size x size) @ (size x size) matmul and
    on a 3x3 convolution (batch size // 128, min(256, size // 4) channels in and out, 56 x 56, channels_last),
    in the precision `amp` (a key of precision.AMP_DTYPES: bf16 / fp16 tensors on a GPU, fp32 for off, with the
    kernel choice precision.configure_kernels makes); the median of `repeats` timed runs after one warm-up. The
    ceiling a training step's achieved TFLOP/s is read against."""
    dtype = precision.AMP_DTYPES[amp] or torch.float32
    precision.configure_kernels(device, deterministic=False)
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    channels, side, batch = min(256, max(1, size // 4)), 56, max(1, size // 128)
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device, dtype,
                                                                            memory_format=torch.channels_last)
    x = torch.randn(batch, channels, side, side, device=device, dtype=dtype,
                    generator=generator).contiguous(memory_format=torch.channels_last)
    work = {"matmul": (lambda: a @ b, 2 * size**3),
            "conv": (lambda: conv(x), 2 * batch * channels * channels * 9 * side * side)}
    ceiling = {}
    with torch.no_grad():
        for name, (run, flops) in work.items():
            run()
            seconds = []
            for _ in range(repeats):
                synchronize(device)
                start = time.perf_counter()
                run()
                synchronize(device)
                seconds.append(time.perf_counter() - start)
            ceiling[name] = flops / statistics.median(seconds) / 1e12
    return ceiling


def median_summary(values, unit="img/s"):
    """'median <unit> (runs: a, b, c)' with three significant figures."""
    runs = ", ".join(f"{value:.3g}" for value in values)
    return f"{statistics.median(values):.3g} {unit} (runs: {runs})"


def demo_fairface(hr_size, count):
    """Root of a generated demo FairFace (made-up faces) with `count` train images of hr_size px, cached."""
    return toydata.ensure_demo_data("fairface", n_train=count, n_val=7, size=hr_size)


def record(args, info, **row):
    """Print nothing; append {machine, settings, row} as one JSON line to --results when given."""
    if args.results:
        with open(args.results, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"time": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": info,
                                     "settings": vars(args), **row}, default=str) + "\n")
