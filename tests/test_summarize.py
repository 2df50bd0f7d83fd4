"""summarize.py / racecomp.tables end to end on small synthetic run folders written here with the exact run
columns. Unit tests of the tables modules: tests/test_tables_*.py."""
import csv
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageColor

import summarize
from racecomp.tables.run_files import PSNR_CAP_DB
from racecomp.tables.plots import PALETTE

UPSCALE_ID = ("study", "arch", "scale", "upsampler", "minority", "weight", "minority_mode", "finetune", "seed",
              "code_version")
VERIFY_ID = ("study", "arch", "init", "finetune", "minority", "weight", "seed", "code_version")
QUANT_ID = ("study", "task", "arch", "init", "finetune", "minority", "weight", "wbits", "abits", "calib",
            "qat_steps", "seed", "code_version")
N_BOOT = 200
MAX_COLUMNS = 10  # the widest table a paper can paste (racecomp.tables.sections.MAX_COLUMNS)


def write_rows(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def identifying_columns(columns, recipe, extra=()):
    """The run's identifying columns in file order: `extra` (e.g. restore) and `recipe` go before the seed."""
    seed = columns.index("seed")
    return columns[:seed] + tuple(extra) + (("recipe",) if recipe is not None else ()) + columns[seed:]


def write_args(folder, study, args, **record):
    with open(os.path.join(folder, "args.json"), "w") as handle:
        json.dump({"study": study, "args": args, "code_version": "abc123",
                   "data_fingerprints": {"data": {"root": "/data", "id": "planted"}}, **record}, handle)


def upscale_run(root, name, images, seed=0, arch="resnet50", minority="none", weight=1.0, scale=2, recipe=None,
                args=None):
    """Run folder of run_upscale.py; images = [(file, race, psnr_y, ssim_y[, id_cos])] (id_cos: a run with
    --identity-model); RGB = Y - 1 dB / Y - 0.01. args.json holds `args` (default: the identifying values);
    args=False: no args.json."""
    folder = os.path.join(root, name)
    identity = {"study": "upscale", "arch": arch, "scale": scale, "upsampler": "pixelshuffle",
                "minority": minority, "weight": weight, "minority_mode": "subsample", "finetune": "full",
                "recipe": recipe, "seed": seed, "code_version": "abc123"}
    columns = identifying_columns(UPSCALE_ID, recipe)
    with_id_cos = len(images[0]) == 5
    metrics = ["psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"] + (["id_cos"] if with_id_cos else [])
    rows = [[f, race, "Male", "20-29", psnr, ssim, psnr - 1.0, ssim - 0.01, *rest]
            for f, race, psnr, ssim, *rest in images]
    write_rows(os.path.join(folder, "per_image.csv"), ["file", "race", "gender", "age"] + metrics, rows)
    per_race = []
    for race in dict.fromkeys(r[1] for r in rows):
        members = [r for r in rows if r[1] == race]
        means = [math.fsum(m[k] for m in members) / len(members) for k in range(4, 4 + len(metrics))]
        per_race.append([identity[c] for c in columns] + [race, len(members)] + means)
    write_rows(os.path.join(folder, "per_race.csv"), list(columns) + ["race", "n"] + metrics, per_race)
    if args is not False:
        write_args(folder, "upscale", identity if args is None else args)
    return folder


def verify_run(root, name, pairs, seed=0, minority="none", weight=1.0, quant=None, restore=None, upscaler=None,
               finetune="full"):
    """Run folder of run_verify.py (or run_quantize.py with quant={wbits, abits, calib, qat_steps});
    pairs = [(race, line, id1, correct)], 10 equal folds per race in line order. restore = (restore,
    restore_model): scored on restored faces (run_verify --restore), `upscaler` the restoring run's columns."""
    folder = os.path.join(root, name)
    identity = {"study": "verify", "arch": "mobilefacenet", "init": "weights", "finetune": finetune,
                "minority": minority, "weight": weight, "seed": seed, "code_version": "abc123"}
    columns = VERIFY_ID
    if quant is not None:
        identity.update(study="quantize", task="verify", **quant)
        columns = QUANT_ID
    if restore is not None:
        identity.update(restore=restore[0], restore_model=restore[1])
        columns = identifying_columns(VERIFY_ID, None, ("restore", "restore_model"))
    rows = []
    for race in dict.fromkeys(p[0] for p in pairs):
        members = [p for p in pairs if p[0] == race]
        for i, (_, line, id1, correct) in enumerate(members):
            rows.append([race, i * 10 // len(members), line, id1, 1, f"x{line}", 2, i % 2, 0.5, correct])
    write_rows(os.path.join(folder, "per_pair.csv"),
               ["race", "fold", "line", "id1", "n1", "id2", "n2", "label", "score", "correct"], rows)
    per_race = []
    for race in dict.fromkeys(p[0] for p in pairs):
        correct = [p[3] for p in pairs if p[0] == race]
        accuracy = 100.0 * math.fsum(correct) / len(correct)
        per_race.append([identity[c] for c in columns] + [race, len(correct), 5, accuracy, 1.0, 90.0, 0.1, 80.0,
                                                          85.0])
    write_rows(os.path.join(folder, "per_race.csv"), list(columns) + [
        "race", "n_pairs", "n_identities", "accuracy", "accuracy_std", "tpr", "fpr", "tar_at_far_0.001",
        "tar_at_far_0.01"], per_race)
    if upscaler is not None:
        write_args(folder, "verify", identity, restore={"upscaler": upscaler})
    return folder


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def run_main(paths, out, *extra, figures=False):
    """summarize.py on `paths`; without figures unless asked (drawing them takes most of a small run's time)."""
    return summarize.main(summarize.get_args_parser().parse_args(
        [str(p) for p in paths] + ["--out", str(out), "--n-boot", str(N_BOOT), *extra]
        + ([] if figures else ["--no-figures"])))


def problems_text(result):
    return "\n".join(f"{path}: {message}" for path, message in result["problems"])


def sections(markdown):
    """{title: text} of the ## sections of tables.md."""
    parts = markdown.split("\n## ")[1:]
    return {part.split("\n", 1)[0]: part.split("\n", 1)[1] for part in parts}


HAND_SEEDS = {  # seed -> [(file, race, psnr_y, ssim_y)]
    0: [("val/1.jpg", "White", 30.0, 0.80), ("val/2.jpg", "White", 32.0, 0.90),
        ("val/3.jpg", "Black", 28.0, 0.70), ("val/4.jpg", "Black", 30.0, 0.80)],
    1: [("val/1.jpg", "White", 33.0, 0.86), ("val/2.jpg", "White", 33.0, 0.88),
        ("val/3.jpg", "Black", 27.0, 0.72), ("val/4.jpg", "Black", 27.0, 0.74)],
}


def hand_runs(root):
    return [upscale_run(root, f"resnet50-balanced-seed{s}", images, seed=s) for s, images in HAND_SEEDS.items()]


# ---------------------------------------------------------------------------------------------------------
# Table values


def test_seeds_table_mean_min_max_over_seeds(tmp_path):
    hand_runs(tmp_path / "runs")
    result = run_main([tmp_path / "runs"], tmp_path / "out")
    rows = {r["race"]: r for r in read_csv(tmp_path / "out" / "seeds_upscale-x2.csv")}
    # White: seed means PSNR 31 and 33, SSIM 0.85 and 0.87; Black: PSNR 29 and 27, SSIM 0.75 and 0.73.
    expected = {"White": {"psnr_y": (32, 31, 33, 2), "ssim_y": (0.86, 0.85, 0.87, 0.02), "psnr_rgb": (31, 30, 32, 2)},
                "Black": {"psnr_y": (28, 27, 29, 2), "ssim_y": (0.74, 0.73, 0.75, 0.02), "psnr_rgb": (27, 26, 28, 2)}}
    assert list(rows) == ["White", "Black"]  # FairFace vocabulary order
    for race, metrics in expected.items():
        assert rows[race]["n_seeds"] == "2" and rows[race]["n_images"] == "4" and rows[race]["seeds"] == "0;1"
        for metric, values in metrics.items():
            got = [float(rows[race][f"{metric}_{stat}"]) for stat in ("mean", "min", "max", "delta")]
            assert got == pytest.approx(values, abs=1e-9)
    table = sections((tmp_path / "out" / "tables.md").read_text())["Per-race quality over seeds, upscaling x2"]
    assert "| race | seeds | images | PSNR-Y (dB) | SSIM-Y | PSNR-RGB (dB) | SSIM-RGB |" in table
    assert "| White | 2 | 4 | 32.0 [31.0, 33.0] | 0.860 [0.850, 0.870] | 31.0 [30.0, 32.0] | 0.850 [0.840, 0.860] |" \
        in table
    assert result["experiments"] == 1


def test_means_table_verification_rows_mean_over_seeds(tmp_path):
    # Seeds 0 and 1: African 40/40 and 36/40 correct -> 95.00; Asian 30/40 and 34/40 -> 80.00.
    def pairs(n_african, n_asian):
        return ([("African", i + 1, f"a{i % 8}", int(i < n_african)) for i in range(40)]
                + [("Asian", i + 1, f"b{i % 8}", int(i < n_asian)) for i in range(40)])
    verify_run(tmp_path, "v0", pairs(40, 30), seed=0)
    verify_run(tmp_path, "v1", pairs(36, 34), seed=1)
    run_main([tmp_path], tmp_path / "out")
    (row,) = read_csv(tmp_path / "out" / "means_verify_accuracy.csv")
    assert float(row["African"]) == pytest.approx(95.0) and float(row["Asian"]) == pytest.approx(80.0)
    assert row["African_n"] == "80" and row["n_seeds"] == "2"
    assert float(row["Avg"]) == pytest.approx(87.5)
    assert float(row["STD"]) == pytest.approx(math.sqrt(2) * 7.5)
    assert float(row["SER"]) == pytest.approx(20.0 / 5.0)
    tables = sections((tmp_path / "out" / "tables.md").read_text())
    table = tables["Per-race accuracy (%), mean over seeds, verification"]
    assert "| African | Asian | Avg | STD | SER |" in table  # one experiment: no label column
    assert "| 95.0 (n=80) | 80.0 (n=80) | 87.5 | 10.6 | 4.00 |" in table
    ci = {r["quantity"]: r for r in read_csv(tmp_path / "out" / "ci_verify.csv")}
    assert float(ci["African"]["value"]) == pytest.approx(95.0) and ci["African"]["n"] == "80"
    assert float(ci["gap"]["value"]) == pytest.approx(15.0)
    assert float(ci["ser"]["value"]) == pytest.approx(4.0)


# ---------------------------------------------------------------------------------------------------------
# Planted effects


def planted_upscale(root, penalty=1.0):
    """Balanced, under-sampled (Black, w=0.2) and bicubic runs, 2 seeds, 30 images per race.

    under = balanced + d per image, d = -penalty +- 0.2 for Black and +-0.2 (mean 0) for the other races;
    bicubic = balanced - 2 dB everywhere.
    """
    rng = np.random.default_rng(0)
    races = ("White", "Black", "East Asian")
    files = [(f"val/{i}.jpg", races[i % 3]) for i in range(90)]
    for seed in (0, 1):
        base = rng.normal(30.0, 2.0, len(files))
        jitter = np.where(np.arange(len(files)) // 3 % 2 == 0, 0.2, -0.2)
        under = base + jitter - penalty * np.array([race == "Black" for _, race in files])
        upscale_run(root, f"balanced-s{seed}", [(f, r, b, 0.8) for (f, r), b in zip(files, base)], seed=seed)
        upscale_run(root, f"black-s{seed}", [(f, r, u, 0.8) for (f, r), u in zip(files, under)], seed=seed,
                    minority="Black", weight=0.2)
        upscale_run(root, f"bicubic-s{seed}", [(f, r, b - 2.0, 0.7) for (f, r), b in zip(files, base)], seed=seed,
                    arch="bicubic")


def test_planted_minority_penalty_sign_and_intervals(tmp_path):
    planted_upscale(tmp_path / "runs")
    result = run_main([tmp_path / "runs"], tmp_path / "out")
    rows = [r for r in read_csv(tmp_path / "out" / "minority_penalty_upscale-x2.csv") if r["metric"] == "psnr_y"]
    by_race = {r["race"]: r for r in rows}
    assert rows[0]["race"] == "Black" and rows[0]["headline"] == "1"  # the headline row comes first
    black, white = by_race["Black"], by_race["White"]
    assert float(black["under_minus_balanced"]) == pytest.approx(-1.0)  # under - balanced: negative = worse
    assert float(black["hi"]) < 0
    assert float(white["under_minus_balanced"]) == pytest.approx(0.0, abs=1e-9)
    assert float(white["lo"]) < 0 < float(white["hi"])
    assert black["n"] == "30"  # items paired per file after averaging the two seeds
    # Two seeds on both sides, the same seed labels: a recipe-level difference with seeds paired.
    assert black["level"] == "recipe" and black["seeds_paired"] == "1" and black["n_seeds"] == "2"
    assert black["scope"] == "recipe difference (seed and item variance)"
    gain = [r for r in read_csv(tmp_path / "out" / "gain_over_bicubic_upscale-x2.csv")
            if r["metric"] == "psnr_y" and r["arch"] == "resnet50" and r["minority"] == "none"]
    assert {r["race"] for r in gain} == {"White", "Black", "East Asian"}
    assert all(float(r["model_minus_bicubic"]) == pytest.approx(2.0) for r in gain)
    tables = sections((tmp_path / "out" / "tables.md").read_text())
    penalty = tables["Minority penalty (under-sampled - balanced), PSNR-Y (dB), upscaling x2"]
    assert "| **Black (under-sampled)** | -1.00 [" in penalty and "| <0.001 |" in penalty
    assert "recipe difference (seed and item variance): 2 vs 2 seeds, seeds paired" in penalty
    assert "| equal-means p |" in tables["Fairness of PSNR-Y (dB) across races with 95% CIs, upscaling x2"]
    assert not result["problems"]


def verification_penalty(root, wrong):
    """African penalty rows of a balanced (all correct) vs an under-sampled run whose African pair i is wrong
    when wrong(i); pair i belongs to identity a{i % 10}; Asian pairs are all correct in both."""
    def pairs(under):
        return ([("African", i + 1, f"a{i % 10}", int(not (under and wrong(i)))) for i in range(100)]
                + [("Asian", i + 1, f"b{i % 10}", 1) for i in range(100)])
    verify_run(root, "balanced", pairs(False))
    verify_run(root, "under", pairs(True), minority="African", weight=0.25)
    run_main([root], root / "out")
    return {r["race"]: r for r in read_csv(root / "out" / "minority_penalty_verify.csv")}


def test_planted_verification_penalty_in_percentage_points(tmp_path):
    by_race = verification_penalty(tmp_path / "spread", lambda i: i < 30)  # 3 wrong pairs in every identity
    assert float(by_race["African"]["under_minus_balanced"]) == pytest.approx(-30.0)
    assert float(by_race["African"]["hi"]) < 0 and by_race["African"]["headline"] == "1"
    assert by_race["African"]["n"] == "100"
    assert float(by_race["Asian"]["under_minus_balanced"]) == 0.0
    assert float(by_race["Asian"]["lo"]) <= 0.0 <= float(by_race["Asian"]["hi"])
    # The same 30 wrong pairs inside 3 of the 10 identities: clustering by identity (not pairs) finds that
    # the effect may come from a few people, and the interval reaches past 0.
    by_race = verification_penalty(tmp_path / "clustered", lambda i: i % 10 < 3)
    assert float(by_race["African"]["under_minus_balanced"]) == pytest.approx(-30.0)
    assert float(by_race["African"]["hi"]) > 0.0
    # One seed on each side: a difference between two trained models, never presented as a penalty.
    assert by_race["African"]["scope"] == "model difference (1 seed; not a recipe effect)"
    assert by_race["African"]["level"] == "model" and by_race["African"]["seed_sd"] == "nan"
    text = (tmp_path / "clustered" / "out" / "tables.md").read_text()
    assert "| **African (under-sampled)** | -30.0 [" in text and "| model difference (1 seed; not a recipe " in text


def test_quantized_minus_fp32_and_missing_fp32(tmp_path):
    full = [("African", i + 1, f"a{i % 10}", 1) for i in range(50)] + [("Indian", i + 1, f"c{i % 10}", 1)
                                                                    for i in range(50)]
    quantized = [(r, i, c, int(not (r == "Indian" and i % 5 == 0))) for r, i, c, _ in full]
    fp32 = {"wbits": 32, "abits": 32, "calib": "none", "qat_steps": 0}
    verify_run(tmp_path, "q/fp32", full, quant=fp32)
    verify_run(tmp_path, "q/w4a4-real", quantized, quant={**fp32, "wbits": 4, "abits": 4, "calib": "real"})
    verify_run(tmp_path, "lonely/w8a8", full, quant={**fp32, "wbits": 8, "abits": 8, "calib": "real"}, weight=0.5,
               minority="Indian")
    result = run_main([tmp_path], tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "quantized_minus_fp32_quantize-verify.csv")
    by_race = {r["race"]: r for r in rows}
    assert {r["wbits"] for r in rows} == {"4"}
    assert float(by_race["Indian"]["quantized_minus_fp32"]) == pytest.approx(-20.0)  # percentage points
    assert float(by_race["African"]["quantized_minus_fp32"]) == 0.0
    assert "wbits=32, abits=32, calib=none" in by_race["Indian"]["reference"]
    table = read_csv(tmp_path / "out" / "means_quantize-verify_accuracy.csv")
    assert sorted(r["wbits"] for r in table) == ["32", "4", "8"]
    assert any(path.endswith(os.path.join("lonely", "w8a8", "per_race.csv")) and "no fp32 counterpart" in message
               for path, message in result["problems"])
    assert "Quantized - fp32, accuracy (%), quantized verification" in sections(
        (tmp_path / "out" / "tables.md").read_text())


# ---------------------------------------------------------------------------------------------------------
# The probe studies: run_verify --probe gender (probe_gender.csv), --bias-probe (bias_probe.csv, args.json)

PROBE_PAIRS = [(race, i + 1, f"{race}{i % 5}", 1) for race in ("African", "Asian") for i in range(20)]
PROBE_F1 = {  # seed -> {race: f1_in}; worst and gap per seed: 0.80 / 0.10, 0.76 / 0.16, 0.78 / 0.10
    0: {"White": 0.90, "Black": 0.80, "Indian": 0.85},
    1: {"White": 0.92, "Black": 0.76, "Indian": 0.88},
    2: {"White": 0.88, "Black": 0.78, "Indian": 0.80}}
BTS = {0: 0.5, 1: 0.7, 2: 0.6}
T_975_2DF = 4.302652729749  # Student t quantile 0.975 with 2 df (tables)


def write_probes(folder, f1=None, bts=None):
    """The probe files of run_verify.py in `folder` (a verify_run): probe_gender.csv with {race: f1_in}
    (f1_out 0.5, worst/gap of the two, accuracy 0.9, n 6), bias_probe.csv with 3 comparisons, and the Bias
    Transfer Score in args.json; rows start with the run's identifying columns, as the study writes them."""
    per_race = read_csv(os.path.join(folder, "per_race.csv"))
    columns = list(per_race[0])[:list(per_race[0]).index("race")]
    identity = [per_race[0][c] for c in columns]
    if f1 is not None:
        write_rows(os.path.join(folder, "probe_gender.csv"), columns + ["race", "n", "f1_in", "f1_out", "worst", "gap",
                                                                        "accuracy"],
                   [identity + [race, 6, value, 0.5, min(value, 0.5), abs(value - 0.5), 0.9]
                    for race, value in f1.items()])
    if bts is not None:
        write_rows(os.path.join(folder, "bias_probe.csv"), columns + ["set_a", "set_b", "n_a", "n_b",
                                                                      "assoc_pretrained", "assoc_finetuned"],
                   [identity + ["White", "Black", 6, 6, 0.3, 0.2], identity + ["White", "Indian", 6, 6, 0.4, 0.5],
                    identity + ["White Male", "White Female", 3, 3, 0.6, 0.7]])
        write_args(folder, "verify", {"seed": per_race[0]["seed"]}, bias_transfer_score=bts)


def probe_runs(root):
    """Balanced: 3 seeds with both probes; under-sampled Asian: 1 seed, gender probe only; another: none."""
    for seed in PROBE_F1:
        write_probes(verify_run(root, f"balanced-{seed}", PROBE_PAIRS, seed=seed), PROBE_F1[seed], BTS[seed])
    write_probes(verify_run(root, "asian", PROBE_PAIRS, minority="Asian", weight=0.5), PROBE_F1[0])
    verify_run(root, "african", PROBE_PAIRS, minority="African", weight=0.5)


def t_interval(values):
    mean = math.fsum(values) / len(values)
    half = T_975_2DF * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def test_probe_f1_worst_gap_and_bias_transfer_score_over_seeds_by_hand(tmp_path):
    probe_runs(tmp_path / "runs")
    result = run_main([tmp_path / "runs"], tmp_path / "out", "--n-boot", "20")
    rows = read_csv(tmp_path / "out" / "probes_verify.csv")
    balanced = {r["metric"]: r for r in rows if r["minority"] == "none"}
    expected = {"probe_f1:White": [0.90, 0.92, 0.88], "probe_f1:Black": [0.80, 0.76, 0.78],
                "probe_f1:Indian": [0.85, 0.88, 0.80], "probe_f1_worst": [0.80, 0.76, 0.78],
                "probe_f1_gap": [0.10, 0.16, 0.10], "bias_transfer_score": [0.5, 0.7, 0.6]}
    assert list(balanced) == list(expected)  # races in FairFace order, then worst, gap, BTS
    for metric, values in expected.items():
        mean, lo, hi = t_interval(values)
        row = balanced[metric]
        assert float(row["mean"]) == pytest.approx(mean, abs=1e-12)
        assert (float(row["lo"]), float(row["hi"])) == pytest.approx((lo, hi), rel=1e-9)
        assert (row["n_seeds"], row["seeds"], row["level"]) == ("3", "0;1;2", "recipe")
    assert float(balanced["bias_transfer_score"]["lo"]) == pytest.approx(0.6 - T_975_2DF * 0.1 / math.sqrt(3))
    under = {r["metric"]: r for r in rows if r["minority"] == "Asian"}
    assert "bias_transfer_score" not in under and not [r for r in rows if r["minority"] == "African"]
    assert float(under["probe_f1_gap"]["mean"]) == pytest.approx(0.10)
    assert (under["probe_f1_worst"]["n_seeds"], under["probe_f1_worst"]["lo"]) == ("1", "")
    table = sections((tmp_path / "out" / "tables.md").read_text())["Gender probe and Bias Transfer Score over "
                                                                     "seeds, verification"]
    assert "covers the seed-to-seed variation of the probe result, i.e. the recipe" in table
    assert "with one seed no interval is given" in table
    assert "| gender-probe F1, worst race | 1 | 0.800 (n=1, no interval) |" in table
    assert "| Bias Transfer Score | 3 | 0.600 [0.352, 0.848] | 0.100 |" in table
    assert not [m for _, m in result["problems"] if "probe" in m.lower()]  # runs without probes are fine


def test_malformed_probe_files_are_reported_and_the_rest_tabulated(tmp_path):
    root = tmp_path / "runs"
    probe_runs(root)
    gender = root / "balanced-1" / "probe_gender.csv"
    gender.write_text(gender.read_text().replace(",0.92,", ",high,"))
    other = root / "balanced-2" / "bias_probe.csv"  # rows of another seed's run
    other.write_text(other.read_text().replace(",2,abc123,", ",7,abc123,"))
    record = json.loads((root / "balanced-0" / "args.json").read_text())
    (root / "balanced-0" / "args.json").write_text(json.dumps({**record, "bias_transfer_score": None}))
    result = run_main([root], tmp_path / "out", "--n-boot", "20")
    messages = {}
    for path, message in result["problems"]:
        messages.setdefault(path, []).append(message)
    assert any("'high' is not a number; the probe is left out" in m for m in messages[str(gender)])
    assert any("identifying column(s) ['seed'] differ from per_race.csv" in m for m in messages[str(other)])
    assert any("no numeric bias_transfer_score" in m for m in messages[str(root / "balanced-0" / "bias_probe.csv")])
    assert any("no gender probe while 2 other seed(s)" in m
               for m in messages[str(root / "balanced-1" / "per_race.csv")])
    balanced = {r["metric"]: r for r in read_csv(tmp_path / "out" / "probes_verify.csv") if r["minority"] == "none"}
    assert (balanced["probe_f1:White"]["seeds"], balanced["bias_transfer_score"]["seeds"]) == ("0;2", "1")
    assert float(balanced["probe_f1:White"]["mean"]) == pytest.approx(0.89)
    assert float(balanced["bias_transfer_score"]["mean"]) == 0.7 and balanced["bias_transfer_score"]["lo"] == ""


# ---------------------------------------------------------------------------------------------------------
# Identity after upscaling: id_cos


ID_COS_IMAGES = [  # (file, race, psnr_y, ssim_y, id_cos of the model, id_cos of bicubic)
    ("val/1.jpg", "White", 30.0, 0.80, 0.90, 0.70), ("val/2.jpg", "White", 32.0, 0.90, 0.80, 0.75),
    ("val/3.jpg", "Black", 28.0, 0.70, 0.60, 0.50), ("val/4.jpg", "Black", 30.0, 0.80, 0.70, 0.40)]


def identity_runs(root, bicubic_identities=(None, "X"), model_identities=("X", None)):
    """Model runs (resnet50) and bicubic floors with and without --identity-model, one seed each. A run with
    identity model M has id_cos (ID_COS_IMAGES) and recipe <arch>-<M>; bicubic = model - 2 dB, SSIM - 0.1."""
    for identity_model in bicubic_identities:
        images = [(f, r, p - 2.0, s - 0.1) + ((bicubic,) if identity_model else ())
                  for f, r, p, s, _, bicubic in ID_COS_IMAGES]
        upscale_run(root, f"bicubic-{identity_model}", images, arch="bicubic", recipe=f"bicubic-{identity_model}",
                    args={"arch": "bicubic", "identity_model": identity_model})
    for identity_model in model_identities:
        images = [(f, r, p, s) + ((model,) if identity_model else ()) for f, r, p, s, model, _ in ID_COS_IMAGES]
        upscale_run(root, f"resnet50-{identity_model}", images, recipe=f"resnet50-{identity_model}",
                    args={"arch": "resnet50", "identity_model": identity_model, "lr": 0.001})


def test_id_cos_per_race_means_and_gain_over_bicubic_by_hand(tmp_path):
    identity_runs(tmp_path / "runs")
    result = run_main([tmp_path / "runs"], tmp_path / "out")
    assert "ambiguous" not in problems_text(result)  # two bicubic floors (with and without --identity-model)
    means = {r["recipe"]: r for r in read_csv(tmp_path / "out" / "means_upscale-x2_id_cos.csv")}
    assert set(means) == {"bicubic-X", "resnet50-X"}  # only the runs that have id_cos
    # Model: White (0.90 + 0.80) / 2, Black (0.60 + 0.70) / 2; bicubic: (0.70 + 0.75) / 2, (0.50 + 0.40) / 2.
    assert [float(means["resnet50-X"][r]) for r in ("White", "Black")] == pytest.approx([0.85, 0.65])
    assert [float(means["bicubic-X"][r]) for r in ("White", "Black")] == pytest.approx([0.725, 0.45])
    assert float(means["resnet50-X"]["STD"]) == pytest.approx(0.2 / math.sqrt(2)) and "SER" not in means["resnet50-X"]
    gain = read_csv(tmp_path / "out" / "gain_over_bicubic_upscale-x2.csv")
    id_cos = {r["race"]: r for r in gain if r["metric"] == "id_cos"}
    # Paired by file: White 0.90 - 0.70 and 0.80 - 0.75 -> 0.125; Black 0.60 - 0.50 and 0.70 - 0.40 -> 0.20.
    assert {r["recipe"] for r in gain if r["metric"] == "id_cos"} == {"resnet50-X"}
    assert float(id_cos["White"]["model_minus_bicubic"]) == pytest.approx(0.125)
    assert float(id_cos["Black"]["model_minus_bicubic"]) == pytest.approx(0.20)
    assert all("recipe=bicubic-X" in r["reference"] for r in id_cos.values())
    # PSNR: each model against the bicubic floor of its own identity model (the same PSNR either way).
    psnr = [r for r in gain if r["metric"] == "psnr_y"]
    assert {(r["recipe"], r["reference"].split("recipe=")[1]) for r in psnr} == {
        ("resnet50-X", "bicubic-X"), ("resnet50-None", "bicubic-None")}
    assert all(float(r["model_minus_bicubic"]) == pytest.approx(2.0) for r in psnr)
    tables = sections((tmp_path / "out" / "tables.md").read_text())
    assert "| race | seeds | images | PSNR-Y (dB) | SSIM-Y | id_cos | PSNR-RGB (dB) | SSIM-RGB |" in \
        tables["Per-race quality over seeds, upscaling x2"]  # id_cos next to PSNR/SSIM
    assert "| resnet50 | resnet50-X | 0.850 (n=2) | 0.650 (n=2) | 0.750 | 0.141 |" in \
        tables["Per-race id_cos, mean over seeds, upscaling x2"]
    # Two images, t with 1 df (no bootstrap-t below 15 items): 0.125 +- 12.706 x 0.075.
    assert "| White | 0.13 [-0.83, 1.08] " in tables["Gain over bicubic (model - bicubic), id_cos, upscaling x2"]
    assert "Per-race id_cos with 95% CIs, upscaling x2" in tables
    assert "Minority penalty" not in " ".join(tables)


def test_id_cos_is_not_compared_across_recognition_models(tmp_path):
    # The only bicubic floor with id_cos used another recognition model: PSNR is compared, id_cos is not.
    identity_runs(tmp_path / "runs", bicubic_identities=("X",), model_identities=("Y",))
    result = run_main([tmp_path / "runs"], tmp_path / "out")
    gain = read_csv(tmp_path / "out" / "gain_over_bicubic_upscale-x2.csv")
    assert {r["metric"] for r in gain} == {"psnr_y", "ssim_y"}
    assert "id_cos of the bicubic reference [" in problems_text(result)
    assert "comparison left out (needs a bicubic run with the same identity_model, identity_arch)" in \
        problems_text(result)


# ---------------------------------------------------------------------------------------------------------
# Verification on restored faces


def test_restored_faces_side_by_side_per_recognition_model(tmp_path):
    def pairs(wrong_african, wrong_asian):  # the first n pairs of a race are wrong
        return ([("African", i + 1, f"a{i % 10}", int(i >= wrong_african)) for i in range(20)]
                + [("Asian", i + 1, f"b{i % 10}", int(i >= wrong_asian)) for i in range(20)])
    upscaler = {"study": "upscale", "arch": "fastvit_t8", "scale": 2, "minority": "none", "seed": 0}
    verify_run(tmp_path / "runs", "hr", pairs(0, 0))
    verify_run(tmp_path / "runs", "bicubic", pairs(4, 2), restore=("bicubic-x2", "none"))
    verify_run(tmp_path / "runs", "model", pairs(2, 0), restore=("fastvit_t8-x2", "m1"), upscaler=upscaler)
    run_main([tmp_path / "runs"], tmp_path / "out")
    tables = sections((tmp_path / "out" / "tables.md").read_text())
    restored = tables["Verification on restored faces, accuracy (%) per race, verification"]
    # HR 20/20 and 20/20; bicubic 16/20 and 18/20 (Avg 85, STD 7.07, SER 20 / 10); the upscaler 18/20 and 20/20.
    rows = restored.split("| faces | African | Asian | Avg | STD | SER |")[1].splitlines()[2:5]
    assert rows == ["| HR | 100 (n=20) | 100 (n=20) | 100 | 0 | nan |",
                    "| LR + bicubic-x2 | 80.0 (n=20) | 90.0 (n=20) | 85.0 | 7.07 | 2.00 |",
                    "| LR + fastvit_t8-x2 (upscaler m1) | 90.0 (n=20) | 100 (n=20) | 95.0 | 7.07 | inf |"]
    change = {(r["restore"], r["race"]): float(r["restored_minus_hr"])
              for r in read_csv(tmp_path / "out" / "restored_minus_hr_verify.csv")}
    assert change == pytest.approx({("bicubic-x2", "African"): -20.0, ("bicubic-x2", "Asian"): -10.0,
                                    ("fastvit_t8-x2", "African"): -10.0, ("fastvit_t8-x2", "Asian"): 0.0})
    legend = tables["Legend: recipe hashes and upscaler ids"]
    assert "| m1 | arch=fastvit_t8, scale=2, minority=none, seed=0 |" in legend


# ---------------------------------------------------------------------------------------------------------
# Reading the tables: legend, names, widths, flags, the --out folder


def test_recipe_legend_maps_each_hash_to_the_settings_that_differ(tmp_path):
    root = tmp_path / "runs"

    def args(lr, seed, **extra):  # out and workers differ run to run but never change a result
        return {"arch": "resnet50", "lr": lr, "epochs": 2, "seed": seed, "out": f"/runs/{lr}-{seed}",
                "workers": seed, **extra}

    for seed, save_samples in ((0, 4), (1, 0)):  # save_samples differs inside one recipe: not a result setting
        upscale_run(root, f"a{seed}", HAND_SEEDS[seed], seed=seed, recipe="r-lr1",
                    args=args(0.001, seed, save_samples=save_samples))
    upscale_run(root, "b0", HAND_SEEDS[0], recipe="r-lr2", args=args(0.002, 0, save_samples=4))
    upscale_run(root, "old", HAND_SEEDS[0], recipe="r-old", args=False)
    result = run_main([root], tmp_path / "out")
    legend = sections((tmp_path / "out" / "tables.md").read_text())["Legend: recipe hashes and upscaler ids"]
    assert "| block | recipe | runs | settings that differ |" in legend
    assert "| upscaling x2 | r-lr1 | 2 | lr=0.001 |" in legend
    assert "| upscaling x2 | r-lr2 | 1 | lr=0.002 |" in legend
    assert "| upscaling x2 | r-old | 1 | (no args.json) |" in legend
    assert {(r["recipe"], r.get("lr")) for r in read_csv(tmp_path / "out" / "recipes.csv")} == {
        ("r-lr1", "0.001"), ("r-lr2", "0.002"), ("r-old", "")}
    assert "recipe r-old: no args.json in its runs" in problems_text(result)


def test_rerun_writes_exactly_its_own_files_and_removes_stale_ones(tmp_path):
    planted_upscale(tmp_path / "runs")
    out = tmp_path / "out"
    first = run_main([tmp_path / "runs"], out)
    assert (out / "gain_over_bicubic_upscale-x2.csv").is_file()
    (out / ".tables.md.k1ll3d.tmp").write_text("")  # left by a summarize killed while writing
    for seed in (0, 1):  # without the bicubic floor, no gain over bicubic
        for name in os.listdir(tmp_path / "runs" / f"bicubic-s{seed}"):
            os.remove(tmp_path / "runs" / f"bicubic-s{seed}" / name)
    second = run_main([tmp_path / "runs"], out)
    assert not (out / "gain_over_bicubic_upscale-x2.csv").exists()
    assert sorted(os.listdir(out)) == sorted([os.path.basename(p) for p in second["written"]] + ["summarize_files.txt"])
    assert len(second["written"]) < len(first["written"])
    listed = [line for line in (out / "summarize_files.txt").read_text().splitlines() if not line.startswith("#")]
    assert sorted(listed) == sorted(os.path.basename(p) for p in second["written"])


def test_out_holding_files_summarize_did_not_write_is_refused(tmp_path):
    hand_runs(tmp_path / "runs")
    out = tmp_path / "out"
    run_main([tmp_path / "runs"], out)
    before = sorted(os.listdir(out))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt, which summarize.py did not write") as error:
        run_main([tmp_path / "runs"], out)
    assert "\n" not in str(error.value) and str(out / "notes.txt") in str(error.value)
    assert sorted(os.listdir(out)) == sorted(before + ["notes.txt"])  # nothing removed
    os.makedirs(tmp_path / "paper")
    (tmp_path / "paper" / "draft.tex").write_text("")
    with pytest.raises(ValueError, match="draft.tex"):  # a folder of other files, never written by summarize
        run_main([tmp_path / "runs"], tmp_path / "paper")


def test_one_seed_and_one_item_cells_say_so_instead_of_a_zero_width_interval(tmp_path):
    white = [(f"val/w{i}.jpg", "White", 30.0 + i, 0.8) for i in range(6)]  # enough images for an interval
    upscale_run(tmp_path / "runs", "one", white + [("val/5.jpg", "Indian", 29.0, 0.75)])
    run_main([tmp_path / "runs"], tmp_path / "out")
    tables = sections((tmp_path / "out" / "tables.md").read_text())
    assert "| White | 1 | 6 | 32.5 (n=1, no seed range) | 0.800 (n=1, no seed range) |" in \
        tables["Per-race quality over seeds, upscaling x2"]
    per_race = tables["Per-race PSNR-Y (dB) with 95% CIs, upscaling x2"]
    assert "| 29.0 (n=1, no CI) |" in per_race  # one Indian image: no interval to show
    assert "| 32.5 [" in per_race and " (n=6) |" in per_race  # six White images: an item-level interval
    ci = {r["quantity"]: r for r in read_csv(tmp_path / "out" / "ci_upscale-x2.csv") if r["metric"] == "psnr_y"}
    assert ci["Indian"]["n"] == "1" and ci["White"]["n"] == "6"
    assert {r["n_seeds"] for r in read_csv(tmp_path / "out" / "seeds_upscale-x2.csv")} == {"1"}


def sweep(root):
    """Every kind of table: two scales, three upscaler kinds, seven races, id_cos, two recipes, minority runs,
    verification on restored faces with a minority run, quantization."""
    races = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern")
    rng = np.random.default_rng(3)
    files = [(f"val/{i}.jpg", races[i % 7]) for i in range(35)]
    for scale in (2, 4):
        for arch, minority, weight, identity_model, seeds in (
                ("bicubic", "none", 1.0, "X", (0,)), ("bicubic", "none", 1.0, None, (0,)),
                ("resnet50", "none", 1.0, "X", (0, 1)), ("resnet50", "Black", 0.2, "X", (0, 1)),
                ("fastvit", "none", 1.0, None, (0,)), ("fastvit", "Indian", 0.5, None, (0,))):
            for seed in seeds:
                images = [(f, r, float(rng.normal(30, 2)), float(rng.uniform(0.7, 0.9)))
                          + ((float(rng.uniform(0.5, 0.9)),) if identity_model else ()) for f, r in files]
                upscale_run(root, f"{arch}-x{scale}-{minority}-{identity_model}-{seed}", images, seed=seed, arch=arch,
                            minority=minority, weight=weight, scale=scale, recipe=f"{arch}-{identity_model}",
                            args={"arch": arch, "identity_model": identity_model, "lr": 0.001 * scale})
    pairs = [(race, i + 1, f"{race}{i % 5}", int(rng.uniform() < 0.9)) for race in ("African", "Asian", "Caucasian",
                                                                                     "Indian") for i in range(20)]
    for minority in ("none", "Asian"):
        verify_run(root, f"verify-{minority}", pairs, minority=minority, weight=0.5)
        verify_run(root, f"verify-{minority}-bicubic", pairs, minority=minority, weight=0.5,
                   restore=("bicubic-x2", "none"))
    fp32 = {"wbits": 32, "abits": 32, "calib": "none", "qat_steps": 0}
    verify_run(root, "q/fp32", pairs, quant=fp32)
    verify_run(root, "q/w8a8", pairs, quant={**fp32, "wbits": 8, "abits": 8, "calib": "real"})


def test_every_table_has_its_own_name_and_fits_a_page(tmp_path):
    sweep(tmp_path / "runs")
    result = run_main([tmp_path / "runs"], tmp_path / "out", "--n-boot", "20")
    markdown = (tmp_path / "out" / "tables.md").read_text()
    titles = [line[3:] for line in markdown.splitlines() if line.startswith("## ")]
    assert len(titles) == len(set(titles)) and not [t for t in titles if "Table" in t]
    for expected in ("Per-race quality over seeds, upscaling x2", "Per-race id_cos, mean over seeds, upscaling x4",
                     "Gain over bicubic (model - bicubic), id_cos, upscaling x4",
                     "Minority penalty (under-sampled - balanced), PSNR-Y (dB), upscaling x2",
                     "Verification on restored faces, accuracy (%) per race, verification",
                     "Restored - original faces (restored - HR), accuracy (%), verification",
                     "Minority penalty (under-sampled - balanced), accuracy (%), verification",
                     "Quantized - fp32, accuracy (%), quantized verification",
                     "Fairness of SSIM-Y across races with 95% CIs, upscaling x4",
                     "Legend: recipe hashes and upscaler ids"):
        assert expected in titles
    widths = [len(line.strip().strip("|").split("|")) for line in markdown.splitlines() if line.startswith("|")]
    assert max(widths) <= MAX_COLUMNS
    assert max(widths) == MAX_COLUMNS  # the seven FairFace races are there: the limit is reached, not avoided
    assert "ambiguous" not in problems_text(result)


# ---------------------------------------------------------------------------------------------------------
# Bad inputs: each reported by file name, the rest goes on


def test_bad_inputs_are_reported_and_good_runs_remain(tmp_path):
    root = tmp_path / "runs"
    hand_runs(root)
    header = ",".join(UPSCALE_ID) + ",race,n,psnr_y,ssim_y,psnr_rgb,ssim_rgb\n"
    good_row = "upscale,fastvit,2,pixelshuffle,none,1.0,subsample,full,0,abc,White,2,30,0.8,29,0.79\n"
    cases = {
        "truncated": header + good_row[:40],
        "empty": "",
        "foreign": "name,score\nfoo,1\n",
        "unparsable": header + good_row.replace(",30,", ",thirty,"),
        "unknown_race": header + good_row.replace("White", "white"),
        "disagreeing": header + good_row + good_row.replace(",0,abc,White", ",1,abc,Black"),
    }
    for name, text in cases.items():
        os.makedirs(root / name)
        (root / name / "per_race.csv").write_text(text)
    no_items = upscale_run(root, "no_items", HAND_SEEDS[0], arch="vgg")
    os.remove(os.path.join(no_items, "per_image.csv"))
    cut = upscale_run(root, "cut_items", HAND_SEEDS[0], arch="convnext")
    lines = open(os.path.join(cut, "per_image.csv")).read().splitlines(keepends=True)
    open(os.path.join(cut, "per_image.csv"), "w").write("".join(lines[:-1]))  # cut at a row boundary
    os.makedirs(root / "unfinished")
    (root / "unfinished" / "args.json").write_text("{}")
    result = run_main([root], tmp_path / "out")
    text = problems_text(result)
    expected = {"truncated": "fields but the header has", "empty": "empty file", "foreign": "missing column",
                "unparsable": "'thirty' is not a number", "unknown_race": "unknown race label 'white'",
                "disagreeing": "identifying column(s) ['seed'] differ from line 2"}
    for name, message in expected.items():
        assert any(path == str(root / name / "per_race.csv") and message in m for path, m in result["problems"]), name
    assert str(root / "no_items" / "per_image.csv") + ": missing" in text
    assert str(root / "cut_items" / "per_image.csv") + ": Black: 1 rows but per_race.csv says 2" in text
    assert str(root / "unfinished") + ": unfinished run" in text
    seeds = read_csv(tmp_path / "out" / "seeds_upscale-x2.csv")
    assert {r["arch"] for r in seeds} == {"resnet50", "vgg", "convnext"}  # runs without usable items still appear
    ci_archs = {r["arch"] for r in read_csv(tmp_path / "out" / "ci_upscale-x2.csv")}
    assert ci_archs == {"resnet50"}
    markdown = (tmp_path / "out" / "tables.md").read_text()
    problems_section = markdown.split("## Problems")[1]
    for name in expected:
        assert str(root / name / "per_race.csv") in problems_section


def test_clash_same_experiment_and_seed(tmp_path):
    hand_runs(tmp_path / "a")
    upscale_run(tmp_path / "b", "copy", HAND_SEEDS[1], seed=1)  # seed 1 of the same experiment again
    result = run_main([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    clashing = [path for path, message in result["problems"] if "same experiment and seed 1" in message]
    assert sorted(clashing) == sorted([str(tmp_path / "a" / "resnet50-balanced-seed1" / "per_race.csv"),
                                       str(tmp_path / "b" / "copy" / "per_race.csv")])
    rows = read_csv(tmp_path / "out" / "seeds_upscale-x2.csv")
    assert {r["seeds"] for r in rows} == {"0"}  # both seed-1 runs left out, seed 0 remains
    assert float(rows[0]["psnr_y_mean"]) == 31.0


def test_missing_balanced_and_bicubic_counterparts(tmp_path):
    upscale_run(tmp_path, "under", HAND_SEEDS[0], minority="Black", weight=0.5)
    result = run_main([tmp_path], tmp_path / "out")
    messages = [m for path, m in result["problems"] if path == str(tmp_path / "under" / "per_race.csv")]
    assert any("no balanced counterpart" in m for m in messages)
    assert any("no bicubic counterpart" in m for m in messages)
    assert read_csv(tmp_path / "out" / "seeds_upscale-x2.csv")


def test_nothing_usable_exits_non_zero_and_leaves_the_out_folder_alone(tmp_path):
    os.makedirs(tmp_path / "bad")
    (tmp_path / "bad" / "per_race.csv").write_text("")
    with pytest.raises(SystemExit, match="no usable finished run"):
        run_main([tmp_path / "bad"], tmp_path / "out")
    with pytest.raises(SystemExit, match="no usable finished run"):
        run_main([tmp_path / "nowhere-*"], tmp_path / "out")
    assert not os.path.exists(tmp_path / "out" / "tables.md")


# ---------------------------------------------------------------------------------------------------------
# Globs, plots, infinite PSNR


def test_main_on_globs_and_figures_as_png_and_pdf(tmp_path):
    hand_runs(tmp_path / "runs")
    upscale_run(tmp_path / "runs", "other-seed0", HAND_SEEDS[0], arch="vgg")
    result = run_main([tmp_path / "runs" / "*-seed0"], tmp_path / "out", figures=True)
    assert {r["arch"] for r in read_csv(tmp_path / "out" / "seeds_upscale-x2.csv")} == {"resnet50", "vgg"}
    assert {r["seeds"] for r in read_csv(tmp_path / "out" / "seeds_upscale-x2.csv")} == {"0"}
    pngs = [p for p in result["written"] if p.endswith(".png")]
    assert {os.path.basename(p) for p in pngs} >= {"seeds_upscale-x2_psnr_y.png", "ci_upscale-x2_ssim_y.png"}
    assert sorted(p for p in result["written"] if p.endswith(".pdf")) == sorted(p[:-4] + ".pdf" for p in pngs)
    for path in pngs:
        with Image.open(path) as image:
            assert image.format == "PNG" and 400 <= image.width <= 2400
            colours = {colour for _, colour in image.convert("RGB").getcolors(1 << 20)}
        if os.path.basename(path).startswith(("seeds_", "ci_")):  # both experiments drawn, each in its colour
            assert {ImageColor.getrgb(PALETTE[0]), ImageColor.getrgb(PALETTE[1])} <= colours
    without = run_main([tmp_path / "runs" / "*-seed0"], tmp_path / "out")
    assert not [p for p in without["written"] if p.endswith((".png", ".pdf"))]
    assert sorted(os.listdir(tmp_path / "out")) == sorted([os.path.basename(p) for p in without["written"]]
                                                          + ["summarize_files.txt"])


def test_summarize_stands_on_numpy_without_torch_or_timm(tmp_path):
    # A fresh process: the table layer, and summarize run end to end, never load torch or timm (fast start,
    # light worker processes).
    hand_runs(tmp_path / "runs")
    code = ("import sys, racecomp.tables, racecomp.tables.command\n"
            "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'imported'\n"
            "import summarize\n"
            "summarize.main(summarize.get_args_parser().parse_args(sys.argv[1:]))\n"
            "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'summarized'\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
                           "--n-boot", "20", "--workers", "2"], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert os.path.isfile(tmp_path / "out" / "tables.md")


def test_infinite_psnr_is_kept_in_means_and_capped_for_intervals(tmp_path):
    images = [("val/1.jpg", "White", math.inf, 1.0), ("val/2.jpg", "White", 30.0, 0.9),
              ("val/3.jpg", "Black", 28.0, 0.7), ("val/4.jpg", "Black", 30.0, 0.8)]
    upscale_run(tmp_path, "exact", images)
    result = run_main([tmp_path], tmp_path / "out")
    white = [r for r in read_csv(tmp_path / "out" / "seeds_upscale-x2.csv") if r["race"] == "White"][0]
    assert white["psnr_y_mean"] == "inf"
    ci = {r["quantity"]: r for r in read_csv(tmp_path / "out" / "ci_upscale-x2.csv") if r["metric"] == "psnr_y"}
    assert float(ci["White"]["value"]) == pytest.approx((PSNR_CAP_DB + 30.0) / 2)
    assert any("1 of 4 per-image psnr_y values are infinite" in m for _, m in result["problems"])


# ---------------------------------------------------------------------------------------------------------
# One bad run folder is a problem line, never the end of the tables (issue 29)

GOOD_IMAGES = [("val/1.jpg", "White", 30.0, 0.8), ("val/2.jpg", "White", 31.0, 0.85),
               ("val/3.jpg", "Black", 29.0, 0.75), ("val/4.jpg", "Black", 28.0, 0.7)]


def test_malformed_records_and_impossible_values_are_problems_not_aborts_or_rows(tmp_path):
    root = tmp_path / "runs"
    upscale_run(root, "good", GOOD_IMAGES)
    bad_records = {"warnings": {"warnings": "not a list"}, "identity": {"identity_metric": "unknown"},
                   "fingerprints": {"data_fingerprints": ["x"]}}
    for seed, (name, fields) in enumerate(bad_records.items(), start=1):
        folder = upscale_run(root, name, GOOD_IMAGES, seed=seed)
        write_args(folder, "upscale", {"arch": "resnet50"}, **fields)
    (upscale_run(root, "encoding", GOOD_IMAGES, seed=5, args=False) and
     (root / "encoding" / "args.json").write_bytes(b'{"args": {"arch": "\xff"}}'))
    impossible = {"huge": (1e308, 0.8), "ssim": (30.0, 5.0), "negative": (-300.0, 0.8)}
    for seed, (name, (psnr, ssim)) in enumerate(impossible.items(), start=6):
        upscale_run(root, name, [("val/9.jpg", "White", psnr, ssim)] + GOOD_IMAGES[1:], seed=seed)
    result = run_main([root], tmp_path / "out")
    text = problems_text(result)
    # The run whose args.json is unreadable is kept (legend only), apart: its data is not known to be the same.
    assert result["experiments"] == 2 and (tmp_path / "out" / "tables.md").exists()
    assert "`warnings` is not a list of {check, message, value}; run left out" in text
    assert "`identity_metric` is not a dict naming its `model`; run left out" in text
    assert "`data_fingerprints` is not a dict of fingerprints with an `id`; run left out" in text
    assert "encoding/args.json: unreadable" in text
    for name, column, bounds in (("huge", "psnr_y", "[0, 1000]"), ("ssim", "ssim_y", "[-1, 1]"),
                                 ("negative", "psnr_y", "[0, 1000]")):
        assert re.search(f"{name}/per_race.csv: line 2: column '{column}': .* is outside its range "
                         f"{re.escape(bounds)}; run left out", text), name
    assert sorted(row["seeds"] for row in read_csv(tmp_path / "out" / "means_upscale-x2_psnr_y.csv")) == ["0", "5"]


def test_a_symlinked_run_folder_is_read_as_through_a_glob(tmp_path):
    store, root = tmp_path / "store", tmp_path / "runs"
    upscale_run(root, "seed0", GOOD_IMAGES)
    upscale_run(store, "seed1", GOOD_IMAGES, seed=1)
    os.symlink(store / "seed1", root / "seed1")
    os.symlink(root, root / "loop")  # a link back up is walked once
    for pattern in (root, root / "*"):
        result = run_main([pattern], tmp_path / "out")
        assert read_csv(tmp_path / "out" / "means_upscale-x2_psnr_y.csv")[0]["seeds"] == "0;1", pattern
        assert result["experiments"] == 1


def test_text_from_run_folders_cannot_change_the_markdown(tmp_path):
    root = tmp_path / "runs"
    for seed, arch in enumerate(["a|b", "x\n## injected", "<img src=x onerror=alert(1)>"]):
        upscale_run(root, f"run{seed}", GOOD_IMAGES, seed=seed, arch=arch)
    run_main([root], tmp_path / "out")
    for name in ("tables.md", "findings.md"):
        markdown = (tmp_path / "out" / name).read_text()
        assert "<img" not in markdown, name
        assert not any(line.lstrip("- ").startswith("## injected") for line in markdown.splitlines()), name
    tables = (tmp_path / "out" / "tables.md").read_text()
    assert "a\\|b" in tables and "&lt;img src=x onerror=alert(1)>" in tables
    for table in re.findall(r"(?:^\|.*\n)+", tables, flags=re.MULTILINE):  # every row as wide as its header
        assert len({len(re.findall(r"(?<!\\)\|", row)) for row in table.splitlines()}) == 1, table


def test_an_interrupted_summarize_leaves_a_marker_until_a_whole_set_is_written(tmp_path, monkeypatch):
    from racecomp.tables import output, sections
    upscale_run(tmp_path / "runs", "good", GOOD_IMAGES)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt
    with monkeypatch.context() as patched:
        patched.setattr(sections, "legend", killed)
        with pytest.raises(KeyboardInterrupt):
            run_main([tmp_path / "runs"], tmp_path / "out")
    assert (tmp_path / "out" / output.INCOMPLETE).exists() and not (tmp_path / "out" / "tables.md").exists()
    run_main([tmp_path / "runs"], tmp_path / "out")
    assert not (tmp_path / "out" / output.INCOMPLETE).exists() and (tmp_path / "out" / "tables.md").exists()
