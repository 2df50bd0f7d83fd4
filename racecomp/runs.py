"""A finished run folder as another run uses it: its settings, the model it made, and its identifying columns.

The studies stand side by side: verification restores faces with an upscaling run (--restore) or starts from
its encoder (--init-from), upscaling recognises faces with a verification run (--identity-model), quantization
quantizes either. Each reads the other's folder through this module, by the study's name, never by importing
the other study.

A run folder is finished once per_race.csv exists (schema.FINISHED_MARKER); its args.json holds every flag
the run was given ("args") and what happened ("warnings", among others), its final weights file holds the
model (FINAL_WEIGHTS).
"""
import argparse
import csv
import os

from racecomp import facenets, files, schema, upscalers
from racecomp.errors import InputError

FINAL_WEIGHTS = {"upscale": "best.pth",  # the epoch chosen on dev
                 "verify": "model.pth"}  # no selection split: the last epoch's weights


def read_run(run_dir, study, flag):
    """(settings, record) of the finished `study` run ("upscale" or "verify") in `run_dir`: settings is an
    argparse.Namespace of the flags it ran with, record its whole args.json. `flag` names the option that gave
    the folder, in errors."""
    args_path = os.path.join(run_dir, schema.RECORD_FILE)
    if not os.path.isfile(os.path.join(run_dir, schema.FINISHED_MARKER)) or not os.path.isfile(args_path):
        raise InputError(f"{flag} {run_dir}: not a finished run folder (needs {schema.RECORD_FILE} and "
                         f"{schema.FINISHED_MARKER})")
    try:
        record = schema.read_record(run_dir)
    except ValueError as error:
        raise InputError(f"{flag} {run_dir}: {args_path}: {error}") from None
    if record.get("study") != study:
        raise InputError(f"{flag} {run_dir}: a {record.get('study')!r} run, not a {study!r} run")
    return argparse.Namespace(**record["args"]), record


def run_columns(run_dir):
    """The run as a recipe sees it: the identifying columns and seed its per_race.csv rows start with (without
    the code version), so two copies of one run, wherever they are, are one model."""
    path = os.path.join(run_dir, schema.FINISHED_MARKER)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        first = next(reader, None)
        header = reader.fieldnames or []
    if first is None or "code_version" not in header:
        raise InputError(f"{path}: no rows, or no `code_version` column (not a RaceComp per_race.csv)")
    return {column: first[column] for column in header[:header.index("code_version")]}


def lr_kernel(settings):
    """The --lr-kernel of upscaling run settings (a run made before the flag made its LR images bicubic)."""
    return getattr(settings, "lr_kernel", schema.ADDED_LATER["lr_kernel"])


def final_weights(run_dir, study):
    return os.path.join(run_dir, FINAL_WEIGHTS[study])


def architecture(study, settings):
    """The untrained model of a run's settings on the CPU: an upscaler, or a face-recognition backbone."""
    if study == "upscale":
        return upscalers.build_upscaler(settings.arch, settings.scale, settings.upsampler)
    return facenets.get_model(settings.arch, settings.embedding_size)


def load_starting_weights(model, weights, init_from):
    """Load a face model's starting weights: `weights` (an arcface_torch backbone.pth or a RaceComp checkpoint)
    and/or the encoder of the finished upscaling run `init_from` (its FINAL_WEIGHTS)."""
    if weights:
        facenets.load_backbone_weights(model, weights)
        print(f"[model] weights from {weights}")
    if init_from:
        read_run(init_from, "upscale", "--init-from")
        path = final_weights(init_from, "upscale")
        count = facenets.load_encoder_from_upscaler(model, files.load_checkpoint(path)["model"])
        print(f"[model] encoder initialised from upscaler {path} ({count} tensors)")


def load_trained(run_dir, study, flag):
    """(settings, record, model with the run's final weights, on the CPU) of a finished `study` run: what
    quantization quantizes, what --restore restores with and what --identity-model recognises with. A
    verification run that trained nothing (--epochs 0) is its starting weights."""
    settings, record = read_run(run_dir, study, flag)
    if study == "upscale" and settings.arch == "bicubic":
        raise InputError(f"{flag} {run_dir}: the bicubic baseline has no weights")
    model = architecture(study, settings)
    path = final_weights(run_dir, study)
    if os.path.isfile(path):
        model.load_state_dict(files.load_checkpoint(path)["model"])
    elif study == "verify" and settings.epochs == 0:
        load_starting_weights(model, settings.weights, settings.init_from)
    else:
        raise InputError(f"{flag} {run_dir}: no final weights ({path} missing)")
    return settings, record, model


def refuse_collapsed_recognizer(record, run_dir, flag):
    """ValueError when a verification run's record says its embeddings are collapsed: any similarity measured
    with it (id_cos) would be near 1 whatever the faces."""
    found = [warning for warning in record.get(schema.WARNINGS_KEY, []) if warning["check"] in schema.COLLAPSE_CHECKS]
    if found:
        raise InputError(f"{flag} {run_dir}: its recognizer failed a sanity check ({found[0]['message']}); "
                         f"a similarity measured with it means nothing. Train it longer or use another model.")
