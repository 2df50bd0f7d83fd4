import math

import numpy as np
import pytest

from racecomp import fairness

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
# bootstrap_groups


def planted_groups(generator, means, per_group=300, spread=1.0):
    values = np.concatenate([generator.normal(mean, spread, per_group) for mean in means])
    groups = np.repeat([f"g{index}" for index in range(len(means))], per_group)
    return values, groups


def test_bootstrap_planted_gap_is_detected_and_equal_groups_are_not():
    generator = np.random.default_rng(1)
    values, groups = planted_groups(generator, [30.0, 30.0, 29.0, 30.0])
    planted = fairness.bootstrap_groups(values, groups, "mean", seed=0)
    assert planted["summary"]["worst"]["value"] == pytest.approx(planted["groups"]["g2"]["value"])
    assert planted["summary"]["gap"]["lo"] > 0.5  # a 1 dB gap with SE ~0.06 per group
    assert planted["gap_p_value"] < 0.01
    assert planted["groups"]["g2"]["hi"] < min(planted["groups"][g]["lo"] for g in ("g0", "g1", "g3"))

    values, groups = planted_groups(generator, [30.0] * 4)
    equal = fairness.bootstrap_groups(values, groups, "mean", seed=0)
    assert equal["gap_p_value"] > 0.05
    assert equal["summary"]["mean"]["lo"] < 30.0 < equal["summary"]["mean"]["hi"]
    assert equal["summary"]["gap"]["hi"] < 0.5
    # max - min is positive by construction, so its percentile CI sits above 0 even here: that is why the
    # test of "any gap at all" is gap_p_value, not this interval.
    assert equal["summary"]["gap"]["lo"] > 0


def test_bootstrap_ci_of_a_group_mean_matches_normal_theory():
    generator = np.random.default_rng(2)
    values, groups = planted_groups(generator, [0.0, 1.0], per_group=400, spread=2.0)
    result = fairness.bootstrap_groups(values, groups, "mean", n_boot=2000, seed=0)
    for label in ("g0", "g1"):
        entry = result["groups"][label]
        members = values[groups == label]
        assert entry["value"] == pytest.approx(members.mean()) and entry["n"] == 400
        expected_half_width = 1.96 * members.std() / math.sqrt(400)
        assert (entry["hi"] - entry["lo"]) / 2 == pytest.approx(expected_half_width, rel=0.1)


def test_bootstrap_resamples_clusters_not_rows():
    # Each measurement appears 5 times (one identity, 5 near-identical pairs): rows are not independent.
    generator = np.random.default_rng(3)
    base, base_groups = planted_groups(generator, [0.0, 0.0], per_group=200)
    values = np.repeat(base, 5)
    groups = np.repeat(base_groups, 5)
    clusters = np.repeat(np.arange(len(base)), 5)

    def width(result):
        return result["groups"]["g0"]["hi"] - result["groups"]["g0"]["lo"]

    independent = width(fairness.bootstrap_groups(base, base_groups, "mean", seed=0))
    clustered = width(fairness.bootstrap_groups(values, groups, "mean", seed=0, clusters=clusters))
    naive = width(fairness.bootstrap_groups(values, groups, "mean", seed=0))
    assert clustered == pytest.approx(independent, rel=0.15)
    assert naive == pytest.approx(independent / math.sqrt(5), rel=0.15)


def test_bootstrap_percent_statistic_feeds_ser_in_percent():
    correct = np.array([1] * 95 + [0] * 5 + [1] * 90 + [0] * 10)
    groups = np.array(["A"] * 100 + ["B"] * 100)
    result = fairness.bootstrap_groups(correct, groups, "percent", n_boot=200, seed=0)
    assert result["groups"]["A"]["value"] == pytest.approx(95.0)
    assert result["groups"]["B"]["value"] == pytest.approx(90.0)
    assert result["summary"]["ser"]["value"] == pytest.approx(10.0 / 5.0)
    assert result["summary"]["gap"]["value"] == pytest.approx(5.0)
    as_fraction = fairness.bootstrap_groups(correct, groups, "mean", n_boot=200, seed=0)
    assert as_fraction["groups"]["A"]["value"] == pytest.approx(0.95)
    assert math.isnan(as_fraction["summary"]["ser"]["value"])  # (100 - .90) / (100 - .95) would look plausible
    with pytest.raises(ValueError, match="statistic"):
        fairness.bootstrap_groups(correct, groups, np.mean)


def test_bootstrap_handles_perfect_groups_without_nan():
    correct = np.array([1] * 50 + [1] * 45 + [0] * 5)
    groups = np.array(["A"] * 50 + ["B"] * 50)
    result = fairness.bootstrap_groups(correct, groups, "percent", n_boot=200, seed=0)
    assert result["summary"]["ser"] == {"value": math.inf, "lo": math.inf, "hi": math.inf}
    assert result["groups"]["A"] == {"value": 100.0, "lo": 100.0, "hi": 100.0, "n": 50}


def test_bootstrap_is_seeded_and_validates_inputs():
    generator = np.random.default_rng(4)
    values, groups = planted_groups(generator, [1.0, 2.0, 3.0], per_group=50)
    first = fairness.bootstrap_groups(values, groups, "mean", n_boot=300, seed=7)
    again = fairness.bootstrap_groups(values, groups, "mean", n_boot=300, seed=7)
    other = fairness.bootstrap_groups(values, groups, "mean", n_boot=300, seed=8)
    assert first["groups"] == again["groups"] and first["summary"]["gap"] == again["summary"]["gap"]
    assert first["groups"] != other["groups"]
    with pytest.raises(ValueError, match="two groups"):
        fairness.bootstrap_groups(values, np.zeros(len(values)), "mean")
    with pytest.raises(ValueError, match="NaN or inf"):
        fairness.bootstrap_groups(np.append(values[:-1], np.inf), groups, "mean")


def test_percentile_matches_numpy_linear_on_finite_values():
    replicates = np.random.default_rng(5).normal(size=101)
    for q in (0.025, 0.5, 0.975):
        assert fairness._percentile(replicates, q) == pytest.approx(np.quantile(replicates, q))


# ---------------------------------------------------------------------------------------------------------
# paired_test and minority_penalty


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
    assert result["p_value"] == pytest.approx(1 / 1001)  # no sign flip comes close
    assert result["n"] == 200


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


def test_sign_flip_p_value_matches_exact_distribution():
    # Three differences of +1: of the 8 equally likely sign patterns, 2 (all + / all -) reach |mean| 1.
    result = fairness.paired_test([1.0, 1.0, 1.0], [0.0, 0.0, 0.0], n_boot=20000, seed=0)["overall"]
    assert result["p_value"] == pytest.approx(0.25, abs=0.01)
    clustered = fairness.paired_test([1.0] * 6, [0.0] * 6, clusters=[0, 0, 1, 1, 2, 2], n_boot=20000, seed=0)
    assert clustered["overall"]["p_value"] == pytest.approx(0.25, abs=0.01)  # 3 clusters flip, not 6 rows


def test_minority_penalty_aligns_by_key():
    keys = [f"img{index:03d}" for index in range(60)]
    groups = np.array(["Black"] * 30 + ["Indian"] * 30)
    under = np.random.default_rng(9).normal(28.0, 2.0, 60)
    penalty_by_group = np.where(groups == "Black", 0.8, 0.0)
    balanced = under + penalty_by_group
    order = np.random.default_rng(10).permutation(60)  # the balanced run lists images in another order
    result = fairness.minority_penalty(under, balanced[order], keys, [keys[i] for i in order], groups, seed=0)
    # under - balanced: the under-sampled model is 0.8 worse on Black, so the penalty is -0.8
    assert result["Black"]["penalty"] == pytest.approx(-0.8)
    assert result["Black"]["lo"] == pytest.approx(-0.8) and result["Black"]["hi"] == pytest.approx(-0.8)
    assert result["Indian"]["penalty"] == pytest.approx(0.0, abs=1e-12)
    assert result["Black"]["n"] == 30
    with pytest.raises(ValueError, match="keys differ"):
        fairness.minority_penalty(under, balanced, keys, keys[:-1] + ["other"], groups)
    with pytest.raises(ValueError, match="duplicate"):
        fairness.minority_penalty(under, balanced, keys, keys[:-1] + [keys[0]], groups)


# ---------------------------------------------------------------------------------------------------------
# Bias Transfer Score


