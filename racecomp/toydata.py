"""Synthetic demo face datasets in the exact on-disk layouts of FairFace, RFW and BUPT identity folders.
The writers are racecomp.toyfairface (FairFace) and racecomp.toyrfw (RFW, identity folders); this module
caches what they write (ensure_demo_data) and is their command line.

No real face data can be downloaded at run time, so a first run uses these. The faces come from
racecomp.toyfaces: made-up groups that only name parameter distributions, not models of real people, so
numbers measured on them say nothing about real populations. With `hard_race=None` no group is meant
to be easier to upscale or to verify on average (toyfaces explains why). `hard_race` plants a known
difficulty in one group:
- FairFace: more fine, high-frequency skin and hair texture (lower bicubic-upscaling PSNR).
- RFW / identities: more within-identity variation (pose, lighting, expression, occlusion) and less
  between-identity spread (harder verification).
The images of the other groups are byte-identical with and without the knob, because every image and
identity draws from its own seeded random stream.

Landmarks are in pixel coordinates with pixel centres at integer (x, y), x = column.
"""
import contextlib
import hashlib
import inspect
import json
import os
import shutil
import tempfile

from racecomp import cpus
from racecomp.cli import run_script
from racecomp.errors import InputError
from racecomp.races import FAIRFACE_RACES, RFW_RACES, parse_race
from racecomp.toyfairface import make_fairface
from racecomp.toyoutput import GENERATOR_VERSION
from racecomp.toyrfw import make_identities, make_rfw


# ----------------------------------------------------------------------------------------------------
# Cached demo data.

_MAKERS = {"fairface": make_fairface, "rfw": make_rfw, "identities": make_identities}


def default_cache_dir():
    """$RACECOMP_CACHE, else ~/.cache/racecomp."""
    return os.environ.get("RACECOMP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "racecomp")


def ensure_demo_data(kind, cache_dir=None, **params):
    """Path of the demo dataset `kind` ('fairface', 'rfw', 'identities'), generated on the first call.

    `params` go to make_<kind>; the folder is named from the kind and a hash of all (defaulted)
    arguments and GENERATOR_VERSION, so other parameters never reuse a stale set. Generation goes to a
    temporary folder beside it that is renamed into place only when complete.
    """
    if kind not in _MAKERS:
        raise InputError(f"unknown demo data kind {kind!r}; valid: {', '.join(_MAKERS)}")
    maker = _MAKERS[kind]
    bound = inspect.signature(maker).bind("<out_dir>", **params)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    del arguments["out_dir"]
    identifying = {k: v for k, v in arguments.items() if k != "workers"}  # the bytes do not depend on it
    key = json.dumps({"kind": kind, "version": GENERATOR_VERSION, "arguments": identifying}, sort_keys=True,
                     default=str)
    cache_dir = cache_dir or default_cache_dir()
    path = os.path.join(cache_dir, f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:12]}")
    if not os.path.isdir(path):
        os.makedirs(cache_dir, exist_ok=True)
        temporary = tempfile.mkdtemp(dir=cache_dir, prefix=f".{os.path.basename(path)}.tmp-")
        try:
            maker(temporary, **arguments)
            with open(os.path.join(temporary, "demo_parameters.json"), "w") as handle:
                handle.write(key + "\n")
            try:
                os.rename(temporary, path)
            except OSError:
                if not os.path.isdir(path):  # not another process having finished first
                    raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(temporary)
    print(f"Using synthetic demo data (made-up groups, not real people): {kind} at {path}")
    return path


# ----------------------------------------------------------------------------------------------------
# Command line.

def get_args_parser(add_help=True):
    from racecomp.cli import make_parser  # here, not at the top: generating data needs no torch

    parser = make_parser("Write a synthetic demo face dataset (FairFace, RFW or BUPT identity-folder layout; "
                         "made-up groups, not real people)", add_help)
    parser.add_argument("kind", choices=sorted(_MAKERS), help="dataset layout to write")
    parser.add_argument("--out", required=True, help="output folder (must be new or empty)")
    parser.add_argument("--size", type=int, default=None,
                        help="image side in pixels (default: 64 fairface, 112 rfw and identities; "
                             "unaligned rfw canvases are 2x)")
    parser.add_argument("--count", type=int, default=None,
                        help="fairface: train images (default 350; real FairFace: 86744); rfw: identities per race "
                             "(default 30); identities: identities per race (default 16)")
    parser.add_argument("--val-count", type=int, default=None,
                        help="fairface only: val images (default: 40%% of --count, 140; real FairFace: 10954)")
    parser.add_argument("--workers", type=int, default=None,
                        help="fairface only: processes rendering images (default: the CPU cores this process may "
                             "use); the files do not depend on it")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed gives byte-identical files")
    parser.add_argument("--hard-race", default="none",
                        help="group given planted difficulty (slug, e.g. east_asian or african), or none")
    parser.add_argument("--hard-strength", type=float, default=1.0, help="planted difficulty, 0 = none")
    parser.add_argument("--unaligned", action="store_true",
                        help="rfw only: write 2x larger unaligned images (face off-centre, rotated)")
    return parser


def main(args):
    vocabulary = FAIRFACE_RACES if args.kind == "fairface" else RFW_RACES
    hard_race = parse_race(args.hard_race, vocabulary, allow_none=True)
    if args.unaligned and args.kind != "rfw":
        raise InputError("--unaligned applies to rfw only")
    common = {"seed": args.seed, "hard_race": hard_race, "hard_strength": args.hard_strength}
    if args.size is not None:
        common["size"] = args.size
    if args.kind != "fairface" and (args.val_count is not None or args.workers is not None):
        raise InputError("--val-count and --workers apply to fairface only")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers}: must be at least 1")
    if args.val_count is not None and args.val_count < len(FAIRFACE_RACES):
        raise InputError(f"--val-count {args.val_count}: need at least {len(FAIRFACE_RACES)} images so every race "
                         f"is present")
    if args.kind == "fairface":
        if args.count is not None:
            common.update(n_train=args.count, n_val=max(len(FAIRFACE_RACES), round(0.4 * args.count)))
        if args.val_count is not None:
            common["n_val"] = args.val_count
        root = make_fairface(args.out, workers=args.workers or cpus.available_cores(), **common)
        counts = {}
        for split in ("train", "val"):
            with open(os.path.join(root, f"fairface_label_{split}.csv")) as handle:
                counts[split] = sum(1 for _ in handle) - 1  # minus the header
        print(f"wrote FairFace layout: {counts['train']} train + {counts['val']} val images in {root}")
    elif args.kind == "rfw":
        if args.count is not None:
            common["n_ids"] = args.count
        root = make_rfw(args.out, aligned=not args.unaligned, **common)
        images = sum(len(files) for _, _, files in os.walk(os.path.join(root, "test", "data")))
        print(f"wrote RFW layout: {images} images, pairs and landmarks for {', '.join(RFW_RACES)} in {root}")
    else:
        if args.count is not None:
            common["n_ids_per_race"] = args.count
        root = make_identities(args.out, **common)
        images = sum(len(files) for _, _, files in os.walk(root))
        print(f"wrote identity-folder layout: {images} images for {', '.join(RFW_RACES)} in {root}")
    print(f"these are synthetic demo groups, not real people (hard race: {hard_race}, strength {args.hard_strength})")
    return root


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args())
