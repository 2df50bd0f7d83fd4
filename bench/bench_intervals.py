"""Coverage, false-positive rate and power of the tables' statistics (racecomp.fairness), by seeded simulation.

    python -m bench.bench_intervals                      # every study, 1000 replicates each (tens of minutes)
    python -m bench.bench_intervals --reps 200 --only gap placebo

Not a test and not in CI (tests/test_fairness_simulations.py runs small versions). Prints one table per study:
method x distribution (normal, lognormal(0, 1), Student t3) x n (items per race: 30, 1500) x races (tied or
separated) -> coverage of the true value, false-positive rate when the null holds, power when it does not.
Each rate is followed by its Monte Carlo standard error. "old" rows re-implement the methods these replaced
(percentile bootstrap, sign-flip test, permutation test of the gap, identity clusters from id1 only, image-only
paired test) so that the two can be compared on the same draws.

Studies:
  means      per-race mean interval (item 2)
  paired     paired model-vs-model test on skewed differences (item 2)
  gap        gap and STD intervals with races tied at the top or separated (item 3)
  equal      test of equal race means with unequal variances, FairFace-val group sizes (item 4)
  pairs      RFW-like verification pairs with identity effects on both identities (item 5)
  placebo    recipe comparisons: identical recipes (placebo) and a real recipe effect, k seeds per side (item 1)
  ties       2 seeds per side, 0/1 items, where the seed means of a race often tie: coverage of the recipe
             interval of a race's accuracy, placebo rate of the recipe comparison (statistics review, item 1)
"""
import argparse
import math
import time

import numpy as np

from racecomp import estimates, fairness

DISTRIBUTIONS = ("normal", "lognormal", "t3")
SIZES = (30, 1500)
FAIRFACE_VAL_SIZES = (2085, 1556, 1623, 1550, 1516, 1209, 1415)  # FairFace val images per race
STUDIES = ("means", "paired", "gap", "equal", "pairs", "placebo", "ties")


def draw(rng, distribution, shape):
    """Zero-mean unit-variance draws of a distribution: normal, lognormal(0, 1) (skewness 6.2) or t3."""
    if distribution == "normal":
        return rng.normal(size=shape)
    if distribution == "lognormal":
        return (rng.lognormal(0.0, 1.0, shape) - math.exp(0.5)) / math.sqrt((math.e - 1.0) * math.e)
    return rng.standard_t(3, shape) / math.sqrt(3.0)


def rate(hits, reps):
    value = hits / reps
    return f"{value:6.3f} ({math.sqrt(max(value * (1 - value), 1e-12) / reps):.3f})"


def print_table(title, header, rows):
    print(f"\n## {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


# ---------------------------------------------------------------------------------------------------------
# The methods replaced (as they were before the seed-aware, studentized statistics)


def old_percentile_means(values, groups, n_boot, rng, ci=0.95):
    """(n_groups, 2) percentile-bootstrap intervals of each group's mean, rows resampled within groups."""
    bounds = []
    for label in np.unique(groups):
        members = values[groups == label]
        means = members[rng.integers(0, len(members), (n_boot, len(members)))].mean(axis=1)
        bounds.append(np.quantile(means, [(1 - ci) / 2, (1 + ci) / 2]))
    return np.array(bounds), None


def old_percentile_summary(values, groups, n_boot, rng, ci=0.95):
    """Percentile intervals of gap and std over groups from the stratified bootstrap."""
    labels = np.unique(groups)
    replicates = np.empty((n_boot, len(labels)))
    for column, label in enumerate(labels):
        members = values[groups == label]
        replicates[:, column] = members[rng.integers(0, len(members), (n_boot, len(members)))].mean(axis=1)
    tails = [(1 - ci) / 2, (1 + ci) / 2]
    gap = replicates.max(axis=1) - replicates.min(axis=1)
    return {"gap": np.quantile(gap, tails), "std": np.quantile(replicates.std(axis=1, ddof=1), tails)}


def old_gap_permutation_p(values, groups, n_perm, rng):
    labels, column = np.unique(groups, return_inverse=True)
    observed = np.ptp(np.bincount(column, weights=values) / np.bincount(column))
    as_extreme = 0
    for _ in range(n_perm):
        shuffled = rng.permutation(column)
        as_extreme += np.ptp(np.bincount(shuffled, weights=values) / np.bincount(shuffled)) >= observed * (1 - 1e-12)
    return (1 + as_extreme) / (1 + n_perm)


def old_sign_flip_p(differences, n_perm, rng):
    signs = rng.integers(0, 2, (n_perm, len(differences))) * 2.0 - 1.0
    flipped = signs @ differences / len(differences)
    return (1 + np.sum(np.abs(flipped) >= abs(differences.mean()) * (1 - 1e-12))) / (1 + n_perm)


# ---------------------------------------------------------------------------------------------------------
# Studies


def study_means(args, rng):
    rows = []
    for n in SIZES:
        for distribution in DISTRIBUTIONS:
            hits = {"old: percentile bootstrap": 0, "t only": 0, "new: t joined with bootstrap-t": 0}
            groups = np.repeat([0, 1], n)
            for rep in range(args.reps):
                values = draw(rng, distribution, 2 * n)
                old, _ = old_percentile_means(values, groups, args.n_boot, rng)
                hits["old: percentile bootstrap"] += old[0, 0] <= 0.0 <= old[0, 1]
                estimate = estimates.item_estimate(values[:n], None, None, "mean", None, args.n_boot, rng, n)
                t_only = {**estimate, "kind": "t"}
                lo, hi = estimates.interval(t_only, 0.95)
                hits["t only"] += lo <= 0.0 <= hi
                lo, hi = estimates.interval(estimate, 0.95)
                hits["new: t joined with bootstrap-t"] += lo <= 0.0 <= hi
            rows += [[method, distribution, n, "-", rate(h, args.reps), "", ""] for method, h in hits.items()]
    return rows


def study_paired(args, rng):
    rows = []
    for n in SIZES:
        for distribution in DISTRIBUTIONS:
            for shift, column in ((0.0, "fp"), (2.5 / math.sqrt(n), "power")):  # power at 2.5 standard errors
                hits = {"old: sign-flip test": 0, "new: t joined with bootstrap-t": 0}
                for rep in range(args.reps):
                    differences = draw(rng, distribution, n) + shift
                    hits["old: sign-flip test"] += old_sign_flip_p(differences, args.n_boot, rng) < 0.05
                    entry = fairness.paired_test(differences, np.zeros(n), n_boot=args.n_boot, seed=rep)["overall"]
                    hits["new: t joined with bootstrap-t"] += entry["p_value"] < 0.05
                for method, h in hits.items():
                    rows.append([method, distribution, n, "-", "", rate(h, args.reps) if column == "fp" else "",
                                 rate(h, args.reps) if column == "power" else ""])
    return rows


def study_gap(args, rng):
    rows = []
    for n in SIZES:
        se = 1.0 / math.sqrt(n)
        layouts = {"tied (4 at top, 1 low by 4 SE)": np.array([0, 0, 0, 0, -4.0]) * se,
                   "separated (3 SE apart)": np.arange(5) * 3.0 * se}
        for layout, means in layouts.items():
            truth = {"gap": np.ptp(means), "std": means.std(ddof=1)}
            groups = np.repeat(np.arange(5), n)
            for distribution in DISTRIBUTIONS:
                hits = {(m, q): 0 for m in ("old: percentile bootstrap", "new: simultaneous pairwise") for q in truth}
                for rep in range(args.reps):
                    values = np.repeat(means, n) + draw(rng, distribution, 5 * n)
                    old = old_percentile_summary(values, groups, args.n_boot, rng)
                    new = fairness.group_intervals(values, groups, "mean", n_boot=1, seed=rep)["summary"]
                    for quantity, value in truth.items():
                        hits[("old: percentile bootstrap", quantity)] += old[quantity][0] <= value <= old[quantity][1]
                        hits[("new: simultaneous pairwise", quantity)] += \
                            new[quantity]["lo"] <= value <= new[quantity]["hi"]
                for (method, quantity), h in hits.items():
                    rows.append([f"{method}: {quantity}", distribution, n, layout, rate(h, args.reps), "", ""])
    return rows


def study_equal(args, rng):
    rows = []
    for n in SIZES:
        sizes = np.array(FAIRFACE_VAL_SIZES) * n // 1500  # FairFace-val proportions, about n per race
        spread = np.where(sizes == sizes.min(), 2.0, 1.0)  # the smallest race's sd doubled
        groups = np.repeat(np.arange(len(sizes)), sizes)
        scale = np.repeat(spread, sizes)
        shift = np.zeros(len(sizes))
        shift[0] = 4.0 / math.sqrt(sizes[0])  # separated: one race 4 of its standard errors above the rest
        for layout, means in (("tied (equal means)", np.zeros(len(sizes))), ("separated (one race +4 SE)", shift)):
            for distribution in DISTRIBUTIONS:
                hits = {"old: permutation of race labels": 0, "new: Bonferroni over Welch t tests": 0}
                for rep in range(args.reps):
                    values = np.repeat(means, sizes) + scale * draw(rng, distribution, len(groups))
                    hits["old: permutation of race labels"] += \
                        old_gap_permutation_p(values, groups, min(args.n_boot, 400), rng) < 0.05
                    hits["new: Bonferroni over Welch t tests"] += \
                        fairness.group_intervals(values, groups, "mean", n_boot=1, seed=rep)["equal_means_p"] < 0.05
                for method, h in hits.items():
                    tied = layout.startswith("tied")
                    rows.append([method, distribution, n, layout, "", rate(h, args.reps) if tied else "",
                                 "" if tied else rate(h, args.reps)])
    return rows


def rfw_like_pairs(rng, folds=10, ids_per_fold=300, genuine=300, impostor=300, disjoint_folds=True):
    """(id1, id2) of one race's RFW-like pairs: per fold `genuine` pairs of one identity and `impostor` pairs
    of two distinct identities, drawn from the fold's own identities (or from all when not disjoint)."""
    first, second = [], []
    for fold in range(folds):
        pool = np.arange(fold * ids_per_fold, (fold + 1) * ids_per_fold) if disjoint_folds \
            else np.arange(folds * ids_per_fold)
        same = rng.choice(pool, genuine)
        a = rng.choice(pool, impostor)
        b = (a - pool[0] + rng.integers(1, len(pool), impostor)) % len(pool) + pool[0]
        first += [same, a]
        second += [same, b]
    return np.concatenate(first), np.concatenate(second)


def components(first, second):
    """Connected components of the identity graph (an edge per impostor pair): pairs per component."""
    parent = np.arange(max(first.max(), second.max()) + 1)

    def root(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(first, second):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[ra] = rb
    roots = np.array([root(a) for a in first])
    return np.sort(np.unique(roots, return_counts=True)[1])[::-1], roots


def study_pairs(args, rng):
    rows = []
    for disjoint in (True, False):
        first, second = rfw_like_pairs(rng, disjoint_folds=disjoint)
        sizes, _ = components(first, second)
        print(f"RFW-like race ({'identity-disjoint' if disjoint else 'identities shared across'} folds): "
              f"{len(first)} pairs, {len(np.unique(np.r_[first, second]))} identities, {len(sizes)} connected "
              f"components; largest {[int(size) for size in sizes[:5]]} pairs ({sizes[0] / len(first):.0%} of the "
              f"pairs in the largest, {np.sum(sizes[:10]) / len(first):.0%} in the 10 largest)")
    for identity_sd in (0.0, 0.7, 1.2):
        for disjoint in (True, False):
            hits = {"rows independent": 0, "old: clusters = id1": 0, "connected components": 0,
                    "new: two-way (both identities)": 0}
            widths = dict.fromkeys(hits, 0.0)
            for rep in range(args.reps):
                first, second = rfw_like_pairs(rng, disjoint_folds=disjoint)
                effect = rng.normal(0.0, identity_sd, max(first.max(), second.max()) + 1)
                correct = (1.5 + effect[first] + effect[second] + rng.normal(size=len(first)) > 0).astype(float)
                genuine = np.mean(first == second)
                share = (genuine * 0.5 * math.erfc(-1.5 / math.sqrt(2 * (4 * identity_sd ** 2 + 1)))
                         + (1 - genuine) * 0.5 * math.erfc(-1.5 / math.sqrt(2 * (2 * identity_sd ** 2 + 1))))
                _, roots = components(first, second)
                for method, (a, b) in {"rows independent": (None, None), "old: clusters = id1": (first, None),
                                       "connected components": (roots, None),
                                       "new: two-way (both identities)": (first, second)}.items():
                    codes = fairness.item_codes(len(correct), a, b)
                    estimate = estimates.item_estimate(correct, *codes, "percent", (0.0, 1.0), 1, rng, len(correct))
                    lo, hi = estimates.interval(estimate, 0.95)
                    hits[method] += lo <= share <= hi
                    widths[method] += 100.0 * (hi - lo) / args.reps
            layout = f"identity sd {identity_sd}, folds {'disjoint' if disjoint else 'shared'}"
            rows += [[f"{method} (mean width {widths[method]:.2f} points)", "binary (probit)", 6000, layout,
                      rate(h, args.reps), "", ""] for method, h in hits.items()]
    return rows


def study_placebo(args, rng):
    rows = []
    for n in SIZES:
        for distribution in ("normal", "lognormal"):
            for seeds in (2, 3, 5):
                for effect, column in ((0.0, "fp"), (0.6, "power")):  # power: 0.6 dB, 3 seed sds
                    hits = {"old: image-level paired test": 0, "new: recipe level, seeds unpaired": 0,
                            "new: recipe level, seeds paired": 0}
                    race = np.repeat([0, 1], n)
                    for rep in range(args.reps):
                        difficulty = 30.0 + 3.0 * draw(rng, distribution, 2 * n)

                        def recipe(shift):  # seed-by-race sd 0.2 dB, per-image noise sd 0.3 dB
                            return (difficulty + shift * (race == 0) + 0.2 * rng.normal(size=(seeds, 2))[:, race]
                                    + 0.3 * draw(rng, distribution, (seeds, 2 * n)))

                        a, b = recipe(-effect), recipe(0.0)
                        for method, paired in (("new: recipe level, seeds unpaired", False),
                                               ("new: recipe level, seeds paired", True)):
                            entry = fairness.paired_test(a, b, groups=race, paired_seeds=paired, n_boot=1,
                                                         seed=rep)["groups"][0]
                            hits[method] += entry["p_value"] < 0.05
                        old = a.mean(axis=0) - b.mean(axis=0)
                        hits["old: image-level paired test"] += \
                            old_sign_flip_p(old[:n], min(args.n_boot, 400), rng) < 0.05
                    for method, h in hits.items():
                        rows.append([method, distribution, n, f"{seeds} vs {seeds} seeds", "",
                                     rate(h, args.reps) if column == "fp" else "",
                                     rate(h, args.reps) if column == "power" else ""])
    return rows


def probit_runs(rng, item_effects, seeds, seed_sd, threshold=1.0):
    """(seeds, N) 0/1 values: 1{threshold + item effect + seed effect + N(0, 1) > 0}, one seed effect per run."""
    seed_effects = rng.normal(0.0, seed_sd, (seeds, 1))
    return (threshold + item_effects + seed_effects + rng.normal(size=(seeds, len(item_effects))) > 0).astype(float)


def study_ties(args, rng):
    rows = []
    item_sd = 1.0
    for n in (30, 100):
        for seed_sd in (0.0, 0.15):
            truth = 0.5 * math.erfc(-1.0 / math.sqrt(2.0 * (item_sd ** 2 + seed_sd ** 2 + 1.0)))
            covered = placebo = ties = covered_tied = 0
            width = 0.0
            groups = np.repeat(["A", "B"], n)
            for rep in range(args.reps):
                items = rng.normal(0.0, item_sd, 2 * n)
                runs = probit_runs(rng, items, 2, seed_sd)
                tied = runs[0, :n].sum() == runs[1, :n].sum()
                entry = fairness.group_intervals(runs, groups, "percent", n_boot=1, seed=rep)["groups"]["A"]
                hit = entry["lo"] <= 100.0 * truth <= entry["hi"]
                covered += hit
                ties += tied
                covered_tied += hit and tied
                width += (entry["hi"] - entry["lo"]) / args.reps
                other = probit_runs(rng, items, 2, seed_sd)  # the same recipe again: a placebo comparison
                test = fairness.paired_test(runs, other, groups=groups, statistic="percent", n_boot=1, seed=rep)
                placebo += test["groups"]["A"]["p_value"] < 0.05
            layout = f"seed sd {seed_sd} (probit), seed means tie in {ties / args.reps:.0%}"
            rows.append([f"recipe interval of A's accuracy (mean width {width:.1f} points)", "binary (probit)", n,
                         layout, rate(covered, args.reps), "", ""])
            rows.append(["the same, replicates whose seed means tie", "binary (probit)", n, layout,
                         rate(covered_tied, max(ties, 1)) + f" of {ties}", "", ""])
            rows.append(["recipe comparison, identical recipes, 2 vs 2 seeds", "binary (probit)", n, layout, "",
                         rate(placebo, args.reps), ""])
    return rows


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help)
    parser.add_argument("--reps", type=int, default=1000, help="simulated data sets per cell")
    parser.add_argument("--n-boot", type=int, default=999, help="bootstrap replicates (and permutations) per data set")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulation")
    parser.add_argument("--only", nargs="+", choices=STUDIES, default=list(STUDIES), help="studies to run")
    return parser


def main(args):
    header = ["method", "distribution", "n", "races", "coverage (MC SE)", "false-positive rate (MC SE)",
              "power (MC SE)"]
    titles = {"means": "Per-race mean, 95% interval (item 2)",
              "paired": "Paired test of a zero mean difference, alpha 0.05; power at 2.5 SE (item 2)",
              "gap": "Gap and STD over 5 races, 95% intervals (item 3)",
              "equal": "Equal race means, 7 races of FairFace-val sizes x n / 1500, smallest race's sd doubled, "
                       "alpha 0.05 (item 4)",
              "pairs": "Verification accuracy of one race, 95% Wilson interval, 6000 RFW-like pairs (item 5)",
              "placebo": "Recipe comparison on the under-sampled race: placebo (identical recipes) and a 0.6 dB "
                         "effect, seed-by-race sd 0.2 dB, alpha 0.05 (item 1)",
              "ties": "2 seeds per side, 0/1 items whose seed means often tie: recipe interval of one race's "
                      "accuracy (95%) and placebo comparison (alpha 0.05) (statistics review, item 1)"}
    print(f"settings: --reps {args.reps} --n-boot {args.n_boot} --seed {args.seed} --only {' '.join(args.only)}")
    for study in args.only:
        start = time.perf_counter()
        rows = globals()[f"study_{study}"](args, np.random.default_rng([args.seed, STUDIES.index(study)]))
        print_table(f"{titles[study]} ({time.perf_counter() - start:.0f} s)", header, rows)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
