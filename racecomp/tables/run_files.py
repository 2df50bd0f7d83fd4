"""A finished run folder's CSV files (racecomp.schema's contract) parsed and checked: per_race.csv, the per-item
file and the probe files. Each reader returns plain values or raises ValueError naming the line and the problem.
Then the per-item files of an experiment's seeds laid out as one (seeds, items) matrix per metric (Items), and
several experiments' matrices aligned on their shared items (Cells).
"""
import collections
import csv
import math
import sys
from dataclasses import dataclass

import numpy as np

from racecomp.races import FAIRFACE_RACES, check_label
from racecomp.schema import (BIAS_PROBE_COLUMNS, COUNT_COLUMN, FINISHED_MARKER, ITEM_COLUMNS, ITEM_FILES,
                             METRIC_RANGES, OPTIONAL_RACE_METRICS, POOLED_COLUMNS, PROBE_GENDER_COLUMNS,
                             RACE_METRICS, RACES, STUDIES)
from racecomp.tables.experiments import known_exactly

INFINITE_ALLOWED = ("psnr_y", "psnr_rgb")  # an exact reproduction has infinite PSNR
# A CSV file's data rows: `lines` the file line of each, `columns` {name: tuple of texts} in header order.
Table = collections.namedtuple("Table", "lines columns")


def read_csv(path, required):
    """The Table of a CSV file holding the `required` columns and at least one row; ValueError saying why not."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header, lines, rows = next(reader, None), [], []
            for fields in reader:
                if len(fields) != len(header):
                    raise ValueError(f"line {reader.line_num}: {len(fields)} fields but the header has "
                                     f"{len(header)} (truncated or not a RaceComp file)")
                lines.append(reader.line_num)
                rows.append(tuple(fields))  # tuples escape the cyclic garbage collector: a sweep has millions
    except FileNotFoundError:
        raise ValueError("missing") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"unreadable: {error}") from None
    if header is None:
        raise ValueError("empty file")
    missing = [column for column in required if column not in header]
    if missing:
        raise ValueError(f"missing column(s) {missing} (not a RaceComp results file?)")
    if len(set(header)) != len(header):
        raise ValueError("repeated column names in the header")
    if not rows:
        raise ValueError("no data rows (header only)")
    return Table(lines, dict(zip(header, zip(*rows))))


def _numbers(table, column, parse=float, allow_infinite=False, bounds=None):
    """The column's values (float, or int), each finite (or +inf where allowed) and inside `bounds` (default:
    METRIC_RANGES'; given bounds allow float rounding); ValueError naming the first bad line."""
    (low, high), slack = (METRIC_RANGES.get(column, (-math.inf, math.inf)), 0.0) if bounds is None else (bounds, 1e-9)
    values = []

    def bad(problem):  # built only for the error: a sweep has millions of values
        return ValueError(f"line {line}: column {column!r}: {text!r} {problem}")
    for line, text in zip(table.lines, table.columns[column]):
        try:
            value = parse(text)
        except ValueError:
            raise bad(f"is not a {'whole number' if parse is int else 'number'}") from None
        if not (math.isfinite(value) or allow_infinite and value == math.inf):
            raise bad("is not a finite number")
        if not (low - slack <= value <= high + slack or value == math.inf):
            raise bad(f"is outside its range [{low:g}, {high:g}]")
        values.append(value)
    return values


def _counts(table, column):
    return _numbers(table, column, parse=int, bounds=(1, math.inf))


def _races(table, vocabulary, unique=False):
    """The race column's labels (the vocabulary's strings, shared by every run), each known; unique: once each."""
    shared, races = {label: label for label in vocabulary}, []
    for line, text in zip(table.lines, table.columns["race"]):
        races.append(shared.get(text) or check_label(text, vocabulary, f"line {line}"))  # check_label raises
        if unique and races[-1] in races[:-1]:  # per_race.csv and probe_gender.csv: a few rows
            raise ValueError(f"line {line}: race {text!r} appears twice")
    return races


def _check_identifying(table, identifying, source, guess):
    """Raise unless every row has the identifying {column: value} of `source` (`guess`: why it might not)."""
    for index, line in enumerate(table.lines):
        differing = [c for c in identifying if table.columns[c][index] != identifying[c]]
        if differing:
            shown = ", ".join(f"{c} {table.columns[c][index]!r} vs {identifying[c]!r}" for c in differing)
            raise ValueError(f"line {line}: identifying column(s) {differing} differ from {source} ({shown}): {guess}")


def _rows(fields):
    """{name: column} of equal-length columns as one dict per row."""
    return [dict(zip(fields, values)) for values in zip(*fields.values())]


def _optional_metrics(table, kind):
    return tuple(m for m in OPTIONAL_RACE_METRICS.get(kind, ()) if m in table.columns)


def read_per_race(path):
    """(identifying columns {name: value as written}, family, kind, {race: {"n", metric...}}) of a per_race.csv.

    The identifying columns are those before `race`, the same on every row; the family is the study, or
    quantize-<task>; the optional metrics are read when the file has them."""
    table = read_csv(path, ("study", "seed", "code_version", "race"))
    header = list(table.columns)
    if header[0] != "study":
        raise ValueError("does not start with a `study` column (not a RaceComp per_race.csv)")
    columns = {c: table.columns[c][0] for c in header[:header.index("race")]}
    missing = [c for c in POOLED_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"identifying column(s) {missing} missing before `race`")
    _check_identifying(table, columns, f"line {table.lines[0]}", "rows of two runs in one file?")
    family, kind = _family(columns)
    missing = [c for c in (COUNT_COLUMN[kind],) + RACE_METRICS[kind] if c not in header]
    if missing:
        raise ValueError(f"missing column(s) {missing} of a {kind} per_race.csv")
    races = _races(table, RACES[kind], unique=True)
    values = {"n": _counts(table, COUNT_COLUMN[kind])}
    for metric in RACE_METRICS[kind] + _optional_metrics(table, kind):
        values[metric] = _numbers(table, metric, allow_infinite=metric in INFINITE_ALLOWED)
    return columns, family, kind, dict(zip(races, _rows(values)))


def _family(columns):
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


def read_items(path, kind, per_race, left_out=()):
    """Per-item dicts of a per_image.csv / per_pair.csv whose rows reproduce per_race.csv's counts and means.
    An image: key and cluster (its file), race, psnr_y, ssim_y and the optional metrics the file has but
    `left_out`. A pair: key (race, line), race, cluster (id1), cluster2 (id2), correct (0/1), fold."""
    table = read_csv(path, ITEM_COLUMNS[kind])
    races = _races(table, RACES[kind])
    if kind == "upscale":  # a file name (an identity) is one string shared by every run that evaluated it
        files = list(map(sys.intern, table.columns["file"]))
        fields = {"key": files, "race": races, "cluster": files}
        for metric in ("psnr_y", "ssim_y") + _optional_metrics(table, kind):
            if metric not in left_out:
                fields[metric] = _numbers(table, metric, allow_infinite=metric == "psnr_y")
    else:
        fields = {"key": list(zip(races, _counts(table, "line"))), "race": races,
                  "cluster": list(map(sys.intern, table.columns["id1"])),
                  "cluster2": list(map(sys.intern, table.columns["id2"])),
                  "correct": _numbers(table, "correct"), "fold": table.columns["fold"]}
        for line, correct, text, id1, id2 in zip(table.lines, fields["correct"], table.columns["correct"],
                                                 fields["cluster"], fields["cluster2"]):
            if correct not in (0.0, 1.0):
                raise ValueError(f"line {line}: column 'correct' must be 0 or 1, got {text!r}")
            if not id1.strip() or not id2.strip():
                raise ValueError(f"line {line}: empty identity (id1 {id1!r}, id2 {id2!r})")
    seen = set()
    for line, key in zip(table.lines, fields["key"]):
        if not key or key in seen:
            raise ValueError(f"line {line}: item {key!r} is empty or appears twice")
        seen.add(key)
    items = _rows(fields)
    _check_means(items, per_race, kind)
    return items


def _check_means(items, per_race, kind):
    """Raise unless the items reproduce per_race.csv: same races, counts and (where exact) means."""
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
            means = {metric: math.fsum(m[metric] for m in members) / len(members)
                     for metric in ("psnr_y", "ssim_y") + OPTIONAL_RACE_METRICS[kind]
                     if metric in members[0] and metric in per_race[race]}
        else:  # with equal folds the mean of fold accuracies is the pooled share of correct pairs (RFW's case)
            fold_sizes = collections.Counter(m["fold"] for m in members).values()
            means = ({"accuracy": 100.0 * math.fsum(m["correct"] for m in members) / len(members)}
                     if len(set(fold_sizes)) == 1 else {})
        for metric, mean in means.items():
            if not math.isclose(mean, per_race[race][metric], rel_tol=1e-9, abs_tol=1e-12):
                raise ValueError(f"{race}: mean {metric} of the rows is {mean!r} but per_race.csv says "
                                 f"{per_race[race][metric]!r} (a file from another run?)")


def _probe_table(path, identifying, columns):
    """The Table of a probe file whose every row carries the run's identifying columns."""
    table = read_csv(path, tuple(identifying) + columns)
    _check_identifying(table, identifying, f"{FINISHED_MARKER}'s", "a file from another run?")
    return table


def read_gender_probe(path, identifying):
    """[{"race", "n", "f1_in", "f1_out", "worst", "gap", "accuracy"}] of a probe_gender.csv, a FairFace race a row."""
    table = _probe_table(path, identifying, PROBE_GENDER_COLUMNS)
    return _rows({"race": _races(table, FAIRFACE_RACES, unique=True), "n": _counts(table, "n"),
                  **{c: _numbers(table, c, bounds=(0.0, 1.0)) for c in PROBE_GENDER_COLUMNS[2:]}})


def read_bias_probe(path, identifying):
    """[{"set_a", "set_b", "n_a", "n_b", "assoc_pretrained", "assoc_finetuned"}] of a bias_probe.csv (>= 3 rows)."""
    table = _probe_table(path, identifying, BIAS_PROBE_COLUMNS)
    for line, set_a, set_b in zip(table.lines, table.columns["set_a"], table.columns["set_b"]):
        if not set_a.strip() or not set_b.strip():
            raise ValueError(f"line {line}: empty probe set name")
    rows = _rows({"set_a": table.columns["set_a"], "set_b": table.columns["set_b"], "n_a": _counts(table, "n_a"),
                  "n_b": _counts(table, "n_b"),
                  **{c: _numbers(table, c, bounds=(-1.0, 1.0)) for c in ("assoc_pretrained", "assoc_finetuned")}})
    if len(rows) < 3:
        raise ValueError(f"{len(rows)} comparison(s): a Bias Transfer Score needs at least 3")
    return rows


# ---------------------------------------------------------------------------------------------------------
# The per-item files of an experiment's seeds, laid out as one (seeds, items) matrix per metric

# Metrics with per-item values: (column of the per-item file, fairness statistic). id_cos (optional) is used
# for the experiments whose every seed has it.
ITEM_METRICS = {"upscale": {"psnr_y": ("psnr_y", "mean"), "ssim_y": ("ssim_y", "mean"), "id_cos": ("id_cos", "mean")},
                "verify": {"accuracy": ("correct", "percent")}}
PSNR_CAP_DB = 100.0  # an infinite PSNR (an exact reproduction) in intervals and paired tests


@dataclass
class Items:
    """One metric of an experiment on the items every seed evaluated, in the first seed's order."""
    values: np.ndarray  # (seeds, items), PSNR not capped
    keys: list
    races: np.ndarray  # (items,)
    clusters: object  # (items,) first identity of each pair; None for images (a file is one item)
    clusters2: object  # (items,) second identity of each pair; None for images
    left_out: int  # items evaluated by only some seeds


def _shared(keys, races):
    """(the keys in every list, in the first's order; each list's index of them; those some lists label with
    another race) of parallel key and race lists."""
    positions = [dict(zip(these, range(len(these)))) for these in keys]
    shared = [key for key in keys[0] if all(key in position for position in positions[1:])]
    index = [[position[key] for key in shared] for position in positions]
    labels = zip(shared, *([these[i] for i in order] for these, order in zip(races, index)))
    return shared, index, [key for key, *named in labels if len(set(named)) > 1]


def _item_matrix(experiment, metric):
    """The experiment's Items, built once (Experiment.matrices); ValueError when seeds label an item with two
    races."""
    if metric not in experiment.matrices:
        seeds = [run.items for run in experiment.runs]
        keys = [[item["key"] for item in items] for items in seeds]
        shared, index, clashing = _shared(keys, [[item["race"] for item in items] for items in seeds])
        rows = [[items[i] for i in order] for items, order in zip(seeds, index)]
        if clashing:
            labels = {items[shared.index(clashing[0])]["race"] for items in rows}
            raise ValueError(f"item {clashing[0]!r} is labelled {' and '.join(sorted(labels))} by different seeds")
        column, pairs = ITEM_METRICS[experiment.kind][metric][0], experiment.kind == "verify"
        experiment.matrices[metric] = Items(
            np.array([[item[column] for item in items] for items in rows], dtype=np.float64), shared,
            np.array([item["race"] for item in rows[0]]),
            np.array([item["cluster"] for item in rows[0]]) if pairs else None,
            np.array([item["cluster2"] for item in rows[0]]) if pairs else None, len(set().union(*keys)) - len(shared))
    return experiment.matrices[metric]


def items_of(experiment, metric, problems, purpose):
    """The experiment's Items, or None (reported); items not evaluated by every seed are reported."""
    where, label = experiment.runs[0].path, f"[{experiment.label()}] {metric}"
    try:
        matrix = _item_matrix(experiment, metric)
    except ValueError as error:
        problems.add(where, f"{label}: {error}; left out of the {purpose}")
        return None
    if matrix.left_out:
        problems.add(where, f"{label}: {matrix.left_out} items evaluated by only some seeds are left out of "
                            f"the {purpose} (seed-level statistics need every seed on the same items)")
    if not matrix.keys:
        problems.add(where, f"{label}: no item evaluated by every seed; left out of the {purpose}")
        return None
    return matrix


def item_metrics(experiment):
    """The per-item metrics every seed's items have ([] when a seed has no usable items)."""
    if any(run.items is None for run in experiment.runs):
        return []
    return [metric for metric, (column, _) in ITEM_METRICS[experiment.kind].items()
            if all(column in run.items[0] for run in experiment.runs)]


def usable_for_items(experiment, problems, purpose):
    """Whether every seed has usable per-item rows (else reported)."""
    missing = [run.path for run in experiment.runs if run.items is None]
    if missing:
        problems.add(missing[0], f"[{experiment.label()}]: left out of the {purpose}: seed(s) without usable "
                                 f"per-item rows ({', '.join(missing)})")
    return not missing


@dataclass
class Cells:
    """Experiments' values of one metric on the items all of them evaluated, in the first one's order."""
    runs: list  # (seeds, items) per experiment, PSNR capped
    races: np.ndarray  # (items,)
    clusters: object  # as in Items
    clusters2: object
    exact: list  # per experiment: known_exactly
    statistic: str  # "mean" or "percent" (ITEM_METRICS)
    clashing: list  # keys of the items that the experiments label with different races


def cells_of(experiments, matrices, metric):
    """Cells of the experiments from their Items, or None when no item is in all of them."""
    keys, index, clashing = _shared([matrix.keys for matrix in matrices], [matrix.races for matrix in matrices])
    if not keys:
        return None
    first = matrices[0]
    runs = [np.minimum(matrix.values[:, order], PSNR_CAP_DB) for matrix, order in zip(matrices, index)]
    return Cells(runs, first.races[index[0]], None if first.clusters is None else first.clusters[index[0]],
                 None if first.clusters2 is None else first.clusters2[index[0]],
                 [known_exactly(e, values) for e, values in zip(experiments, runs)],
                 ITEM_METRICS[experiments[0].kind][metric][1], clashing)
