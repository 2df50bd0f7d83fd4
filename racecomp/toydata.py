"""Synthetic demo face datasets in the exact on-disk layouts of FairFace, RFW and BUPT identity folders.

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
import csv
import hashlib
import inspect
import json
import math
import multiprocessing
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from racecomp import cpus
from racecomp.cli import run_script
from racecomp.errors import InputError
from racecomp.races import FAIRFACE_RACES, RFW_RACES, parse_race
from racecomp.toyfaces import group_styles, render_face, sample_identity, sample_view, similarity_matrix

# Bump when the drawing (racecomp.toyfaces) or the layout changes, so cached demo data is regenerated.
GENERATOR_VERSION = "1"

FAIRFACE_AGE_BINS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
FAIRFACE_GENDERS = ("Male", "Female")

RFW_FOLDS = 10
# Freebase-style ids (m.0 + characters of the Freebase id alphabet, '_' included as in real RFW ids
# such as m.0b__05j). The first character after "m.0" separates the namespaces, so demo RFW and demo
# identity-folder ids can never collide, whatever the seeds.
_ID_ALPHABET = "0123456789bcdfghjklmnpqrstvwxyz_"
_RFW_ID_LEADS = "bcdfgh"
_IDENTITY_ID_LEADS = "jklmnp"

# Distinct random-stream tags per dataset kind, so equal seeds give unrelated faces across kinds.
_STREAM_FAIRFACE, _STREAM_RFW, _STREAM_IDENTITIES = 11, 12, 13

# Texture gain of the hard FairFace group: 1 + _FAIRFACE_HARD_GAIN * hard_strength.
_FAIRFACE_HARD_GAIN = 2.0
# Verification knob: within-identity variation x (1 + gain * strength), between-identity spread / (1 + gain * strength).
_WITHIN_HARD_GAIN = 2.0
_BETWEEN_HARD_GAIN = 1.0


# ----------------------------------------------------------------------------------------------------
# Dataset writers.

def _save_jpeg(pixels, path):
    """JPEG quality 95, written to a temporary name and renamed: a file present under its name is whole."""
    partial = f"{path}.partial"
    Image.fromarray(pixels).save(partial, format="JPEG", quality=95)
    os.replace(partial, path)


UNFINISHED_MARKER = "unfinished_generation.json"


def _prepare_output(out_dir, arguments=None):
    """Create `out_dir`; refuse a non-empty one, so leftovers of another run never mix into a dataset.

    With `arguments` (a maker's that can resume), the folder is marked unfinished with them until
    _finish_output; a folder marked with the same arguments is accepted again, to resume.
    """
    marker = os.path.join(out_dir, UNFINISHED_MARKER)
    text = None if arguments is None else json.dumps(arguments, sort_keys=True) + "\n"
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        resumable = False
        if text is not None and os.path.isfile(marker):
            with open(marker, encoding="utf-8") as handle:
                resumable = handle.read() == text
        if not resumable:
            raise InputError(f"{out_dir}: folder is not empty; demo data is written only into a new or empty folder "
                             f"(or, to resume, into an unfinished one with the same arguments)")
        print(f"resuming the unfinished generation in {out_dir}", flush=True)
    os.makedirs(out_dir, exist_ok=True)
    if text is not None:
        with open(marker, "w") as handle:
            handle.write(text)
    return os.path.abspath(out_dir)


def _finish_output(root):
    os.remove(os.path.join(root, UNFINISHED_MARKER))


def _check_common(size, seed, hard_race, hard_strength, vocabulary):
    if size < 16:
        raise InputError(f"size must be at least 16 px, got {size}")
    if seed < 0:
        raise InputError(f"seed must be >= 0, got {seed}")
    if hard_strength < 0:
        raise InputError(f"hard_strength must be >= 0, got {hard_strength}")
    if hard_race is not None and hard_race not in vocabulary:
        raise InputError(f"hard_race {hard_race!r} is not one of {list(vocabulary)}")


def _balanced_labels(rng, count, vocabulary):
    """`count` labels, each label of `vocabulary` used count // len or +1 times, in seeded random order."""
    labels = [vocabulary[i % len(vocabulary)] for i in range(count)]
    rng.shuffle(labels)
    return labels


def _fairface_image(job):
    """Render and write one FairFace demo image; job = (path, seed, split_index, index, race, size, gain).

    The image depends on the job only (its own random stream), so any number of processes in any order
    writes the same bytes.
    """
    path, seed, split_index, index, race, size, gain = job
    rng = np.random.default_rng([seed, _STREAM_FAIRFACE, split_index, index])
    identity = sample_identity(rng, group_styles(FAIRFACE_RACES)[race])
    view = sample_view(rng)
    # Loose crop with margin: the face spans about 60% of the image, small pose jitter.
    scale = size / 112.0 * 0.62 * float(np.exp(rng.normal(0.0, 0.05)))
    angle = math.radians(float(rng.normal(0.0, 5.0)))
    centre = ((size - 1) / 2 + rng.normal(0.0, 0.03 * size), (size - 1) / 2 + rng.normal(0.0, 0.03 * size))
    matrix = similarity_matrix(scale, angle, (56.0, 64.0), centre)
    pixels, _ = render_face(identity, view, matrix, size, size, texture_gain=gain, rng=rng)
    _save_jpeg(pixels, path)


def _run_jobs(function, jobs, workers, label):
    """function(job) for every job, in `workers` processes (1: in this one), with progress lines."""
    from racecomp.progress import Progress

    progress = Progress(label, len(jobs))
    if workers <= 1 or len(jobs) < 2:
        for job in jobs:
            function(job)
            progress.update(1)
    else:
        # spawn: a fresh interpreter per worker, safe whatever threads the caller (e.g. torch) has started.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(function, jobs, chunksize=max(1, min(64, len(jobs) // (8 * workers)))):
                progress.update(1)
    progress.finish()


def make_fairface(out_dir, n_train=350, n_val=140, size=64, seed=0, hard_race=None, hard_strength=1.0, workers=1):
    """Write a FairFace-layout demo set: fairface_label_{train,val}.csv and train/, val/ JPEGs (quality 95).

    Each image is a new identity; races are balanced to within one image over FAIRFACE_RACES in both
    splits (so each split needs at least 7 images). age, gender and service_test are random labels,
    independent of the image. `hard_race` gets `1 + 2 * hard_strength` times the fine skin/hair texture.
    `workers` processes render the images (the bytes do not depend on it). Until the label CSVs are
    written, last, the folder holds UNFINISHED_MARKER: the same call again (after a crash or Ctrl-C) keeps
    the images already there and renders the rest. Returns the absolute root path.
    """
    _check_common(size, seed, hard_race, hard_strength, FAIRFACE_RACES)
    for split, count in (("train", n_train), ("val", n_val)):
        if count < len(FAIRFACE_RACES):
            raise InputError(f"n_{split}={count}: need at least {len(FAIRFACE_RACES)} images so every race is present")
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    root = _prepare_output(out_dir, {"kind": "fairface", "version": GENERATOR_VERSION, "n_train": n_train,
                                     "n_val": n_val, "size": size, "seed": seed, "hard_race": hard_race,
                                     "hard_strength": hard_strength})
    jobs, tables = [], {}
    for split_index, (split, count) in enumerate((("train", n_train), ("val", n_val))):
        os.makedirs(os.path.join(root, split), exist_ok=True)
        label_rng = np.random.default_rng([seed, _STREAM_FAIRFACE, split_index])
        races = _balanced_labels(label_rng, count, FAIRFACE_RACES)
        rows = []
        for index, race in enumerate(races, start=1):
            name = f"{split}/{index}.jpg"
            gain = 1.0 + _FAIRFACE_HARD_GAIN * hard_strength if race == hard_race else 1.0
            if not os.path.isfile(os.path.join(root, name)):
                jobs.append((os.path.join(root, name), seed, split_index, index, race, size, gain))
            rows.append((name, FAIRFACE_AGE_BINS[int(label_rng.integers(len(FAIRFACE_AGE_BINS)))],
                         FAIRFACE_GENDERS[int(label_rng.integers(2))], race, str(bool(label_rng.random() < 0.5))))
        tables[split] = rows
    val_first = [job for job in jobs if job[2] == 1] + [job for job in jobs if job[2] == 0]  # the smaller split
    _run_jobs(_fairface_image, val_first, workers, f"generate {size} px")
    for split, rows in tables.items():
        with open(os.path.join(root, f"fairface_label_{split}.csv"), "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["file", "age", "gender", "race", "service_test"])
            writer.writerows(rows)
    _finish_output(root)
    return root


def _make_ids(rng, count, leads, taken):
    """`count` new Freebase-style ids (m.0 + lead + 5 characters) not in `taken`; adds them to `taken`."""
    ids = []
    while len(ids) < count:
        middle = "".join(rng.choice(list(_ID_ALPHABET), size=4))
        tail = rng.choice(list(_ID_ALPHABET[:-1]))  # no trailing '_'
        identity_id = "m.0" + leads[int(rng.integers(len(leads)))] + middle + tail
        if identity_id not in taken:
            taken.add(identity_id)
            ids.append(identity_id)
    return ids


def _verification_knobs(race, hard_race, hard_strength):
    """(within-identity variation, between-identity spread, occlusion probability) of `race`."""
    if race != hard_race:
        return 1.0, 1.0, 0.1
    return (1.0 + _WITHIN_HARD_GAIN * hard_strength, 1.0 / (1.0 + _BETWEEN_HARD_GAIN * hard_strength),
            0.1 * (1.0 + 3.0 * hard_strength))


def _render_identity_images(identity, rng, count, size, variation, occlusion_probability, aligned):
    """`count` (pixels, landmarks) views of one identity: aligned crops at `size` or unaligned 2x canvases."""
    images = []
    for _ in range(count):
        view = sample_view(rng, variation, occlusion_probability)
        if aligned:
            # Template frame scaled to `size`, with small pose jitter (within-identity variation).
            scale = size / 112.0 * float(np.exp(rng.normal(0.0, 0.04 * variation)))
            angle = math.radians(float(rng.normal(0.0, 4.0 * variation)))
            shift = rng.normal(0.0, 0.025 * size * variation, size=2)
            centre = (56.0 * size / 112.0 + shift[0], 56.0 * size / 112.0 + shift[1])
            height = width = size
        else:
            # Bigger canvas, face off-centre and rotated, so alignment has real work to do.
            height = width = 2 * size
            scale = size / 112.0 * float(rng.uniform(0.8, 1.2))
            angle = math.radians(float(rng.uniform(-25.0, 25.0)))
            centre = (size + rng.uniform(-0.3, 0.3) * size, size + rng.uniform(-0.3, 0.3) * size)
        matrix = similarity_matrix(scale, angle, (56.0, 56.0), centre)
        images.append(render_face(identity, view, matrix, height, width, rng=rng))
    return images


def make_rfw(out_dir, n_ids=30, images_per_id=4, pairs_per_fold=10, size=112, seed=0, hard_race=None,
             hard_strength=1.0, aligned=True):
    """Write an RFW-layout demo test set: test/data, and per race the pairs and lmk files.

    `n_ids` identities per race, `images_per_id` images each (numbered from 1). Identities are split
    into 10 disjoint folds; each fold lists `pairs_per_fold` genuine then `pairs_per_fold` impostor
    pairs (impostors within the race and fold), without repeated pairs. The lmk file gives each image's
    true 5 landmarks; its middle field is the identity's index within the race. aligned=True: `size`
    px crops near the ArcFace template; False: 2*size px canvases with the face off-centre and rotated.
    Returns the absolute root path.
    """
    _check_common(size, seed, hard_race, hard_strength, RFW_RACES)
    if n_ids < 2 * RFW_FOLDS:
        raise InputError(f"n_ids={n_ids}: need at least {2 * RFW_FOLDS} identities per race "
                         "(2 per fold for impostor pairs)")
    if images_per_id < 2:
        raise InputError(f"images_per_id={images_per_id}: genuine pairs need at least 2 images per identity")
    if pairs_per_fold < 1:
        raise InputError(f"pairs_per_fold must be >= 1, got {pairs_per_fold}")
    ids_per_fold = n_ids // RFW_FOLDS  # the smallest fold decides how many distinct pairs exist
    genuine_available = ids_per_fold * images_per_id * (images_per_id - 1) // 2
    impostor_available = ids_per_fold * (ids_per_fold - 1) // 2 * images_per_id ** 2
    if pairs_per_fold > min(genuine_available, impostor_available):
        raise InputError(f"pairs_per_fold={pairs_per_fold} exceeds the {min(genuine_available, impostor_available)} "
                         f"distinct pairs per fold that n_ids={n_ids}, images_per_id={images_per_id} allow")
    root = _prepare_output(out_dir)
    styles = group_styles(RFW_RACES)
    taken = set()
    for race_index, race in enumerate(RFW_RACES):
        variation, spread, occlusion_probability = _verification_knobs(race, hard_race, hard_strength)
        id_rng = np.random.default_rng([seed, _STREAM_RFW, race_index])
        ids = _make_ids(id_rng, n_ids, _RFW_ID_LEADS, taken)
        lmk_lines = []
        for label, identity_id in enumerate(ids):
            rng = np.random.default_rng([seed, _STREAM_RFW, race_index, label])
            identity = sample_identity(rng, styles[race], spread)
            folder = os.path.join(root, "test", "data", race, identity_id)
            os.makedirs(folder)
            images = _render_identity_images(identity, rng, images_per_id, size, variation, occlusion_probability,
                                             aligned)
            for n, (pixels, landmarks) in enumerate(images, start=1):
                name = f"{identity_id}_{n:04d}.jpg"
                _save_jpeg(pixels, os.path.join(folder, name))
                coordinates = "\t".join(f"{value:.2f}" for value in landmarks.reshape(-1))
                lmk_lines.append(f"test/data/{race}/{identity_id}/{name}\t{label}\t{coordinates}\n")
        pair_lines = _rfw_pairs(id_rng, ids, images_per_id, pairs_per_fold)
        txt_folder = os.path.join(root, "test", "txts", race)
        os.makedirs(txt_folder)
        with open(os.path.join(txt_folder, f"{race}_pairs.txt"), "w") as handle:
            handle.writelines(pair_lines)
        with open(os.path.join(txt_folder, f"{race}_lmk.txt"), "w") as handle:
            handle.writelines(lmk_lines)
    return root


def _rfw_pairs(rng, ids, images_per_id, pairs_per_fold):
    """Pair lines of one race: 10 folds over disjoint identities, each genuine lines then impostor lines."""
    order = rng.permutation(len(ids))
    lines = []
    for fold in range(RFW_FOLDS):
        members = [ids[i] for i in order[fold::RFW_FOLDS]]
        genuine = [(member, n1, n2) for member in members
                   for n1 in range(1, images_per_id + 1) for n2 in range(n1 + 1, images_per_id + 1)]
        impostor = [(a, n1, b, n2) for i, a in enumerate(members) for b in members[i + 1:]
                    for n1 in range(1, images_per_id + 1) for n2 in range(1, images_per_id + 1)]
        for index in rng.choice(len(genuine), size=pairs_per_fold, replace=False):
            lines.append("{}\t{}\t{}\n".format(*genuine[index]))
        for index in rng.choice(len(impostor), size=pairs_per_fold, replace=False):
            lines.append("{}\t{}\t{}\t{}\n".format(*impostor[index]))
    return lines


def make_identities(out_dir, n_ids_per_race=16, images_per_id=6, size=112, seed=0, hard_race=None,
                    hard_strength=1.0, overlap_with_rfw=None):
    """Write a BUPT-layout identity-folder demo set: <Race>/<id>/<id>_<NNNN>.jpg, aligned `size` px crops.

    Ids come from a namespace disjoint from make_rfw's, so the two never share an identity, whatever
    the seeds. overlap_with_rfw=<RFW root> deliberately copies one RFW identity that its pairs use
    (with its images) into the set, to test overlap guards. Returns the absolute root.
    """
    _check_common(size, seed, hard_race, hard_strength, RFW_RACES)
    if n_ids_per_race < 1 or images_per_id < 1:
        raise InputError(f"need n_ids_per_race >= 1 and images_per_id >= 1, got {n_ids_per_race}, {images_per_id}")
    overlap = _first_rfw_identity(overlap_with_rfw) if overlap_with_rfw is not None else None
    root = _prepare_output(out_dir)
    styles = group_styles(RFW_RACES)
    taken = set()
    for race_index, race in enumerate(RFW_RACES):
        variation, spread, occlusion_probability = _verification_knobs(race, hard_race, hard_strength)
        ids = _make_ids(np.random.default_rng([seed, _STREAM_IDENTITIES, race_index]), n_ids_per_race,
                        _IDENTITY_ID_LEADS, taken)
        for label, identity_id in enumerate(ids):
            rng = np.random.default_rng([seed, _STREAM_IDENTITIES, race_index, label])
            identity = sample_identity(rng, styles[race], spread)
            folder = os.path.join(root, race, identity_id)
            os.makedirs(folder)
            images = _render_identity_images(identity, rng, images_per_id, size, variation, occlusion_probability, True)
            for n, (pixels, _) in enumerate(images, start=1):
                _save_jpeg(pixels, os.path.join(folder, f"{identity_id}_{n:04d}.jpg"))
    if overlap is not None:
        race, identity_id, source = overlap
        shutil.copytree(source, os.path.join(root, race, identity_id))
    return root


def _first_rfw_identity(rfw_root):
    """(race, id, folder) of the identity in the first line of the first race's pairs file of an RFW tree.

    Taken from the pairs, not the folders, so that the overlap is one that an evaluation actually uses.
    """
    for race in RFW_RACES:
        pairs_path = os.path.join(rfw_root, "test", "txts", race, f"{race}_pairs.txt")
        if os.path.isfile(pairs_path):
            with open(pairs_path) as handle:
                identity_id = handle.readline().split("\t")[0]
            folder = os.path.join(rfw_root, "test", "data", race, identity_id)
            if not os.path.isdir(folder):
                raise InputError(f"{pairs_path}:1: identity {identity_id!r} has no folder {folder}")
            return race, identity_id, folder
    raise InputError(f"overlap_with_rfw={rfw_root}: no test/txts/<Race>/<Race>_pairs.txt found")


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
