"""Cost of the identity metric: evaluation.evaluate_upscaler with and without --identity-model, same images.

    python -m bench.bench_identity --arch fastvit_t8 resnet50 --identity-arch mobilefacenet iresnet18 \\
        --images 16 --batch-size 8 --repeats 3

Per upscaler (--arch, untrained, pretrained=False) and scale, one evaluation pass (model forward, PSNR/SSIM,
per-image rows) over --images high-resolution images of --hr-size px (random, on the uint8 grid, as in
bench_eval), timed without the identity metric and with it for each --identity-arch (random weights: the cost
does not depend on them; faces resized to 112 px as for an arcface_torch backbone.pth: 2 recognition forwards
per image, original and upscaled, in one batch; no flip test). The settings take
turns within each repeat, so they see the same background load; the ratio with / without of the medians is
printed (the target: at most ~1.3).
"""
import argparse
import statistics
import time

import torch

from bench import common
from bench.bench_eval import evaluation_batches, image_pairs
from racecomp import evaluation, facenets, identity, upscalers


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=[common.bench_parser()],
                                     add_help=add_help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    group = parser.add_argument_group("identity metric")
    group.add_argument("--images", type=int, default=16, help="images per timed evaluation pass")
    group.add_argument("--arch", nargs="+", choices=upscalers.ARCH_NAMES, default=["fastvit_t8"],
                       help="upscalers to evaluate (untrained)")
    group.add_argument("--identity-arch", nargs="+", choices=facenets.FACE_MODEL_NAMES,
                       default=["mobilefacenet", "iresnet18"], help="recognition models of the identity metric")
    group.add_argument("--face-px", type=int, default=facenets.FACE_IMAGE_SIZE,
                       help="recognition input side, px (arcface_torch backbones: 112)")
    return parser


def time_pass(model, batches, scale, device, similarity):
    common.synchronize(device)
    started = time.perf_counter()
    rows = evaluation.evaluate_upscaler(model, batches, scale, device, show=False, identity=similarity)
    common.synchronize(device)
    return time.perf_counter() - started, rows


def main(args):
    device, info = common.setup(args)
    _, hr = image_pairs(args.images, args.hr_size)
    torch.manual_seed(0)
    recognisers = {name: facenets.get_model(name).to(device).eval() for name in args.identity_arch}
    results = {}
    for scale in args.scale:
        batches = evaluation_batches(hr, hr, scale, args.batch_size, device)
        for arch in args.arch:
            model = upscalers.build_upscaler(arch, scale).to(device)
            settings = {"without": None}
            settings.update({f"with {name}": identity.IdentitySimilarity(recogniser, args.face_px)
                             for name, recogniser in recognisers.items()})
            for similarity in settings.values():  # warm-up: allocator, kernels, first-call overheads
                time_pass(model, batches[:args.warmup], scale, device, similarity)
            seconds = {name: [] for name in settings}
            for _ in range(args.repeats):
                for name, similarity in settings.items():
                    elapsed, rows = time_pass(model, batches, scale, device, similarity)
                    assert len(rows) == args.images
                    seconds[name].append(elapsed)
            baseline = statistics.median(seconds["without"])
            for name, runs in seconds.items():
                rates = [args.images / elapsed for elapsed in runs]
                ratio = statistics.median(runs) / baseline
                print(f"x{scale} {arch:<12} {name:<20}: {common.median_summary(rates)}; time / without: "
                      f"{ratio:.2f}", flush=True)
                common.record(args, info, bench="identity", arch=arch, scale=scale, setting=name, seconds=runs,
                              ratio=ratio)
                results[(scale, arch, name)] = ratio
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
