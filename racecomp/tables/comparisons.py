"""The statistics behind the tables: per-race means over seeds, intervals of the per-item values (recipe level
with >= 2 seeds, model level with one), and paired experiment-minus-reference tests (racecomp.fairness).
"""
import concurrent.futures
import math
import multiprocessing

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
PSNR_CAP_DB = 100.0
# Bootstrap draws (items x replicates, summed over the tests) below which the paired tests run in this
# process: starting worker processes takes about a second, a sweep's tests take a minute.
MIN_DRAWS_FOR_PROCESSES = 50_000_000  # same cap as upscaling.mean_psnr_selector
# Reference of each relation: values it must have, and the experiment columns it may differ in (None: all but
# study and scale, for the bicubic floor of the same scale). "hr": the same verification run on the original
# faces, which has no restore columns (read as "").
REFERENCES = {
    "bicubic": ({"arch": "bicubic", "minority": "none"}, None),
    "balanced": ({"minority": "none"}, ("minority", "weight", "minority_mode")),
    "fp32": ({"wbits": "32", "abits": "32", "calib": "none"}, ("wbits", "abits", "calib", "qat_steps")),
    "hr": ({"restore": ""}, RESTORE_COLUMNS),
}
# Columns of an experiment that involves no training: known exactly, it adds no seed variance to a comparison
# (fairness.paired_test's reference_exact), so a recipe with >= 2 seeds is compared with it at the recipe level:
# the bicubic floor, and fp32 in the quantization study (the model evaluated as it is: its seed only chooses
# calibration data, which fp32 does not use).
UNTRAINED = ({"arch": "bicubic"}, {"study": "quantize", "wbits": "32", "abits": "32"})
# Arguments (args.json) a reference must not differ in (where both runs record them): the bicubic floor is
# scored on the LR images the model was, so their --lr-kernel must agree.
SAME_INPUTS = {"bicubic": ("lr_kernel",)}


# ---------------------------------------------------------------------------------------------------------
# Tables from per-race means (seeds pooled)


def seed_spread_rows(experiment):
    """Seeds-table rows: per race, mean / min / max / delta (max - min) over seeds of each per-race metric.

    n_images sums the race's images over seeds (the n convention of racecomp.tables); n_seeds counts the
    seeds that evaluated the race.
    """
    rows = []
    for race in races_of([experiment]):
        runs = [run for run in experiment.runs if race in run.per_race]
        row = {**experiment.columns, **experiment.pooled_columns(), "race": race, "n_seeds": len(runs),
               "n_images": sum(run.per_race[race]["n"] for run in runs)}
        for metric in experiment.race_metrics():
            values = [run.per_race[race][metric] for run in runs]
            mean = math.inf if math.inf in values else math.fsum(values) / len(values)
            row.update({f"{metric}_mean": mean, f"{metric}_min": min(values), f"{metric}_max": max(values),
                        f"{metric}_delta": max(values) - min(values)})
        rows.append(row)
    return rows


def race_columns_row(experiment, metric, races, problems):
    """Per-race means row ('Compressed Models Decompress Race Biases' Table I layout): per race the mean over
    seeds of `metric` and its n, then Avg, STD (ddof=1) and, for accuracy in percent, SER, all three computed
    from the shown per-race means (so a reader can recompute them from the row). SER is a ratio of error
    rates, (100 - worst) / (100 - best): PSNR, SSIM and id_cos have none (1 - id_cos is not an error rate)."""
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
# Per-item statistics: intervals and paired tests (racecomp.fairness)


def _item_matrix(experiment, metric):
    """The items every seed of the experiment evaluated, in the first seed's order: {"values": (seeds, items)
    (PSNR not yet capped), "keys", "races", "clusters" (file or id1), "clusters2" (id2 of pairs, else None),
    "left_out": items evaluated by only some seeds}. ValueError when seeds label an item with two races.
    Built once per metric (Experiment.matrices)."""
    if metric in experiment.matrices:
        return experiment.matrices[metric]
    sources = [run.items for run in experiment.runs]
    column, _ = ITEM_METRICS[experiment.kind][metric]
    keys = [item["key"] for item in sources[0]]
    if len(set(keys)) == len(keys) and all([item["key"] for item in items] == keys for items in sources[1:]):
        rows, left_out = sources, 0  # the usual case: every seed evaluated the same items in the same order
    else:
        by_seed = [{item["key"]: item for item in items} for items in sources]
        keys = [key for key in by_seed[0] if all(key in other for other in by_seed[1:])]
        rows = [[items[key] for key in keys] for items in by_seed]
        left_out = len(set().union(*by_seed)) - len(keys)
    races = [item["race"] for item in rows[0]]
    clashes = [index for items in rows[1:] for index, item in enumerate(items) if item["race"] != races[index]]
    if clashes:
        labels = {items[min(clashes)]["race"] for items in rows}
        raise ValueError(f"item {keys[min(clashes)]!r} is labelled {' and '.join(sorted(labels))} by different seeds")
    matrix = {"values": np.array([[item[column] for item in items] for items in rows], dtype=np.float64),
              "keys": keys, "races": races, "clusters": [item["cluster"] for item in rows[0]],
              "clusters2": [item["cluster2"] for item in rows[0]] if experiment.kind == "verify" else None,
              "left_out": left_out}
    experiment.matrices[metric] = matrix
    return matrix


def items_of(experiment, metric, problems, purpose):
    """_item_matrix of an experiment, or None (reported); items not evaluated by every seed are reported."""
    where, label = experiment.runs[0].path, f"[{experiment.label()}] {metric}"
    try:
        matrix = _item_matrix(experiment, metric)
    except ValueError as error:
        problems.add(where, f"{label}: {error}; left out of the {purpose}")
        return None
    if matrix["left_out"]:
        problems.add(where, f"{label}: {matrix['left_out']} items evaluated by only some seeds are left out of "
                            f"the {purpose} (seed-level statistics need every seed on the same items)")
    if not matrix["keys"]:
        problems.add(where, f"{label}: no item evaluated by every seed; left out of the {purpose}")
        return None
    return matrix


def _clusters(matrix, kind, index=None):
    """(clusters, clusters2) arguments of racecomp.fairness: None for images (each file is one item after
    pooling its seeds), both identities for pairs."""
    if kind != "verify":
        return None, None
    index = range(len(matrix["keys"])) if index is None else index
    return (np.array([matrix["clusters"][i] for i in index]), np.array([matrix["clusters2"][i] for i in index]))


def _capped(values):
    """PSNR values with +inf (exact reproductions) replaced by PSNR_CAP_DB, and how many were."""
    return np.minimum(values, PSNR_CAP_DB), int(np.sum(np.isinf(values)))


def item_metrics(experiment):
    """The per-item metrics every seed's items have ([] when a seed has no usable items)."""
    if any(run.items is None for run in experiment.runs):
        return []
    return [metric for metric, (column, _) in ITEM_METRICS[experiment.kind].items()
            if all(column in run.items[0] for run in experiment.runs)]


def usable_for_items(experiment, problems, purpose):
    missing = [run.path for run in experiment.runs if run.items is None]
    if missing:
        problems.add(missing[0], f"[{experiment.label()}]: left out of the {purpose}: seed(s) without usable "
                                 f"per-item rows ({', '.join(missing)})")
        return False
    return True


def fairness_interval_rows(experiment, metric, n_boot, seed, ci, problems):
    """Per-race interval rows of fairness.group_intervals over the items every seed evaluated (seeds x items).

    Per race: value [lo, hi], n (items x seeds, the package's n convention), n_items, level ("recipe": seed
    and item variance, with >= 2 seeds; "model": item variance only, one seed), df, the item-level interval
    image_lo / image_hi and seed_sd (sd over seeds of the race mean). Then the across-race mean, gap, STD and
    (accuracy only) SER, whose intervals are simultaneous over races; every pairwise race difference
    ("A - B": Bonferroni interval, Welch p_value); and equal_means_p (no race differs from another).
    """
    matrix = items_of(experiment, metric, problems, "CI tables")
    if matrix is None:
        return []
    values, capped = _capped(matrix["values"])
    if capped:
        problems.add(experiment.runs[0].path, f"[{experiment.label()}]: {capped} of {values.size} per-image "
                                              f"{metric} values are infinite; capped at {PSNR_CAP_DB:g} dB for "
                                              f"the CIs and paired tests")
    statistic = ITEM_METRICS[experiment.kind][metric][1]
    clusters, clusters2 = _clusters(matrix, experiment.kind)
    try:
        result = fairness.group_intervals(values, np.array(matrix["races"]), statistic, clusters=clusters,
                                          clusters2=clusters2, n_boot=n_boot, seed=seed, ci=ci)
    except ValueError as error:
        problems.add(experiment.runs[0].path, f"[{experiment.label()}] {metric}: no CIs ({error})")
        return []
    seeds = values.shape[0]
    base = {**experiment.columns, **experiment.pooled_columns(), "metric": metric}
    rows = []
    for race in [race for race in RACES[experiment.kind] if race in result["groups"]]:
        entry = result["groups"][race]
        rows.append({**base, "quantity": race, "value": entry["value"], "lo": entry["lo"], "hi": entry["hi"],
                     "n": entry["n"] * seeds, "n_items": entry["n"], "level": entry["level"], "df": entry["df"],
                     "image_lo": entry["image_lo"], "image_hi": entry["image_hi"], "seed_sd": entry["seed_sd"]})
    keys = ("mean", "gap", "std", "ser") if statistic == "percent" else ("mean", "gap", "std")
    common = {"n": values.size, "n_items": values.shape[1], "level": result["level"]}
    rows += [{**base, "quantity": key, **result["summary"][key], **common} for key in keys]
    rows += [{**base, "quantity": f"{pair['a']} - {pair['b']}", "value": pair["diff"], "lo": pair["lo"],
              "hi": pair["hi"], "p_value": pair["p_value"], "df": pair["df"], **common} for pair in result["pairs"]]
    rows.append({**base, "quantity": "equal_means_p", "value": result["equal_means_p"], "lo": "", "hi": "", **common})
    return rows


def same_setting(experiment, other, names):
    """Whether both experiments' args.json are known and agree on every argument in `names`."""
    settings = [(experiment.setting(name), other.setting(name)) for name in names]
    return all(mine[0] and theirs[0] and mine[1] == theirs[1] for mine, theirs in settings)


def differs(experiment, other, name):
    """Whether both experiments' args.json are known for argument `name` and disagree on it."""
    (mine_known, mine), (theirs_known, theirs) = experiment.setting(name), other.setting(name)
    return mine_known and theirs_known and mine != theirs


def _recognizer_preference(experiment, other):
    """2: the same recognition model behind id_cos (args.json); 1: `other` has no id_cos, so it cannot be taken
    for an id_cos reference of another recognizer; 0: otherwise. Bicubic runs with and without
    --identity-model have the same PSNR/SSIM, so this decides between them instead of calling it a tie."""
    if same_setting(experiment, other, IDENTITY_MODEL_ARGS):
        return 2
    return 0 if "id_cos" in other.race_metrics() else 1


def find_reference(experiment, experiments, relation, problems):
    """The experiment's unique `relation` counterpart (see REFERENCES) in its family, or None (reported).

    A candidate has the required values, agrees on every column that is not free (one that only one side
    has, e.g. restore, must agree too) and does not differ in the arguments of SAME_INPUTS. Among several,
    the one agreeing on the most free columns wins, then the one with the same recognition model behind id_cos
    (_recognizer_preference); a tie is reported as ambiguous.
    """
    required, free = REFERENCES[relation]

    def fixed(column):  # a column both must agree on; a column one of them lacks reads as ""
        return column in ("study", "scale") if free is None else column not in free

    def agrees(other, column):
        return canonical(other.columns.get(column, "")) == canonical(experiment.columns.get(column, ""))

    candidates = [
        other for other in experiments
        if other is not experiment and other.family == experiment.family
        and all(canonical(other.columns.get(c, "")) == canonical(v) for c, v in required.items())
        and all(agrees(other, c) for c in {**experiment.columns, **other.columns} if fixed(c))
        and not any(differs(experiment, other, name) for name in SAME_INPUTS.get(relation, ()))
    ]
    if candidates:
        agreement = [(sum(agrees(o, c) for c in experiment.columns if not fixed(c)),
                      _recognizer_preference(experiment, o)) for o in candidates]
        best = [o for o, a in zip(candidates, agreement) if a == max(agreement)]
        if len(best) == 1:
            return best[0]
        problems.add(experiment.runs[0].path, f"[{experiment.label()}]: ambiguous {relation} counterpart "
                                              f"({'; '.join(o.label() for o in best)}); comparison left out")
        return None
    wanted = ", ".join([f"{c}={v}" for c, v in required.items()]
                       + [f"same {c}" for c in experiment.columns if fixed(c)]
                       + [f"same {name}" for name in SAME_INPUTS.get(relation, ())])
    problems.add(experiment.runs[0].path, f"[{experiment.label()}]: no {relation} counterpart ({wanted}) among "
                                          f"the runs found; comparison left out")
    return None


def paired_inputs(experiment, reference, metric, problems):
    """The arguments of fairness.paired_test for experiment - reference per race (and over all races) on the
    items both evaluated, or None (reported).

    Items are paired by file (images) or (race, line) (pairs; clustered by both identities), using the items
    every seed of each side evaluated. Accuracy differences are in percentage points. With >= 2 seeds on
    both sides the headline interval and p-value are at the recipe level (seed-to-seed variance included;
    seeds paired by label when both experiments have the same seeds, e.g. the same initialization), else
    they are a model difference (1 seed; not a recipe effect); see fairness.paired_test, whose result is
    {"overall": {...}, "groups": {race: {mean_diff, lo, hi, p_value, p_holm, n, level, scope, ...}}}.
    With reference = the balanced run this is the minority penalty as defined for RaceComp, under - balanced
    (negative = the under-sampled run is worse).
    """
    where = experiment.runs[0].path
    pair_label = f"[{experiment.label()}] vs [{reference.label()}]"
    mine = items_of(experiment, metric, problems, f"comparison with [{reference.label()}]")
    theirs = items_of(reference, metric, problems, f"comparison of [{experiment.label()}]")
    if mine is None or theirs is None:
        problems.add(where, f"{pair_label}: no usable items; comparison left out")
        return None
    position = {key: index for index, key in enumerate(theirs["keys"])}
    mine_index = [index for index, key in enumerate(mine["keys"]) if key in position]
    theirs_index = [position[mine["keys"][index]] for index in mine_index]
    shared = len(mine_index)
    if shared != len(mine["keys"]) or shared != len(theirs["keys"]):
        problems.add(where, f"{pair_label}: {len(mine['keys']) - shared} and {len(theirs['keys']) - shared} items "
                            f"evaluated by only one of the two; paired on the {shared} shared ones")
    clashing = [mine["keys"][i] for i, j in zip(mine_index, theirs_index) if mine["races"][i] != theirs["races"][j]]
    if clashing or not shared:
        reason = f"{len(clashing)} items labelled with different races, e.g. {clashing[0]!r}" if clashing else \
            "no shared items"
        problems.add(where, f"{pair_label}: {reason}; comparison left out")
        return None
    seeds = [canonical(run.columns["seed"]) for run in experiment.runs]
    clusters, clusters2 = _clusters(mine, experiment.kind, mine_index)
    mine_values = _capped(mine["values"][:, mine_index])[0]
    theirs_values = _capped(theirs["values"][:, theirs_index])[0]
    return {"a": mine_values, "b": theirs_values, "groups": np.array([mine["races"][i] for i in mine_index]),
            "clusters": clusters, "clusters2": clusters2, "statistic": ITEM_METRICS[experiment.kind][metric][1],
            "paired_seeds": len(seeds) >= 2 and seeds == [canonical(run.columns["seed"]) for run in reference.runs],
            "reference_exact": known_exactly(reference, theirs_values)}


def untrained(experiment):
    """Whether the experiment involves no training (UNTRAINED)."""
    return any(all(canonical(experiment.columns.get(c, "")) == canonical(v) for c, v in columns.items())
               for columns in UNTRAINED)


def known_exactly(experiment, values):
    """Whether an experiment's (seeds, items) values are known exactly: it involves no training and its seeds,
    if several, agree item by item (seeds of an untrained run that differ are treated like a trained one's)."""
    return untrained(experiment) and (values.shape[0] == 1 or np.all(np.ptp(values, axis=0) == 0))


def compare(experiment, reference, metric, n_boot, seed, ci, problems):
    """One paired test of experiment - reference (paired_inputs, then fairness.paired_test), or None
    (reported): what reference_comparisons computes for each experiment, relation and metric."""
    arguments = paired_inputs(experiment, reference, metric, problems)
    return None if arguments is None else fairness.paired_test(**arguments, n_boot=n_boot, seed=seed, ci=ci)


def _paired_test(arguments):
    return fairness.paired_test(**arguments)


def run_paired_tests(inputs, workers):
    """fairness.paired_test(**arguments) of each item of `inputs`, in order, in `workers` processes.

    Each test seeds its own generator (its `seed` argument), so the numbers do not depend on the process or
    the order; a sweep's tests are most of summarize's time.
    """
    draws = sum(arguments["a"].shape[-1] * arguments["n_boot"] for arguments in inputs)
    if workers <= 1 or len(inputs) < 2 or draws < MIN_DRAWS_FOR_PROCESSES:
        return [_paired_test(arguments) for arguments in inputs]
    # spawn: a fresh interpreter (numpy and racecomp.fairness only), whatever threads this process runs.
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_paired_test, inputs))


def _relations(experiment):
    """Which references an experiment is compared with."""
    columns = experiment.columns
    balanced = ["balanced"] if columns.get("minority", "none") != "none" else []
    if experiment.family == "upscale":
        return (["bicubic"] if columns.get("arch") != "bicubic" else []) + balanced
    if experiment.family == "verify":
        return balanced + (["hr"] if "restore" in columns else [])
    fp32 = all(canonical(columns.get(c, "")) == canonical(v) for c, v in REFERENCES["fp32"][0].items())
    return [] if fp32 else ["fp32"]


def _comparable_metrics(experiment, reference, relation, problems):
    """The item metrics both sides have and may be compared on; an optional metric left out is reported."""
    theirs = item_metrics(reference)
    kept = []
    for metric in item_metrics(experiment):
        names = COMPARABLE_IF_SAME.get(metric, ())
        if metric not in theirs:
            reason = f"the {relation} reference [{reference.label()}] has no {metric}"
        elif not same_setting(experiment, reference, names):
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
    over the metrics both sides have (id_cos only when both come from the same recognition model). The tests
    run in `workers` processes (run_paired_tests); what is left out is reported first, in the same order."""
    comparisons, inputs, pending = {}, [], []  # pending: (results dict, metric) of each input
    for experiment in experiments:
        for relation in _relations(experiment):
            reference = find_reference(experiment, experiments, relation, problems)
            if reference is None:
                continue
            if not (usable_for_items(experiment, problems, f"{relation} comparison")
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
