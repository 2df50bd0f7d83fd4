"""The probes' statistics (racecomp.probes): F1 inside/outside a subgroup, association score, Spearman, BTS."""
import math

import numpy as np
import pytest

from racecomp import probes


def test_f1_subgroup_hand_computed():
    y_true = [1, 1, 0, 0, 1, 0]
    y_pred = [1, 0, 0, 1, 1, 1]
    in_group = [True, True, True, False, False, False]
    # overall: TP 2, FP 2, FN 1 -> 4/7. in: TP 1, FN 1 -> 2/3. out: TP 1, FP 2 -> 2/4.
    assert probes.f1_score(y_true, y_pred) == pytest.approx(4 / 7)
    result = probes.f1_subgroup(y_true, y_pred, in_group)
    assert result["f1_in"] == pytest.approx(2 / 3)
    assert result["f1_out"] == pytest.approx(0.5)
    assert result["worst"] == pytest.approx(0.5)
    assert result["gap"] == pytest.approx(1 / 6)
    assert probes.f1_score([0, 0], [0, 0]) == 0.0
    with pytest.raises(ValueError, match="0 and 1"):
        probes.f1_score([0, 2], [0, 1])


def test_f1_cross_check_with_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    generator = np.random.default_rng(0)
    y_true = generator.integers(0, 2, 200)
    y_pred = generator.integers(0, 2, 200)
    assert probes.f1_score(y_true, y_pred) == pytest.approx(sklearn_metrics.f1_score(y_true, y_pred))


def test_association_score_known_values():
    unit = np.array([[0.6, 0.8]])
    assert probes.association_score(np.repeat(unit, 4, axis=0), 3 * np.repeat(unit, 2, axis=0)) == pytest.approx(1)
    e1 = np.array([[1.0, 0.0, 0.0]] * 3)
    e2 = np.array([[0.0, 2.0, 0.0]] * 5)
    assert probes.association_score(e1, e2) == pytest.approx(0.0)
    assert probes.association_score(np.vstack([e1[:1], e2[:1]]), e1) == pytest.approx(0.5)
    # Self-association never pairs a row with itself: two orthogonal rows split into halves give 0, not 0.5.
    assert probes.association_score(np.vstack([e1[:1], e2[:1]])) == pytest.approx(0.0)
    assert probes.association_score(np.repeat(unit, 7, axis=0)) == pytest.approx(1.0)


def test_self_association_follows_the_documented_split_half():
    feats = np.random.default_rng(13).normal(size=(9, 3))
    order = np.random.default_rng(5).permutation(9)  # documented: seeded permutation, first 4 vs last 5
    expected = probes.association_score(feats[order[:4]], feats[order[4:]])
    assert probes.association_score(feats, seed=5) == pytest.approx(expected)


def test_association_score_equals_mean_of_all_pairwise_cosines():
    generator = np.random.default_rng(11)
    feats_a = generator.normal(size=(6, 4))
    feats_b = generator.normal(size=(5, 4))
    cosines = [a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) for a in feats_a for b in feats_b]
    assert probes.association_score(feats_a, feats_b) == pytest.approx(np.mean(cosines))


def test_spearman_with_ties_hand_computed():
    # Average ranks x: 1, 2.5, 2.5, 4; y: 1, 3, 2, 4. Centred: (-1.5, 0, 0, 1.5), (-1.5, .5, -.5, 1.5).
    # r = 4.5 / sqrt(4.5 * 5) = sqrt(0.9).
    assert probes.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9))
    assert probes.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(probes.spearman([1, 1, 1], [1, 2, 3]))


def test_spearman_cross_check_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    generator = np.random.default_rng(12)
    x = generator.integers(0, 6, 40).astype(float)  # many ties
    y = x + generator.integers(0, 4, 40)
    assert probes.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


def test_bias_transfer_score_hand_computed():
    # Ranks 1 2 3 4 vs 2 1 3 4: rho = 1 - 6 * 2 / (4 * 15) = 0.8.
    assert probes.bias_transfer_score([0.1, 0.2, 0.3, 0.4], [0.5, 0.4, 0.6, 0.9]) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="three"):
        probes.bias_transfer_score([0.1, 0.2], [0.2, 0.1])
