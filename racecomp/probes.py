"""Probes of what a face-recognition backbone encodes besides identity, on FairFace images.

- Gender probe: a logistic-regression head on frozen embeddings (train on FairFace train, score on val),
  scored per race by F1 inside vs outside the race (the BatchNorm fine-tuning study's protocol).
- Bias probe: association scores (mean pairwise cosine of embeddings) between FairFace probe sets, before
  and after training, and their Bias Transfer Score (Spearman correlation; the gender-bias-transfer study).

Features are the model's embeddings (its last layer before any head) of FairFace images resized to the
model's input size, in eval mode, without the flip test: one forward pass per image.
"""
import itertools

import numpy as np
import torch

from racecomp import datasets, engine, fairness, verification
from racecomp.races import FAIRFACE_RACES

GENDER_POSITIVE = "Female"  # class 1 of the gender probe, the positive class of its F1
GENDER_COLUMNS = ("race", "n", "f1_in", "f1_out", "worst", "gap", "accuracy")
BIAS_COLUMNS = ("set_a", "set_b", "n_a", "n_b", "assoc_pretrained", "assoc_finetuned")


def extract_features(model, records, image_size, batch_size, workers, device):
    """(N, D) float64 numpy embeddings of FairFace `records` in record order.

    Images are RGB, resized to `image_size` (bicubic, antialias) and mapped to [-1, 1]; model in eval mode.
    """
    items = [((record.file,), record.path) for record in records]
    loader = engine.make_loader(datasets.FaceImages(items, image_size=image_size), batch_size, workers, device)
    return verification.embed(model, loader, device, flip=False)


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
    class Female), worst = min, gap = |f1_in - f1_out| (fairness.f1_subgroup); accuracy = fraction of
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
        result = fairness.f1_subgroup(y_true, y_pred, members)
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
               "val_f1": fairness.f1_score(val_labels, predictions)}
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
                     "assoc_pretrained": fairness.association_score(features_pretrained[a], features_pretrained[b]),
                     "assoc_finetuned": fairness.association_score(features_finetuned[a], features_finetuned[b])})
    score = fairness.bias_transfer_score([row["assoc_pretrained"] for row in rows],
                                         [row["assoc_finetuned"] for row in rows])
    return rows, score
