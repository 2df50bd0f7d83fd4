"""The seed planner: how many seeds per trained experiment a contrast's recipe-level test needs to detect an
effect, from the seed spread measured in its runs (the `planning` of a racecomp.contrasts result)."""
import math

import numpy as np
from scipy import stats

from racecomp.estimates import t_quantile

SPREAD_BOUND = 0.6  # plan from this upper confidence bound of each seed spread (2-3 seed pilots are uncertain)
POWER_DRAWS = 4000  # Monte Carlo draws of the seed spreads behind one planned power (fixed seed)


def seeds_for_power(planning, effect, power=0.8, alpha=0.05, max_seeds=100, bound=SPREAD_BOUND):
    """Seeds per trained experiment at which the contrast's recipe-level test detects a true |effect| (reported
    units) with probability `power` at level `alpha` (planned_power); None when a trained experiment has one
    seed (no spread to plan from), math.inf when more than max_seeds are needed. From 3-seed pilots of a spread
    that needs 6 seeds, planning from the 60% bound reaches 80% power in three quarters of pilots, from the
    estimate itself in half (bench_contrasts "planner")."""
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
    """Power of the recipe-level t test at `seeds` seeds per trained experiment against a true |effect|
    (reported units). Model: each experiment's per-seed value = seed effect (sigma_j^2) + item-by-seed noise
    (nu_j, known) + the shared item part, all normal; sigma_j^2 + nu_j taken at its `bound` upper confidence
    bound from the k_j pilot seeds (x (k_j - 1) / chi^2 quantile at 1 - bound; None: the estimate). The test's
    seed parts are max(0, (sigma_j^2 + nu_j) X_j - nu_j) / seeds, X_j ~ chi^2(seeds - 1) / (seeds - 1), t with
    their Welch-Satterthwaite df: exact over the normal error, Monte Carlo (fixed seed) over the X_j."""
    if seeds < 2:
        return 0.0  # one seed: no recipe-level test
    delta = abs(effect) / planning["factor"]
    pilots = planning["seed_parts"]  # (spread, noise, k) of each trained experiment (or of the paired contrast)
    spreads = [spread if bound is None else spread * (k - 1) / stats.chi2.ppf(1.0 - bound, k - 1)
               for spread, _, k in pilots]
    noises = np.asarray([noise for _, noise, _ in pilots], dtype=np.float64)
    totals = np.asarray([max(0.0, s - noise) for s, (_, noise, _) in zip(spreads, pilots)], dtype=np.float64) + noises
    shared = max(0.0, planning["item_var"] - sum(noise / k for _, noise, k in pilots))
    true_var = shared + totals.sum() / seeds
    if true_var <= 0:
        return 1.0 if delta > 0 else alpha
    spread = np.random.default_rng(0).chisquare(seeds - 1, (POWER_DRAWS, len(totals))) / (seeds - 1)
    parts = np.maximum(0.0, totals * spread - noises) / seeds  # (draws, experiments)
    seed_var = parts.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(seed_var > 0, seed_var ** 2 / np.sum(parts * parts, axis=1) * (seeds - 1), seeds - 1.0)
    grid = np.geomspace(seeds - 1.0, len(totals) * (seeds - 1.0), 64)  # df lie between seeds - 1 and their sum
    critical = np.interp(df, grid, t_quantile(1.0 - alpha / 2.0, grid))
    se, se_hat = math.sqrt(true_var), np.sqrt(shared + noises.sum() / seeds + seed_var)
    upper = stats.norm.cdf((delta - critical * se_hat) / se)
    lower = stats.norm.cdf((-delta - critical * se_hat) / se)
    return float(np.mean(upper + lower))
