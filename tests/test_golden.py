"""Golden files: summarize's outputs on a fixed set of planted run folders, pinned so that moving the analysis
between modules (issue 30: load -> analyse -> render) cannot change a number unnoticed.

The run folders are written here, deterministically (seeded numpy, no training): the upscaling study (bicubic
floor; resnet50 and fastvit, balanced and Black under-sampled at weights 0.2 and 0.5, two seeds each), the
verification study (finetune full and bn_affine, balanced and African under-sampled, two seeds each, probes on
the balanced runs) and the quantization study (fp32, w8a8 and w6a6 verification, two seeds each). Every kind of
findings.csv row (difference in differences, main effect, summary change, vs fp32, probe) and the dose-response
appear. summarize runs on them with a small --n-boot and --no-figures (figures hold no number of their own), as
its command line would; then every CSV (findings.csv included) is compared cell by cell with tests/golden/
(numbers to 1e-9, relative or absolute; text exactly), and the numbers of tables.md, findings.md and the LaTeX
tables section by section (the prose around them is not compared, so rewording a sentence does not need new
goldens; adding or moving a number does).

After an intended change of the outputs, regenerate the goldens and review their diff before committing:

    RACECOMP_REGEN_GOLDEN=1 python -m pytest tests/test_golden.py -q
    git diff --stat tests/golden/
"""
import csv
import math
import os
import re
import shutil

import numpy as np
import pytest

from test_summarize import read_csv, run_main, upscale_run, verify_run, write_probes

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
REGENERATE = os.environ.get("RACECOMP_REGEN_GOLDEN") == "1"
RUNS = "<RUNS>"  # the run root in the goldens (tmp_path differs run to run)
N_BOOT = "40"
TOLERANCE = 1e-9
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|inf|nan)")
UPSCALE_RACES = ("White", "Black", "East Asian")
VERIFY_RACES = ("African", "Asian", "Caucasian", "Indian")


def upscale_runs(root, rng):
    """Bicubic floor (1 seed), resnet50 and fastvit at 2 seeds: balanced, Black at weight 0.2, resnet50 also at
    0.5. 16 images a race; Black loses 1.0 dB (weight 0.2) or 0.4 dB (0.5) under resnet50, 0.5 dB (0.2) under
    fastvit; fastvit is 0.3 dB above resnet50; each model adds its own noise (0.3 dB); bicubic is 2 dB below the
    base."""
    files = [(f"val/{i}.jpg", UPSCALE_RACES[i % 3]) for i in range(48)]
    black = np.array([race == "Black" for _, race in files])
    base = rng.normal(30.0, 2.0, len(files))
    ssim = rng.uniform(0.7, 0.9, len(files))

    def run(name, psnr, seed, **columns):  # SSIM: the base, less 0.01 per dB lost, and the model's own noise
        own = ssim + 0.01 * (psnr - base) + rng.normal(0.0, 0.01, len(files))
        upscale_run(root, name, [(f, r, float(p), float(s)) for (f, r), p, s in zip(files, psnr, own)], seed=seed,
                    **columns)

    run("bicubic", base - 2.0, 0, arch="bicubic")
    for seed in (0, 1):
        for arch, offset, penalties in (("resnet50", 0.0, {0.2: 1.0, 0.5: 0.4}), ("fastvit", 0.3, {0.2: 0.5})):
            noise = rng.normal(0.0, 0.3, len(files))  # each trained model its own: no difference is exactly 0
            run(f"{arch}-balanced-s{seed}", base + offset + noise, seed, arch=arch)
            for weight, penalty in penalties.items():
                jitter = rng.normal(0.0, 0.2, len(files))
                run(f"{arch}-black{weight}-s{seed}", base + offset + noise + jitter - penalty * black, seed,
                    arch=arch, minority="Black", weight=weight)


def pairs_of(rng, accuracy):
    """40 pairs a race (8 identities), each correct with probability accuracy[race]."""
    return [(race, i + 1, f"{race[:2]}{i % 8}", int(rng.uniform() < accuracy.get(race, 0.9)))
            for race in VERIFY_RACES for i in range(40)]


def verify_runs(root, rng):
    """Finetune full and bn_affine, balanced and African at weight 0.25 (African 0.9 -> 0.7 under full, -> 0.8
    under bn_affine), 2 seeds each; the balanced runs have both probes."""
    for seed in (0, 1):
        for finetune, under in (("full", 0.7), ("bn_affine", 0.8)):
            folder = verify_run(root, f"verify-{finetune}-balanced-s{seed}", pairs_of(rng, {}), seed=seed,
                                finetune=finetune)
            f1 = {race: round(float(rng.uniform(0.75, 0.95)), 3) for race in ("White", "Black", "Indian")}
            write_probes(folder, f1, round(float(rng.uniform(0.4, 0.8)), 3))
            verify_run(root, f"verify-{finetune}-african-s{seed}", pairs_of(rng, {"African": under}), seed=seed,
                       finetune=finetune, minority="African", weight=0.25)


def quantize_runs(root, rng):
    """Quantized verification: fp32, w8a8 and w6a6 (Indian 0.9 -> 0.88 -> 0.75), 2 seeds each."""
    fp32 = {"wbits": 32, "abits": 32, "calib": "none", "qat_steps": 0}
    for seed in (0, 1):
        for bits, indian in ((32, 0.9), (8, 0.88), (6, 0.75)):
            quant = fp32 if bits == 32 else {**fp32, "wbits": bits, "abits": bits, "calib": "real"}
            verify_run(root, f"quantize/w{bits}a{bits}-s{seed}", pairs_of(rng, {"Indian": indian}), seed=seed,
                       quant=quant)


def golden_runs(root):
    rng = np.random.default_rng(2026)
    upscale_runs(os.path.join(root, "upscale"), rng)
    verify_runs(os.path.join(root, "verify"), rng)
    quantize_runs(os.path.join(root, "quantize"), rng)


def is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def same_number(a, b):
    a, b = float(a), float(b)
    return (math.isnan(a) and math.isnan(b)) or a == b or math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=TOLERANCE)


def compare_csv(name, got_path, want_path):
    with open(got_path, newline="") as got_file, open(want_path, newline="") as want_file:
        got, want = list(csv.reader(got_file)), list(csv.reader(want_file))
    assert got[0] == want[0], f"{name}: columns differ"
    assert len(got) == len(want), f"{name}: {len(got) - 1} rows, golden {len(want) - 1}"
    for line, (got_row, want_row) in enumerate(zip(got[1:], want[1:]), 2):
        for column, g, w in zip(want[0], got_row, want_row):
            if is_number(g) and is_number(w):
                assert same_number(g, w), f"{name} line {line}, {column}: {g} != golden {w}"
            else:
                assert g == w, f"{name} line {line}, {column}: {g!r} != golden {w!r}"


def numbers_by_section(text):
    """[(heading, [numbers])] of a markdown file: the numbers in the order they appear under each heading."""
    sections = [["", []]]
    for line in text.splitlines():
        if line.startswith("#"):
            sections.append([line, []])
        else:
            sections[-1][1] += NUMBER.findall(line)
    return sections


def compare_numbers(name, got_path, want_path):
    with open(got_path, encoding="utf-8") as got_file, open(want_path, encoding="utf-8") as want_file:
        got, want = numbers_by_section(got_file.read()), numbers_by_section(want_file.read())
    assert [h for h, _ in got] == [h for h, _ in want], f"{name}: headings differ"
    for (heading, got_numbers), (_, want_numbers) in zip(got, want):
        assert len(got_numbers) == len(want_numbers), \
            f"{name}, {heading!r}: {len(got_numbers)} numbers, golden {len(want_numbers)}"
        for g, w in zip(got_numbers, want_numbers):
            assert same_number(g, w), f"{name}, {heading!r}: {g} != golden {w}"


def normalised_outputs(out, runs):
    """{name: text} of the CSVs, markdown and LaTeX tables summarize wrote, the run root replaced by RUNS."""
    texts = {}
    for name in sorted(os.listdir(out)):
        if name.endswith((".csv", ".md", ".tex")):
            with open(os.path.join(out, name), encoding="utf-8") as handle:
                texts[name] = handle.read().replace(str(runs), RUNS)
    return texts


def test_summarize_reproduces_the_golden_files(tmp_path):
    runs = tmp_path / "runs"
    golden_runs(str(runs))
    result = run_main([runs], tmp_path / "out", "--n-boot", N_BOOT, "--workers", "1")
    kinds = {row["kind"] for row in read_csv(tmp_path / "out" / "findings.csv")}
    assert kinds == {"difference in differences", "main effect", "summary change", "vs fp32", "probe"}
    assert result["experiments"] == 13
    texts = normalised_outputs(tmp_path / "out", runs)
    if REGENERATE:
        shutil.rmtree(GOLDEN, ignore_errors=True)
        os.makedirs(GOLDEN)
        for name, text in texts.items():
            with open(os.path.join(GOLDEN, name), "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
        pytest.skip(f"regenerated {len(texts)} golden files in {GOLDEN}")
    assert sorted(texts) == sorted(os.listdir(GOLDEN)), "the files summarize writes differ from the goldens"
    got = tmp_path / "normalised"
    os.makedirs(got)
    for name, text in texts.items():
        (got / name).write_text(text, encoding="utf-8")
        compare = compare_csv if name.endswith(".csv") else compare_numbers
        compare(name, got / name, os.path.join(GOLDEN, name))
