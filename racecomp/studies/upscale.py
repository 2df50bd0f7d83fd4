"""Upscaling study: train a super-resolution UNet on FairFace with one race under-represented, score it per race.

Surface (every study's; the run from start to end is racecomp.studies.run_folder.run_study's): get_args_parser,
check_args, run_columns, data_folders, the hooks build_model / prepare / train / evaluate, main; evaluation_data
and evaluate_to_dir score any upscaler (quantization's too). run_upscale.py and racecomp.sweep use it.

Without --data it runs on the built-in synthetic demo FairFace. Writes to --out: args.json,
best.pth (the weights chosen on dev), per_image.csv, per_race.csv (written last: a finished run), sample
grids; checkpoint.pth (resumable state) only while the run is unfinished, or with --keep-checkpoint.
Selection (the best epoch) uses dev, a seeded race-stratified carve-out of train; val is only reported.

Several GPUs or nodes: start the same command with torchrun, one process per GPU (DistributedDataParallel).
--batch-size is per process, so the global batch is batch-size x processes x accum-steps.

    torchrun --standalone --nproc_per_node 4 run_upscale.py --arch resnet50 --batch-size 4
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d \\
        --rdzv_endpoint host0:29500 run_upscale.py ...      # the same with --node_rank 1 on the second node

Each process uses cuda:LOCAL_RANK (--device auto or cuda; gloo on CPU); the sampler's global epoch order
and flips are the same whatever the number of processes; evaluation is sharded over processes and
gathered; only rank 0 writes files. --out (and --data) must be on a file system every node shares.
A run folder records its process count (world_size), and resuming it with another count is refused.

Identity after upscaling (--identity-model: an arcface_torch backbone.pth with --identity-arch, or a
finished run_verify folder): per_image.csv and per_race.csv gain id_cos, the cosine similarity between
the recognition embeddings of the upscaled face and of the high-resolution original (racecomp.identity:
faces as 8-bit images, resized, not aligned, to the recognition model's input, 112 px or the verify run's
--image-size; [-1, 1]; fp32, eval mode; no flip test), computed batch by batch inside the evaluation pass.
Its bicubic reference is an --arch bicubic run with the same --identity-model, which summarize.py pairs
with the model runs by image.

    python run_upscale.py --arch resnet50 --identity-model backbone.pth --identity-arch iresnet50
    python run_upscale.py --arch resnet50 --identity-model runs/verify/<run>
"""
import argparse
import math
import os
from dataclasses import dataclass

from racecomp import (cli, cpus, datasets, distributed, engine, evaluation, facenets, files, identity, imagecache,
                      losses, precision, runs, sanity, schema, toydata, upscalers)
from racecomp.errors import InputError
from racecomp.races import FAIRFACE_RACES, slug
from racecomp.studies import run_folder

NAME = "upscale"
MINORITY_RACES = FAIRFACE_RACES
# Columns of per_race.csv that name the experiment; every other result-changing flag goes into `recipe`.
IDENTIFYING = ("arch", "scale", "upsampler", "minority", "weight", "minority_mode", "finetune")
# Progress lines and sample grids change no number; --image-cache gives the same items as JPEG decoding
# (tests/test_studies_upscale.py checks identical results).
NON_RESULT_ARGS = (schema.NON_RESULT_ARGS + schema.KERNEL_ARGS + schema.RESUME_ARGS
                   + ("log_every", "save_samples", "image_cache"))
FINAL_WEIGHTS = runs.FINAL_WEIGHTS[NAME]
DATA_ARGS = ("data",)  # folder arguments, recorded as absolute paths
ARCFACE_FACE_PX = 112  # input size of every arcface_torch backbone
# What can change the bicubic floor's numbers (besides scale, an identifying column): which val images, at
# which size, how their LR images are made, and the identity metric's recognition model. Training flags
# cannot, so two bicubic runs that differ only in them are one experiment.
BICUBIC_SETTINGS = ("data", "hr_size", "lr_kernel", "skip_bad", "identity_model", "identity_arch")


def get_args_parser(add_help=True):
    parser = cli.make_parser(__doc__.split("\n")[0], add_help)
    cli.add_recipe_argument(parser, NAME)
    data = cli.add_data_arguments(parser, "FairFace root (fairface_label_train.csv, train/, val/); default: "
                                          "the built-in synthetic demo data", MINORITY_RACES)
    data.add_argument("--minority-mode", choices=datasets.SAMPLER_MODES, default="subsample",
                      help="subsample: keep a seeded fraction W of that race's images; reweight: draw that race "
                           "W times as often (same epoch length either way)")
    data.add_argument("--skip-bad", action="store_true", help="drop unreadable images (counted) instead of "
                      "stopping at the first one")
    data.add_argument("--image-cache", action="store_true", help="decode the training images once into a "
                      "memory-mapped uint8 cache under $RACECOMP_CACHE/imagecache (rebuilt when the images "
                      "change; the same items as JPEG decoding), so epochs are not bound by JPEG decoding")
    data.add_argument("--hr-size", type=int, default=None, help="high-resolution size in px (default: the "
                      "images' native size, 224 for FairFace's 0.25-margin release)")
    data.add_argument("--lr-kernel", choices=datasets.LR_KERNELS, default="bicubic", help="antialiased kernel "
                      "that makes the low-resolution images (training, dev and val; the RaceComp source's: "
                      "bilinear); the bicubic floor is comparable only with runs of the same kernel")
    data.add_argument("--epoch-copies", type=int, default=None, help="an epoch is this many draws per FairFace "
                      "train image (dev included, before under-sampling): 6 takes the RaceComp source's optimizer "
                      "steps per epoch (6 augmented copies of each train image); unset: one draw per image of "
                      "the training split (train less dev)")
    cli.add_training_arguments(parser)
    model = parser.add_argument_group("model")
    model.add_argument("--arch", choices=upscalers.ARCH_NAMES, default="resnet50",
                       help="encoder of the UNet ('fastvit' = fastvit_ma36, the study's), or bicubic (no training)")
    model.add_argument("--scale", type=int, choices=upscalers.SCALES, default=2, help="upscaling factor "
                       "(2: 112->224, 4: 56->224 on FairFace)")
    model.add_argument("--upsampler", choices=upscalers.UPSAMPLERS, default="pixelshuffle",
                       help="sub-pixel convolution, interpolation + conv, or over-scale then down-scale")
    model.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=False,
                       help="start the encoder from timm ImageNet weights")
    model.add_argument("--pretrained-path", default=None, help="local file of those weights (offline)")
    model.add_argument("--last-blocks", choices=upscalers.LAST_BLOCKS, default="encoder", help="FastViT only: the "
                       "blocks of the encoder's last stage train with the encoder (--encoder-lr, opened with their "
                       "stage by --unfreeze) or with the decoder (--lr, from the start), as the source's "
                       "VitUpscaler trained them (its `out`)")
    loss = parser.add_argument_group("loss")
    loss.add_argument("--pixel-loss", choices=("l1", "charbonnier"), default="l1", help="pixel loss")
    loss.add_argument("--pixel-weight", type=float, default=1.0, help="weight of the pixel loss")
    loss.add_argument("--pixel-space", choices=losses.PIXEL_SPACES, default="rgb", help="images the pixel loss "
                      "compares: rgb in [0, 1], or imagenet-normalized ((x - mean) / std per channel, as the "
                      "RaceComp source: its L1 is about 4.4x the same L1 in rgb)")
    loss.add_argument("--perceptual-weight", type=float, default=0.0, help="weight of the VGG19 perceptual loss")
    loss.add_argument("--vgg-layer-weights", default=",".join(f"{w:g}" for w in losses.DEFAULT_VGG_LAYER_WEIGHTS),
                      help=f"weights of the perceptual loss's VGG19 layers {', '.join(losses.DEFAULT_VGG_LAYERS)} "
                           f"(pre-ReLU conv outputs; L1 between features), comma-separated")
    loss.add_argument("--ssim-weight", type=float, default=0.0, help="weight of the (1 - SSIM) loss")
    loss.add_argument("--vgg-weights", default=None, help="local VGG19 state dict for the perceptual loss")
    evaluate = parser.add_argument_group("evaluation")
    evaluate.add_argument("--dev-fraction", type=float, default=0.1,
                          help="share of each race's train images held out to choose the checkpoint")
    evaluate.add_argument("--eval-batch-size", type=int, default=32, help="images per evaluation batch")
    evaluate.add_argument("--save-samples", type=int, default=4,
                          help="images per race in the sample grids of the best checkpoint (0: none)")
    evaluate.add_argument("--identity-model", default=None, help="face-recognition model of the identity "
                          "metric: an arcface_torch backbone.pth (with --identity-arch; 112 px) or a finished "
                          "run_verify folder (its model and --image-size). Adds id_cos (cosine of "
                          "the upscaled face's embedding with the original's; with --arch bicubic: the bicubic "
                          "reference)")
    evaluate.add_argument("--identity-arch", choices=facenets.FACE_MODEL_NAMES, default=None,
                          help="architecture of an --identity-model backbone.pth")
    cli.add_output_arguments(parser, "run folder (unset: runs/upscale/<arch>-x<scale>-<upsampler>-<minority>"
                                     "[-w<weight>]-seed<seed>[-id-<identity model>])")
    return parser


def check_values(args):
    """The checks of each flag's value on its own (racecomp.sweep checks every grid value with them)."""
    cli.check_minority_values(args, MINORITY_RACES)


def vgg_layer_weights(args):
    """--vgg-layer-weights as floats, one per VGG layer."""
    try:
        weights = tuple(float(text) for text in args.vgg_layer_weights.split(","))
    except ValueError:
        weights = ()
    if len(weights) != len(losses.DEFAULT_VGG_LAYERS) or min(weights) < 0:
        raise InputError(f"--vgg-layer-weights {args.vgg_layer_weights!r}: {len(losses.DEFAULT_VGG_LAYERS)} "
                         f"non-negative numbers, for {', '.join(losses.DEFAULT_VGG_LAYERS)}")
    return weights


def check_args(args):
    """Every check that needs no data, before any work; returns the minority race label (or None)."""
    check_values(args)
    vgg_layer_weights(args)
    minority = cli.check_minority(args, MINORITY_RACES)
    if args.arch == "bicubic" and minority is not None:
        raise InputError("--arch bicubic trains nothing, so --minority does not apply to it")
    if args.arch != "bicubic" and args.epochs < 1:
        raise InputError(f"--epochs {args.epochs}: a trained upscaler needs at least one epoch (an untrained UNet "
                         f"is exactly bicubic: use --arch bicubic for that floor)")
    if args.identity_model is None and args.identity_arch is not None:
        raise InputError("--identity-arch is the architecture of an --identity-model backbone.pth: give that too")
    if args.last_blocks == "decoder" and (not args.arch.startswith("fastvit") or args.finetune != "full"):
        raise InputError(f"--last-blocks decoder moves FastViT's last blocks to the decoder's learning rate: it needs "
                         f"a FastViT --arch and --finetune full (got --arch {args.arch}, --finetune {args.finetune})")
    if args.epoch_copies is not None and args.epoch_copies < 1:
        raise InputError(f"--epoch-copies {args.epoch_copies}: must be >= 1")
    engine.TrainingSettings.from_args(args)  # the training flags' own checks, before any work
    return minority


def default_out(args):
    """runs/upscale/<arch>-x<scale>-<upsampler>-<minority or balanced>[-w<weight>]-seed<seed>[-id-<model>]: the
    suffix names the --identity-model (its --identity-arch, or the run_verify folder), so runs with and
    without the identity metric get their own folders."""
    minority = slug(args.minority) if args.minority != "none" else "balanced"
    weight = f"-w{args.weight:g}" if args.minority != "none" else ""
    recognizer = args.identity_arch or os.path.basename(os.path.normpath(args.identity_model or ""))
    return os.path.join("runs", NAME, f"{args.arch}-x{args.scale}-{args.upsampler}-{minority}{weight}"
                        f"-seed{args.seed}" + (f"-id-{recognizer}" if args.identity_model else ""))


def run_columns(args, code_version, data=None):
    """The identifying columns of every per_race.csv row of this run, `recipe` hashing all other settings, the
    data by its fingerprints (`data`: run_folder.fingerprints) rather than its path."""
    settings = {**vars(args), **run_folder.data_ids(data or {})}
    columns = {"study": NAME, **{key: settings[key] for key in IDENTIFYING}}
    columns["minority"] = cli.check_minority(args, MINORITY_RACES) or "none"
    if args.arch == "bicubic":
        settings = {key: settings[key] for key in BICUBIC_SETTINGS}
    return {**columns, schema.RECIPE_COLUMN: schema.recipe_id(settings, IDENTIFYING, NON_RESULT_ARGS),
            "seed": args.seed, "code_version": code_version}


def build_model(args, starting_weights=True):
    """The untrained upscaler of `args` on the CPU, its encoder from ImageNet weights with --pretrained
    unless `starting_weights` is False (the architecture only, for loading a trained checkpoint)."""
    pretrained = args.pretrained and starting_weights
    return upscalers.build_upscaler(args.arch, args.scale, args.upsampler, pretrained=pretrained,
                                    pretrained_path=args.pretrained_path if pretrained else None,
                                    last_blocks=args.last_blocks)


def build_loss(args):
    """The training loss of `args` (losses.SRLoss: pixel, VGG19 perceptual, SSIM terms) on the CPU."""
    return losses.SRLoss(pixel=args.pixel_loss, perceptual_weight=args.perceptual_weight, ssim_weight=args.ssim_weight,
                         vgg_weights_path=args.vgg_weights, pixel_weight=args.pixel_weight,
                         vgg_layer_weights=vgg_layer_weights(args), pixel_space=args.pixel_space)


def identity_similarity(args, device):
    """The identity.IdentitySimilarity of --identity-model on `device` (None without it) and what it is, for
    args.json. With --identity-arch the model is a weights file, loaded as run_verify --arch A --weights W
    --epochs 0 loads it; without, a finished run_verify folder, refused when its embeddings collapsed."""
    if args.identity_model is None:
        return None, None
    spec = args.identity_model
    if args.identity_arch is None and os.path.isfile(spec):
        raise InputError(f"--identity-model {spec}: a weights file needs --identity-arch (one of "
                         f"{', '.join(facenets.FACE_MODEL_NAMES)})")
    if args.identity_arch is not None and os.path.isdir(spec):
        raise InputError(f"--identity-model {spec} is a folder: a run_verify folder gives its own architecture "
                         f"(leave out --identity-arch), a backbone is a file")
    if args.identity_arch is None:
        run_args, record, model = runs.load_trained(spec, "verify", "--identity-model")
        runs.refuse_collapsed_recognizer(record, spec, "--identity-model")
        arch, face_px = run_args.arch, run_args.image_size
    else:
        model = facenets.get_model(args.identity_arch)
        runs.load_starting_weights(model, spec, None)
        arch, face_px = args.identity_arch, ARCFACE_FACE_PX
    info = {"model": args.identity_model, "arch": arch, "face_px": face_px,
            "flip_test": False, "faces": "resized (antialiased bicubic), not aligned; [-1, 1]"}
    similarity = identity.IdentitySimilarity(model.to(device), face_px)
    return similarity, info


def data_folders(args):
    """{argument name: folder} of the data the run reads (run_folder.fingerprints)."""
    return {"data": data_root(args)}


def data_root(args):
    """`--data` when given; else the built-in synthetic demo FairFace (generated once into a cache)."""
    return args.data if args.data is not None else toydata.ensure_demo_data("fairface")


def load_splits(args):
    """{'train', 'dev', 'val', 'dropped'}: dev is a seeded, race-stratified carve-out of train used only to
    choose the checkpoint; val is only for reporting.

    Every image is checked before any training (in parallel): train images by header (a JPEG cut short is
    decoded), dev and val decoded in full. Without --skip-bad an unreadable image stops the run here, naming
    it; with it, unreadable images are left out of their split and counted (args.json: dropped_unreadable).
    """
    root = data_root(args)
    train, dev = [], []
    if args.arch != "bicubic":  # bicubic reads val only
        train, dev = datasets.split_dev(datasets.read_fairface(root, "train"), args.dev_fraction, args.seed)
    splits = {"train": train, "dev": dev, "val": datasets.read_fairface(root, "val")}
    bad = {}
    for name, records in splits.items():
        splits[name], bad[name] = datasets.drop_unreadable(records, decode=name != "train",
                                                           workers=max(1, args.workers))
    found = [error for errors in bad.values() for _, error in errors]
    if found and not args.skip_bad:
        raise InputError(f"{len(found)} unreadable image(s), found before training:\n  " + "\n  ".join(found[:10]) +
                         ("\n  ..." if len(found) > 10 else "") + "\nRun the same command with --skip-bad to leave "
                         "them out (counted in args.json), or replace the files.")
    if found:
        print(f"[data] --skip-bad: left out {len(found)} unreadable image(s)" +
              "".join(f"\n  {error}" for error in found[:10]))
    splits["dropped"] = {name: len(errors) for name, errors in bad.items()}
    return splits


def evaluation_data(args):
    """The reported split (val records) of `args`' data."""
    return datasets.read_fairface(data_root(args), "val")


def evaluate_to_dir(model, args, val_records, out_dir, run_columns, device, identity_metric=None):
    """Evaluate on `val_records` (deterministic, fp32, eval mode), write per_image.csv and per_race.csv
    (last), print the table; return (table, summary): summary (the run-level facts verify has too) holds
    the sanity warnings (racecomp.sanity: below the bicubic floor) and, with --identity-model, the identity
    metric's model and convention. A NaN metric stops here (sanity.NonFiniteMetricError).
    `identity_metric`: identity_similarity(args, device) when already loaded (else it is loaded here).

    Under torchrun each rank evaluates its shard (distributed.shard: positions rank, rank + world, ...)
    and the rows of all ranks are put back in file order on every rank; only rank 0 writes and prints.
    """
    loader = engine.make_loader(datasets.FairFaceSR(distributed.shard(val_records), args.scale, hr_size=args.hr_size,
                                                    train=False, lr_kernel=runs.lr_kernel(args)),
                                args.eval_batch_size, args.workers, device)
    similarity, identity_info = identity_metric or identity_similarity(args, device)
    floor = None if args.arch == "bicubic" else upscalers.build_upscaler("bicubic", args.scale).to(device)
    rows = distributed.gather_shards(evaluation.evaluate_upscaler(model, loader, args.scale, device,
                                                                  show=distributed.is_main(), identity=similarity,
                                                                  floor=floor))
    keys = evaluation.IMAGE_QUALITY_KEYS + (identity.IDENTITY_KEYS if similarity is not None else ())
    sanity.check_finite(rows, keys, "evaluation on val", infinite_allowed=("psnr_y", "psnr_rgb"))
    warnings = sanity.upscaling_warnings(rows) if floor is not None else []
    for row in rows if floor is not None else ():
        del row["floor_psnr_y"]
    table = evaluation.mean_by_group(rows, keys, order=FAIRFACE_RACES)
    if distributed.is_main():
        evaluation.write_results(out_dir, rows, table, run_columns=run_columns)
        chosen = "" if args.arch == "bicubic" else "; the checkpoint was chosen on dev"
        print(f"[val] per race (the reported split{chosen}), results in {out_dir}")
        print(f"{'race':<16} {'n':>6} " + " ".join(f"{k:>9}" for k in keys))
        for row in table:
            print(f"{row['race']:<16} {row['n']:>6} " + " ".join(f"{row[k]:>9.4f}" for k in keys))
        sanity.show(warnings)
    distributed.barrier()  # the run's files exist when any rank returns
    return table, {"warnings": warnings, **({"identity_metric": identity_info} if identity_info else {})}


def training_dataset(records, args):
    """FairFaceSR over the training records, or the same items from the pre-decoded uint8 cache."""
    if not args.image_cache:
        return datasets.FairFaceSR(records, args.scale, hr_size=args.hr_size, train=True, lr_kernel=args.lr_kernel)
    path = imagecache.default_cache_path(records, args.hr_size, toydata.default_cache_dir())
    cache = imagecache.open_image_cache_once(path, records, args.hr_size, workers=args.workers,
                                            progress=distributed.is_main())
    return imagecache.CachedFairFaceSR(cache, records, args.scale, train=True, lr_kernel=args.lr_kernel)


def epoch_draws(args, splits):
    """Draws per training epoch: --epoch-copies x the FairFace train images (train and dev splits), or
    without it one per image of the training split. Either way before under-sampling (equal compute)."""
    if args.epoch_copies is None:
        return len(splits["train"])
    return args.epoch_copies * (len(splits["train"]) + len(splits["dev"]))


def sr_compute_loss(loss_fn):
    """compute_loss for engine.Trainer: the model's output against the high-resolution target."""
    def compute_loss(model, batch):
        return loss_fn(model(batch["lr"]), batch["hr"])
    return compute_loss


def mean_psnr_selector(loader, scale, device):
    """select() for engine.Trainer: mean per-image PSNR-Y on the dev split (higher is better), the same on every
    rank: `loader` covers this process's shard of dev (distributed.shard(records); all of dev in one process),
    and the values of every rank are gathered (math.fsum: exact whatever the order). An image reproduced exactly
    has infinite PSNR, capped at 100 dB here so one such image cannot make every epoch tie at infinity (the
    reported tables keep the uncapped values)."""
    def select(model):
        rows = evaluation.evaluate_upscaler(model, loader, scale, device, label="dev", show=distributed.is_main())
        values = [value for part in distributed.all_gather_objects([min(100.0, row["psnr_y"]) for row in rows])
                  for value in part]
        return math.fsum(values) / len(values)
    return select


@dataclass(frozen=True)
class Inputs:
    """What prepare reads and builds for train and evaluate."""
    splits: dict  # load_splits
    loss: object  # build_loss on the device; None for bicubic
    sampler: object  # datasets.MinoritySampler over splits["train"]; None for bicubic
    identity_metric: tuple  # identity_similarity(args, device)


def main(args):
    """Run the study; under torchrun every process calls this, and each returns the same table."""
    check_args(args)
    with distributed.session(cli.resolve_device(args.device)) as device:
        precision.configure_float32(device)
        cpus.configure_torch_threads(show=distributed.is_main())
        if distributed.world_size() > 1:  # part of the recipe: --batch-size is per process
            args.world_size = distributed.world_size()
        return run_folder.run_study(NAME, args, device)


def prepare(run, model):
    """(Inputs, facts for args.json): the loss, the splits with every image checked, the sampler and the identity
    metric, all before training (a missing weights file or an unreadable image stops the run here)."""
    args, device = run.args, run.device
    main_process, world_size = distributed.is_main(), distributed.world_size()
    # Weights first (build_model's ImageNet encoder, VGG19): files a recipe cannot download stop it before any work.
    loss = build_loss(args).to(device) if args.arch != "bicubic" else None
    splits = distributed.run_on_main(load_splits, args)  # rank 0 checks the images, every rank gets its answer
    minority = cli.check_minority(args, MINORITY_RACES)
    sampler, counts = None, {}
    if args.arch != "bicubic":
        sampler = datasets.MinoritySampler(splits["train"], minority, args.weight, mode=args.minority_mode,
                                           seed=args.seed, num_samples=epoch_draws(args, splits),
                                           num_replicas=world_size, rank=distributed.rank(), flips=True)
        counts = sampler.realized_counts()
    if main_process and args.arch == "bicubic":
        print(f"[data] {data_root(args)}: val {len(splits['val'])} (bicubic: no training)")
    elif main_process:
        print(f"[data] {data_root(args)}: train {len(splits['train'])} (epoch of {sampler.num_samples} draws "
              f"over {world_size} process(es)), dev {len(splits['dev'])}, val {len(splits['val'])}; minority "
              f"{minority} weight {args.weight} ({args.minority_mode})")
        for race, count in counts.items():
            print(f"  {race:<16} available {count['available']:>6}  expected draws/epoch "
                  f"{count['expected_per_epoch']:>9.1f}")
    identity_metric = identity_similarity(args, device)  # loaded before training: a bad model fails now
    # amp_resolved: what ran; --amp as asked is in the recipe (README, "--amp")
    facts = dict(data_root=data_root(args), device=str(device), amp_resolved=precision.resolve_amp(args.amp, device),
                 parameters=upscalers.count_parameters(model), world_size=world_size,
                 split_sizes={k: len(v) for k, v in splits.items() if k != "dropped"},
                 dropped_unreadable=splits["dropped"], realized_counts=counts,
                 **({"identity_metric": identity_metric[1]} if identity_metric[1] else {}))
    return Inputs(splits, loss, sampler, identity_metric), facts


def train(run, model, inputs):
    """Train `model` on the training split (resumed when the run is), then load the epoch chosen on dev; return
    the facts for args.json. The bicubic floor trains nothing."""
    args, device = run.args, run.device
    if args.arch == "bicubic":
        return {}
    train_loader = engine.make_loader(training_dataset(inputs.splits["train"], args), args.batch_size, args.workers,
                                      device, sampler=inputs.sampler, drop_last=args.compile)
    dev = datasets.FairFaceSR(distributed.shard(inputs.splits["dev"]), args.scale, hr_size=args.hr_size, train=False,
                              lr_kernel=args.lr_kernel)
    dev_loader = engine.make_loader(dev, args.eval_batch_size, args.workers, device)
    optimizer = engine.build_optimizer(model, args.lr, args.encoder_lr, args.weight_decay,
                                       optimizer=args.optimizer, decay_all=args.decay_all)
    trainer = engine.Trainer(
        model, sr_compute_loss(inputs.loss), optimizer, run.out_dir, engine.TrainingSettings.from_args(args),
        math.ceil(len(train_loader) / args.accum_steps), device=device,
        select=mean_psnr_selector(dev_loader, args.scale, device), run_args=files.recorded_args(args))
    if run.action == "resume":
        trainer.resume()
    trainer.fit(train_loader)
    model.load_state_dict(files.load_checkpoint(trainer.checkpoint_path(FINAL_WEIGHTS))["model"])
    if distributed.is_main():
        print(f"[select] best epoch {trainer.best_epoch} by dev PSNR-Y {trainer.best_score:.3f} dB")
    return dict(best_epoch=trainer.best_epoch, dev_psnr_y=trainer.best_score, history=trainer.history,
                skipped_fp16_steps=trainer.skipped_steps, optimizer_steps=trainer.step)


def evaluate(run, model, inputs):
    """The sample grids (--save-samples), then evaluate_to_dir on the checked val split: (table, summary)."""
    args, val = run.args, inputs.splits["val"]
    if args.save_samples and distributed.is_main():
        samples = datasets.FairFaceSR(val, args.scale, hr_size=args.hr_size, lr_kernel=args.lr_kernel)
        evaluation.save_sample_grids(model, samples, args.save_samples, run.out_dir, run.device)
    return evaluate_to_dir(model, args, val, run.out_dir, run.columns, run.device, inputs.identity_metric)


def command_line():
    """`racecomp-upscale ...` (installed) and `python -m racecomp.studies.upscale ...`: the same as run_upscale.py."""
    cli.run_script(main, get_args_parser().parse_args())


if __name__ == "__main__":
    command_line()
