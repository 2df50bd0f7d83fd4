"""Estimates of one mean from dependent items and their intervals: cluster-robust (one-way or two-way)
variance, studentized bootstrap, Wilson intervals for percentages, and the seed-level (recipe) variance.

An estimate is a dict (see the section "Estimates of one mean" below). racecomp.fairness builds its per-group
intervals and paired tests on these.
"""
import functools
import math

import numpy as np
from scipy import stats

_MAX_DRAWS_PER_CHUNK = 4_000_000  # resample indices held in memory at once (about 32 MB of int64)


@functools.lru_cache(maxsize=4096)
def t_quantile(q, df):
    """x with P(T <= x) = q for Student's t with df > 0 degrees of freedom (fractional allowed; inf = normal).
    Cached: the tables ask for the same few levels and df many times, and scipy's call costs ~50 us."""
    return float(stats.t.ppf(q, df))


def two_sided_p(value, variance, df):
    """Two-sided p-value of value / sqrt(variance) against Student's t with df degrees of freedom.

    variance 0 gives the t statistic's limit (0, or 1 when value is 0): a sample with no spread has no t to
    speak of, and p_value gives it the exact sign-test claim instead."""
    if variance == 0.0:
        return 1.0 if value == 0.0 else 0.0
    if not math.isfinite(variance):
        return 1.0
    return min(1.0, 2.0 * float(stats.t.sf(abs(value) / math.sqrt(variance), df)))


def holm(p_values):
    """Holm's step-down adjustment of a family of p-values (same order): control of the family-wise error."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, stepped)
    return adjusted


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


def _is_constant(values):
    """Whether values are equal up to rounding (relative 1e-12): no spread, not a spread of rounding errors."""
    return bool(np.all(np.abs(values - values.mean()) <= 1e-12 * max(1.0, float(np.max(np.abs(values))))))


def mean_variance(values, first=None, second=None):
    """(variance of the mean of values, degrees of freedom).

    Independent items: s^2 / n, df n - 1. One-way clusters: CR1 sandwich G/(G-1) sum_c S_c^2 / n^2, S_c the
    cluster's sum of residuals and G the number of clusters. Two identities per item (dyadic-robust, as in
    Aronow, Samii & Assenova 2015): sum over identities of S_c^2 minus the sum over identity pairs of their
    shared sum squared (the pairs sharing both identities were counted twice), with G = min(identities, n),
    floored at the independent-items value s^2 / n (the formula is not a sum of squares and can dip below it).
    df = G* - 1 with G* the effective number of clusters (_effective_clusters, Carter, Schnepel & Steigerwald
    2017; at most n), so that a few large clusters cannot claim many degrees of freedom. Infinite variance
    when there is a single cluster (or item).
    """
    n = len(values)
    residuals = np.zeros(n) if _is_constant(values) else values - values.mean()
    if first is None:
        if n < 2:
            return math.inf, 1.0
        return float(residuals @ residuals) / (n * (n - 1)), float(n - 1)
    sums, sizes, shared = _cluster_sums(residuals, first, second)
    clusters = min(len(sums), n)
    effective = min(_effective_clusters(sizes), float(n))
    if clusters < 2 or effective <= 1.0 + 1e-9:
        return math.inf, 1.0
    variance = clusters / (clusters - 1.0) * (float(sums @ sums) - shared) / (n * n)
    if second is not None:
        variance = max(variance, float(residuals @ residuals) / (n * (n - 1)))
    return variance, effective - 1.0


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
    """Studentized means (mean* - mean) / se* of n_boot cluster bootstrap samples (items = clusters of 1), se*
    the same cluster-robust standard error as `mean_variance` computed on the sample.

    A sample with no spread (se* below 1e-10 of the data's own standard error: every draw the same value up to
    rounding) has no studentized mean; it is left out, so fewer than n_boot values may come back. Such draws are
    common with ties and few clusters (4 equal values of 5: a third of the draws), where rounding would
    otherwise give |t*| near 1e8.
    """
    residuals = values - values.mean()
    if first is None:
        sums, sizes = residuals, np.ones(len(values))
    else:
        sums, sizes, _ = _cluster_sums(residuals, first, None)
    n_clusters = len(sums)
    factor = n_clusters / (n_clusters - 1.0)
    floor = 1e-10 * math.sqrt(factor * float(sums @ sums)) / sizes.sum()
    # Clusters of one item (sizes 1): the size sums are exactly the cluster count and sums * sizes are the sums,
    # so only two columns are resampled (bit for bit the same numbers, 2.5x less work).
    columns = [sums, sums * sums] + ([] if first is None else [sizes, sums * sizes, sizes * sizes])
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
            studentized[start:stop] = np.where(se > floor, mean / se, np.nan)
    return studentized[~np.isnan(studentized)]


# ---------------------------------------------------------------------------------------------------------
# Estimates of one mean and their intervals
#
# An estimate is a dict: value, var (variance of the value), df, kind ("t", "t+bootstrap-t" with the
# studentized replicates `t_star`, or "wilson" with the effective size `n_eff`), bounds (the range the value
# lives in, or None) and units (the independent units behind it: (n,) for one sample, (n_a, n_b) for a
# difference of two independent samples; items, or effective clusters), which decide what a sample with no
# spread can claim (exact_p).

MIN_BOOTSTRAP_CLUSTERS = 15  # fewer clusters: bootstrap-t's se* are too coarse to studentize; t alone


def _units(n, df, first):
    """Independent units of a sample: its items, or its effective clusters (df + 1 of mean_variance)."""
    return float(n) if first is None else df + 1.0


def item_estimate(values, first, second, statistic, extremes, n_boot, rng, n_cap):
    """Item-level inference on the mean of one group's per-item values (seed-averaged if several seeds)."""
    value = float(values.mean())
    var, df = mean_variance(values, first, second)
    estimate = {"value": value, "var": var, "df": df, "kind": "t", "bounds": None,
                "units": (_units(len(values), df, first),)}
    if statistic == "percent":
        estimate["bounds"] = extremes
        if var == 0.0:
            # No spread (every item at one value, e.g. 100%, or no discordant pair): one pseudo-item at each
            # extreme, each its own cluster (the plus-two idea of Agresti and Coull), so that the standard error
            # is not 0. Only then: with spread they would inflate the variance (1.9x at p = 0.99, n = 100).
            estimate["var"] = mean_variance(*_with_pseudo_items(values, first, second, extremes))[0]
        if extremes == (0.0, 1.0):
            # Wilson interval of a proportion with the Korn-Graubard effective sample size p(1-p)/var (n - 1 for
            # independent items); at p = 0 or 1 the variance says nothing, and the effective size is the df
            # (n - 1 for independent items, effective clusters - 1 otherwise): the same n - 1 convention.
            if not math.isfinite(var):
                n_eff = 0.0
            elif 0.0 < value < 1.0 and var > 0.0:
                n_eff = value * (1.0 - value) / var
            else:
                n_eff = df
            estimate.update(kind="wilson", n_eff=min(n_eff, n_cap))
    elif second is None and math.isfinite(var) and var > 0:
        clusters = len(values) if first is None else len(np.unique(first))
        t_star = bootstrap_t(values, first, n_boot, rng) if clusters >= MIN_BOOTSTRAP_CLUSTERS else np.empty(0)
        if len(t_star) >= max(1, n_boot // 2):  # else too many draws without spread to trust the rest
            estimate.update(kind="t+bootstrap-t", t_star=t_star)
    return estimate


def combine(components):
    """(variance, Satterthwaite df) of a sum of independent variance components [(variance, df)]."""
    variance = sum(v for v, _ in components)
    if not math.isfinite(variance):
        return math.inf, 1.0
    positive = [(v, d) for v, d in components if v > 0]
    if len(positive) == 1:
        return variance, positive[0][1]  # the component's own df, not v^2 / (v^2 / d) rounded
    denominator = sum(v * v / d for v, d in positive)
    return variance, (variance * variance / denominator if denominator > 0 else math.inf)


def seed_parts(runs, weights=None, strata=None):
    """(spread, noise, k) of the per-seed values runs @ weights of (k, N) runs: spread = their variance over
    seeds (ddof 1; 0 when equal up to rounding), noise = the item-by-seed part of it, sum_i w_i^2 MS_int,
    MS_int the residual mean square of seed x item within each stratum (items alone in a stratum add none)."""
    runs = np.asarray(runs, dtype=np.float64)
    k, n = runs.shape
    if k < 2:
        raise ValueError(f"seed-to-seed variance needs at least 2 seeds, got {k}")
    scale = max(1.0, float(np.max(np.abs(runs))))
    weights = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, dtype=np.float64)
    seed_values = runs @ weights
    spread = 0.0 if np.ptp(seed_values) <= 1e-12 * scale else float(np.var(seed_values, ddof=1))
    strata = np.zeros(n, dtype=int) if strata is None else _codes_of(strata)
    noise = 0.0
    for stratum in range(strata.max() + 1):
        members = strata == stratum
        if members.sum() < 2 or not np.any(weights[members]):
            continue  # one item: its seed x item part cannot be told from the seed part
        block = runs[:, members]
        residual = block - block.mean(axis=0) - block.mean(axis=1, keepdims=True) + block.mean()
        mean_square = float(np.sum(residual * residual)) / ((k - 1) * (members.sum() - 1))
        noise += float(np.sum(weights[members] ** 2)) * mean_square
    return spread, noise, k


def seed_component(runs, weights=None, strata=None):
    """(variance, df) of the seed-to-seed part of a recipe-level estimate, or None when the runs are identical
    item by item (a deterministic recipe: no seed variance, and none to estimate).

    runs: (k, N) per-seed per-item values (k >= 2); the estimate is sum_i weights_i x (mean over seeds of
    item i), weights default 1 / N; strata: (N,) labels of item sets whose seed effects may differ (races).
    The variance is that of the per-seed estimates / k minus the item-by-seed interaction it holds, which the
    item-level variance (of seed-averaged items) already counts: sum_i w_i^2 MS_int / k (seed_parts; the
    crossed random-effects form). It is floored at 0 and has df k - 1 whether or not it is 0: seeds whose
    means happen to tie are not a deterministic recipe. Under clustered items the subtraction is smaller than
    the part counted twice (conservative).
    """
    return component_of(runs, seed_parts(runs, weights, strata))


def component_of(runs, parts):
    """seed_component from the runs and their seed_parts (computed once when a caller needs both)."""
    runs = np.asarray(runs, dtype=np.float64)
    if np.all(np.ptp(runs, axis=0) <= 1e-12 * max(1.0, float(np.max(np.abs(runs))))):
        return None
    spread, noise, k = parts
    return max(0.0, spread - noise) / k, float(k - 1)


def _codes_of(labels):
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu" and labels.min() >= 0:
        return labels  # already codes (e.g. fairness's group columns): skip the sort
    return np.unique(labels, return_inverse=True)[1].reshape(-1)


def recipe_variance(item_components, seed_components):
    """(variance, df) of a recipe-level estimate: item-level plus seed-to-seed variance components.

    seed_components: seed_component results; None (identical runs) adds nothing. The df are those of the
    seed part alone (k - 1, or Welch-Satterthwaite over two sides; the smallest side's when every seed part
    is 0): pooling its 1-4 df with the item part's hundreds by Satterthwaite is liberal, because the df then
    grow exactly when the seed variance is underestimated (7.6% false positives at 5% with 3 paired seeds,
    measured). Only when every side's runs are identical item by item do the item part's df apply.
    """
    seed_components = [c for c in seed_components if c is not None]
    item_var, item_df = combine(item_components)
    if not seed_components:
        return item_var, item_df
    seed_var, seed_df = combine(seed_components)
    if seed_var == 0.0:
        seed_df = min(d for _, d in seed_components)
    return item_var + seed_var, seed_df


def recipe_estimate(item_estimate, seed_components):
    """Recipe-level estimate (t interval) of an item-level one and its seed_component results."""
    var, df = recipe_variance([(item_estimate["var"], item_estimate["df"])], seed_components)
    return {"value": item_estimate["value"], "var": var, "df": df, "kind": "t", "bounds": item_estimate["bounds"],
            "units": item_estimate["units"]}


def exact_p(units):
    """p-value of a sample with no spread (every item equal within each sample), distribution-free: the exact
    sign test of n units all on one side, 2^(1-n) (one sample or paired differences), or of complete
    separation of two samples, 2 / C(n_a + n_b, n_a) (the exact Mann-Whitney test); never 0."""
    if len(units) == 1:
        return min(1.0, 2.0 ** (1.0 - units[0]))
    a, b = units
    return min(1.0, 2.0 * math.exp(math.lgamma(a + 1.0) + math.lgamma(b + 1.0) - math.lgamma(a + b + 1.0)))


def interval(estimate, level):
    """(lo, hi) of an estimate at confidence `level` (two-sided, equal tails).

    With no spread (variance 0, not a percentage) t has nothing to studentize: the interval is the value itself
    when the exact test of exact_p could reject at 1 - level (n >= 6 units at 95% for one sample), else unbounded
    (clipped to the bounds): a constant sample of 5 says nothing distribution-free at 95%.
    """
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
        lo, hi = (value, value) if exact_p(estimate["units"]) <= 1.0 - level else (-math.inf, math.inf)
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
    """Two-sided p-value of value = 0, the smallest 1 - level at which `interval` excludes 0: Student's t; for
    the joined kind the larger of Student's and the bootstrap-t interval's (the level at which its interpolated
    percentile reaches the observed t); exact_p for a sample with no spread (1 when the value is 0)."""
    if estimate["var"] == 0.0:
        return 1.0 if estimate["value"] == 0.0 else exact_p(estimate["units"])
    p = two_sided_p(estimate["value"], estimate["var"], estimate["df"])
    if estimate["kind"] == "t+bootstrap-t" and estimate["var"] < math.inf:
        observed = estimate["value"] / math.sqrt(estimate["var"])
        ordered = np.sort(estimate["t_star"])
        # lo > 0 while percentile(t*, 1 - alpha / 2) < observed; hi < 0 while percentile(t*, alpha / 2) > observed
        below = _percentile_level(ordered, observed, int(np.searchsorted(ordered, observed, "left")))
        above = _percentile_level(ordered, observed, int(np.searchsorted(ordered, observed, "right")))
        p = max(p, min(1.0, 2.0 * (1.0 - below), 2.0 * above))
    return float(p)


def _percentile_level(ordered, x, count):
    """The level q at which `percentile(ordered, q)` (linear interpolation) reaches x, given count = how many
    replicates lie below x (or at most x): 0 when none, 1 when all."""
    if count == 0:
        return 0.0
    if count == len(ordered):
        return 1.0
    low, high = ordered[count - 1], ordered[count]
    fraction = 0.0 if high == low else (x - low) / (high - low)
    return (count - 1 + min(1.0, max(0.0, fraction))) / (len(ordered) - 1)


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
