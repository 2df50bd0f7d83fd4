"""Per-race tables a paper can print, from finished run folders: seeds pooled per experiment, fairness gaps
with bootstrap CIs, paired model-vs-reference tests, minority penalties; markdown, CSV and PNG dot plots.

A run folder is finished when it holds per_race.csv. Its rows start with the run's identifying columns (every
column before `race`: study, the settings, seed, code_version); an experiment is every identifying column but
seed and code_version, so the seeds of one experiment are pooled. Runs are sorted into families, each with
its own columns and tables: upscale, verify, quantize-upscale and quantize-verify (quantize runs by `task`).

Conventions used by every table:
  - n beside a value counts items pooled over seeds: an image (or pair) evaluated by two seeds counts twice.
  - Per-item statistics use per_image.csv (PSNR-Y in dB, SSIM-Y in [0, 1]) or per_pair.csv (`correct`, 0/1,
    reported as percent). An infinite per-image PSNR (an image reproduced exactly) is capped at
    PSNR_CAP_DB for the bootstrap and paired tests only, and each capped count is reported as a problem.
  - Bootstrap resampling: images are clustered by file (the same image under two seeds is drawn together),
    pairs by their first identity `id1`; every bootstrap is seeded with the same --seed, so an experiment's
    intervals do not change when other runs are added.
  - Differences are experiment minus reference: the minority penalty is under-sampled - balanced (negative =
    the under-sampled model is worse), the gain is model - bicubic, quantization is quantized - fp32.
  - Nothing is dropped silently: every file or experiment left out is reported with its path and the reason.
"""
import csv
import glob
import math
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from racecomp import fairness, files
from racecomp.races import FAIRFACE_RACES, RFW_RACES, check_label

FAMILIES = ("upscale", "verify", "quantize-upscale", "quantize-verify")
STUDIES = ("upscale", "verify", "quantize")
POOLED_COLUMNS = ("seed", "code_version")  # identifying columns that do not define an experiment
ITEM_FILES = {"upscale": "per_image.csv", "verify": "per_pair.csv"}
RACES = {"upscale": FAIRFACE_RACES, "verify": RFW_RACES}
COUNT_COLUMN = {"upscale": "n", "verify": "n_pairs"}  # per_race.csv column holding the items per race
RACE_METRICS = {"upscale": ("ssim_y", "psnr_y", "ssim_rgb", "psnr_rgb"), "verify": ("accuracy",)}
ITEM_COLUMNS = {"upscale": ("file", "race", "psnr_y", "ssim_y"), "verify": ("race", "fold", "line", "id1", "correct")}
# Metrics with per-item values: (column of the per-item file, fairness statistic).
ITEM_METRICS = {"upscale": {"psnr_y": ("psnr_y", "mean"), "ssim_y": ("ssim_y", "mean")},
                "verify": {"accuracy": ("correct", "percent")}}
METRIC_NAMES = {"psnr_y": "PSNR-Y (dB)", "ssim_y": "SSIM-Y", "psnr_rgb": "PSNR-RGB (dB)", "ssim_rgb": "SSIM-RGB",
                "accuracy": "accuracy (%)"}
DECIMALS = {"psnr_y": 2, "ssim_y": 4, "psnr_rgb": 2, "ssim_rgb": 4, "accuracy": 2}
PSNR_CAP_DB = 100.0  # same cap as upscaling.mean_psnr_selector
INFINITE_ALLOWED = ("psnr_y", "psnr_rgb")  # an exact reproduction has infinite PSNR
# Reference of each relation: values it must have, and the experiment columns it may differ in (None: all but
# study and scale, for the bicubic floor of the same scale).
REFERENCES = {
    "bicubic": ({"arch": "bicubic", "minority": "none"}, None),
    "balanced": ({"minority": "none"}, ("minority", "weight", "minority_mode")),
    "fp32": ({"wbits": "32", "abits": "32", "calib": "none"}, ("wbits", "abits", "calib", "qat_steps")),
}
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


class Problems:
    """Everything left out or suspicious, by file: printed when found and listed in tables.md."""

    def __init__(self):
        self.entries = []  # (path, message)

    def add(self, path, message):
        if (path, message) in self.entries:  # the same check may run for several tables
            return
        self.entries.append((path, message))
        print(f"[problem] {path}: {message}", flush=True)


@dataclass
class Run:
    """One finished run: identifying columns as written, per-race means, per-item rows (None if unusable)."""
    folder: str
    family: str
    kind: str  # "upscale" or "verify": which per-item file and metrics
    identity: dict  # identifying column -> value as written, in file order
    per_race: dict  # race -> {"n": items, metric: mean}
    items: list  # [{"key", "race", "cluster", <per-item column>: float}] or None

    @property
    def path(self):
        return os.path.join(self.folder, files.FINISHED_MARKER)


@dataclass
class Experiment:
    """Runs that differ only in seed (and code version); `columns` = the experiment's identifying values."""
    family: str
    kind: str
    columns: dict
    runs: list  # sorted by seed

    def label(self, shown=None):
        shown = [c for c in self.columns if c != "study"] if shown is None else shown
        return ", ".join(f"{c}={self.columns.get(c, '')}" for c in shown) or "(single experiment)"

    def pooled_columns(self):
        """n_seeds, seeds and code versions behind a row, so that it can be traced back."""
        return {"n_seeds": len(self.runs), "seeds": ";".join(r.identity["seed"] for r in self.runs),
                "code_version": ";".join(sorted({r.identity["code_version"] for r in self.runs}))}


# ---------------------------------------------------------------------------------------------------------
# Finding and reading runs


def _canonical(value):
    """Comparable form of an identifying value: numbers by value ('1' equals '1.0'), text stripped."""
    try:
        number = float(value)
    except ValueError:
        return value.strip()
    return number if math.isfinite(number) else value.strip()


def _sort_key(value):
    canonical = _canonical(value)
    return (0, canonical, "") if isinstance(canonical, float) else (1, 0.0, canonical)


def find_run_folders(patterns, problems):
    """Sorted folders holding per_race.csv under the given folders, per_race.csv files or globs (recursively).

    A pattern under which no finished run is found, a named file that is not a per_race.csv, and a folder
    with args.json but no per_race.csv (an unfinished run) are reported.
    """
    found = {}  # real path -> path as found
    unfinished = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        before = len(found)
        for match in matches:
            if os.path.isfile(match):
                if os.path.basename(match) == files.FINISHED_MARKER:
                    found.setdefault(os.path.realpath(os.path.dirname(match)), os.path.dirname(match) or ".")
                elif not glob.has_magic(pattern):
                    problems.add(match, f"not a run folder or {files.FINISHED_MARKER}")
                continue
            for folder, subfolders, names in os.walk(match):
                subfolders.sort()
                if files.FINISHED_MARKER in names:
                    found.setdefault(os.path.realpath(folder), folder)
                elif "args.json" in names:
                    unfinished.append(folder)
        if len(found) == before:
            problems.add(pattern, f"no {files.FINISHED_MARKER} found (nothing there, or only runs already found)")
    for folder in dict.fromkeys(unfinished):
        # A quantization run's top folder may hold args.json while its runs are subfolders.
        inside = os.path.realpath(folder) + os.sep
        if not any(real.startswith(inside) for real in found):
            problems.add(folder, f"unfinished run (args.json but no {files.FINISHED_MARKER}): left out")
    return sorted(found.values())


def _read_csv(path, required, problems):
    """(header, [(line, row dict)]) of a CSV, or None after reporting why it cannot be used."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            rows = []
            for fields in reader:
                if len(fields) != len(header):
                    problems.add(path, f"line {reader.line_num}: {len(fields)} fields but the header has "
                                       f"{len(header)} (truncated or not a RaceComp file)")
                    return None
                rows.append((reader.line_num, dict(zip(header, fields))))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        problems.add(path, f"unreadable: {error}")
        return None
    if header is None:
        problems.add(path, "empty file")
        return None
    missing = [column for column in required if column not in header]
    if missing:
        problems.add(path, f"missing column(s) {missing} (not a RaceComp results file?)")
        return None
    if len(set(header)) != len(header):
        problems.add(path, "repeated column names in the header")
        return None
    if not rows:
        problems.add(path, "no data rows (header only)")
        return None
    return header, rows


def _number(row, column, line, allow_infinite=False):
    text = row[column]
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"line {line}: column {column!r}: {text!r} is not a number") from None
    if math.isnan(value) or value == -math.inf or (value == math.inf and not allow_infinite):
        raise ValueError(f"line {line}: column {column!r}: {text!r} is not a finite number")
    return value


def _count(row, column, line):
    text = row[column]
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"line {line}: column {column!r}: {text!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"line {line}: column {column!r}: {value} items")
    return value


def _run_identity(header, rows):
    """Identifying columns (those before `race`) and their values, checked to agree on every row."""
    if header[0] != "study" or "race" not in header:
        raise ValueError("does not start with a `study` column or has no `race` column (not a RaceComp per_race.csv)")
    columns = header[:header.index("race")]
    missing = [c for c in POOLED_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"identifying column(s) {missing} missing before `race`")
    first_line, first = rows[0]
    identity = {c: first[c] for c in columns}
    for line, row in rows[1:]:
        differing = [c for c in columns if row[c] != identity[c]]
        if differing:
            shown = ", ".join(f"{c} {row[c]!r} vs {identity[c]!r}" for c in differing)
            raise ValueError(f"line {line}: identifying column(s) disagree with line {first_line} ({shown}); "
                             f"rows of two runs in one file?")
    return identity


def _run_family(identity):
    """(family, kind) of a run from its study (and task, for quantization runs)."""
    study = identity["study"]
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r} (expected one of {list(STUDIES)})")
    if study != "quantize":
        return study, study
    missing = [c for c in ("task", "wbits", "abits", "calib") if c not in identity]
    if missing:
        raise ValueError(f"quantize run without identifying column(s) {missing}")
    if identity["task"] not in ITEM_FILES:
        raise ValueError(f"quantize run with unknown task {identity['task']!r} (expected upscale or verify)")
    return f"quantize-{identity['task']}", identity["task"]


def _per_race_values(rows, kind):
    """{race: {"n", metric...}} of per_race.csv rows, races checked against the study's vocabulary."""
    per_race = {}
    for line, row in rows:
        race = check_label(row["race"], RACES[kind], f"line {line}")
        if race in per_race:
            raise ValueError(f"line {line}: race {race!r} appears twice")
        values = {"n": _count(row, COUNT_COLUMN[kind], line)}
        for metric in RACE_METRICS[kind]:
            values[metric] = _number(row, metric, line, allow_infinite=metric in INFINITE_ALLOWED)
        per_race[race] = values
    return per_race


def _item_rows(rows, kind):
    """Per-item dicts {key, race, cluster, value columns} of per_image.csv / per_pair.csv rows."""
    items, seen = [], set()
    for line, row in rows:
        race = check_label(row["race"], RACES[kind], f"line {line}")
        if kind == "upscale":
            key, cluster = row["file"], row["file"]
            item = {"psnr_y": _number(row, "psnr_y", line, allow_infinite=True),
                    "ssim_y": _number(row, "ssim_y", line)}
        else:
            key, cluster = (race, _count(row, "line", line)), row["id1"]
            correct = _number(row, "correct", line)
            if correct not in (0.0, 1.0):
                raise ValueError(f"line {line}: column 'correct' must be 0 or 1, got {row['correct']!r}")
            item = {"correct": correct, "fold": row["fold"]}
        if not key or key in seen:
            raise ValueError(f"line {line}: item {key!r} is empty or appears twice")
        seen.add(key)
        items.append({"key": key, "race": race, "cluster": cluster, **item})
    return items


def _same_mean(a, b):
    return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _check_items(items, per_race, kind):
    """Raise unless the per-item rows reproduce per_race.csv: same races, counts and (where exact) means."""
    by_race = {}
    for item in items:
        by_race.setdefault(item["race"], []).append(item)
    if set(by_race) != set(per_race):
        raise ValueError(f"races {sorted(by_race)} differ from per_race.csv's {sorted(per_race)}")
    for race, members in by_race.items():
        if len(members) != per_race[race]["n"]:
            raise ValueError(f"{race}: {len(members)} rows but per_race.csv says {per_race[race]['n']} "
                             f"(truncated file?)")
        if kind == "upscale":
            checks = {metric: math.fsum(m[metric] for m in members) / len(members) for metric in ("psnr_y", "ssim_y")}
        else:
            fold_sizes = {}
            for member in members:
                fold_sizes[member["fold"]] = fold_sizes.get(member["fold"], 0) + 1
            # With equal folds the mean of fold accuracies is the pooled share of correct pairs (RFW's case).
            checks = ({"accuracy": 100.0 * math.fsum(m["correct"] for m in members) / len(members)}
                      if len(set(fold_sizes.values())) == 1 else {})
        for metric, mean in checks.items():
            if not _same_mean(mean, per_race[race][metric]):
                raise ValueError(f"{race}: mean {metric} of the rows is {mean!r} but per_race.csv says "
                                 f"{per_race[race][metric]!r} (a file from another run?)")


def load_run(folder, problems):
    """The Run of a folder, or None after reporting why per_race.csv cannot be used.

    A missing or inconsistent per-item file is reported too; the run then keeps items=None and appears
    only in the tables built from per-race means.
    """
    path = os.path.join(folder, files.FINISHED_MARKER)
    table = _read_csv(path, ("study", "seed", "code_version", "race"), problems)
    if table is None:
        return None
    header, rows = table
    try:
        identity = _run_identity(header, rows)
        family, kind = _run_family(identity)
        missing = [c for c in (COUNT_COLUMN[kind],) + RACE_METRICS[kind] if c not in header]
        if missing:
            raise ValueError(f"missing column(s) {missing} of a {kind} per_race.csv")
        per_race = _per_race_values(rows, kind)
    except ValueError as error:
        problems.add(path, f"{error}; run left out")
        return None
    for race, values in per_race.items():
        for metric in INFINITE_ALLOWED:
            if values.get(metric) == math.inf:
                problems.add(path, f"{race}: mean {metric} is infinite (an image reproduced exactly); kept as inf")
    run = Run(folder, family, kind, identity, per_race, None)
    item_path = os.path.join(folder, ITEM_FILES[kind])
    if not os.path.isfile(item_path):
        problems.add(item_path, "missing: the run appears only in the per-race tables (no CIs, no paired tests)")
        return run
    table = _read_csv(item_path, ITEM_COLUMNS[kind], problems)
    if table is None:
        problems.add(item_path, "unusable: the run appears only in the per-race tables")
        return run
    try:
        items = _item_rows(table[1], kind)
        _check_items(items, per_race, kind)
    except ValueError as error:
        problems.add(item_path, f"{error}; the run appears only in the per-race tables")
        return run
    run.items = items
    return run


def group_experiments(runs, problems):
    """Experiments (seeds pooled), sorted by family then settings.

    Two runs of the same experiment and seed clash: which one is right cannot be told, so all of them are
    left out (reported); the experiment's other seeds remain.
    """
    grouped = {}
    for run in runs:
        settings = tuple(sorted((c, _canonical(v)) for c, v in run.identity.items() if c not in POOLED_COLUMNS))
        grouped.setdefault((run.family, settings), []).append(run)
    experiments = []
    for (family, _), members in grouped.items():
        by_seed = {}
        for run in members:
            by_seed.setdefault(_canonical(run.identity["seed"]), []).append(run)
        kept = []
        for seed, same in by_seed.items():
            if len(same) == 1:
                kept.append(same[0])
                continue
            for run in same:
                others = ", ".join(other.path for other in same if other is not run)
                problems.add(run.path, f"same experiment and seed {run.identity['seed']} as {others}: "
                                       f"all {len(same)} left out (which is right cannot be told)")
        if kept:
            kept.sort(key=lambda r: _sort_key(r.identity["seed"]))
            columns = {c: v for c, v in kept[0].identity.items() if c not in POOLED_COLUMNS}
            experiments.append(Experiment(family, kept[0].kind, columns, kept))
    experiments.sort(key=lambda e: (FAMILIES.index(e.family), [(c, _sort_key(v)) for c, v in e.columns.items()]))
    return experiments


# ---------------------------------------------------------------------------------------------------------
# Tables from per-race means (seeds pooled)


def _races_of(experiments):
    """Races present in any run, in the vocabulary's order."""
    present = {race for e in experiments for run in e.runs for race in run.per_race}
    return [race for race in RACES[experiments[0].kind] if race in present]


def seed_spread_rows(experiment):
    """Table 1 rows: per race, mean / min / max / delta (max - min) over seeds of each per-race metric.

    n_images sums the race's images over seeds (the module's n convention); n_seeds counts the seeds
    that evaluated the race.
    """
    rows = []
    for race in _races_of([experiment]):
        runs = [run for run in experiment.runs if race in run.per_race]
        row = {**experiment.columns, **experiment.pooled_columns(), "race": race, "n_seeds": len(runs),
               "n_images": sum(run.per_race[race]["n"] for run in runs)}
        for metric in RACE_METRICS[experiment.kind]:
            values = [run.per_race[race][metric] for run in runs]
            mean = math.inf if math.inf in values else math.fsum(values) / len(values)
            row.update({f"{metric}_mean": mean, f"{metric}_min": min(values), f"{metric}_max": max(values),
                        f"{metric}_delta": max(values) - min(values)})
        rows.append(row)
    return rows


def race_columns_row(experiment, metric, races, problems):
    """Table 2 row ('Compressed Models Decompress Race Biases' Table I layout): per race the mean over seeds
    of `metric` and its n, then Avg, STD (ddof=1) and, for accuracy in percent, SER, all three computed
    from the shown per-race means (so a reader can recompute them from the row)."""
    row = {**experiment.columns, **experiment.pooled_columns()}
    means = {}
    for race in races:
        values = [run.per_race[race][metric] for run in experiment.runs if race in run.per_race]
        if values:
            means[race] = math.inf if math.inf in values else math.fsum(values) / len(values)
            row[race] = means[race]
            row[f"{race}_n"] = sum(run.per_race[race]["n"] for run in experiment.runs if race in run.per_race)
        else:
            row[race], row[f"{race}_n"] = "", ""
    seed_races = {tuple(sorted(run.per_race)) for run in experiment.runs}
    if len(seed_races) > 1:
        problems.add(experiment.runs[0].path, f"[{experiment.label()}]: seeds evaluated different races "
                                              f"{sorted(seed_races)}; each race is averaged over its own seeds")
    if set(means) != set(races):
        problems.add(experiment.runs[0].path, f"[{experiment.label()}]: no {sorted(set(races) - set(means))}; "
                                              f"its Avg/STD/SER cover only {sorted(means)}")
    summary_keys = ("mean", "std", "ser") if metric == "accuracy" else ("mean", "std")
    try:
        summary = fairness.group_summary(means)
    except ValueError as error:
        problems.add(experiment.runs[0].path, f"[{experiment.label()}] {metric}: no Avg/STD/SER ({error})")
        summary = {key: "" for key in summary_keys}
    for key, name in zip(summary_keys, ("Avg", "STD", "SER")):
        row[name] = summary[key]
    return row


# ---------------------------------------------------------------------------------------------------------
# Per-item statistics: bootstrap CIs and paired tests


def _item_values(experiment, metric):
    """Values, race labels and cluster ids of every item of every seed (PSNR not yet capped)."""
    column, _ = ITEM_METRICS[experiment.kind][metric]
    items = [item for run in experiment.runs for item in run.items]
    values = np.array([item[column] for item in items], dtype=np.float64)
    return values, [item["race"] for item in items], [item["cluster"] for item in items]


def _capped(values):
    """PSNR values with +inf (exact reproductions) replaced by PSNR_CAP_DB, and how many were."""
    return np.minimum(values, PSNR_CAP_DB), int(np.sum(np.isinf(values)))


def _usable_for_items(experiment, problems, purpose):
    missing = [run.path for run in experiment.runs if run.items is None]
    if missing:
        problems.add(missing[0], f"[{experiment.label()}]: left out of the {purpose}: seed(s) without usable "
                                 f"per-item rows ({', '.join(missing)})")
        return False
    return True


def fairness_interval_rows(experiment, metric, n_boot, seed, ci, problems):
    """Table 3 rows: bootstrap_groups over the items of all seeds: per race value [lo, hi] and n, then the
    across-race mean, gap, STD and (accuracy only) SER with CIs, and the gap's permutation p-value."""
    values, races, clusters = _item_values(experiment, metric)
    values, capped = _capped(values)
    if capped:
        problems.add(experiment.runs[0].path, f"[{experiment.label()}]: {capped} of {len(values)} per-image "
                                              f"{metric} values are infinite; capped at {PSNR_CAP_DB:g} dB for "
                                              f"the CIs and paired tests")
    statistic = ITEM_METRICS[experiment.kind][metric][1]
    try:
        result = fairness.bootstrap_groups(values, np.array(races), statistic, n_boot=n_boot, seed=seed,
                                           clusters=np.array(clusters), ci=ci)
    except ValueError as error:
        problems.add(experiment.runs[0].path, f"[{experiment.label()}] {metric}: no CIs ({error})")
        return []
    base = {**experiment.columns, **experiment.pooled_columns(), "metric": metric}
    order = [race for race in RACES[experiment.kind] if race in result["groups"]]
    rows = [{**base, "quantity": race, **result["groups"][race]} for race in order]
    keys = ("mean", "gap", "std", "ser") if statistic == "percent" else ("mean", "gap", "std")
    rows += [{**base, "quantity": key, **result["summary"][key], "n": len(values)} for key in keys]
    rows.append({**base, "quantity": "gap_p_value", "value": result["gap_p_value"], "lo": "", "hi": "",
                 "n": len(values)})
    return rows


def _seed_averaged(experiment, metric):
    """{item key: (race, cluster, value averaged over the seeds that have the item)}, PSNR capped (the cap is
    reported by the experiment's CI table), accuracy in percent."""
    _, statistic = ITEM_METRICS[experiment.kind][metric]
    values, _, _ = _item_values(experiment, metric)
    values = _capped(values)[0] * (100.0 if statistic == "percent" else 1.0)
    collected = {}
    for item, value in zip((item for run in experiment.runs for item in run.items), values):
        entry = collected.setdefault(item["key"], [item["race"], item["cluster"], []])
        if entry[0] != item["race"]:
            raise ValueError(f"item {item['key']!r} is {entry[0]} in one seed and {item['race']} in another")
        entry[2].append(value)
    return {key: (race, cluster, math.fsum(vals) / len(vals)) for key, (race, cluster, vals) in collected.items()}


def find_reference(experiment, experiments, relation, problems):
    """The experiment's unique `relation` counterpart (see REFERENCES) in its family, or None (reported).

    Among several candidates the one agreeing on the most free columns wins; a tie is reported as ambiguous.
    """
    required, free = REFERENCES[relation]
    if free is None:
        must_match = [c for c in ("study", "scale") if c in experiment.columns]
        free = [c for c in experiment.columns if c not in must_match]
    else:
        must_match = [c for c in experiment.columns if c not in free]
    candidates = [
        other for other in experiments
        if other is not experiment and other.family == experiment.family
        and all(_canonical(other.columns.get(c, "")) == _canonical(v) for c, v in required.items())
        and all(_canonical(other.columns.get(c, "")) == _canonical(experiment.columns[c]) for c in must_match)
    ]
    if candidates:
        agreement = [sum(_canonical(o.columns.get(c, "")) == _canonical(experiment.columns.get(c, ""))
                         for c in free) for o in candidates]
        best = [o for o, a in zip(candidates, agreement) if a == max(agreement)]
        if len(best) == 1:
            return best[0]
        problems.add(experiment.runs[0].path, f"[{experiment.label()}]: ambiguous {relation} counterpart "
                                              f"({'; '.join(o.label() for o in best)}); comparison left out")
        return None
    wanted = ", ".join([f"{c}={v}" for c, v in required.items()] + [f"same {c}" for c in must_match])
    problems.add(experiment.runs[0].path, f"[{experiment.label()}]: no {relation} counterpart ({wanted}) among "
                                          f"the runs found; comparison left out")
    return None


def compare(experiment, reference, metric, n_boot, seed, ci, problems):
    """Paired test of experiment - reference per race (and over all races) on the items both evaluated.

    Items are paired by file (images) or (race, line) (pairs), each averaged over its seeds first; pairs
    are resampled by identity cluster. Accuracy differences are in percentage points. Returns
    {"overall": {...}, "groups": {race: {mean_diff, lo, hi, p_value, n}}} or None (reported).
    With reference = the balanced run this is the minority penalty as defined for RaceComp, under - balanced
    (fairness.minority_penalty returns the opposite sign, so it is not used here).
    """
    where = experiment.runs[0].path
    try:
        mine = _seed_averaged(experiment, metric)
        theirs = _seed_averaged(reference, metric)
    except ValueError as error:
        problems.add(where, f"[{experiment.label()}] vs [{reference.label()}]: {error}; comparison left out")
        return None
    shared = sorted(set(mine) & set(theirs), key=str)
    if len(shared) != len(mine) or len(shared) != len(theirs):
        problems.add(where, f"[{experiment.label()}] vs [{reference.label()}]: {len(mine) - len(shared)} and "
                            f"{len(theirs) - len(shared)} items evaluated by only one of the two; paired on the "
                            f"{len(shared)} shared ones")
    clashing = [key for key in shared if mine[key][0] != theirs[key][0]]
    if clashing or not shared:
        reason = f"{len(clashing)} items labelled with different races, e.g. {clashing[0]!r}" if clashing else \
            "no shared items"
        problems.add(where, f"[{experiment.label()}] vs [{reference.label()}]: {reason}; comparison left out")
        return None
    clusters = [mine[key][1] for key in shared] if experiment.kind == "verify" else None
    return fairness.paired_test([mine[key][2] for key in shared], [theirs[key][2] for key in shared],
                                groups=np.array([mine[key][0] for key in shared]),
                                clusters=None if clusters is None else np.array(clusters),
                                n_boot=n_boot, seed=seed, ci=ci)


def _relations(experiment):
    """Which references an experiment is compared with."""
    columns = experiment.columns
    if experiment.family == "upscale":
        return (["bicubic"] if columns.get("arch") != "bicubic" else []) + \
            (["balanced"] if columns.get("minority", "none") != "none" else [])
    if experiment.family == "verify":
        return ["balanced"] if columns.get("minority", "none") != "none" else []
    fp32 = all(_canonical(columns.get(c, "")) == _canonical(v) for c, v in REFERENCES["fp32"][0].items())
    return [] if fp32 else ["fp32"]


# ---------------------------------------------------------------------------------------------------------
# Markdown and plots


def _format(value, decimals):
    if value == "" or value is None:
        return ""
    if isinstance(value, (int, np.integer)):
        return str(value)
    return f"{value:.{decimals}f}"


def _interval_text(entry, decimals, value_key="value"):
    return (f"{_format(entry[value_key], decimals)} [{_format(entry['lo'], decimals)}, "
            f"{_format(entry['hi'], decimals)}]")


def _p_text(p):
    return f"{p:.4f}"


def _difference_text(entry, decimals):
    """'mean_diff [lo, hi] p=... (n=...)' of a paired_test entry."""
    return f"{_interval_text(entry, decimals, 'mean_diff')} p={_p_text(entry['p_value'])} (n={entry['n']})"


def _markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _varying_columns(experiments):
    """(columns whose values differ between the experiments, 'column=value' text of the constant ones)."""
    columns = [c for c in experiments[0].columns if c != "study"]
    for e in experiments[1:]:
        columns += [c for c in e.columns if c not in columns and c != "study"]
    varying = [c for c in columns if len({_canonical(e.columns.get(c, "")) for e in experiments}) > 1]
    constant = ", ".join(f"{c}={experiments[0].columns.get(c, '')}" for c in columns if c not in varying)
    return varying, constant


def _row_label_cells(experiment, varying):
    return [experiment.columns.get(c, "") for c in varying] if varying else [experiment.label()]


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only its fixed bitmap font
        return ImageFont.load_default()


def _nice_ticks(low, high, count=6):
    span = high - low
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    while first + len(ticks) * step <= high + 1e-12 * span:
        ticks.append(first + len(ticks) * step)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) + (1 if step / magnitude == 2.5 else 0)
    return ticks, decimals


def plot_intervals(path, title, y_label, categories, series, decimals, zero_line=False):
    """Write a PNG dot plot: x = categories (races), per category one dot per series (experiment) with its
    [lo, hi] whisker and its value printed above; one colour per series, legend below.

    series: [(label, {category: (value, lo, hi)})]. Non-finite values are not drawn; their count is printed
    under the plot so that no gap goes unexplained.
    """
    font, small = _font(14), _font(12)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_size(text, which):
        box = measure.textbbox((0, 0), text, font=which)
        return box[2] - box[0], box[3] - box[1]

    points = [(s, c, v) for s, (_, values) in enumerate(series) for c, v in values.items() if c in categories]
    finite = [(s, c, v) for s, c, v in points if all(np.isfinite(x) for x in v)]
    slot = 60
    category_width = max(120, slot * len(series) + 20)
    left, right, top, plot_height = 96, 24, 56, 360
    legend_width = max([text_size(label, small)[0] for label, _ in series] + [0]) + 60
    width = max(640, left + right + category_width * len(categories), left + legend_width,
                left + text_size(title, font)[0] + 20)
    height = top + plot_height + 50 + 20 * len(series) + 20
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 14), title, fill="black", font=font)
    bounds = [x for _, _, v in finite for x in v] + ([0.0] if zero_line else [])
    low, high = (min(bounds), max(bounds)) if bounds else (0.0, 1.0)
    pad = (high - low) * 0.12 if high > low else max(abs(high) * 0.05, 1e-3)
    low, high = low - pad, high + pad

    def y_of(value):
        return top + plot_height * (high - value) / (high - low)

    x_end = left + category_width * len(categories)
    ticks, tick_decimals = _nice_ticks(low, high)
    for tick in ticks:
        y = y_of(tick)
        draw.line([(left, y), (x_end, y)], fill=(232, 232, 232))
        label = f"{tick:.{tick_decimals}f}"
        draw.text((left - 8 - text_size(label, small)[0], y - 7), label, fill="black", font=small)
    if zero_line and low < 0 < high:
        draw.line([(left, y_of(0.0)), (x_end, y_of(0.0))], fill=(90, 90, 90), width=2)
    draw.rectangle([left, top, x_end, top + plot_height], outline="black")
    axis_text = Image.new("RGB", (text_size(y_label, font)[0] + 8, 22), "white")
    ImageDraw.Draw(axis_text).text((4, 2), y_label, fill="black", font=font)
    rotated = axis_text.rotate(90, expand=True)
    image.paste(rotated, (6, top + max(0, (plot_height - rotated.height) // 2)))
    for column, category in enumerate(categories):
        x0 = left + column * category_width
        label_width = text_size(category, font)[0]
        draw.text((x0 + (category_width - label_width) / 2, top + plot_height + 8), category, fill="black",
                  font=font)
        if column:
            draw.line([(x0, top), (x0, top + plot_height)], fill=(200, 200, 200))
    first_x = (category_width - slot * len(series)) / 2 + slot / 2
    for s, category, (value, lo, hi) in finite:
        x = left + categories.index(category) * category_width + first_x + s * slot
        colour = PALETTE[s % len(PALETTE)]
        draw.line([(x, y_of(lo)), (x, y_of(hi))], fill=colour, width=2)
        for end in (lo, hi):
            draw.line([(x - 5, y_of(end)), (x + 5, y_of(end))], fill=colour, width=2)
        draw.ellipse([x - 5, y_of(value) - 5, x + 5, y_of(value) + 5], fill=colour)
        text = f"{value:.{decimals}f}"
        draw.text((x - text_size(text, small)[0] / 2, y_of(hi) - 20), text, fill=colour, font=small)
    y = top + plot_height + 40
    for s, (label, _) in enumerate(series):
        colour = PALETTE[s % len(PALETTE)]
        draw.ellipse([left, y + 4, left + 10, y + 14], fill=colour)
        draw.text((left + 18, y), label, fill="black", font=small)
        y += 20
    if len(finite) < len(points):
        draw.text((left, y + 4), f"{len(points) - len(finite)} non-finite value(s) not drawn", fill=(200, 0, 0),
                  font=small)
    with files.atomic_open(path, "wb") as handle:
        image.save(handle, format="PNG")


# ---------------------------------------------------------------------------------------------------------
# The whole summary


class _Output:
    """Collects what summarize writes: CSVs, PNGs and markdown sections."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.written = []
        self.sections = []

    def csv(self, name, rows):
        if rows:
            fieldnames = []
            for row in rows:
                fieldnames += [key for key in row if key not in fieldnames]
            path = os.path.join(self.out_dir, name)
            files.write_csv(path, rows, fieldnames=fieldnames)
            self.written.append(path)

    def plot(self, name, *args, **kwargs):
        path = os.path.join(self.out_dir, name)
        plot_intervals(path, *args, **kwargs)
        self.written.append(path)

    def section(self, title, text):
        self.sections.append(f"## {title}\n\n{text}\n")


def _family_intro(constant, extra=""):
    common = f"Common to all rows: {constant}." if constant else ""
    return " ".join(part for part in (common, extra) if part)


def _table1(output, family, experiments):
    rows = [row for e in experiments for row in seed_spread_rows(e)]
    output.csv(f"table1_{family}.csv", rows)
    varying, constant = _varying_columns(experiments)
    metrics = RACE_METRICS[experiments[0].kind]
    header = (varying or ["experiment"]) + ["race", "n_seeds", "n_images"] + [
        f"{METRIC_NAMES[m]} {stat}" for m in metrics for stat in ("mean", "min", "max", "delta")]
    body = []
    for e in experiments:
        for row in seed_spread_rows(e):
            body.append(_row_label_cells(e, varying) + [row["race"], row["n_seeds"], row["n_images"]] + [
                _format(row[f"{m}_{stat}"], DECIMALS[m]) for m in metrics for stat in ("mean", "min", "max", "delta")])
    output.section(f"Table 1 ({family}): per-race quality over seeds",
                   _family_intro(constant, "Mean / min / max / delta (max - min) over seeds of each seed's per-race "
                                 "mean; n_images sums the race's images over seeds.") + "\n\n"
                   + _markdown_table(header, body))
    races = _races_of(experiments)
    for metric in ("ssim_y", "psnr_y"):
        series = [(e.label(varying or None), {r["race"]: (r[f"{metric}_mean"], r[f"{metric}_min"], r[f"{metric}_max"])
                                             for r in seed_spread_rows(e)}) for e in experiments]
        output.plot(f"table1_{family}_{metric}.png", f"Table 1 ({family}): {METRIC_NAMES[metric]}, mean over seeds "
                    f"(whiskers: min-max over seeds)", METRIC_NAMES[metric], races, series, DECIMALS[metric])


def _table2(output, family, experiments, problems):
    races = _races_of(experiments)
    metrics = ("accuracy",) if experiments[0].kind == "verify" else ("ssim_y", "psnr_y")
    varying, constant = _varying_columns(experiments)
    for metric in metrics:
        rows = [race_columns_row(e, metric, races, problems) for e in experiments]
        output.csv(f"table2_{family}_{metric}.csv", rows)
        names = ["Avg", "STD", "SER"] if metric == "accuracy" else ["Avg", "STD"]
        header = (varying or ["experiment"]) + ["n_seeds"] + races + names
        body = [_row_label_cells(e, varying) + [row["n_seeds"]]
                + [f"{_format(row[r], DECIMALS[metric])} (n={row[f'{r}_n']})" if row[r] != "" else "" for r in races]
                + [_format(row[name], DECIMALS[metric]) for name in names] for e, row in zip(experiments, rows)]
        output.section(f"Table 2 ({family}): {METRIC_NAMES[metric]} per race, mean over seeds",
                       _family_intro(constant, "Avg = mean over races, STD = sample std over races (ddof=1)"
                                     + (", SER = (100 - worst) / (100 - best)" if metric == "accuracy" else "")
                                     + ", all computed from the per-race means shown; n = items summed over "
                                       "seeds.") + "\n\n" + _markdown_table(header, body))
        if metric == "accuracy":
            series = []
            for e in experiments:
                spread = {}
                for race in races:
                    values = [run.per_race[race][metric] for run in e.runs if race in run.per_race]
                    if values:
                        spread[race] = (math.fsum(values) / len(values), min(values), max(values))
                series.append((e.label(varying or None), spread))
            output.plot(f"table2_{family}_{metric}.png", f"Table 2 ({family}): {METRIC_NAMES[metric]}, mean over "
                        f"seeds (whiskers: min-max over seeds)", METRIC_NAMES[metric], races, series, DECIMALS[metric])


def _table3(output, family, experiments, comparisons, n_boot, seed, ci, problems):
    usable = [e for e in experiments if _usable_for_items(e, problems, "CI tables")]
    if not usable:
        return
    varying, constant = _varying_columns(experiments)
    races = _races_of(experiments)
    level = f"{100 * ci:g}%"
    ci_rows, paired_rows = [], []
    for metric in ITEM_METRICS[experiments[0].kind]:
        decimals = DECIMALS[metric]
        results = {id(e): fairness_interval_rows(e, metric, n_boot, seed, ci, problems) for e in usable}
        summary_names = ["mean", "gap", "std", "ser"] if metric == "accuracy" else ["mean", "gap", "std"]
        body, series = [], []
        for e in usable:
            by_quantity = {row["quantity"]: row for row in results[id(e)]}
            ci_rows += results[id(e)]
            if not by_quantity:
                continue
            body.append(_row_label_cells(e, varying) + [e.pooled_columns()["n_seeds"]]
                        + [f"{_interval_text(by_quantity[r], decimals)} (n={by_quantity[r]['n']})"
                           if r in by_quantity else "" for r in races]
                        + [_interval_text(by_quantity[k], decimals) for k in summary_names]
                        + [_p_text(by_quantity["gap_p_value"]["value"])])
            series.append((e.label(varying or None), {r: (by_quantity[r]["value"], by_quantity[r]["lo"],
                                                          by_quantity[r]["hi"]) for r in races if r in by_quantity}))
        header = (varying or ["experiment"]) + ["n_seeds"] + races + [s.upper() if s != "mean" else "Avg"
                                                                      for s in summary_names] + ["gap p"]
        output.section(f"Table 3 ({family}): {METRIC_NAMES[metric]} per race with {level} bootstrap CIs",
                       _family_intro(constant, f"Items of all seeds pooled; value [lo, hi] (n = items); {n_boot} "
                                     f"bootstrap replicates, seed {seed}. The gap's CI sizes it; 'gap p' "
                                     f"(permutation test) tests it.") + "\n\n" + _markdown_table(header, body))
        if series:
            output.plot(f"table3_{family}_{metric}.png", f"Table 3 ({family}): {METRIC_NAMES[metric]} per race, "
                        f"{level} bootstrap CI", METRIC_NAMES[metric], races, series, decimals)
        body, series = [], []
        for e in usable:
            for relation, reference in comparisons.get(id(e), {}).items():
                result = reference["results"].get(metric)
                if result is None:
                    continue
                base = {**e.columns, **e.pooled_columns(), "relation": relation,
                        "reference": reference["experiment"].label(), "metric": metric}
                for race in races + ["all"]:
                    entry = result["overall"] if race == "all" else result["groups"].get(race)
                    if entry is not None:
                        paired_rows.append({**base, "race": race, **entry})
                cells = [_difference_text(result["groups"][r], decimals) if r in result["groups"] else ""
                         for r in races]
                body.append(_row_label_cells(e, varying) + [relation] + cells)
                series.append((f"{e.label(varying or None)} - {relation}",
                               {r: (g["mean_diff"], g["lo"], g["hi"]) for r, g in result["groups"].items()}))
        if body:
            output.section(f"Table 3 ({family}): {METRIC_NAMES[metric]}, experiment - reference, paired per item",
                           "References: bicubic = the bicubic run of the same scale; balanced = the same settings "
                           "with minority none; fp32 = the same task/model at wbits=abits=32, calib=none. Items "
                           "paired by file (images) or (race, line) (pairs), averaged over seeds first; mean "
                           f"difference [{level} CI], sign-flip p-value, n = paired items.\n\n"
                           + _markdown_table((varying or ["experiment"]) + ["reference"] + races, body))
            output.plot(f"table3_paired_{family}_{metric}.png", f"Table 3 ({family}): {METRIC_NAMES[metric]}, "
                        f"experiment - reference, {level} CI", f"difference, {METRIC_NAMES[metric]}", races, series,
                        decimals, zero_line=True)
    output.csv(f"table3_ci_{family}.csv", ci_rows)
    output.csv(f"table3_paired_{family}.csv", paired_rows)


def _table4(output, family, experiments, comparisons, ci):
    """Minority penalty (under - balanced) of every under-sampled run, and gain over bicubic (upscale)."""
    varying, constant = _varying_columns(experiments)
    races = _races_of(experiments)
    level = f"{100 * ci:g}%"
    for relation, title, column in (("balanced", "minority penalty, under-sampled - balanced", "under_minus_balanced"),
                                    ("bicubic", "gain over bicubic, model - bicubic", "model_minus_bicubic")):
        rows = []
        for metric in ITEM_METRICS[experiments[0].kind]:
            decimals = DECIMALS[metric]
            body, series = [], []
            for e in experiments:
                comparison = comparisons.get(id(e), {}).get(relation)
                if comparison is None or comparison["results"].get(metric) is None:
                    continue
                groups = comparison["results"][metric]["groups"]
                minority = e.columns.get("minority", "none")
                # The under-sampled race's row first: it is the headline of a minority penalty.
                order = ([minority] if relation == "balanced" and minority in groups else []) + \
                    [r for r in races if r in groups and (relation != "balanced" or r != minority)]
                for race in order:
                    entry = groups[race]
                    headline = relation == "balanced" and race == minority
                    rows.append({**e.columns, **e.pooled_columns(), "reference": comparison["experiment"].label(),
                                 "metric": metric, "race": race, "headline": int(headline),
                                 column: entry["mean_diff"], "lo": entry["lo"], "hi": entry["hi"],
                                 "p_value": entry["p_value"], "n": entry["n"]})
                    body.append(_row_label_cells(e, varying) + [f"**{race} (under-sampled)**" if headline else race,
                                                                _interval_text(entry, decimals, "mean_diff"),
                                                                _p_text(entry["p_value"]), entry["n"]])
                series.append((e.label(varying or None),
                               {r: (g["mean_diff"], g["lo"], g["hi"]) for r, g in groups.items()}))
            if not body:
                continue
            header = (varying or ["experiment"]) + ["race", f"{column.replace('_', ' ')} [{level} CI]", "p", "n"]
            output.section(f"Table 4 ({family}): {title}, {METRIC_NAMES[metric]}",
                           _family_intro(constant, "Paired per item (averaged over seeds); negative = the first "
                                         "model is worse on that race; n = paired items.") + "\n\n"
                           + _markdown_table(header, body))
            name = "penalty" if relation == "balanced" else "gain_over_bicubic"
            output.plot(f"table4_{name}_{family}_{metric}.png", f"Table 4 ({family}): {title}, {METRIC_NAMES[metric]}, "
                        f"{level} CI", f"difference, {METRIC_NAMES[metric]}", races, series, decimals, zero_line=True)
        name = "minority_penalty" if relation == "balanced" else "gain_over_bicubic"
        output.csv(f"table4_{name}_{family}.csv", rows)


def _comparisons(experiments, n_boot, seed, ci, problems):
    """{id(experiment): {relation: {"experiment": reference, "results": {metric: paired_test result}}}}."""
    comparisons = {}
    for experiment in experiments:
        for relation in _relations(experiment):
            reference = find_reference(experiment, experiments, relation, problems)
            if reference is None:
                continue
            if not (_usable_for_items(experiment, problems, f"{relation} comparison")
                    and _usable_for_items(reference, problems, f"{relation} comparison of [{experiment.label()}]")):
                continue
            results = {metric: compare(experiment, reference, metric, n_boot, seed, ci, problems)
                       for metric in ITEM_METRICS[experiment.kind]}
            comparisons.setdefault(id(experiment), {})[relation] = {"experiment": reference, "results": results}
    return comparisons


def summarize(patterns, out_dir, n_boot=1000, seed=0, ci=0.95):
    """Find the runs under `patterns`, write every table (CSV + tables.md) and plot (PNG) into `out_dir`.

    Returns {"written": [paths], "problems": [(path, message)], "experiments": count}; nothing is written
    when no usable run is found (written is then empty).
    """
    problems = Problems()
    runs = [run for run in (load_run(folder, problems) for folder in find_run_folders(patterns, problems)) if run]
    experiments = group_experiments(runs, problems)
    output = _Output(out_dir)
    if not experiments:
        return {"written": [], "problems": problems.entries, "experiments": 0}
    for family in FAMILIES:
        members = [e for e in experiments if e.family == family]
        if not members:
            continue
        comparisons = _comparisons(members, n_boot, seed, ci, problems)
        if members[0].kind == "upscale":
            _table1(output, family, members)
        _table2(output, family, members, problems)
        _table3(output, family, members, comparisons, n_boot, seed, ci, problems)
        if family in ("upscale", "verify"):
            _table4(output, family, members, comparisons, ci)
    listed = "\n".join(f"- `{path}`: {message}" for path, message in problems.entries) or "None."
    text = ("# RaceComp per-race tables\n\n"
            f"{len(runs)} runs, {len(experiments)} experiments (seeds pooled). Bootstrap: {n_boot} replicates, "
            f"seed {seed}, {100 * ci:g}% percentile intervals.\n\n" + "\n".join(output.sections)
            + f"\n## Problems\n\n{listed}\n")
    path = os.path.join(out_dir, "tables.md")
    with files.atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    output.written.append(path)
    return {"written": output.written, "problems": problems.entries, "experiments": len(experiments)}
