"""Regression tests of the statistics review (issue 21): each reproduces a case the earlier code got wrong or
misleading, with the answer worked out by hand."""
import math

import numpy as np
import pytest

from racecomp import estimates, fairness


def two_seed_pairs(correct_per_seed, n=100, seed=0):
    """(2, 2n) 0/1 values: two races of n pairs; in each seed and race the given count is right, on pairs
    drawn independently per seed (so the seeds disagree on many pairs while their means may tie)."""
    rng = np.random.default_rng(seed)
    runs = np.zeros((2, 2 * n))
    for s, count in enumerate(correct_per_seed):
        for race in range(2):
            runs[s, race * n + rng.choice(n, count, replace=False)] = 1.0
    return runs, np.repeat(["A", "B"], n)


# Item 1: tied seed means are not a deterministic recipe


def test_seeds_whose_means_tie_keep_the_seeds_df():
    tied, groups = two_seed_pairs((77, 77))
    result = fairness.group_intervals(tied, groups, "percent", n_boot=10)
    entry = result["groups"]["A"]
    assert entry["df"] == 1.0 and entry["level"] == "recipe"
    # Same count right on different pairs: the item-by-seed disagreement must not buy 99 df. With df 1 the
    # half-width is t(0.975, 1) = 12.7 standard errors of the seed-averaged items.
    items = tied[:, :100].mean(axis=0)
    se = math.sqrt(np.var(items, ddof=1) / 100)
    assert entry["se"] == pytest.approx(100 * se)
    assert entry["value"] - entry["lo"] == pytest.approx(100 * estimates.t_quantile(0.975, 1) * se)
    # One pair more in one seed gives an interval of the same kind, not one 4x wider.
    flipped = tied.copy()
    flipped[0, np.flatnonzero(flipped[0, :100] == 0)[0]] = 1.0
    other = fairness.group_intervals(flipped, groups, "percent", n_boot=10)["groups"]["A"]
    assert other["df"] == 1.0
    assert 0.7 < (entry["value"] - entry["lo"]) / (other["value"] - other["lo"]) < 1.3
    # The pairwise difference and the paired-seed comparison share the rule.
    assert all(pair["df"] == 1.0 for pair in result["pairs"])
    paired = fairness.paired_test(tied, tied[::-1], groups=groups, statistic="percent", paired_seeds=True, n_boot=10)
    assert paired["groups"]["A"]["df"] == 1.0


def test_identical_runs_are_deterministic_and_use_the_item_df():
    values = np.random.default_rng(1).normal(30.0, 1.0, 40)
    runs = np.vstack([values, values])
    assert estimates.seed_component(runs) is None
    entry = fairness.group_intervals(runs, np.repeat(["A", "B"], 20), "mean", n_boot=10)["groups"]["A"]
    assert entry["df"] == 19.0
    with pytest.raises(ValueError, match="at least 2 seeds"):
        estimates.seed_component(values[None, :])


# Item 8: the item-by-seed noise is counted once (crossed random effects)


def test_seed_component_subtracts_the_interaction_mean_square():
    runs = np.array([[1.0, 2.0, 6.0], [2.0, 5.0, 5.0]])
    seed_means = runs.mean(axis=1)  # 3, 4
    residual = runs - runs.mean(axis=0) - runs.mean(axis=1, keepdims=True) + runs.mean()
    interaction = np.sum(residual ** 2) / ((2 - 1) * (3 - 1))  # by hand: residuals +-(0, -1, 1), 4 / 2
    assert interaction == pytest.approx(2.0)
    assert np.var(seed_means, ddof=1) == pytest.approx(0.5)
    assert estimates.seed_component(runs) == (0.0, 1.0)  # 0.5 - 2/3 < 0: floored, df still k - 1
    strong = runs + np.array([[0.0], [3.0]])  # seed 2 three units up everywhere: seed means 3, 7, spread 8
    variance, df = estimates.seed_component(strong)
    assert variance == pytest.approx((8.0 - interaction / 3) / 2) and df == 1.0
    # Weights and strata: a difference of two groups' means, each stratum with its own interaction.
    weights = np.array([0.5, 0.5, -1.0])
    strata = np.array([0, 0, 1])
    block = strong[:, :2]
    first = np.sum((block - block.mean(0) - block.mean(1, keepdims=True) + block.mean()) ** 2)  # 1 df
    expected = (np.var(strong @ weights, ddof=1) - 0.5 * first) / 2  # the lone item has no interaction
    assert estimates.seed_component(strong, weights, strata) == (pytest.approx(max(0.0, expected)), 1.0)


def test_seed_part_is_near_zero_when_seeds_differ_only_by_item_noise():
    # 5 seeds, no seed effect, per-item noise: the crossed form's seed variance averages about 0 (the double
    # count it removes is item noise / (n k)); the old form averaged that whole term.
    rng = np.random.default_rng(2)
    crossed, old = [], []
    for _ in range(300):
        runs = rng.normal(0.0, 1.0, 200) + rng.normal(0.0, 1.0, (5, 200))
        crossed.append(estimates.seed_component(runs)[0])
        old.append(np.var(runs.mean(axis=1), ddof=1) / 5)
    assert np.mean(old) == pytest.approx(1.0 / (200 * 5), rel=0.15)
    assert np.mean(crossed) < 0.45 * np.mean(old)  # floored at 0, so positive on average, well below


# Item 2: bootstrap-t on tied data


def test_tied_values_keep_the_interval_inside_the_data():
    values = np.array([1, 1, 1, 1, 1.01] * 2)
    entry = fairness.group_intervals(values, np.repeat(["A", "B"], 5), "mean")["groups"]["A"]
    assert 0.99 < entry["lo"] and entry["hi"] < 1.01  # t with 4 df: 1.002 +- 2.776 x 0.002
    assert entry["hi"] == pytest.approx(1.002 + estimates.t_quantile(0.975, 4) * 0.002)
    many = np.array([1.0] * 19 + [1.01])  # 20 items: bootstrap-t joins; draws without spread are left out
    rng = np.random.default_rng(0)
    t_star = estimates.bootstrap_t(many, None, 2000, rng)
    assert 0 < len(t_star) < 2000 and np.all(np.isfinite(t_star)) and np.max(np.abs(t_star)) < 1e3
    estimate = estimates.item_estimate(many, None, None, "mean", None, 2000, rng, 20)
    lo, hi = estimates.interval(estimate, 0.95)
    assert 0.99 < lo and hi < 1.01 + 1e-9


def test_bootstrap_t_needs_15_clusters():
    rng = np.random.default_rng(3)
    assert estimates.item_estimate(rng.normal(size=14), None, None, "mean", None, 100, rng, 14)["kind"] == "t"
    assert estimates.item_estimate(rng.normal(size=15), None, None, "mean", None, 100, rng, 15)["kind"] == \
        "t+bootstrap-t"


# Item 3: a sample with no spread


def test_constant_differences_get_the_exact_sign_test():
    small = fairness.paired_test(np.full(5, 0.5), np.zeros(5))["overall"]
    assert small["p_value"] == pytest.approx(2.0 ** -4)  # all 5 on one side: 2 x 0.5^5
    assert (small["lo"], small["hi"]) == (-math.inf, math.inf)  # 0.0625 > 0.05: nothing at 95%
    larger = fairness.paired_test(np.full(8, 0.5), np.zeros(8))["overall"]
    assert larger["p_value"] == pytest.approx(2.0 ** -7) and (larger["lo"], larger["hi"]) == (0.5, 0.5)
    assert fairness.paired_test(np.ones(5), np.ones(5))["overall"]["p_value"] == 1.0
    # Two constant groups of 3, completely separated: exact Mann-Whitney 2 / C(6, 3) = 0.1.
    groups = fairness.group_intervals(np.array([1.0, 1, 1, 2, 2, 2]), np.repeat(["A", "B"], 3), "mean")
    assert groups["equal_means_p"] == pytest.approx(0.1)
    assert (groups["pairs"][0]["lo"], groups["pairs"][0]["hi"]) == (-math.inf, math.inf)


# Item 4: the plus-two pseudo-items only when there is no spread


@pytest.mark.parametrize("n, p", [(100, 0.99), (1000, 0.999)])
def test_percent_variance_is_the_items_own(n, p):
    values = np.zeros(n)
    values[:round(n * p)] = 1.0
    estimate = estimates.item_estimate(values, None, None, "percent", (0.0, 1.0), 10, None, n)
    assert estimate["var"] == pytest.approx(p * (1 - p) / (n - 1))  # s^2 / n with ddof 1
    assert estimate["n_eff"] == pytest.approx(n - 1)
    result = fairness.group_intervals(np.r_[values, values], np.repeat(["A", "B"], n), "percent", n_boot=10)
    assert result["groups"]["A"]["se"] == pytest.approx(100 * math.sqrt(p * (1 - p) / (n - 1)))
    perfect = estimates.item_estimate(np.ones(n), None, None, "percent", (0.0, 1.0), 10, None, n)
    assert perfect["var"] > 0 and perfect["n_eff"] == n - 1  # the same n - 1 convention at p = 1


# Items 5 and 6: cluster counts


def test_cr1_uses_the_actual_cluster_count_and_the_df_the_effective_one():
    values = np.random.default_rng(4).normal(size=100)
    clusters = np.r_[np.zeros(10, dtype=int), np.arange(1, 91)]
    variance, df = estimates.mean_variance(values, clusters)
    sums = np.bincount(clusters, weights=values - values.mean())
    assert variance == pytest.approx(91 / 90 * (sums @ sums) / 100 ** 2)
    assert df == pytest.approx((100 + 90) ** 2 / (10 ** 4 + 90) - 1)  # 2.58


def test_two_way_with_distinct_identities_is_independent_items():
    values = np.random.default_rng(5).normal(size=20)
    variance, df = estimates.mean_variance(values, np.arange(20), np.arange(20, 40))
    assert variance == pytest.approx(np.var(values, ddof=1) / 20) and df == 19.0


# Item 7: an untrained reference is known exactly


def test_recipe_against_an_untrained_reference_stays_at_the_recipe_level():
    rng = np.random.default_rng(6)
    truth = rng.normal(30.0, 2.0, 50)
    recipe = truth + 1.0 + rng.normal(0.0, 0.5, (3, 1)) + rng.normal(0.0, 0.2, (3, 50))
    bicubic = truth
    entry = fairness.paired_test(recipe, bicubic, reference_exact=True, n_boot=10)["overall"]
    assert entry["level"] == "recipe" and entry["df"] == 2.0 and entry["reference_exact"]
    differences = recipe.mean(axis=0) - bicubic
    item_var = np.var(differences, ddof=1) / 50
    seed_var = estimates.seed_component(recipe - bicubic)[0]
    assert entry["se"] == pytest.approx(math.sqrt(item_var + seed_var))
    assert seed_var > item_var  # the seed variance the model-level fallback dropped
    assert fairness.paired_test(recipe, bicubic, n_boot=10)["overall"]["level"] == "model"  # a trained one-seed b
    with pytest.raises(ValueError, match="involves training"):
        fairness.paired_test(recipe, recipe[:2], reference_exact=True)


# Cosmetic


def test_bounds_of_pairwise_ratio_and_ser():
    values = np.r_[np.ones(30), np.zeros(1), np.ones(29), np.zeros(1)]
    groups = np.r_[["A"] * 30, ["B"], ["C"] * 30]
    result = fairness.group_intervals(values, groups, "percent", n_boot=10)
    assert all(-100.0 <= pair["lo"] and pair["hi"] <= 100.0 for pair in result["pairs"])  # B has one item
    psnr = fairness.group_intervals(np.random.default_rng(7).normal(30, 1, 40), np.repeat(["A", "B"], 20), "mean")
    assert psnr["summary"]["ratio"]["hi"] <= 1.0
    accuracy = np.r_[np.ones(95), np.zeros(5), np.ones(96), np.zeros(4)]
    ser = fairness.group_intervals(accuracy, np.repeat(["A", "B"], 100), "percent", n_boot=10)["summary"]["ser"]
    assert ser["lo"] >= 1.0 and ser["hi"] > ser["lo"]


def test_seed_by_race_effects_are_seed_variance_not_item_noise():
    # Per seed, race A moves by +e and race B by -e/2 (a seed x race effect), 5 images per race add little
    # noise: within races the seed x item residual is small; pooled over races it would hold the race effects
    # (about as large as the seed part itself with so few images) and remove most of the seed part.
    rng = np.random.default_rng(8)
    race = np.repeat([0, 1], 5)
    effects = rng.normal(0.0, 1.0, (3, 1))
    runs = rng.normal(0.0, 1.0, 10) + np.where(race == 0, 1.0, -0.5) * effects + rng.normal(0.0, 0.01, (3, 10))
    within, _ = estimates.seed_component(runs, strata=race)
    pooled, _ = estimates.seed_component(runs)
    spread = np.var(runs.mean(axis=1), ddof=1) / 3
    assert within == pytest.approx(spread, rel=0.01) and pooled < 0.5 * within
    entry = fairness.paired_test(runs, np.zeros((1, 10)), groups=race, reference_exact=True, n_boot=10)["overall"]
    item_var = np.var(runs.mean(axis=0), ddof=1) / 10
    assert entry["se"] == pytest.approx(math.sqrt(item_var + within))
