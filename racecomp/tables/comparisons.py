"""The statistics behind the tables: per-race means over seeds, bootstrap intervals of the per-item values,
and paired experiment-minus-reference tests.
"""
import math

import numpy as np

from racecomp import fairness
from racecomp.schema import RACE_METRICS, RACES
from racecomp.tables.runs import canonical, races_of

# Metrics with per-item values: (column of the per-item file, fairness statistic).
ITEM_METRICS = {"upscale": {"psnr_y": ("psnr_y", "mean"), "ssim_y": ("ssim_y", "mean")},
                "verify": {"accuracy": ("correct", "percent")}}
PSNR_CAP_DB = 100.0  # same cap as upscaling.mean_psnr_selector
# Reference of each relation: values it must have, and the experiment columns it may differ in (None: all but
# study and scale, for the bicubic floor of the same scale).
REFERENCES = {
    "bicubic": ({"arch": "bicubic", "minority": "none"}, None),
    "balanced": ({"minority": "none"}, ("minority", "weight", "minority_mode")),
    "fp32": ({"wbits": "32", "abits": "32", "calib": "none"}, ("wbits", "abits", "calib", "qat_steps")),
}


# ---------------------------------------------------------------------------------------------------------
# Tables from per-race means (seeds pooled)


def seed_spread_rows(experiment):
    """Table 1 rows: per race, mean / min / max / delta (max - min) over seeds of each per-race metric.

    n_images sums the race's images over seeds (the n convention of racecomp.tables); n_seeds counts the
    seeds that evaluated the race.
    """
    rows = []
    for race in races_of([experiment]):
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


def usable_for_items(experiment, problems, purpose):
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
        and all(canonical(other.columns.get(c, "")) == canonical(v) for c, v in required.items())
        and all(canonical(other.columns.get(c, "")) == canonical(experiment.columns[c]) for c in must_match)
    ]
    if candidates:
        agreement = [sum(canonical(o.columns.get(c, "")) == canonical(experiment.columns.get(c, ""))
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
    fp32 = all(canonical(columns.get(c, "")) == canonical(v) for c, v in REFERENCES["fp32"][0].items())
    return [] if fp32 else ["fp32"]


def reference_comparisons(experiments, n_boot, seed, ci, problems):
    """{id(experiment): {relation: {"experiment": reference, "results": {metric: paired_test result}}}}."""
    comparisons = {}
    for experiment in experiments:
        for relation in _relations(experiment):
            reference = find_reference(experiment, experiments, relation, problems)
            if reference is None:
                continue
            if not (usable_for_items(experiment, problems, f"{relation} comparison")
                    and usable_for_items(reference, problems, f"{relation} comparison of [{experiment.label()}]")):
                continue
            results = {metric: compare(experiment, reference, metric, n_boot, seed, ci, problems)
                       for metric in ITEM_METRICS[experiment.kind]}
            comparisons.setdefault(id(experiment), {})[relation] = {"experiment": reference, "results": results}
    return comparisons

