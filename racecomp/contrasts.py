"""Contrasts between experiments: linear combinations of per-race means of several experiments (cells) on the
same items, and changes of a fairness summary across races (delta method, and bounds that hold near ties).

Conventions as in racecomp.fairness (values (k, N) per seed and item, clusters, recipe vs model level); each
result carries the inputs of the seed planner (racecomp.planner).
"""
import math

import numpy as np
from scipy import stats

from racecomp import estimates
from racecomp.fairness import MODEL_DIFFERENCE, RECIPE_DIFFERENCE, as_runs, group_labels, item_codes


def _cell_runs(cells):
    runs = [as_runs(cell, f"cell {index}") for index, cell in enumerate(cells)]
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
    first, second = item_codes(n, clusters, clusters2)
    _, column = group_labels(strata)
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
    _, column = group_labels(strata)
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
    first, second = item_codes(len(column), clusters, clusters2)

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
