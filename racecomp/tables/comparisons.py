"""Analyse one experiment and its references: per-race means over seeds, per-race intervals of the per-item
values (fairness.group_intervals) and paired experiment - reference tests (fairness.paired_test). Rows are
dicts in their CSV's column order; the methods: tables.report.METHODS."""
import concurrent.futures
import math
import multiprocessing

import numpy as np

from racecomp import fairness
from racecomp.schema import IDENTITY_MODEL_ARGS, RACES, RESTORE_COLUMNS
from racecomp.tables.experiments import canonical, has_values, races_of, seeds_paired
from racecomp.tables.run_files import (ITEM_METRICS, PSNR_CAP_DB, cells_of, item_metrics, items_of,
                                      usable_for_items)

# Arguments (args.json) that must agree for two runs' values of a metric to be compared: the recognition model.
COMPARABLE_IF_SAME = {"id_cos": IDENTITY_MODEL_ARGS}
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
# Arguments a reference must not differ in: the bicubic floor is scored on the LR images the model was.
SAME_INPUTS = {"bicubic": ("lr_kernel",)}


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
                  if other is not experiment and other.family == experiment.family and has_values(other, required)
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
    return [] if has_values(experiment, REFERENCES["fp32"][0]) else ["fp32"]


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
