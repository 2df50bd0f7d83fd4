"""The CSV files of a finished run folder (racecomp.schema's contract), parsed and checked: per_race.csv, the per-item
file (per_image.csv / per_pair.csv) and the optional probe files. Each reader returns plain values or raises
ValueError naming the line and the problem; racecomp.tables.runs reports it and decides what is left out.
"""
import csv
import math
import os
import sys

import numpy as np

from racecomp.races import FAIRFACE_RACES, check_label
from racecomp.schema import (COUNT_COLUMN, FINISHED_MARKER, ITEM_COLUMNS, ITEM_FILES, METRIC_RANGES,
                             OPTIONAL_RACE_METRICS, POOLED_COLUMNS, RACE_METRICS, RACES, STUDIES)

INFINITE_ALLOWED = ("psnr_y", "psnr_rgb")  # an exact reproduction has infinite PSNR
# Per-item columns the tables need: the schema's, plus a pair's second identity. Without it, pairs that share
# only their second identity would count as independent and the intervals would be too narrow
# (racecomp.fairness clusters pairs by both identities).
REQUIRED_ITEM_COLUMNS = {kind: tuple(dict.fromkeys(columns + (("id2",) if kind == "verify" else ())))
                         for kind, columns in ITEM_COLUMNS.items()}


def read_csv(path, required, problems):
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


def run_columns(header, rows):
    """Identifying columns (those before `race`) and their values, checked to agree on every row."""
    if header[0] != "study" or "race" not in header:
        raise ValueError("does not start with a `study` column or has no `race` column (not a RaceComp per_race.csv)")
    columns = header[:header.index("race")]
    missing = [c for c in POOLED_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"identifying column(s) {missing} missing before `race`")
    first_line, first = rows[0]
    written = {c: first[c] for c in columns}
    for line, row in rows[1:]:
        differing = [c for c in columns if row[c] != written[c]]
        if differing:
            shown = ", ".join(f"{c} {row[c]!r} vs {written[c]!r}" for c in differing)
            raise ValueError(f"line {line}: identifying column(s) disagree with line {first_line} ({shown}); "
                             f"rows of two runs in one file?")
    return written


def run_family(columns):
    """(family, kind) of a run from its study (and task, for quantization runs)."""
    study = columns["study"]
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r} (expected one of {list(STUDIES)})")
    if study != "quantize":
        return study, study
    missing = [c for c in ("task", "wbits", "abits", "calib") if c not in columns]
    if missing:
        raise ValueError(f"quantize run without identifying column(s) {missing}")
    if columns["task"] not in ITEM_FILES:
        raise ValueError(f"quantize run with unknown task {columns['task']!r} (expected upscale or verify)")
    return f"quantize-{columns['task']}", columns["task"]


def _optional_metrics(header, kind):
    return tuple(m for m in OPTIONAL_RACE_METRICS.get(kind, ()) if m in header)


def per_race_values(header, rows, kind):
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
    """The per-image dicts of item_rows, read column by column (a sweep holds millions of rows), or None when
    any row is off: item_rows then reads row by row and names the first bad line."""
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


def item_rows(header, rows, kind):
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


def check_items(items, per_race, kind):
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


def _fraction(row, column, line, low=0.0):
    """_number, checked to lie in [low, 1] (up to float rounding)."""
    value = _number(row, column, line)
    if not low - 1e-9 <= value <= 1.0 + 1e-9:
        raise ValueError(f"line {line}: column {column!r}: {value!r} is outside [{low:g}, 1]")
    return value


def gender_probe_rows(rows):
    probe, seen = [], set()
    for line, row in rows:
        race = check_label(row["race"], FAIRFACE_RACES, f"line {line}")
        if race in seen:
            raise ValueError(f"line {line}: race {race!r} appears twice")
        seen.add(race)
        probe.append({"race": race, "n": _count(row, "n", line),
                      **{c: _fraction(row, c, line) for c in ("f1_in", "f1_out", "worst", "gap", "accuracy")}})
    return probe


def bias_probe_rows(rows):
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


def probe_file(run, name, columns, read_rows, problems):
    """read_rows' result for the run's optional probe file `name`, or None: absent (nothing to say) or
    unusable (reported with the reason)."""
    path = os.path.join(run.folder, name)
    if not os.path.isfile(path):
        return None
    table = read_csv(path, tuple(run.columns) + columns, problems)
    if table is None:
        problems.add(path, "unusable: the probe is left out of the tables")
        return None
    header, rows = table
    rows = [(line, dict(zip(header, fields))) for line, fields in rows]
    try:
        for line, row in rows:
            differing = [c for c in run.columns if row[c] != run.columns[c]]
            if differing:
                raise ValueError(f"line {line}: identifying column(s) {differing} differ from {FINISHED_MARKER}'s "
                                 f"(a file from another run?)")
        return read_rows(rows)
    except ValueError as error:
        problems.add(path, f"{error}; the probe is left out of the tables")
        return None
