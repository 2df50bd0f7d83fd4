"""The CSV contract between the studies (which write run folders) and the tables (which read them). No torch.

A finished run folder holds per_race.csv (written last) and a per-item file. Every per_race.csv row starts
with the run's identifying columns, in the order its study's `run_columns` gives them, ending with
`recipe`, `seed` and `code_version`, then `race` and the metrics. An experiment is every identifying
column but POOLED_COLUMNS: runs that differ only in seed (and code version) are pooled as seeds; runs
that differ in anything that changes a result differ in an identifying column or in `recipe`.
"""
import hashlib
import json
import os

from racecomp.races import FAIRFACE_RACES, RFW_RACES

FINISHED_MARKER = "per_race.csv"  # a run folder holds results once this file exists; it is written last
RECORD_FILE = "args.json"  # a run's record: {"args": every resolved argument, "study", "warnings", ...}
STUDIES = ("upscale", "verify", "quantize")
# Quantization runs are read as the kind of model they quantize (their `task` column).
FAMILIES = ("upscale", "verify", "quantize-upscale", "quantize-verify")
POOLED_COLUMNS = ("seed", "code_version")  # identifying columns that do not define an experiment
RECIPE_COLUMN = "recipe"

# Per kind of evaluation ("upscale": images, "verify": RFW pairs).
ITEM_FILES = {"upscale": "per_image.csv", "verify": "per_pair.csv"}
RACES = {"upscale": FAIRFACE_RACES, "verify": RFW_RACES}
COUNT_COLUMN = {"upscale": "n", "verify": "n_pairs"}  # per_race.csv column holding the items per race
RACE_METRICS = {"upscale": ("ssim_y", "psnr_y", "ssim_rgb", "psnr_rgb"), "verify": ("accuracy",)}
ITEM_COLUMNS = {"upscale": ("file", "race", "psnr_y", "ssim_y"),
                "verify": ("race", "fold", "line", "id1", "id2", "correct")}  # both identities: two-way clusters
# The range every metric can take (per item and per race); a value outside it is not a result. PSNR of 8-bit
# images is at least 0 (MSE at most 255^2) and, when finite, at most 10 log10(255^2 H W C), about 125 dB even at
# 4096 x 4096 (one level off in one value): 1000 leaves room and keeps sums of them finite (math.fsum).
METRIC_RANGES = {"psnr_y": (0.0, 1000.0), "psnr_rgb": (0.0, 1000.0), "ssim_y": (-1.0, 1.0), "ssim_rgb": (-1.0, 1.0),
                 "accuracy": (0.0, 100.0), "id_cos": (-1.0, 1.0)}
# Metrics only some runs have, in per_race.csv and under the same names in the per-item file: upscaling runs
# with --identity-model write id_cos (cosine of the recognition embeddings of the upscaled face and of the
# original, in [-1, 1], higher = identity kept; racecomp.identity). A bicubic run with the same
# --identity-model gives the bicubic value itself. A run without them is not broken.
OPTIONAL_RACE_METRICS = {"upscale": ("id_cos",)}
# Arguments (args.json) that choose the recognition model behind id_cos: two runs' id_cos compare only when
# these agree.
IDENTITY_MODEL_ARGS = ("identity_model", "identity_arch")
# args.json "warnings" (racecomp.sanity): a list of {"check", "message", "value"} of checks the run failed after its
# evaluation. A run whose recognizer failed one of COLLAPSE_CHECKS gives no usable id_cos.
WARNINGS_KEY = "warnings"
# args.json "data_fingerprints": {argument name: racecomp.datasets.fingerprint of that data folder}; a run without it
# was made before runs recorded it (its data is known by its path only).
DATA_KEY = "data_fingerprints"
COLLAPSE_CHECKS = ("collapsed embeddings",)
# Identifying columns of a verification run scored on restored faces (run_verify --restore); a run on the
# original faces has neither.
RESTORE_COLUMNS = ("restore", "restore_model")

# Optional probe files of a verification run (run_verify --probe gender, --bias-probe; racecomp.probes): each row
# starts with the run's identifying columns as in per_race.csv. probe_gender.csv: per FairFace race the gender
# probe's F1 on that race (f1_in) and on the others (f1_out), worst and gap of the two, accuracy; fractions in
# [0, 1]. bias_probe.csv: per comparison of FairFace probe sets the association score (in [-1, 1]) before and
# after training; their Bias Transfer Score goes to args.json ("bias_transfer_score").
PROBE_GENDER_FILE, BIAS_PROBE_FILE = "probe_gender.csv", "bias_probe.csv"
PROBE_GENDER_COLUMNS = ("race", "n", "f1_in", "f1_out", "worst", "gap", "accuracy")
BIAS_PROBE_COLUMNS = ("set_a", "set_b", "n_a", "n_b", "assoc_pretrained", "assoc_finetuned")

# Flags every study has that never change a result: where a run goes and how fast it gets there. Each
# study adds its own (e.g. how much it prints) in its NON_RESULT_ARGS.
# `recipe` (run_* --recipe) is a name for flags that are recorded, and hashed, themselves.
NON_RESULT_ARGS = ("out", "overwrite", "keep_checkpoint", "workers", "device", "eval_batch_size", "recipe")
# Training flags (the studies that train add them to their NON_RESULT_ARGS) that say only whether a resume may go on.
RESUME_ARGS = ("allow_code_change",)
# Training flags (the studies that train add them to their NON_RESULT_ARGS) that choose other kernels for the same
# computation: like the device, they change rounding only.
KERNEL_ARGS = ("deterministic", "channels_last")
# Flags added after runs were made, at the value that leaves a run as it was before them: at that value they are
# left out of the recipe, and a run folder whose args.json lacks them compares as holding it, so older runs keep
# their recipe and still resume. (--compile drops the last partial batch: it changes what trains.)
ADDED_LATER = {"identity_model": None, "identity_arch": None, "compile": False, "optimizer": "adamw",
               "schedule": "cosine", "pixel_weight": 1.0, "vgg_layer_weights": "0.1,1,1,1", "qat_weight_decay": 0.0,
               "decay_all": False, "cosine_restarts": "", "lr_kernel": "bicubic", "pixel_space": "rgb",
               "last_blocks": "encoder", "epoch_copies": None, "margin_grad": "exact"}


def recipe_id(settings, identifying, non_result=NON_RESULT_ARGS):
    """Short hash of every result-changing setting that is not already an identifying column nor the seed.

    `settings`: {argument name: value} (vars(args)). Tables group runs by their identifying columns with
    seeds pooled; this id keeps runs that differ in anything else (learning rate, epochs, loss weights,
    data, evaluation protocol) from being pooled as seeds of one experiment.
    """
    kept = {k: v for k, v in sorted(settings.items()) if k not in non_result and k not in identifying and k != "seed"
            and not (k in ADDED_LATER and v == ADDED_LATER[k])}
    return hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:10]


def read_record(folder):
    """The record (args.json) of a run folder as a dict, None when the folder has none. ValueError when it cannot
    be used, its message naming the problem without the path: "unreadable (...)" or "no `args` dict (...)"."""
    path = os.path.join(folder, RECORD_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"unreadable ({error})") from None
    if not isinstance(record, dict) or not isinstance(record.get("args"), dict):
        raise ValueError("no `args` dict (not a RaceComp args.json)")
    return record
