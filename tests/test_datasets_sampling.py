"""Under-representing a race: MinoritySampler's pool, draws and rank slices; subsample_identities."""
import math

import numpy as np
import pytest

from racecomp.datasets.fairface import FaceRecord
from racecomp.datasets.identities import IdentityImage
from racecomp.datasets.sampling import MinoritySampler, subsample_identities
from racecomp.races import FAIRFACE_RACES


def fake_records(counts):
    """FaceRecords without files, `counts` = {race: n}, races interleaved in file order."""
    races = [race for race, n in counts.items() for _ in range(n)]
    races = [races[i] for i in np.random.default_rng(0).permutation(len(races))]
    return [FaceRecord(file=f"train/{i + 1}.jpg", path=f"/nowhere/{i + 1}.jpg", race=race, gender="Male",
                       age="20-29", line=i + 2) for i, race in enumerate(races)]


# ---------------------------------------------------------------------------------------------- minority sampler

BALANCED = {race: 100 for race in FAIRFACE_RACES}


@pytest.mark.parametrize("weight", [0, 1.5, -0.2])
def test_sampler_weight_out_of_range(weight):
    with pytest.raises(ValueError, match=r"weight must be in \(0, 1\]"):
        MinoritySampler(fake_records(BALANCED), "Black", weight)


def test_sampler_rejects_misspelled_minority_and_mode():
    with pytest.raises(ValueError, match="unknown race label 'Latino Hispanic'"):
        MinoritySampler(fake_records(BALANCED), "Latino Hispanic", 0.5)
    with pytest.raises(ValueError, match="unknown sampler mode"):
        MinoritySampler(fake_records(BALANCED), "Black", 0.5, mode="drop")
    with pytest.raises(ValueError, match="has no training images"):
        MinoritySampler(fake_records({"White": 5}), "Black", 0.5)


@pytest.mark.parametrize("weight, kept", [(1.0, 100), (0.2, 20), (0.05, 5), (0.013, 1), (0.001, 1)])
def test_subsample_keeps_round_w_n_of_minority_and_all_others(weight, kept):
    records = fake_records(BALANCED)
    sampler = MinoritySampler(records, "Indian", weight, seed=7)
    pool_races = [records[i].race for i in sampler.pool]
    assert pool_races.count("Indian") == kept
    assert all(pool_races.count(race) == 100 for race in FAIRFACE_RACES if race != "Indian")
    counts = sampler.realized_counts()
    assert counts["Indian"]["available"] == kept and counts["White"]["available"] == 100
    assert sum(c["expected_per_epoch"] for c in counts.values()) == pytest.approx(len(records))
    assert counts["Indian"]["expected_per_epoch"] == pytest.approx(len(records) * kept / (600 + kept))


def test_subsample_pool_fixed_for_run_and_epoch_is_concatenated_permutations():
    records = fake_records(BALANCED)
    sampler = MinoritySampler(records, "Black", 0.1, seed=1)
    pool = sampler.pool.tolist()
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == 700
        assert sorted(order[:len(pool)]) == pool  # first block is one permutation of the pool
        assert set(order) <= set(pool)
    assert MinoritySampler(records, "Black", 0.1, seed=1).pool.tolist() == pool
    assert MinoritySampler(records, "Black", 0.1, seed=2).pool.tolist() != pool


def test_sampler_deterministic_given_seed_and_epoch():
    records = fake_records(BALANCED)
    for mode in ("subsample", "reweight"):
        first, second = MinoritySampler(records, "Black", 0.3, mode, seed=5), \
            MinoritySampler(records, "Black", 0.3, mode, seed=5)
        first.set_epoch(2)
        second.set_epoch(2)
        assert list(first) == list(second)
        second.set_epoch(3)
        assert list(first) != list(second)


@pytest.mark.parametrize("mode", ["subsample", "reweight"])
def test_equal_compute_epoch_length_independent_of_weight(mode):
    records = fake_records(BALANCED)
    lengths = {len(list(MinoritySampler(records, "East Asian", w, mode))) for w in (1.0, 0.2, 0.05)}
    assert lengths == {700}
    sampler = MinoritySampler(records, "East Asian", 0.05, mode, num_samples=333)
    assert len(sampler) == 333 and len(list(sampler)) == 333


def test_reweight_draws_minority_at_w_relative_rate():
    records = fake_records(BALANCED)
    draws = 21000
    sampler = MinoritySampler(records, "Black", 0.2, mode="reweight", seed=11, num_samples=draws)
    assert len(sampler.pool) == 700  # nothing dropped
    rate = 0.2 * 100 / (0.2 * 100 + 600)
    count = sum(records[i].race == "Black" for i in sampler)
    std = math.sqrt(draws * rate * (1 - rate))
    assert abs(count - draws * rate) < 4 * std  # uniform drawing would give 3000, ~95 std away
    assert sampler.realized_counts()["Black"] == {"available": 100, "expected_per_epoch": pytest.approx(draws * rate)}


def test_balanced_run_draws_uniformly_without_replacement():
    records = fake_records({"White": 30, "Black": 10})
    sampler = MinoritySampler(records, None, 1.0, seed=0)
    assert sorted(sampler) == list(range(40))
    assert sampler.realized_counts() == {"White": {"available": 30, "expected_per_epoch": pytest.approx(30.0)},
                                         "Black": {"available": 10, "expected_per_epoch": pytest.approx(10.0)}}


@pytest.mark.parametrize("mode, num_samples", [("subsample", 700), ("reweight", 700), ("subsample", 701)])
def test_two_ranks_disjoint_slices_of_the_single_process_epoch(mode, num_samples):
    records = fake_records(BALANCED)
    single = MinoritySampler(records, "Indian", 0.2, mode, seed=3, num_samples=num_samples)
    ranks = [MinoritySampler(records, "Indian", 0.2, mode, seed=3, num_samples=num_samples, num_replicas=2, rank=r)
             for r in (0, 1)]
    for sampler in [single] + ranks:
        sampler.set_epoch(4)
    epoch = list(single)
    slices = [list(sampler) for sampler in ranks]
    assert len(slices[0]) == len(slices[1]) == math.ceil(num_samples / 2)
    interleaved = [index for both in zip(*slices) for index in both]  # positions r, r + 2, ...: disjoint
    assert interleaved[:num_samples] == epoch
    assert interleaved[num_samples:] == epoch[:len(interleaved) - num_samples]  # padding wraps around


def test_sampler_rank_checked():
    with pytest.raises(ValueError, match="rank"):
        MinoritySampler(fake_records(BALANCED), None, 1.0, num_replicas=2, rank=2)


# ---------------------------------------------------------------------------------------------- identity subsampling

def identity_records(counts):
    """IdentityImages without files, `counts` = {race: identities}; identity i has 1 + i % 3 images."""
    records = [IdentityImage(path=f"/nowhere/{race}/{race}{i}/{k}.jpg", race=race, identity=f"{race}{i}",
                             class_index=0)
               for race, n in counts.items() for i in range(n) for k in range(1 + i % 3)]
    return [records[i] for i in np.random.default_rng(0).permutation(len(records))]  # races interleaved


IDENTITIES = {"African": 10, "Asian": 4, "Caucasian": 6}


def kept_ids(records, race):
    return {r.identity for r in records if r.race == race}


# n = 10 identities: 2.5 and 0.5 pin Python's round (halves to even), 0.01 the floor of one identity.
@pytest.mark.parametrize("weight, kept", [(1.0, 10), (0.5, 5), (0.25, 2), (0.35, 4), (0.05, 1), (0.01, 1)])
def test_subsample_identities_keeps_round_w_n_identities_with_all_their_images(weight, kept):
    records = identity_records(IDENTITIES)
    subset = subsample_identities(records, "African", weight, seed=3)
    assert len(kept_ids(subset, "African")) == kept
    assert [r for r in records if r.race != "African" or r.identity in kept_ids(subset, "African")] == subset
    assert [r for r in subset if r.race != "African"] == [r for r in records if r.race != "African"]


def test_subsample_identities_deterministic_per_seed():
    records = identity_records(IDENTITIES)
    first = subsample_identities(records, "African", 0.5, seed=0)
    assert subsample_identities(records, "African", 0.5, seed=0) == first
    assert kept_ids(first, "African") == {"African1", "African3", "African4", "African5", "African7"}
    assert kept_ids(subsample_identities(records, "African", 0.5, seed=1), "African") == \
        {"African0", "African1", "African2", "African5", "African6"}


def test_subsample_identities_without_minority_keeps_everything():
    records = identity_records(IDENTITIES)
    assert subsample_identities(records, None, 0.5, seed=0) is records


@pytest.mark.parametrize("minority", ["Indian", "Afrcan", "White"])
def test_subsample_identities_absent_or_unknown_race(minority):
    with pytest.raises(ValueError, match=f"--minority {minority}: no training identities of that race"):
        subsample_identities(identity_records(IDENTITIES), minority, 0.5, seed=0)
