"""Gender probe and bias probe on hand-made features with known answers."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from racecomp import datasets, probes, toyfairface
from racecomp.races import FAIRFACE_RACES


def balanced_races_and_genders(n_per_race, seed):
    rng = np.random.default_rng(seed)
    races = np.repeat(FAIRFACE_RACES, n_per_race)
    genders = rng.permutation(np.tile([0, 1], len(races) // 2 + 1)[:len(races)])
    return races, genders


def test_logistic_regression_reaches_the_hand_computed_optimum():
    # x = +1: 3 of 4 labels are 1; x = -1: 1 of 4. Unpenalized MLE: sigmoid(w + b) = 3/4 and
    # sigmoid(-w + b) = 1/4, so b = 0 and w = log 3 (x is already standardized: mean 0, std 1).
    x = np.array([[1.0]] * 4 + [[-1.0]] * 4)
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    probe = probes.fit_logistic_regression(x, y, steps=50, l2=0.0)
    assert probe.weight[0] == pytest.approx(math.log(3.0), abs=1e-6)
    assert probe.bias == pytest.approx(0.0, abs=1e-6)
    assert probe.logits(np.array([[1.0]]))[0] == pytest.approx(math.log(3.0), abs=1e-6)
    # Standardization is undone consistently: the same data shifted and scaled gives the same logits.
    shifted = probes.fit_logistic_regression(5.0 + 3.0 * x, y, steps=50, l2=0.0)
    assert shifted.logits(5.0 + 3.0 * x) == pytest.approx(probe.logits(x), abs=1e-6)


def test_logistic_regression_matches_a_scipy_fit_of_the_same_objective():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)) * [1.0, 2.0, 0.5, 1.0, 3.0] + 1.0
    y = (x @ [1.0, -0.5, 0.0, 2.0, 0.1] + rng.normal(size=60) > 1.5).astype(int)
    probe = probes.fit_logistic_regression(x, y, steps=200)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    l2 = 1.0 / len(x)

    def objective(theta):
        logits = z @ theta[:-1] + theta[-1]
        return np.mean(np.logaddexp(0.0, logits) - y * logits) + 0.5 * l2 * theta[:-1] @ theta[:-1]

    reference = scipy_optimize.minimize(objective, np.zeros(6), method="L-BFGS-B", options={"gtol": 1e-12}).x
    assert probe.weight == pytest.approx(reference[:-1], abs=1e-4)
    assert probe.bias == pytest.approx(reference[-1], abs=1e-4)


def test_logistic_regression_rejects_bad_labels():
    with pytest.raises(ValueError, match="both classes"):
        probes.fit_logistic_regression(np.ones((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        probes.fit_logistic_regression(np.ones(4), np.array([0, 1, 0, 1]))


def test_separable_gender_feature_gives_f1_one_for_every_race():
    races, genders = balanced_races_and_genders(20, seed=1)
    rng = np.random.default_rng(2)
    noise = rng.normal(size=(2, len(races), 6))
    train = noise[0] + np.outer(2.0 * genders - 1.0, [3.0, 0, 0, 0, 0, 0])  # feature 0 carries gender
    val = noise[1] * [0.3, 1, 1, 1, 1, 1] + np.outer(2.0 * genders - 1.0, [3.0, 0, 0, 0, 0, 0])
    probe = probes.fit_logistic_regression(train, genders)
    rows = probes.gender_f1_by_race(genders, probe.predict(val), races)
    assert [row["race"] for row in rows] == list(FAIRFACE_RACES)
    for row in rows:
        assert row["n"] == 20
        assert (row["f1_in"], row["f1_out"], row["worst"], row["gap"], row["accuracy"]) == (1.0, 1.0, 1.0, 0.0, 1.0)


def test_feature_informative_for_one_race_only_gives_that_race_a_large_gap():
    races, genders = balanced_races_and_genders(40, seed=3)
    sign = 2.0 * genders - 1.0
    informative = races == "Black"

    def features(noise_seed):
        noise = np.random.default_rng(noise_seed).normal(size=(len(races), 4))
        noise[informative, 0] = 3.0 * sign[informative] + 0.1 * noise[informative, 0]  # gender only for Black
        return noise

    probe = probes.fit_logistic_regression(features(5), genders)
    rows = {row["race"]: row for row in probes.gender_f1_by_race(genders, probe.predict(features(6)), races)}
    black = rows["Black"]
    assert black["f1_in"] == 1.0 and black["accuracy"] == 1.0
    assert black["f1_out"] < 0.75 and black["gap"] > 0.25  # chance-level F1 outside Black
    assert black["worst"] == black["f1_out"]
    assert all(row["gap"] < black["gap"] - 0.1 for race, row in rows.items() if race != "Black")


def test_gender_f1_by_race_on_a_hand_computed_case():
    y_true = np.array([1, 1, 0, 0, 1, 0, 1, 0])
    y_pred = np.array([1, 0, 0, 1, 1, 1, 0, 0])
    races = np.array(["White"] * 4 + ["Black"] * 4)
    rows = {row["race"]: row for row in probes.gender_f1_by_race(y_true, y_pred, races)}
    # White: TP 1, FP 1, FN 1 -> F1 2/4; Black: TP 1, FP 1, FN 1 -> 2/4 as well, accuracies 2/4 each.
    assert rows["White"] == {"race": "White", "n": 4, "f1_in": 0.5, "f1_out": 0.5, "worst": 0.5, "gap": 0.0,
                             "accuracy": 0.5}
    y_pred_black_perfect = np.array([1, 0, 0, 1, 1, 0, 1, 0])
    rows = {row["race"]: row for row in probes.gender_f1_by_race(y_true, y_pred_black_perfect, races)}
    assert rows["Black"]["f1_in"] == 1.0 and rows["Black"]["f1_out"] == 0.5 and rows["Black"]["gap"] == 0.5
    assert list(rows) == ["White", "Black"]  # FAIRFACE_RACES order, absent races left out
    assert list(rows["Black"]) == list(probes.GENDER_COLUMNS)


def fake_records(races, genders):
    return [datasets.FaceRecord(file=f"val/{i}.jpg", path=f"/x/{i}.jpg", race=race, gender=gender, age="20-29",
                                line=i + 2) for i, (race, gender) in enumerate(zip(races, genders))]


def test_gender_labels_use_female_as_the_positive_class():
    records = fake_records(["White", "White"], ["Male", "Female"])
    assert probes.gender_labels(records).tolist() == [0, 1]


def test_bias_probe_rows_comparisons_and_transfer_score():
    races = [race for race in FAIRFACE_RACES for _ in range(4)]
    genders = ["Male", "Female"] * (len(races) // 2)
    records = fake_records(races, genders)
    rng = np.random.default_rng(0)
    # Each race its own direction plus noise, so the association scores differ between comparisons.
    directions = rng.normal(size=(len(FAIRFACE_RACES), 8))
    pretrained = np.array([directions[FAIRFACE_RACES.index(r)] for r in races]) + 0.5 * rng.normal(size=(28, 8))
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    rows, score = probes.bias_probe(pretrained, 3.0 * pretrained @ rotation, records)
    assert len(rows) == 21 + 7
    assert (rows[0]["set_a"], rows[0]["set_b"]) == ("White", "Black")
    assert (rows[21]["set_a"], rows[21]["set_b"], rows[21]["n_a"], rows[21]["n_b"]) == ("White Male", "White Female",
                                                                                         2, 2)
    white = pretrained[:4] / np.linalg.norm(pretrained[:4], axis=1, keepdims=True)
    black = pretrained[4:8] / np.linalg.norm(pretrained[4:8], axis=1, keepdims=True)
    assert rows[0]["assoc_pretrained"] == pytest.approx(np.mean(white @ black.T), abs=1e-12)
    # Cosines are invariant to rotation and scale: identical associations, a transfer score of 1.
    assert [row["assoc_finetuned"] for row in rows] == pytest.approx([row["assoc_pretrained"] for row in rows])
    assert score == pytest.approx(1.0)
    # Associations re-ordered by a different model: the score is their Spearman correlation.
    other = rng.normal(size=(28, 8))
    rows, score = probes.bias_probe(pretrained, other, records)
    expected = probes.spearman([row["assoc_pretrained"] for row in rows], [row["assoc_finetuned"] for row in rows])
    assert score == pytest.approx(expected) and score < 0.9


def test_bias_probe_refuses_an_empty_set():
    records = fake_records(["White"] * 3 + ["Black"] * 3, ["Male", "Female", "Male", "Male", "Male", "Female"])
    records[3:] = fake_records(["Black"] * 3, ["Male"] * 3)
    features = np.ones((6, 2))
    with pytest.raises(ValueError, match="Black Female"):
        probes.bias_probe(features, features, records)


class MeanColour(torch.nn.Module):
    """Stand-in model: the mean of each channel, so the input the probes feed a model can be checked."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


def test_extract_features_feeds_model_range_images_in_record_order(tmp_path):
    root = toyfairface.make_fairface(tmp_path / "ff", n_train=7, n_val=7, size=32, seed=0)
    records = datasets.read_fairface(root, "val")
    features = probes.extract_features(MeanColour(), records, image_size=32, batch_size=3, workers=0, device="cpu")
    expected = [2.0 * np.asarray(Image.open(r.path), dtype=np.float64).mean(axis=(0, 1)) / 255.0 - 1.0
                for r in records]
    assert features == pytest.approx(np.array(expected), abs=1e-6)
    resized = probes.extract_features(MeanColour(), records, image_size=48, batch_size=4, workers=0, device="cpu")
    assert resized.shape == (7, 3) and resized == pytest.approx(features, abs=0.02)  # resizing keeps the mean
