"""Analyse one experiment and its references: per-race means over seeds, per-race intervals of the per-item
values (fairness.group_intervals) and paired experiment - reference tests (fairness.paired_test). Rows are
dicts in their CSV's column order; the methods: tables.report.METHODS."""
import concurrent.futures
import math
import multiprocessing
from dataclasses import dataclass

import numpy as np

from racecomp import fairness
from racecomp.schema import IDENTITY_MODEL_ARGS, RACES, RESTORE_COLUMNS
from racecomp.tables.experiments import canonical, races_of

# Metrics with per-item values: (column of the per-item file, fairness statistic). id_cos (optional) is used
# for the experiments whose every seed has it.
ITEM_METRICS = {"upscale": {"psnr_y": ("psnr_y", "mean"), "ssim_y": ("ssim_y", "mean"), "id_cos": ("id_cos", "mean")},
                "verify": {"accuracy": ("correct", "percent")}}
# Arguments (args.json) that must agree for two runs' values of a metric to be compared: the recognition model.
COMPARABLE_IF_SAME = {"id_cos": IDENTITY_MODEL_ARGS}
PSNR_CAP_DB = 100.0  # an infinite PSNR (an exact reproduction) in intervals and paired tests
# Bootstrap draws (items x replicates, summed over the tests) below which the paired tests run in this
# process: starting worker processes takes about a second, a sweep's tests take a minute.
MIN_DRAWS_FOR_PROCESSES = 50_000_000
# Reference of each relation: values it must have, and the experiment columns it may differ in (None: all but
# study and scale, for the bicubic floor of the same scale). "hr": the same verification run on the original
# faces, which has no restore columns (read as "").
REFERENCES = {
    "bicubic": ({"arch": "bicubic", "minority": "none"}, None),
    "balanced": ({"minority": "none"}, ("minority", "weight", "minority_mode")),
    "fp32": ({"wbits": "32", "abits": "32", "calib": "none"}, ("wbits", "abits", "calib", "qat_steps")),
    "hr": ({"restore": ""}, RESTORE_COLUMNS),
}
# Experiments that involve no training, known exactly when their seeds agree (no seed variance): the bicubic
# floor, and fp32 in the quantization study (its seed only chooses calibration data, which fp32 does not use).
UNTRAINED = ({"arch": "bicubic"}, {"study": "quantize", "wbits": "32", "abits": "32"})
# Arguments a reference must not differ in: the bicubic floor is scored on the LR images the model was.
SAME_INPUTS = {"bicubic": ("lr_kernel",)}


def _has(experiment, values):
    """Whether the experiment's columns have these values (by value; a column it lacks reads as "")."""
    return all(canonical(experiment.columns.get(c, "")) == canonical(v) for c, v in values.items())


def _seed_mean(values):
    return math.inf if math.inf in values else math.fsum(values) / len(values)


def seed_spread_rows(experiment):
    """seeds_<block>.csv rows: per race, <metric>_mean / _min / _max / _delta (max - min) over seeds of each
    per-race metric; n_images sums the race's images over seeds, n_seeds counts the seeds that evaluated it."""
    rows = []
    for race in races_of([experiment]):
        seeds = [run.per_race[race] for run in experiment.runs if race in run.per_race]
        row = {**experiment.columns, **experiment.pooled_columns(), "race": race, "n_seeds": len(seeds),
               "n_images": sum(means["n"] for means in seeds)}
        for metric in experiment.race_metrics():
            values = [means[metric] for means in seeds]
            row.update({f"{metric}_mean": _seed_mean(values), f"{metric}_min": min(values),
                        f"{metric}_max": max(values), f"{metric}_delta": max(values) - min(values)})
        rows.append(row)
    return rows


def race_columns_row(experiment, metric, races, problems):
    """means_<block>_<metric>.csv row (the Table I layout of 'Compressed Models Decompress Race Biases'): per race
    the mean over seeds and its n ("" without), then Avg, STD and (accuracy) SER of the shown means."""
    row, means = {**experiment.columns, **experiment.pooled_columns()}, {}
    for race in races:
        seeds = [run.per_race[race] for run in experiment.runs if race in run.per_race]
        if seeds:
            means[race] = _seed_mean([values[metric] for values in seeds])
        row.update({race: means.get(race, ""), f"{race}_n": sum(values["n"] for values in seeds) if seeds else ""})
    where, label = experiment.runs[0].path, f"[{experiment.label()}]"
    seed_races = {tuple(sorted(run.per_race)) for run in experiment.runs}
    if len(seed_races) > 1:
        problems.add(where, f"{label}: seeds evaluated different races {sorted(seed_races)}; each race is averaged "
                            f"over its own seeds")
    if set(means) != set(races):
        problems.add(where, f"{label}: no {sorted(set(races) - set(means))}; its Avg/STD/SER cover only "
                            f"{sorted(means)}")
    keys = ("mean", "std", "ser") if metric == "accuracy" else ("mean", "std")
    try:
        summary = fairness.group_summary(means)
    except ValueError as error:
        problems.add(where, f"{label} {metric}: no Avg/STD/SER ({error})")
        summary = dict.fromkeys(keys, "")
    row.update({name: summary[key] for key, name in zip(keys, ("Avg", "STD", "SER"))})
    return row


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


def fairness_interval_rows(experiment, metric, n_boot, seed, ci, problems):
    """ci_<block>.csv rows of fairness.group_intervals on the experiment's Items ([] when it has none): per race
    value [lo, hi], n (items x seeds), n_items, level, df, image_lo / image_hi, seed_sd; then mean, gap, std
    (and ser for accuracy), every pairwise race difference "A - B" with its p_value, and equal_means_p."""
    matrix = items_of(experiment, metric, problems, "CI tables")
    if matrix is None:
        return []
    where, label = experiment.runs[0].path, f"[{experiment.label()}]"
    values, capped = np.minimum(matrix.values, PSNR_CAP_DB), int(np.sum(np.isinf(matrix.values)))
    if capped:
        problems.add(where, f"{label}: {capped} of {values.size} per-image {metric} values are infinite; capped at "
                            f"{PSNR_CAP_DB:g} dB for the CIs and paired tests")
    statistic = ITEM_METRICS[experiment.kind][metric][1]
    try:
        result = fairness.group_intervals(values, matrix.races, statistic, clusters=matrix.clusters,
                                          clusters2=matrix.clusters2, n_boot=n_boot, seed=seed, ci=ci)
    except ValueError as error:
        problems.add(where, f"{label} {metric}: no CIs ({error})")
        return []
    base = {**experiment.columns, **experiment.pooled_columns(), "metric": metric}
    rows = []
    for race in [race for race in RACES[experiment.kind] if race in result["groups"]]:
        entry = result["groups"][race]
        rows.append({**base, "quantity": race, "value": entry["value"], "lo": entry["lo"], "hi": entry["hi"],
                     "n": entry["n"] * values.shape[0], "n_items": entry["n"], "level": entry["level"],
                     "df": entry["df"], "image_lo": entry["image_lo"], "image_hi": entry["image_hi"],
                     "seed_sd": entry["seed_sd"]})
    keys = ("mean", "gap", "std", "ser") if statistic == "percent" else ("mean", "gap", "std")
    common = {"n": values.size, "n_items": values.shape[1], "level": result["level"]}
    rows += [{**base, "quantity": key, **result["summary"][key], **common} for key in keys]
    rows += [{**base, "quantity": f"{pair['a']} - {pair['b']}", "value": pair["diff"], "lo": pair["lo"],
              "hi": pair["hi"], "p_value": pair["p_value"], "df": pair["df"], **common} for pair in result["pairs"]]
    rows.append({**base, "quantity": "equal_means_p", "value": result["equal_means_p"], "lo": "", "hi": "", **common})
    return rows


def untrained(experiment):
    """Whether the experiment involves no training (UNTRAINED)."""
    return any(_has(experiment, columns) for columns in UNTRAINED)


def known_exactly(experiment, values):
    """Whether (seeds, items) values of an experiment are known exactly: untrained, its seeds agreeing item by item."""
    return untrained(experiment) and (values.shape[0] == 1 or np.all(np.ptp(values, axis=0) == 0))


def seeds_paired(experiments):
    """Whether the experiments' seeds pair up: >= 2 seeds, the same labels (by value) in the same order."""
    labels = [[canonical(seed) for seed in e.seeds] for e in experiments]
    return bool(labels) and len(labels[0]) >= 2 and all(other == labels[0] for other in labels)


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


def paired_inputs(experiment, reference, metric, problems):
    """The arguments of fairness.paired_test of experiment - reference on the items both evaluated (by every
    seed), or None (reported). Seeds are paired when both have the same seed labels (seeds_paired)."""
    where, pair_label = experiment.runs[0].path, f"[{experiment.label()}] vs [{reference.label()}]"
    mine = items_of(experiment, metric, problems, f"comparison with [{reference.label()}]")
    theirs = items_of(reference, metric, problems, f"comparison of [{experiment.label()}]")
    if mine is None or theirs is None:
        problems.add(where, f"{pair_label}: no usable items; comparison left out")
        return None
    cells = cells_of([experiment, reference], [mine, theirs], metric)
    shared = 0 if cells is None else cells.races.size
    if shared != len(mine.keys) or shared != len(theirs.keys):
        problems.add(where, f"{pair_label}: {len(mine.keys) - shared} and {len(theirs.keys) - shared} items "
                            f"evaluated by only one of the two; paired on the {shared} shared ones")
    if cells is None or cells.clashing:
        reason = "no shared items" if cells is None else \
            f"{len(cells.clashing)} items labelled with different races, e.g. {cells.clashing[0]!r}"
        problems.add(where, f"{pair_label}: {reason}; comparison left out")
        return None
    return {"a": cells.runs[0], "b": cells.runs[1], "groups": cells.races, "clusters": cells.clusters,
            "clusters2": cells.clusters2, "statistic": cells.statistic,
            "paired_seeds": seeds_paired([experiment, reference]), "reference_exact": cells.exact[1]}


def compare(experiment, reference, metric, n_boot, seed, ci, problems):
    """fairness.paired_test of experiment - reference on their paired_inputs, or None (reported)."""
    arguments = paired_inputs(experiment, reference, metric, problems)
    return None if arguments is None else fairness.paired_test(**arguments, n_boot=n_boot, seed=seed, ci=ci)


def _same_setting(experiment, other, names):
    """Whether both experiments' args.json are known and agree on every argument in `names`."""
    settings = [(experiment.setting(name), other.setting(name)) for name in names]
    return all(mine[0] and theirs[0] and mine[1] == theirs[1] for mine, theirs in settings)


def _differs(experiment, other, name):
    (mine_known, mine), (theirs_known, theirs) = experiment.setting(name), other.setting(name)
    return mine_known and theirs_known and mine != theirs


def find_reference(experiment, experiments, relation, problems):
    """The experiment's unique `relation` counterpart (REFERENCES) in its family, or None (reported).

    A candidate has the required values, agrees on every column that is not free (one that only one side has
    too) and does not differ in the arguments of SAME_INPUTS. Among several, the one agreeing on the most free
    columns wins, then the one with the same recognition model behind id_cos, then one without id_cos (bicubic
    floors with and without --identity-model have the same PSNR/SSIM); a tie is reported as ambiguous.
    """
    required, free = REFERENCES[relation]
    where, label = experiment.runs[0].path, f"[{experiment.label()}]"

    def fixed(column):
        return column in ("study", "scale") if free is None else column not in free

    def agrees(other, column):
        return canonical(other.columns.get(column, "")) == canonical(experiment.columns.get(column, ""))

    candidates = [other for other in experiments
                  if other is not experiment and other.family == experiment.family and _has(other, required)
                  and all(agrees(other, c) for c in {**experiment.columns, **other.columns} if fixed(c))
                  and not any(_differs(experiment, other, name) for name in SAME_INPUTS.get(relation, ()))]
    if not candidates:
        wanted = ", ".join([f"{c}={v}" for c, v in required.items()]
                           + [f"same {c}" for c in experiment.columns if fixed(c)]
                           + [f"same {name}" for name in SAME_INPUTS.get(relation, ())])
        problems.add(where, f"{label}: no {relation} counterpart ({wanted}) among the runs found; comparison left out")
        return None
    preference = [(sum(agrees(other, c) for c in experiment.columns if not fixed(c)),
                   2 if _same_setting(experiment, other, IDENTITY_MODEL_ARGS)
                   else int("id_cos" not in other.race_metrics())) for other in candidates]
    best = [other for other, rank in zip(candidates, preference) if rank == max(preference)]
    if len(best) == 1:
        return best[0]
    problems.add(where, f"{label}: ambiguous {relation} counterpart ({'; '.join(o.label() for o in best)}); "
                        f"comparison left out")
    return None


def _paired_test(arguments):
    return fairness.paired_test(**arguments)


def run_paired_tests(inputs, workers):
    """fairness.paired_test(**arguments) of each of `inputs`, in order, in `workers` processes (each test seeds
    its own generator, so the numbers depend on neither)."""
    draws = sum(arguments["a"].shape[-1] * arguments["n_boot"] for arguments in inputs)
    if workers <= 1 or len(inputs) < 2 or draws < MIN_DRAWS_FOR_PROCESSES:
        return [_paired_test(arguments) for arguments in inputs]
    # spawn: a fresh interpreter (numpy and racecomp.fairness only), whatever threads this process runs.
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_paired_test, inputs))


def _relations(experiment):
    """The references an experiment is compared with."""
    columns = experiment.columns
    balanced = ["balanced"] if columns.get("minority", "none") != "none" else []
    if experiment.family == "upscale":
        return (["bicubic"] if columns.get("arch") != "bicubic" else []) + balanced
    if experiment.family == "verify":
        return balanced + (["hr"] if "restore" in columns else [])
    return [] if _has(experiment, REFERENCES["fp32"][0]) else ["fp32"]


def _comparable_metrics(experiment, reference, relation, problems):
    """The item metrics both sides have and may be compared on; an optional metric left out is reported."""
    theirs = item_metrics(reference)
    kept = []
    for metric in item_metrics(experiment):
        names = COMPARABLE_IF_SAME.get(metric, ())
        if metric not in theirs:
            reason = f"the {relation} reference [{reference.label()}] has no {metric}"
        elif not _same_setting(experiment, reference, names):
            reason = (f"{metric} of the {relation} reference [{reference.label()}] may come from another "
                      f"recognition model ({', '.join(names)} differ or no args.json)")
        else:
            kept.append(metric)
            continue
        problems.add(experiment.runs[0].path, f"[{experiment.label()}]: {reason}; {metric} comparison left out "
                                              f"(needs a {relation} run with the same {', '.join(names)})")
    return kept


def reference_comparisons(experiments, n_boot, seed, ci, problems, workers=1):
    """{experiment: {relation: {"experiment": reference, "results": {metric: paired_test result or None}}}}
    over the metrics both sides may be compared on; the tests run in `workers` processes (run_paired_tests),
    after everything left out is reported."""
    comparisons, inputs, pending = {}, [], []  # pending: (results dict, metric) of each input
    for experiment in experiments:
        for relation in _relations(experiment):
            reference = find_reference(experiment, experiments, relation, problems)
            if reference is None or not (
                    usable_for_items(experiment, problems, f"{relation} comparison")
                    and usable_for_items(reference, problems, f"{relation} comparison of [{experiment.label()}]")):
                continue
            results = {}
            for metric in _comparable_metrics(experiment, reference, relation, problems):
                arguments = paired_inputs(experiment, reference, metric, problems)
                results[metric] = None
                if arguments is not None:
                    inputs.append({**arguments, "n_boot": n_boot, "seed": seed, "ci": ci})
                    pending.append((results, metric))
            comparisons.setdefault(experiment, {})[relation] = {"experiment": reference, "results": results}
    for (results, metric), result in zip(pending, run_paired_tests(inputs, workers)):
        results[metric] = result
    return comparisons
