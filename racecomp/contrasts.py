"""Contrasts between experiments (cells) on the same items: linear combinations of per-race means, and changes
of a fairness summary across races. Conventions: racecomp.fairness; each result carries the `planning` inputs
of racecomp.planner."""
import math

import numpy as np

from racecomp import estimates
from racecomp.fairness import (MODEL_DIFFERENCE, RECIPE_DIFFERENCE, STATISTICS, as_runs, group_labels, item_codes,
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
                    statistic="mean", ci=0.95, value=None):
    """Estimate of sum over cells j and items i of weights[j][i] x (mean over cell j's seeds of item i).

    cells: (k_j, N) per-seed per-item values, the same items in the same order; weights: (N,) per cell, constant
    within each stratum; strata: (N,) races (independent strata); clusters / clusters2: (N,) ids; exact: per
    cell, True for an experiment without training (no seed variance); paired_seeds: every trained cell has the
    same seeds in the same rows; value: the plug-in value reported instead of the linear one (the estimate of
    which this is a linearization). Level "recipe" when every trained cell has >= 2 seeds: item part (cluster-
    robust, summed over strata) plus each trained cell's seed_component (or the per-seed contrast's when
    paired), else "model". t only, no bootstrap-t.
    Returns {value, lo, hi, p_value, se, df, level, scope, image_lo, image_hi, image_se, image_df, n_seeds,
    planning}: image_* the item part alone, planning the input of planner.seeds_for_power.
    """
    runs, column, first, second, exact = _inputs(cells, strata, clusters, clusters2, exact, paired_seeds)
    weights = [np.asarray(w, dtype=np.float64) for w in weights]
    if len(weights) != len(runs) or any(w.shape != column.shape for w in weights):
        raise ValueError("one (N,) weight vector per cell")
    return _contrast(runs, weights, column, first, second, exact, paired_seeds, statistic, ci, value)


def _contrast(runs, weights, column, first, second, exact, paired_seeds, statistic, ci, value=None):
    """linear_contrast of checked inputs (column: the strata's codes)."""
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
    """(value, (G,) gradient) of a summary of (G,) per-group means (fractions for percent): mean, worst, best,
    gap, std (ddof 1), ser = (1 - worst) / (1 - best) (percent only). worst / best / gap / ser are linearized
    at the observed extremes, as if known: near ties the seed plans built on them are optimistic."""
    means = np.asarray(means, dtype=np.float64)
    g = len(means)
    worst, best = int(np.argmin(means)), int(np.argmax(means))
    gradient = np.zeros(g)
    if key == "mean":
        gradient[:] = 1.0 / g
        return float(means.mean()), gradient
    if key in ("worst", "best"):
        gradient[worst if key == "worst" else best] = 1.0
        return float(means[worst if key == "worst" else best]), gradient
    if key == "gap":
        gradient[best], gradient[worst] = 1.0, -1.0
        return float(means[best] - means[worst]), gradient
    if key == "std":
        sd = float(means.std(ddof=1))
        if sd > 0:
            gradient = (means - means.mean()) / ((g - 1) * sd)
        return sd, gradient
    if key != "ser":
        raise ValueError(f"unknown summary {key!r}")
    if statistic != "percent":
        raise ValueError("SER is for accuracies (statistic 'percent')")
    errors_worst, errors_best = 1.0 - means[worst], 1.0 - means[best]
    if errors_best <= 0:
        return math.inf, gradient
    gradient[worst] = -1.0 / errors_best
    gradient[best] = errors_worst / errors_best ** 2
    return float(errors_worst / errors_best), gradient


def summary_change(a, b, strata, key, clusters=None, clusters2=None, exact=(False, False), paired_seeds=False,
                   statistic="mean", relative=False, ci=0.95):
    """Change of a summary (SUMMARY_CHANGE_KEYS) of the population race means from experiment B to A on the
    same items: f(A) - f(B), or f(A) / f(B) - 1 with relative (mean and worst only).

    a, b: (k, N) per-seed per-item values; strata: (N,) races; other arguments as in linear_contrast. mean and
    ser: the linearized contrast (ser at the observed extremes: optimistic near ties); worst and gap:
    extreme_change_bounds (valid whichever race is worst); std: spread_change. Units: the metric's (points for
    percent), ratios for ser and relative changes. Returns linear_contrast's keys plus a and b (each side's
    summary) and ties: whether A's or B's worst or best race is within 2 item-level se of the runner-up.
    """
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
    """{lo, hi, p_value, image_lo, image_hi} (fractions for percent) of the change of the worst race's mean
    ("worst") or of max - min ("gap") from (G,) means_b to means_a, valid whichever race is worst or best.

    c_rs = A's race r - B's race s (race_contrast(g_a, g_b) -> a linear_contrast result); the worst change
    lies in [min_r max_s lo_rs, max_s min_r hi_rs] (the best's likewise, transposed), each c_rs bounded at
    one-sided alpha / (2G) (worst) or alpha / (4G) (gap): Bonferroni over the G statements of the unknown true
    extreme's row or column. p-value: the smallest alpha whose interval excludes 0 (bisection)."""
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
    """(answer {lo, hi, p_value, image_lo, image_hi}, sd_A, sd_B) of the change of the population spread across
    races, sd(true race means of A) - sd(of B), in fractions for percent; race_contrast as in extreme_change_bounds.

    Each side's V = s^2(means) - tr(C Sigma) / (G - 1) (C centring, Sigma the means' covariance): a fair side
    gets V near 0, not the noise's spread; sd = sqrt(max(V, 0)). D = V_A - V_B has a t test on the se of its
    gradient at the observed means (the p-value); the sd change D / (sd_A + sd_B) divides D's bounds by those
    of sd_A + sd_B (from sqrt(V_A + V_B) to sqrt(2 (V_A + V_B))), capped by the upper bound of sd(A - B) as
    |sd_A - sd_B| <= sd(A - B). Coverage 0.93-0.97 with one fair side (bench_contrasts "spread")."""
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
