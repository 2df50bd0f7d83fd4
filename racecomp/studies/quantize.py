"""Quantization study: simulated W/A-bit quantization of a face model or an upscaler, scored per race.

Surface (the same in every study module): get_args_parser, check_args, run_columns, data_folders, the hooks
build_model / prepare / evaluate (train is None: nothing trains), main; plus `settings(args)` (the sub-folders a
run writes), which racecomp.sweep uses for --status. Each setting is one racecomp.studies.run_folder.run_study
of this study into its own folder, with the setting's model handed in and scored through the model's study
(studies.get(--task): its evaluation_data and evaluate_to_dir). run_quantize.py is a shim over it.

The model comes from a finished run_verify / run_upscale folder (--model-run), from an arcface_torch
state dict (--weights, verify only), or, with neither, from run_verify's demo run (its own folder under
runs/verify/, reused when it has finished: `python run_verify.py` then `python run_quantize.py` train it
once). Every setting (fp32, then each bit width x calibration source) is evaluated through the
model's own study (racecomp.studies.verify / upscale `evaluate_to_dir`) with the model run's own
evaluation arguments (--align, --no-flip, --races, --image-size, --far, ...), so the fp32 baseline and
the quantized scores use exactly the protocol the model was scored with. Only --rfw / --data / --far
given here replace the model run's.

Each setting gets its own run folder under --out (fp32/, w8a8-real/, ...) with the same per_race.csv and
per-item CSV as run_verify / run_upscale, plus the bits, calibration and model size in args.json.
"""
import argparse
import copy
import os
import re
from dataclasses import dataclass

from racecomp import (calibration, cli, cpus, datasets, distributed, engine, precision, quant, runs, schema, studies,
                      toydata, verification)
from racecomp.errors import InputError
from racecomp.races import FAIRFACE_RACES, RFW_RACES, parse_race
from racecomp.studies import run_folder

NAME = "quantize"
MINORITY_RACES = None  # quantization has no under-represented race of its own
TASKS = ("verify", "upscale")  # the studies whose models are quantized (racecomp.studies.get)
CALIBRATION_SOURCES = ("real", "synthetic", "datafree")
# Columns of per_race.csv that name the experiment; `bits` and `calib` list the settings of one run, each
# setting's own values are its wbits / abits / calib columns.
IDENTIFYING = ("task", "arch", "wbits", "abits", "calib", "qat_steps")
SETTING_LISTS = ("bits", "calib")
# The flags that say which model is quantized; the recipe holds model_identity() in their place.
MODEL_FLAGS = ("model_run", "arch", "weights", "image_size")
SETTING_KEY = "setting"  # setting_args' own entry: the sub-folder, whose wbits / abits / calib are columns
NON_RESULT_ARGS = schema.NON_RESULT_ARGS
DATA_ARGS = ("data", "rfw", "calib_data", "synthetic_folder")  # folder arguments, recorded as absolute paths


@dataclass(frozen=True)
class Setting:
    name: str   # its sub-folder: fp32, w8a8-real, ...
    wbits: int
    abits: int
    calib: str  # "none" for fp32


def parse_bits(text):
    """'w6a8' -> (6, 8)."""
    match = re.fullmatch(r"w(\d)a(\d)", text.lower())
    if not match:
        raise InputError(f"--bits {text!r}: expected wXaY with X, Y in 2..8, e.g. w8a8, w6a6, w4a8")
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
            raise InputError(f"--calib-race-weights {text!r}: {error}") from None
    return weights


def get_args_parser(add_help=True):
    parser = cli.make_parser(__doc__.split("\n")[0], add_help)
    cli.add_recipe_argument(parser, NAME)
    model = parser.add_argument_group("model to quantize")
    model.add_argument("--task", choices=TASKS, default="verify", help="kind of model")
    model.add_argument("--model-run", default=None, help="a finished run_verify / run_upscale folder: its "
                       "arguments rebuild the model and its evaluation, its checkpoint gives the weights")
    model.add_argument("--arch", default="mobilefacenet", help="verify only, without --model-run: backbone "
                       "name (see run_verify.py --arch)")
    model.add_argument("--weights", default=None, help="verify only, without --model-run: state dict "
                       "(arcface_torch backbone.pth or a RaceComp checkpoint); scored with run_verify's default "
                       "protocol (for --align etc., make a run_verify --epochs 0 --weights run and quantize it)")
    model.add_argument("--image-size", type=int, default=112, help="verify only, without --model-run: face "
                       "crop size in px (arcface_torch models need 112)")
    quantize = parser.add_argument_group("quantization")
    quantize.add_argument("--bits", nargs="+", default=["w8a8", "w6a6"], help="settings wXaY: X weight bits "
                          "(per output channel), Y activation bits (per tensor)")
    quantize.add_argument("--quant-convention", choices=quant.CONVENTIONS, default="quantface",
                          help="quantizer: quantface = QuantFace's code exactly (raw weight and PReLU-slope "
                               "ranges, slopes at the activation bits); zero-inclusive = ranges widened to include "
                               "0, slopes at the weight bits, torch's fake_quantize arithmetic")
    quantize.add_argument("--calib", nargs="+", choices=CALIBRATION_SOURCES, default=list(CALIBRATION_SOURCES),
                          help="calibration images: real training images, a synthetic face folder, or data-free "
                               "images distilled from BatchNorm statistics")
    quantize.add_argument("--calib-size", type=int, default=64, help="calibration images")
    quantize.add_argument("--calib-data", default=None, help="real calibration source (verify: identity "
                          "folders; upscale: FairFace root, its train split); default: the model's training data")
    quantize.add_argument("--calib-race-weights", default="", help="skew the real calibration set on purpose, "
                          "e.g. caucasian=1 or african=0.1,caucasian=0.9 (race slugs)")
    quantize.add_argument("--synthetic-folder", default=None, help="folder of generated faces (e.g. StyleGAN); "
                          "default: the gan-face-generate package if installed, else demo procedural faces")
    quantize.add_argument("--datafree-steps", type=int, default=20, help="optimization steps per batch of "
                          "data-free images (ZeroQ uses 500: raise it on a GPU)")
    quantize.add_argument("--qat-steps", type=int, default=0, help="distillation fine-tuning steps (QuantFace): "
                          "quantized student vs full-precision teacher")
    quantize.add_argument("--qat-lr", type=float, default=1e-3, help="distillation learning rate")
    quantize.add_argument("--qat-weight-decay", type=float, default=0.0, help="distillation weight decay")
    quantize.add_argument("--qat-calibrate-steps", type=int, default=10, help="first distillation steps that "
                          "still update activation ranges")
    evaluate = parser.add_argument_group("evaluation (default: the model run's own)")
    evaluate.add_argument("--rfw", default=None, help="verify: RFW root instead of the model run's")
    evaluate.add_argument("--data", default=None, help="upscale: FairFace root instead of the model run's")
    evaluate.add_argument("--far", type=float, nargs="+", default=None, help="verify: target FARs instead of "
                          "the model run's")
    evaluate.add_argument("--eval-batch-size", type=int, default=64, help="images per evaluation batch")
    cli.add_output_arguments(parser, "folder of the run, one sub-folder per setting: fp32/, w8a8-real/, ... "
                                     "(unset: runs/quantize/<task>-<model run or arch>-seed<seed>)")
    return parser


def check_values(args):
    """The checks of each flag's value on its own (racecomp.sweep checks every grid value with them)."""
    settings(args)
    parse_race_weights(args.calib_race_weights, RFW_RACES if args.task == "verify" else FAIRFACE_RACES)
    if args.far is not None and not all(0.0 < far < 1.0 for far in args.far):
        raise InputError(f"--far {args.far}: false-accept rates must be in (0, 1)")


def check_args(args):
    """Every check that needs no data, before any work; returns the settings in the order run."""
    check_values(args)
    if args.task == "upscale" and args.model_run is None:
        raise InputError("--task upscale needs --model-run (a finished run_upscale folder)")
    if args.task == "upscale" and (args.weights is not None or args.rfw is not None or args.far is not None):
        raise InputError("--weights, --rfw and --far are for --task verify")
    if args.task == "verify" and args.data is not None:
        raise InputError("--data is for --task upscale (verify: --rfw)")
    defaults = get_args_parser()
    given = [f"--{flag.replace('_', '-')}" for flag in MODEL_FLAGS[1:]
             if getattr(args, flag) != defaults.get_default(flag)]
    if args.model_run is not None and given:
        raise InputError(f"--model-run gives the model and its evaluation; {', '.join(given)} would be ignored")
    return settings(args)


def settings(args):
    """Every Setting of a run: fp32 first, then each calibration source x bit width."""
    bits = [parse_bits(text) for text in args.bits]
    return [Setting("fp32", 32, 32, "none")] + [Setting(f"w{wbits}a{abits}-{source}", wbits, abits, source)
                                                for source in args.calib for wbits, abits in bits]


def setting_args(args, setting):
    """The arguments recorded in (and compared against) a setting's sub-folder."""
    return argparse.Namespace(**vars(args), **{SETTING_KEY: setting.name})


def setting_of(args):
    """The Setting that setting_args(args, setting) names."""
    return next(setting for setting in settings(args) if setting.name == getattr(args, SETTING_KEY))


def default_out(args):
    model = os.path.basename(os.path.normpath(args.model_run or args.arch))
    return os.path.join("runs", NAME, f"{args.task}-{model}-seed{args.seed}")


def demo_arguments(args):
    """run_verify's demo run (no flags but the seed) that main quantizes when no model is given."""
    return studies.get("verify").get_args_parser().parse_args(["--seed", str(args.seed), "--workers",
                                                              str(args.workers), "--device", args.device])


def demo_model_run(args):
    """The folder of that demo run: the one `python run_verify.py --seed S` writes, so a finished one is reused
    (and summarize.py sees one verify run, not two copies of the same experiment)."""
    return os.path.abspath(studies.get("verify").default_out(demo_arguments(args)))


def run_columns(args, code_version, data=None, model=None):
    """Identifying columns of one setting's per_race.csv; `args`: setting_args. The model (`model`, else
    model_identity(args)) stands in the recipe for the MODEL_FLAGS (so two folders of one model run give one
    recipe), the data fingerprints (`data`: run_folder.fingerprints) for the data folders' paths."""
    setting, model = setting_of(args), model or model_identity(args)
    recipe_settings = {**vars(args), **run_folder.data_ids(data or {}), "model": model}
    recipe = schema.recipe_id(recipe_settings, IDENTIFYING + SETTING_LISTS + MODEL_FLAGS + (SETTING_KEY,),
                              NON_RESULT_ARGS)
    return {"study": NAME, "task": args.task, "arch": model["arch"], "wbits": setting.wbits,
            "abits": setting.abits, "calib": setting.calib, "qat_steps": args.qat_steps if setting.wbits < 32 else 0,
            schema.RECIPE_COLUMN: recipe, "seed": args.seed, "code_version": code_version}


def model_identity(args):
    """The model as the recipe sees it: the model run's identifying columns and seed (not its folder), or
    the architecture, weights file and crop size of a --weights model."""
    if args.model_run is not None:
        return runs.run_columns(args.model_run)
    return {"arch": args.arch, "weights": args.weights, "image_size": args.image_size}


def _train_demo_model(args):
    """No model given: run_verify's demo run, trained now unless it has finished before (then it is reused)."""
    demo_args = demo_arguments(args)
    demo_args.out = demo_model_run(args)
    print(f"[model] no --model-run/--weights: run_verify's demo model, {demo_args.out}")
    studies.get("verify").main(demo_args)
    return demo_args.out


def model_settings(args):
    """(settings, record) of the model quantized: the --model-run's (runs.read_run), or for --weights those of
    run_verify --epochs 0 with it (no record)."""
    if args.model_run is not None:
        return runs.read_run(args.model_run, args.task, "--model-run")
    return studies.get("verify").get_args_parser().parse_args(
        ["--arch", args.arch, "--weights", args.weights, "--image-size", str(args.image_size), "--epochs", "0"]), {}


def build_model(args):
    """The full-precision model quantized, on the CPU in eval mode: the --model-run's final weights or --weights."""
    if args.model_run is not None:
        return runs.load_trained(args.model_run, args.task, "--model-run")[2].eval()
    return studies.get("verify").build_model(model_settings(args)[0]).eval()


def evaluation_arguments(args, run_args):
    """The model run's arguments with this run's evaluation overrides (data, FARs, batch size, workers)."""
    eval_args = copy.copy(run_args)
    eval_args.eval_batch_size, eval_args.workers, eval_args.device = args.eval_batch_size, args.workers, args.device
    if args.task == "verify":
        eval_args.rfw = args.rfw if args.rfw is not None else run_args.rfw
        eval_args.far = args.far if args.far is not None else run_args.far
    elif args.data is not None:
        eval_args.data = args.data
    return eval_args


def real_calibration_root(args, eval_args, record):
    """The folder of the real calibration images: --calib-data, else the model's training data."""
    if args.calib_data is not None:
        return args.calib_data
    if args.task == "verify":
        return record.get("train_root") or toydata.ensure_demo_data("identities")
    return studies.get("upscale").data_root(eval_args)


def _real_calibration_data(args, eval_args, root):
    """(dataset, race of each item, input size) of the real calibration images in `root`, in the model's layout."""
    if args.task == "verify":
        identity_records = datasets.read_identity_folders(root)
        dataset = datasets.FaceImages([((r.race, r.identity, r.path), r.path) for r in identity_records],
                                      image_size=eval_args.image_size)
        return dataset, [r.race for r in identity_records], eval_args.image_size
    calib_args = copy.copy(eval_args)
    calib_args.data = root
    train = studies.get("upscale").load_splits(calib_args)["train"]
    dataset = datasets.FairFaceSR(train, eval_args.scale, hr_size=eval_args.hr_size,
                                  lr_kernel=runs.lr_kernel(eval_args))
    return dataset, [r.race for r in train], dataset[0]["lr"].shape[-1]


def synthetic_folder(args):
    """The folder of synthetic calibration faces, or None when they come from the gan-face-generate package."""
    if args.synthetic_folder is None and calibration.gan_package_available():
        return None
    return args.synthetic_folder or toydata.ensure_demo_data("identities", seed=1000 + args.seed)


def data_folders(args):
    """{argument name: folder} of the data the run reads (run_folder.fingerprints): the evaluation data and
    the calibration images (the real ones are read whatever --calib is: they give the model's input size)."""
    run_args, record = model_settings(args)
    eval_args = evaluation_arguments(args, run_args)
    study = studies.get(args.task)
    folders = {"rfw": study.rfw_root(eval_args)} if args.task == "verify" else {"data": study.data_root(eval_args)}
    folders["calib_data"] = real_calibration_root(args, eval_args, record)
    if "synthetic" in args.calib and synthetic_folder(args) is not None:
        folders["synthetic_folder"] = synthetic_folder(args)
    return folders


def _calibration_batches(source, args, model, image_size, real_dataset, real_races):
    """Calibration batches in the model's input space, and a description of what they are."""
    # Face models take [-1, 1], upscalers [0, 1] low-resolution images.
    value_range = (-1.0, 1.0) if args.task == "verify" else (0.0, 1.0)
    if source == "real":
        vocabulary = RFW_RACES if args.task == "verify" else FAIRFACE_RACES
        batches, composition = calibration.real_calibration(
            real_dataset, min(args.calib_size, len(real_dataset)), races=real_races,
            race_weights=parse_race_weights(args.calib_race_weights, vocabulary), seed=args.seed,
            image_key="image" if args.task == "verify" else "lr")
        if args.task == "verify":
            batches = [verification.to_model_range(b) for b in batches]
        return batches, {"source": "real", "composition": composition}
    if source == "synthetic":
        folder = synthetic_folder(args)
        if folder is None:
            batches = calibration.gan_calibration(args.calib_size, image_size, seed=args.seed, value_range=value_range)
            return batches, {"source": "gan-face-generate (DCGAN trained on DigiFace-1M, non-commercial use)"}
        if args.synthetic_folder is None:
            print(f"[calib] synthetic: no --synthetic-folder and no gan-face-generate; using procedural demo "
                  f"faces in {folder}")
        batches = calibration.folder_calibration(folder, args.calib_size, image_size, value_range=value_range)
        return batches, {"source": "folder", "folder": folder}
    batches, losses = calibration.datafree_calibration(model, args.calib_size, image_size,
                                                       steps=args.datafree_steps, seed=args.seed)
    return batches, {"source": "datafree", "bn_loss_first": losses[0][0], "bn_loss_last": losses[0][-1]}


def prepare(run, model):
    """((evaluation arguments, data) of the model's study, facts for args.json): every setting is scored with the
    model run's own evaluation arguments (evaluation_arguments), so with the protocol the model was scored with."""
    args = run.args
    eval_args = evaluation_arguments(args, model_settings(args)[0])
    facts = dict(task=args.task, model_run=args.model_run, model=model_identity(args), evaluation_args=vars(eval_args))
    return (eval_args, studies.get(args.task).evaluation_data(eval_args)), facts


train = None  # a setting scores the model it is given (distillation, --qat-steps, is part of quantizing it)


def evaluate(run, model, evaluation):
    """Score `model` into the setting's folder through its model's study (evaluate_to_dir): (table, summary)."""
    eval_args, data = evaluation
    print(f"[{getattr(run.args, SETTING_KEY)}]")
    return studies.get(run.args.task).evaluate_to_dir(model, eval_args, data, run.out_dir, run.columns, run.device)


def main(args):
    distributed.refuse_torchrun("run_quantize.py")
    run_settings = check_args(args)
    args.out = os.path.abspath(args.out or default_out(args))
    run_folder.absolute_paths(args, DATA_ARGS)
    device = cli.resolve_device(args.device)
    precision.configure_float32(device)
    cpus.configure_torch_threads()
    engine.seed_everything(args.seed)
    if args.task == "verify" and args.model_run is None and args.weights is None:
        args.model_run = _train_demo_model(args)
    with run_folder.locked(args.out):
        _quantize(args, run_settings, device)
    print(f"[quantize] results in {args.out}; tables: python summarize.py {args.out} --out tables/")


def run_setting(args, setting, device, data, model, **facts):
    """The run of one setting (run_folder.run_study) in its sub-folder of --out, scoring `model`."""
    run_folder.run_study(NAME, setting_args(args, setting), device, out_dir=os.path.join(args.out, setting.name),
                         data=data, model=model, **facts)


def _quantize(args, run_settings, device):
    """Each setting's run (run_folder.run_study): fp32, then each calibration source's bit widths, every one
    calibrated on the same batches; the data is fingerprinted once for all of them."""
    model = build_model(args).to(device)
    eval_args = evaluation_arguments(args, model_settings(args)[0])
    folders = data_folders(args)
    data = run_folder.fingerprints(folders)
    real_dataset, real_races, input_size = _real_calibration_data(args, eval_args, folders["calib_data"])
    run_setting(args, run_settings[0], device, data, model, model_size_bytes=quant.model_size_bytes(model, 32))
    for source in args.calib:
        batches, calib_info = _calibration_batches(source, args, model, input_size, real_dataset, real_races)
        batches = [b.to(device) for b in batches]
        for setting in (s for s in run_settings[1:] if s.calib == source):
            qmodel = quant.quantize_model(model, setting.wbits, setting.abits, convention=args.quant_convention)
            quant.calibrate(qmodel, batches)
            qat_losses = []
            if args.qat_steps:
                qat_losses = quant.distill(qmodel, model, batches, args.qat_steps, args.qat_lr,
                                           calibrate_steps=args.qat_calibrate_steps,
                                           weight_decay=args.qat_weight_decay)
            qmodel.eval()
            run_setting(args, setting, device, data, qmodel, calibration=calib_info,
                        quantization=quant.quantization_summary(qmodel),
                        model_size_bytes=quant.quantized_size_bytes(qmodel, model), qat_losses=qat_losses)


def command_line():
    """`racecomp-quantize ...` (installed), `python -m racecomp.studies.quantize ...`: the same as run_quantize.py."""
    cli.run_script(main, get_args_parser().parse_args())


if __name__ == "__main__":
    command_line()
