"""Contrasts between experiments (racecomp.contrasts linear_contrast / summary_change, racecomp.planner
seeds_for_power and racecomp.tables.questions / findings): hand-computed cases, planted effects in run folders
written in the real formats and read back by summarize, and small simulations (fuller ones:
bench/bench_contrasts.py)."""
import csv
import json
import math
import os

import numpy as np
import pytest

import summarize
from bench.bench_contrasts import fair_side_cell, fair_side_offsets, psnr_cell, tie_cell
from racecomp import contrasts, estimates, fairness, planner
from test_fairness_simulations import check_rate
from test_summarize import write_rows

UPSCALE_ID = ("study", "arch", "scale", "upsampler", "minority", "weight", "minority_mode", "finetune", "recipe",
              "seed", "code_version")
QUANT_ID = ("study", "task", "arch", "wbits", "abits", "calib", "qat_steps", "recipe", "seed", "code_version")
RACES = ("White", "Black", "East Asian", "Indian")
STD_FOUND = 0.333  # measured power of test_summary_change_of_std_holds_the_placebo_level... (seeds 0-19)


def upscale_folder(root, arch, minority, weight, seed, races, psnr, scale=2):
    """A run_upscale.py run folder: per_image.csv (file, race, PSNR-Y, SSIM-Y), per_race.csv, args.json."""
    identity = {"study": "upscale", "arch": arch, "scale": scale, "upsampler": "pixelshuffle", "minority": minority,
                "weight": weight, "minority_mode": "subsample", "finetune": "full", "recipe": "r1", "seed": seed,
                "code_version": "abc"}
    folder = os.path.join(root, f"{arch}-x{scale}-{minority}-{weight}-seed{seed}")
    ssim = 0.5 + psnr / 100.0
    write_rows(os.path.join(folder, "per_image.csv"), ["file", "race", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"],
               [[f"val/{i}.jpg", race, p, s, p - 1, s - 0.01] for i, (race, p, s) in enumerate(zip(races, psnr, ssim))])
    per_race = []
    for race in dict.fromkeys(races):
        members = np.asarray(races) == race
        means = [float(np.mean(v[members])) for v in (psnr, ssim, psnr - 1, ssim - 0.01)]
        per_race.append([identity[c] for c in UPSCALE_ID] + [race, int(members.sum()), means[1], means[0], means[3],
                                                              means[2]])
    write_rows(os.path.join(folder, "per_race.csv"), list(UPSCALE_ID) + ["race", "n", "ssim_y", "psnr_y", "ssim_rgb",
                                                                          "psnr_rgb"], per_race)
    with open(os.path.join(folder, "args.json"), "w") as handle:
        json.dump({"study": "upscale", "args": identity}, handle)


def planted_sweep(root, rng, penalties, seeds=(0, 1, 2), per_race=60, seed_sd=0.05, noise_sd=0.3, weight=0.2):
    """ResNet50 and FastViT, balanced and Black-under-sampled, `seeds` each: per-image PSNR = image difficulty
    + arch offset + planted penalty (penalties[arch] on Black in the under-sampled run) + per-seed race offset
    + noise, in the real formats."""
    races = np.repeat(RACES, per_race)
    difficulty = rng.normal(30.0, 2.0, len(races))
    offsets = {"resnet50": 0.0, "fastvit_sa24": 0.4}
    for arch, offset in offsets.items():
        for minority, w in (("none", 1.0), ("black", weight)):
            for seed in seeds:
                shift = np.where((races == "Black") & (minority == "black"), penalties[arch], 0.0)
                race_offset = rng.normal(0.0, seed_sd, len(RACES))[np.searchsorted(np.array(RACES), races,
                                                                                  sorter=np.argsort(RACES))]
                psnr = difficulty + offset + shift + race_offset + rng.normal(0.0, noise_sd, len(races))
                upscale_folder(root, arch, minority, w, seed, list(races), psnr)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def run_summarize(runs, out, *extra, figures=False):
    return summarize.main(summarize.get_args_parser().parse_args([str(runs), "--out", str(out), "--n-boot", "50",
                                                                  *extra] + ([] if figures else ["--no-figures"])))


# ---------------------------------------------------------------------------------------------------------
# Hand-computed cases


def test_difference_in_differences_by_hand_with_two_seeds_per_experiment():
    # One race of 3 images, 4 experiments x 2 seeds. Seed-averaged per image: A_u (1, 2, 3) - 0.5 / A_b
    # (1, 2, 3) / B_u (1, 2, 3) + 1 / B_b (1, 2, 3) + 1, so DiD = -0.5 exactly on every image.
    base = np.array([1.0, 2.0, 3.0])
    cells = [np.vstack([base - 0.4, base - 0.6]), np.vstack([base + 0.1, base - 0.1]),
             np.vstack([base + 1.3, base + 0.7]), np.vstack([base + 1.0, base + 1.0])]
    races = np.array(["Black"] * 3)
    weights = [np.full(3, c / 3) for c in (1.0, -1.0, -1.0, 1.0)]
    result = contrasts.linear_contrast(cells, weights, races)
    assert result["value"] == pytest.approx(-0.5)
    # Item part: every image's share is -0.5 / 3: no spread. Seed parts (crossed form), per experiment: the
    # per-seed value's variance / 2 minus the interaction (0 here: seeds shift all images alike):
    # A_u seeds -0.4 / -0.6 -> var 0.02 / 2 = 0.01; A_b 0.1 / -0.1 -> 0.01; B_u 0.3 / -0.3 -> 0.09; B_b 0.
    # B_b's runs are identical image by image: deterministic, no seed part (df from the other three).
    components = [(0.01, 1.0), (0.01, 1.0), (0.09, 1.0)]
    variance = sum(v for v, _ in components)
    df = variance ** 2 / sum(v * v / d for v, d in components)
    assert result["se"] == pytest.approx(math.sqrt(variance))
    assert result["df"] == pytest.approx(df)
    half = estimates.t_quantile(0.975, df) * math.sqrt(variance)
    assert (result["lo"], result["hi"]) == pytest.approx((-0.5 - half, -0.5 + half))
    assert result["level"] == "recipe" and result["n_seeds"] == [2, 2, 2, 2]
    # One seed in one trained experiment: a model difference, item part only (0 here: the exact claims).
    single = contrasts.linear_contrast([cells[0][:1]] + cells[1:], weights, races)
    assert single["level"] == "model" and single["p_value"] == pytest.approx(estimates.exact_p((3.0,)))


def test_summary_change_of_std_by_hand():
    # Two races of 2 images, one seed each: A's race means 10 and 14, B's 11 and 12. Noise-corrected spread:
    # each race mean's variance is s^2 / 2 = 1 on both sides, so tr(C Sigma) / (G - 1) = 1: V_A = 8 - 1 = 7,
    # V_B = 0.5 - 1 < 0 (B is as spread as its noise: sd 0), D = V_A - V_B = 7.5.
    races = np.array(["a", "a", "b", "b"])
    a = np.array([[9.0, 11.0, 13.0, 15.0]])
    b = np.array([[10.0, 12.0, 11.0, 13.0]])
    result = contrasts.summary_change(a, b, races, "std")
    assert (result["a"], result["b"]) == pytest.approx((math.sqrt(7.0), 0.0))
    # D's gradient 2 C means / (G - 1): A (-4, 4), B (-1, 1); item shares (g_A a_i - g_B b_i) / 2: race a (-13,
    # -16), race b (20.5, 23.5), each race's part of the variance 2^2 x s^2 / 2 = 4 x 4.5 / 2 = 9: 18 in all,
    # df 18^2 / (9^2 + 9^2) = 2 (Satterthwaite).
    assert result["p_value"] == pytest.approx(estimates.two_sided_p(7.5, 18.0, 2.0))
    # The paired differences (-1, -1 | 2, 2) have no noise: sd(A - B) = sqrt(4.5) exactly, which bounds
    # |sd_A - sd_B|; the separately corrected sqrt(7) - 0 exceeds it and is reported at the bound.
    assert result["value"] == pytest.approx(math.sqrt(4.5))
    assert (result["lo"], result["hi"]) == pytest.approx((-math.sqrt(4.5), math.sqrt(4.5)))
    relative = contrasts.summary_change(a, b, races, "worst", relative=True)
    assert relative["value"] == pytest.approx(10.0 / 11.0 - 1.0)


# ---------------------------------------------------------------------------------------------------------
# Planted effects, through summarize


def test_planted_arch_by_undersampling_interaction_is_found_with_the_right_sign(tmp_path):
    rng = np.random.default_rng(0)
    planted_sweep(tmp_path / "runs", rng, {"resnet50": -0.8, "fastvit_sa24": -0.1})
    run_summarize(tmp_path / "runs", tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "findings.csv")
    did = [r for r in rows if r["kind"] == "difference in differences" and r["metric"] == "psnr_y"]
    assert did and did[0]["race"] == "Black" and did[0]["primary"] == "True"  # the under-sampled race first
    black = did[0]
    # (fastvit under - balanced) - (resnet50 under - balanced) = -0.1 - (-0.8) = +0.7, covered, recipe level.
    assert black["contrast"] == "arch=fastvit_sa24 - arch=resnet50"
    assert float(black["lo"]) <= 0.7 <= float(black["hi"]) and float(black["lo"]) > 0
    assert black["scope"] == "recipe" and black["n_seeds"] == "3/3/3/3"
    others = [r for r in did if r["race"] != "Black"]
    assert len(others) == 3 and all(float(r["p_holm"]) >= 0.05 for r in others)  # nothing planted there
    text = (tmp_path / "out" / "findings.md").read_text()
    assert "## Does the under-sampling penalty depend on arch? (upscale, PSNR-Y)" in text
    assert "Under-sampling costs Black 0.777 dB less PSNR-Y with arch=fastvit_sa24 than with arch=resnet50" in text
    assert "recipe difference, 3/3/3/3 seeds per experiment" in text
    main = [r for r in rows if r["kind"] == "main effect" and r["metric"] == "psnr_y"]
    assert {r["race"] for r in main} == set(RACES)  # balanced data: fastvit - resnet50 = +0.4 on every race
    assert all(float(r["lo"]) <= 0.4 <= float(r["hi"]) for r in main)


def test_no_planted_interaction_says_no_evidence_and_plans_seeds(tmp_path):
    rng = np.random.default_rng(1)
    planted_sweep(tmp_path / "runs", rng, {"resnet50": -0.3, "fastvit_sa24": -0.3}, seeds=(0, 1), seed_sd=0.03)
    run_summarize(tmp_path / "runs", tmp_path / "out", "--min-effect", "psnr_y=0.2")
    black = [r for r in read_csv(tmp_path / "out" / "findings.csv")
             if r["kind"] == "difference in differences" and r["metric"] == "psnr_y" and r["race"] == "Black"][0]
    assert float(black["lo"]) <= 0 <= float(black["hi"])
    assert black["answer"].startswith("No evidence that under-sampling costs Black a different amount of PSNR-Y")
    assert int(black["seeds_needed"]) >= 2 and "seeds per experiment would detect 0.2 dB" in black["answer"]


def test_one_seed_is_a_model_difference_and_asks_for_a_second_seed(tmp_path):
    rng = np.random.default_rng(2)
    planted_sweep(tmp_path / "runs", rng, {"resnet50": -0.8, "fastvit_sa24": -0.1}, seeds=(0,))
    run_summarize(tmp_path / "runs", tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "findings.csv")
    black = [r for r in rows if r["kind"] == "difference in differences" and r["race"] == "Black"][0]
    assert black["scope"] == "model" and black["seeds_needed"] == ""
    assert "these trained models, not the recipes" in black["answer"]
    text = (tmp_path / "out" / "findings.md").read_text()
    assert "recipe level needs >= 2 seeds in all four experiments" in text  # said in "Contrasts not formed"


def test_missing_balanced_run_is_said(tmp_path):
    rng = np.random.default_rng(3)
    planted_sweep(tmp_path / "runs", rng, {"resnet50": -0.8, "fastvit_sa24": -0.1}, seeds=(0, 1))
    for seed in (0, 1):
        folder = tmp_path / "runs" / f"fastvit_sa24-x2-none-1.0-seed{seed}"
        for name in os.listdir(folder):
            os.remove(folder / name)
        os.rmdir(folder)
    run_summarize(tmp_path / "runs", tmp_path / "out")
    text = (tmp_path / "out" / "findings.md").read_text()
    assert "no balanced run (same settings, minority none) for [arch=fastvit_sa24" in text


def test_planted_w6a6_std_increase_is_found_against_fp32(tmp_path):
    from test_summarize import verify_run  # the quantization run folders of the summarize tests
    rng = np.random.default_rng(4)
    races = ("African", "Asian", "Caucasian", "Indian")
    per_race = 600
    item = rng.normal(0.0, 0.5, (len(races), per_race))

    def pairs(thresholds, seed_sd):
        latent = np.array(thresholds)[:, None] + item + rng.normal(0.0, seed_sd, (len(races), 1)) \
            + rng.normal(0.0, 1.0, item.shape)
        return [(race, line + 1, f"{race}{line % 100}", int(latent[r, line] > 0))
                for r, race in enumerate(races) for line in range(per_race)]

    fp32 = pairs((2.0, 1.9, 1.8, 1.9), 0.0)  # about 96-97% everywhere: the same model for every seed
    fp32_quant = {"wbits": 32, "abits": 32, "calib": "none", "qat_steps": 0}
    w6a6 = {"wbits": 6, "abits": 6, "calib": "real", "qat_steps": 0}
    verify_run(tmp_path / "runs", "fp32-seed0", fp32, seed=0, quant=fp32_quant)  # one: nothing calibrated
    for seed in (0, 1, 2):
        verify_run(tmp_path / "runs", f"w6a6-seed{seed}", pairs((1.9, 1.2, 1.7, 1.0), 0.05), seed=seed, quant=w6a6)
    run_summarize(tmp_path / "runs", tmp_path / "out")
    rows = [r for r in read_csv(tmp_path / "out" / "findings.csv") if r["kind"] == "vs fp32"]
    std = [r for r in rows if r["quantity"] == "std"][0]
    assert std["contrast"] == "bits=W6A6, calib=real - fp32" and std["scope"] == "recipe"
    # fp32 is the model as it is (known exactly): 3 calibration seeds of W6A6 make it a recipe-level contrast.
    assert std["n_seeds"] == "3/exact" and float(std["lo"]) > 0  # STD up: detected
    assert float(std["a_value"]) > float(std["b_value"])
    ser = [r for r in rows if r["quantity"] == "ser"][0]
    assert float(ser["estimate"]) > 0 and ser["units"] == ""  # SER is a ratio
    text = (tmp_path / "out" / "findings.md").read_text()
    assert "## Does quantization change the fairness across races? (quantize-verify, accuracy)" in text
    assert "The STD across races of accuracy is higher with bits=W6A6, calib=real than with fp32" in text


# ---------------------------------------------------------------------------------------------------------
# Small simulations (fuller: python -m bench.bench_contrasts)


def did_rates(seed, reps=1000):
    """(covered, placebo rejections) of the DiD over reps sweeps (every other one with a 0.3 dB interaction):
    4 experiments x 3 seeds, 2 races of 60 images; seed x race sd 0.15 dB, image noise 0.3 dB."""
    rng = np.random.default_rng(seed)
    race = np.repeat([0, 1], 60)
    weight = np.where(race == 0, 1.0 / 60, 0.0)
    weights = [weight, -weight, -weight, weight]
    covered, placebo = 0, 0
    for rep in range(reps):
        difficulty = rng.normal(30.0, 3.0, len(race))
        interaction = 0.3 if rep % 2 else 0.0
        cells = [psnr_cell(rng, difficulty, race, 3, np.array([-0.4, 0.0])),
                 psnr_cell(rng, difficulty, race, 3, np.zeros(2)),
                 psnr_cell(rng, difficulty, race, 3, np.array([0.5 - 0.4 + interaction, 0.5])),
                 psnr_cell(rng, difficulty, race, 3, np.full(2, 0.5))]
        result = contrasts.linear_contrast(cells, weights, race)
        covered += result["lo"] <= -interaction <= result["hi"]
        placebo += interaction == 0 and result["p_value"] < 0.05
    return covered, placebo


def test_did_covers_the_planted_interaction_and_holds_the_placebo_level():
    # The t test on Welch-Satterthwaite df over seed parts is a little conservative here: measured over seeds
    # 0-19 x 1000 sweeps, coverage 0.9709 and placebo rate 0.0289 (of 10,000 placebo sweeps). Both are checked
    # two-sided against those rates (Monte Carlo SE 0.0053 and 0.0075), which a liberal or a needlessly wide
    # interval would leave; each of seeds 0-19 passes (coverage 963-978 of 1000, placebo 8-22 of 500).
    covered, placebo = did_rates(5)
    check_rate(covered, 1000, 0.9709, "both")
    check_rate(placebo, 500, 0.0289, "both")


def std_change_rates(seed, reps):
    """(placebo rejections, planted increases found) of the STD change over reps draws: 4 races x 500 0/1 pairs,
    3 seeds per side (probit: race threshold + item effect N(0, 0.49) + seed x race N(0, 0.01) + N(0, 1))."""
    rng = np.random.default_rng(seed)
    race = np.repeat(np.arange(4), 500)
    placebo, found = 0, 0
    for _ in range(reps):
        items = rng.normal(0.0, 0.7, len(race))

        def cell(thresholds):
            latent = np.array(thresholds)[race] + items + rng.normal(0.0, 0.1, (3, 4))[:, race] \
                + rng.normal(size=(3, len(race)))
            return (latent > 0).astype(float)

        fp32 = cell((2.0, 1.8, 1.6, 1.7))
        placebo += contrasts.summary_change(cell((2.0, 1.8, 1.6, 1.7)), fp32, race, "std",
                                           statistic="percent")["p_value"] < 0.05
        found += contrasts.summary_change(cell((1.9, 1.6, 1.0, 1.5)), fp32, race, "std",
                                         statistic="percent")["lo"] > 0
    return placebo, found


def test_summary_change_of_std_holds_the_placebo_level_and_finds_a_planted_increase():
    # The noise-corrected spread's standard error is its gradient's at the observed (noisy) race means, which
    # holds the noise: conservative at the placebo (0 of 3000 over seeds 0-19; checked at most 5% + 3 SE).
    # Power against the planted increase: 0.333 over seeds 0-19 x 150 draws (the delta method on the noisy STD
    # found about half, with a placebo rate of 1%), checked two-sided on 80 draws; each of seeds 0-19 passes
    # (19-34 of 80, no placebo rejection).
    placebo, found = std_change_rates(6, 80)
    check_rate(placebo, 80, 0.05, "high")
    check_rate(found, 80, STD_FOUND, "both")


def tie_rejections(seed, reps, seeds):
    """Rejections at 5% of no change in worst and in gap over reps draws of the tied-worst cell (4 races x 100
    images, A `seeds` seeds against an exact reference B; true changes 0)."""
    rng = np.random.default_rng(seed)
    rejected = {"worst": 0, "gap": 0}
    for _ in range(reps):
        a, b, race = tie_cell(rng, 4, 100, seeds)
        for key in rejected:
            rejected[key] += contrasts.summary_change(a, b, race, key, exact=(False, True))["p_value"] < 0.05
    return rejected


def test_worst_and_gap_changes_hold_their_level_when_the_worst_races_tie():
    # A's two worst races tie, B's worst is 0.5 dB below its runner-up: the linearization at the observed worst
    # race rejected 12-14% (1 seed) and 13.6% (3 seeds). The bounds over every race are conservative: measured
    # (bench_contrasts --only ties, 1000 draws) 0-1.4% at 1 seed, 0% at 3 seeds; checked against 5% (at most
    # 5% + 3 SE); each of seeds 0-19 passes (at most 2 of 60 rejections).
    for seeds, reps in ((1, 60), (3, 30)):
        for key, hits in tie_rejections(11, reps, seeds).items():
            check_rate(hits, reps, 0.05, "high")


def fair_side_coverage(seed, reps, keys, n_per_race=100):
    """Coverage of the true change of each key over reps draws of the near-fair cell (7 races, A all equal, B's
    race offsets sd 0.216 dB, one seed each)."""
    rng = np.random.default_rng(seed)
    offset_b = fair_side_offsets(7, 0.216)
    covered = dict.fromkeys(keys, 0)
    for _ in range(reps):
        a, b, race = fair_side_cell(rng, 7, n_per_race, offset_b)
        for key in keys:
            result = contrasts.summary_change(a, b, race, key)
            covered[key] += result["lo"] <= -contrasts.summary_gradient(offset_b, key)[0] <= result["hi"]
    return covered


def test_spread_changes_cover_when_one_side_is_fair():
    # The delta method on the STD of noisy race means covered 0.61 here (gap 0.74, worst 0.65): the noise
    # inflates the fair side's STD. The noise-corrected spread aims at 95%: measured 0.963 over seeds 0-19 x
    # 120 draws, checked two-sided on 80 draws (each of seeds 0-19 passes: 73-80 of 80); gap and worst use
    # conservative bounds (19-20 of 20 for each seed): at least 95% - 3 SE.
    std = fair_side_coverage(12, 80, ("std",))["std"]
    check_rate(std, 80, 0.963, "both")
    for key, hits in fair_side_coverage(13, 20, ("gap", "worst")).items():
        check_rate(hits, 20, 0.95, "low")


def planner_sweep(rng, difficulty, seeds, seed_sd, effect):
    """Two experiments x `seeds` seeds, two races of 200 images (image noise 0.3 dB, seed x race sd seed_sd):
    A's race 0 lower by `effect`; with the weights of race 0's A - B difference."""
    race = np.repeat([0, 1], 200)
    weight = np.where(race == 0, 1.0 / 200, 0.0)
    cells = [psnr_cell(rng, difficulty, race, seeds, np.array([-effect, 0.0]), seed_sd),
             psnr_cell(rng, difficulty, race, seeds, np.zeros(2), seed_sd)]
    return cells, [weight, -weight], race


def test_seed_planner_predicts_the_power_of_the_test_that_runs():
    # Spread known (a 4000-seed pilot). At 2-3 seeds the Welch df of the estimated seed parts, and their floor
    # at 0, cost power that a fixed-df model promised: it predicted 0.931 at 2 seeds (seed sd 0.05 dB, effect
    # 0.4 dB) and 0.864 at 3 (0.02 dB, 0.1 dB) where simulation gives 0.50 and 0.62. Checked two-sided
    # against the prediction (Monte Carlo SE about 0.035); seeds 0-19 are within 1.6 SE.
    rng = np.random.default_rng(7)
    difficulty = rng.normal(30.0, 3.0, 400)
    for seed_sd, effect, seeds in ((0.05, 0.4, 2), (0.02, 0.1, 3)):
        planning = contrasts.linear_contrast(*planner_sweep(rng, difficulty, 4000, seed_sd, 0.0))["planning"]
        predicted = planner.planned_power(planning, effect, seeds)
        reps = 200
        hits = sum(contrasts.linear_contrast(*planner_sweep(rng, difficulty, seeds, seed_sd, effect))["p_value"] < 0.05
                   for _ in range(reps))
        check_rate(hits, reps, predicted, "both")


def test_planning_from_a_three_seed_pilot_gives_80_percent_power_in_most_pilots():
    # Seed sd 0.15 dB, effect 0.3 dB: 6 seeds give 80% power. A 3-seed pilot's spread has 2 df; planning from
    # the estimate reaches 80% in about half of the pilots, from its 60% upper bound (the default) in 0.811
    # (measured over seeds 0-19 x 150 pilots), checked two-sided on 100 pilots (Monte Carlo SE 0.039; seeds
    # 0-19 give 74-86 of 100), so well above 60% of pilots. The realised power is the planner's model at the
    # known spread, which the test above checks against simulation.
    rng = np.random.default_rng(9)
    difficulty = rng.normal(30.0, 3.0, 400)
    known = contrasts.linear_contrast(*planner_sweep(rng, difficulty, 4000, 0.15, 0.0))["planning"]
    reps, enough = 100, 0
    for _ in range(reps):
        pilot = contrasts.linear_contrast(*planner_sweep(rng, difficulty, 3, 0.15, 0.0))["planning"]
        assert planner.planning_seeds(pilot) == 3
        seeds = planner.seeds_for_power(pilot, 0.3, max_seeds=200)
        enough += seeds != math.inf and planner.planned_power(known, 0.3, seeds, bound=None) >= 0.8
    check_rate(enough, reps, 0.811, "both")


def test_planted_dose_response_gives_the_onset_weight(tmp_path):
    # Black's planted penalty by weight: 0.5 -> -0.02 dB (nothing to see), 0.2 -> -0.6, 0.05 -> -1.2 dB: the
    # race is noticeably hurt from 0.2 down.
    rng = np.random.default_rng(8)
    races = np.repeat(RACES, 60)
    difficulty = rng.normal(30.0, 2.0, len(races))
    for minority, weight, penalty in (("none", 1.0, 0.0), ("black", 0.5, -0.02), ("black", 0.2, -0.6),
                                      ("black", 0.05, -1.2)):
        for seed in (0, 1, 2):
            psnr = difficulty + np.where(races == "Black", penalty, 0.0) + rng.normal(0.0, 0.03) \
                + rng.normal(0.0, 0.3, len(races))
            upscale_folder(tmp_path / "runs", "resnet50", minority, weight, seed, list(races), psnr)
    run_summarize(tmp_path / "runs", tmp_path / "out", figures=True)
    text = (tmp_path / "out" / "findings.md").read_text()
    assert "PSNR-Y penalty on Black, arch=resnet50, finetune=full, scale=2, upsampler=pixelshuffle: noticeably " \
           "hurt from weight 0.2 down" in text
    assert "findings_dose_01.png" in text and (tmp_path / "out" / "findings_dose_01.pdf").is_file()


def test_dose_curves_that_differ_only_in_minority_mode_keep_one_label_each(tmp_path):
    # subsample and reweight runs of one architecture: two curves whose other settings agree; each keeps its own
    # label (and its own line in the figure) instead of one overwriting the other.
    rng = np.random.default_rng(3)
    races = np.repeat(RACES, 30)
    difficulty = rng.normal(30.0, 2.0, len(races))
    for mode, penalty in (("subsample", -1.0), ("reweight", -0.3)):
        for minority, weight in (("none", 1.0), ("black", 0.2)):
            for seed in (0, 1):
                psnr = difficulty + np.where((races == "Black") & (minority == "black"), penalty, 0.0) \
                    + rng.normal(0.0, 0.3, len(races))
                upscale_folder(tmp_path / "runs" / mode, "resnet50", minority, weight, seed, list(races), psnr)
                for name in ("per_race.csv",):
                    path = tmp_path / "runs" / mode / f"resnet50-x2-{minority}-{weight}-seed{seed}" / name
                    path.write_text(path.read_text().replace("subsample", mode))
                record = tmp_path / "runs" / mode / f"resnet50-x2-{minority}-{weight}-seed{seed}" / "args.json"
                record.write_text(record.read_text().replace("subsample", mode))
    from racecomp.tables import answers
    doses = [c for c in answers([str(tmp_path / "runs")], n_boot=20)[0].doses if c.metric == "psnr_y"]
    assert sorted(c.line for c in doses) == [
        "arch=resnet50, finetune=full, scale=2, upsampler=pixelshuffle, minority_mode=reweight, recipe=r1",
        "arch=resnet50, finetune=full, scale=2, upsampler=pixelshuffle, minority_mode=subsample, recipe=r1"]
    penalty = {c.line.split("minority_mode=")[1].split(",")[0]: c.points[0].penalty for c in doses}
    assert penalty["subsample"] < -0.6 < penalty["reweight"]


def test_runs_without_data_fingerprints_are_named_in_one_problem_line(tmp_path):
    from racecomp.tables.runs import Problems, find_run_folders, load_runs
    races = list(np.repeat(RACES, 3))
    for seed in (0, 1):
        upscale_folder(tmp_path / "runs", "resnet50", "none", 1.0, seed, races, np.full(len(races), 30.0))
    record = tmp_path / "runs" / "resnet50-x2-none-1.0-seed1" / "args.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "data_fingerprints": {"data": {"id": "f"}}}))
    problems = Problems.quiet()
    assert len(load_runs(find_run_folders([str(tmp_path / "runs")], problems), problems)) == 2
    assert problems.entries == [(str(tmp_path / "runs" / "resnet50-x2-none-1.0-seed0"),
                                 "1 run(s) made before runs recorded their data's fingerprint (args.json has no "
                                 "data_fingerprints): pooled by recipe, which knows their data by its path only")]


def test_answers_as_functions_for_a_notebook(tmp_path):
    from racecomp.tables import answers, sentence
    planted_sweep(tmp_path / "runs", np.random.default_rng(9), {"resnet50": -0.8, "fastvit_sa24": -0.1},
                  seeds=(0, 1))
    found, problems = answers([str(tmp_path / "runs")], n_boot=20)
    did = [f for f in found.findings if f.kind == "difference in differences" and f.primary and f.metric == "psnr_y"]
    assert len(did) == 1 and did[0].race == "Black" and did[0].scope == "recipe"
    assert sentence(did[0]).startswith("Under-sampling costs Black")
    assert not (tmp_path / "out").exists()  # nothing written


def test_probe_results_are_contrasted_across_fine_tuning_strategies_over_seeds(tmp_path):
    from test_summarize import PROBE_F1, PROBE_PAIRS, verify_run, write_probes
    # bn_stats vs full, 3 seeds each with the same seed labels: the worst-race F1 per seed is 0.80, 0.76, 0.78
    # with full and 0.86, 0.80, 0.85 with bn_stats; per-seed differences 0.06, 0.04, 0.07.
    bn_stats = {0: {"White": 0.9, "Black": 0.86, "Indian": 0.88}, 1: {"White": 0.9, "Black": 0.80, "Indian": 0.85},
                2: {"White": 0.9, "Black": 0.85, "Indian": 0.87}}
    for seed in (0, 1, 2):
        write_probes(verify_run(tmp_path / "runs", f"full-{seed}", PROBE_PAIRS, seed=seed), PROBE_F1[seed])
        folder = verify_run(tmp_path / "runs", f"bn-{seed}", PROBE_PAIRS, seed=seed)
        rows = read_csv(os.path.join(folder, "per_race.csv"))
        write_rows(os.path.join(folder, "per_race.csv"), list(rows[0]),
                   [[("bn_stats" if c == "finetune" else v) for c, v in row.items()] for row in rows])
        write_probes(folder, bn_stats[seed])
    run_summarize(tmp_path / "runs", tmp_path / "out")
    worst = [r for r in read_csv(tmp_path / "out" / "findings.csv")
             if r["kind"] == "probe" and r["metric"] == "probe_f1_worst"][0]
    assert worst["contrast"] == "finetune=bn_stats - finetune=full" and worst["n_seeds"] == "3/3"
    differences = np.array([0.06, 0.04, 0.07])
    half = estimates.t_quantile(0.975, 2) * differences.std(ddof=1) / math.sqrt(3)
    assert float(worst["estimate"]) == pytest.approx(differences.mean())
    assert (float(worst["lo"]), float(worst["hi"])) == pytest.approx((differences.mean() - half,
                                                                       differences.mean() + half))
    assert "interval over seeds" in worst["note"]


def test_every_estimator_rejects_exactly_when_its_interval_excludes_zero():
    # p < 1 - ci if and only if the interval at `ci` excludes 0, for every estimator the tables report (the
    # Bonferroni pairs of group_intervals: pairs x p against their simultaneous interval; equal_means_p against
    # the gap's lower bound), over draws whose effects range from none to clear, at the model and recipe level.
    rng = np.random.default_rng(14)
    race = np.repeat(np.arange(4), 40)
    ci = 0.9  # not the default, so that every level is passed through
    alpha, checked = 1.0 - ci, []

    def check(p, lo, hi):
        checked.append(p < alpha)
        assert (p < alpha) == (lo > 0 or hi < 0), (p, lo, hi)

    for draw in range(12):
        seeds = 1 if draw % 2 else 3
        shift = rng.normal(0.0, 0.4, 4) * (draw % 3)
        difficulty = rng.normal(30.0, 1.0, len(race))
        a = psnr_cell(rng, difficulty, race, seeds, shift)
        b = psnr_cell(rng, difficulty, race, seeds, np.zeros(4))
        weight = np.where(race == 0, 1.0 / 40, 0.0)
        result = contrasts.linear_contrast([a, b], [weight, -weight], race, ci=ci)
        check(result["p_value"], result["lo"], result["hi"])
        for key in contrasts.SUMMARY_CHANGE_KEYS[:-1]:
            result = contrasts.summary_change(a, b, race, key, ci=ci)
            check(result["p_value"], result["lo"], result["hi"])
        test = fairness.paired_test(a, b, groups=race, n_boot=100, seed=draw, ci=ci)
        for entry in [test["overall"], *test["groups"].values()]:
            check(entry["p_value"], entry["lo"], entry["hi"])
        groups = fairness.group_intervals(a + shift[race], race, "mean", n_boot=100, seed=draw, ci=ci)
        for pair in groups["pairs"]:
            check(min(1.0, len(groups["pairs"]) * pair["p_value"]), pair["lo"], pair["hi"])
        check(groups["equal_means_p"], groups["summary"]["gap"]["lo"], 1.0)
        correct = (rng.normal(0.5 + 0.5 * shift[race], 1.0, (seeds, len(race))) > 0).astype(float)
        reference = (rng.normal(0.5, 1.0, (seeds, len(race))) > 0).astype(float)
        result = contrasts.summary_change(correct, reference, race, "ser", statistic="percent", ci=ci)
        check(result["p_value"], result["lo"], result["hi"])
    assert 0 < sum(checked) < len(checked)  # both outcomes occur


def test_power_model_matches_the_noncentral_t_in_its_simple_case():
    # One experiment's seed part only (no item noise): the recipe test is the one-sample t with k - 1 df, whose
    # power is the noncentral t's: sd 0.15 dB per seed, k = 6, effect 0.3 dB -> 0.970504 (scipy.stats.nct,
    # noncentrality 0.3 / (0.15 / sqrt 6)); the Monte Carlo over the spread is within 0.005 of it.
    planning = {"factor": 1.0, "item_var": 0.0, "seed_parts": [(0.0225, 0.0, 2)]}  # spread 0.15^2 taken as known
    assert planner.planned_power(planning, 0.3, 6, bound=None) == pytest.approx(0.970504, abs=0.005)


def test_experiments_differing_in_hidden_settings_too_are_not_contrasted_and_it_is_said(tmp_path):
    rng = np.random.default_rng(10)
    planted_sweep(tmp_path / "runs", rng, {"resnet50": -0.8, "fastvit_sa24": -0.1}, seeds=(0, 1))
    for folder in (tmp_path / "runs").iterdir():  # FastViT trained with other settings (another recipe hash)
        if folder.name.startswith("fastvit"):
            for name in ("per_race.csv",):
                path = folder / name
                path.write_text(path.read_text().replace(",r1,", ",r2,"))
    run_summarize(tmp_path / "runs", tmp_path / "out")
    text = (tmp_path / "out" / "findings.md").read_text()
    assert "Does the under-sampling penalty depend on arch?" not in text
    assert "they differ in arch and also in other settings (recipe hash" in text


def test_main_effects_claim_only_what_survives_holm():
    # Two races, no pre-specified one: White's own interval excludes 0 (p 0.03) but not after Holm (0.06), so
    # findings.md must not claim it; a race that survives Holm is claimed.
    from racecomp.tables import findings
    from racecomp.tables.answers import Answers, Finding
    from racecomp.tables.questions import family_holm

    def row(race, estimate, lo, hi, p, p_holm):
        return Finding("Does arch change the per-race values on balanced data?", "upscale", "main effect", "psnr_y",
                       race, race, "arch=a - arch=b", "data=balanced", estimate, lo, hi, p, p_holm, "recipe", "3/3",
                       4.0, "dB", 0.1, 5)

    def text(rows):
        family_holm(rows)  # one contrast: its family is its races
        return findings.markdown(Answers(rows), {})

    quiet = text([row("White", 0.2, 0.01, 0.39, 0.03, 0.06), row("Black", 0.05, -0.1, 0.2, 0.4, 0.4)])
    assert "No race differs after Holm's adjustment over 2" in quiet and "is higher" not in quiet
    assert "findings.csv has each; for White, the interval does not exclude effects of +0.1 dB (--min-effect); about " \
           "5 seeds per experiment would detect 0.1 dB with 80% power at the 5% level (planned from a 60% upper " \
           "confidence bound of the seed-to-seed spread, estimated from 3/3 seeds per experiment)." in quiet
    loud = text([row("White", 0.3, 0.2, 0.4, 0.001, 0.002), row("Black", 0.05, -0.1, 0.2, 0.4, 0.4)])
    assert "  - PSNR-Y on White is higher with arch=a than with arch=b by 0.300 dB: arch=a - arch=b = 0.300 dB, " \
           "95% interval [0.200, 0.400], p 0.0010 (recipe difference, 3/3 seeds per experiment); Holm-adjusted p " \
           "0.0020 over the 2 race contrasts that ask this question." in loud
    assert "No other race differs after Holm's adjustment (Black" in loud


def test_every_summary_change_holds_its_estimate_and_ser_is_centred_on_its_plug_in_value():
    """SER is not linear in the race means: its t interval is centred on the plug-in change (SER_A - SER_B), not on
    the linearization's own value (a merge once centred it there: -9.5 with an interval of [-368, -189]).
    Hand check: with two races and one seed, SER = error rate of the worse race / that of the better one."""
    rng = np.random.default_rng(5)
    races = np.repeat(["a", "b", "c"], 200)
    a = (rng.random((2, 600)) < np.repeat([0.9, 0.8, 0.85], 200)).astype(float)
    b = (rng.random((2, 600)) < np.repeat([0.88, 0.84, 0.86], 200)).astype(float)
    for key in contrasts.SUMMARY_CHANGE_KEYS:
        result = contrasts.summary_change(a, b, races, key, statistic="percent")
        assert result["lo"] <= result["value"] <= result["hi"], key
    ser = contrasts.summary_change(a, b, races, "ser", statistic="percent")
    errors_a = 1.0 - np.array([a[:, races == r].mean() for r in "abc"])
    errors_b = 1.0 - np.array([b[:, races == r].mean() for r in "abc"])
    assert ser["value"] == pytest.approx(errors_a.max() / errors_a.min() - errors_b.max() / errors_b.min(), abs=1e-12)
    assert (ser["lo"] + ser["hi"]) / 2 == pytest.approx(ser["value"], abs=1e-9)  # a t interval about the estimate
    small = np.repeat(["a", "b", "c"], 4)  # 2 seeds, 4 pairs a race: bounds over every race reach past 100 points
    a, b = (rng.random((2, 12)) < 0.7).astype(float), (rng.random((2, 12)) < 0.7).astype(float)
    for key in ("mean", "worst", "gap", "std"):
        result = contrasts.summary_change(a, b, small, key, statistic="percent")
        assert -100.0 <= result["lo"] <= result["value"] <= result["hi"] <= 100.0, key


def test_a_constant_shift_changes_no_spread_and_exact_contrasts_need_no_quantile_past_one():
    """A = B + 0.5 dB on every item: the spread across races is the same on both sides (the noise-corrected
    variances differ by rounding only, which once read as a 'detected' change of 1e-14 with p 0), and with one
    seed every race contrast is exact (se 0), which once drove the p-value's bisection to a t quantile at 1.0."""
    rng = np.random.default_rng(0)
    races = np.repeat(["a", "b", "c"], 50)
    b = rng.normal(30.0, 2.0, (2, 150))
    for seeds in (2, 1):
        result = contrasts.summary_change(b[:seeds] + 0.5, b[:seeds], races, "std")
        assert (result["value"], result["lo"], result["hi"], result["p_value"]) == (0.0, 0.0, 0.0, 1.0)
    worst = contrasts.summary_change(b[:1] + 0.5, b[:1], races, "worst")
    assert worst["value"] == pytest.approx(0.5, abs=1e-12) and worst["p_value"] < 1e-12  # known exactly


def test_summary_change_refuses_an_infinite_ser():
    races = np.repeat(["a", "b"], 4)
    perfect = np.array([[1.0, 1, 1, 1, 1, 0, 1, 1]])  # race a at 100%: SER has no errors to divide by
    with pytest.raises(ValueError, match="not finite"):
        contrasts.summary_change(perfect, perfect, races, "ser", statistic="percent")


def test_dose_response_words_follow_the_scope_and_the_onset():
    from racecomp.tables import findings
    from racecomp.tables.answers import Answers, DoseCurve, DosePoint

    def text(scope, points):
        curve = DoseCurve("upscale", "psnr_y", "Black", "arch=resnet50", [DosePoint(w, v, lo, hi, scope)
                                                                           for w, v, lo, hi in points])
        return findings.markdown(Answers(doses=[curve]), {})

    hurt = [(0.5, -0.1, -0.3, 0.1), (0.2, -0.5, -0.7, -0.3), (0.05, -1.0, -1.3, -0.7)]
    assert "noticeably hurt from weight 0.2 down (the penalty interval is below 0 there and at every smaller " \
           "weight run)." in text("recipe", hurt)
    one_seed = text("model", hurt)
    assert "the one-seed under-sampled models score lower on Black than the balanced model from weight 0.2 down" \
           in one_seed and "noticeably hurt from" not in one_seed
    assert "model differences, not evidence that under-sampling hurts Black" in one_seed
    # A gap in the run of harm: 0.05 is not below 0, so there is no onset, but 0.2 is named.
    broken = [(0.5, -0.1, -0.3, 0.1), (0.2, -0.5, -0.7, -0.3), (0.05, -0.2, -0.5, 0.1)]
    assert "the penalty interval is below 0 at weight 0.2 (each weight's own interval, not adjusted over the 3 " \
           "weights run), but not at the smallest weight run, 0.05 [-0.500, 0.100]" in text("recipe", broken)
    assert "no evidence of harm at the weights run" in text("recipe", [(0.5, -0.1, -0.3, 0.1)])


def test_min_effect_flag_refuses_bad_values_by_name(tmp_path):
    planted_sweep(tmp_path / "runs", np.random.default_rng(11), {"resnet50": -0.5, "fastvit_sa24": -0.5},
                  seeds=(0,), per_race=5)
    for bad, message in (("psnr_y", "expected METRIC=VALUE"), ("psnr=0.1", "metric one of"),
                         ("psnr_y=-1", "the value must be > 0"), ("psnr_y=nan", "the value must be > 0")):
        with pytest.raises(SystemExit, match=f"--min-effect {bad}: {message}"):
            run_summarize(tmp_path / "runs", tmp_path / "out", "--min-effect", bad)
    assert not (tmp_path / "out").exists()  # refused before any work


def test_tables_md_says_the_methods_once(tmp_path):
    planted_sweep(tmp_path / "runs", np.random.default_rng(12), {"resnet50": -0.5, "fastvit_sa24": -0.5},
                  seeds=(0, 1), per_race=10)
    run_summarize(tmp_path / "runs", tmp_path / "out")
    text = (tmp_path / "out" / "tables.md").read_text()
    assert text.count("## Methods") == 1 and "**contrasts**: findings.md / findings.csv" in text
    assert text.count("crossed form: the item-by-seed noise counted once") == 1  # not repeated under tables
    assert "Methods: levels, per-race (see the Methods section)." in text


def test_a_detected_row_among_many_contrasts_of_one_question_is_marked_exploratory():
    from racecomp.tables import findings
    from racecomp.tables.answers import Finding
    from racecomp.tables.questions import family_holm

    def row(race, p):
        return Finding("Does the under-sampling penalty depend on arch?", "upscale", "difference in differences",
                       "psnr_y", race, race, "arch=a - arch=b", f"data={race}@0.2", 0.1, 0.01, 0.19, p, p,
                       "recipe", "3/3/3/3", 4.0, "dB", 0.1, 5, primary=True)

    rows = [row("Black", 0.03)] + [row(race, 0.5) for race in ("White", "Indian", "East Asian")]
    family_holm(rows)
    assert rows[0].p_family == pytest.approx(0.12) and rows[0].family_size == 4  # Holm: 4 x 0.03
    assert "not after Holm's adjustment over the 4 contrasts that ask this question (p 0.12): exploratory" in \
        findings.sentence(rows[0])
    alone = row("Black", 0.03)
    family_holm([alone])
    assert "exploratory" not in findings.sentence(alone)
