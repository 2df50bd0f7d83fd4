"""bench/bench_scoring.py: its insightface-style reference on hand cases, its data, and a tiny end-to-end run."""
import numpy as np
import pytest

from bench import bench_scoring
from racecomp import metrics


def test_reference_accuracy_is_strict_less_than():
    dist = np.array([0.5, 1.0, 1.5, 2.0])
    issame = np.array([True, True, False, False])
    assert bench_scoring.reference_accuracy(1.0, dist, issame) == (0.5, 0.0, 0.75)  # 1.0 < 1.0 is "different"
    assert bench_scoring.reference_accuracy(1.5, dist, issame) == (1.0, 0.0, 1.0)


def test_contiguous_folds_are_kfold_blocks():
    tests = [test for _, test in bench_scoring.contiguous_folds(23, 10)]
    assert [len(t) for t in tests] == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]  # KFold: the first n % k one longer
    assert np.array_equal(np.concatenate(tests), np.arange(23))
    for train, test in bench_scoring.contiguous_folds(23, 10):
        assert sorted(np.concatenate([train, test]).tolist()) == list(range(23))


def test_reference_matches_kfold_accuracy_and_data_hits_the_grid():
    scores, labels, folds = bench_scoring.synthetic_race(0, 200, seed=3)
    assert np.array_equal(labels[:10], np.ones(10)) and np.array_equal(labels[10:20], np.zeros(10))
    assert np.isin(2.0 - 2.0 * scores, bench_scoring.REFERENCE_THRESHOLDS).any()  # strict < is exercised
    project = metrics.kfold_accuracy(scores, labels, folds=folds)
    accuracies, thresholds = bench_scoring.reference_kfold(2.0 - 2.0 * scores, labels == 1)
    assert np.array_equal(project["fold_accuracies"], accuracies)
    assert np.array_equal(project["thresholds"], thresholds)


def test_embeddings_reproduce_the_scores():
    scores = np.array([1.0, -1.0, 0.3, 0.0])
    first, second = bench_scoring.embeddings_for(scores, np.random.default_rng(0), size=8)
    assert np.allclose(metrics.pair_scores(first, second), scores, atol=1e-12)


def test_main_end_to_end(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    args = bench_scoring.get_args_parser().parse_args(["--pairs-per-race", "40", "--races", "2", "--repeats", "1",
                                                       "--results", str(results)])
    out = bench_scoring.main(args)
    assert out["ratio"] > 0 and len(out["table"]) == 2
    assert "identical to the reference" in capsys.readouterr().out
    assert len(results.read_text().splitlines()) == 9  # (a) 3 rows, (b) total + 4 stages, intervals


def test_bad_pair_count():
    with pytest.raises(ValueError, match="multiple of 20"):
        bench_scoring.main(bench_scoring.get_args_parser().parse_args(["--pairs-per-race", "30"]))
