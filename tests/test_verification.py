"""The per-race RFW protocol on hand-computed cases."""
import torch

from racecomp import verification


def test_per_race_rates_use_one_pooled_threshold_hand_computed():
    def pair(race, fold, label, score):
        return {"race": race, "fold": fold, "id1": f"{race}{fold}{label}", "id2": "x", "label": label, "score": score}

    rows = [pair("African", 0, 1, 0.9), pair("African", 0, 0, 0.1), pair("African", 1, 1, 0.8),
            pair("African", 1, 0, 0.3), pair("Asian", 0, 1, 0.7), pair("Asian", 0, 0, 0.6),
            pair("Asian", 1, 1, 0.5), pair("Asian", 1, 0, 0.4)]
    table, threshold = verification.per_race_table(rows, fars=(0.25,))
    # Pooled impostor scores 0.6, 0.4, 0.3, 0.1: FAR 0.25 allows one false accept, so accept score > 0.4.
    assert threshold == 0.4
    african, asian = table
    assert (african["tpr"], african["fpr"]) == (100.0, 0.0)
    assert (asian["tpr"], asian["fpr"]) == (100.0, 50.0)  # Asian's impostor at 0.6 passes the shared threshold
    # 2-fold accuracy, insightface's protocol: "same" when distance 2 - 2s < t, t the FIRST best of the grid
    # 0.00, 0.01, ... on the other fold, i.e. just above that fold's genuine distance (the strictest threshold).
    # (Updated: the old midpoint search put African's fold-0 threshold at cosine 0.5 and scored African 100%.)
    # African: trained on fold 1 (genuine .8 -> distance .4), t ~ .40-.41 keeps fold 0 right; trained on fold 0
    # (genuine .9 -> .2), t ~ .20-.21 rejects fold 1's genuine .8 (distance .4) -> 1/2. African 75%, std 25.
    # Asian: t = 1.01 (cosine ~.495) accepts fold 0's impostor .6; t = .61 (~.695) rejects fold 1's genuine .5.
    assert (african["accuracy"], african["accuracy_std"]) == (75.0, 25.0)
    assert (asian["accuracy"], asian["accuracy_std"]) == (50.0, 0.0)
    assert [row["correct"] for row in rows] == [1, 1, 0, 1, 1, 0, 0, 1]


def test_flip_test_adds_the_left_right_mirror_hand_computed():
    # The embedding is the model-range pixels themselves, so the flip test's sum is written out by hand: a
    # vertical mirror (flip(-2)) or one over colour channels (flip(1)) would give other numbers.
    image = torch.zeros(1, 3, 2, 2)
    image[0, 0] = torch.tensor([[0.0, 0.5], [0.25, 1.0]])  # -> [-1, 0], [-0.5, 1] in [-1, 1]
    image[0, 1] = torch.tensor([[1.0, 1.0], [0.0, 0.0]])   # -> [1, 1], [-1, -1]: unchanged left-right
    pixels = torch.nn.Flatten()
    plain = [-1.0, 0.0, -0.5, 1.0] + [1.0, 1.0, -1.0, -1.0] + [-1.0] * 4
    # Channel 0 plus its left-right mirror [0, -1], [1, -0.5]; channels 1 and 2 are their own mirrors (doubled).
    flipped = [-1.0, -1.0, 0.5, 0.5] + [2.0, 2.0, -2.0, -2.0] + [-2.0] * 4
    assert verification.embed_batch(pixels, image, flip=False).tolist() == [plain]
    assert verification.embed_batch(pixels, image, flip=True).tolist() == [flipped]
    loader = torch.utils.data.DataLoader([{"image": image[0]}], batch_size=1)
    assert verification.embed(pixels, loader, "cpu", flip=True).tolist() == [flipped]  # RFW's path
