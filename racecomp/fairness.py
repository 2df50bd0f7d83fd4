"""Fairness statistics across race groups: summaries, confidence intervals, paired tests, minority penalties.

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
import functools
import math

import numpy as np


SUMMARY_KEYS = ("mean", "worst", "best", "gap", "ratio", "std", "ser")
STATISTICS = ("mean", "percent")
RECIPE_DIFFERENCE = "recipe difference (seed and item variance)"
MODEL_DIFFERENCE = "model difference (1 seed; not a recipe effect)"
_MAX_DRAWS_PER_CHUNK = 4_000_000  # resample indices held in memory at once (about 32 MB of int64)
_NORMAL_DF = 1e7  # from this many degrees of freedom on, Student's t is taken as the normal distribution


# ---------------------------------------------------------------------------------------------------------
# Student's t distribution (numpy has none, and scipy is not a dependency)


def _beta_fraction(a, b, x):
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        even = m * (b - m) * x / ((a - 1.0 + 2 * m) * (a + 2 * m))
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 1.0 + 2 * m))
        for coefficient in (even, odd):
            d = 1.0 + coefficient * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + coefficient / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            return h
    raise ArithmeticError(f"incomplete beta ({a}, {b}, {x}) did not converge")


def _beta_regularized(a, b, x):
    """I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_sf(t, df):
    """P(T > t) for Student's t with df > 0 degrees of freedom (fractional allowed; inf = normal)."""
    if math.isnan(t) or math.isnan(df) or df <= 0:
        return float("nan")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    if df >= _NORMAL_DF:
        return 0.5 * math.erfc(t / math.sqrt(2.0))
    tail = 0.5 * _beta_regularized(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def _t_density(t, df):
    if df >= _NORMAL_DF:
        return math.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
    return math.exp(math.lgamma((df + 1.0) / 2.0) - math.lgamma(df / 2.0) - 0.5 * math.log(df * math.pi)
                    - (df + 1.0) / 2.0 * math.log1p(t * t / df))


def _normal_quantile(q):
    """Standard normal quantile: Acklam's rational approximation refined by one Halley step on erfc."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    tail = min(q, 1.0 - q)
    if tail < 0.02425:
        r = math.sqrt(-2.0 * math.log(tail))
        x = (((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5]) / \
            ((((d[0] * r + d[1]) * r + d[2]) * r + d[3]) * r + 1.0)
    else:
        r = (tail - 0.5) ** 2
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * (tail - 0.5) / \
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0)
    error = 0.5 * math.erfc(-x / math.sqrt(2.0)) - tail  # x < 0 here: the lower-tail quantile
    step = error * math.sqrt(2.0 * math.pi) * math.exp(0.5 * x * x)
    x -= step / (1.0 + 0.5 * x * step)
    return -x if q > 0.5 else x


@functools.lru_cache(maxsize=4096)
def t_quantile(q, df):
    """x with P(T <= x) = q for Student's t with df > 0 degrees of freedom (fractional allowed; inf = normal)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {q}")
    if not df > 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if q == 0.5:
        return 0.0
    tail = min(q, 1.0 - q)
    z = -_normal_quantile(tail)
    if df >= _NORMAL_DF:
        x = z
    else:
        if df == 1.0:
            x = math.tan(math.pi * (0.5 - tail))
        elif df == 2.0:
            x = (1.0 - 2.0 * tail) / math.sqrt(2.0 * tail * (1.0 - tail))
        elif df >= 3.0:  # Cornish-Fisher expansion in 1 / df: a start within a few 1e-4 of the root
            x = (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
                 + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))
        else:
            x = math.nan
        x = _t_root(tail, df, x)
    return x if q > 0.5 else -x


def _t_root(tail, df, start):
    """x > 0 with t_sf(x, df) = tail: Newton from `start`, bisection whenever a step leaves the bracket."""
    low, high = 0.0, math.inf
    x = start if math.isfinite(start) and start > 0 else 1.0
    for _ in range(400):
        excess = t_sf(x, df) - tail
        if excess == 0.0:
            return x
        if excess > 0:
            low = x
        else:
            high = x
        density = _t_density(x, df)
        step = x + excess / density if density > 0 else math.nan  # NaN: bisect (or double) instead
        if low < step < high and abs(step - x) <= 1e-9 * max(1.0, x):
            return step  # Newton converges quadratically: the error left is far below 1e-15
        x = step if low < step < high else (0.5 * (low + high) if math.isfinite(high) else 2.0 * x)
    return x


def _two_sided_p(value, variance, df):
    """Two-sided p-value of value / sqrt(variance) against Student's t with df degrees of freedom."""
    if variance == 0.0:
        return 1.0 if value == 0.0 else 0.0
    if not math.isfinite(variance):
        return 1.0
    return min(1.0, 2.0 * t_sf(abs(value) / math.sqrt(variance), df))


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
# Variance of a mean of dependent items


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


def _mean_variance(values, first=None, second=None):
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


def _bootstrap_t(values, first, n_boot, rng):
    """(n_boot,) studentized means (mean* - mean) / se* of cluster bootstrap samples (items = clusters of 1),
    se* the same cluster-robust standard error as `_mean_variance` computed on the sample."""
    residuals = values - values.mean()
    if first is None:
        sums, sizes = residuals, np.ones(len(values))
    else:
        sums, sizes, _ = _cluster_sums(residuals, first, None)
    effective = _effective_clusters(sizes)
    factor = effective / (effective - 1.0)
    columns = np.stack([sums, sizes, sums * sums, sums * sizes, sizes * sizes])  # (5, clusters)
    n_clusters = len(sums)
    chunk = max(1, _MAX_DRAWS_PER_CHUNK // n_clusters)
    studentized = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        picks = rng.integers(0, n_clusters, size=(stop - start, n_clusters))
        total, size, square, cross, size_square = (column[picks].sum(axis=1) for column in columns)
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


def _item_estimate(values, first, second, statistic, extremes, n_boot, rng, n_cap):
    """Item-level inference on the mean of one group's per-item values (seed-averaged if several seeds)."""
    value = float(values.mean())
    var, df = _mean_variance(values, first, second)
    estimate = {"value": value, "var": var, "df": df, "kind": "t", "bounds": None}
    if statistic == "percent":
        estimate["bounds"] = extremes
        estimate["var"] = _mean_variance(*_with_pseudo_items(values, first, second, extremes))[0]
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
        estimate.update(kind="t+bootstrap-t", t_star=_bootstrap_t(values, first, n_boot, rng))
    return estimate


def _combine(components):
    """(variance, Satterthwaite df) of a sum of independent variance components [(variance, df)]."""
    variance = sum(v for v, _ in components)
    if not math.isfinite(variance):
        return math.inf, 1.0
    denominator = sum(v * v / d for v, d in components if v > 0)
    return variance, (variance * variance / denominator if denominator > 0 else math.inf)


def _seed_component(seed_means):
    """(variance of the mean over k seeds, k - 1) from the per-seed values (0 when they agree up to rounding,
    as the seeds of a deterministic baseline do)."""
    k = len(seed_means)
    if np.ptp(seed_means) <= 1e-12 * max(1.0, float(np.max(np.abs(seed_means)))):
        return 0.0, float(k - 1)
    return float(np.var(seed_means, ddof=1)) / k, float(k - 1)


def _recipe_variance(item_components, seed_components):
    """(variance, df) of a recipe-level estimate: item-level plus seed-to-seed variance components.

    The per-seed means already hold the items' noise once more, so the sum counts the item-by-seed noise
    twice: conservative, and small beside the seed variance whenever there are many items. The df are those
    of the seed part alone (k - 1, or Welch-Satterthwaite over two sides): pooling its 1-4 df with the item
    part's hundreds by Satterthwaite is liberal, because the df then grow exactly when the seed variance is
    underestimated (7.6% false positives at 5% with 3 paired seeds, measured). Only when the seeds agree
    exactly (e.g. a deterministic baseline) do the item part's df apply.
    """
    seed_var, seed_df = _combine(seed_components)
    item_var, item_df = _combine(item_components)
    return item_var + seed_var, (seed_df if seed_var > 0 else item_df)


def _recipe_estimate(item_estimate, seed_components):
    """Recipe-level estimate (t interval) of an item-level one and the seed-to-seed components [(var, df)]."""
    var, df = _recipe_variance([(item_estimate["var"], item_estimate["df"])], seed_components)
    return {"value": item_estimate["value"], "var": var, "df": df, "kind": "t", "bounds": item_estimate["bounds"]}


def _interval(estimate, level):
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
            lo = min(lo, value - _percentile(estimate["t_star"], 1.0 - tail) * se)
            hi = max(hi, value - _percentile(estimate["t_star"], tail) * se)
    if estimate["bounds"] is not None:
        lo, hi = max(lo, estimate["bounds"][0]), min(hi, estimate["bounds"][1])
    return float(lo), float(hi)


def _p_value(estimate):
    """Two-sided p-value of value = 0 (the larger of Student's and the bootstrap-t's, for the joined kind)."""
    p = _two_sided_p(estimate["value"], estimate["var"], estimate["df"])
    if estimate["kind"] == "t+bootstrap-t" and 0.0 < estimate["var"] < math.inf:
        observed = estimate["value"] / math.sqrt(estimate["var"])
        t_star = estimate["t_star"]
        tail = min(np.sum(t_star >= observed), np.sum(t_star <= observed))
        p = max(p, min(1.0, 2.0 * (1.0 + tail) / (1.0 + len(t_star))))
    return float(p)


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


# ---------------------------------------------------------------------------------------------------------
# Per-group intervals and the across-group summary


def _pairwise(labels, estimates, item_estimates, seed_means, alpha):
    """Every pairwise difference of group means: Welch-Satterthwaite t test and Bonferroni-simultaneous
    interval (each at 1 - alpha / pairs), with the seed-to-seed variance of the per-seed difference when
    there are several seeds."""
    k = seed_means.shape[0]
    count = len(labels) * (len(labels) - 1) // 2
    pairs = []
    for r in range(len(labels)):
        for s in range(r + 1, len(labels)):
            components = [(item_estimates[c]["var"], item_estimates[c]["df"]) for c in (r, s)]
            seed_part = [_seed_component(seed_means[:, r] - seed_means[:, s])] if k >= 2 else []
            var, df = _recipe_variance(components, seed_part)
            difference = estimates[r]["value"] - estimates[s]["value"]
            lo, hi = _interval({"value": difference, "var": var, "df": df, "kind": "t", "bounds": None},
                               1.0 - alpha / count)
            pairs.append({"a": labels[r], "b": labels[s], "diff": difference, "lo": lo, "hi": hi,
                          "p_value": _two_sided_p(difference, var, df), "df": df})
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
    if best[0] > 0.0 and worst[0] >= 0.0:  # ratio worst / best rises with worst and falls with best
        result["ratio"] = (worst[0] / best[1], worst[1] / best[0])
    if statistic == "percent":  # in fractions: SER = (1 - worst) / (1 - best)
        errors_worst = (max(0.0, 1.0 - worst[1]), max(0.0, 1.0 - worst[0]))
        errors_best = (max(0.0, 1.0 - best[1]), max(0.0, 1.0 - best[0]))
        with np.errstate(divide="ignore", invalid="ignore"):
            low = np.float64(errors_worst[0]) / np.float64(errors_best[1])
            high = np.float64(errors_worst[1]) / np.float64(errors_best[0])
        result["ser"] = (float(low), float(high))
    return result


def group_intervals(values, groups, statistic, clusters=None, clusters2=None, n_boot=1000, seed=0, ci=0.95):
    """Per-group mean of per-item values and the across-group summary, with confidence intervals.

    values: (N,) per-item metric of one model, or (k, N) the same items scored by k seeds of one recipe
    (per-image PSNR, or the 0/1 `correct` of `metrics.kfold_accuracy` for verification pairs: its
    thresholds stay fixed). groups: (N,) labels. statistic: "mean" (values' units) or "percent" (100 x
    mean of 0/1 values: gap in percentage points, `ser` meaningful). clusters: optional (N,) item ids (e.g.
    identities); clusters2: optional (N,) second identity of a pair (two-way clustering, see
    `_mean_variance`; a cluster id appearing in two groups is one cluster in each).

    Each group's value is the mean over items of the seed-averaged values. Its interval:
      - item level (always given as image_lo / image_hi; the headline with one seed): Wilson for percent
        (effective size from the cluster-robust variance); for means, Student t on the cluster-robust
        standard error with df = effective clusters - 1, joined (union) with the bootstrap-t interval when
        items are independent or one-way clustered. Claims: the mean over the population of items of these
        trained models. It ignores training-run variance.
      - recipe level (headline with k >= 2 seeds): t interval whose variance adds the seed-to-seed variance
        of the per-seed group means / k to the item-level one (df k - 1, see _recipe_variance). Claims: the
        mean of the recipe over training runs and items, assuming normal seed-to-seed variation.
    Summary: mean over groups (t interval), and intervals that are simultaneous over groups (so that they
    hold near ties, where max - min of noisy means is biased upward): gap and std from Bonferroni intervals
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
    item_estimates, estimates, sizes = [], [], []
    for c in range(len(labels)):
        members = column == c
        sizes.append(int(members.sum()))
        item_estimate = _item_estimate(items[members], None if first is None else first[members],
                                       None if second is None else second[members], statistic, (0.0, 1.0),
                                       n_boot, rng, n_cap=sizes[-1] * k)
        seed_means[:, c] = runs[:, members].mean(axis=1)
        item_estimates.append(item_estimate)
        estimates.append(_recipe_estimate(item_estimate, [_seed_component(seed_means[:, c])]) if k >= 2
                         else item_estimate)
    level = "recipe" if k >= 2 else "model"
    result_groups = {}
    for c, label in enumerate(labels):
        lo, hi = _interval(estimates[c], ci)
        image_lo, image_hi = _interval(item_estimates[c], ci)
        result_groups[label] = {
            "value": factor * estimates[c]["value"], "lo": factor * lo, "hi": factor * hi, "n": sizes[c],
            "level": level, "se": factor * math.sqrt(estimates[c]["var"]), "df": estimates[c]["df"],
            "image_lo": factor * image_lo, "image_hi": factor * image_hi,
            "seed_sd": factor * float(np.std(seed_means[:, c], ddof=1)) if k >= 2 else math.nan}
    pairs = _pairwise(labels, estimates, item_estimates, seed_means, alpha)
    points = np.array([[e["value"] for e in estimates]])
    point_summary = {key: float(column[0]) for key, column in _summarize_rows(factor * points).items()}
    mean_var, mean_df = _recipe_variance([(e["var"] / len(labels) ** 2, e["df"]) for e in item_estimates],
                                         [_seed_component(seed_means.mean(axis=1))] if k >= 2 else [])
    mean_lo, mean_hi = _interval({"value": float(points.mean()), "var": mean_var, "df": mean_df, "kind": "t",
                                  "bounds": (0.0, 1.0) if statistic == "percent" else None}, ci)
    bounds = {"mean": (mean_lo, mean_hi), **_box_summaries(pairs, len(labels)),
              **_extreme_summaries([_interval(e, 1.0 - alpha / len(labels)) for e in estimates], statistic)}
    summary = {}
    for key in SUMMARY_KEYS:
        scale = 1.0 if key in ("ratio", "ser") else factor
        summary[key] = {"value": point_summary[key], "lo": scale * bounds[key][0], "hi": scale * bounds[key][1]}
    if statistic != "percent":
        summary["ser"] = {"value": math.nan, "lo": math.nan, "hi": math.nan}
    for pair in pairs:
        pair.update(diff=factor * pair["diff"], lo=factor * pair["lo"], hi=factor * pair["hi"])
    return {"level": level, "n_seeds": k, "groups": result_groups, "summary": summary, "pairs": pairs,
            "equal_means_p": float(min(1.0, len(pairs) * min(p["p_value"] for p in pairs)))}


# ---------------------------------------------------------------------------------------------------------
# Paired comparisons


def _paired_entry(runs_a, runs_b, first, second, statistic, paired_seeds, n_boot, rng, ci):
    factor = 100.0 if statistic == "percent" else 1.0
    (k_a, n), k_b = runs_a.shape, runs_b.shape[0]
    differences = runs_a.mean(axis=0) - runs_b.mean(axis=0)
    item = _item_estimate(differences, first, second, statistic, (-1.0, 1.0), n_boot, rng, n_cap=n)
    seeds_a, seeds_b = runs_a.mean(axis=1), runs_b.mean(axis=1)
    seed_sd_difference = math.nan
    if k_a >= 2 and k_b >= 2:
        if paired_seeds:  # seed s of A against seed s of B: the per-seed differences carry the seed variance
            components = [_seed_component(seeds_a - seeds_b)]
            seed_sd_difference = factor * float(np.std(seeds_a - seeds_b, ddof=1))
        else:
            components = [_seed_component(seeds_a), _seed_component(seeds_b)]
        headline = _recipe_estimate(item, components)
        level, scope = "recipe", RECIPE_DIFFERENCE
    else:
        headline, level, scope = item, "model", MODEL_DIFFERENCE
    lo, hi = _interval(headline, ci)
    image_lo, image_hi = _interval(item, ci)
    return {"mean_diff": factor * item["value"], "lo": factor * lo, "hi": factor * hi, "p_value": _p_value(headline),
            "n": int(n), "level": level, "scope": scope, "se": factor * math.sqrt(headline["var"]),
            "df": headline["df"], "image_lo": factor * image_lo, "image_hi": factor * image_hi,
            "image_p_value": _p_value(item), "n_seeds_a": int(k_a), "n_seeds_b": int(k_b),
            "seed_sd_a": factor * float(np.std(seeds_a, ddof=1)) if k_a >= 2 else math.nan,
            "seed_sd_b": factor * float(np.std(seeds_b, ddof=1)) if k_b >= 2 else math.nan,
            "seeds_paired": bool(paired_seeds and level == "recipe"), "seed_sd_difference": seed_sd_difference}


def paired_test(a, b, groups=None, clusters=None, clusters2=None, statistic="mean", paired_seeds=False, n_boot=1000,
                seed=0, ci=0.95):
    """Model (or recipe) A vs B on the same items: mean of a - b with a CI and a two-sided p-value.

    a: (N,) or (k_a, N) per-item metric, one row per seed; b: (N,) or (k_b, N); column i is the same image
    (or pair) everywhere. statistic "percent": 0/1 values, differences reported in percentage points.
    clusters / clusters2: as in `group_intervals`. Items are averaged over each side's seeds first.
      - Item level (image_lo, image_hi, image_p_value; the headline when either side has one seed, level
        "model", scope MODEL_DIFFERENCE): Student t on the cluster-robust standard error of the mean
        difference, joined with the bootstrap-t interval (p = the larger of the two p-values, so never below
        2 / (1 + n_boot)) for continuous values without two-way clustering. No symmetry of the differences
        is assumed (a sign-flip test assumes it and rejects skewed zero-mean differences too often); the
        t part assumes an approximately normal mean, the bootstrap-t part corrects for skewness. Valid for
        "these trained models differ on items like these", not for a recipe.
      - Recipe level (headline when both sides have >= 2 seeds, level "recipe", scope RECIPE_DIFFERENCE): t
        interval whose variance adds to the item-level variance the seed-to-seed variance: of each side's
        per-seed mean / k (Welch-type), or with paired_seeds=True (row s of a and of b are one seed, e.g.
        the same initialization; needs k_a = k_b) of the per-seed differences / k; df of that seed part
        (k - 1 paired, Welch-Satterthwaite unpaired; see _recipe_variance). Both
        are valid whether or not paired seeds are correlated; the choice must follow the design, not the
        data. Assumes normal seed-to-seed variation (with 2-3 seeds nothing else can be checked).
    Returns {"overall": entry} plus, when `groups` (N,) is given, "groups": {label: entry computed within
    that group only, with p_holm = Holm-adjusted p over the groups}; entry = {mean_diff, lo, hi, p_value, n,
    level, scope, se, df, image_lo, image_hi, image_p_value, n_seeds_a, n_seeds_b, seed_sd_a, seed_sd_b,
    seeds_paired, seed_sd_difference} (seed_sd_*: sd over seeds of that side's per-seed mean, NaN with one
    seed; seed_sd_difference: of the per-seed differences when seeds are paired, else NaN).
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    _check_resampling(n_boot, ci)
    runs_a, runs_b = _as_runs(a, "a"), _as_runs(b, "b")
    if runs_a.shape[1] != runs_b.shape[1]:
        raise ValueError(f"paired values must cover the same items, got {runs_a.shape[1]} and {runs_b.shape[1]}")
    if paired_seeds and runs_a.shape[0] != runs_b.shape[0]:
        raise ValueError(f"paired seeds need as many seeds on both sides, got {runs_a.shape[0]} and {runs_b.shape[0]}")
    n = runs_a.shape[1]
    first, second = _item_codes(n, clusters, clusters2)
    rng = np.random.default_rng(seed)

    def entry(members):
        return _paired_entry(runs_a[:, members], runs_b[:, members], None if first is None else first[members],
                             None if second is None else second[members], statistic, paired_seeds, n_boot, rng, ci)

    result = {"overall": entry(np.ones(n, dtype=bool))}
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise ValueError(f"groups has shape {groups.shape} for {n} items: one label per item")
        labels, column = _group_labels(groups)
        result["groups"] = {label: entry(column == c) for c, label in enumerate(labels)}
        adjusted = holm([result["groups"][label]["p_value"] for label in labels])
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
