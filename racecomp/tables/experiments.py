"""Experiments: runs (tables.runs) that differ only in seed and code version, pooled; how identifying values
compare and sort, which recorded settings tell groups of runs apart, whether one involves no training (known
exactly) and whether several pair their seeds."""
import json
import math
from dataclasses import dataclass, field

import numpy as np

from racecomp.schema import (ADDED_LATER, FAMILIES, NON_RESULT_ARGS, OPTIONAL_RACE_METRICS, POOLED_COLUMNS,
                             RACE_METRICS, RACES, RECIPE_COLUMN)


@dataclass(frozen=True, eq=False)
class Experiment:
    """Runs that differ only in seed (and code version), built once. Results are keyed by the experiment itself
    (compared and hashed as itself): two experiments may share every identifying value and differ in their data."""
    family: str
    kind: str
    identifying: tuple  # ((column, value as written), ...) but POOLED_COLUMNS, in file order; a dict is taken too
    runs: tuple  # sorted by seed; a list is taken too
    # {metric: item matrix} (tables.comparisons), filled on first use: a sweep's take seconds to build.
    matrices: dict = field(default_factory=dict, init=False, repr=False)  # a replace() starts an empty one

    def __post_init__(self):
        object.__setattr__(self, "identifying", tuple(dict(self.identifying).items()))
        object.__setattr__(self, "runs", tuple(self.runs))

    @property
    def columns(self):
        """{identifying column: value as written}, in file order."""
        return dict(self.identifying)

    @property
    def seeds(self):  # labels as written
        return tuple(run.columns["seed"] for run in self.runs)

    @property
    def warnings(self):
        """The sanity checks any of its runs failed (sorted): a row with them is a broken model, not a result."""
        return sorted({check for run in self.runs for check in run.warnings})

    def label(self, shown=None):
        """The `shown` columns (default: all but study) as "column=value, ..."."""
        shown = [c for c in self.columns if c != "study"] if shown is None else shown
        return ", ".join(f"{c}={self.columns.get(c, '')}" for c in shown) or "(single experiment)"

    def pooled_columns(self):
        """n_seeds, seeds, code versions and failed sanity checks behind a row, so that it can be traced back."""
        return {"n_seeds": len(self.runs), "seeds": ";".join(self.seeds),
                "code_version": ";".join(sorted({r.columns["code_version"] for r in self.runs})),
                "warnings": ";".join(self.warnings)}

    def race_metrics(self):
        """The per-race metrics every seed has: the study's, then the optional ones all seeds wrote."""
        return list(RACE_METRICS[self.kind]) + [m for m in OPTIONAL_RACE_METRICS.get(self.kind, ()) if all(
            m in values for run in self.runs for values in run.per_race.values())]

    def setting(self, name):
        """(known, value) of an argument from the runs' args.json: known only when every run has one and they
        agree (an argument a run's args.json lacks reads as its schema.ADDED_LATER value, else None)."""
        if any(run.args is None for run in self.runs):
            return False, None
        values = {json.dumps(run.args.get(name, ADDED_LATER.get(name)), sort_keys=True) for run in self.runs}
        return (True, json.loads(values.pop())) if len(values) == 1 else (False, None)


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


def group_experiments(runs, problems):
    """Experiments (seeds pooled), sorted by family then settings. Runs on other data (args.json fingerprints)
    are never pooled. Two runs of one experiment and seed clash: which is right cannot be told, so both are left
    out (reported); the experiment's other seeds remain."""
    grouped = {}
    for run in runs:
        settings = tuple(sorted((c, canonical(v)) for c, v in run.columns.items() if c not in POOLED_COLUMNS))
        grouped.setdefault((run.family, settings, json.dumps(run.data_ids, sort_keys=True)), []).append(run)
    _report_other_data(grouped, problems)
    experiments = []
    for (family, _, _), members in grouped.items():
        by_seed = {}
        for run in members:
            by_seed.setdefault(canonical(run.columns["seed"]), []).append(run)
        for same in (same for same in by_seed.values() if len(same) > 1):
            for run in same:
                others = ", ".join(other.path for other in same if other is not run)
                problems.add(run.path, f"same experiment and seed {run.columns['seed']} as {others}: "
                                       f"all {len(same)} left out (which is right cannot be told)")
        kept = sorted((same[0] for same in by_seed.values() if len(same) == 1),
                      key=lambda r: sort_key(r.columns["seed"]))
        if kept:
            columns = {c: v for c, v in kept[0].columns.items() if c not in POOLED_COLUMNS}
            experiments.append(Experiment(family, kept[0].kind, columns, kept))
    experiments.sort(key=lambda e: (FAMILIES.index(e.family), [(c, sort_key(v)) for c, v in e.columns.items()]))
    return experiments


def _report_other_data(grouped, problems):
    """A problem line for each group of runs kept apart from another only by its data fingerprints."""
    by_columns = {}
    for (family, settings, data), members in grouped.items():
        if data != "null":  # a run without fingerprints is pooled by recipe, which knows its data by path only
            columns = tuple(item for item in settings if item[0] != RECIPE_COLUMN)
            by_columns.setdefault((family, columns), []).append((data, members))
    for groups in (groups for groups in by_columns.values() if len({data for data, _ in groups}) > 1):
        for data, members in groups:
            others = ", ".join(other[0].path for other_data, other in groups if other_data != data)
            problems.add(members[0].path, f"not pooled with {others}: the same settings on other data (data "
                                          f"fingerprints {data} in args.json)")


def races_of(experiments):
    """Races present in any run, in the vocabulary's order."""
    present = {race for e in experiments for run in e.runs for race in run.per_race}
    return [race for race in RACES[experiments[0].kind] if race in present]


def differing_settings(runs_by_key, skip=()):
    """({key: {argument: value}}, [keys none of whose runs has an args.json]) of the arguments that differ between
    groups of runs (e.g. the runs of each recipe). Left out: `skip`, the seed, schema.NON_RESULT_ARGS and every
    argument that differs inside a group (a group shares its recipe, so it cannot be what sets groups apart). An
    argument a run's args.json lacks reads as None."""
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


# Experiments that involve no training, known exactly when their seeds agree (no seed variance): the bicubic
# floor, and fp32 in the quantization study (its seed only chooses calibration data, which fp32 does not use).
UNTRAINED = ({"arch": "bicubic"}, {"study": "quantize", "wbits": "32", "abits": "32"})


def has_values(experiment, values):
    """Whether the experiment's columns have these values (by value; a column it lacks reads as "")."""
    return all(canonical(experiment.columns.get(c, "")) == canonical(v) for c, v in values.items())


def untrained(experiment):
    """Whether the experiment involves no training (UNTRAINED)."""
    return any(has_values(experiment, columns) for columns in UNTRAINED)


def known_exactly(experiment, values):
    """Whether (seeds, items) values of an experiment are known exactly: untrained, its seeds agreeing item by item."""
    return untrained(experiment) and (values.shape[0] == 1 or np.all(np.ptp(values, axis=0) == 0))


def seeds_paired(experiments):
    """Whether the experiments' seeds pair up: >= 2 seeds, the same labels (by value) in the same order."""
    labels = [[canonical(seed) for seed in e.seeds] for e in experiments]
    return bool(labels) and len(labels[0]) >= 2 and all(other == labels[0] for other in labels)
