import math

import numpy as np
import pytest

from racecomp import estimates, fairness

# ---------------------------------------------------------------------------------------------------------
# group_summary


def test_group_summary_reproduces_published_row():
    # "Compressed Models Decompress Race Biases", Table I, MobileFaceNets FP32: Avg 91.83, STD 2.41, SER 2.09.
    summary = fairness.group_summary({"African": 95.18, "Asian": 92.00, "Caucasian": 89.93, "Indian": 90.22})
    assert round(summary["mean"], 2) == 91.83
    assert round(summary["std"], 2) == 2.41
    assert round(summary["ser"], 2) == 2.09
    assert summary["worst"] == 89.93 and summary["best"] == 95.18
    assert summary["gap"] == pytest.approx(5.25)
    assert summary["ratio"] == pytest.approx(89.93 / 95.18)
    assert summary["ser"] == pytest.approx(10.07 / 4.82)


def test_group_summary_std_is_sample_std_and_ser_edge_cases():
    summary = fairness.group_summary({"a": 1.0, "b": 3.0})
    assert summary["std"] == pytest.approx(math.sqrt(2.0))  # ddof=1: ((1-2)^2 + (3-2)^2) / 1
    assert fairness.group_summary({"a": 100.0, "b": 97.0})["ser"] == math.inf
    assert math.isnan(fairness.group_summary({"a": 100.0, "b": 100.0})["ser"])
    with pytest.raises(ValueError, match="two groups"):
        fairness.group_summary({"a": 90.0})
    with pytest.raises(ValueError, match="finite"):
        fairness.group_summary({"a": 90.0, "b": float("nan")})


# ---------------------------------------------------------------------------------------------------------
# F1


# ---------------------------------------------------------------------------------------------------------
# Student's t, Holm


@pytest.mark.parametrize("q, df, expected", [
    (0.975, 1, 12.706204736), (0.975, 2, 4.302652730), (0.975, 10, 2.228138852), (0.975, 30, 2.042272456),
    (0.995, 5, 4.032142984), (0.975, math.inf, 1.959963985), (0.025, 10, -2.228138852), (0.5, 3, 0.0),
])
def test_t_quantile_and_p_value_match_tables(q, df, expected):
    assert estimates.t_quantile(q, df) == pytest.approx(expected, abs=1e-8)
    if q > 0.5:  # the one t-interval path: value +- t x se, and its p-value at the interval's edge is 1 - level
        estimate = {"value": 1.0, "var": 0.25, "df": df, "kind": "t", "bounds": None, "units": (df + 1.0,)}
        level = 2.0 * q - 1.0
        assert estimates.interval(estimate, level) == pytest.approx((1.0 - expected / 2, 1.0 + expected / 2))
        assert estimates.two_sided_p(expected, 1.0, df) == pytest.approx(1.0 - level, rel=1e-8)


def test_two_sided_p_closed_forms_and_fractional_df():
    assert estimates.two_sided_p(1.0, 1.0, 1) == pytest.approx(0.5)  # Cauchy: arctan
    assert estimates.two_sided_p(0.0, 1.0, 7.3) == 1.0
    for t in (0.3, 1.0, 2.5):  # df = 2: P(|T| > t) = 1 - t / sqrt(2 + t^2)
        assert estimates.two_sided_p(-t, 1.0, 2) == pytest.approx(1.0 - t / math.sqrt(2 + t * t), rel=1e-12)
    between = estimates.t_quantile(0.975, 2.5)
    assert estimates.t_quantile(0.975, 3) < between < estimates.t_quantile(0.975, 2)


def test_holm_step_down():
    assert estimates.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert estimates.holm([0.3, 0.6]) == pytest.approx([0.6, 0.6])  # monotone: never below an earlier step


# ---------------------------------------------------------------------------------------------------------
# Variance of a mean of dependent items


def brute_force_two_way(values, id1, id2):
    """sum over item pairs sharing at least one identity of e_i e_j (the dyadic sandwich's middle)."""
    residuals = values - values.mean()
    total = 0.0
    for i in range(len(values)):
        for j in range(len(values)):
            if {id1[i], id2[i]} & {id1[j], id2[j]}:
                total += residuals[i] * residuals[j]
    return total


def test_two_way_variance_equals_the_dyadic_sandwich():
    generator = np.random.default_rng(0)
    id1 = generator.integers(0, 12, 60)
    id2 = np.where(np.arange(60) < 20, id1, generator.integers(0, 12, 60))  # 20 genuine pairs, then impostors
    values = generator.normal(size=60) + np.arange(60) % 3
    first, second = fairness.item_codes(60, id1, id2)
    variance, df = estimates.mean_variance(values, first, second)
    sizes = np.bincount(np.concatenate([first, second[first != second]])).astype(float)
    effective = (sizes @ sizes) ** 2 / np.sum(sizes ** 4)
    clusters = len(np.unique(np.r_[id1, id2]))  # CR1 counts the actual identities; G* is for the df only
    sandwich = clusters / (clusters - 1) * brute_force_two_way(values, id1, id2) / 60 ** 2
    assert variance == pytest.approx(max(sandwich, np.var(values, ddof=1) / 60))
    assert df == pytest.approx(effective - 1)


def test_one_way_and_independent_variances():
    values = np.array([1.0, 2.0, 4.0, 7.0])
    assert estimates.mean_variance(values) == pytest.approx((np.var(values, ddof=1) / 4, 3.0))
    # Clusters of one item each are independent items.
    assert estimates.mean_variance(values, np.arange(4)) == pytest.approx(estimates.mean_variance(values))
    # Two clusters of two: residual sums -2.5 - 1.5 = -4 and 4; g = 2, so 2 x 32 / 16.
    assert estimates.mean_variance(values, np.array([0, 0, 1, 1])) == pytest.approx((4.0, 1.0))
    assert estimates.mean_variance(values, np.zeros(4, dtype=int))[0] == math.inf  # one cluster: unknown


# ---------------------------------------------------------------------------------------------------------
# group_intervals


def planted_groups(generator, means, per_group=300, spread=1.0):
    values = np.concatenate([generator.normal(mean, spread, per_group) for mean in means])
    groups = np.repeat([f"g{index}" for index in range(len(means))], per_group)
    return values, groups


def test_planted_gap_is_detected_and_equal_groups_are_not():
    generator = np.random.default_rng(1)
    values, groups = planted_groups(generator, [30.0, 30.0, 29.0, 30.0])
    planted = fairness.group_intervals(values, groups, "mean", seed=0)
    assert planted["summary"]["worst"]["value"] == pytest.approx(planted["groups"]["g2"]["value"])
    assert planted["summary"]["gap"]["lo"] > 0.5  # a 1 dB gap with SE ~0.06 per group
    assert planted["equal_means_p"] < 0.01
    assert planted["groups"]["g2"]["hi"] < min(planted["groups"][g]["lo"] for g in ("g0", "g1", "g3"))
    assert {(p["a"], p["b"]) for p in planted["pairs"] if p["lo"] > 0 or p["hi"] < 0} == {
        ("g0", "g2"), ("g1", "g2"), ("g2", "g3")}  # only the low group differs from the others

    values, groups = planted_groups(generator, [30.0] * 4)
    equal = fairness.group_intervals(values, groups, "mean", seed=0)
    assert equal["equal_means_p"] > 0.05
    assert equal["summary"]["mean"]["lo"] < 30.0 < equal["summary"]["mean"]["hi"]
    # Simultaneous intervals reach 0 when no pair of groups is told apart; the gap's point value stays
    # max - min > 0 (biased upward), which is why the interval, not the value, is the statement.
    assert equal["summary"]["gap"]["lo"] == 0.0 and equal["summary"]["gap"]["value"] > 0
    assert equal["summary"]["std"]["lo"] == 0.0


def test_std_is_the_spread_of_the_population_means_by_hand():
    # Group means 10 and 14 (sample STD sqrt 8); each mean's variance s^2 / n = 2 / 2 = 1, so the noise-corrected
    # spread is sqrt(8 - 1) = sqrt 7. Groups whose means differ by less than their noise get 0, not the noise.
    result = fairness.group_intervals([9.0, 11.0, 13.0, 15.0], ["a", "a", "b", "b"], "mean", n_boot=10)
    assert result["summary"]["std"]["value"] == pytest.approx(math.sqrt(7.0))
    close = fairness.group_intervals([9.0, 11.0, 9.5, 11.5], ["a", "a", "b", "b"], "mean", n_boot=10)
    assert close["summary"]["std"]["value"] == 0.0  # 0.125 - 1 < 0


def test_gap_interval_and_equal_means_test_agree():
    generator = np.random.default_rng(11)
    for shift in (0.0, 0.1, 0.2, 0.3, 0.5):
        values, groups = planted_groups(generator, [30.0, 30.0 + shift, 30.0], per_group=200)
        result = fairness.group_intervals(values, groups, "mean", n_boot=50, seed=0)
        assert (result["summary"]["gap"]["lo"] > 0) == (result["equal_means_p"] < 0.05)
        pairs = result["pairs"]
        assert result["equal_means_p"] == pytest.approx(min(1.0, 3 * min(p["p_value"] for p in pairs)))


def test_group_interval_of_a_mean_matches_normal_theory():
    generator = np.random.default_rng(2)
    values, groups = planted_groups(generator, [0.0, 1.0], per_group=400, spread=2.0)
    result = fairness.group_intervals(values, groups, "mean", n_boot=2000, seed=0)
    for label in ("g0", "g1"):
        entry = result["groups"][label]
        members = values[groups == label]
        assert entry["value"] == pytest.approx(members.mean()) and entry["n"] == 400
        assert entry["se"] == pytest.approx(members.std(ddof=1) / math.sqrt(400))
        assert entry["lo"] <= entry["value"] - estimates.t_quantile(0.975, 399) * entry["se"] + 1e-12
        assert (entry["hi"] - entry["lo"]) / 2 == pytest.approx(1.96 * entry["se"], rel=0.05)
        assert entry["level"] == "model" and math.isnan(entry["seed_sd"])


def test_clustered_items_are_not_counted_as_independent():
    # Each measurement appears 5 times (one identity, 5 near-identical pairs): rows are not independent.
    generator = np.random.default_rng(3)
    base, base_groups = planted_groups(generator, [0.0, 0.0], per_group=200)
    values = np.repeat(base, 5)
    groups = np.repeat(base_groups, 5)
    clusters = np.repeat(np.arange(len(base)), 5)

    def width(result):
        return result["groups"]["g0"]["hi"] - result["groups"]["g0"]["lo"]

    independent = width(fairness.group_intervals(base, base_groups, "mean", seed=0))
    clustered = width(fairness.group_intervals(values, groups, "mean", seed=0, clusters=clusters))
    naive = width(fairness.group_intervals(values, groups, "mean", seed=0))
    assert clustered == pytest.approx(independent, rel=0.05)
    assert naive == pytest.approx(independent / math.sqrt(5), rel=0.1)


def test_percent_statistic_feeds_ser_in_percent():
    correct = np.array([1] * 95 + [0] * 5 + [1] * 90 + [0] * 10)
    groups = np.array(["A"] * 100 + ["B"] * 100)
    result = fairness.group_intervals(correct, groups, "percent", n_boot=200, seed=0)
    assert result["groups"]["A"]["value"] == pytest.approx(95.0)
    assert result["groups"]["B"]["value"] == pytest.approx(90.0)
    assert result["summary"]["ser"]["value"] == pytest.approx(10.0 / 5.0)
    assert result["summary"]["ser"]["lo"] < 2.0 < result["summary"]["ser"]["hi"]
    assert result["summary"]["gap"]["value"] == pytest.approx(5.0)
    as_fraction = fairness.group_intervals(correct, groups, "mean", n_boot=200, seed=0)
    assert as_fraction["groups"]["A"]["value"] == pytest.approx(0.95)
    assert math.isnan(as_fraction["summary"]["ser"]["value"])  # (100 - .90) / (100 - .95) would look plausible
    with pytest.raises(ValueError, match="statistic"):
        fairness.group_intervals(correct, groups, np.mean)


def test_a_perfect_group_gets_a_wilson_interval_not_a_point():
    # 50 of 50 correct does not prove 100%: Wilson's lower end n' / (n' + z^2), z = t(0.975, 49 df), with the
    # effective size n' = n - 1 = 49 that a group inside (0, 100%) gets too (p(1-p) / (s^2 / n)).
    correct = np.array([1] * 50 + [1] * 45 + [0] * 5)
    groups = np.array(["A"] * 50 + ["B"] * 50)
    result = fairness.group_intervals(correct, groups, "percent", n_boot=200, seed=0)
    z = estimates.t_quantile(0.975, 49)
    assert result["groups"]["A"]["value"] == 100.0 and result["groups"]["A"]["hi"] == 100.0
    assert result["groups"]["A"]["lo"] == pytest.approx(100.0 * 49 / (49 + z * z))
    assert result["summary"]["ser"]["value"] == math.inf and result["summary"]["ser"]["hi"] == math.inf
    assert result["summary"]["ser"]["lo"] == 1.0  # the data cannot rule out that A errs as often as B


def test_several_seeds_give_recipe_level_intervals():
    # 3 seeds shift every image of a group together (seed-to-seed sd 0.5): the recipe-level interval must
    # hold that variance, which the item-level one does not see.
    generator = np.random.default_rng(4)
    values, groups = planted_groups(generator, [30.0, 29.0], per_group=300)
    column = (groups == "g1").astype(int)
    runs = values + generator.normal(0.0, 0.5, (3, 2))[:, column] + generator.normal(0.0, 0.1, (3, len(values)))
    result = fairness.group_intervals(runs, groups, "mean", n_boot=200, seed=0)
    entry = result["groups"]["g0"]
    seed_means = runs[:, groups == "g0"].mean(axis=1)
    assert result["level"] == "recipe" and result["n_seeds"] == 3 and entry["level"] == "recipe"
    assert entry["value"] == pytest.approx(seed_means.mean())
    assert entry["seed_sd"] == pytest.approx(seed_means.std(ddof=1))
    assert entry["df"] == 2.0  # the seed part's: k - 1
    assert entry["hi"] - entry["lo"] > 5 * (entry["image_hi"] - entry["image_lo"])
    single = fairness.group_intervals(runs[0], groups, "mean", n_boot=200, seed=0)
    assert single["level"] == "model" and single["groups"]["g0"]["lo"] == single["groups"]["g0"]["image_lo"]


def test_group_intervals_are_seeded_and_validate_inputs():
    generator = np.random.default_rng(4)
    values, groups = planted_groups(generator, [1.0, 2.0, 3.0], per_group=50)
    first = fairness.group_intervals(values, groups, "mean", n_boot=300, seed=7)
    again = fairness.group_intervals(values, groups, "mean", n_boot=300, seed=7)
    assert first == again
    with pytest.raises(ValueError, match="two groups"):
        fairness.group_intervals(values, np.zeros(len(values)), "mean")
    with pytest.raises(ValueError, match="NaN or inf"):
        fairness.group_intervals(np.append(values[:-1], np.inf), groups, "mean")
    with pytest.raises(ValueError, match="clusters2"):
        fairness.group_intervals(values, groups, "mean", clusters2=np.arange(len(values)))


def test_percentile_matches_numpy_linear_on_finite_values():
    replicates = np.random.default_rng(5).normal(size=101)
    for q in (0.025, 0.5, 0.975):
        assert estimates.percentile(replicates, q) == pytest.approx(np.quantile(replicates, q))


# ---------------------------------------------------------------------------------------------------------
# paired_test


def paired_psnr(generator, n=200, shift_on=None):
    """Per-image PSNR of two models: large spread across images, small paired noise, optional +0.5 dB."""
    image_difficulty = generator.normal(30.0, 3.0, n)
    b = image_difficulty + generator.normal(0.0, 0.2, n)
    a = image_difficulty + generator.normal(0.0, 0.2, n)
    if shift_on is not None:
        a[shift_on] += 0.5
    return a, b


def test_paired_test_detects_planted_shift_on_half_the_images():
    generator = np.random.default_rng(6)
    a, b = paired_psnr(generator, shift_on=np.arange(100))
    result = fairness.paired_test(a, b, seed=0)["overall"]
    assert result["mean_diff"] == pytest.approx(np.mean(a - b))
    assert 0.15 < result["lo"] < result["mean_diff"] < result["hi"] < 0.35  # planted mean shift 0.25 dB
    # Every bootstrap-t replicate lies below the observed t: the bootstrap-t interval excludes 0 at every level,
    # so the p-value (the smallest level at which the joined interval excludes 0) is Student's.
    assert result["p_value"] == pytest.approx(estimates.two_sided_p(result["mean_diff"], result["se"] ** 2,
                                                                     result["df"]))
    assert result["n"] == 200
    assert result["level"] == "model" and result["scope"] == fairness.MODEL_DIFFERENCE


def test_paired_test_finds_nothing_without_a_shift():
    a, b = paired_psnr(np.random.default_rng(7))
    result = fairness.paired_test(a, b, seed=0)["overall"]
    assert result["lo"] < 0 < result["hi"]
    assert result["p_value"] > 0.05


def test_paired_test_per_group_locates_the_shift():
    generator = np.random.default_rng(8)
    groups = np.array(["Black"] * 100 + ["White"] * 100)
    a, b = paired_psnr(generator, shift_on=np.arange(100))  # shift only on the "Black" images
    result = fairness.paired_test(a, b, groups=groups, seed=0)
    assert result["groups"]["Black"]["p_value"] < 0.01
    assert result["groups"]["Black"]["lo"] > 0.3
    assert result["groups"]["White"]["p_value"] > 0.05
    assert result["groups"]["White"]["n"] == 100
    assert result["groups"]["White"]["p_holm"] == pytest.approx(
        max(result["groups"]["White"]["p_value"], min(1.0, 2 * result["groups"]["Black"]["p_value"])))


def test_paired_test_at_the_recipe_level_needs_two_seeds_on_both_sides():
    generator = np.random.default_rng(9)
    a, b = paired_psnr(generator, shift_on=np.arange(200))
    seeds_a = a + generator.normal(0.0, 0.3, (3, 1))  # each seed shifts all images together
    seeds_b = b + generator.normal(0.0, 0.3, (3, 1))
    one_seed = fairness.paired_test(seeds_a, seeds_b[:1], seed=0)["overall"]
    assert one_seed["level"] == "model" and one_seed["scope"] == fairness.MODEL_DIFFERENCE
    unpaired = fairness.paired_test(seeds_a, seeds_b, seed=0)["overall"]
    assert unpaired["level"] == "recipe" and unpaired["scope"] == fairness.RECIPE_DIFFERENCE
    assert unpaired["seed_sd_a"] == pytest.approx(seeds_a.mean(axis=1).std(ddof=1))
    assert unpaired["hi"] - unpaired["lo"] > 5 * (unpaired["image_hi"] - unpaired["image_lo"])
    paired = fairness.paired_test(seeds_a, seeds_b, paired_seeds=True, seed=0)["overall"]
    differences = seeds_a.mean(axis=1) - seeds_b.mean(axis=1)
    assert paired["df"] == 2.0 and paired["seed_sd_difference"] == pytest.approx(differences.std(ddof=1))
    assert paired["mean_diff"] == pytest.approx(differences.mean())
    with pytest.raises(ValueError, match="as many seeds"):
        fairness.paired_test(seeds_a, seeds_b[:2], paired_seeds=True)


def test_percent_differences_are_in_points_and_never_zero_width():
    a = np.array([1.0] * 100)
    b = np.array([1.0] * 100)
    result = fairness.paired_test(a, b, statistic="percent", seed=0)["overall"]
    assert result["mean_diff"] == 0.0 and result["lo"] < 0 < result["hi"]  # 100 agreements do not prove 0
    b[:10] = 0.0
    result = fairness.paired_test(a, b, statistic="percent", seed=0)["overall"]
    assert result["mean_diff"] == pytest.approx(10.0) and result["lo"] > 0


def test_paired_test_per_group_sign_is_a_minus_b():
    # The tables' minority penalty is paired_test(under, balanced) per race (comparisons.paired_inputs aligns the
    # items): the under-sampled model is exactly 0.8 worse on every Black image, so its penalty is -0.8 with an
    # interval of that value alone (a constant difference over 30 images: the exact sign test), 0 on Indian.
    groups = np.array(["Black"] * 30 + ["Indian"] * 30)
    under = np.random.default_rng(9).normal(28.0, 2.0, 60)
    balanced = under + np.where(groups == "Black", 0.8, 0.0)
    result = fairness.paired_test(under, balanced, groups=groups, seed=0)["groups"]
    assert result["Black"]["mean_diff"] == pytest.approx(-0.8)
    assert result["Black"]["lo"] == pytest.approx(-0.8) and result["Black"]["hi"] == pytest.approx(-0.8)
    assert result["Indian"]["mean_diff"] == pytest.approx(0.0, abs=1e-12)
    assert result["Black"]["n"] == 30
    assert result["Black"]["scope"] == fairness.MODEL_DIFFERENCE  # one seed each: not a recipe effect


# ---------------------------------------------------------------------------------------------------------
# Bias Transfer Score


