"""Under-representing one race in training, at equal compute.

Two studies use it: the upscaling study drops or down-weights a race's FairFace images
(MinoritySampler), the verification study drops a race's identities (subsample_identities) and then
draws the rest uniformly with MinoritySampler(minority=None).
"""
import math

import numpy as np
import torch

from racecomp.datasets.fairface import _round_half_up
from racecomp.errors import InputError
from racecomp.races import FAIRFACE_RACES, check_label

SAMPLER_MODES = ("subsample", "reweight")


class MinoritySampler(torch.utils.data.Sampler):
    """Index sampler that under-represents one race in training, at equal compute.

    `minority` is a FairFace label (None: balanced run, every image drawn uniformly; `weight` is then
    not used) and `weight` W in (0, 1]:
      - mode 'subsample': a seeded subset of round(W * n) of the minority's n images (halves up, at
        least 1) is kept for the whole run (depends on `seed`, not on the epoch); other races keep all
        images. An epoch concatenates fresh seeded permutations of the kept pool, truncated to
        `num_samples`.
      - mode 'reweight': every image is kept; each draw picks the minority's images with W times the
        probability of the others' (with replacement, like WeightedRandomSampler, seeded per epoch).
    Equal compute: an epoch is always `num_samples` draws (default: len(records), the count before
    under-sampling), so the number of optimizer steps never depends on W or the mode.
    The global epoch order is a function of (seed, epoch) only. With `num_replicas` > 1 it is padded by
    wrapping to a multiple of num_replicas and rank r takes positions r, r + num_replicas, ...: disjoint,
    equal-length slices of the same order. Call `set_epoch(epoch)` before each epoch.
    With `flips=True` it yields (index, flip) pairs for FairFaceSR(train=True): flip is a fair coin per
    position of the global order, a function of (seed, epoch, position) only, so which draws are flipped
    does not depend on the number of processes, DataLoader workers, or a resume.
    """

    def __init__(self, records, minority, weight, mode="subsample", seed=0, num_samples=None,
                 num_replicas=1, rank=0, flips=False):
        if not 0.0 < weight <= 1.0:
            raise InputError(f"weight must be in (0, 1], got {weight}")
        if mode not in SAMPLER_MODES:
            raise InputError(f"unknown sampler mode {mode!r}; valid: {', '.join(SAMPLER_MODES)}")
        if not records:
            raise InputError("no records to sample from")
        if num_samples is None:
            num_samples = len(records)
        if num_samples < 1:
            raise InputError(f"num_samples must be >= 1, got {num_samples}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise InputError(f"need 0 <= rank < num_replicas, got rank={rank}, num_replicas={num_replicas}")
        self.races = [record.race for record in records]
        if minority is not None:
            check_label(minority, FAIRFACE_RACES, "minority race")
            if minority not in self.races:
                raise InputError(f"minority race {minority!r} has no training images")
        self.minority = minority
        self.weight = weight
        self.mode = mode
        self.seed = seed
        self.num_samples = num_samples
        self.num_replicas = num_replicas
        self.rank = rank
        self.flips = flips
        self.epoch = 0
        self.pool = self._kept_pool()  # sorted record indices available to this run
        # Per-record draw probability over the pool (reweight only; uniform otherwise).
        self.draw_weights = np.array([self._relative_weight(self.races[i]) for i in self.pool], dtype=np.float64)
        self.probabilities = self.draw_weights / self.draw_weights.sum()

    def _relative_weight(self, race):
        if self.mode == "reweight" and race == self.minority:
            return self.weight
        return 1.0

    def _kept_pool(self):
        all_indices = np.arange(len(self.races))
        if self.minority is None or self.mode == "reweight":
            return all_indices
        is_minority = np.array([race == self.minority for race in self.races])
        minority_indices = all_indices[is_minority]
        keep_count = max(1, _round_half_up(self.weight * len(minority_indices)))
        rng = np.random.default_rng([self.seed, 0])  # stream 0: the run's fixed subset
        kept = rng.choice(minority_indices, size=keep_count, replace=False)
        return np.sort(np.concatenate([all_indices[~is_minority], kept]))

    def set_epoch(self, epoch):
        self.epoch = epoch

    def global_order(self):
        """Record indices of the whole epoch (all ranks), length `num_samples`."""
        rng = np.random.default_rng([self.seed, 1, self.epoch])  # stream 1: per-epoch order
        if self.mode == "reweight" and self.minority is not None:
            return self.pool[rng.choice(len(self.pool), size=self.num_samples, replace=True, p=self.probabilities)]
        repeats = math.ceil(self.num_samples / len(self.pool))
        order = np.concatenate([rng.permutation(self.pool) for _ in range(repeats)])
        return order[:self.num_samples]

    def global_flips(self):
        """Horizontal-flip bits (bool) of the whole epoch's positions, length `num_samples`."""
        rng = np.random.default_rng([self.seed, 2, self.epoch])  # stream 2: per-epoch flips
        return rng.integers(0, 2, size=self.num_samples).astype(bool)

    def __len__(self):
        return math.ceil(self.num_samples / self.num_replicas)

    def __iter__(self):
        padded_length = len(self) * self.num_replicas
        mine = slice(self.rank, padded_length, self.num_replicas)
        order = np.resize(self.global_order(), padded_length)[mine]  # wraps around to pad
        if not self.flips:
            return iter(order.tolist())
        flips = np.resize(self.global_flips(), padded_length)[mine]
        return iter(zip(order.tolist(), flips.tolist()))

    def realized_counts(self):
        """race -> {'available': images in the pool, 'expected_per_epoch': expected draws per global epoch}.

        Expected draws are exact expectations over the epoch's randomness: num_samples times the race's
        share of the draw probability (every position of a random permutation has the pool's proportions).
        """
        counts = {}
        pool_races = [self.races[i] for i in self.pool]
        for race in FAIRFACE_RACES:
            if race not in self.races:
                continue
            in_race = np.array([r == race for r in pool_races])
            counts[race] = {
                "available": int(in_race.sum()),
                "expected_per_epoch": float(self.num_samples * self.draw_weights[in_race].sum()
                                            / self.draw_weights.sum()),
            }
        return counts


def subsample_identities(records, minority, weight, seed):
    """Keep a seeded fraction `weight` of the identities of race `minority` (all their images), all others.

    records: IdentityImage list (read_identity_folders); minority: its race label, or None to return
    `records` itself. Returns the kept records in input order. Identities, not images, are dropped: a
    recognition model is under-exposed to a group by meeting fewer of its people (the BUPT-Balancedface
    study's notion of imbalance). Raises ValueError when no record has race `minority`.
    """
    if minority is None:
        return records
    ids = sorted({r.identity for r in records if r.race == minority})
    if not ids:
        raise InputError(f"--minority {minority}: no training identities of that race")
    # Python's round (halves to even), unlike MinoritySampler's halves-up: kept from run_verify.py, where
    # this was written, so the identities a seed keeps do not change.
    keep_count = max(1, round(weight * len(ids)))
    generator = torch.Generator().manual_seed(seed)
    kept = {ids[i] for i in torch.randperm(len(ids), generator=generator)[:keep_count].tolist()}
    return [r for r in records if r.race != minority or r.identity in kept]
