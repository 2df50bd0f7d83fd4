"""Fairness statistics across race groups: summaries, per-race confidence intervals, paired tests.

Built on racecomp.estimates (one mean from dependent items, its variance and interval). Contrasts between
experiments and changes of a summary: racecomp.contrasts; the seed planner: racecomp.planner.

Pure numpy functions. Conventions used throughout (and in racecomp.contrasts):
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
  - Paired functions state the sign of their difference (paired_test: a - b; the tables' minority penalty is
    under - balanced, negative when the model trained with the group under-sampled is worse on it).
"""
import math

import numpy as np

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


def as_runs(values, name="values"):
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


def item_codes(n, clusters, clusters2):
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


def group_labels(groups):
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
    runs = as_runs(values)
    k, n = runs.shape
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups has shape {groups.shape} for {n} items: one label per item")
    first, second = item_codes(n, clusters, clusters2)
    labels, column = group_labels(groups)
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
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise ValueError(f"groups has shape {groups.shape} for {n} items: one label per item")
        labels, column = group_labels(groups)
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
