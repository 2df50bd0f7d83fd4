"""Fairness statistics across race groups: summaries, confidence intervals, paired tests, minority penalties.

Built on racecomp.estimates (one mean from dependent items, its variance and interval) and scipy.stats.

Pure numpy functions. Conventions used throughout:
  - Group summaries treat the metric as higher-is-better (accuracy, PSNR, SSIM) and weight groups equally.
  - Values are one model's per-item metric, shape (N,), or the same N items scored by k training runs (seeds)
    of one recipe, shape (k, N). With k >= 2 the intervals and p-values are at the recipe level: the
    seed-to-seed variance is added to the item-level one (t with the seed part's degrees of freedom). With k = 1
    they are about the trained model at hand: valid for "these models differ", not for "this recipe
    (e.g. under-sampling) has an effect", since training-run variance is not in them.
  - Items may be dependent. `clusters` gives one id per item (e.g. an image file, an identity); for
    verification pairs `clusters` and `clusters2` give the pair's two identities, and a pair is treated as
    dependent on every pair sharing either identity (two-way, dyadic-robust variance).
  - Intervals: Student t on cluster-robust standard errors, joined with a studentized (bootstrap-t)
    interval for means of continuous values when items are independent or one-way clustered; Wilson
    intervals for percentages. Across-group summaries (gap, std, worst, best, ratio, SER) are simultaneous
    (Bonferroni), so they cover at least at the nominal level. Bootstraps are seeded with numpy's
    default_rng, n_boot replicates (1000 by default).
  - Paired functions state the sign of their difference (paired_test: a - b; minority_penalty: under - balanced,
    negative when the model trained with the group under-sampled is worse on it).
"""
import math

import numpy as np
from scipy import stats

from racecomp import estimates


SUMMARY_KEYS = ("mean", "worst", "best", "gap", "ratio", "std", "ser")
STATISTICS = ("mean", "percent")
RECIPE_DIFFERENCE = "recipe difference (seed and item variance)"
MODEL_DIFFERENCE = "model difference (1 seed; not a recipe effect)"


# ---------------------------------------------------------------------------------------------------------
# Across-group summaries


def _summarize_rows(per_group):
    """Summary statistics of each row of a (R, G) array of per-group values; each entry is (R,)."""
    worst = per_group.min(axis=1)
    best = per_group.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = worst / best
        ser = (100.0 - worst) / (100.0 - best)
    return {
        "mean": per_group.mean(axis=1),
        "worst": worst,
        "best": best,
        "gap": best - worst,
        "ratio": ratio,
        "std": per_group.std(axis=1, ddof=1),
        "ser": ser,
    }


def group_summary(values):
    """Across-group summary of one metric given {group: value}, groups weighted equally.

    For a higher-is-better metric: mean (unweighted over groups), worst = min, best = max, gap = max - min
    (metric units), ratio = min / max, std = sample std over groups (ddof=1), and ser = skewed error ratio
    (100 - min) / (100 - max). SER is only meaningful for accuracies in PERCENT (0-100): for fractions or
    PSNR it is a meaningless number. SER is +inf when the best group is at 100 and the worst is not, NaN
    when every group is at 100 (no errors anywhere to compare). Needs at least two groups.
    """
    if len(values) < 2:
        raise ValueError(f"a fairness summary needs at least two groups, got {list(values)}")
    per_group = np.asarray([list(values.values())], dtype=np.float64)
    if not np.all(np.isfinite(per_group)):
        raise ValueError(f"group values must be finite, got {values}")
    return {key: float(column[0]) for key, column in _summarize_rows(per_group).items()}


# ---------------------------------------------------------------------------------------------------------
# Inputs


def _as_runs(values, name="values"):
    """(k, N) float array of per-run (seed) per-item values: a 1-D input is one run."""
    runs = np.asarray(values, dtype=np.float64)
    if runs.ndim == 1:
        runs = runs[None, :]
    if runs.ndim != 2 or runs.size == 0:
        raise ValueError(f"{name} must be a non-empty (N,) or (seeds, N) array, got shape {runs.shape}")
    if not np.all(np.isfinite(runs)):
        raise ValueError(f"{name} contain NaN or inf (e.g. PSNR of an identical pair): filter or cap them first")
    return runs


def _codes(labels):
    return np.unique(labels, return_inverse=True)[1].reshape(-1)


def _item_codes(n, clusters, clusters2):
    """Integer cluster codes of the N items: (None, None) independent items, (codes, None) one-way clusters,
    (first, second) two identities per item in one shared id space."""
    if clusters is None:
        if clusters2 is not None:
            raise ValueError("clusters2 (second identity) needs clusters (first identity)")
        return None, None
    columns = [np.asarray(clusters)] + ([] if clusters2 is None else [np.asarray(clusters2)])
    for name, column in zip(("clusters", "clusters2"), columns):
        if column.shape != (n,):
            raise ValueError(f"{name} has shape {column.shape} for {n} items: one entry per item")
    if clusters2 is None:
        return _codes(columns[0]), None
    try:
        both = _codes(np.concatenate(columns))
    except TypeError:  # ids of mixed types: compare them as text
        both = _codes(np.concatenate([column.astype(str) for column in columns]))
    return both[:n], both[n:]


def _check_resampling(n_boot, ci):
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")


def _group_labels(groups):
    """Distinct group labels in sorted order as plain Python values (JSON-friendly keys), and each row's column."""
    unique, column = np.unique(groups, return_inverse=True)
    return [label.item() if isinstance(label, np.generic) else label for label in unique], column.reshape(-1)


# ---------------------------------------------------------------------------------------------------------
# Per-group intervals and the across-group summary


def _pairwise(labels, group_estimates, item_estimates, runs, column, statistic, alpha):
    """Every pairwise difference of group means: Welch-Satterthwaite t test and Bonferroni-simultaneous
    interval (each at 1 - alpha / pairs), with the seed-to-seed variance of the per-seed difference when
    there are several seeds (seed_component of the two groups' items, weights +-1 / n per group)."""
    count = len(labels) * (len(labels) - 1) // 2
    bounds = (-1.0, 1.0) if statistic == "percent" else None
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
                        "kind": "t", "bounds": bounds,
                        "units": (item_estimates[r]["units"][0], item_estimates[s]["units"][0])}
            lo, hi = estimates.interval(estimate, 1.0 - alpha / count)
            pairs.append({"a": labels[r], "b": labels[s], "diff": estimate["value"], "lo": lo, "hi": hi,
                          "p_value": estimates.p_value(estimate), "df": df})
    return pairs


def _box_summaries(pairs, n_groups):
    """Intervals of gap and std implied by simultaneous intervals of every pairwise difference."""
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
    """Intervals of worst, best, ratio and SER implied by simultaneous per-group intervals [(lo, hi)]."""
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
    """Per-group mean of per-item values and the across-group summary, with confidence intervals.

    values: (N,) per-item metric of one model, or (k, N) the same items scored by k seeds of one recipe
    (per-image PSNR, or the 0/1 `correct` of `metrics.kfold_accuracy` for verification pairs: its
    thresholds stay fixed). groups: (N,) labels. statistic: "mean" (values' units) or "percent" (100 x
    mean of 0/1 values: gap in percentage points, `ser` meaningful). clusters: optional (N,) item ids (e.g.
    identities); clusters2: optional (N,) second identity of a pair (two-way clustering, see
    `mean_variance`; a cluster id appearing in two groups is one cluster in each).

    Each group's value is the mean over items of the seed-averaged values. Its interval:
      - item level (always given as image_lo / image_hi; the headline with one seed): Wilson for percent
        (effective size from the cluster-robust variance); for means, Student t on the cluster-robust
        standard error with df = effective clusters - 1, joined (union) with the bootstrap-t interval when
        items are independent or one-way clustered. Claims: the mean over the population of items of these
        trained models. It ignores training-run variance.
      - recipe level (headline with k >= 2 seeds): t interval whose variance adds the seed-to-seed variance
        of the per-seed group means / k to the item-level one (df k - 1, see recipe_variance). Claims: the
        mean of the recipe over training runs and items, assuming normal seed-to-seed variation.
    Summary: mean over groups (t interval), and intervals that are simultaneous over groups (so that they
    hold near ties, where max - min of noisy means is biased upward). std is the spread of the population group
    means: sqrt(max(0, s^2 - mean over groups of the variance of the group's value)), s the sample STD of the
    group values (which the groups' sampling noise inflates: equal groups would get the noise's spread), kept
    within its interval. Gap and std intervals come from Bonferroni intervals
    of every pairwise difference (each at 1 - (1 - ci) / pairs), worst / best / ratio / ser from per-group
    intervals at 1 - (1 - ci) / groups. They cover at least at `ci` (conservative); gap's lower bound
    is 0 when no pair is separated. ser is NaN unless statistic="percent".
    equal_means_p tests "every group has the same mean" allowing unequal variances: Bonferroni over the
    pairwise Welch-Satterthwaite t tests (= min(1, pairs x smallest pairwise p)); it is below 1 - ci exactly
    when the gap's lower bound is above 0.

    Returns {"level": "recipe" | "model", "n_seeds": k,
             "groups": {label: {value, lo, hi, n, level, se, df, image_lo, image_hi, seed_sd}},
             "summary": {stat: {value, lo, hi}}, "pairs": [{a, b, diff, lo, hi, p_value, df}],
             "equal_means_p"}; n = items in the group, seed_sd = sd over seeds of the per-seed group mean
    (NaN with one seed), se = standard error of the headline value.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    _check_resampling(n_boot, ci)
    runs = _as_runs(values)
    k, n = runs.shape
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups has shape {groups.shape} for {n} items: one label per item")
    first, second = _item_codes(n, clusters, clusters2)
    labels, column = _group_labels(groups)
    if len(labels) < 2:
        raise ValueError(f"need at least two groups to compare, got {labels}")
    factor = 100.0 if statistic == "percent" else 1.0
    alpha = 1.0 - ci
    rng = np.random.default_rng(seed)
    items = runs.mean(axis=0)
    seed_means = np.empty((k, len(labels)))  # (seed, group)
    item_estimates, group_estimates, sizes = [], [], []
    for c in range(len(labels)):
        members = column == c
        sizes.append(int(members.sum()))
        item_estimate = estimates.item_estimate(items[members], None if first is None else first[members],
                                                None if second is None else second[members], statistic, (0.0, 1.0),
                                                n_boot, rng, n_cap=sizes[-1] * k)
        seed_means[:, c] = runs[:, members].mean(axis=1)
        item_estimates.append(item_estimate)
        group_estimates.append(estimates.recipe_estimate(item_estimate, [estimates.seed_component(runs[:, members])])
                               if k >= 2 else item_estimate)
    level = "recipe" if k >= 2 else "model"
    result_groups = {}
    for c, label in enumerate(labels):
        lo, hi = estimates.interval(group_estimates[c], ci)
        image_lo, image_hi = estimates.interval(item_estimates[c], ci)
        result_groups[label] = {
            "value": factor * group_estimates[c]["value"], "lo": factor * lo, "hi": factor * hi, "n": sizes[c],
            "level": level, "se": factor * math.sqrt(group_estimates[c]["var"]), "df": group_estimates[c]["df"],
            "image_lo": factor * image_lo, "image_hi": factor * image_hi,
            "seed_sd": factor * float(np.std(seed_means[:, c], ddof=1)) if k >= 2 else math.nan}
    pairs = _pairwise(labels, group_estimates, item_estimates, runs, column, statistic, alpha)
    points = np.array([[e["value"] for e in group_estimates]])
    point_summary = {key: float(column[0]) for key, column in _summarize_rows(factor * points).items()}
    group_weights = 1.0 / (len(labels) * np.bincount(column).astype(np.float64))  # groups weighted equally
    mean_var, mean_df = estimates.recipe_variance(
        [(e["var"] / len(labels) ** 2, e["df"]) for e in item_estimates],
        [estimates.seed_component(runs, group_weights[column], column)] if k >= 2 else [])
    mean_lo, mean_hi = estimates.interval({"value": float(points.mean()), "var": mean_var, "df": mean_df, "kind": "t",
                                           "bounds": (0.0, 1.0) if statistic == "percent" else None,
                                           "units": (sum(e["units"][0] for e in item_estimates),)}, ci)
    simultaneous = [estimates.interval(e, 1.0 - alpha / len(labels)) for e in group_estimates]
    bounds = {"mean": (mean_lo, mean_hi), **_box_summaries(pairs, len(labels)),
              **_extreme_summaries(simultaneous, statistic)}
    summary = {}
    for key in SUMMARY_KEYS:
        scale = 1.0 if key in ("ratio", "ser") else factor
        summary[key] = {"value": point_summary[key], "lo": scale * bounds[key][0], "hi": scale * bounds[key][1]}
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


# ---------------------------------------------------------------------------------------------------------
# Paired comparisons


def _paired_entry(runs_a, runs_b, first, second, strata, statistic, paired_seeds, reference_exact, n_boot, rng, ci):
    factor = 100.0 if statistic == "percent" else 1.0
    (k_a, n), k_b = runs_a.shape, runs_b.shape[0]
    differences = runs_a.mean(axis=0) - runs_b.mean(axis=0)
    item = estimates.item_estimate(differences, first, second, statistic, (-1.0, 1.0), n_boot, rng, n_cap=n)
    seeds_a, seeds_b = runs_a.mean(axis=1), runs_b.mean(axis=1)
    seed_sd_difference = math.nan
    if k_a >= 2 and (k_b >= 2 or reference_exact):
        if paired_seeds:  # seed s of A against seed s of B: the per-seed differences carry the seed variance
            components = [estimates.seed_component(runs_a - runs_b, strata=strata)]
            seed_sd_difference = factor * float(np.std(seeds_a - seeds_b, ddof=1))
        else:
            components = [estimates.seed_component(runs_a, strata=strata)]
            components += [estimates.seed_component(runs_b, strata=strata)] if k_b >= 2 else []
        headline = estimates.recipe_estimate(item, components)
        level, scope = "recipe", RECIPE_DIFFERENCE
    else:
        headline, level, scope = item, "model", MODEL_DIFFERENCE
    lo, hi = estimates.interval(headline, ci)
    image_lo, image_hi = estimates.interval(item, ci)
    return {"mean_diff": factor * item["value"], "lo": factor * lo, "hi": factor * hi,
            "p_value": estimates.p_value(headline), "n": int(n), "level": level, "scope": scope,
            "se": factor * math.sqrt(headline["var"]),
            "df": headline["df"], "image_lo": factor * image_lo, "image_hi": factor * image_hi,
            "image_p_value": estimates.p_value(item), "n_seeds_a": int(k_a), "n_seeds_b": int(k_b),
            "seed_sd_a": factor * float(np.std(seeds_a, ddof=1)) if k_a >= 2 else math.nan,
            "seed_sd_b": factor * float(np.std(seeds_b, ddof=1)) if k_b >= 2 else math.nan,
            "seeds_paired": bool(paired_seeds and level == "recipe"), "seed_sd_difference": seed_sd_difference,
            "reference_exact": bool(reference_exact)}


def paired_test(a, b, groups=None, clusters=None, clusters2=None, statistic="mean", paired_seeds=False,
                reference_exact=False, n_boot=1000, seed=0, ci=0.95):
    """Model (or recipe) A vs B on the same items: mean of a - b with a CI and a two-sided p-value.

    a: (N,) or (k_a, N) per-item metric, one row per seed; b: (N,) or (k_b, N); column i is the same image
    (or pair) everywhere. statistic "percent": 0/1 values, differences reported in percentage points.
    clusters / clusters2: as in `group_intervals`. Items are averaged over each side's seeds first.
      - Item level (image_lo, image_hi, image_p_value; the headline when a side with training has one seed,
        level "model", scope MODEL_DIFFERENCE): Student t on the cluster-robust standard error of the mean
        difference, joined with the bootstrap-t interval (p = the larger of the two p-values: below 1 - ci
        exactly when the joined interval excludes 0) for continuous values without two-way clustering and
        with >= 15 clusters. No symmetry of the differences is assumed (a sign-flip test assumes it and rejects skewed zero-mean
        differences too often); the t part assumes an approximately normal mean, the bootstrap-t part
        corrects for skewness. Differences with no spread at all get the exact sign test's claims
        (estimates.exact_p: p = 2^(1 - n), the interval the value itself only if that p is below 1 - ci).
        Valid for "these trained models differ on items like these", not for a recipe.
      - Recipe level (headline when a has >= 2 seeds and b has >= 2 or is `reference_exact`, level "recipe",
        scope RECIPE_DIFFERENCE): t interval whose variance adds to the item-level variance the seed-to-seed
        variance (estimates.seed_component, crossed form: the item-by-seed noise is counted once): of each
        side's per-seed mean / k (Welch-type), or with paired_seeds=True (row s of a and of b are one seed,
        e.g. the same initialization; needs k_a = k_b) of the per-seed differences / k; df of that seed part
        (k - 1 paired, Welch-Satterthwaite unpaired; see recipe_variance), even when the seed means tie. Both
        are valid whether or not paired seeds are correlated; the choice must follow the design, not the
        data. Assumes normal seed-to-seed variation (with 2-3 seeds nothing else can be checked).
        reference_exact=True: b involves no training (the bicubic floor) and is known exactly: it adds no
        seed variance, so a recipe with >= 2 seeds is compared with it at the recipe level (b's rows, if
        several, must be identical item by item).
    Returns {"overall": entry} plus, when `groups` (N,) is given, "groups": {label: entry computed within
    that group only, with p_holm = Holm-adjusted p over the groups}; entry = {mean_diff, lo, hi, p_value, n,
    level, scope, se, df, image_lo, image_hi, image_p_value, n_seeds_a, n_seeds_b, seed_sd_a, seed_sd_b,
    seeds_paired, seed_sd_difference, reference_exact} (seed_sd_*: sd over seeds of that side's per-seed mean,
    NaN with one seed; seed_sd_difference: of the per-seed differences when seeds are paired, else NaN).
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    _check_resampling(n_boot, ci)
    runs_a, runs_b = _as_runs(a, "a"), _as_runs(b, "b")
    if runs_a.shape[1] != runs_b.shape[1]:
        raise ValueError(f"paired values must cover the same items, got {runs_a.shape[1]} and {runs_b.shape[1]}")
    if paired_seeds and runs_a.shape[0] != runs_b.shape[0]:
        raise ValueError(f"paired seeds need as many seeds on both sides, got {runs_a.shape[0]} and {runs_b.shape[0]}")
    if reference_exact and runs_b.shape[0] >= 2 and estimates.seed_component(runs_b) is not None:
        raise ValueError("reference_exact: b's seeds differ item by item, so b involves training (seed variance)")
    n = runs_a.shape[1]
    first, second = _item_codes(n, clusters, clusters2)
    rng = np.random.default_rng(seed)
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise ValueError(f"groups has shape {groups.shape} for {n} items: one label per item")
        labels, column = _group_labels(groups)
    else:
        labels, column = [], np.zeros(n, dtype=int)

    def entry(members):  # seed effects may differ by group: the seed x item noise is taken within groups
        return _paired_entry(runs_a[:, members], runs_b[:, members], None if first is None else first[members],
                             None if second is None else second[members], column[members], statistic, paired_seeds,
                             reference_exact, n_boot, rng, ci)

    result = {"overall": entry(np.ones(n, dtype=bool))}
    if groups is not None:
        result["groups"] = {label: entry(column == c) for c, label in enumerate(labels)}
        adjusted = estimates.holm([result["groups"][label]["p_value"] for label in labels])
        for label, p in zip(labels, adjusted):
            result["groups"][label]["p_holm"] = float(p)
    return result


def minority_penalty(metric_under, metric_balanced, keys_under, keys_balanced, groups, paired_seeds=False,
                     n_boot=1000, seed=0, ci=0.95):
    """Per-group minority penalty: mean of (under - balanced) per image, with CI and p-value.

    metric_under / keys_under: per-image metric (higher is better, e.g. PSNR in dB) of the model trained on
    the under-sampled set, (N,) or (seeds, N), and the image keys; metric_balanced / keys_balanced: the
    same for the model trained on the balanced set, in any order. groups: (N,) group labels aligned with
    keys_under. Images are paired by key; the key sets must match exactly (ValueError otherwise). A negative
    penalty means the under-sampled model is worse on that group (the issue's definition: metric(r | r
    under-sampled) minus metric(r | balanced run)).
    With one seed on either side this is a model difference (scope MODEL_DIFFERENCE), not evidence that
    under-sampling costs the group; with >= 2 seeds on both sides it is at the recipe level (`paired_test`,
    paired_seeds as there).
    Returns {label: {penalty, lo, hi, p_value, p_holm, n, level, scope, image_lo, image_hi, seed_sd_under,
    seed_sd_balanced}}.
    """
    keys_under = list(keys_under)
    keys_balanced = list(keys_balanced)
    under = _as_runs(metric_under, "metric_under")
    balanced = _as_runs(metric_balanced, "metric_balanced")
    for name, keys, metric in (("under", keys_under, under), ("balanced", keys_balanced, balanced)):
        if len(set(keys)) != len(keys):
            raise ValueError(f"keys_{name} contains duplicate keys")
        if len(keys) != metric.shape[1]:
            raise ValueError(f"keys_{name} has {len(keys)} keys but metric_{name} has {metric.shape[1]} values")
    if set(keys_under) != set(keys_balanced):
        missing = sorted(map(str, set(keys_under) ^ set(keys_balanced)))
        raise ValueError(f"keys differ between the two runs ({len(missing)} unmatched, e.g. {missing[:3]})")
    position = {key: row for row, key in enumerate(keys_balanced)}
    balanced_aligned = balanced[:, [position[key] for key in keys_under]]
    if len(groups) != len(keys_under):
        raise ValueError(f"groups has {len(groups)} labels for {len(keys_under)} keys")
    result = paired_test(under, balanced_aligned, groups=groups, paired_seeds=paired_seeds, n_boot=n_boot, seed=seed,
                         ci=ci)
    return {
        label: {"penalty": entry["mean_diff"], "lo": entry["lo"], "hi": entry["hi"], "p_value": entry["p_value"],
                "p_holm": entry["p_holm"], "n": entry["n"], "level": entry["level"], "scope": entry["scope"],
                "image_lo": entry["image_lo"], "image_hi": entry["image_hi"],
                "seed_sd_under": entry["seed_sd_a"], "seed_sd_balanced": entry["seed_sd_b"]}
        for label, entry in result["groups"].items()
    }


# ---------------------------------------------------------------------------------------------------------
# Contrasts between experiments: linear combinations of per-race means of several experiments (cells) on the
# same items, and changes of a fairness summary (delta method)


def _cell_runs(cells):
    runs = [_as_runs(cell, f"cell {index}") for index, cell in enumerate(cells)]
    if len({r.shape[1] for r in runs}) != 1:
        raise ValueError(f"every cell must cover the same items, got {[r.shape[1] for r in runs]}")
    return runs


def _contrast_variance(runs, weights, column, first, second, exact, paired_seeds):
    """Item part, seed parts and the planning inputs of sum_j weights_j . (seed mean of cell j)."""
    z = sum(w * r.mean(axis=0) for w, r in zip(weights, runs))  # (N,) each item's share of the contrast
    components, units = [], 0.0
    weighted = np.bincount(column, weights=sum(np.abs(w) for w in weights)) > 0
    for c in np.flatnonzero(weighted):
        members = column == c
        n_c = int(members.sum())
        var, df = estimates.mean_variance(z[members], None if first is None else first[members],
                                          None if second is None else second[members])
        components.append((n_c * n_c * var, df))
        units += n_c if first is None else df + 1.0
    trained = [j for j in range(len(runs)) if not exact[j]]
    recipe = bool(trained) and all(runs[j].shape[0] >= 2 for j in trained)
    seed_parts = []
    if recipe and paired_seeds:
        per_seed = sum(w * r for w, r in zip(weights, runs))  # exact cells broadcast: they cancel seed to seed
        seed_parts = [(per_seed, np.ones(len(z)))]
    elif recipe:
        seed_parts = [(runs[j], weights[j]) for j in trained]
    return z, components, units, recipe, seed_parts


def linear_contrast(cells, weights, strata, clusters=None, clusters2=None, exact=None, paired_seeds=False,
                    statistic="mean", ci=0.95, value=None):
    """Estimate of sum over cells j and items i of weights[j][i] x (mean over cell j's seeds of item i), with a CI.

    cells: (k_j, N) per-seed per-item values of each experiment, the same N items in the same order (paired
    per item: the item effects cancel in differences); weights: (N,) per cell, constant within each stratum
    (race) in every use here, e.g. +-1 / n_r on race r's items for a difference of race means; strata: (N,)
    race labels (items of different races are independent strata); clusters / clusters2: as in
    group_intervals; exact: per cell, True for an experiment involving no training (known exactly, no seed
    variance: the bicubic floor). paired_seeds: every trained cell has the same seeds in the same rows.
      - level "recipe" when every trained cell has >= 2 seeds: item part (cluster-robust variance of the
        items' shares, summed over strata) plus each trained cell's seed part (estimates.seed_component with
        the cell's weights, crossed form), or of the per-seed contrast when seeds are paired; t with the
        seed parts' Welch-Satterthwaite df (estimates.recipe_variance). Claims: the recipes' contrast over
        training runs and items.
      - level "model" otherwise: item part only, df by Satterthwaite over strata: these trained models.
    value: for a nonlinear estimate (summary_change) whose linearization this is, the plug-in value (in the
    weights' units) reported instead of the linear one. No bootstrap-t (t only).
    Returns {value, lo, hi, p_value, se, df, level, scope, image_lo, image_hi, image_se, image_df, n_seeds,
    planning} with image_* the item part alone and planning the inputs of seeds_for_power.
    """
    runs = _cell_runs(cells)
    n = runs[0].shape[1]
    exact = [False] * len(runs) if exact is None else list(exact)
    weights = [np.asarray(w, dtype=np.float64) for w in weights]
    if len(weights) != len(runs) or any(w.shape != (n,) for w in weights):
        raise ValueError("one (N,) weight vector per cell")
    strata = np.asarray(strata)
    if strata.shape != (n,):
        raise ValueError(f"strata has shape {strata.shape} for {n} items")
    for j, flag in enumerate(exact):
        if flag and runs[j].shape[0] >= 2 and estimates.seed_component(runs[j]) is not None:
            raise ValueError(f"cell {j} is marked exact but its seeds differ item by item")
    if paired_seeds and len({runs[j].shape[0] for j in range(len(runs)) if not exact[j]}) > 1:
        raise ValueError("paired seeds need as many seeds in every trained cell")
    first, second = _item_codes(n, clusters, clusters2)
    _, column = _group_labels(strata)
    return _contrast(runs, weights, column, first, second, exact, paired_seeds, statistic, ci, value)


def _contrast(runs, weights, column, first, second, exact, paired_seeds, statistic, ci, value=None):
    """linear_contrast on checked inputs: runs (k_j, N), weights (N,) per cell, column the strata's codes."""
    z, components, units, recipe, seed_parts = _contrast_variance(runs, weights, column, first, second, exact,
                                                                  paired_seeds)
    item_var, item_df = estimates.combine(components)
    if not components:
        item_var, item_df = 0.0, math.inf
    linear = float(z.sum())
    item = {"value": linear if value is None else value, "var": item_var, "df": item_df, "kind": "t",
            "bounds": None, "units": (units,)}
    parts = [estimates.seed_parts(r, w, column) for r, w in seed_parts]
    seed_components = [estimates.component_of(r, part) for (r, _), part in zip(seed_parts, parts)]
    headline = estimates.recipe_estimate(item, seed_components) if recipe else item
    factor = 100.0 if statistic == "percent" else 1.0
    lo, hi = estimates.interval(headline, ci)
    image_lo, image_hi = estimates.interval(item, ci)
    planning = {"item_var": item_var, "seed_parts": parts, "factor": factor}
    return {"value": factor * headline["value"], "lo": factor * lo, "hi": factor * hi,
            "p_value": estimates.p_value(headline), "se": factor * math.sqrt(headline["var"]), "df": headline["df"],
            "level": "recipe" if recipe else "model", "scope": RECIPE_DIFFERENCE if recipe else MODEL_DIFFERENCE,
            "image_lo": factor * image_lo, "image_hi": factor * image_hi,
            "image_se": factor * math.sqrt(item_var), "image_df": item_df,
            "n_seeds": [int(r.shape[0]) for r in runs], "planning": planning}


def _race_weights(column, gradient, counts):
    """(N,) item weights of a linear combination sum_r gradient_r x (race r's mean)."""
    return np.asarray(gradient, dtype=np.float64)[column] / counts[column]


def summary_gradient(means, key, statistic="mean"):
    """(value, gradient over groups) of a fairness summary of per-group means (fractions for percent).

    mean, worst, best, gap, std as in group_summary; ser = (1 - worst) / (1 - best) (percent only).
    worst / best / gap / ser are linearized at the observed worst and best groups, as if which group is worst
    were known: summary_change's intervals of worst and gap do not rely on it (SER's does), but its seed plans
    (seeds_for_power) do, so near ties those are optimistic.
    """
    means = np.asarray(means, dtype=np.float64)
    g = len(means)
    worst, best = int(np.argmin(means)), int(np.argmax(means))
    gradient = np.zeros(g)
    if key == "mean":
        gradient[:] = 1.0 / g
        return float(means.mean()), gradient
    if key == "worst":
        gradient[worst] = 1.0
        return float(means[worst]), gradient
    if key == "best":
        gradient[best] = 1.0
        return float(means[best]), gradient
    if key == "gap":
        gradient[best], gradient[worst] = 1.0, -1.0
        return float(means[best] - means[worst]), gradient
    if key == "std":
        sd = float(means.std(ddof=1))
        if sd > 0:
            gradient = (means - means.mean()) / ((g - 1) * sd)
        return sd, gradient
    if key == "ser":
        if statistic != "percent":
            raise ValueError("SER is for accuracies (statistic 'percent')")
        errors_worst, errors_best = 1.0 - means[worst], 1.0 - means[best]
        if errors_best <= 0:
            return math.inf, gradient
        gradient[worst] = -1.0 / errors_best
        gradient[best] = errors_worst / errors_best ** 2
        return float(errors_worst / errors_best), gradient
    raise ValueError(f"unknown summary {key!r}")


SUMMARY_CHANGE_KEYS = ("mean", "worst", "gap", "std", "ser")


def summary_change(a, b, strata, key, clusters=None, clusters2=None, exact=(False, False), paired_seeds=False,
                   statistic="mean", relative=False, ci=0.95):
    """Change of a fairness summary across races between experiment A and B on the same items: f(A) - f(B), or
    f(A) / f(B) - 1 with relative=True (worst and mean only), paired per item, each experiment's seed variance
    included at the recipe level (every piece below is a linear_contrast of per-race means).

    a, b: (k, N) per-seed per-item values; strata: (N,) races. Units: the metric's (percentage points for
    percent, except ser and relative changes, which are ratios). What is estimated is a summary of the
    population per-race means (over items, and over training runs at the recipe level), not of the noisy
    sample means:
      - mean (and ser, linearized at the observed worst and best races: near ties it is optimistic);
      - worst and gap: bounds that hold whichever race is worst or best (extreme_change_bounds), so they keep
        their level when races tie; the p-value is the smallest level at which the interval excludes 0;
      - std: the change of the noise-corrected spread (spread_change), a and b each side's noise-corrected STD.
    Also returns "ties": whether the worst (or best) race used by worst/gap/ser is not separated from the
    runner-up in A or B by more than 2 standard errors of their difference (item level).
    """
    runs_a, runs_b = _cell_runs([a, b])
    strata = np.asarray(strata)
    _, column = _group_labels(strata)
    counts = np.bincount(column).astype(np.float64)
    means_a = np.bincount(column, weights=runs_a.mean(axis=0)) / counts
    means_b = np.bincount(column, weights=runs_b.mean(axis=0)) / counts
    if relative and key not in ("mean", "worst"):
        raise ValueError(f"relative changes are for mean and worst, not {key!r}")
    value_a, gradient_a = summary_gradient(means_a, key, statistic)
    value_b, gradient_b = summary_gradient(means_b, key, statistic)
    ratio_key = key == "ser" or relative
    if relative:
        if value_b == 0 or not math.isfinite(value_b) or not math.isfinite(value_a):
            raise ValueError(f"no relative change of {key} from {value_b}")
        value = value_a / value_b - 1.0
        gradient_a, gradient_b = gradient_a / value_b, gradient_b * value_a / value_b ** 2
    else:
        value = value_a - value_b
    if not math.isfinite(value):  # SER with a race at 100%: no errors to divide by
        raise ValueError(f"{key} is not finite ({value_a} vs {value_b})")

    # The linearized contrast (checks the inputs), centred on the plug-in value (SER is not linear in the race
    # means): the answer for mean and ser; level, scope and the planner's inputs for all.
    result = linear_contrast([runs_a, runs_b], [_race_weights(column, gradient_a, counts),
                                                -_race_weights(column, gradient_b, counts)], strata, clusters,
                             clusters2, exact, paired_seeds, ci=ci, value=value)
    first, second = _item_codes(len(column), clusters, clusters2)

    def race_contrast(race_gradient_a, race_gradient_b):  # sum_r g_a,r (A's race r mean) + g_b,r (B's)
        return _contrast([runs_a, runs_b], [_race_weights(column, race_gradient_a, counts),
                                            _race_weights(column, race_gradient_b, counts)], column, first, second,
                         list(exact), paired_seeds, "mean", ci)

    factor = 1.0 if ratio_key else (100.0 if statistic == "percent" else 1.0)
    for name in ("lo", "hi", "image_lo", "image_hi", "se", "image_se"):
        result[name] *= factor
    result["planning"]["factor"] = factor
    if key in ("worst", "gap"):
        answer = extreme_change_bounds(means_a, means_b, race_contrast, key, ci)
        if relative:  # the denominator's own error is second order (a few % of the mean: PSNR, accuracy)
            for level in ("", "image_"):
                answer[f"{level}lo"], answer[f"{level}hi"] = sorted((answer[f"{level}lo"] / value_b,
                                                                     answer[f"{level}hi"] / value_b))
    elif key == "std":
        answer, value_a, value_b = spread_change(means_a, means_b, race_contrast, ci)
        value = value_a - value_b
    else:
        answer = {}
    result.update({name: factor * v if name != "p_value" else v for name, v in answer.items()})
    result.update(value=factor * min(max(value, answer.get("lo", -math.inf)), answer.get("hi", math.inf)),
                  a=factor * value_a, b=factor * value_b,
                  ties=_close_extremes(key, means_a, means_b, runs_a, runs_b, column, counts))
    if statistic == "percent" and not ratio_key:  # a change of percentages lies in [-100, 100] points: the bounds
        for name in ("lo", "image_lo"):         # over every race at 2-3 seeds can reach far past it
            result[name] = max(result[name], -100.0)
        for name in ("hi", "image_hi"):
            result[name] = min(result[name], 100.0)
    return result


def _levels(contrasts):
    """{level: (values, se, df)} of linear_contrast results (arrays shaped like the list): "" the headline,
    "image_" the item part alone."""
    values = np.array([c["value"] for c in contrasts], dtype=np.float64)
    return {level: (values, np.array([c[f"{level}se"] for c in contrasts], dtype=np.float64),
                    np.array([c[f"{level}df"] for c in contrasts], dtype=np.float64)) for level in ("", "image_")}


def extreme_change_bounds(means_a, means_b, race_contrast, key, ci):
    """Interval and p-value of the change of the worst race's value (min over races) or of the gap (max - min)
    between A and B, valid whichever race is worst or best, so that ties do not make it optimistic.

    With c_rs = A's race r - B's race s and r0, s0 the true worst races: c_{r0 s} <= worst change for every s,
    and worst change <= c_{r s0} for every r, so it lies in [min_r max_s lo_rs, max_s min_r hi_rs]; the best
    race's change likewise in [min_s max_r lo_rs, max_r min_s hi_rs], and the gap's in [best lo - worst hi,
    best hi - worst lo]. Each bound uses G one-sided statements (row r0 or column s0, fixed though unknown):
    each c_rs is bounded at one-sided level alpha / (2G) (worst) or alpha / (4G) (gap) with its own t (Bonferroni).
    When the extremes are separated this is the direct contrast at that stricter level. p-value: the smallest
    alpha at which the interval excludes 0 (bisection). race_contrast(g_a, g_b) -> linear_contrast result.
    Returns {lo, hi, p_value, image_lo, image_hi} in fractions for percentages.
    """
    g = len(means_a)
    eye = np.eye(g)
    contrasts = [race_contrast(eye[r], -eye[s]) for r in range(g) for s in range(g)]
    statements = 2 * g if key == "worst" else 4 * g

    def bounds(values, se, df, alpha):
        with np.errstate(invalid="ignore"):  # 0 x inf where a contrast has no spread
            half = np.where(se == 0.0, 0.0, stats.t.ppf(1.0 - alpha / statements, df) * se)
        lo, hi = (values - half).reshape(g, g), (values + half).reshape(g, g)
        worst = (lo.max(axis=1).min(), hi.min(axis=0).max())
        if key == "worst":
            return worst
        best = (lo.max(axis=0).min(), hi.min(axis=1).max())
        return best[0] - worst[1], best[1] - worst[0]

    def excludes_zero(arrays, alpha):
        lo, hi = bounds(*arrays, alpha)
        return lo > 0.0 or hi < 0.0

    answer = {}
    for level, arrays in _levels(contrasts).items():
        answer[f"{level}lo"], answer[f"{level}hi"] = (float(v) for v in bounds(*arrays, 1.0 - ci))
        if level == "":
            answer["p_value"] = _smallest_excluding_level(lambda alpha: excludes_zero(arrays, alpha))
    return answer


def _smallest_excluding_level(excludes_zero):
    """The smallest alpha in (0, 1] at which an interval that narrows as alpha grows excludes 0 (1 if none)."""
    if not excludes_zero(1.0):
        return 1.0
    low, high = 0.0, 1.0  # excludes at high, not at low
    for _ in range(60):
        middle = 0.5 * (low + high)
        if middle > 0.0 and excludes_zero(middle):
            high = middle
        else:
            low = middle
    return high


def spread_change(means_a, means_b, race_contrast, ci):
    """Change of the population spread across races, sd(true race means of A) - sd(of B), from paired items.

    Each side's between-race variance is estimated without the sampling noise of its race means: V = s^2(means)
    - tr(C Sigma) / (G - 1), with C the centring matrix and Sigma the means' covariance (sum over races of the
    variance of race r's deviation from the mean of races; seed variance included at the recipe level). So a
    fair side has V near 0, not the noise's spread. D = V_A - V_B has the standard error of its gradient at the
    observed means (2 C means / (G - 1), never 0 at zero spread: it holds the noise, which makes it conservative
    by the second-order term) and a t test: its p-value is the answer's. The change of sd is D / (sd_A + sd_B);
    its interval divides D's bounds by the bounds of sd_A + sd_B (between sqrt(V_A + V_B) and sqrt(2 (V_A +
    V_B)), V_A + V_B estimated likewise), capped by the upper bound of sd(A - B) (the spread of the paired
    differences: |sd_A - sd_B| <= sd(A - B)), each at `ci`. Measured: coverage 0.93-0.97 with one fair side
    (bench_contrasts "spread"). Returns (answer {lo, hi, p_value, image_lo, image_hi}, sd_A, sd_B) in fractions
    for percentages; sd = sqrt(max(V, 0)).
    """
    g = len(means_a)
    centre = np.eye(g) - 1.0 / g

    def noise(sign_a, sign_b):  # tr(C Sigma) / (G - 1) of sign_a A + sign_b B, per level
        levels = _levels([race_contrast(sign_a * centre[r], sign_b * centre[r]) for r in range(g)])
        return {level: float(np.sum(se * se)) / (g - 1) for level, (_, se, _) in levels.items()}

    def variance(means):
        return float(means @ centre @ means) / (g - 1)

    noise_a, noise_b, noise_d = noise(1.0, 0.0), noise(0.0, 1.0), noise(1.0, -1.0)
    gradient_a, gradient_b = 2.0 * centre @ means_a / (g - 1), 2.0 * centre @ means_b / (g - 1)
    gradient_d = 2.0 * centre @ (means_a - means_b) / (g - 1)
    pieces = _levels([race_contrast(gradient_a, -gradient_b), race_contrast(gradient_a, gradient_b),
                      race_contrast(gradient_d, -gradient_d)])
    answer = {}
    for level, (_, se, df) in pieces.items():
        v_a, v_b = variance(means_a) - noise_a[level], variance(means_b) - noise_b[level]
        v_d = variance(means_a - means_b) - noise_d[level]
        difference, total = v_a - v_b, v_a + v_b
        if abs(difference) <= 1e-12 * float(means_a @ means_a + means_b @ means_b):  # rounding of the squares
            difference = 0.0  # equal spreads up to rounding (e.g. A = B + a constant): not a change
        half = stats.t.ppf(1.0 - (1.0 - ci) / 2.0, df) * se
        total_lo, total_hi = math.sqrt(max(0.0, total - half[1])), math.sqrt(2.0 * max(0.0, total + half[1]))
        cap = math.sqrt(max(0.0, v_d + half[2]))
        ends = [_divide(d, s) for d in (difference - half[0], difference + half[0]) for s in (total_lo, total_hi)]
        lo, hi = min(ends), max(ends)
        lo, hi = (max(lo, -cap) if lo <= 0.0 else lo), (min(hi, cap) if hi >= 0.0 else hi)
        answer[f"{level}lo"], answer[f"{level}hi"] = lo, max(lo, hi)
        if level == "":
            answer["p_value"] = estimates.two_sided_p(difference, float(se[0]) ** 2, float(df[0]))
            sd_a, sd_b = math.sqrt(max(0.0, v_a)), math.sqrt(max(0.0, v_b))
    return answer, sd_a, sd_b


def _divide(numerator, denominator):
    if denominator > 0.0:
        return numerator / denominator
    return 0.0 if numerator == 0.0 else math.copysign(math.inf, numerator)


def _close_extremes(key, means_a, means_b, runs_a, runs_b, column, counts):
    """Whether the worst/best race of A or B is within 2 item-level standard errors of the runner-up."""
    if key not in ("worst", "best", "gap", "ser"):
        return False
    for means, runs in ((means_a, runs_a), (means_b, runs_b)):
        items = runs.mean(axis=0)
        variances = np.array([np.var(items[column == c], ddof=1) / counts[c] if counts[c] > 1 else math.inf
                              for c in range(len(counts))])
        order = np.argsort(means)
        for first, second in ((order[0], order[1]), (order[-1], order[-2])):
            if abs(means[first] - means[second]) <= 2.0 * math.sqrt(variances[first] + variances[second]):
                return True
    return False


SPREAD_BOUND = 0.6  # the planner plans from this upper confidence bound of each seed spread (see seeds_for_power)
POWER_DRAWS = 4000  # Monte Carlo draws of the seed spreads behind one planned power (fixed seed)


def seeds_for_power(planning, effect, power=0.8, alpha=0.05, max_seeds=100, bound=SPREAD_BOUND):
    """Seeds per trained experiment at which a linear_contrast / summary_change result's recipe-level test
    would detect a true contrast of |effect| (reported units) with probability `power` at level `alpha`, from
    the spread measured in its runs; None when a trained experiment has one seed (the seed variance cannot be
    estimated: a second seed is needed) and math.inf when more than max_seeds would be needed.

    Model: each trained experiment's per-seed value = its seed effect (variance sigma_j^2) + the item-by-seed
    noise (variance nu_j, estimated from the items: taken as known) + the shared item part, all normal. The
    spread sigma_j^2 + nu_j is taken at its `bound` upper confidence bound from the k_j pilot seeds (spread x
    (k_j - 1) / chi^2 quantile at 1 - bound; None: the estimate itself), since a spread from 2-3 seeds is itself
    uncertain: from 3-seed pilots of a spread that needs 6 seeds, planning from the estimate gives >= 80% power
    in half of the pilots, from its 60% bound in three quarters, for a median of 8 seeds instead of 6
    (bench_contrasts "planner"). The power is that of the test linear_contrast runs (planned_power). The seed
    counts the spread came from: planning_seeds(planning).
    """
    if not planning["seed_parts"]:
        return None
    if planned_power(planning, effect, max_seeds, alpha, bound) < power:
        return math.inf
    low, high = 1, max_seeds  # power rises with the seeds: bisect for the first k that reaches it
    while high - low > 1:
        middle = (low + high) // 2
        if planned_power(planning, effect, middle, alpha, bound) >= power:
            high = middle
        else:
            low = middle
    return high


def planning_seeds(planning):
    """The smallest number of seeds from which a trained experiment's spread was estimated (0: none was)."""
    return min((k for _, _, k in planning["seed_parts"]), default=0)


def planned_power(planning, effect, seeds, alpha=0.05, bound=SPREAD_BOUND):
    """Power of the recipe-level test at `seeds` seeds per trained experiment against a true contrast of
    |effect| (reported units), from the spread measured in the runs (the model of seeds_for_power)."""
    delta = abs(effect) / planning["factor"]
    parts = planning["seed_parts"]  # (spread, noise, k) of each trained experiment (or of the paired contrast)
    spreads = [spread if bound is None else spread * (k - 1) / stats.chi2.ppf(1.0 - bound, k - 1)
               for spread, _, k in parts]
    seed_vars = [max(0.0, spread - noise) for spread, (_, noise, _) in zip(spreads, parts)]
    noises = [noise for _, noise, _ in parts]
    shared = max(0.0, planning["item_var"] - sum(noise / k for _, noise, k in parts))
    return _power(delta, shared, seed_vars, noises, seeds, alpha)


def _power(delta, shared, seed_vars, noises, k, alpha):
    """Power at k >= 2 seeds per experiment of the recipe-level t test as linear_contrast runs it: each
    experiment's seed part max(0, (sigma_j^2 + nu_j) X_j - nu_j) / k with X_j ~ chi^2(k - 1) / (k - 1), t with
    their Welch-Satterthwaite df (k - 1 when every part is 0, estimates.recipe_variance). Exact over the
    estimate's normal error, Monte Carlo over the X_j (POWER_DRAWS, fixed seed: the same answer every call)."""
    if k < 2:
        return 0.0  # one seed: no recipe-level test
    noises = np.asarray(noises, dtype=np.float64)
    totals = np.asarray(seed_vars, dtype=np.float64) + noises
    true_var = shared + totals.sum() / k
    if true_var <= 0:
        return 1.0 if delta > 0 else alpha
    spread = np.random.default_rng(0).chisquare(k - 1, (POWER_DRAWS, len(totals))) / (k - 1)
    parts = np.maximum(0.0, totals * spread - noises) / k  # (draws, experiments)
    seed_var = parts.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(seed_var > 0, seed_var ** 2 / np.sum(parts * parts, axis=1) * (k - 1), k - 1.0)
    grid = np.geomspace(k - 1.0, len(totals) * (k - 1.0), 64)  # df lie between k - 1 and their sum
    critical = np.interp(df, grid, stats.t.ppf(1.0 - alpha / 2.0, grid))
    se, se_hat = math.sqrt(true_var), np.sqrt(shared + noises.sum() / k + seed_var)
    upper = stats.norm.cdf((delta - critical * se_hat) / se)
    lower = stats.norm.cdf((-delta - critical * se_hat) / se)
    return float(np.mean(upper + lower))
