"""The sentences of findings.md (racecomp.tables.findings) from planted run folders read back by summarize: each
sentence says no more than its numbers allow (equivalence against --min-effect instead of post-hoc power, the
trained models first when there is one seed, one multiplicity rule for every claimed row, the weights at which
harm is evident, the level of --ci, the ties note and an SER change that cannot be answered)."""
import re

import numpy as np
import pytest

from test_contrasts import RACES, planted_sweep, read_csv, run_summarize, upscale_folder
from test_summarize import verify_run


def bullet(text, start):
    """The one line of findings.md that starts with `start` (after its list marker)."""
    lines = [line for line in text.splitlines() if line.lstrip("- ").startswith(start)]
    assert len(lines) == 1, (start, lines)
    return lines[0]


def test_null_results_say_what_the_interval_excludes_at_the_ci_level(tmp_path):
    # 2 seeds, the same planted penalty with both archs: nothing to detect. --min-effect 5 dB is far outside the
    # interval, 0.0005 on SSIM-Y (whose planted values are PSNR / 100) far inside it.
    planted_sweep(tmp_path / "runs", np.random.default_rng(1), {"resnet50": -0.3, "fastvit_sa24": -0.3},
                  seeds=(0, 1), seed_sd=0.03)
    run_summarize(tmp_path / "runs", tmp_path / "out", "--ci", "0.9", "--min-effect", "psnr_y=5", "ssim_y=0.0005")
    text = (tmp_path / "out" / "findings.md").read_text()
    assert "Intervals are 90% per row and claims are made at the 10% level" in text and "95%" not in text
    psnr = bullet(text, "No evidence that under-sampling costs Black a different amount of PSNR-Y")
    assert "(recipe difference, 2/2/2/2 seeds per experiment): arch=fastvit_sa24 - arch=resnet50 = " in psnr
    assert re.search(r"= -?[0-9.]+ dB, 90% interval \[-?[0-9.]+, -?[0-9.]+\], p ", psnr)
    assert psnr.endswith("; the interval excludes effects larger than ±5 dB (--min-effect).")  # no seed plan
    ssim = bullet(text, "No evidence that under-sampling costs Black a different amount of SSIM-Y")
    assert "; the interval does not exclude effects of -0.0005 or +0.0005 (--min-effect); " in ssim
    assert re.search(r"; (about \d+ seeds per experiment would detect|more than 100 seeds per experiment would be "
                     r"needed to detect) 0\.0005 with 80% power at the 10% level \(planned from a 60% upper "
                     r"confidence bound of the seed-to-seed spread, estimated from 2/2/2/2 seeds per experiment\)\.$",
                     ssim)
    assert "power against" not in text and "would likely have been detected" not in text  # no post-hoc power
    assert "Penalty by weight (90% intervals)" in text


def models_sweep(root, rng, per_race=60):
    """One seed each: ResNet50 and FastViT at x2 and x4, balanced and Black-under-sampled (weight 0.2). FastViT is
    0.4 dB better everywhere; under-sampling costs Black 0.8 dB with ResNet50, 0.1 dB with FastViT, and FastViT's
    under-sampled model is 0.6 dB better on White too."""
    races = np.repeat(RACES, per_race)
    difficulty = rng.normal(30.0, 2.0, len(races))
    for scale in (2, 4):
        for arch, offset, black, white in (("resnet50", 0.0, -0.8, 0.0), ("fastvit_sa24", 0.4, -0.1, 0.6)):
            for minority, weight in (("none", 1.0), ("black", 0.2)):
                under = minority == "black"
                shift = np.where(races == "Black", black * under, 0.0) + np.where(races == "White", white * under, 0.0)
                psnr = difficulty - 2.0 * (scale == 4) + offset + shift + rng.normal(0.0, 0.3, len(races))
                upscale_folder(root, arch, minority, weight, 0, list(races), psnr, scale=scale)


@pytest.fixture(scope="module")
def one_seed_findings(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    models_sweep(root / "runs", np.random.default_rng(20))
    run_summarize(root / "runs", root / "out")
    return (root / "out" / "findings.md").read_text()


def test_one_seed_contrasts_speak_of_the_trained_models_and_never_of_the_recipe(one_seed_findings):
    text = one_seed_findings
    assert "Under-sampling costs" not in text and "noticeably hurt from" not in text
    black = [line for line in text.splitlines() if line.startswith(
        "  - With these trained models, the under-sampled - balanced difference in PSNR-Y on Black is ")]
    assert len(black) == 2  # x2 and x4
    assert all(re.search(r"on Black is 0\.[5-9]\d* dB higher with arch=fastvit_sa24 than with arch=resnet50: ", line)
               and "(model difference (1/1/1/1 seeds per experiment): these trained models, not the recipes); "
                   "another training run of either could differ as much" in line for line in black)
    null = [line for line in text.splitlines() if line.startswith("  - No evidence that")]
    assert null and all(line.startswith("  - No evidence that, with these trained models, ") for line in null)
    assert all("a second seed of every trained experiment is needed" in line for line in null)
    assert any("on Black differs between scale=4 and scale=2" in line for line in null)  # nothing planted there
    assert all(re.search(r"; the interval (excludes differences between these models larger than|does not exclude "
                         r"differences between these models of) ", line) for line in null)


def test_every_claimed_row_is_holm_adjusted_in_its_question_family_or_called_exploratory(one_seed_findings):
    text = one_seed_findings
    # Two DiD contrasts (x2 and x4) ask "does the penalty depend on arch?": their Black rows are the family.
    black = [line for line in text.splitlines()
             if line.startswith("  - With these trained models, the under-sampled - balanced difference in PSNR-Y "
                                "on Black")]
    assert len(black) == 2 and all(line.endswith("; Holm-adjusted p <0.001 over the 2 contrasts that ask this "
                                                 "question.") for line in black)
    white = [line for line in text.splitlines() if "difference in PSNR-Y on White" in line]
    assert len(white) == 2 and all(line.startswith("  - Also: With these trained models, ") for line in white)
    assert all("; exploratory: not a pre-specified row of this question (Holm-adjusted p <0.001 over this "
               "contrast's races only)" in line for line in white)
    # Main effects have no pre-specified race: the family is every race of both contrasts (x2 and x4).
    main = [line for line in text.splitlines() if "PSNR-Y on White is higher with arch=fastvit_sa24" in line]
    assert len(main) == 2 and all(line.startswith("  - With these trained models, PSNR-Y on White is higher") and
                                  "; Holm-adjusted p <0.001 over the 8 race contrasts that ask this question" in line
                                  for line in main)
    # Every other detected summary is outside the family (the STD is the pre-specified one): exploratory.
    also = [line for line in text.splitlines() if line.startswith("  - Also: With these trained models, the average")]
    assert also and all("exploratory: not a pre-specified row" in line for line in also)
    assert "Also (Holm-adjusted p" not in text  # no claim prefixed by a within-contrast adjustment alone


def test_dose_response_names_the_weights_with_harm_and_keeps_one_seed_to_the_models(tmp_path):
    # ResNet50, 3 seeds: penalties -0.6 dB at weight 0.5, -0.9 at 0.2 and none at 0.05 (harm evident at 0.5 and
    # 0.2, not at the smallest weight). FastViT, 1 seed: no planted penalty, but its under-sampled models happen to
    # be 0.5 dB lower on Black (what one seed's race offset looks like): model words only.
    rng = np.random.default_rng(21)
    races = np.repeat(RACES, 60)
    difficulty = rng.normal(30.0, 2.0, len(races))
    black = races == "Black"
    for minority, weight, penalty in (("none", 1.0, 0.0), ("black", 0.5, -0.6), ("black", 0.2, -0.9),
                                      ("black", 0.05, 0.0)):
        for seed in (0, 1, 2):
            psnr = difficulty + np.where(black, penalty + rng.normal(0.0, 0.03), 0.0) + rng.normal(0.0, 0.3, len(races))
            upscale_folder(tmp_path / "runs", "resnet50", minority, weight, seed, list(races), psnr)
    for minority, weight in (("none", 1.0), ("black", 0.2), ("black", 0.05)):
        offset = -0.5 if minority == "black" else 0.0
        upscale_folder(tmp_path / "runs", "fastvit_sa24", minority, weight, 0, list(races),
                       difficulty + np.where(black, offset, 0.0) + rng.normal(0.0, 0.3, len(races)))
    run_summarize(tmp_path / "runs", tmp_path / "out")
    text = (tmp_path / "out" / "findings.md").read_text()
    recipe = bullet(text, "PSNR-Y penalty on Black, arch=resnet50")
    assert ": the penalty interval is below 0 at weight 0.5 and 0.2 (each weight's own interval, not adjusted over " \
           "the 3 weights run), but not at the smallest weight run, 0.05 [" in recipe
    assert "no weight from which every smaller one is hurt" in recipe and "no evidence of harm" not in recipe
    assert "(recipe level)" in recipe
    model = bullet(text, "PSNR-Y penalty on Black, arch=fastvit_sa24")
    assert ": the one-seed under-sampled models score lower on Black than the balanced model from weight 0.2 down " \
           "(the penalty interval is below 0 there and at every smaller weight run); one seed in some experiment: " \
           "model differences, not evidence that under-sampling hurts Black" in model
    assert "noticeably hurt" not in model and "(model level)" in model


def test_tied_worst_races_are_noted_in_null_sentences_and_an_undefined_ser_is_said_for_its_pair(tmp_path):
    # fp32 (one model, known exactly): Caucasian at 100% (the SER is undefined: no errors to divide by), African
    # and Indian tied at 90% (the worst race is not separated). W6A6, 3 calibration seeds, the same accuracies
    # in expectation (Caucasian 97%).
    rng = np.random.default_rng(22)
    races, n = ("African", "Asian", "Caucasian", "Indian"), 400

    def pairs(correct_of):
        return [(race, r * n + line + 1, f"{race}{line % 100}", correct_of(race, line))
                for r, race in enumerate(races) for line in range(n)]

    exact = {"African": 0.90, "Asian": 0.95, "Caucasian": 1.0, "Indian": 0.90}
    verify_run(tmp_path / "runs", "fp32-seed0", pairs(lambda race, line: int(line >= (1 - exact[race]) * n)),
               quant={"wbits": 32, "abits": 32, "calib": "none", "qat_steps": 0})
    rates = {**exact, "Caucasian": 0.97}
    for seed in (0, 1, 2):
        verify_run(tmp_path / "runs", f"w6a6-seed{seed}", pairs(lambda race, line: int(rng.random() < rates[race])),
                   seed=seed, quant={"wbits": 6, "abits": 6, "calib": "real", "qat_steps": 0})
    run_summarize(tmp_path / "runs", tmp_path / "out")
    rows = {r["quantity"]: r for r in read_csv(tmp_path / "out" / "findings.csv") if r["kind"] == "vs fp32"}
    for quantity in ("worst", "gap"):  # null, and the note is in the sentence
        assert float(rows[quantity]["lo"]) <= 0 <= float(rows[quantity]["hi"])
        assert rows[quantity]["answer"].startswith("No evidence that ")
        assert "not separated from the runner-up" in rows[quantity]["answer"].split(". Note: ")[1]
    assert "ser" not in rows
    text = (tmp_path / "out" / "findings.md").read_text()
    quiet = bullet(text, "No other summary differs after Holm's adjustment")
    assert re.search(r" Note for [a-z, ;]*worst; [a-z, ;]*gap[a-z, ;]*: [^.]*not separated from the runner-up", quiet)
    assert ("  - The change of the SER (error-rate ratio, worst / best) of accuracy cannot be answered for this "
            "pair: a race is at 100% accuracy with fp32 (no errors to divide by), so the SER is undefined there and "
            "its change cannot be estimated.") in text.splitlines()
