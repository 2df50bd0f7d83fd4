"""Estimates of one mean from dependent items and their intervals: cluster-robust (one-way or two-way)
variance, studentized bootstrap, Wilson intervals for percentages, and the seed-level (recipe) variance.

An estimate is a dict: value, var (variance of the value), df, kind ("t", "t+bootstrap-t" with the
studentized replicates `t_star`, or "wilson" with the effective size `n_eff`) and bounds (the range the value
lives in, or None). racecomp.fairness builds its per-group intervals and paired tests on these.
"""
import math

import numpy as np

from racecomp.student_t import t_quantile, two_sided_p

_MAX_DRAWS_PER_CHUNK = 4_000_000  # resample indices held in memory at once (about 32 MB of int64)


def _cluster_sums(residuals, first, second):
    """(per-cluster sums of residuals, cluster sizes, sum over identity pairs of squared shared sums).

    Two-way: an item counts in the clusters of both its identities (once when they are the same identity);
    items whose two identities are both shared are counted twice there, hence the third term.
    """
    if second is None:
        _, index = np.unique(first, return_inverse=True)
        index = index.reshape(-1)
        return np.bincount(index, weights=residuals), np.bincount(index).astype(np.float64), 0.0
    size = int(max(first.max(), second.max())) + 1
    distinct = first != second
    sums = (np.bincount(first, weights=residuals, minlength=size)
            + np.bincount(second[distinct], weights=residuals[distinct], minlength=size))
    sizes = (np.bincount(first, minlength=size) + np.bincount(second[distinct], minlength=size)).astype(np.float64)
    present = sizes > 0
    low = np.minimum(first, second)[distinct]
    high = np.maximum(first, second)[distinct]
    if not len(low):
        return sums[present], sizes[present], 0.0
    shared_index = np.unique(low * size + high, return_inverse=True)[1].reshape(-1)
    shared = np.bincount(shared_index, weights=residuals[distinct])
    return sums[present], sizes[present], float(shared @ shared)


def _effective_clusters(sizes):
    """(sum n_g^2)^2 / sum n_g^4: the number of clusters when each weighs like its size squared (as under
    strong within-cluster correlation); equal sizes give the count, one dominant cluster gives about 1."""
    squared = sizes * sizes
    return float(squared.sum() ** 2 / np.sum(squared * squared))


def mean_variance(values, first=None, second=None):
    """(variance of the mean of values, degrees of freedom).

    Independent items: s^2 / n, df n - 1. One-way clusters: CR1 sandwich g/(g-1) sum_c S_c^2 / n^2, S_c the
    cluster's sum of residuals. Two identities per item (dyadic-robust, as in Aronow, Samii & Assenova
    2015): sum over identities of S_c^2 minus the sum over identity pairs of their shared sum squared (the
    pairs sharing both identities were counted twice), floored at the independent-items value. g is the
    effective number of clusters (_effective_clusters), df = g - 1, so that a few large clusters cannot
    claim many degrees of freedom. Infinite variance when there is a single cluster (or item).
    """
    n = len(values)
    residuals = values - values.mean()
    if np.all(np.abs(residuals) <= 1e-12 * max(1.0, abs(values.mean()))):
        residuals = np.zeros(n)  # equal values up to rounding: no spread, not a spread of rounding errors
    if first is None:
        if n < 2:
            return math.inf, 1.0
        return float(residuals @ residuals) / (n * (n - 1)), float(n - 1)
    sums, sizes, shared = _cluster_sums(residuals, first, second)
    raw = float(sums @ sums) - shared
    if second is not None:
        # The two-way formula is not a sum of squares and can dip below 0: never claim less than independence.
        raw = max(raw, float(residuals @ residuals))
    effective = _effective_clusters(sizes)
    if len(sums) < 2 or effective <= 1.0 + 1e-9:
        return math.inf, 1.0
    return effective / (effective - 1.0) * raw / (n * n), effective - 1.0


def _with_pseudo_items(values, first, second, extremes):
    """values plus one item at each extreme, each its own cluster (identity): the plus-two idea of
    Agresti and Coull, so that a percentage at 0 or 100 (or a difference with no discordant pair) does not
    get a zero standard error."""
    values = np.append(values, extremes)
    if first is None:
        return values, None, None
    top = int(max(first.max(), -1 if second is None else second.max())) + 1
    new = np.array([top, top + 1])
    return values, np.append(first, new), None if second is None else np.append(second, new)


def bootstrap_t(values, first, n_boot, rng):
    """(n_boot,) studentized means (mean* - mean) / se* of cluster bootstrap samples (items = clusters of 1),
    se* the same cluster-robust standard error as `mean_variance` computed on the sample."""
    residuals = values - values.mean()
    if first is None:
        sums, sizes = residuals, np.ones(len(values))
    else:
        sums, sizes, _ = _cluster_sums(residuals, first, None)
    effective = _effective_clusters(sizes)
    factor = effective / (effective - 1.0)
    # Clusters of one item (sizes 1): the size sums are exactly the cluster count and sums * sizes are the sums,
    # so only two columns are resampled (bit for bit the same numbers, 2.5x less work).
    columns = [sums, sums * sums] + ([] if first is None else [sizes, sums * sizes, sizes * sizes])
    n_clusters = len(sums)
    chunk = max(1, _MAX_DRAWS_PER_CHUNK // n_clusters)
    studentized = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        picks = rng.integers(0, n_clusters, size=(stop - start, n_clusters))
        # take() gathers what column[picks] does, several times faster.
        total, square, *rest = (column.take(picks).sum(axis=1) for column in columns)
        size, cross, size_square = rest or (np.full(stop - start, float(n_clusters)), total,
                                            np.full(stop - start, float(n_clusters)))
        mean = total / size
        raw = np.maximum(square - 2.0 * mean * cross + mean * mean * size_square, 0.0)
        se = np.sqrt(factor * raw) / size
        with np.errstate(divide="ignore", invalid="ignore"):
            studentized[start:stop] = np.where(se > 0, mean / se, np.sign(mean) * np.inf)
    return np.nan_to_num(studentized, nan=0.0, posinf=np.inf, neginf=-np.inf)


# ---------------------------------------------------------------------------------------------------------
# Estimates of one mean and their intervals
#
# An estimate is a dict: value, var (variance of the value), df, kind ("t", "t+bootstrap-t" with the
# studentized replicates `t_star`, or "wilson" with the effective size `n_eff`) and bounds (the range the
# value lives in, or None).


def item_estimate(values, first, second, statistic, extremes, n_boot, rng, n_cap):
    """Item-level inference on the mean of one group's per-item values (seed-averaged if several seeds)."""
    value = float(values.mean())
    var, df = mean_variance(values, first, second)
    estimate = {"value": value, "var": var, "df": df, "kind": "t", "bounds": None}
    if statistic == "percent":
        estimate["bounds"] = extremes
        estimate["var"] = mean_variance(*_with_pseudo_items(values, first, second, extremes))[0]
        if extremes == (0.0, 1.0):
            # Wilson interval of a proportion with the Korn-Graubard effective sample size p(1-p)/var; at p = 0
            # or 1 the variance says nothing, and each (effective) cluster counts as one observation.
            if not math.isfinite(var):
                n_eff = 0.0
            elif 0.0 < value < 1.0 and var > 0.0:
                n_eff = value * (1.0 - value) / var
            else:
                n_eff = min(len(values), df + 1.0)
            estimate.update(kind="wilson", n_eff=min(n_eff, n_cap))
    elif second is None and math.isfinite(var) and var > 0:
        estimate.update(kind="t+bootstrap-t", t_star=bootstrap_t(values, first, n_boot, rng))
    return estimate


def combine(components):
    """(variance, Satterthwaite df) of a sum of independent variance components [(variance, df)]."""
    variance = sum(v for v, _ in components)
    if not math.isfinite(variance):
        return math.inf, 1.0
    denominator = sum(v * v / d for v, d in components if v > 0)
    return variance, (variance * variance / denominator if denominator > 0 else math.inf)


def seed_component(seed_means):
    """(variance of the mean over k seeds, k - 1) from the per-seed values (0 when they agree up to rounding,
    as the seeds of a deterministic baseline do)."""
    k = len(seed_means)
    if np.ptp(seed_means) <= 1e-12 * max(1.0, float(np.max(np.abs(seed_means)))):
        return 0.0, float(k - 1)
    return float(np.var(seed_means, ddof=1)) / k, float(k - 1)


def recipe_variance(item_components, seed_components):
    """(variance, df) of a recipe-level estimate: item-level plus seed-to-seed variance components.

    The per-seed means already hold the items' noise once more, so the sum counts the item-by-seed noise
    twice: conservative, and small beside the seed variance whenever there are many items. The df are those
    of the seed part alone (k - 1, or Welch-Satterthwaite over two sides): pooling its 1-4 df with the item
    part's hundreds by Satterthwaite is liberal, because the df then grow exactly when the seed variance is
    underestimated (7.6% false positives at 5% with 3 paired seeds, measured). Only when the seeds agree
    exactly (e.g. a deterministic baseline) do the item part's df apply.
    """
    seed_var, seed_df = combine(seed_components)
    item_var, item_df = combine(item_components)
    return item_var + seed_var, (seed_df if seed_var > 0 else item_df)


def recipe_estimate(item_estimate, seed_components):
    """Recipe-level estimate (t interval) of an item-level one and the seed-to-seed components [(var, df)]."""
    var, df = recipe_variance([(item_estimate["var"], item_estimate["df"])], seed_components)
    return {"value": item_estimate["value"], "var": var, "df": df, "kind": "t", "bounds": item_estimate["bounds"]}


def interval(estimate, level):
    """(lo, hi) of an estimate at confidence `level` (two-sided, equal tails)."""
    value, var, df = estimate["value"], estimate["var"], estimate["df"]
    tail = (1.0 - level) / 2.0
    z = t_quantile(1.0 - tail, df) if estimate["kind"] == "wilson" else math.nan
    if estimate["kind"] == "wilson" and (estimate["n_eff"] <= 0.0 or z * z / estimate["n_eff"] > 1e12):
        lo, hi = -math.inf, math.inf  # nothing known (Wilson's limit): the whole range, clipped to the bounds below
    elif estimate["kind"] == "wilson":
        n, p = estimate["n_eff"], value
        denominator = 1.0 + z * z / n
        centre = (p + z * z / (2.0 * n)) / denominator
        half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denominator
        lo = 0.0 if p == 0.0 else centre - half  # exact ends at 0 and 1 (the formula rounds there)
        hi = 1.0 if p == 1.0 else centre + half
    elif var == 0.0:
        lo = hi = value
    elif not math.isfinite(var):
        lo, hi = -math.inf, math.inf
    else:
        se = math.sqrt(var)
        quantile = t_quantile(1.0 - tail, df)
        lo, hi = value - quantile * se, value + quantile * se
        if estimate["kind"] == "t+bootstrap-t":
            # Joined with the studentized bootstrap interval: t under-covers skewed means, bootstrap-t
            # heavy-tailed ones at small n; the union covers in both cases (bench/bench_intervals.py).
            lo = min(lo, value - percentile(estimate["t_star"], 1.0 - tail) * se)
            hi = max(hi, value - percentile(estimate["t_star"], tail) * se)
    if estimate["bounds"] is not None:
        lo, hi = max(lo, estimate["bounds"][0]), min(hi, estimate["bounds"][1])
    return float(lo), float(hi)


def p_value(estimate):
    """Two-sided p-value of value = 0 (the larger of Student's and the bootstrap-t's, for the joined kind)."""
    p = two_sided_p(estimate["value"], estimate["var"], estimate["df"])
    if estimate["kind"] == "t+bootstrap-t" and 0.0 < estimate["var"] < math.inf:
        observed = estimate["value"] / math.sqrt(estimate["var"])
        t_star = estimate["t_star"]
        tail = min(np.sum(t_star >= observed), np.sum(t_star <= observed))
        p = max(p, min(1.0, 2.0 * (1.0 + tail) / (1.0 + len(t_star))))
    return float(p)


def percentile(replicates, q):
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
