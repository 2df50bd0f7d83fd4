"""Verification study: train (optionally) a face-recognition model with a margin loss, score it per race on RFW.

Surface (every study's; the run from start to end is racecomp.studies.run_folder.run_study's): get_args_parser,
check_args, run_columns, data_folders, the hooks build_model / prepare / train / evaluate, main; evaluation_data
and evaluate_to_dir score any face model (quantization's too). run_verify.py and racecomp.sweep use it.

Writes to --out: args.json, model.pth (the trained weights; checkpoint.pth, the resumable state, only while
the run is unfinished or with --keep-checkpoint), optionally probe_gender.csv and bias_probe.csv
(FairFace probes of the final backbone, see racecomp.probes), per_pair.csv (every pair's cosine score, so
any metric can be recomputed) and per_race.csv (written last: a finished run). Verification rates are
percentages; probe F1, accuracies and association scores are fractions.

Verification after upscaling (--restore, with --epochs 0): every RFW face, at --image-size (112 px), is
degraded exactly as the upscaling study makes its low-resolution images (datasets.downscale:
antialiased bicubic, or the upscaler run's --lr-kernel; 8-bit) to 1/N of its size (56 px at x2, 28 px at
x4), restored to --image-size by bicubic or by a finished run_upscale folder's model
(racecomp.identity.Restoration, batched on the device inside the embedding pass, eval mode, fp32), and
scored with the standard protocol. The upscaler learned
on FairFace crops at its own --hr-size (224 px with margin), so an aligned RFW face is at a smaller pixel
scale than what it was trained on: the degradation and the factor are the same, the face scale is not.
(Degrading at the upscaler's size instead, 112 -> 224 -> 112, would lose nothing a 112 px model can see.)
per_race.csv then carries `restore` (bicubic-x2, <arch>-x<scale>) and `restore_model` (an id of the
upscaler run; none for bicubic); runs without --restore have neither column.

    python run_verify.py --arch iresnet50 --weights backbone.pth --epochs 0 --restore bicubic-x2
    python run_verify.py --arch iresnet50 --weights backbone.pth --epochs 0 --restore runs/upscale/<run>
"""
import copy
import os
from dataclasses import dataclass

import torch

from racecomp import (cli, cpus, datasets, distributed, encoders, engine, evaluation, facenets, files, identity,
                      margin_heads, precision, probes, runs, sanity, schema, toydata, upscalers,
                      verification)
from racecomp.errors import InputError
from racecomp.races import RFW_RACES, slug
from racecomp.studies import run_folder

NAME = "verify"
MINORITY_RACES = RFW_RACES
# Columns of per_race.csv that name the experiment (`init` is derived from --weights / --init-from; `restore`
# stands for the columns restore and restore_model, present only with --restore); every other
# result-changing flag, the evaluation protocol's included (--align, --no-flip, --races, --far, --rfw),
# goes into `recipe`.
IDENTIFYING = ("arch", "init", "finetune", "minority", "weight", "restore")
# log_every: progress lines
NON_RESULT_ARGS = schema.NON_RESULT_ARGS + schema.KERNEL_ARGS + schema.RESUME_ARGS + ("log_every",)
FINAL_WEIGHTS = runs.FINAL_WEIGHTS[NAME]
DATA_ARGS = ("data", "rfw", "probe_data")  # folder arguments, recorded as absolute paths
BICUBIC_RESTORES = {f"bicubic-x{scale}": scale for scale in upscalers.SCALES}  # --restore value -> factor


def get_args_parser(add_help=True):
    parser = cli.make_parser(__doc__.split("\n")[0], add_help)
    cli.add_recipe_argument(parser, NAME)
    cli.add_data_arguments(parser, "identity folders <Race>/<identity>/*.jpg for training (BUPT layout); "
                                   "default: the built-in synthetic demo identities. --minority keeps a seeded "
                                   "fraction W of that race's identities (all their images)", MINORITY_RACES)
    cli.add_training_arguments(parser)
    # AdamW at 2e-3 for 5 epochs: on the demo identities this reaches ~80-90% RFW-style accuracy in ~2 min on
    # 2 CPU cores; fewer steps leave BatchNorm running statistics dominated by their initial values.
    parser.set_defaults(lr=2e-3, epochs=5, batch_size=16, warmup_steps=5)
    model = parser.add_argument_group("model")
    model.add_argument("--arch", choices=facenets.FACE_MODEL_NAMES, default="mobilefacenet",
                       help="face-recognition backbone")
    model.add_argument("--embedding-size", type=int, default=512, help="embedding dimension")
    model.add_argument("--weights", default=None, help="local state dict to start from (arcface_torch "
                       "backbone.pth for iresnet/mobilefacenet, or a RaceComp checkpoint)")
    model.add_argument("--init-from", default=None, help="upscaler run folder whose encoder initialises a "
                       "resnet50/FastViT backbone (transfer from upscaling to recognition)")
    model.add_argument("--margin", choices=("arcface", "cosface"), default="arcface",
                       help="margin loss: arcface (s 64, m 0.5) or cosface (s 64, m 0.35)")
    model.add_argument("--margin-grad", choices=margin_heads.MARGIN_GRADIENTS, default="exact",
                       help="ArcFace's true-class logit: exact (the gradient of s cos(theta + m), falling back to "
                            "cos theta - m sin m past theta + m = pi) or arcface_torch (its value cos(arccos(cos "
                            "theta) + m) under no_grad: the gradient as without a margin)")
    data = parser.add_argument_group("evaluation data")
    data.add_argument("--rfw", default=None, help="RFW root (test/data, test/txts); default: demo RFW")
    data.add_argument("--races", default="all", help="comma-separated RFW races to score (slugs) or all")
    data.add_argument("--align", action="store_true", help="align RFW images with the 5-point ArcFace template "
                      "from <Race>_lmk.txt (for unaligned copies)")
    data.add_argument("--image-size", type=int, default=112, help="face crop size in px")
    data.add_argument("--restore", default=None, help="score restored faces: each RFW face (at --image-size) "
                      "degraded to 1/N of its size as the upscaling study makes its low-resolution images, then "
                      "brought back by bicubic-x2 or bicubic-x4, or by the model of a finished run_upscale folder "
                      "(N: that run's --scale); needs --epochs 0. Unset (or none): the faces as they are")
    data.add_argument("--allow-overlap", action="store_true", help="train even if training identities appear "
                      "in evaluated RFW pairs (reported in args.json)")
    evaluate = parser.add_argument_group("evaluation")
    evaluate.add_argument("--far", type=float, nargs="+", default=[1e-3, 1e-2], help="target false-accept "
                          "rates for TAR@FAR; the first also sets the global TPR/FPR threshold")
    evaluate.add_argument("--no-flip", action="store_true", help="score without the flip test")
    evaluate.add_argument("--eval-batch-size", type=int, default=64, help="images per evaluation batch")
    probe = parser.add_argument_group("probes (FairFace)")
    probe.add_argument("--probe", choices=("none", "gender"), default="none", help="gender: linear gender head "
                       "on the final embeddings (FairFace train), per-race F1 on FairFace val -> probe_gender.csv")
    probe.add_argument("--bias-probe", action="store_true", help="association scores of FairFace val race and "
                       "race x gender sets before vs after training, and their Bias Transfer Score -> bias_probe.csv")
    probe.add_argument("--probe-data", default=None, help="FairFace root (fairface_label_{train,val}.csv); "
                       "default: the built-in synthetic demo FairFace (random gender labels: chance-level probe)")
    probe.add_argument("--probe-steps", type=int, default=100, help="L-BFGS iterations (full batch) of the "
                       "gender probe's logistic regression, at most")
    cli.add_output_arguments(parser, "run folder (unset: runs/verify/<arch>-<init>-<finetune>-<minority>"
                                     "[-w<weight>]-seed<seed>[-restore-<restore or its folder name>])")
    return parser


def check_values(args):
    """The checks of each flag's value on its own (racecomp.sweep checks every grid value with them)."""
    cli.check_minority_values(args, MINORITY_RACES)
    cli.check_races(args.races, RFW_RACES)
    if args.probe_steps < 1:
        raise InputError(f"--probe-steps {args.probe_steps}: must be >= 1")
    if not all(0.0 < far < 1.0 for far in args.far):
        raise InputError(f"--far {args.far}: false-accept rates must be in (0, 1)")
    restore = restore_setting(args)
    if restore is not None and restore.startswith("bicubic") and restore not in BICUBIC_RESTORES:
        raise InputError(f"--restore {restore}: bicubic restoration is {' or '.join(BICUBIC_RESTORES)} (or give a "
                         f"run_upscale folder)")


def check_args(args):
    """Every check that needs no data, before any work; returns the minority race label (or None)."""
    check_values(args)
    minority = cli.check_minority(args, MINORITY_RACES)
    if args.epochs == 0 and not (args.weights or args.init_from):
        raise InputError("--epochs 0 evaluates only: give --weights or --init-from (a random model scores ~50%)")
    if args.bias_probe and args.epochs == 0:
        raise InputError("--bias-probe compares the backbone before and after training: needs --epochs > 0")
    restore = restore_setting(args)
    # Evaluation only: the comparison is one model on original vs restored faces. Training here would train
    # a new model per restoration setting, and two trainings never give the same model.
    if restore is not None and args.epochs > 0:
        raise InputError(f"--restore scores a given model on restored faces: use --epochs 0 with --weights (an "
                         f"arcface_torch backbone.pth, or the {FINAL_WEIGHTS} of a finished run), not --epochs "
                         f"{args.epochs}")
    if restore in BICUBIC_RESTORES and args.image_size % BICUBIC_RESTORES[restore]:
        raise InputError(f"--restore {restore}: --image-size {args.image_size} is not divisible by "
                         f"{BICUBIC_RESTORES[restore]}")
    if args.margin != "arcface" and args.margin_grad != "exact":
        raise InputError(f"--margin-grad {args.margin_grad} is ArcFace's; --margin {args.margin} has the exact "
                         f"gradient only")
    engine.TrainingSettings.from_args(args)  # the training flags' own checks, before any work
    if args.unfreeze and args.arch not in encoders.ENCODER_NAMES:
        raise InputError(f"--unfreeze opens timm encoder stages; --arch {args.arch} has none (use one of "
                         f"{', '.join(encoders.ENCODER_NAMES)})")
    return minority


def _init(args):
    return "upscaler" if args.init_from else ("weights" if args.weights else "scratch")


def default_out(args):
    minority = f"{slug(args.minority)}-w{args.weight:g}" if args.minority != "none" else "balanced"
    source = "init-upscaler" if args.init_from else ("weights" if args.weights else "scratch")
    restore = restore_setting(args)
    restored = "" if restore is None else f"-restore-{os.path.basename(os.path.normpath(restore))}"
    return os.path.join("runs", NAME, f"{args.arch}-{source}-{args.finetune}-{minority}-seed{args.seed}{restored}")


def run_columns(args, code_version, data=None):
    """The identifying columns of every per_race.csv row of this run, `recipe` hashing all other settings, the
    data by its fingerprints (`data`: run_folder.fingerprints) rather than its path.

    With --restore, `restore` and `restore_model` (restore_columns) come before `recipe`; a run folder given
    to --restore is read (its args.json) for them.
    """
    settings = {**vars(args), **run_folder.data_ids(data or {})}
    columns = {"study": NAME, "arch": args.arch, "init": _init(args), "finetune": args.finetune,
               "minority": cli.check_minority(args, MINORITY_RACES) or "none", "weight": args.weight,
               **restore_columns(args)}
    return {**columns, schema.RECIPE_COLUMN: schema.recipe_id(settings, IDENTIFYING, NON_RESULT_ARGS),
            "seed": args.seed, "code_version": code_version}


def restore_setting(args):
    """--restore, with `none` read as unset (None)."""
    return None if args.restore in (None, "none") else args.restore


def restore_columns(args):
    """{} without --restore; else `restore` (bicubic-x2, bicubic-x4 or <arch>-x<scale> of the upscaler run)
    and `restore_model`: "none" for bicubic (a bicubic run folder with another --lr-kernel: lr-<kernel>), else
    an id of the upscaler run (a hash of its identifying columns, recipe and seed, not of its folder: two copies
    of one run are one restoration)."""
    restore = restore_setting(args)
    if restore is None:
        return {}
    if restore in BICUBIC_RESTORES:
        return {"restore": restore, "restore_model": "none"}
    run_args, _ = runs.read_run(restore, "upscale", "--restore")
    if run_args.arch == "bicubic":  # the bicubic floor's folder: bicubic-x<scale>, from its own LR images
        kernel = runs.lr_kernel(run_args)
        return {"restore": f"bicubic-x{run_args.scale}",
                "restore_model": "none" if kernel == "bicubic" else f"lr-{kernel}"}
    return {"restore": f"{run_args.arch}-x{run_args.scale}",
            "restore_model": schema.recipe_id({"upscaler": runs.run_columns(restore)}, ())}


def restoration(args):
    """(identity.Restoration on the CPU, what it is for args.json) of --restore, or (None, None)."""
    restore = restore_setting(args)
    if restore is None:
        return None, None
    kernel = "bicubic"
    if restore in BICUBIC_RESTORES:
        scale = BICUBIC_RESTORES[restore]
        upscaler, info = upscalers.build_upscaler("bicubic", scale), {}
    else:
        run_args, _ = runs.read_run(restore, "upscale", "--restore")
        scale, kernel = run_args.scale, runs.lr_kernel(run_args)
        if run_args.arch == "bicubic":
            upscaler = upscalers.build_upscaler("bicubic", scale)
        else:
            upscaler = runs.load_trained(restore, "upscale", "--restore")[2]
        info = {"upscaler_run": os.path.abspath(restore), "upscaler": runs.run_columns(restore),
                "upscaler_hr_px": run_args.hr_size or "native"}
    if args.image_size % scale:
        raise InputError(f"--restore {restore} (x{scale}): --image-size {args.image_size} is not divisible by {scale}")
    info.update(restore_columns(args), scale=scale, face_px=args.image_size, low_resolution_px=args.image_size // scale,
                lr_kernel=kernel)
    return identity.Restoration(upscaler, scale, kernel), info


def build_model(args, starting_weights=True):
    """The backbone of `args` on the CPU, with its starting weights (--weights, --init-from) unless
    `starting_weights` is False (the architecture only, for loading a trained checkpoint)."""
    model = runs.architecture(NAME, args)
    if starting_weights:
        runs.load_starting_weights(model, args.weights, args.init_from)
    return model


def rfw_root(args):
    return args.rfw if args.rfw is not None else toydata.ensure_demo_data("rfw")


def evaluation_data(args):
    """(RFW root, the pairs of the --races scored), read and checked."""
    root = rfw_root(args)
    pairs = datasets.read_rfw(root, cli.check_races(args.races, RFW_RACES))
    return root, pairs


def evaluate_to_dir(model, args, data, out_dir, run_columns, device):
    """Score `model` on the RFW pairs of `data` (evaluation_data) with the protocol of `args` (--align,
    --no-flip, --image-size, --far, --restore), write per_pair.csv and per_race.csv (last), print the table;
    return (table, {"global_threshold": cosine, "warnings": racecomp.sanity's (chance accuracy, collapsed
    embeddings), "restore": what restored the faces (with --restore)}). A NaN score stops here.
    """
    root, pairs = data
    loader, keys = verification.rfw_loader(root, pairs, args.eval_batch_size, args.workers, device,
                                           align=args.align, image_size=args.image_size)
    restore, restore_info = restoration(args)
    summary = {}
    if restore is not None:
        restore = restore.to(device)
        summary["restore"] = restore_info
        print(f"[rfw] restored faces: {restore_info['face_px']} px -> {restore_info['low_resolution_px']} px "
              f"(bicubic, antialiased, 8-bit) -> {restore_info['restore']} -> {restore_info['face_px']} px")
    embeddings = verification.embed(model, loader, device, flip=not args.no_flip, label="rfw", restore=restore)
    pair_rows = verification.score_pairs(pairs, keys, embeddings)
    sanity.check_finite(pair_rows, ["score"], "RFW scoring")
    table, threshold = verification.per_race_table(pair_rows, fars=tuple(args.far))
    warnings = sanity.verification_warnings(table, pair_rows)
    evaluation.write_results(out_dir, pair_rows, table, item_name="per_pair.csv", run_columns=run_columns)
    verification.print_table(table, threshold, args.far[0])
    sanity.show(warnings)
    print(f"[rfw] results in {out_dir}")
    return table, {"global_threshold": threshold, "warnings": warnings, **summary}


def identity_loss(head, labels):
    """compute_loss for engine.Trainer: margin-head cross-entropy, logits in fp32 (the head ensures it)."""
    def compute_loss(model, batch):
        targets = labels.to(batch["image"].device)[batch["index"]]
        logits = head(model(verification.to_model_range(batch["image"])), targets)
        return torch.nn.functional.cross_entropy(logits, targets), {}
    return compute_loss


def probe_root(args):
    return args.probe_data if args.probe_data is not None else toydata.ensure_demo_data("fairface")


def train_root(args):
    return args.data if args.data is not None else toydata.ensure_demo_data("identities")


def read_probe_data(args):
    """(root, train records or None, val records) of the FairFace probe data, or None without probes.

    Read and checked before training, so bad probe data fails the run before it spends any compute.
    """
    if args.probe == "none" and not args.bias_probe:
        return None
    root = probe_root(args)
    train_records = datasets.read_fairface(root, "train") if args.probe == "gender" else None
    val_records = datasets.read_fairface(root, "val")
    if args.bias_probe:
        probes.bias_probe_sets(val_records)
    return root, train_records, val_records


def run_probes(args, probe_data, model, start_model, device, columns):
    """Write probe_gender.csv and/or bias_probe.csv for the trained `model`; return their results for args.json."""
    root, train_records, val_records = probe_data
    found = {"probe_data": root}
    features = dict(batch_size=args.eval_batch_size, workers=args.workers, device=device)
    if args.probe == "gender":
        rows, summary = probes.gender_probe(model, train_records, val_records, args.image_size,
                                            steps=args.probe_steps, **features)
        files.write_csv(os.path.join(args.out, schema.PROBE_GENDER_FILE), [{**columns, **row} for row in rows])
        found["probe_gender"] = summary
        print(f"[probe] gender on {root}: val accuracy {summary['val_accuracy']:.4f}, F1 "
              f"({summary['positive_class']} positive) {summary['val_f1']:.4f}")
        for row in rows:
            print(f"  {row['race']:<16} n {row['n']:>5}  F1 in {row['f1_in']:.4f}  out {row['f1_out']:.4f}  "
                  f"gap {row['gap']:.4f}")
    if args.bias_probe:
        rows, score = probes.bias_probe(probes.extract_features(start_model, val_records, args.image_size, **features),
                                        probes.extract_features(model, val_records, args.image_size, **features),
                                        val_records)
        files.write_csv(os.path.join(args.out, schema.BIAS_PROBE_FILE), [{**columns, **row} for row in rows])
        found["bias_transfer_score"] = score
        print(f"[probe] Bias Transfer Score (Spearman over {len(rows)} comparisons): {score:.4f}")
    return found


def data_folders(args):
    """{argument name: folder} of the data the run reads (run_folder.fingerprints): RFW, the identity folders
    it trains on, the FairFace probe data."""
    folders = {"rfw": rfw_root(args)}
    if args.epochs > 0:
        folders["data"] = train_root(args)
    if args.probe != "none" or args.bias_probe:
        folders["probe_data"] = probe_root(args)
    return folders


@dataclass(frozen=True)
class Inputs:
    """What prepare reads for train and evaluate."""
    data: tuple  # evaluation_data: (RFW root, pairs)
    probe_data: tuple  # read_probe_data, or None
    start_model: object  # the backbone before training, for the bias probe (None without it)


def main(args):
    distributed.refuse_torchrun("run_verify.py")
    check_args(args)
    restore_columns(args)  # a --restore folder that is not a finished upscaler run fails before any work
    device = cli.resolve_device(args.device)
    precision.configure_float32(device)
    cpus.configure_torch_threads()
    return run_folder.run_study(NAME, args, device)


def prepare(run, model):
    """(Inputs, facts for args.json): the RFW pairs and the probe data, read and checked before training."""
    args = run.args
    data = evaluation_data(args)
    print(f"[data] RFW {data[0]}: {len(data[1])} pairs over {args.races}")
    probe_data = read_probe_data(args)
    # The starting backbone, kept before training (and before a resume loads the checkpoint) for the bias probe.
    start_model = copy.deepcopy(model) if args.bias_probe else None
    # amp_resolved: what ran; --amp as asked is in the recipe (README, "--amp")
    facts = dict(rfw_root=data[0], device=str(run.device), amp_resolved=precision.resolve_amp(args.amp, run.device))
    return Inputs(data, probe_data, start_model), facts


def train(run, model, inputs):
    """Train `model` with the margin head on the identity folders (resumed when the run is) and save it as
    FINAL_WEIGHTS; return the facts of the data and the training for args.json. --epochs 0 trains nothing."""
    args, device = run.args, run.device
    if args.epochs == 0:
        return {}
    minority = cli.check_minority(args, MINORITY_RACES)
    root = train_root(args)
    all_records = datasets.read_identity_folders(root)
    overlap = datasets.check_identity_overlap(all_records, inputs.data[1], allow=args.allow_overlap)
    datasets.check_identity_images(all_records, workers=max(1, args.workers))  # an unreadable image stops it here
    train_records = datasets.subsample_identities(all_records, minority, args.weight, args.seed)
    counts = {race: {"identities": len({r.identity for r in train_records if r.race == race}),
                     "images": sum(r.race == race for r in train_records)}
              for race in RFW_RACES if any(r.race == race for r in all_records)}
    print(f"[data] identities {root}: {len(train_records)} of {len(all_records)} images kept "
          f"(minority {minority}, weight {args.weight}); epoch of {len(all_records)} draws")
    for race, count in counts.items():
        print(f"  {race:<10} identities {count['identities']:>5}  images {count['images']:>6}")
    # Equal compute: an epoch is as many draws as the full training set, whatever was dropped.
    sampler = datasets.MinoritySampler(train_records, None, 1.0, seed=args.seed, num_samples=len(all_records))
    items = [((r.race, r.identity, r.path), r.path) for r in train_records]
    loader = engine.make_loader(datasets.FaceImages(items, image_size=args.image_size, flip=True),
                                args.batch_size, args.workers, device, sampler=sampler, drop_last=args.compile)
    labels = torch.tensor([r.class_index for r in train_records], device=device)  # copied once, not every step
    n_classes = max(r.class_index for r in all_records) + 1
    head = margin_heads.get_margin_head(args.margin, args.embedding_size, n_classes,
                                        gradient=args.margin_grad).to(device)
    optimizer = engine.build_optimizer(model, args.lr, args.encoder_lr, args.weight_decay, extra_modules=[head],
                                       optimizer=args.optimizer, decay_all=args.decay_all)
    trainer = engine.Trainer(model, identity_loss(head, labels), optimizer, run.out_dir,
                             engine.TrainingSettings.from_args(args), -(-len(loader) // args.accum_steps),
                             device=device, extra_modules=[head], run_args=files.recorded_args(args))
    if run.action == "resume":
        trainer.resume()
    trainer.fit(loader)
    files.save_checkpoint({"model": model.state_dict(), "epoch": trainer.epoch, "args": files.recorded_args(args)},
                          os.path.join(run.out_dir, FINAL_WEIGHTS))
    return dict(train_root=root, realized_counts=counts, identity_overlap=overlap, history=trainer.history,
                optimizer_steps=trainer.step, skipped_fp16_steps=trainer.skipped_steps)


def evaluate(run, model, inputs):
    """The probes of the trained backbone (before per_race.csv: a finished run has every output), then
    evaluate_to_dir on the RFW pairs: (table, summary with the probes' results)."""
    found = {}
    if inputs.probe_data is not None:
        found = run_probes(run.args, inputs.probe_data, model, inputs.start_model, run.device, run.columns)
    table, summary = evaluate_to_dir(model, run.args, inputs.data, run.out_dir, run.columns, run.device)
    return table, {**found, **summary}


def command_line():
    """`racecomp-verify ...` (installed) and `python -m racecomp.studies.verify ...`: the same as run_verify.py."""
    cli.run_script(main, get_args_parser().parse_args())


if __name__ == "__main__":
    command_line()
