"""Fairness statistics across race groups: summaries, bootstrap CIs, paired tests, minority penalties.

Pure numpy functions. Conventions used throughout:
  - Group summaries treat the metric as higher-is-better (accuracy, PSNR, SSIM) and weight groups equally.
  - Bootstrap: percentile intervals, resampling within each group (stratified), whole clusters (e.g. identities)
    when `clusters` is given, seeded with numpy's default_rng, 1000 replicates by default.
  - Paired functions state the sign of their difference (paired_test: a - b; minority_penalty: balanced - under).
"""

import numpy as np


SUMMARY_KEYS = ("mean", "worst", "best", "gap", "ratio", "std", "ser")
STATISTICS = ("mean", "percent")
_MAX_DRAWS_PER_CHUNK = 4_000_000  # resample indices held in memory at once (about 32 MB of int64)


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
# Bootstrap machinery


def _as_rows(values, groups, clusters):
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("values contain NaN or inf (e.g. PSNR of an identical pair): filter or cap them first")
    groups = np.zeros(len(values), dtype=np.int64) if groups is None else np.asarray(groups)
    clusters = np.arange(len(values)) if clusters is None else np.asarray(clusters)
    for name, column in (("groups", groups), ("clusters", clusters)):
        if column.shape != values.shape:
            raise ValueError(f"{name} has shape {column.shape}, values {values.shape}: one entry per row")
    return values, groups, clusters


def _cluster_totals(values, clusters):
    """Per-cluster sums of values and row counts (clusters in sorted id order)."""
    _, index = np.unique(clusters, return_inverse=True)
    return np.bincount(index, weights=values), np.bincount(index).astype(np.float64)


def _resampled_means(sums, counts, n_boot, rng):
    """(n_boot,) means of bootstrap samples drawing len(sums) clusters with replacement (rows = clusters of 1)."""
    n_clusters = len(sums)
    chunk = max(1, _MAX_DRAWS_PER_CHUNK // n_clusters)
    means = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        picks = rng.integers(0, n_clusters, size=(stop - start, n_clusters))
        # A mean over all rows of the drawn clusters: clusters of different sizes weigh by their size.
        means[start:stop] = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    return means


def _sign_flip_means(sums, n_rows, n_perm, rng):
    """(n_perm,) means after flipping the sign of each cluster's paired differences at random."""
    n_clusters = len(sums)
    chunk = max(1, _MAX_DRAWS_PER_CHUNK // n_clusters)
    means = np.empty(n_perm)
    for start in range(0, n_perm, chunk):
        stop = min(n_perm, start + chunk)
        signs = rng.integers(0, 2, size=(stop - start, n_clusters)) * 2.0 - 1.0
        means[start:stop] = signs @ sums / n_rows
    return means


def _percentile(replicates, q):
    """Linearly interpolated percentile (numpy's default), safe with infinite replicates; NaN if any is NaN."""
    if np.any(np.isnan(replicates)):
        return float("nan")
    ordered = np.sort(replicates)
    position = q * (len(ordered) - 1)
    below = int(np.floor(position))
    above = min(below + 1, len(ordered) - 1)
    weight = position - below
    if weight == 0 or ordered[below] == ordered[above]:
        return float(ordered[below])  # also avoids inf - inf when both neighbours are infinite
    return float(ordered[below] + weight * (ordered[above] - ordered[below]))


def _interval(point, replicates, ci):
    tail = (1.0 - ci) / 2.0
    return {"value": float(point), "lo": _percentile(replicates, tail), "hi": _percentile(replicates, 1.0 - tail)}


def _check_resampling(n_boot, ci):
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")


def _group_labels(groups):
    """Distinct group labels in sorted order as plain Python values (JSON-friendly keys), and each row's column."""
    unique, column = np.unique(groups, return_inverse=True)
    return [label.item() if isinstance(label, np.generic) else label for label in unique], column


# ---------------------------------------------------------------------------------------------------------
# Bootstrap of per-group means and their across-group summary


def _units(group_column, clusters):
    """Resampling units = (group, cluster) pairs: per-row unit index and each unit's group column."""
    _, cluster_index = np.unique(clusters, return_inverse=True)
    _, first_row, row_unit = np.unique(group_column * (cluster_index.max() + 1) + cluster_index,
                                       return_index=True, return_inverse=True)
    return row_unit, group_column[first_row]


def _gap_p_value(unit_sums, unit_counts, unit_groups, n_groups, observed_gap, n_perm, rng):
    """Permutation p-value of the gap: group labels shuffled across units (group sizes in units fixed)."""
    as_extreme = 0
    for _ in range(n_perm):
        shuffled = rng.permutation(unit_groups)
        means = (np.bincount(shuffled, weights=unit_sums, minlength=n_groups)
                 / np.bincount(shuffled, weights=unit_counts, minlength=n_groups))
        as_extreme += means.max() - means.min() >= observed_gap * (1.0 - 1e-12)
    return float((1 + as_extreme) / (1 + n_perm))


def bootstrap_groups(values, groups, statistic, n_boot=1000, seed=0, clusters=None, ci=0.95):
    """Per-group mean of per-row values and the across-group summary, with percentile bootstrap CIs.

    values: (N,) per-row metric (per-image PSNR, or the 0/1 `correct` of `metrics.kfold_accuracy` for
    verification pairs: its thresholds stay fixed, they are not re-chosen per replicate). groups: (N,)
    labels. statistic: "mean" (group mean in the values' units) or "percent" (100 x mean, for 0/1
    correctness, so that gap is in percentage points and `ser` is meaningful). clusters: optional (N,) ids
    (e.g. identities); whole clusters are resampled within their group, the statistic being the mean over
    all rows drawn (a cluster id appearing in two groups counts as a separate cluster in each).
    Each replicate resamples every group independently (stratified: group sizes stay fixed), recomputes
    every group's statistic and then the group_summary of those (mean, worst, best, gap, ratio, std, ser;
    ser is NaN unless statistic="percent", since 0/1 means as fractions would give a plausible-looking
    but wrong SER near 1). CIs are the (1 - ci)/2 and 1 - (1 - ci)/2 percentiles of the replicates
    (linear interpolation).

    The gap (max - min) is >= 0 and biased upward by noise, so its CI excludes 0 even when all groups are
    equal: it sizes a gap, it does not test one. `gap_p_value` does: a permutation test of "group does
    not matter" (labels shuffled across rows, or across clusters, n_boot times), p = (1 + #{permuted gap
    >= observed}) / (1 + n_boot).

    Returns {"groups": {label: {value, lo, hi, n}}, "summary": {stat: {value, lo, hi}}, "gap_p_value"};
    n = rows in the group.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    _check_resampling(n_boot, ci)
    values, groups, clusters = _as_rows(values, groups, clusters)
    labels, group_column = _group_labels(groups)
    if len(labels) < 2:
        raise ValueError(f"need at least two groups to compare, got {labels}")
    factor = 100.0 if statistic == "percent" else 1.0
    row_unit, unit_groups = _units(group_column, clusters)
    unit_sums = np.bincount(row_unit, weights=values)
    unit_counts = np.bincount(row_unit).astype(np.float64)
    rng = np.random.default_rng(seed)
    points = np.empty(len(labels))
    replicates = np.empty((n_boot, len(labels)))  # (replicate, group)
    sizes = []
    for column in range(len(labels)):
        members = unit_groups == column
        points[column] = factor * unit_sums[members].sum() / unit_counts[members].sum()
        replicates[:, column] = factor * _resampled_means(unit_sums[members], unit_counts[members], n_boot, rng)
        sizes.append(int(unit_counts[members].sum()))
    point_summary = _summarize_rows(points[None, :])
    replicate_summary = _summarize_rows(replicates)
    summary = {key: _interval(point_summary[key][0], replicate_summary[key], ci) for key in SUMMARY_KEYS}
    if statistic != "percent":
        summary["ser"] = {"value": float("nan"), "lo": float("nan"), "hi": float("nan")}
    observed_gap = point_summary["gap"][0] / factor
    return {
        "groups": {
            label: {**_interval(points[column], replicates[:, column], ci), "n": sizes[column]}
            for column, label in enumerate(labels)
        },
        "summary": summary,
        "gap_p_value": _gap_p_value(unit_sums, unit_counts, unit_groups, len(labels), observed_gap, n_boot, rng),
    }


# ---------------------------------------------------------------------------------------------------------
# Paired comparisons


def _paired_difference(differences, clusters, n_boot, ci, rng):
    sums, counts = _cluster_totals(differences, clusters)
    observed = differences.mean()
    boot = _resampled_means(sums, counts, n_boot, rng)
    flipped = _sign_flip_means(sums, len(differences), n_boot, rng)
    # Relative slack so that flips reproducing |observed| up to rounding count as "as extreme".
    as_extreme = np.sum(np.abs(flipped) >= abs(observed) * (1.0 - 1e-12))
    interval = _interval(observed, boot, ci)
    return {
        "mean_diff": interval["value"],
        "lo": interval["lo"],
        "hi": interval["hi"],
        "p_value": float((1 + as_extreme) / (1 + n_boot)),
        "n": int(len(differences)),
    }


def paired_test(a, b, groups=None, clusters=None, n_boot=1000, seed=0, ci=0.95):
    """Model A vs model B on the same images/pairs: mean of a - b with a paired bootstrap CI and a p-value.

    a, b: (N,) per-row metric of the two models, row i being the same image (or pair) for both. The CI
    resamples rows (or whole `clusters`) with replacement; the p-value is a two-sided sign-flip permutation
    test of mean(a - b) = 0 with n_boot random flips of each row's (or cluster's) difference,
    p = (1 + #{|flipped mean| >= |observed|}) / (1 + n_boot), so never below 1 / (1 + n_boot).
    Returns {"overall": {mean_diff, lo, hi, p_value, n}} plus, when `groups` (N,) is given,
    "groups": {label: same, computed within that group only}.
    """
    _check_resampling(n_boot, ci)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values must have equal shapes, got {a.shape} and {b.shape}")
    differences, row_groups, clusters = _as_rows(a - b, groups, clusters)
    rng = np.random.default_rng(seed)
    result = {"overall": _paired_difference(differences, clusters, n_boot, ci, rng)}
    if groups is not None:
        result["groups"] = {}
        labels, group_column = _group_labels(row_groups)
        for column, label in enumerate(labels):
            members = group_column == column
            result["groups"][label] = _paired_difference(differences[members], clusters[members], n_boot, ci, rng)
    return result


def minority_penalty(metric_under, metric_balanced, keys_under, keys_balanced, groups, n_boot=1000, seed=0,
                     ci=0.95):
    """Per-group minority penalty: mean of (under - balanced) per image, with bootstrap CI.

    metric_under / keys_under: per-image metric (higher is better, e.g. PSNR in dB) of the model trained on
    the under-sampled set and the image keys; metric_balanced / keys_balanced: the same for the model
    trained on the balanced set, in any order. groups: (N,) group labels aligned with keys_under. Images
    are paired by key; the key sets must match exactly (ValueError otherwise). A negative penalty means
    the under-sampled model is worse on that group (the issue's definition: metric(r | r under-sampled)
    minus metric(r | balanced run)).
    Returns {label: {penalty, lo, hi, p_value, n}} (see `paired_test` for lo/hi/p_value).
    """
    keys_under = list(keys_under)
    keys_balanced = list(keys_balanced)
    for name, keys, metric in (("under", keys_under, metric_under), ("balanced", keys_balanced, metric_balanced)):
        if len(set(keys)) != len(keys):
            raise ValueError(f"keys_{name} contains duplicate keys")
        if len(keys) != len(metric):
            raise ValueError(f"keys_{name} has {len(keys)} keys but metric_{name} has {len(metric)} values")
    if set(keys_under) != set(keys_balanced):
        missing = sorted(map(str, set(keys_under) ^ set(keys_balanced)))
        raise ValueError(f"keys differ between the two runs ({len(missing)} unmatched, e.g. {missing[:3]})")
    position = {key: row for row, key in enumerate(keys_balanced)}
    balanced_aligned = np.asarray(metric_balanced, dtype=np.float64)[[position[key] for key in keys_under]]
    if len(groups) != len(keys_under):
        raise ValueError(f"groups has {len(groups)} labels for {len(keys_under)} keys")
    result = paired_test(metric_under, balanced_aligned, groups=groups, n_boot=n_boot, seed=seed, ci=ci)
    return {
        label: {"penalty": entry["mean_diff"], "lo": entry["lo"], "hi": entry["hi"],
                "p_value": entry["p_value"], "n": entry["n"]}
        for label, entry in result["groups"].items()
    }
