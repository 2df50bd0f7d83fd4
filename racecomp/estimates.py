"""One mean from dependent items: the inputs checked, variance, df, interval, p-value (conventions:
racecomp.fairness).

An estimate is a dict: value, var, df, kind ("t"; "t+bootstrap-t" with replicates t_star; "wilson" with
effective size n_eff), bounds ((lo, hi) or None) and units ((n,) one sample, (n_a, n_b) a difference of two
independent ones; items or effective clusters: what a sample with no spread can claim, exact_p)."""
import functools
import math

import numpy as np
from scipy import stats

_MAX_DRAWS_PER_CHUNK = 4_000_000  # resample indices held in memory at once (about 32 MB of int64)
MIN_BOOTSTRAP_CLUSTERS = 15  # fewer clusters: bootstrap-t's se* are too coarse to studentize; t alone
STATISTICS = {"mean": 1.0, "percent": 100.0}  # statistic: reported units per unit of the values
RECIPE_DIFFERENCE = "recipe difference (seed and item variance)"
MODEL_DIFFERENCE = "model difference (1 seed; not a recipe effect)"


def as_runs(values, name="values"):
    """(k, N) float array of per-seed per-item values: a 1-D input is one run."""
    runs = np.asarray(values, dtype=np.float64)
    if runs.ndim == 1:
        runs = runs[None, :]
    if runs.ndim != 2 or runs.size == 0:
        raise ValueError(f"{name} must be a non-empty (N,) or (seeds, N) array, got shape {runs.shape}")
    if not np.all(np.isfinite(runs)):
        raise ValueError(f"{name} contain NaN or inf (e.g. PSNR of an identical pair): filter or cap them first")
    return runs


def item_codes(n, clusters, clusters2):
    """(first, second) integer cluster codes of n items in one id space; None where not given."""
    if clusters is None:
        if clusters2 is not None:
            raise ValueError("clusters2 (second identity) needs clusters (first identity)")
        return None, None
    columns = [np.asarray(clusters)] + ([] if clusters2 is None else [np.asarray(clusters2)])
    for name, column in zip(("clusters", "clusters2"), columns):
        if column.shape != (n,):
            raise ValueError(f"{name} has shape {column.shape} for {n} items: one entry per item")
    try:
        codes = np.unique(np.concatenate(columns), return_inverse=True)[1].reshape(-1)
    except TypeError:  # ids of mixed types: compare them as text
        codes = np.unique(np.concatenate([c.astype(str) for c in columns]), return_inverse=True)[1].reshape(-1)
    return codes[:n], None if clusters2 is None else codes[n:]


def group_labels(groups, n, name="groups"):
    """(sorted distinct labels as plain Python values, (n,) column of codes) of n items' labels."""
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"{name} has shape {groups.shape} for {n} items: one label per item")
    unique, column = np.unique(groups, return_inverse=True)
    return [label.item() if isinstance(label, np.generic) else label for label in unique], column.reshape(-1)


def reported(headline, item, ci, factor):
    """{lo, hi, se, df} of a headline estimate, {image_lo, image_hi} of its item-level part, x factor."""
    (lo, hi), (image_lo, image_hi) = interval(headline, ci), interval(item, ci)
    return {"lo": factor * lo, "hi": factor * hi, "se": factor * math.sqrt(headline["var"]), "df": headline["df"],
            "image_lo": factor * image_lo, "image_hi": factor * image_hi}


def t_quantile(q, df):
    """x with P(T <= x) = q for Student's t with df > 0 (fractional; inf = normal); q and df may be arrays."""
    return stats.t.ppf(q, df) if np.ndim(q) or np.ndim(df) else _scalar_t_quantile(q, df)


@functools.lru_cache(maxsize=4096)  # the tables ask for the same few (q, df) many times; scipy's call ~50 us
def _scalar_t_quantile(q, df):
    return float(stats.t.ppf(q, df))


def two_sided_p(value, variance, df):
    """Two-sided p of value / sqrt(variance) against t(df); variance 0 gives the limit (1 if value is 0, else 0)."""
    if variance == 0.0:
        return 1.0 if value == 0.0 else 0.0
    if not math.isfinite(variance):
        return 1.0
    return min(1.0, 2.0 * float(stats.t.sf(abs(value) / math.sqrt(variance), df)))


def holm(p_values):
    """Holm step-down adjusted p-values (family-wise error), in the order given."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, stepped)
    return adjusted


def _cluster_sums(residuals, first, second):
    """(per-cluster residual sums, sizes, sum over identity pairs of their shared sum squared). Two-way: an item
    is in both its identities' clusters, so items sharing both are counted twice; the third term removes that."""
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
    shared_index = np.unique(low * size + high, return_inverse=True)[1].reshape(-1)
    shared = np.bincount(shared_index, weights=residuals[distinct])
    return sums[present], sizes[present], float(shared @ shared)


def mean_variance(values, first=None, second=None):
    """(variance of the mean of (N,) values, df); first / second: (N,) integer cluster codes or None.
    s^2 / n, df n - 1; CR1 cluster-robust, two-way dyadic with second (Aronow et al. 2015; floored at s^2 / n),
    df = effective clusters (sum n_g^2)^2 / sum n_g^4 - 1 (Carter et al. 2017). inf for a single cluster."""
    n = len(values)
    constant = np.all(np.abs(values - values.mean()) <= 1e-12 * max(1.0, float(np.max(np.abs(values)))))
    residuals = np.zeros(n) if constant else values - values.mean()  # no spread, not a spread of rounding
    if first is None:
        if n < 2:
            return math.inf, 1.0
        return float(residuals @ residuals) / (n * (n - 1)), float(n - 1)
    sums, sizes, shared = _cluster_sums(residuals, first, second)
    clusters = min(len(sums), n)
    squared = sizes * sizes
    effective = min(float(squared.sum() ** 2 / np.sum(squared * squared)), float(n))
    if clusters < 2 or effective <= 1.0 + 1e-9:
        return math.inf, 1.0
    variance = clusters / (clusters - 1.0) * (float(sums @ sums) - shared) / (n * n)
    if second is not None:
        variance = max(variance, float(residuals @ residuals) / (n * (n - 1)))
    return variance, effective - 1.0


def bootstrap_t(values, first, n_boot, rng):
    """Studentized means (mean* - mean) / se* of n_boot cluster-bootstrap draws (first: codes or None).
    Draws with no spread (se* < 1e-10 of the data's; common with ties) are left out, not given |t*| ~ 1e8."""
    residuals = values - values.mean()
    if first is None:
        sums, sizes = residuals, np.ones(len(values))
    else:
        sums, sizes, _ = _cluster_sums(residuals, first, None)
    n_clusters = len(sums)
    factor = n_clusters / (n_clusters - 1.0)
    floor = 1e-10 * math.sqrt(factor * float(sums @ sums)) / sizes.sum()
    # Clusters of one item: their size sums are the cluster count and sums * sizes are the sums, so two columns
    # are resampled, not five (bit for bit the same numbers, 2.5x less work).
    columns = [sums, sums * sums] + ([] if first is None else [sizes, sums * sizes, sizes * sizes])
    chunk = max(1, _MAX_DRAWS_PER_CHUNK // n_clusters)
    studentized = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        picks = rng.integers(0, n_clusters, size=(stop - start, n_clusters))
        total, square, *rest = (column.take(picks).sum(axis=1) for column in columns)  # take(): faster than [picks]
        size, cross, size_square = rest or (np.full(stop - start, float(n_clusters)), total,
                                            np.full(stop - start, float(n_clusters)))
        mean = total / size
        raw = np.maximum(square - 2.0 * mean * cross + mean * mean * size_square, 0.0)
        se = np.sqrt(factor * raw) / size
        with np.errstate(divide="ignore", invalid="ignore"):
            studentized[start:stop] = np.where(se > floor, mean / se, np.nan)
    return studentized[~np.isnan(studentized)]


def item_estimate(values, first, second, statistic, extremes, n_boot, rng, n_cap):
    """Estimate of the mean of (N,) values with cluster codes first / second. "percent" with extremes (0, 1):
    Wilson, Korn-Graubard effective size p(1-p)/var (df at p = 0 or 1) capped at n_cap; "mean": t, joined
    with bootstrap-t (n_boot draws from rng) without two-way clustering from MIN_BOOTSTRAP_CLUSTERS clusters."""
    value = float(values.mean())
    var, df = mean_variance(values, first, second)
    estimate = {"value": value, "var": var, "df": df, "kind": "t", "bounds": None,
                "units": (float(len(values)) if first is None else df + 1.0,)}
    if statistic == "percent":
        estimate["bounds"] = extremes
        if var == 0.0:
            # No spread (e.g. all at 100%): one pseudo-item at each extreme, each its own cluster (Agresti-Coull's
            # plus two), so the se is not 0. Only then: with spread they inflate it (1.9x at p = 0.99, n = 100).
            padded = np.append(values, extremes)
            if first is not None:
                top = int(max(first.max(), -1 if second is None else second.max())) + 1
                first = np.append(first, [top, top + 1])
                second = None if second is None else np.append(second, [top, top + 1])
            estimate["var"] = mean_variance(padded, first, second)[0]
        if extremes == (0.0, 1.0):
            if not math.isfinite(var):
                n_eff = 0.0
            elif 0.0 < value < 1.0 and var > 0.0:
                n_eff = value * (1.0 - value) / var
            else:
                n_eff = df  # at p = 0 or 1 the variance says nothing: the same n - 1 convention
            estimate.update(kind="wilson", n_eff=min(n_eff, n_cap))
    elif second is None and math.isfinite(var) and var > 0:
        clusters = len(values) if first is None else len(np.unique(first))
        t_star = bootstrap_t(values, first, n_boot, rng) if clusters >= MIN_BOOTSTRAP_CLUSTERS else np.empty(0)
        if len(t_star) >= max(1, n_boot // 2):  # else too many draws without spread to trust the rest
            estimate.update(kind="t+bootstrap-t", t_star=t_star)
    return estimate


def combine(components):
    """(variance, Satterthwaite df) of a sum of independent components [(variance, df)]."""
    variance = sum(v for v, _ in components)
    if not math.isfinite(variance):
        return math.inf, 1.0
    positive = [(v, d) for v, d in components if v > 0]
    if len(positive) == 1:
        return variance, positive[0][1]  # the component's own df, not v^2 / (v^2 / d) rounded
    denominator = sum(v * v / d for v, d in positive)
    return variance, (variance * variance / denominator if denominator > 0 else math.inf)


def seed_parts(runs, weights=None, strata=None):
    """(spread, noise, k) of (k, N) runs, (N,) weights (default 1 / N), (N,) strata codes (ints >= 0): spread =
    variance over seeds of runs @ weights; noise = sum_i w_i^2 MS_int, seed x item mean square per stratum."""
    runs = np.asarray(runs, dtype=np.float64)
    k, n = runs.shape
    if k < 2:
        raise ValueError(f"seed-to-seed variance needs at least 2 seeds, got {k}")
    scale = max(1.0, float(np.max(np.abs(runs))))
    weights = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, dtype=np.float64)
    seed_values = runs @ weights
    spread = 0.0 if np.ptp(seed_values) <= 1e-12 * scale else float(np.var(seed_values, ddof=1))
    strata = np.zeros(n, dtype=int) if strata is None else np.asarray(strata)
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


def seed_component(runs, weights=None, strata=None, parts=None):
    """(variance, df k - 1) of the seed part of sum_i w_i (seed mean of item i) from (k >= 2, N) runs:
    max(0, spread - noise) / k of seed_parts (crossed form), or None when runs are identical item by item.
    df k - 1 even at variance 0: seeds whose means tie are not a deterministic recipe."""
    spread, noise, k = seed_parts(runs, weights, strata) if parts is None else parts
    runs = np.asarray(runs, dtype=np.float64)
    if np.all(np.ptp(runs, axis=0) <= 1e-12 * max(1.0, float(np.max(np.abs(runs))))):
        return None
    return max(0.0, spread - noise) / k, float(k - 1)


def recipe_variance(item_components, seed_components):
    """(variance, df) of item components [(variance, df)] plus seed_component results (None adds nothing), with
    the seed parts' df (the smallest when all are 0); the items' df only when every seed part is None.
    Seed df are not pooled with item df: they would grow exactly when the seed variance is underestimated
    (7.6% false positives at 5% with 3 paired seeds)."""
    seed_components = [c for c in seed_components if c is not None]
    item_var, item_df = combine(item_components)
    if not seed_components:
        return item_var, item_df
    seed_var, seed_df = combine(seed_components)
    if seed_var == 0.0:
        seed_df = min(d for _, d in seed_components)
    return item_var + seed_var, seed_df


def recipe_estimate(item, seed_components):
    """Recipe-level t estimate of an item-level one and its seed_component results (recipe_variance)."""
    var, df = recipe_variance([(item["var"], item["df"])], seed_components)
    return {"value": item["value"], "var": var, "df": df, "kind": "t", "bounds": item["bounds"], "units": item["units"]}


def exact_p(units):
    """Exact p of samples with no spread: sign test 2^(1-n), or two separated samples 2 / C(n_a + n_b, n_a)."""
    if len(units) == 1:
        return min(1.0, 2.0 ** (1.0 - units[0]))
    a, b = units
    return min(1.0, 2.0 * math.exp(math.lgamma(a + 1.0) + math.lgamma(b + 1.0) - math.lgamma(a + b + 1.0)))


def interval(estimate, level):
    """(lo, hi) at two-sided confidence `level`, clipped to the bounds. No spread: the value if exact_p allows.
    The joined kind is the union of t and bootstrap-t: t under-covers skewed means, bootstrap-t heavy tails."""
    value, var, df, kind = estimate["value"], estimate["var"], estimate["df"], estimate["kind"]
    tail = (1.0 - level) / 2.0
    if kind == "wilson":
        n, p, z = estimate["n_eff"], value, t_quantile(1.0 - tail, df)
        if n <= 0.0 or z * z / n > 1e12:
            lo, hi = -math.inf, math.inf  # Wilson's limit: nothing known
        else:
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
        if kind == "t+bootstrap-t":
            lo = min(lo, value - percentile(estimate["t_star"], 1.0 - tail) * se)
            hi = max(hi, value - percentile(estimate["t_star"], tail) * se)
    if estimate["bounds"] is not None:
        lo, hi = max(lo, estimate["bounds"][0]), min(hi, estimate["bounds"][1])
    return float(lo), float(hi)


def p_value(estimate):
    """Two-sided p of value = 0: the smallest 1 - level at which `interval` excludes 0."""
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
    """The q at which percentile(ordered, q) reaches x, given count replicates below x (or at most x)."""
    if count == 0:
        return 0.0
    if count == len(ordered):
        return 1.0
    low, high = ordered[count - 1], ordered[count]
    fraction = 0.0 if high == low else (x - low) / (high - low)
    return (count - 1 + min(1.0, max(0.0, fraction))) / (len(ordered) - 1)


def percentile(replicates, q):
    """Linearly interpolated percentile (numpy's default), safe with infinite replicates."""
    ordered = np.sort(replicates)
    position = q * (len(ordered) - 1)
    below = int(np.floor(position))
    above = min(below + 1, len(ordered) - 1)
    weight = position - below
    if weight == 0 or ordered[below] == ordered[above]:
        return float(ordered[below])  # also avoids inf - inf when both neighbours are infinite
    return float(ordered[below] + weight * (ordered[above] - ordered[below]))
