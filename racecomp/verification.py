"""Face verification on RFW: embeddings (with flip test), pair scores, and the per-race protocol.

Pair scores are cosine similarities of L2-normalized embeddings (higher = more alike). Per race:
the standard 10-fold accuracy (threshold chosen on 9 folds by best accuracy); TPR and FPR at ONE global
threshold chosen on all races pooled at a target FAR (per-race thresholds would hide differences in
false matches); TAR at each target FAR per race. All rates in per_race.csv are percentages.
"""
import numpy as np
import torch

from racecomp import datasets, engine, metrics
from racecomp.progress import Progress
from racecomp.races import RFW_RACES


def pair_image_keys(pairs):
    """Unique (race, id, n) image keys of `pairs`, in first-use order."""
    keys = {}
    for pair in pairs:
        for key in ((pair.race, pair.id1, pair.n1), (pair.race, pair.id2, pair.n2)):
            keys.setdefault(key, len(keys))
    return list(keys)


def to_model_range(images):
    """[0, 1] RGB -> [-1, 1], the input range of arcface_torch models (and of our embedding nets)."""
    return images * 2.0 - 1.0


def embed_batch(model, images, flip=True):
    """(B, D) float32 embeddings of faces `images` (B, 3, S, S) RGB in [0, 1], on their device.

    The one embedding step of every recognition score (RFW pairs, the upscaling study's id_cos): the faces
    go to the model in [-1, 1] (to_model_range), the output is taken in fp32, and with `flip` the embedding
    of the mirror image is added (insightface's flip test, so the score does not depend on which way the
    face looks). The caller sets eval mode and no_grad; normalization happens when pairs are scored.
    """
    images = to_model_range(images)
    embedding = model(images).float()
    if flip:
        embedding = embedding + model(images.flip(-1)).float()
    return embedding


@torch.no_grad()
def embed(model, loader, device, flip=True, label="embed", restore=None):
    """(N, D) float64 numpy embeddings in loader order, fp32, eval mode; progress lines labelled `label`.

    Each batch goes through embed_batch (flip test with `flip`). `restore` (optional, e.g.
    racecomp.identity.Restoration, run in eval mode): a module applied to each batch of [0, 1] faces on
    the device before embedding (degrade, then restore), so the flip test mirrors the restored face.
    """
    model.eval()
    if restore is not None:
        restore.eval()
    chunks = []
    progress = Progress(label, len(loader.dataset))
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        if restore is not None:
            images = restore(images)
        chunks.append(embed_batch(model, images, flip).cpu().double().numpy())
        progress.update(len(images))
    progress.finish()
    return np.concatenate(chunks)


def rfw_loader(root, pairs, batch_size, workers, device, align=False, image_size=112):
    """Loader over the unique images of `pairs` (deterministic order) and the list of their keys."""
    keys = pair_image_keys(pairs)
    items = [(key, datasets.rfw_image_path(root, *key)) for key in keys]
    landmarks = None
    if align:
        landmarks = {}
        for race in sorted({key[0] for key in keys}):
            landmarks.update(datasets.read_rfw_landmarks(root, race))
    dataset = datasets.FaceImages(items, image_size=image_size, align_landmarks=landmarks)
    return engine.make_loader(dataset, batch_size, workers, device), keys


def score_pairs(pairs, keys, embeddings):
    """One row per pair (race, fold, line, id1, n1, id2, n2, label, score), in pair-file order."""
    index = {key: i for i, key in enumerate(keys)}
    first = np.array([index[(p.race, p.id1, p.n1)] for p in pairs])
    second = np.array([index[(p.race, p.id2, p.n2)] for p in pairs])
    scores = metrics.pair_scores(embeddings[first], embeddings[second])
    return [{"race": p.race, "fold": p.fold, "line": p.line, "id1": p.id1, "n1": p.n1, "id2": p.id2,
             "n2": p.n2, "label": p.label, "score": float(s)} for p, s in zip(pairs, scores)]


def per_race_table(pair_rows, fars=(1e-3, 1e-2)):
    """Per-race verification table from per-pair rows; also fills each row's `correct` (0/1 under its
    fold's threshold) for bootstrapping. The global threshold is chosen at fars[0] on all races pooled.

    Returns (table rows, global threshold). Rates are percentages; accuracy_std is the std over folds.
    """
    if not pair_rows:
        raise ValueError("no pairs to score")
    scores = np.array([row["score"] for row in pair_rows])
    labels = np.array([row["label"] for row in pair_rows])
    global_threshold = metrics.threshold_at_far(scores, labels, fars[0])
    races = [r for r in RFW_RACES if any(row["race"] == r for row in pair_rows)]
    table = []
    for race in races:
        members = [i for i, row in enumerate(pair_rows) if row["race"] == race]
        race_rows = [pair_rows[i] for i in members]
        race_scores, race_labels = scores[members], labels[members]
        # RFW's own fold of each pair, not a re-split of the file order.
        result = metrics.kfold_accuracy(race_scores, race_labels, folds=np.array([r["fold"] for r in race_rows]))
        for row, correct in zip(race_rows, result["correct"]):
            row["correct"] = int(correct)
        tpr, fpr = metrics.tpr_fpr(race_scores, race_labels, global_threshold)
        entry = {"race": race, "n_pairs": len(members),
                 "n_identities": len({r["id1"] for r in race_rows} | {r["id2"] for r in race_rows}),
                 "accuracy": 100.0 * result["accuracy"], "accuracy_std": 100.0 * result["accuracy_std"],
                 "tpr": 100.0 * tpr, "fpr": 100.0 * fpr}
        for far in fars:
            entry[f"tar_at_far_{far:g}"] = 100.0 * metrics.tar_at_far(race_scores, race_labels, far)
        table.append(entry)
    return table, global_threshold


def print_table(table, threshold, far):
    keys = ["n_pairs", "accuracy", "accuracy_std", "tpr", "fpr"]
    print(f"[rfw] per race (global threshold {threshold:.4f} at FAR {far:g}); rates in percent")
    print(f"{'race':<10} " + " ".join(f"{k:>12}" for k in keys))
    for row in table:
        print(f"{row['race']:<10} " + " ".join(f"{row[k]:>12.4g}" for k in keys))
