"""Per-race RFW verification scoring time: kfold_accuracy vs an insightface-style numpy loop, and run_verify's step.

    python -m bench.bench_scoring                                    # 4 races x 6,000 pairs (RFW size), 3 repeats
    python -m bench.bench_scoring --pairs-per-race 600 --repeats 1   # a quick look

Data (seeded, numpy only, no images): per race --pairs-per-race pairs in RFW's layout (racecomp.datasets.rfw,
toyrfw.make_rfw): 10 folds of consecutive lines, each half genuine then half impostor, identities disjoint
between folds. Cosine scores: genuine ~ N(0.5, 0.15), impostor ~ N(0.05, 0.12), clipped to [-1, 1], and a
quarter of them rounded to 2 decimals, so that tied scores exist and some distances 2 - 2 * score fall on
insightface's threshold grid (where a strict < decides).

Two measurements, each the median of --repeats, the compared settings taking turns repeat by repeat:
  (a) one race's 10-fold accuracy: metrics.kfold_accuracy as per_race_table calls it (RFW fold ids, default
      search="insightface") against `reference_kfold`, an independent loop written here after insightface's
      calculate_roc / calculate_accuracy (recognition/arcface_torch/eval/verification.py): squared L2
      distance 2 - 2 * score, thresholds np.arange(0, 4, 0.01), for each of 10 contiguous folds
      (KFold(10, shuffle=False)) a python loop over the 400 thresholds scoring the 9 training folds
      (same when dist < threshold), the first best (np.argmax), then the held-out fold's accuracy at it.
      Fold accuracies and thresholds are asserted IDENTICAL (==, not close). insightface's calculate_roc
      also scores all 400 thresholds on the held-out fold for its ROC curve; that loop does not change the
      accuracy and is not in the reference, so the ratio understates the cost of their whole function.
  (b) what run_verify does after the embeddings exist (studies.verify.evaluate_to_dir): verification.score_pairs
      (cosines of the (N, 512) float64 embeddings), per_race_table (threshold at FAR 1e-3 on all races
      pooled; per race 10-fold accuracy and its std, TPR / FPR at that threshold, TAR at FAR 1e-3 and 1e-2),
      evaluation.write_results (per_pair.csv, per_race.csv, into a temporary folder) and print_table
      (output captured). run_verify computes no interval: the per-race confidence intervals are computed
      later by summarize.py (racecomp.tables, fairness.group_intervals; Wilson intervals for accuracy, no
      bootstrap replicates), and are timed on a separate line for reference. Each pair has its own two
      images (12,000 embeddings per race at 6,000 pairs; real RFW has about 10,000 images per race), built so
      that their cosine is the synthetic score (to ~1e-16).
The (b) table is also checked against `reference_kfold` on insightface's own distance, the sum of squared
differences of the L2-normalized embeddings; a difference there is reported (printed), not asserted.
"""
import argparse
import contextlib
import io
import statistics
import tempfile
import time

import numpy as np
import torch

from bench import common
from racecomp import datasets, evaluation, fairness, metrics, verification
from racecomp.races import RFW_RACES
from racecomp.studies import verify

FOLDS = 10
# insightface's calculate_roc grid on the squared L2 distance of unit embeddings: 0.00, 0.01, ..., 3.99.
REFERENCE_THRESHOLDS = np.arange(0, 4, 0.01)
GENUINE = (0.5, 0.15)  # cosine mean, sd
IMPOSTOR = (0.05, 0.12)
ROUNDED_FRACTION = 0.25  # share of scores rounded to 2 decimals (ties, and distances on the threshold grid)
IDENTITIES_PER_FOLD = 300  # RFW: about 3,000 identities per race
EMBEDDING_SIZE = 512  # run_verify's default --embedding-size


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    group = parser.add_argument_group("benchmark")
    group.add_argument("--pairs-per-race", type=int, default=6000,
                       help="pairs per race, a multiple of 20 (10 folds, each half genuine, half impostor)")
    group.add_argument("--races", type=int, choices=range(1, len(RFW_RACES) + 1), default=len(RFW_RACES),
                       help=f"number of races scored, the first of {', '.join(RFW_RACES)}")
    group.add_argument("--repeats", type=int, default=3, help="timed runs per setting; the median is reported")
    group.add_argument("--seed", type=int, default=0, help="seed of the synthetic scores and embeddings")
    group.add_argument("--results", default=None, help="append one JSON line per measured row to this file")
    return parser


# ---------------------------------------------------------------------------------------------- data

def synthetic_race(race_index, pairs_per_race, seed):
    """(scores (N,) float64 cosines, labels (N,) int 0/1, fold ids (N,)) of one race in RFW's pair-file order."""
    rng = np.random.default_rng([seed, race_index])
    fold_size = pairs_per_race // FOLDS
    half = fold_size // 2
    labels = np.tile(np.repeat([1, 0], half), FOLDS)
    scores = np.where(labels == 1, rng.normal(*GENUINE, pairs_per_race), rng.normal(*IMPOSTOR, pairs_per_race))
    scores = np.clip(scores, -1.0, 1.0)
    rounded = rng.random(pairs_per_race) < ROUNDED_FRACTION
    scores[rounded] = np.round(scores[rounded], 2)
    return scores, labels, np.arange(pairs_per_race) // fold_size


def synthetic_pairs(race, labels, folds, seed):
    """RFW Pair records of one race: identities disjoint between folds, each pair with its own two images."""
    rng = np.random.default_rng([seed, 1000 + RFW_RACES.index(race)])
    pairs = []
    for line, (label, fold) in enumerate(zip(labels, folds), start=1):
        first, second = rng.choice(IDENTITIES_PER_FOLD, size=2, replace=False)
        id1 = f"m.{race[:2]}{fold:02d}{first:04d}"
        id2 = id1 if label == 1 else f"m.{race[:2]}{fold:02d}{second:04d}"
        pairs.append(datasets.Pair(race=race, fold=int(fold), line=line, id1=id1, n1=2 * line - 1, id2=id2,
                                   n2=2 * line, label=int(label)))
    return pairs


def embeddings_for(scores, rng, size=EMBEDDING_SIZE):
    """(first, second), each (N, size) float64, not unit length, whose rows' cosines are `scores` (to ~1e-16)."""
    first = rng.normal(size=(len(scores), size))
    first /= np.linalg.norm(first, axis=1, keepdims=True)
    other = rng.normal(size=(len(scores), size))
    other -= np.einsum("nd,nd->n", other, first)[:, None] * first  # orthogonal to `first`
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    second = scores[:, None] * first + np.sqrt(1.0 - scores**2)[:, None] * other
    # Flip-test embeddings are sums, not unit vectors: scale each row so that normalization is not skipped.
    return first * rng.uniform(0.5, 2.0, (len(scores), 1)), second * rng.uniform(0.5, 2.0, (len(scores), 1))


# ---------------------------------------------------------------------------------------------- reference

def reference_accuracy(threshold, dist, issame):
    """(tpr, fpr, accuracy) of `dist < threshold` as 'same', in the manner of insightface's calculate_accuracy."""
    predicted = np.less(dist, threshold)
    tp = np.sum(np.logical_and(predicted, issame))
    fp = np.sum(np.logical_and(predicted, np.logical_not(issame)))
    tn = np.sum(np.logical_and(np.logical_not(predicted), np.logical_not(issame)))
    fn = np.sum(np.logical_and(np.logical_not(predicted), issame))
    tpr = 0.0 if tp + fn == 0 else float(tp) / float(tp + fn)
    fpr = 0.0 if fp + tn == 0 else float(fp) / float(fp + tn)
    return tpr, fpr, float(tp + tn) / dist.size


def contiguous_folds(n_pairs, n_folds=FOLDS):
    """(train, test) index arrays of sklearn's KFold(n_folds, shuffle=False): blocks, the first n % k one longer."""
    sizes = np.full(n_folds, n_pairs // n_folds)
    sizes[:n_pairs % n_folds] += 1
    indices = np.arange(n_pairs)
    stops = np.cumsum(sizes)
    for start, stop in zip(stops - sizes, stops):
        yield np.concatenate([indices[:start], indices[stop:]]), indices[start:stop]


def reference_kfold(dist, issame, thresholds=REFERENCE_THRESHOLDS):
    """(fold accuracies (10,), best thresholds (10,)) on squared L2 distances `dist`, insightface's search."""
    issame = np.asarray(issame, dtype=bool)
    accuracies, chosen = [], []
    for train, test in contiguous_folds(len(dist)):
        train_accuracy = np.zeros(len(thresholds))
        for index, threshold in enumerate(thresholds):
            _, _, train_accuracy[index] = reference_accuracy(threshold, dist[train], issame[train])
        best = np.argmax(train_accuracy)
        accuracies.append(reference_accuracy(thresholds[best], dist[test], issame[test])[2])
        chosen.append(thresholds[best])
    return np.array(accuracies), np.array(chosen)


# ---------------------------------------------------------------------------------------------- timing

def timed(function, *arguments, **keywords):
    started = time.perf_counter()
    result = function(*arguments, **keywords)
    return time.perf_counter() - started, result


def check_identical(project, reference, race):
    accuracies, thresholds = reference
    if not (np.array_equal(project["fold_accuracies"], accuracies) and np.array_equal(project["thresholds"],
                                                                                          thresholds)):
        raise AssertionError(f"{race}: kfold_accuracy differs from the insightface-style reference: fold "
                             f"accuracies {project['fold_accuracies'].tolist()} vs {accuracies.tolist()}, "
                             f"thresholds {project['thresholds'].tolist()} vs {thresholds.tolist()}")


def scoring_step(pairs, keys, embeddings, fars, out_dir, columns):
    """run_verify's scoring after embedding (evaluate_to_dir); ((table, threshold, rows), stage seconds)."""
    seconds = {}
    seconds["score_pairs"], rows = timed(verification.score_pairs, pairs, keys, embeddings)
    seconds["per_race_table"], (table, threshold) = timed(verification.per_race_table, rows, fars=fars)
    seconds["write_results"], _ = timed(evaluation.write_results, out_dir, rows, table, item_name="per_pair.csv",
                                        run_columns=columns)
    with contextlib.redirect_stdout(io.StringIO()):
        seconds["print_table"], _ = timed(verification.print_table, table, threshold, fars[0])
    return (table, threshold, rows), seconds


def summarize_intervals(rows):
    """The per-race accuracy intervals summarize.py computes from per_pair.csv (fairness.group_intervals)."""
    return fairness.group_intervals(np.array([row["correct"] for row in rows], dtype=np.float64),
                                    np.array([row["race"] for row in rows]), "percent",
                                    clusters=np.array([row["id1"] for row in rows]),
                                    clusters2=np.array([row["id2"] for row in rows]))


def report(args, info, name, runs, unit_count, unit, **extra):
    """Print '<name>: median ms per <unit> (runs ...); total' and record it; returns the median seconds per run."""
    median = statistics.median(runs)
    per_unit = ", ".join(f"{1e3 * seconds / unit_count:.3g}" for seconds in runs)
    print(f"{name:<46}: {1e3 * median / unit_count:.3g} ms per {unit} (runs: {per_unit}); "
          f"{args.races} x {args.pairs_per_race} pairs: {median:.3g} s", flush=True)
    common.record(args, info, bench="scoring", name=name, seconds=runs, median_seconds=median, **extra)
    return median


def main(args):
    if args.pairs_per_race < 2 * FOLDS or args.pairs_per_race % (2 * FOLDS):
        raise ValueError(f"--pairs-per-race {args.pairs_per_race}: need a positive multiple of {2 * FOLDS} "
                         "(10 folds, each half genuine, half impostor)")
    if args.repeats < 1:
        raise ValueError(f"--repeats {args.repeats}: must be >= 1")
    info = common.machine(torch.device("cpu"))  # numpy on the CPU: --device and --threads do not apply
    print("machine: " + ", ".join(f"{key} {value}" for key, value in info.items()))
    print("settings: " + " ".join(f"--{key.replace('_', '-')} {value}" for key, value in sorted(vars(args).items())))
    races = RFW_RACES[:args.races]
    data = {race: synthetic_race(index, args.pairs_per_race, args.seed) for index, race in enumerate(races)}

    # (a) one race's 10-fold accuracy: project vs reference, interleaved race by race, after one untimed call each.
    scores, labels, folds = data[races[0]]
    check_identical(metrics.kfold_accuracy(scores, labels, folds=folds), reference_kfold(2.0 - 2.0 * scores,
                                                                                        labels == 1), races[0])
    seconds = {"project": [], "reference": []}
    for _ in range(args.repeats):
        totals = {"project": 0.0, "reference": 0.0}
        for race, (scores, labels, folds) in data.items():
            elapsed, project = timed(metrics.kfold_accuracy, scores, labels, folds=folds)
            totals["project"] += elapsed
            elapsed, reference = timed(reference_kfold, 2.0 - 2.0 * scores, labels == 1)
            totals["reference"] += elapsed
            check_identical(project, reference, race)
        for key in totals:
            seconds[key].append(totals[key])
    project_median = report(args, info, "(a) kfold_accuracy (project)", seconds["project"], args.races, "race")
    reference_median = report(args, info, "(a) insightface-style loop (reference)", seconds["reference"],
                              args.races, "race")
    ratios = ", ".join(f"{r / p:.0f}" for r, p in zip(seconds["reference"], seconds["project"]))
    print(f"{'(a) reference / project':<46}: {reference_median / project_median:.0f}x (per repeat: {ratios})")
    common.record(args, info, bench="scoring", name="(a) reference / project",
                  ratio=reference_median / project_median)
    accuracies = {race: metrics.kfold_accuracy(scores, labels, folds=folds)["accuracy"]
                  for race, (scores, labels, folds) in data.items()}
    print(f"{'(a) identical to the reference':<46}: yes, fold accuracies and thresholds equal (==) in "
          f"{args.races} races x {args.repeats} repeats; accuracy % "
          + ", ".join(f"{race} {100.0 * accuracy:.4f}" for race, accuracy in accuracies.items()))

    # (b) run_verify's scoring step after the embeddings exist.
    rng = np.random.default_rng([args.seed, 2000])
    pairs, parts = [], []
    for race, (scores, labels, folds) in data.items():
        pairs += synthetic_pairs(race, labels, folds, args.seed)
        first, second = embeddings_for(scores, rng)
        parts.append(np.stack([first, second], axis=1).reshape(-1, first.shape[1]))  # (2N, D): a1, b1, a2, ...
    keys = verification.pair_image_keys(pairs)  # in first-use order: each pair's two own images, pair by pair
    assert len(keys) == 2 * len(pairs)
    embeddings = np.concatenate(parts)  # (images, D) float64, in `keys` order, as verification.embed returns
    verify_args = verify.get_args_parser().parse_args([])
    fars = tuple(verify_args.far)
    columns = verify.run_columns(verify_args, "bench")
    stages, intervals = [], []
    with tempfile.TemporaryDirectory() as out_dir:
        for _ in range(args.repeats):
            (table, threshold, rows), stage = scoring_step(pairs, keys, embeddings, fars, out_dir, columns)
            stages.append(stage)
            intervals.append(timed(summarize_intervals, rows)[0])
    totals = [sum(stage.values()) for stage in stages]
    report(args, info, "(b) run_verify scoring step, total", totals, args.races, "race")
    for name in stages[0]:
        report(args, info, f"(b)   {name}", [stage[name] for stage in stages], args.races, "race")
    report(args, info, "(b') summarize.py intervals (not run_verify)", intervals, args.races, "race")

    # The (b) table against the reference on insightface's own distance (sum of squared differences).
    scores_b = np.array([row["score"] for row in rows])
    gap = float(np.max(np.abs(scores_b - np.concatenate([values[0] for values in data.values()]))))
    first, second = metrics.l2_normalize(embeddings[0::2]), metrics.l2_normalize(embeddings[1::2])
    distances = np.sum(np.square(first - second), axis=1)
    lines = []
    for index, entry in enumerate(table):
        members = slice(index * args.pairs_per_race, (index + 1) * args.pairs_per_race)
        folds_correct = reference_kfold(distances[members], np.array([p.label for p in pairs[members]]) == 1)[0]
        reference = 100.0 * float(folds_correct.mean())  # as per_race_table: 100 x the mean of the fold accuracies
        lines.append(f"{entry['race']} {entry['accuracy']:.4f} vs {reference:.4f}"
                     + ("" if entry["accuracy"] == reference else " (differs)"))
    print(f"{'(b) accuracy %, table vs reference on sum sq.':<46}: {'; '.join(lines)}; scores from embeddings within "
          f"{gap:.1g} of the synthetic ones; global threshold {threshold:.4f}")
    return {"project_seconds": project_median, "reference_seconds": reference_median,
            "ratio": reference_median / project_median, "step_seconds": statistics.median(totals), "table": table}


if __name__ == "__main__":
    main(get_args_parser().parse_args())
