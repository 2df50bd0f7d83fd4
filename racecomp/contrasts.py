"""Contrasts between experiments (cells) on the same items: linear combinations of per-race means and changes
of a fairness summary across races (conventions: racecomp.fairness)."""
import math

import numpy as np

from racecomp import estimates
from racecomp.estimates import (MODEL_DIFFERENCE, RECIPE_DIFFERENCE, STATISTICS, as_runs, group_labels, item_codes,
                                reported)

SUMMARY_CHANGE_KEYS = ("mean", "worst", "gap", "std", "ser")


def _inputs(cells, strata, clusters, clusters2, exact, paired_seeds):
    """Checked (runs, strata codes, first, second cluster codes, exact flags) of a contrast's arguments."""
    runs = [as_runs(cell, f"cell {index}") for index, cell in enumerate(cells)]
    n = runs[0].shape[1]
    if any(r.shape[1] != n for r in runs):
        raise ValueError(f"every cell must cover the same items, got {[r.shape[1] for r in runs]}")
    exact = [False] * len(runs) if exact is None else list(exact)
    for j, flag in enumerate(exact):
        if flag and runs[j].shape[0] >= 2 and estimates.seed_component(runs[j]) is not None:
            raise ValueError(f"cell {j} is marked exact but its seeds differ item by item")
    if paired_seeds and len({r.shape[0] for r, flag in zip(runs, exact) if not flag}) > 1:
        raise ValueError("paired seeds need as many seeds in every trained cell")
    _, column = group_labels(strata, n, "strata")
    return (runs, column, *item_codes(n, clusters, clusters2), exact)


def linear_contrast(cells, weights, strata, clusters=None, clusters2=None, exact=None, paired_seeds=False,
                    statistic="mean", ci=0.95):
    """t estimate of sum over cells j and items i of weights[j][i] x (mean over cell j's seeds of item i).

    cells: (k_j, N) values on the same items; weights: (N,) per cell; strata: (N,) races, independent; exact:
    per cell, True when it needs no training (no seed variance); paired_seeds: trained cells share seeds by row.
    Returns {value, lo, hi, p_value, se, df, level, scope, image_lo, image_hi, image_se, image_df (the item
    part alone), n_seeds, planning (for racecomp.planner)}."""
    runs, column, first, second, exact = _inputs(cells, strata, clusters, clusters2, exact, paired_seeds)
    weights = [np.asarray(w, dtype=np.float64) for w in weights]
    if len(weights) != len(runs) or any(w.shape != column.shape for w in weights):
        raise ValueError("one (N,) weight vector per cell")
    return _contrast(runs, weights, column, first, second, exact, paired_seeds, statistic, ci)


def _contrast(runs, weights, column, first, second, exact, paired_seeds, statistic, ci, value=None):
    """linear_contrast of checked inputs (column: the strata's codes), reporting `value` if given (the plug-in
    value of a nonlinear estimate whose linearization this is)."""
    z = sum(w * r.mean(axis=0) for w, r in zip(weights, runs))  # (N,) each item's share of the contrast
    components, units = [], 0.0
    for c in np.flatnonzero(np.bincount(column, weights=sum(np.abs(w) for w in weights)) > 0):
        members = column == c
        n_c = int(members.sum())
        var, df = estimates.mean_variance(z[members], None if first is None else first[members],
                                          None if second is None else second[members])
        components.append((n_c * n_c * var, df))
        units += n_c if first is None else df + 1.0
    item_var, item_df = estimates.combine(components) if components else (0.0, math.inf)
    item = {"value": float(z.sum()) if value is None else value, "var": item_var, "df": item_df, "kind": "t",
            "bounds": None, "units": (units,)}
    trained = [j for j in range(len(runs)) if not exact[j]]
    recipe = bool(trained) and all(runs[j].shape[0] >= 2 for j in trained)
    seed_runs = [(runs[j], weights[j]) for j in trained] if recipe else []
    if recipe and paired_seeds:  # exact cells broadcast: they cancel seed to seed
        seed_runs = [(sum(w * r for w, r in zip(weights, runs)), np.ones(len(z)))]
    parts = [estimates.seed_parts(r, w, column) for r, w in seed_runs]
    headline = item if not recipe else estimates.recipe_estimate(
        item, [estimates.seed_component(r, parts=part) for (r, _), part in zip(seed_runs, parts)])
    factor = STATISTICS[statistic]
    return {"value": factor * headline["value"], **reported(headline, item, ci, factor),
            "p_value": estimates.p_value(headline), "level": "recipe" if recipe else "model",
            "scope": RECIPE_DIFFERENCE if recipe else MODEL_DIFFERENCE, "image_se": factor * math.sqrt(item_var),
            "image_df": item_df, "n_seeds": [int(r.shape[0]) for r in runs],
            "planning": {"item_var": item_var, "seed_parts": parts, "factor": factor}}


def summary_gradient(means, key, statistic="mean"):
    """(value, (G,) gradient) of a SUMMARY_CHANGE_KEYS summary of (G,) group means (fractions for percent; ser
    = (1 - worst) / (1 - best), percent only), linearized at the observed worst and best groups as if they were
    known: near ties, SER's interval and every seed plan built on it are optimistic."""
    means = np.asarray(means, dtype=np.float64)
    g = len(means)
    worst, best = int(np.argmin(means)), int(np.argmax(means))
    gradient = np.zeros(g)
    if key == "mean":
        gradient[:] = 1.0 / g
        value = means.mean()
    elif key == "worst":
        gradient[worst], value = 1.0, means[worst]
    elif key == "gap":
        gradient[best], gradient[worst] = 1.0, -1.0
        value = means[best] - means[worst]
    elif key == "std":
        value = float(means.std(ddof=1))
        if value > 0:
            gradient = (means - means.mean()) / ((g - 1) * value)
    elif key == "ser" and statistic == "percent":
        errors_worst, errors_best = 1.0 - means[worst], 1.0 - means[best]
        if errors_best <= 0:
            return math.inf, gradient
        gradient[worst], gradient[best] = -1.0 / errors_best, errors_worst / errors_best ** 2
        value = errors_worst / errors_best
    else:
        raise ValueError("SER is for accuracies (statistic 'percent')" if key == "ser" else f"unknown summary {key!r}")
    return float(value), gradient


def summary_change(a, b, strata, key, clusters=None, clusters2=None, exact=(False, False), paired_seeds=False,
                   statistic="mean", relative=False, ci=0.95):
    """Change f(A) - f(B), or f(A) / f(B) - 1 if relative (mean, worst), of a SUMMARY_CHANGE_KEYS summary of the
    population race means; a, b: (k, N) values; other arguments as in linear_contrast. mean and ser: the
    linearized contrast (summary_gradient); worst and gap: extreme_change_bounds; std: spread_change.
    Returns linear_contrast's keys, a and b (each side's summary) and ties (_close_extremes); ratios for ser
    and relative changes."""
    runs, column, first, second, exact = _inputs([a, b], strata, clusters, clusters2, exact, paired_seeds)
    runs_a, runs_b = runs
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

    def contrast(race_gradient_a, race_gradient_b, reported_as="mean", plug_in=None):  # of A's and B's race means
        weights = [np.asarray(g, dtype=np.float64)[column] / counts[column] for g in (race_gradient_a, race_gradient_b)]
        return _contrast(runs, weights, column, first, second, exact, paired_seeds, reported_as, ci, plug_in)

    # The linearized contrast at the plug-in value: the answer for mean and ser; level, scope, planning for all.
    reported_as = "mean" if ratio_key else statistic
    result = contrast(gradient_a, -gradient_b, reported_as, value)
    factor = STATISTICS[reported_as]
    if key in ("worst", "gap"):
        answer = extreme_change_bounds(means_a, means_b, contrast, key, ci)
        if relative:  # the denominator's own error is second order (a few % of the mean: PSNR, accuracy)
            for level in ("", "image_"):
                answer[f"{level}lo"], answer[f"{level}hi"] = sorted((answer[f"{level}lo"] / value_b,
                                                                     answer[f"{level}hi"] / value_b))
    elif key == "std":
        answer, value_a, value_b = spread_change(means_a, means_b, contrast, ci)
        value = value_a - value_b
    else:
        answer = {}
    result.update({name: v if name == "p_value" else factor * v for name, v in answer.items()})
    result.update(value=factor * min(max(value, answer.get("lo", -math.inf)), answer.get("hi", math.inf)),
                  a=factor * value_a, b=factor * value_b,
                  ties=_close_extremes(key, means_a, means_b, runs_a, runs_b, column, counts))
    if reported_as == "percent":  # a change of percentages lies in [-100, 100]; bounds over every race may not
        for level in ("", "image_"):
            result[f"{level}lo"] = max(result[f"{level}lo"], -100.0)
            result[f"{level}hi"] = min(result[f"{level}hi"], 100.0)
    return result


def _levels(contrasts):
    """{level: (values, se, df) arrays over the contrasts}: level "" the headline, "image_" the item part."""
    values = np.array([c["value"] for c in contrasts], dtype=np.float64)
    return {level: (values, np.array([c[f"{level}se"] for c in contrasts], dtype=np.float64),
                    np.array([c[f"{level}df"] for c in contrasts], dtype=np.float64)) for level in ("", "image_")}


def extreme_change_bounds(means_a, means_b, race_contrast, key, ci):
    """{lo, hi, p_value, image_lo, image_hi} of the change from (G,) means_b to means_a of the worst race's mean
    or of the gap, valid whichever race is worst or best: with c_rs = A's race r - B's race s (race_contrast),
    the worst change lies in [min_r max_s lo_rs, max_s min_r hi_rs], each c_rs at one-sided alpha / (2G)
    (alpha / (4G) for the gap: Bonferroni over the unknown extreme's row or column)."""
    g = len(means_a)
    eye = np.eye(g)
    contrasts = [race_contrast(eye[r], -eye[s]) for r in range(g) for s in range(g)]
    statements = 2 * g if key == "worst" else 4 * g

    def bounds(values, se, df, alpha):
        with np.errstate(invalid="ignore"):  # 0 x inf where a contrast has no spread
            half = np.where(se == 0.0, 0.0, estimates.t_quantile(1.0 - alpha / statements, df) * se)
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
    """({lo, hi, p_value, image_lo, image_hi}, sd_A, sd_B) of sd(true race means of A) - sd(of B), from each
    side's noise-corrected V = s^2(means) - tr(C Sigma) / (G - 1): D = V_A - V_B by t on its gradient's se;
    its bounds divided by those of sd_A + sd_B, capped by sd(A - B)'s upper bound (bench_contrasts "spread")."""
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
        half = estimates.t_quantile(1.0 - (1.0 - ci) / 2.0, df) * se
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
    if key not in ("worst", "gap", "ser"):
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
