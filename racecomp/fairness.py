"""Fairness statistics across race groups: summaries, per-race intervals, paired tests (pure numpy).

Conventions, here once for racecomp.estimates, racecomp.contrasts and racecomp.planner:
  - Values: (N,) one model's per-item metric, or (k, N) the same items scored by k seeds of one recipe.
    Summaries take the metric as higher-is-better and weight groups equally.
  - Levels: "recipe" (k >= 2) adds the seed-to-seed variance (crossed form) to the item-level one, with the
    seed part's df: a claim about the recipe. "model" (1 seed): about these trained models only.
  - Clusters: `clusters`, one id per item (an image, an identity); with `clusters2`, a pair's two identities,
    and pairs sharing either one are dependent (two-way). Within a group: an id in two groups is two clusters.
  - Intervals: t on cluster-robust se (df = effective clusters - 1), joined with bootstrap-t for continuous
    means without two-way clusters (n_boot draws, default_rng(seed)); Wilson for percentages; exact tests
    without spread. Across-group summaries are simultaneous (Bonferroni).
  - statistic "mean": the values' units; "percent": 0/1 values, reported x 100. Differences are a - b.
"""
import math

import numpy as np

from racecomp import estimates
from racecomp.estimates import (MODEL_DIFFERENCE, RECIPE_DIFFERENCE, STATISTICS, as_runs, group_labels, item_codes,
                                reported)

SUMMARY_KEYS = ("mean", "worst", "best", "gap", "ratio", "std", "ser")


def group_summary(values):
    """{SUMMARY_KEYS} of {group: value} (>= 2 groups): gap = max - min, ratio = min / max, std ddof 1, ser =
    (100 - min) / (100 - max) (accuracy in percent; inf when only the best is at 100, NaN when all are)."""
    if len(values) < 2:
        raise ValueError(f"a fairness summary needs at least two groups, got {list(values)}")
    per_group = np.asarray(list(values.values()), dtype=np.float64)
    if not np.all(np.isfinite(per_group)):
        raise ValueError(f"group values must be finite, got {values}")
    worst, best = per_group.min(), per_group.max()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio, ser = worst / best, (100.0 - worst) / (100.0 - best)
    return {key: float(value) for key, value in zip(SUMMARY_KEYS, (
        per_group.mean(), worst, best, best - worst, ratio, per_group.std(ddof=1), ser))}


def _check(statistic, n_boot, ci):
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {tuple(STATISTICS)}, got {statistic!r}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")


def _subset(codes, members):
    return None if codes is None else codes[members]


def _pairwise(labels, group_estimates, item_estimates, runs, column, statistic, alpha):
    """[{a, b, diff, lo, hi, p_value, df}]: Welch t of every pairwise difference, Bonferroni (1 - alpha / pairs)."""
    count = len(labels) * (len(labels) - 1) // 2
    pairs = []
    for r in range(len(labels)):
        for s in range(r + 1, len(labels)):
            components = [(item_estimates[c]["var"], item_estimates[c]["df"]) for c in (r, s)]
            seed_part = []
            if runs.shape[0] >= 2:
                members = (column == r) | (column == s)
                weights = np.where(column[members] == r, 1.0 / np.sum(column == r), -1.0 / np.sum(column == s))
                seed_part = [estimates.seed_component(runs[:, members], weights, column[members])]
            var, df = estimates.recipe_variance(components, seed_part)
            estimate = {"value": group_estimates[r]["value"] - group_estimates[s]["value"], "var": var, "df": df,
                        "kind": "t", "bounds": (-1.0, 1.0) if statistic == "percent" else None,
                        "units": (item_estimates[r]["units"][0], item_estimates[s]["units"][0])}
            lo, hi = estimates.interval(estimate, 1.0 - alpha / count)
            pairs.append({"a": labels[r], "b": labels[s], "diff": estimate["value"], "lo": lo, "hi": hi,
                          "p_value": estimates.p_value(estimate), "df": df})
    return pairs


def _box_summaries(pairs, n_groups):
    """(lo, hi) of gap and std implied by simultaneous intervals of every pairwise difference."""
    gap_lo, gap_hi, low_squares, high_squares = 0.0, 0.0, 0.0, 0.0
    for pair in pairs:
        lo, hi = pair["lo"], pair["hi"]
        gap_lo = max(gap_lo, lo, -hi)
        gap_hi = max(gap_hi, abs(lo), abs(hi))
        low_squares += 0.0 if lo <= 0.0 <= hi else min(lo * lo, hi * hi)
        high_squares += max(lo * lo, hi * hi)
    scale = n_groups * (n_groups - 1)  # sample variance (ddof 1) = sum over pairs of squared differences / scale
    return {"gap": (gap_lo, gap_hi), "std": (math.sqrt(low_squares / scale), math.sqrt(high_squares / scale))}


def _extreme_summaries(intervals, statistic):
    """(lo, hi) of worst, best, ratio and SER implied by simultaneous per-group intervals [(lo, hi)]."""
    lows, highs = np.array([i[0] for i in intervals]), np.array([i[1] for i in intervals])
    worst = (float(lows.min()), float(highs.min()))
    best = (float(lows.max()), float(highs.max()))
    result = {"worst": worst, "best": best, "ratio": (math.nan, math.nan), "ser": (math.nan, math.nan)}
    if best[0] > 0.0 and worst[0] >= 0.0:  # ratio worst / best rises with worst and falls with best; <= 1
        result["ratio"] = (min(1.0, worst[0] / best[1]), min(1.0, worst[1] / best[0]))
    if statistic == "percent":  # in fractions: SER = (1 - worst) / (1 - best)
        errors_worst = (max(0.0, 1.0 - worst[1]), max(0.0, 1.0 - worst[0]))
        errors_best = (max(0.0, 1.0 - best[1]), max(0.0, 1.0 - best[0]))
        with np.errstate(divide="ignore", invalid="ignore"):
            low = np.float64(errors_worst[0]) / np.float64(errors_best[1])
            high = np.float64(errors_worst[1]) / np.float64(errors_best[0])
        result["ser"] = (max(1.0, float(low)), max(1.0, float(high)))  # the worst group errs at least as often
    return result


def group_intervals(values, groups, statistic, clusters=None, clusters2=None, n_boot=1000, seed=0, ci=0.95):
    """Per-group means of (N,) or (k, N) values with (N,) group labels, and their across-group summary.

    Returns {"level": "recipe" | "model", "n_seeds": k, "groups": {label: {value, lo, hi, n (items), level, se,
    df, image_lo, image_hi, seed_sd (of the per-seed means; NaN: 1 seed)}}, "summary": {SUMMARY_KEYS: {value,
    lo, hi}} (simultaneous; std's value less the groups' noise; ser NaN unless percent), "pairs": _pairwise,
    "equal_means_p" (Bonferroni over pairs)}."""
    _check(statistic, n_boot, ci)
    runs = as_runs(values)
    k, n = runs.shape
    labels, column = group_labels(groups, n)
    first, second = item_codes(n, clusters, clusters2)
    if len(labels) < 2:
        raise ValueError(f"need at least two groups to compare, got {labels}")
    factor, alpha, level = STATISTICS[statistic], 1.0 - ci, "recipe" if k >= 2 else "model"
    rng = np.random.default_rng(seed)
    items = runs.mean(axis=0)
    item_estimates, group_estimates, result_groups = [], [], {}
    for c, label in enumerate(labels):
        members = column == c
        size = int(members.sum())
        item = estimates.item_estimate(items[members], _subset(first, members), _subset(second, members),
                                       statistic, (0.0, 1.0), n_boot, rng, n_cap=size * k)
        group = estimates.recipe_estimate(item, [estimates.seed_component(runs[:, members])]) if k >= 2 else item
        item_estimates.append(item)
        group_estimates.append(group)
        seed_sd = factor * float(np.std(runs[:, members].mean(axis=1), ddof=1)) if k >= 2 else math.nan
        result_groups[label] = {"value": factor * group["value"], **reported(group, item, ci, factor), "n": size,
                                "level": level, "seed_sd": seed_sd}
    pairs = _pairwise(labels, group_estimates, item_estimates, runs, column, statistic, alpha)
    points = np.array([e["value"] for e in group_estimates])
    point_summary = group_summary(dict(zip(labels, factor * points)))
    group_weights = 1.0 / (len(labels) * np.bincount(column).astype(np.float64))  # groups weighted equally
    mean_var, mean_df = estimates.recipe_variance(
        [(e["var"] / len(labels) ** 2, e["df"]) for e in item_estimates],
        [estimates.seed_component(runs, group_weights[column], column)] if k >= 2 else [])
    mean = {"value": float(points.mean()), "var": mean_var, "df": mean_df, "kind": "t",
            "bounds": (0.0, 1.0) if statistic == "percent" else None,
            "units": (sum(e["units"][0] for e in item_estimates),)}
    simultaneous = [estimates.interval(e, 1.0 - alpha / len(labels)) for e in group_estimates]
    bounds = {"mean": estimates.interval(mean, ci), **_box_summaries(pairs, len(labels)),
              **_extreme_summaries(simultaneous, statistic)}
    scales = {"ratio": 1.0, "ser": 1.0}  # ratios, not in the metric's units
    summary = {key: {"value": point_summary[key], "lo": scales.get(key, factor) * bounds[key][0],
                     "hi": scales.get(key, factor) * bounds[key][1]} for key in SUMMARY_KEYS}
    # The spread of the population race means: the sample STD less the noise of the race means it holds.
    noise = factor * factor * float(np.mean([e["var"] for e in group_estimates]))
    spread = math.sqrt(max(0.0, point_summary["std"] ** 2 - noise))
    summary["std"]["value"] = min(max(spread, summary["std"]["lo"]), summary["std"]["hi"])
    if statistic != "percent":
        summary["ser"] = {"value": math.nan, "lo": math.nan, "hi": math.nan}
    for pair in pairs:
        pair.update(diff=factor * pair["diff"], lo=factor * pair["lo"], hi=factor * pair["hi"])
    return {"level": level, "n_seeds": k, "groups": result_groups, "summary": summary, "pairs": pairs,
            "equal_means_p": float(min(1.0, len(pairs) * min(p["p_value"] for p in pairs)))}


def _paired_entry(runs_a, runs_b, first, second, strata, statistic, paired_seeds, reference_exact, n_boot, rng, ci):
    factor = STATISTICS[statistic]
    (k_a, n), k_b = runs_a.shape, runs_b.shape[0]
    item = estimates.item_estimate(runs_a.mean(axis=0) - runs_b.mean(axis=0), first, second, statistic, (-1.0, 1.0),
                                   n_boot, rng, n_cap=n)
    seeds_a, seeds_b = runs_a.mean(axis=1), runs_b.mean(axis=1)
    recipe = k_a >= 2 and (k_b >= 2 or reference_exact)
    headline, seed_sd_difference = item, math.nan
    if recipe and paired_seeds:  # seed s of A against seed s of B: the per-seed differences carry the seed variance
        headline = estimates.recipe_estimate(item, [estimates.seed_component(runs_a - runs_b, strata=strata)])
        seed_sd_difference = factor * float(np.std(seeds_a - seeds_b, ddof=1))
    elif recipe:
        headline = estimates.recipe_estimate(item, [estimates.seed_component(runs, strata=strata)
                                                    for runs in (runs_a, runs_b) if runs.shape[0] >= 2])
    return {"mean_diff": factor * item["value"], **reported(headline, item, ci, factor),
            "p_value": estimates.p_value(headline), "image_p_value": estimates.p_value(item), "n": int(n),
            "level": "recipe" if recipe else "model", "scope": RECIPE_DIFFERENCE if recipe else MODEL_DIFFERENCE,
            "n_seeds_a": int(k_a), "n_seeds_b": int(k_b),
            "seed_sd_a": factor * float(np.std(seeds_a, ddof=1)) if k_a >= 2 else math.nan,
            "seed_sd_b": factor * float(np.std(seeds_b, ddof=1)) if k_b >= 2 else math.nan,
            "seeds_paired": bool(paired_seeds and recipe), "seed_sd_difference": seed_sd_difference,
            "reference_exact": bool(reference_exact)}


def paired_test(a, b, groups=None, clusters=None, clusters2=None, statistic="mean", paired_seeds=False,
                reference_exact=False, n_boot=1000, seed=0, ci=0.95):
    """Mean of a - b on the same items, a: (k_a, N) or (N,), b: (k_b, N) or (N,), seed-averaged per item.

    Level "recipe" when k_a >= 2 and (k_b >= 2 or reference_exact: b needs no training, adds no seed variance).
    paired_seeds (k_a = k_b, by design, not by the data): row s of a and b share a seed.
    Returns {"overall": entry, "groups": {label: entry within the group, with p_holm}} (groups if (N,) groups);
    entry = {mean_diff, lo, hi, p_value, n, level, scope, se, df, image_lo, image_hi, image_p_value, n_seeds_a,
    n_seeds_b, seed_sd_a, seed_sd_b (of each side's per-seed means), seeds_paired, seed_sd_difference (of the
    per-seed differences when paired), reference_exact}; NaN where there is one seed."""
    _check(statistic, n_boot, ci)
    runs_a, runs_b = as_runs(a, "a"), as_runs(b, "b")
    if runs_a.shape[1] != runs_b.shape[1]:
        raise ValueError(f"paired values must cover the same items, got {runs_a.shape[1]} and {runs_b.shape[1]}")
    if paired_seeds and runs_a.shape[0] != runs_b.shape[0]:
        raise ValueError(f"paired seeds need as many seeds on both sides, got {runs_a.shape[0]} and {runs_b.shape[0]}")
    if reference_exact and runs_b.shape[0] >= 2 and estimates.seed_component(runs_b) is not None:
        raise ValueError("reference_exact: b's seeds differ item by item, so b involves training (seed variance)")
    n = runs_a.shape[1]
    first, second = item_codes(n, clusters, clusters2)
    rng = np.random.default_rng(seed)
    labels, column = ([], np.zeros(n, dtype=int)) if groups is None else group_labels(groups, n)

    def entry(members):  # seed effects may differ by group: the seed x item noise is taken within groups
        return _paired_entry(runs_a[:, members], runs_b[:, members], _subset(first, members),
                             _subset(second, members), column[members], statistic, paired_seeds, reference_exact,
                             n_boot, rng, ci)

    result = {"overall": entry(np.ones(n, dtype=bool))}
    if groups is not None:
        result["groups"] = {label: entry(column == c) for c, label in enumerate(labels)}
        for label, p in zip(labels, estimates.holm([result["groups"][label]["p_value"] for label in labels])):
            result["groups"][label]["p_holm"] = float(p)
    return result
