"""Quantization study: simulated W/A-bit quantization of a face model or an upscaler, scored per race.

    python run_quantize.py                         # demo: trains a small face model, then W8A8 and W6A6 x
                                                   # real / synthetic / data-free calibration, scored on demo RFW
    python run_quantize.py --task verify --arch iresnet50 --weights backbone.pth --rfw /data/RFW \\
        --calib-data /data/BUPT --synthetic-folder stylegan_faces/ --bits w8a8 w6a6 w4a8
    python run_quantize.py --task upscale --model-run runs/upscale/resnet50-x2-...

Each setting gets its own run folder under --out (fp32/, w8a8-real/, ...) with the same per_race.csv and
per-item CSV as run_verify / run_upscale, plus the bits, calibration and model size in args.json.
"""
import argparse
import json
import os
import re

import torch

import run_upscale
import run_verify
from racecomp import (calibration, cli, datasets, engine, facenets, files, quant, toydata, upscalers, upscaling,
                      verification)
from racecomp.races import FAIRFACE_RACES, RFW_RACES, parse_race

CALIBRATION_SOURCES = ("real", "synthetic", "datafree")


def parse_bits(text):
    """'w6a8' -> (6, 8)."""
    match = re.fullmatch(r"w(\d)a(\d)", text.lower())
    if not match:
        raise ValueError(f"--bits {text!r}: expected wXaY with X, Y in 2..8, e.g. w8a8, w6a6, w4a8")
    wbits, abits = int(match.group(1)), int(match.group(2))
    quant.check_bits(wbits, "weight bits")
    quant.check_bits(abits, "activation bits")
    return wbits, abits


def parse_race_weights(text, vocabulary):
    """'white=1,black=0.1' -> {'White': 1.0, 'Black': 0.1} (slugs checked against the vocabulary)."""
    if not text:
        return None
    weights = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            weights[parse_race(name, vocabulary)] = float(value)
        except ValueError as error:
            raise ValueError(f"--calib-race-weights {text!r}: {error}") from None
    return weights


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=[cli.output_parser()],
                                     add_help=add_help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    model = parser.add_argument_group("model to quantize")
    model.add_argument("--task", choices=("verify", "upscale"), default="verify", help="kind of model")
    model.add_argument("--model-run", default=None, help="a finished run_verify / run_upscale folder: its "
                       "arguments rebuild the model and its checkpoint gives the weights")
    model.add_argument("--arch", default="mobilefacenet", help="verify only, without --model-run: backbone "
                       "name (see run_verify.py --arch)")
    model.add_argument("--weights", default=None, help="verify only, without --model-run: state dict "
                       "(arcface_torch backbone.pth or a RaceComp checkpoint)")
    model.add_argument("--image-size", type=int, default=112, help="verify only, without --model-run: face "
                       "crop size in px (arcface_torch models need 112)")
    quantize = parser.add_argument_group("quantization")
    quantize.add_argument("--bits", nargs="+", default=["w8a8", "w6a6"], help="settings wXaY: X weight bits "
                          "(per output channel), Y activation bits (per tensor)")
    quantize.add_argument("--calib", nargs="+", choices=CALIBRATION_SOURCES, default=list(CALIBRATION_SOURCES),
                          help="calibration images: real training images, a synthetic face folder, or data-free "
                               "images distilled from BatchNorm statistics")
    quantize.add_argument("--calib-size", type=int, default=64, help="calibration images")
    quantize.add_argument("--calib-data", default=None, help="real calibration source (verify: identity "
                          "folders; upscale: FairFace root); default: the model's training data or demo data")
    quantize.add_argument("--calib-race-weights", default="", help="skew the real calibration set on purpose, "
                          "e.g. caucasian=1 or african=0.1,caucasian=0.9 (race slugs)")
    quantize.add_argument("--synthetic-folder", default=None, help="folder of generated faces (e.g. StyleGAN); "
                          "default: the gan-face-generate package if installed, else demo procedural faces")
    quantize.add_argument("--datafree-steps", type=int, default=20, help="optimization steps per batch of data-free images (ZeroQ uses 500: raise it on a GPU)")
    quantize.add_argument("--qat-steps", type=int, default=0, help="distillation fine-tuning steps (QuantFace): "
                          "quantized student vs full-precision teacher")
    quantize.add_argument("--qat-lr", type=float, default=1e-3, help="distillation learning rate")
    quantize.add_argument("--qat-calibrate-steps", type=int, default=10, help="first distillation steps that "
                          "still update activation ranges")
    evaluate = parser.add_argument_group("evaluation")
    evaluate.add_argument("--rfw", default=None, help="verify: RFW root (default: the model run's, or demo RFW)")
    evaluate.add_argument("--data", default=None, help="upscale: FairFace root (default: the model run's)")
    evaluate.add_argument("--far", type=float, nargs="+", default=[1e-3, 1e-2], help="target FARs (verify)")
    evaluate.add_argument("--eval-batch-size", type=int, default=64, help="images per evaluation batch")
    parser.set_defaults(out=None)
    return parser


def _demo_face_model(args):
    """No model given: train run_verify's demo model once (it skips when already finished) and use it."""
    out = os.path.join(args.out, "fp_model")
    print(f"[model] no --model-run/--weights: training run_verify's demo model into {out}")
    verify_args = run_verify.get_args_parser().parse_args(
        ["--out", out, "--seed", str(args.seed), "--workers", str(args.workers), "--device", args.device])
    run_verify.main(verify_args)
    return out


def _load_model_run(run_dir, task):
    """(run arguments, model with the run's final weights) from a finished run folder."""
    args_path = os.path.join(run_dir, "args.json")
    if not os.path.isfile(os.path.join(run_dir, files.FINISHED_MARKER)) or not os.path.isfile(args_path):
        raise ValueError(f"--model-run {run_dir}: not a finished run folder (needs args.json and "
                         f"{files.FINISHED_MARKER})")
    with open(args_path, encoding="utf-8") as handle:
        record = json.load(handle)
    if record.get("study") != task:
        raise ValueError(f"{run_dir}: a {record.get('study')!r} run, not a {task!r} run (--task)")
    run_args = argparse.Namespace(**record["args"])
    checkpoint = os.path.join(run_dir, "best.pth" if task == "upscale" else "checkpoint.pth")
    if task == "upscale":
        model = upscalers.build_upscaler(run_args.arch, run_args.scale, run_args.upsampler)
    else:
        model = run_verify.build_model(run_args, "cpu")
    if os.path.isfile(checkpoint):
        model.load_state_dict(files.load_checkpoint(checkpoint)["model"])
    elif task == "upscale" and run_args.arch == "bicubic":
        raise ValueError(f"{run_dir}: the bicubic baseline has no weights to quantize")
    elif not (getattr(run_args, "weights", None) or getattr(run_args, "init_from", None)):
        raise ValueError(f"{run_dir}: no checkpoint to quantize ({checkpoint} missing)")
    return run_args, record, model


def _calibration_batches(source, args, task, model, image_size, real_dataset, real_races, device):
    """Calibration batches in the model's input space, and a description of what they are."""
    # Face models take [-1, 1], upscalers [0, 1] low-resolution images.
    value_range = (-1.0, 1.0) if task == "verify" else (0.0, 1.0)
    if source == "real":
        vocabulary = RFW_RACES if task == "verify" else FAIRFACE_RACES
        batches, composition = calibration.real_calibration(
            real_dataset, min(args.calib_size, len(real_dataset)), races=real_races,
            race_weights=parse_race_weights(args.calib_race_weights, vocabulary), seed=args.seed,
            image_key="image" if task == "verify" else "lr")
        if task == "verify":
            batches = [verification.to_model_range(b) for b in batches]
        return batches, {"source": "real", "composition": composition}
    if source == "synthetic":
        folder = args.synthetic_folder
        if folder is None and calibration.gan_package_available():
            batches = calibration.gan_calibration(args.calib_size, image_size, seed=args.seed, value_range=value_range)
            return batches, {"source": "gan-face-generate (DCGAN trained on DigiFace-1M, non-commercial use)"}
        if folder is None:
            folder = toydata.ensure_demo_data("identities", seed=1000 + args.seed)
            print(f"[calib] synthetic: no --synthetic-folder and no gan-face-generate; using procedural demo "
                  f"faces in {folder}")
        batches = calibration.folder_calibration(folder, args.calib_size, image_size, value_range=value_range)
        return batches, {"source": "folder", "folder": folder}
    batches, losses = calibration.datafree_calibration(model, args.calib_size, image_size,
                                                       steps=args.datafree_steps, seed=args.seed)
    return batches, {"source": "datafree", "bn_loss_first": losses[0][0], "bn_loss_last": losses[0][-1]}


def main(args):
    settings = [parse_bits(text) for text in args.bits]
    if args.out is None:
        args.out = os.path.join("runs", "quantize", f"{args.task}-{os.path.basename(os.path.normpath(args.model_run or args.arch))}-seed{args.seed}")
    args.out = os.path.abspath(args.out)
    device = cli.resolve_device(args.device)
    engine.seed_everything(args.seed)
    if args.task == "verify" and args.model_run is None and args.weights is None:
        args.model_run = _demo_face_model(args)
    if args.model_run is not None:
        run_args, model_record, model = _load_model_run(args.model_run, args.task)
    elif args.task == "verify":
        run_args = argparse.Namespace(arch=args.arch, embedding_size=512, weights=args.weights, init_from=None,
                                      data=None, image_size=args.image_size)
        model_record = {}
        model = run_verify.build_model(run_args, "cpu")
    else:
        raise ValueError("--task upscale needs --model-run (a finished run_upscale folder)")
    model = model.to(device).eval()
    if args.task == "verify":
        rfw_root = args.rfw or model_record.get("rfw_root") or toydata.ensure_demo_data("rfw")
        pairs = datasets.read_rfw(rfw_root, RFW_RACES)
        image_size = getattr(run_args, "image_size", 112)
        calib_root = args.calib_data or model_record.get("train_root") or toydata.ensure_demo_data("identities")
        identity_records = datasets.read_identity_folders(calib_root)
        real_dataset = datasets.FaceImages([((r.race, r.identity, r.path), r.path) for r in identity_records],
                                           image_size=image_size)
        real_races = [r.race for r in identity_records]
        lr_size = image_size
    else:
        data_root = args.data or model_record.get("data_root")
        splits = upscaling.load_fairface_splits(data_root, run_args.dev_fraction, run_args.seed)
        real_dataset = datasets.FairFaceSR(splits["train"], run_args.scale, hr_size=run_args.hr_size)
        real_races = [r.race for r in splits["train"]]
        lr_size = real_dataset[0]["lr"].shape[-1]

    def evaluate(qmodel, name, columns, extra):
        out_dir = os.path.join(args.out, name)
        sub_args = argparse.Namespace(**vars(args), setting=name)
        if files.prepare_out_dir(out_dir, sub_args, overwrite=args.overwrite) == "skip":
            return
        record = files.run_record(sub_args, study="quantize", task=args.task, model_run=args.model_run, **extra)
        files.write_json(os.path.join(out_dir, "args.json"), record)
        run_columns = {"study": "quantize", "task": args.task, "arch": run_args.arch, **columns,
                       "recipe": files.recipe_id(args, ("task", "arch", "bits", "calib", "qat_steps")),
                       "seed": args.seed, "code_version": record["code_version"]}
        if args.task == "verify":
            table, threshold = verification.evaluate_to_dir(
                qmodel, rfw_root, pairs, out_dir, run_columns, args.eval_batch_size, args.workers, device,
                fars=args.far, image_size=image_size)
            print(f"[{name}]")
            verification.print_table(table, threshold, args.far[0])
        else:
            _, table = upscaling.evaluate_to_dir(qmodel, splits["val"], run_args.scale, run_args.hr_size,
                                                 args.eval_batch_size, args.workers, device, out_dir, run_columns)
            print(f"[{name}]")
            upscaling.print_table(table)

    evaluate(model, "fp32", {"wbits": 32, "abits": 32, "calib": "none", "qat_steps": 0},
             {"model_size_bytes": quant.model_size_bytes(model, 32)})
    for source in args.calib:
        batches, calib_info = _calibration_batches(source, args, args.task, model, lr_size, real_dataset, real_races,
                                                   device)
        batches = [b.to(device) for b in batches]
        for wbits, abits in settings:
            qmodel = quant.quantize_model(model, wbits, abits)
            quant.calibrate(qmodel, batches)
            qat_losses = []
            if args.qat_steps:
                qat_losses = quant.distill(qmodel, model, batches, args.qat_steps, args.qat_lr,
                                           calibrate_steps=args.qat_calibrate_steps)
            qmodel.eval()
            evaluate(qmodel, f"w{wbits}a{abits}-{source}",
                     {"wbits": wbits, "abits": abits, "calib": source, "qat_steps": args.qat_steps},
                     {"calibration": calib_info, "quantization": quant.quantization_summary(qmodel),
                      "model_size_bytes": quant.model_size_bytes(model, wbits), "qat_losses": qat_losses})
    print(f"[quantize] results in {args.out}; tables: python summarize.py {args.out} --out tables/")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
