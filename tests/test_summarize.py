"""summarize.py / racecomp.tables end to end on small synthetic run folders written here with the exact run
columns. Unit tests of the tables modules: tests/test_tables_*.py."""
import csv
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

import summarize
from racecomp.tables.comparisons import PSNR_CAP_DB
from racecomp.tables.plots import PALETTE

UPSCALE_ID = ("study", "arch", "scale", "upsampler", "minority", "weight", "minority_mode", "finetune", "seed",
              "code_version")
VERIFY_ID = ("study", "arch", "init", "finetune", "minority", "weight", "seed", "code_version")
QUANT_ID = ("study", "task", "arch", "init", "finetune", "minority", "weight", "wbits", "abits", "calib",
            "qat_steps", "seed", "code_version")
N_BOOT = 200


def write_rows(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def upscale_run(root, name, images, seed=0, arch="resnet50", minority="none", weight=1.0, scale=2):
    """Run folder of run_upscale.py; images = [(file, race, psnr_y, ssim_y)]; RGB = Y - 1 dB / Y - 0.01."""
    folder = os.path.join(root, name)
    identity = {"study": "upscale", "arch": arch, "scale": scale, "upsampler": "pixelshuffle",
                "minority": minority, "weight": weight, "minority_mode": "subsample", "finetune": "full",
                "seed": seed, "code_version": "abc123"}
    rows = [[f, race, "Male", "20-29", psnr, ssim, psnr - 1.0, ssim - 0.01] for f, race, psnr, ssim in images]
    write_rows(os.path.join(folder, "per_image.csv"),
               ["file", "race", "gender", "age", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"], rows)
    per_race = []
    for race in dict.fromkeys(r[1] for r in rows):
        members = [r for r in rows if r[1] == race]
        means = [math.fsum(m[k] for m in members) / len(members) for k in range(4, 8)]
        per_race.append([identity[c] for c in UPSCALE_ID] + [race, len(members)] + means)
    write_rows(os.path.join(folder, "per_race.csv"), list(UPSCALE_ID) + ["race", "n", "psnr_y", "ssim_y",
                                                                         "psnr_rgb", "ssim_rgb"], per_race)
    with open(os.path.join(folder, "args.json"), "w") as handle:
        json.dump({"args": identity, "code_version": "abc123"}, handle)
    return folder


def verify_run(root, name, pairs, seed=0, minority="none", weight=1.0, quant=None):
    """Run folder of run_verify.py (or run_quantize.py with quant={wbits, abits, calib, qat_steps});
    pairs = [(race, line, id1, correct)], 10 equal folds per race in line order."""
    folder = os.path.join(root, name)
    identity = {"study": "verify", "arch": "mobilefacenet", "init": "scratch", "finetune": "full",
                "minority": minority, "weight": weight, "seed": seed, "code_version": "abc123"}
    columns = VERIFY_ID
    if quant is not None:
        identity.update(study="quantize", task="verify", **quant)
        columns = QUANT_ID
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
    return folder


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def run_main(paths, out, *extra):
    return summarize.main(summarize.get_args_parser().parse_args(
        [str(p) for p in paths] + ["--out", str(out), "--n-boot", str(N_BOOT), *extra]))


def problems_text(result):
    return "\n".join(f"{path}: {message}" for path, message in result["problems"])


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


def test_table1_mean_min_max_delta_over_seeds(tmp_path):
    hand_runs(tmp_path / "runs")
    result = run_main([tmp_path / "runs"], tmp_path / "out")
    rows = {r["race"]: r for r in read_csv(tmp_path / "out" / "table1_upscale.csv")}
    # White: seed means PSNR 31 and 33, SSIM 0.85 and 0.87; Black: PSNR 29 and 27, SSIM 0.75 and 0.73.
    expected = {"White": {"psnr_y": (32, 31, 33, 2), "ssim_y": (0.86, 0.85, 0.87, 0.02), "psnr_rgb": (31, 30, 32, 2)},
                "Black": {"psnr_y": (28, 27, 29, 2), "ssim_y": (0.74, 0.73, 0.75, 0.02), "psnr_rgb": (27, 26, 28, 2)}}
    assert list(rows) == ["White", "Black"]  # FairFace vocabulary order
    for race, metrics in expected.items():
        assert rows[race]["n_seeds"] == "2" and rows[race]["n_images"] == "4" and rows[race]["seeds"] == "0;1"
        for metric, values in metrics.items():
            got = [float(rows[race][f"{metric}_{stat}"]) for stat in ("mean", "min", "max", "delta")]
            assert got == pytest.approx(values, abs=1e-9)
    text = (tmp_path / "out" / "tables.md").read_text()
    assert "| White | 2 | 4 | 0.8600 | 0.8500 | 0.8700 | 0.0200 | 32.00 | 31.00 | 33.00 | 2.00 |" in text
    assert result["experiments"] == 1


def test_table2_verification_rows_mean_over_seeds(tmp_path):
    # Seeds 0 and 1: African 40/40 and 36/40 correct -> 95.00; Asian 30/40 and 34/40 -> 80.00.
    def pairs(n_african, n_asian):
        return ([("African", i + 1, f"a{i % 8}", int(i < n_african)) for i in range(40)]
                + [("Asian", i + 1, f"b{i % 8}", int(i < n_asian)) for i in range(40)])
    verify_run(tmp_path, "v0", pairs(40, 30), seed=0)
    verify_run(tmp_path, "v1", pairs(36, 34), seed=1)
    run_main([tmp_path], tmp_path / "out")
    (row,) = read_csv(tmp_path / "out" / "table2_verify_accuracy.csv")
    assert float(row["African"]) == pytest.approx(95.0) and float(row["Asian"]) == pytest.approx(80.0)
    assert row["African_n"] == "80" and row["n_seeds"] == "2"
    assert float(row["Avg"]) == pytest.approx(87.5)
    assert float(row["STD"]) == pytest.approx(math.sqrt(2) * 7.5)
    assert float(row["SER"]) == pytest.approx(20.0 / 5.0)
    text = (tmp_path / "out" / "tables.md").read_text()
    assert "| 2 | 95.00 (n=80) | 80.00 (n=80) | 87.50 | 10.61 | 4.00 |" in text
    ci = {r["quantity"]: r for r in read_csv(tmp_path / "out" / "table3_ci_verify.csv")}
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
    rows = [r for r in read_csv(tmp_path / "out" / "table4_minority_penalty_upscale.csv") if r["metric"] == "psnr_y"]
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
    gain = [r for r in read_csv(tmp_path / "out" / "table4_gain_over_bicubic_upscale.csv")
            if r["metric"] == "psnr_y" and r["arch"] == "resnet50" and r["minority"] == "none"]
    assert {r["race"] for r in gain} == {"White", "Black", "East Asian"}
    assert all(float(r["model_minus_bicubic"]) == pytest.approx(2.0) for r in gain)
    paired = read_csv(tmp_path / "out" / "table3_paired_upscale.csv")
    assert {r["relation"] for r in paired} == {"bicubic", "balanced"}
    text = (tmp_path / "out" / "tables.md").read_text()
    assert "**Black (under-sampled)** | -1.00 [" in text
    assert "recipe difference (seed and item variance): 2 vs 2 seeds, seeds paired" in text
    assert "| equal-means p |" in text
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
    return {r["race"]: r for r in read_csv(root / "out" / "table4_minority_penalty_verify.csv")}


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
    assert "| **African (under-sampled)** | -30.00 [" in text and "| model difference (1 seed; not a recipe " in text


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
    paired = [r for r in read_csv(tmp_path / "out" / "table3_paired_quantize-verify.csv") if r["wbits"] == "4"]
    by_race = {r["race"]: r for r in paired}
    assert float(by_race["Indian"]["mean_diff"]) == pytest.approx(-20.0)  # quantized - fp32, percentage points
    assert float(by_race["African"]["mean_diff"]) == 0.0
    assert "wbits=32, abits=32, calib=none" in by_race["Indian"]["reference"]
    table = read_csv(tmp_path / "out" / "table2_quantize-verify_accuracy.csv")
    assert sorted(r["wbits"] for r in table) == ["32", "4", "8"]
    assert any(path.endswith(os.path.join("lonely", "w8a8", "per_race.csv")) and "no fp32 counterpart" in message
               for path, message in result["problems"])


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
                "disagreeing": "identifying column(s) disagree"}
    for name, message in expected.items():
        assert any(path == str(root / name / "per_race.csv") and message in m for path, m in result["problems"]), name
    assert str(root / "no_items" / "per_image.csv") + ": missing" in text
    assert str(root / "cut_items" / "per_image.csv") + ": Black: 1 rows but per_race.csv says 2" in text
    assert str(root / "unfinished") + ": unfinished run" in text
    table1 = read_csv(tmp_path / "out" / "table1_upscale.csv")
    assert {r["arch"] for r in table1} == {"resnet50", "vgg", "convnext"}  # runs without usable items still appear
    ci_archs = {r["arch"] for r in read_csv(tmp_path / "out" / "table3_ci_upscale.csv")}
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
    rows = read_csv(tmp_path / "out" / "table1_upscale.csv")
    assert {r["seeds"] for r in rows} == {"0"}  # both seed-1 runs left out, seed 0 remains
    assert float(rows[0]["psnr_y_mean"]) == 31.0


def test_missing_balanced_and_bicubic_counterparts(tmp_path):
    upscale_run(tmp_path, "under", HAND_SEEDS[0], minority="Black", weight=0.5)
    result = run_main([tmp_path], tmp_path / "out")
    messages = [m for path, m in result["problems"] if path == str(tmp_path / "under" / "per_race.csv")]
    assert any("no balanced counterpart" in m for m in messages)
    assert any("no bicubic counterpart" in m for m in messages)
    assert read_csv(tmp_path / "out" / "table1_upscale.csv")


def test_nothing_usable_exits_non_zero(tmp_path):
    os.makedirs(tmp_path / "bad")
    (tmp_path / "bad" / "per_race.csv").write_text("")
    with pytest.raises(SystemExit, match="no usable finished run"):
        run_main([tmp_path / "bad"], tmp_path / "out")
    with pytest.raises(SystemExit, match="no usable finished run"):
        run_main([tmp_path / "nowhere-*"], tmp_path / "out")
    assert not os.path.exists(tmp_path / "out" / "tables.md")


# ---------------------------------------------------------------------------------------------------------
# Globs, plots, infinite PSNR


def test_main_on_globs_and_plots_are_png(tmp_path):
    hand_runs(tmp_path / "runs")
    upscale_run(tmp_path / "runs", "other-seed0", HAND_SEEDS[0], arch="vgg")
    result = run_main([tmp_path / "runs" / "*-seed0"], tmp_path / "out")
    assert {r["arch"] for r in read_csv(tmp_path / "out" / "table1_upscale.csv")} == {"resnet50", "vgg"}
    assert {r["seeds"] for r in read_csv(tmp_path / "out" / "table1_upscale.csv")} == {"0"}
    pngs = [p for p in result["written"] if p.endswith(".png")]
    assert {os.path.basename(p) for p in pngs} >= {"table1_upscale_psnr_y.png", "table3_upscale_ssim_y.png"}
    for path in pngs:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 640 and image.height >= 400
            colours = {colour for _, colour in image.convert("RGB").getcolors(1 << 20)}
        assert PALETTE[0] in colours and PALETTE[1] in colours  # both experiments drawn


def test_infinite_psnr_is_kept_in_means_and_capped_for_intervals(tmp_path):
    images = [("val/1.jpg", "White", math.inf, 1.0), ("val/2.jpg", "White", 30.0, 0.9),
              ("val/3.jpg", "Black", 28.0, 0.7), ("val/4.jpg", "Black", 30.0, 0.8)]
    upscale_run(tmp_path, "exact", images)
    result = run_main([tmp_path], tmp_path / "out")
    white = [r for r in read_csv(tmp_path / "out" / "table1_upscale.csv") if r["race"] == "White"][0]
    assert white["psnr_y_mean"] == "inf"
    ci = {r["quantity"]: r for r in read_csv(tmp_path / "out" / "table3_ci_upscale.csv") if r["metric"] == "psnr_y"}
    assert float(ci["White"]["value"]) == pytest.approx((PSNR_CAP_DB + 30.0) / 2)
    assert any("1 of 4 per-image psnr_y values are infinite" in m for _, m in result["problems"])
