"""Coverage, false-positive rate and power of the contrasts between experiments (racecomp.contrasts
linear_contrast, summary_change; racecomp.planner seeds_for_power), by seeded simulation of run tables whose truth is known.

    python -m bench.bench_contrasts                       # 1000 replicates per cell (several minutes)
    python -m bench.bench_contrasts --reps 200 --only did

Not a test and not in CI (tests/test_contrasts.py runs small versions). Studies:
  did       difference in differences (A under - A balanced) - (B under - B balanced) on the under-sampled race:
            4 experiments x k seeds (2, 3, 5) of per-image PSNR = image difficulty + arch offset + planted
            penalty + per-seed race offset (sd 0.15 dB) + per-image noise (sd 0.3 dB); planted interaction
            0 (placebo) or 0.3 dB (coverage, power)
  summary   change of a fairness summary between two experiments (e.g. W6A6 - fp32) on 0/1 verification
            pairs, 4 races: STD, gap, worst and mean; coverage of the true change and placebo rate
  ties      change of worst and gap when A's two worst races tie and B's worst is 0.5 dB below its runner-up
            (true change 0): PSNR-like items (difficulty sd 3 dB, noise 0.3 dB), A trained (1 or 3 seeds) against
            an exact reference B; 4 or 7 races, 100 or 1000 items a race: false-positive rate
  spread    change of STD, gap and worst when one side is fair: 7 races, A all equal, B's race offsets sd 0.216
            dB, one seed each, 30 / 100 / 1000 items a race; and 4 races of 0/1 pairs (1500 a race), A's
            thresholds equal: coverage of the true change
  planner   seeds_for_power's predicted power against simulated power (spread known: a 4000-seed pilot) at its
            recommendation and at 2, 3, 5 and 10 seeds; and the power realised when planning from 3-seed pilots
"""
import argparse
import math
import time

import numpy as np

from bench.bench_intervals import print_table, rate
from racecomp import contrasts, planner

STUDIES = ("did", "summary", "ties", "spread", "planner")


def psnr_cell(rng, difficulty, race, seeds, offset, seed_sd=0.15, noise_sd=0.3):
    """(seeds, N) per-image PSNR of one experiment: difficulty + offset (per race) + seed x race + noise."""
    races = race.max() + 1
    return (difficulty + offset[race] + rng.normal(0.0, seed_sd, (seeds, races))[:, race]
            + rng.normal(0.0, noise_sd, (seeds, len(race))))


def did_weights(race, target):
    weight = np.where(race == target, 1.0 / np.sum(race == target), 0.0)
    return [weight, -weight, -weight, weight]


def study_did(args, rng):
    rows = []
    n_per_race, races = 100, 4
    race = np.repeat(np.arange(races), n_per_race)
    for seeds in (2, 3, 5):
        for interaction in (0.0, 0.3):
            covered = rejected = 0
            width = 0.0
            for rep in range(args.reps):
                difficulty = rng.normal(30.0, 3.0, len(race))
                penalty_a = np.array([-0.4, 0.0, 0.0, 0.0])
                penalty_b = penalty_a + np.array([interaction, 0.0, 0.0, 0.0])
                arch_b = 0.5
                cells = [psnr_cell(rng, difficulty, race, seeds, penalty_a),
                         psnr_cell(rng, difficulty, race, seeds, np.zeros(races)),
                         psnr_cell(rng, difficulty, race, seeds, arch_b + penalty_b),
                         psnr_cell(rng, difficulty, race, seeds, np.full(races, arch_b))]
                result = contrasts.linear_contrast(cells, did_weights(race, 0), race)
                truth = -interaction  # (A under - A bal) - (B under - B bal) = -0.4 - (-0.4 + interaction)
                covered += result["lo"] <= truth <= result["hi"]
                rejected += result["p_value"] < 0.05
                width += (result["hi"] - result["lo"]) / args.reps
            label = "placebo" if interaction == 0 else f"interaction {interaction} dB"
            rows.append([f"DiD, {seeds} seeds per experiment", label, rate(covered, args.reps),
                         rate(rejected, args.reps) if interaction == 0 else "",
                         "" if interaction == 0 else rate(rejected, args.reps), f"{width:.3f}"])
    return rows


def accuracy_cell(rng, item_effects, race, seeds, race_shift, seed_sd=0.1):
    """(seeds, N) 0/1: 1{threshold_r + item effect + seed x race effect + N(0, 1) > 0}."""
    races = race.max() + 1
    latent = (race_shift[race] + item_effects + rng.normal(0.0, seed_sd, (seeds, races))[:, race]
              + rng.normal(size=(seeds, len(race))))
    return (latent > 0).astype(float)


def true_accuracy(race_shift, item_sd, seed_sd):
    return np.array([0.5 * math.erfc(-s / math.sqrt(2.0 * (item_sd ** 2 + seed_sd ** 2 + 1.0))) for s in race_shift])


def study_summary(args, rng):
    rows = []
    n_per_race, item_sd = 1500, 0.7
    race = np.repeat(np.arange(4), n_per_race)
    fp32 = np.array([2.0, 1.8, 1.6, 1.7])  # probit thresholds: about 96, 95, 93, 94% accuracy
    layouts = {"placebo (same recipe)": fp32, "W6A6 widens the gap": np.array([1.9, 1.6, 1.2, 1.5])}
    for seeds in (2, 3, 5):
        for layout, quantized in layouts.items():
            truth_a, truth_b = true_accuracy(quantized, item_sd, 0.1), true_accuracy(fp32, item_sd, 0.1)
            for key in ("std", "gap", "worst", "mean"):
                truth = 100 * (contrasts.summary_gradient(truth_a, key)[0] - contrasts.summary_gradient(truth_b, key)[0])
                covered = rejected = 0
                for rep in range(args.reps):
                    items = rng.normal(0.0, item_sd, len(race))
                    a = accuracy_cell(rng, items, race, seeds, quantized)
                    b = accuracy_cell(rng, items, race, seeds, fp32)
                    result = contrasts.summary_change(a, b, race, key, statistic="percent")
                    covered += result["lo"] <= truth <= result["hi"]
                    rejected += result["p_value"] < 0.05
                placebo = layout.startswith("placebo")
                rows.append([f"{key} change, {seeds} seeds per experiment", f"{layout}, true {truth:+.2f} pp",
                             rate(covered, args.reps), rate(rejected, args.reps) if placebo else "",
                             "" if placebo else rate(rejected, args.reps), ""])
    return rows


def tie_cell(rng, races, n_per_race, seeds):
    """(a, b, race) of the tied-worst cell: A (seeds x N, seed x race sd 0.15 dB when seeds > 1) with races 0
    and 1 tied worst, B (1 x N, exact: no training) with race 0 0.5 dB below race 1; race offsets 0, 0.5, 1, ...
    dB otherwise, so that worst and gap are the same in A and B (true changes 0)."""
    race = np.repeat(np.arange(races), n_per_race)
    offset_b = 0.5 * np.arange(races)
    offset_a = offset_b.copy()
    offset_a[1] = 0.0
    difficulty = rng.normal(30.0, 3.0, len(race))
    a = psnr_cell(rng, difficulty, race, seeds, offset_a, seed_sd=0.15 if seeds > 1 else 0.0)
    b = psnr_cell(rng, difficulty, race, 1, offset_b, seed_sd=0.0)
    return a, b, race


def study_ties(args, rng):
    rows = []
    for races, n_per_race, seeds in ((4, 100, 1), (7, 100, 1), (4, 100, 3), (4, 1000, 1)):
        rejected = {"worst": 0, "gap": 0}
        width = {"worst": 0.0, "gap": 0.0}
        flagged = 0
        for _ in range(args.reps):
            a, b, race = tie_cell(rng, races, n_per_race, seeds)
            for key in rejected:
                result = contrasts.summary_change(a, b, race, key, exact=(False, True))
                rejected[key] += result["p_value"] < 0.05
                width[key] += (result["hi"] - result["lo"]) / args.reps
                flagged += key == "worst" and result["ties"]
        for key in rejected:
            rows.append([f"{key} change, {races} races x {n_per_race} images, A {seeds} seed(s) vs exact B",
                         f"tied worst (flagged in {flagged / args.reps:.0%}), true 0 dB", "",
                         rate(rejected[key], args.reps), "", f"{width[key]:.3f}"])
    return rows


def fair_side_offsets(races, sd):
    """Race offsets evenly spread with sample sd (ddof 1) exactly `sd`, mean 0."""
    offsets = np.linspace(-1.0, 1.0, races)
    return sd * offsets / offsets.std(ddof=1)


def fair_side_cell(rng, races, n_per_race, offset_b):
    """(a, b, race): one seed each of A (all races equal) and B (race offsets offset_b), PSNR-like items."""
    race = np.repeat(np.arange(races), n_per_race)
    difficulty = rng.normal(30.0, 3.0, len(race))
    return (psnr_cell(rng, difficulty, race, 1, np.zeros(races), seed_sd=0.0),
            psnr_cell(rng, difficulty, race, 1, offset_b, seed_sd=0.0), race)


def study_spread(args, rng):
    rows = []
    keys = ("std", "gap", "worst")
    offset_b = fair_side_offsets(7, 0.216)
    truths = {key: -contrasts.summary_gradient(offset_b, key)[0] for key in keys}  # A's are all 0
    for n_per_race in (30, 100, 1000):
        covered, width = {key: 0 for key in keys}, {key: 0.0 for key in keys}
        for _ in range(args.reps):
            a, b, race = fair_side_cell(rng, 7, n_per_race, offset_b)
            for key in keys:
                result = contrasts.summary_change(a, b, race, key)
                covered[key] += result["lo"] <= truths[key] <= result["hi"]
                width[key] += (result["hi"] - result["lo"]) / args.reps
        rows += [[f"{key} change, 7 races x {n_per_race} images, 1 seed each", f"A fair, true {truths[key]:+.3f} dB",
                  rate(covered[key], args.reps), "", "", f"{width[key]:.3f}"] for key in keys]
    race = np.repeat(np.arange(4), 1500)
    fair, unfair = np.full(4, 1.8), np.array([2.0, 1.8, 1.6, 1.7])
    truth_a, truth_b = true_accuracy(fair, 0.7, 0.0), true_accuracy(unfair, 0.7, 0.0)
    truths = {key: 100 * (contrasts.summary_gradient(truth_a, key)[0] - contrasts.summary_gradient(truth_b, key)[0])
              for key in keys}
    covered = {key: 0 for key in keys}
    for _ in range(args.reps):
        items = rng.normal(0.0, 0.7, len(race))
        a = accuracy_cell(rng, items, race, 1, fair, seed_sd=0.0)
        b = accuracy_cell(rng, items, race, 1, unfair, seed_sd=0.0)
        for key in keys:
            result = contrasts.summary_change(a, b, race, key, statistic="percent")
            covered[key] += result["lo"] <= truths[key] <= result["hi"]
    rows += [[f"{key} change, 4 races x 1500 pairs (accuracy), 1 seed each", f"A fair, true {truths[key]:+.2f} pp",
              rate(covered[key], args.reps), "", "", ""] for key in keys]
    return rows


def study_planner(args, rng):
    """The planner's predicted power against simulated power with the spread known (a 4000-seed pilot) at its
    recommendation and at 2, 3, 5 and 10 seeds; then what a user gets who plans from a 3-seed pilot (the usual
    case): the power the recommended seed count really has (the planner's exact model at the true spread),
    planning from the estimate itself and from its SPREAD_BOUND upper confidence bound."""
    rows = []
    n_per_race = 200
    race = np.repeat(np.arange(2), n_per_race)
    weight = np.where(race == 0, 1.0 / n_per_race, 0.0)
    weights = [weight, -weight]

    def sweep(difficulty, seeds, seed_sd, effect):
        return [psnr_cell(rng, difficulty, race, seeds, np.array([-effect, 0.0]), seed_sd),
                psnr_cell(rng, difficulty, race, seeds, np.zeros(2), seed_sd)]

    for seed_sd, effect in ((0.03, 0.3), (0.05, 0.4), (0.02, 0.1), (0.15, 0.3)):
        difficulty = rng.normal(30.0, 3.0, len(race))
        known = contrasts.linear_contrast(sweep(difficulty, 4000, seed_sd, 0.0), weights, race)["planning"]
        recommended = planner.seeds_for_power(known, effect, bound=None)
        for seeds in sorted({recommended, 2, 3, 5, 10}):
            predicted = planner.planned_power(known, effect, seeds, bound=None)
            hits = sum(contrasts.linear_contrast(sweep(difficulty, seeds, seed_sd, effect), weights,
                                                race)["p_value"] < 0.05 for _ in range(args.reps))
            mark = " (recommended)" if seeds == recommended else ""
            rows.append([f"planner, spread known: seed sd {seed_sd} dB, effect {effect} dB, {seeds} seeds{mark}",
                         f"predicted power {predicted:.3f}", "", "", rate(hits, args.reps),
                         f"|predicted - simulated| {abs(predicted - hits / args.reps):.3f}"])
        for bound in (None, planner.SPREAD_BOUND):
            realised, counts = [], []
            for _ in range(args.reps):
                pilot = contrasts.linear_contrast(sweep(difficulty, 3, seed_sd, 0.0), weights, race)["planning"]
                seeds = planner.seeds_for_power(pilot, effect, max_seeds=200, bound=bound)
                seeds = 200 if seeds == math.inf else seeds
                counts.append(seeds)
                realised.append(planner.planned_power(known, effect, seeds, bound=None))
            realised = np.array(realised)
            plan = "the estimate" if bound is None else f"its {bound:.0%} upper bound"
            rows.append([f"planner, 3-seed pilot, planning from {plan}: seed sd {seed_sd} dB, effect {effect} dB",
                         f"recommends median {int(np.median(counts))} seeds (10-90%: {int(np.quantile(counts, 0.1))}"
                         f"-{int(np.quantile(counts, 0.9))}; known spread: {recommended})", "", "",
                         f"realised {np.mean(realised):.3f}, >= 0.8 in {np.mean(realised >= 0.8):.0%} of pilots", ""])
    return rows


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help)
    parser.add_argument("--reps", type=int, default=1000, help="simulated sweeps per cell")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulation")
    parser.add_argument("--only", nargs="+", choices=STUDIES, default=list(STUDIES), help="studies to run")
    return parser


def main(args):
    header = ["contrast", "truth", "coverage of 95% CI (MC SE)", "false-positive rate at 5% (MC SE)",
              "power (MC SE)", "mean CI width"]
    print(f"settings: --reps {args.reps} --seed {args.seed} --only {' '.join(args.only)}")
    for study in args.only:
        start = time.perf_counter()
        rows = globals()[f"study_{study}"](args, np.random.default_rng([args.seed, STUDIES.index(study)]))
        print_table(f"{study} ({time.perf_counter() - start:.0f} s)", header, rows)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
