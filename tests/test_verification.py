"""The per-race RFW protocol on hand-computed cases."""
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
    # 2-fold accuracy: African separable (100%); Asian thresholds 0.45 and 0.65 each misclassify one pair.
    assert (african["accuracy"], asian["accuracy"], asian["accuracy_std"]) == (100.0, 50.0, 0.0)
    assert [row["correct"] for row in rows] == [1, 1, 1, 1, 1, 0, 0, 1]
