"""Finding, reading and checking finished run folders, and grouping them into experiments (seeds pooled).

The files read are those of racecomp.schema's contract; every file or run left out is reported to a
Problems with its path and the reason.
"""
import csv
import glob
import json
import math
import os
import sys
from dataclasses import dataclass, field, replace

import numpy as np

from racecomp.races import FAIRFACE_RACES, check_label
from racecomp.schema import (ADDED_LATER, BIAS_PROBE_COLUMNS, BIAS_PROBE_FILE, COLLAPSE_CHECKS, COUNT_COLUMN,
                             DATA_KEY, FAMILIES, FINISHED_MARKER, ITEM_COLUMNS, ITEM_FILES, METRIC_RANGES,
                             NON_RESULT_ARGS, OPTIONAL_RACE_METRICS, POOLED_COLUMNS, PROBE_GENDER_COLUMNS,
                             PROBE_GENDER_FILE, RACE_METRICS, RACES, RECIPE_COLUMN, RECORD_FILE, STUDIES, WARNINGS_KEY,
                             read_record)

INFINITE_ALLOWED = ("psnr_y", "psnr_rgb")  # an exact reproduction has infinite PSNR
# Per-item columns the tables need: the schema's, plus a pair's second identity. Without it, pairs that share
# only their second identity would count as independent and the intervals would be too narrow
# (racecomp.fairness clusters pairs by both identities).
REQUIRED_ITEM_COLUMNS = {kind: tuple(dict.fromkeys(columns + (("id2",) if kind == "verify" else ())))
                         for kind, columns in ITEM_COLUMNS.items()}


class Problems:
    """Everything left out or suspicious, by file: printed when found and listed in tables.md."""

    def __init__(self, echo=True):
        self.entries = []  # (path, message)
        self.echo = echo

    @classmethod
    def quiet(cls):
        """A Problems that only collects: for a search whose misses are expected (e.g. a reference that may
        not exist), reported by the caller in its own words."""
        return cls(echo=False)

    def add(self, path, message):
        if (path, message) in self.entries:  # the same check may run for several tables
            return
        self.entries.append((path, message))
        if self.echo:
            print(f"[problem] {path}: {message}", flush=True)


@dataclass(frozen=True, eq=False)
class Run:
    """One finished run: identifying columns as written, per-race means, per-item rows (None if unusable) and
    its args.json (None if it has none). Read once (load_run), never changed; compared and hashed as itself."""
    folder: str
    family: str
    kind: str  # "upscale" or "verify": which per-item file and metrics
    identity: dict  # identifying column -> value as written, in file order
    per_race: dict  # race -> {"n": items, metric: mean}; optional metrics only when the run has them
    items: list  # [{"key", "race", "cluster" (file or id1), "cluster2" (id2, pairs only), <per-item column>}] or None
    record: dict = None  # args.json: {"args": every resolved argument, ...}
    # The optional probes of a verification run (schema.PROBE_GENDER_FILE, BIAS_PROBE_FILE), None without them:
    gender_probe: list = None  # [{"race", "n", "f1_in", "f1_out", "worst", "gap", "accuracy"}], FairFace races
    bias_probe: list = None  # [{"set_a", "set_b", "n_a", "n_b", "assoc_pretrained", "assoc_finetuned"}]
    bias_transfer_score: float = None  # of bias_probe's rows, from args.json; None when unknown (reported)

    @property
    def path(self):
        return os.path.join(self.folder, FINISHED_MARKER)

    @property
    def args(self):
        return (self.record or {}).get("args")

    @property
    def warnings(self):
        """The sanity checks (racecomp.sanity) the run failed, from args.json."""
        return [found["check"] for found in (self.record or {}).get(WARNINGS_KEY, [])]

    @property
    def data_ids(self):
        """{argument name: fingerprint id} of the data folders the run read (args.json), None when unrecorded."""
        found = (self.record or {}).get(DATA_KEY)
        return {name: fingerprint["id"] for name, fingerprint in found.items()} if found else None


@dataclass(frozen=True, eq=False)
class Experiment:
    """Runs that differ only in seed (and code version), built once (group_experiments). Results are keyed by
    the experiment itself: it is compared and hashed as itself, since two experiments may share every
    identifying value and differ in their data (data fingerprints keep them apart)."""
    family: str
    kind: str
    identifying: tuple  # ((column, value as written), ...) but POOLED_COLUMNS, in file order; a dict is taken too
    runs: tuple  # sorted by seed; a list is taken too
    # Per metric, the item matrix (tables.comparisons): an experiment is tabulated and compared with several
    # references, and a sweep's matrices take seconds to build. Filled on first use, then only read.
    matrices: dict = field(default_factory=dict, init=False, repr=False)  # a replace() starts an empty one

    def __post_init__(self):
        object.__setattr__(self, "identifying", tuple(dict(self.identifying).items()))
        object.__setattr__(self, "runs", tuple(self.runs))

    @property
    def columns(self):
        """{identifying column: value as written}, in file order."""
        return dict(self.identifying)

    @property
    def seeds(self):
        return tuple(run.identity["seed"] for run in self.runs)

    def label(self, shown=None):
        shown = [c for c in self.columns if c != "study"] if shown is None else shown
        return ", ".join(f"{c}={self.columns.get(c, '')}" for c in shown) or "(single experiment)"

    @property
    def warnings(self):
        """The sanity checks any of its runs failed (sorted): a row with them is a broken model, not a result."""
        return sorted({check for run in self.runs for check in run.warnings})

    def pooled_columns(self):
        """n_seeds, seeds, code versions and failed sanity checks behind a row, so that it can be traced back."""
        return {"n_seeds": len(self.runs), "seeds": ";".join(r.identity["seed"] for r in self.runs),
                "code_version": ";".join(sorted({r.identity["code_version"] for r in self.runs})),
                "warnings": ";".join(self.warnings)}

    def race_metrics(self):
        """The per-race metrics every seed has: the study's, then the optional ones all seeds wrote."""
        optional = [m for m in OPTIONAL_RACE_METRICS.get(self.kind, ())
                    if all(m in values for run in self.runs for values in run.per_race.values())]
        return list(RACE_METRICS[self.kind]) + optional

    def setting(self, name):
        """(known, value) of an argument from the runs' args.json: known only when every run has one and
        they agree (an argument a run's args.json lacks reads as its schema.ADDED_LATER value, else None)."""
        values = {json.dumps(run.args.get(name, ADDED_LATER.get(name)), sort_keys=True) for run in self.runs
                  if run.args is not None}
        if len(values) != 1 or any(run.args is None for run in self.runs):
            return False, None
        return True, json.loads(values.pop())


def canonical(value):
    """Comparable form of an identifying value: numbers by value ('1' equals '1.0'), text stripped."""
    try:
        number = float(value)
    except ValueError:
        return value.strip()
    return number if math.isfinite(number) else value.strip()


def sort_key(value):
    """Sort key of an identifying value: numbers by value before text."""
    comparable = canonical(value)
    return (0, comparable, "") if isinstance(comparable, float) else (1, 0.0, comparable)


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
                if os.path.basename(match) == FINISHED_MARKER:
                    found.setdefault(os.path.realpath(os.path.dirname(match)), os.path.dirname(match) or ".")
                elif not glob.has_magic(pattern):
                    problems.add(match, f"not a run folder or {FINISHED_MARKER}")
                continue
            visited = set()
            for folder, subfolders, names in os.walk(match, followlinks=True):
                # A run folder that is a symlink is read as it is through a glob; a link back up is walked once.
                visited.add(os.path.realpath(folder))
                subfolders[:] = sorted(name for name in subfolders
                                       if os.path.realpath(os.path.join(folder, name)) not in visited)
                if FINISHED_MARKER in names:
                    found.setdefault(os.path.realpath(folder), folder)
                elif "args.json" in names:
                    unfinished.append(folder)
        if len(found) == before:
            problems.add(pattern, f"no {FINISHED_MARKER} found (nothing there, or only runs already found)")
    for folder in dict.fromkeys(unfinished):
        # A quantization run's top folder may hold args.json while its runs are subfolders.
        inside = os.path.realpath(folder) + os.sep
        if not any(real.startswith(inside) for real in found):
            problems.add(folder, f"unfinished run (args.json but no {FINISHED_MARKER}): left out")
    return sorted(found.values())


def _read_csv(path, required, problems):
    """(header, [(line, fields)]) of a CSV, or None after reporting why it cannot be used."""
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
                # Tuples of text leave the cyclic garbage collector's watch; a sweep's millions of rows as lists
                # would trigger full collections over every live object (loading 2x slower).
                rows.append((reader.line_num, tuple(fields)))
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
    """The number in `column`, finite (or +inf where allowed) and inside its metric's range (METRIC_RANGES)."""
    text = row[column]
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"line {line}: column {column!r}: {text!r} is not a number") from None
    if math.isnan(value) or value == -math.inf or (value == math.inf and not allow_infinite):
        raise ValueError(f"line {line}: column {column!r}: {text!r} is not a finite number")
    low, high = METRIC_RANGES.get(column, (-math.inf, math.inf))
    if not low <= value <= high and value != math.inf:
        raise ValueError(f"line {line}: column {column!r}: {text!r} is outside its range [{low:g}, {high:g}]")
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


def _optional_metrics(header, kind):
    return tuple(m for m in OPTIONAL_RACE_METRICS.get(kind, ()) if m in header)


def _per_race_values(header, rows, kind):
    """{race: {"n", metric...}} of per_race.csv rows, races checked against the study's vocabulary; the
    optional metrics the file has are read too."""
    per_race = {}
    for line, row in rows:
        race = check_label(row["race"], RACES[kind], f"line {line}")
        if race in per_race:
            raise ValueError(f"line {line}: race {race!r} appears twice")
        values = {"n": _count(row, COUNT_COLUMN[kind], line)}
        for metric in RACE_METRICS[kind] + _optional_metrics(header, kind):
            values[metric] = _number(row, metric, line, allow_infinite=metric in INFINITE_ALLOWED)
        per_race[race] = values
    return per_race


def _image_items(header, rows):
    """The per-image dicts of _item_rows, read column by column (a sweep holds millions of rows), or None when
    any row is off: _item_rows then reads row by row and names the first bad line."""
    vocabulary = {label: label for label in RACES["upscale"]}
    columns = dict(zip(header, zip(*(fields for _, fields in rows))))
    races = list(map(vocabulary.get, columns["race"]))
    keys = list(map(sys.intern, columns["file"]))
    metrics = ("psnr_y", "ssim_y") + _optional_metrics(header, "upscale")
    try:
        values = [list(map(float, columns[metric])) for metric in metrics]
    except ValueError:
        return None
    for metric, numbers in zip(metrics, values):  # the checks of _number; only psnr_y may be +inf, as there
        array = np.array(numbers)
        low, high = METRIC_RANGES[metric]
        finite = array[np.isfinite(array)]
        if (np.any(np.isnan(array) | (array == -math.inf) | ((array == math.inf) & (metric != "psnr_y")))
                or np.any((finite < low) | (finite > high))):
            return None
    if None in races or "" in keys or len(set(keys)) != len(keys):
        return None
    names = ("key", "race", "cluster") + metrics
    return [dict(zip(names, item)) for item in zip(keys, races, keys, *values)]


def _item_rows(header, rows, kind):
    """Per-item dicts {key, race, cluster, value columns} of per_image.csv / per_pair.csv rows; a pair also
    has cluster2 (its second identity, the same as the first for a genuine pair). An image has the optional
    metrics the file has."""
    if kind == "upscale":
        items = _image_items(header, rows)
        if items is not None:
            return items
    # A sweep holds millions of items: each race label is the vocabulary's one string, and each file name (or
    # identity) one string shared by every run that evaluated it.
    vocabulary = {label: label for label in RACES[kind]}
    optional = _optional_metrics(header, kind)
    items, seen = [], set()
    for line, fields in rows:
        row = dict(zip(header, fields))
        race = vocabulary.get(row["race"])
        if race is None:
            check_label(row["race"], RACES[kind], f"line {line}")  # raises, naming the line
        if kind == "upscale":
            key = sys.intern(row["file"])
            item = {"key": key, "race": race, "cluster": key,
                    "psnr_y": _number(row, "psnr_y", line, allow_infinite=True), "ssim_y": _number(row, "ssim_y", line)}
            for metric in optional:
                item[metric] = _number(row, metric, line)
        else:
            key = (race, _count(row, "line", line))
            correct = _number(row, "correct", line)
            if correct not in (0.0, 1.0):
                raise ValueError(f"line {line}: column 'correct' must be 0 or 1, got {row['correct']!r}")
            if not row["id1"].strip() or not row["id2"].strip():
                raise ValueError(f"line {line}: empty identity (id1 {row['id1']!r}, id2 {row['id2']!r})")
            item = {"key": key, "race": race, "cluster": sys.intern(row["id1"]), "cluster2": sys.intern(row["id2"]),
                    "correct": correct, "fold": row["fold"]}
        if not key or key in seen:
            raise ValueError(f"line {line}: item {key!r} is empty or appears twice")
        seen.add(key)
        items.append(item)
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
            checks = {metric: math.fsum(m[metric] for m in members) / len(members)
                      for metric in ("psnr_y", "ssim_y") + OPTIONAL_RACE_METRICS[kind]
                      if metric in members[0] and metric in per_race[race]}
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


def _read_record(folder, problems):
    """The folder's args.json (schema.read_record), or None (missing: nothing reported here; unusable: reported)."""
    try:
        return read_record(folder)
    except ValueError as error:
        problems.add(os.path.join(folder, RECORD_FILE), f"{error}; the run's settings are not in the recipe legend")
        return None


def _record_error(record):
    """What is malformed in the fields of an args.json the tables use (None when nothing): a run whose warnings,
    data fingerprints or identity metric cannot be read cannot be marked or kept apart rightly."""
    warnings = record.get(WARNINGS_KEY, [])
    if not isinstance(warnings, list) or not all(isinstance(w, dict) and isinstance(w.get("check"), str)
                                                 and isinstance(w.get("message"), str) for w in warnings):
        return f"`{WARNINGS_KEY}` is not a list of {{check, message, value}}"
    data = record.get(DATA_KEY, {})
    if not isinstance(data, dict) or not all(isinstance(found, dict) and isinstance(found.get("id"), str)
                                             for found in data.values()):
        return f"`{DATA_KEY}` is not a dict of fingerprints with an `id`"
    metric = record.get("identity_metric", {})
    if not isinstance(metric, dict) or not isinstance(metric.get("model", ""), str):
        return "`identity_metric` is not a dict naming its `model`"
    if not isinstance(record.get("restore", {}), dict):
        return "`restore` is not a dict"
    return None


def _recognizer_collapsed(run, problems):
    """True (reported) when the run's id_cos was measured with a verification run whose embeddings collapsed
    (its args.json warnings): every face then scores about 1, whatever the upscaler did."""
    recognizer = ((run.record or {}).get("identity_metric") or {}).get("model")
    if not recognizer or not os.path.isdir(recognizer):
        return False
    record = _read_record(recognizer, problems) or {}
    error = _record_error(record)
    if error:
        problems.add(run.path, f"id_cos left out: the args.json of its recognizer {recognizer} is malformed ({error})")
        return True
    collapsed = [found for found in record.get(WARNINGS_KEY, []) if found["check"] in COLLAPSE_CHECKS]
    if collapsed:
        problems.add(run.path, f"id_cos left out: measured with {recognizer}, whose {collapsed[0]['message']}")
    return bool(collapsed)


def load_run(folder, problems):
    """The Run of a folder, or None after reporting why per_race.csv cannot be used.

    A missing or inconsistent per-item file is reported too; the run then keeps items=None and appears
    only in the tables built from per-race means.
    """
    path = os.path.join(folder, FINISHED_MARKER)
    table = _read_csv(path, ("study", "seed", "code_version", "race"), problems)
    if table is None:
        return None
    header, rows = table
    rows = [(line, dict(zip(header, fields))) for line, fields in rows]
    try:
        identity = _run_identity(header, rows)
        family, kind = _run_family(identity)
        missing = [c for c in (COUNT_COLUMN[kind],) + RACE_METRICS[kind] if c not in header]
        if missing:
            raise ValueError(f"missing column(s) {missing} of a {kind} per_race.csv")
        per_race = _per_race_values(header, rows, kind)
    except ValueError as error:
        problems.add(path, f"{error}; run left out")
        return None
    for race, values in per_race.items():
        for metric in INFINITE_ALLOWED:
            if values.get(metric) == math.inf:
                problems.add(path, f"{race}: mean {metric} is infinite (an image reproduced exactly); kept as inf")
    run = Run(folder, family, kind, identity, per_race, None, _read_record(folder, problems))
    error = run.record is not None and _record_error(run.record)
    if error:
        problems.add(os.path.join(folder, RECORD_FILE), f"{error}; run left out")
        return None
    for found in (run.record or {}).get(WARNINGS_KEY, []):
        problems.add(path, f"sanity check failed, its rows are marked: {found['message']}")
    collapsed = _recognizer_collapsed(run, problems)
    for values in per_race.values() if collapsed else ():
        values.pop("id_cos", None)
    run = replace(run, **_read_probes(run, problems))
    item_path = os.path.join(folder, ITEM_FILES[kind])
    if not os.path.isfile(item_path):
        problems.add(item_path, "missing: the run appears only in the per-race tables (no CIs, no paired tests)")
        return run
    table = _read_csv(item_path, REQUIRED_ITEM_COLUMNS[kind], problems)
    if table is None:
        problems.add(item_path, "unusable: the run appears only in the per-race tables")
        return run
    try:
        items = _item_rows(*table, kind)
        _check_items(items, per_race, kind)
    except ValueError as error:
        problems.add(item_path, f"{error}; the run appears only in the per-race tables")
        return run
    return replace(run, items=[{k: v for k, v in item.items() if k != "id_cos"} for item in items] if collapsed
                   else items)


def load_runs(folders, problems):
    """load_run of each folder; one that cannot be read for any reason is a problem line, never the end of the
    tables of every other run."""
    runs = []
    for folder in folders:
        try:
            run = load_run(folder, problems)
        except Exception as error:  # noqa: BLE001 -- whatever a bad folder holds, the other runs are tabulated
            problems.add(folder, f"unreadable run folder ({type(error).__name__}: {error}); run left out")
            continue
        if run is not None:
            runs.append(run)
    unchecked = [run.folder for run in runs if run.record is not None and DATA_KEY not in run.record]
    if unchecked:  # one line: a whole sweep of older runs is one fact, not hundreds of problems
        problems.add(os.path.commonpath(unchecked) if len(unchecked) > 1 else unchecked[0],
                     f"{len(unchecked)} run(s) made before runs recorded their data's fingerprint (args.json has no "
                     f"{DATA_KEY}): pooled by recipe, which knows their data by its path only")
    return runs


def _fraction(row, column, line, low=0.0):
    """_number, checked to lie in [low, 1] (up to float rounding)."""
    value = _number(row, column, line)
    if not low - 1e-9 <= value <= 1.0 + 1e-9:
        raise ValueError(f"line {line}: column {column!r}: {value!r} is outside [{low:g}, 1]")
    return value


def _gender_probe_rows(rows):
    probe, seen = [], set()
    for line, row in rows:
        race = check_label(row["race"], FAIRFACE_RACES, f"line {line}")
        if race in seen:
            raise ValueError(f"line {line}: race {race!r} appears twice")
        seen.add(race)
        probe.append({"race": race, "n": _count(row, "n", line),
                      **{c: _fraction(row, c, line) for c in ("f1_in", "f1_out", "worst", "gap", "accuracy")}})
    return probe


def _bias_probe_rows(rows):
    probe = []
    for line, row in rows:
        if not row["set_a"].strip() or not row["set_b"].strip():
            raise ValueError(f"line {line}: empty probe set name")
        probe.append({"set_a": row["set_a"], "set_b": row["set_b"], "n_a": _count(row, "n_a", line),
                      "n_b": _count(row, "n_b", line), **{c: _fraction(row, c, line, low=-1.0)
                                                           for c in ("assoc_pretrained", "assoc_finetuned")}})
    if len(probe) < 3:
        raise ValueError(f"{len(probe)} comparison(s): a Bias Transfer Score needs at least 3")
    return probe


def _probe_file(run, name, columns, read_rows, problems):
    """read_rows' result for the run's optional probe file `name`, or None: absent (nothing to say) or
    unusable (reported with the reason)."""
    path = os.path.join(run.folder, name)
    if not os.path.isfile(path):
        return None
    table = _read_csv(path, tuple(run.identity) + columns, problems)
    if table is None:
        problems.add(path, "unusable: the probe is left out of the tables")
        return None
    header, rows = table
    rows = [(line, dict(zip(header, fields))) for line, fields in rows]
    try:
        for line, row in rows:
            differing = [c for c in run.identity if row[c] != run.identity[c]]
            if differing:
                raise ValueError(f"line {line}: identifying column(s) {differing} differ from {FINISHED_MARKER}'s "
                                 f"(a file from another run?)")
        return read_rows(rows)
    except ValueError as error:
        problems.add(path, f"{error}; the probe is left out of the tables")
        return None


def _read_probes(run, problems):
    """The run's optional probe results (run_verify --probe gender, --bias-probe) as Run fields; a run without
    them is fine, a malformed file is reported and left out. The Bias Transfer Score is the one the run computed
    from its bias_probe.csv rows (args.json), so that the tables need no statistics of racecomp.probes."""
    probes = {"gender_probe": _probe_file(run, PROBE_GENDER_FILE, PROBE_GENDER_COLUMNS, _gender_probe_rows, problems),
              "bias_probe": _probe_file(run, BIAS_PROBE_FILE, BIAS_PROBE_COLUMNS, _bias_probe_rows, problems)}
    if probes["bias_probe"] is None:
        return probes
    score = (run.record or {}).get("bias_transfer_score")
    path = os.path.join(run.folder, BIAS_PROBE_FILE)
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        problems.add(path, "no numeric bias_transfer_score in the run's args.json: its Bias Transfer Score is left "
                           "out of the tables")
    elif math.isnan(score):
        problems.add(path, "Bias Transfer Score NaN in args.json (one side's association scores all equal): left "
                           "out of the tables")
    elif not -1.0 - 1e-9 <= score <= 1.0 + 1e-9:
        problems.add(path, f"Bias Transfer Score {score!r} in args.json is outside [-1, 1]: left out of the tables")
    else:
        probes["bias_transfer_score"] = float(score)
    return probes


def group_experiments(runs, problems):
    """Experiments (seeds pooled), sorted by family then settings.

    Two runs of the same experiment and seed clash: which one is right cannot be told, so all of them are
    left out (reported); the experiment's other seeds remain.
    """
    grouped = {}
    for run in runs:
        settings = tuple(sorted((c, canonical(v)) for c, v in run.identity.items() if c not in POOLED_COLUMNS))
        # The recipe hashes the data fingerprints; the fingerprints themselves are compared too, so that no
        # two runs on different data are pooled whatever their recipe says.
        data = json.dumps(run.data_ids, sort_keys=True)
        grouped.setdefault((run.family, settings, data), []).append(run)
    _report_other_data(grouped, problems)
    experiments = []
    for (family, _, _), members in grouped.items():
        by_seed = {}
        for run in members:
            by_seed.setdefault(canonical(run.identity["seed"]), []).append(run)
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
            kept.sort(key=lambda r: sort_key(r.identity["seed"]))
            columns = {c: v for c, v in kept[0].identity.items() if c not in POOLED_COLUMNS}
            experiments.append(Experiment(family, kept[0].kind, columns, kept))
    experiments.sort(key=lambda e: (FAMILIES.index(e.family), [(c, sort_key(v)) for c, v in e.columns.items()]))
    return experiments


def _report_other_data(grouped, problems):
    """A problem line for each group of runs kept apart from another only by its data: the same identifying
    columns but for the recipe, and other data fingerprints."""
    by_columns = {}
    for (family, settings, data), members in grouped.items():
        columns = tuple(item for item in settings if item[0] != RECIPE_COLUMN)
        by_columns.setdefault((family, columns), []).append((data, members))
    for groups in by_columns.values():
        known = [(data, members) for data, members in groups if data != "null"]
        if len({data for data, _ in known}) < 2:
            continue
        for data, members in known:
            others = ", ".join(other[0].path for other_data, other in known if other_data != data)
            problems.add(members[0].path, f"not pooled with {others}: the same settings on other data (data "
                                          f"fingerprints {data} in args.json)")


def races_of(experiments):
    """Races present in any run, in the vocabulary's order."""
    present = {race for e in experiments for run in e.runs for race in run.per_race}
    return [race for race in RACES[experiments[0].kind] if race in present]


def differing_settings(runs_by_key, skip=()):
    """{key: {argument: value}} of the arguments (args.json) that differ between groups of runs (e.g. the runs
    of each recipe), and the keys none of whose runs has an args.json.

    Left out: `skip` (e.g. the identifying columns, shown anyway), the seed, schema.NON_RESULT_ARGS and every
    argument that differs between the runs of one group: a group's runs share their recipe, so such an
    argument cannot be what sets the groups apart. An argument a run's args.json lacks reads as None.
    """
    texts = {}  # key -> argument -> {json text of each run's value}
    for key, runs in runs_by_key.items():
        recorded = [run.args for run in runs if run.args is not None]
        if recorded:
            names = {name for args in recorded for name in args}
            texts[key] = {name: {json.dumps(args.get(name), sort_keys=True, default=str) for args in recorded}
                          for name in names}
    names = {name for by_name in texts.values() for name in by_name} - set(skip) - set(NON_RESULT_ARGS) - {"seed"}
    null = {json.dumps(None)}
    constant = [name for name in sorted(names) if all(len(by_name.get(name, null)) == 1 for by_name in texts.values())]
    differing = [name for name in constant if len({min(by_name.get(name, null)) for by_name in texts.values()}) > 1]
    settings = {key: {name: json.loads(min(by_name.get(name, null))) for name in differing}
                for key, by_name in texts.items()}
    return settings, [key for key in runs_by_key if key not in texts]
