"""Probes of what a face-recognition backbone encodes besides identity, on FairFace images.

- Gender probe: a logistic-regression head on frozen embeddings (train on FairFace train, score on val),
  scored per race by F1 inside vs outside the race (the BatchNorm fine-tuning study's protocol).
- Bias probe: association scores (mean pairwise cosine of embeddings) between FairFace probe sets, before
  and after training, and their Bias Transfer Score (Spearman correlation; the gender-bias-transfer study).

Features are the model's embeddings (its last layer before any head) of FairFace images resized to the
model's input size, in eval mode, without the flip test: one forward pass per image.
The probes' statistics (binary F1 inside/outside a subgroup, association score, Spearman, BTS) are pure
numpy functions at the end of this module.
"""
import itertools

import numpy as np
import torch

from racecomp import datasets, engine, verification
from racecomp.metrics import l2_normalize
from racecomp.races import FAIRFACE_RACES
# The files' columns are the schema's (the tables read them without torch).
from racecomp.schema import BIAS_PROBE_COLUMNS as BIAS_COLUMNS, PROBE_GENDER_COLUMNS as GENDER_COLUMNS  # noqa: F401

GENDER_POSITIVE = "Female"  # class 1 of the gender probe, the positive class of its F1


def extract_features(model, records, image_size, batch_size, workers, device):
    """(N, D) float64 numpy embeddings of FairFace `records` in record order.

    Images are RGB, resized to `image_size` (bicubic, antialias) and mapped to [-1, 1]; model in eval mode.
    """
    items = [((record.file,), record.path) for record in records]
    loader = engine.make_loader(datasets.FaceImages(items, image_size=image_size), batch_size, workers, device)
    return verification.embed(model, loader, device, flip=False, label="probe features")


def gender_labels(records):
    """(N,) int64: 1 for GENDER_POSITIVE (Female), 0 for Male."""
    return np.array([int(record.gender == GENDER_POSITIVE) for record in records], dtype=np.int64)


class LinearProbe:
    """Logistic-regression head on standardized features: logit = ((x - mean) / scale) @ weight + bias."""

    def __init__(self, mean, scale, weight, bias):
        self.mean, self.scale, self.weight, self.bias = mean, scale, weight, bias

    def logits(self, features):
        """(N,) float64 logits of class 1 for (N, D) features."""
        return ((np.asarray(features, dtype=np.float64) - self.mean) / self.scale) @ self.weight + self.bias

    def predict(self, features):
        """(N,) int64 predictions: 1 where the logit is > 0 (probability of class 1 above 1/2)."""
        return (self.logits(features) > 0).astype(np.int64)


def fit_logistic_regression(features, labels, steps=100, l2=None):
    """Binary logistic regression by full-batch L-BFGS (strong Wolfe line search), at most `steps` iterations.

    features (N, D), labels (N,) in {0, 1}. Each feature is standardized with the training mean and
    standard deviation (a constant feature is only centred), which makes the problem well conditioned
    whatever the embedding scale. Objective: mean binary cross-entropy + l2 / 2 * ||weight||^2 (bias not
    penalized); l2 defaults to 1 / N, the objective of sklearn's LogisticRegression(C=1) divided by N.
    The objective is strictly convex and the start is all-zero, so the fit is deterministic: no seed.
    Computed in float64 on the CPU. Returns a LinearProbe.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or y.shape != (len(x),):
        raise ValueError(f"features must be (N, D) and labels (N,), got {x.shape} and {y.shape}")
    if not np.all((y == 0) | (y == 1)) or len(np.unique(y)) < 2:
        raise ValueError("labels must be 0/1 and contain both classes")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    l2 = 1.0 / len(x) if l2 is None else l2
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    inputs = torch.from_numpy((x - mean) / scale)
    targets = torch.from_numpy(y.astype(np.float64))
    weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=steps, tolerance_grad=1e-10,
                                  tolerance_change=0.0, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(inputs @ weight + bias, targets)
        loss = loss + 0.5 * l2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return LinearProbe(mean, scale, weight.detach().numpy().copy(), float(bias.detach()))


def gender_f1_by_race(y_true, y_pred, races):
    """Per-race rows (GENDER_COLUMNS) of a gender prediction, races in FAIRFACE_RACES order.

    For race c (only races present): f1_in = F1 on images of c, f1_out = F1 on all other images (positive
    class Female), worst = min, gap = |f1_in - f1_out| (f1_subgroup); accuracy = fraction of
    images of c predicted right; n = images of c. F1 and accuracy are fractions in [0, 1].
    """
    y_true, y_pred, races = np.asarray(y_true), np.asarray(y_pred), np.asarray(races)
    if not y_true.shape == y_pred.shape == races.shape:
        raise ValueError(f"labels {y_true.shape}, predictions {y_pred.shape} and races {races.shape} differ")
    rows = []
    for race in FAIRFACE_RACES:
        members = races == race
        if not members.any():
            continue
        result = f1_subgroup(y_true, y_pred, members)
        rows.append({"race": race, "n": int(members.sum()), **result,
                     "accuracy": float(np.mean(y_true[members] == y_pred[members]))})
    return rows


def gender_probe(model, train_records, val_records, image_size, batch_size, workers, device, steps=100):
    """Fit the gender probe on `train_records`' embeddings, score it on `val_records` (FairFace records).

    Returns (per-race rows, summary): the rows of gender_f1_by_race on val; summary = overall val
    accuracy and F1, train accuracy (fractions) and the positive class.
    """
    train_features = extract_features(model, train_records, image_size, batch_size, workers, device)
    val_features = extract_features(model, val_records, image_size, batch_size, workers, device)
    train_labels, val_labels = gender_labels(train_records), gender_labels(val_records)
    probe = fit_logistic_regression(train_features, train_labels, steps=steps)
    predictions = probe.predict(val_features)
    rows = gender_f1_by_race(val_labels, predictions, [record.race for record in val_records])
    summary = {"positive_class": GENDER_POSITIVE, "steps": steps,
               "train_accuracy": float(np.mean(probe.predict(train_features) == train_labels)),
               "val_accuracy": float(np.mean(predictions == val_labels)),
               "val_f1": f1_score(val_labels, predictions)}
    return rows, summary


def bias_probe_sets(records):
    """Probe sets of FairFace `records`: name -> row indices, for each race ("White") and race x gender
    ("White Male", "White Female"), races in FAIRFACE_RACES order; races absent from `records` are left out.

    A present race without images of one gender is an error (ValueError naming the empty sets): a
    comparison silently dropped would change the list that the Bias Transfer Score ranks.
    """
    sets = {}
    for race in FAIRFACE_RACES:
        members = [i for i, record in enumerate(records) if record.race == race]
        if not members:
            continue
        sets[race] = members
        for gender in datasets.FAIRFACE_GENDERS:
            sets[f"{race} {gender}"] = [i for i in members if records[i].gender == gender]
    empty = [name for name, members in sets.items() if not members]
    if empty:
        raise ValueError(f"bias probe sets without images: {', '.join(empty)}")
    return sets


def bias_comparisons(sets):
    """The fixed comparison list: every pair of race sets, then each race's Male vs Female set."""
    races = [race for race in FAIRFACE_RACES if race in sets]
    pairs = list(itertools.combinations(races, 2))
    pairs += [(f"{race} {datasets.FAIRFACE_GENDERS[0]}", f"{race} {datasets.FAIRFACE_GENDERS[1]}") for race in races]
    return pairs


def bias_probe(features_pretrained, features_finetuned, records):
    """Association scores of every comparison before and after training, and their Bias Transfer Score.

    features_*: (N, D) embeddings of the same `records` by the starting and by the trained backbone.
    Returns (rows with BIAS_COLUMNS, BTS in [-1, 1] or NaN when one side's scores are all equal).
    """
    if len(features_pretrained) != len(records) or len(features_finetuned) != len(records):
        raise ValueError(f"{len(features_pretrained)} and {len(features_finetuned)} feature rows for "
                         f"{len(records)} records")
    sets = bias_probe_sets(records)
    rows = []
    for set_a, set_b in bias_comparisons(sets):
        a, b = sets[set_a], sets[set_b]
        rows.append({"set_a": set_a, "set_b": set_b, "n_a": len(a), "n_b": len(b),
                     "assoc_pretrained": association_score(features_pretrained[a], features_pretrained[b]),
                     "assoc_finetuned": association_score(features_finetuned[a], features_finetuned[b])})
    score = bias_transfer_score([row["assoc_pretrained"] for row in rows],
                                         [row["assoc_finetuned"] for row in rows])
    return rows, score


# ---------------------------------------------------------------------------------------------------------
# F1 by subgroup


def f1_score(y_true, y_pred):
    """Binary F1 of the positive class 1: 2 TP / (2 TP + FP + FN), in [0, 1].

    0.0 when there are no true and no predicted positives (sklearn's zero_division=0 default).
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {y_true.shape} and {y_pred.shape}")
    for name, labels in (("y_true", y_true), ("y_pred", y_pred)):
        if not np.all((labels == 0) | (labels == 1)):
            raise ValueError(f"{name} must contain only 0 and 1")
    true_positive = np.sum((y_true == 1) & (y_pred == 1))
    false_positive = np.sum((y_true == 0) & (y_pred == 1))
    false_negative = np.sum((y_true == 1) & (y_pred == 0))
    denominator = 2 * true_positive + false_positive + false_negative
    return float(2 * true_positive / denominator) if denominator > 0 else 0.0


def f1_subgroup(y_true, y_pred, in_group):
    """F1 inside and outside a subgroup c: dict(f1_in = F1(t|c), f1_out = F1(t|not c), worst, gap).

    worst = min(f1_in, f1_out); gap = |f1_in - f1_out|, as in the BatchNorm fine-tuning study. `in_group`
    is a boolean mask aligned with y_true; both sides must be non-empty.
    """
    in_group = np.asarray(in_group, dtype=bool)
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if in_group.shape != y_true.shape:
        raise ValueError(f"in_group mask {in_group.shape} does not match labels {y_true.shape}")
    if in_group.all() or not in_group.any():
        raise ValueError("the subgroup and its complement must both be non-empty")
    f1_in = f1_score(y_true[in_group], y_pred[in_group])
    f1_out = f1_score(y_true[~in_group], y_pred[~in_group])
    return {"f1_in": f1_in, "f1_out": f1_out, "worst": min(f1_in, f1_out), "gap": abs(f1_in - f1_out)}


# ---------------------------------------------------------------------------------------------------------
# Bias Transfer Score


def association_score(feats_a, feats_b=None, seed=0):
    """Mean pairwise cosine similarity between two feature sets, in [-1, 1].

    feats_a (N, D), feats_b (M, D): mean over all N x M pairs of cos(a_i, b_j) of the L2-normalized rows
    (computed exactly as the dot product of the two mean unit vectors). With feats_b None the set is
    compared with itself without self-pairs: a seeded random permutation is split into its first
    floor(N/2) rows and the rest, and those two halves are compared.
    """
    unit_a = l2_normalize(feats_a)
    if feats_b is None:
        if len(unit_a) < 2:
            raise ValueError("a split-half self-association needs at least two feature rows")
        order = np.random.default_rng(seed).permutation(len(unit_a))
        half = len(unit_a) // 2
        unit_a, unit_b = unit_a[order[:half]], unit_a[order[half:]]
    else:
        unit_b = l2_normalize(feats_b)
        if unit_b.shape[1] != unit_a.shape[1]:
            raise ValueError(f"feature sizes differ: {unit_a.shape[1]} vs {unit_b.shape[1]}")
    return float(unit_a.mean(axis=0) @ unit_b.mean(axis=0))


def _average_ranks(x):
    """1-based ranks of x, tied values sharing the mean of the ranks they span."""
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    starts_block = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    block = np.cumsum(starts_block) - 1
    first = np.flatnonzero(starts_block)  # 0-based first position of each tie block
    last = np.concatenate([first[1:], [len(x)]]) - 1
    ranks = np.empty(len(x))
    ranks[order] = ((first + last) / 2.0 + 1.0)[block]
    return ranks


def spearman(x, y):
    """Spearman rank correlation in [-1, 1]: Pearson correlation of average ranks (ties share ranks).

    NaN when either input is constant (no ranking to correlate).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
        raise ValueError(f"spearman needs two 1-D arrays of equal length >= 2, got {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("spearman inputs contain NaN or inf")
    rank_x = _average_ranks(x) - (len(x) + 1) / 2.0  # centred: ranks always average (N + 1) / 2
    rank_y = _average_ranks(y) - (len(y) + 1) / 2.0
    denominator = np.sqrt(np.sum(rank_x**2) * np.sum(rank_y**2))
    return float(np.sum(rank_x * rank_y) / denominator) if denominator > 0 else float("nan")


def bias_transfer_score(assoc_pretrained, assoc_finetuned):
    """Bias Transfer Score: Spearman correlation between association scores before and after fine-tuning.

    Both lists hold one association_score per comparison (e.g. race group x attribute), in the same order.
    In [-1, 1]; high = the fine-tuned model keeps the pretrained model's ordering of associations. At least
    three comparisons: with two, any Spearman correlation is +-1 and says nothing.
    """
    if len(assoc_pretrained) != len(assoc_finetuned):
        raise ValueError(f"{len(assoc_pretrained)} pretrained vs {len(assoc_finetuned)} fine-tuned associations")
    if len(assoc_pretrained) < 3:
        raise ValueError("a Bias Transfer Score needs at least three comparisons")
    return spearman(assoc_pretrained, assoc_finetuned)
