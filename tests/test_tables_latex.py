"""racecomp.tables.formatting's LaTeX cells and the table_<block>_<metric>.tex files summarize writes: booktabs
structure, one row per experiment, escaped text, the numbers of ci_<block>.csv, and (where a TeX install is found)
that the table compiles in a minimal document."""
import math
import os
import re
import shutil
import subprocess

import pytest

from racecomp.tables.formatting import cell_magnitude, format_number
from racecomp.tables.formatting import latex_cell as interval_cell, latex_escape as escape
from test_summarize import HAND_SEEDS, read_csv, run_main, upscale_run, verify_run

ODD_ARCH = "res_net%&#1"  # every character LaTeX treats specially in a table cell


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """summarize's --out folder for two upscaling experiments (one with ODD_ARCH) and two verification ones."""
    root = tmp_path_factory.mktemp("latex")
    for seed, images in HAND_SEEDS.items():
        upscale_run(root / "runs", f"resnet50-{seed}", images, seed=seed)
    upscale_run(root / "runs", "odd", HAND_SEEDS[0], arch=ODD_ARCH)
    for minority, weight, wrong in (("none", 1.0, 2), ("African", 0.5, 8)):
        pairs = [(race, i + 1, f"{race}{i % 5}", int(not (race == "African" and i < wrong) and i != 7))
                 for race in ("African", "Asian", "Caucasian", "Indian") for i in range(20)]
        verify_run(root / "runs", f"verify-{minority}", pairs, minority=minority, weight=weight)
    run_main([root / "runs"], root / "out")
    return root / "out"


def body_rows(tex):
    """The rows between \\midrule and \\bottomrule, as lists of cells."""
    body = tex.split("\\midrule\n", 1)[1].split("\\bottomrule", 1)[0]
    return [row.rstrip(" \\").split(" & ") for row in body.strip().split("\n")]


def test_escape_and_interval_cells():
    assert escape("a_b%c&d#e$f{g}h~i^j\\") == ("a\\_b\\%c\\&d\\#e\\$f\\{g\\}h\\textasciitilde{}i\\textasciicircum{}"
                                                "j\\textbackslash{}")
    assert interval_cell(32.05, 31.8, 32.4, 10) == "\\raceci{32.1}{31.8}{32.4}"  # half up, as tables.md
    assert interval_cell(-0.5, -1.0, math.inf, 10) == "\\raceci{-0.50}{-1.00}{\\infty}"
    assert interval_cell(30.0, math.nan, math.nan, 10) == interval_cell(30.0, 29.0, 31.0, 1) == "$30.0$"
    assert interval_cell(math.nan, math.nan, math.nan, 1) == "--"


def test_one_booktabs_table_per_block_and_metric_with_one_row_per_experiment(tables):
    names = sorted(n for n in os.listdir(tables) if n.endswith(".tex"))
    assert names == ["table_upscale-x2_psnr_y.tex", "table_upscale-x2_ssim_y.tex", "table_verify_accuracy.tex"]
    for name in names:
        tex = (tables / name).read_text()
        unescaped = re.sub(r"\\[{}]", "", tex)
        depth = 0
        for char in unescaped:
            depth += {"{": 1, "}": -1}.get(char, 0)
            assert depth >= 0, name
        assert depth == 0, name
        assert [line for line in tex.splitlines() if line.endswith("rule")] == ["\\toprule", "\\midrule",
                                                                               "\\bottomrule"]
        assert tex.count("\\begin{table}") == tex.count("\\end{table}") == 1
        columns = re.search(r"\\begin\{tabular\}\{([lr]+)\}", tex).group(1)
        header = tex.split("\\toprule\n", 1)[1].split("\n", 1)[0].rstrip(" \\").split(" & ")
        rows = body_rows(tex)
        assert len(rows) == 2 and all(len(row) == len(header) == len(columns) for row in rows)
    psnr = (tables / "table_upscale-x2_psnr_y.tex").read_text()
    assert "& Seeds & White & Black & Avg & STD \\\\" in psnr  # no SER: it is for accuracy
    assert [row[:2] for row in body_rows(psnr)] == [["res\\_net\\%\\&\\#1", "1"], ["resnet50", "2"]]
    accuracy = (tables / "table_verify_accuracy.tex").read_text()
    assert "& Seeds & African & Asian & Caucasian & Indian & Avg & STD & SER \\\\" in accuracy
    assert "\\caption{accuracy (\\%) per race with 95\\% intervals" in accuracy


def test_a_value_and_its_interval_are_those_of_the_csv(tables):
    row = next(r for r in read_csv(tables / "ci_verify.csv")
               if r["minority"] == "African" and r["quantity"] == "African" and r["metric"] == "accuracy")
    value, lo, hi = (float(row[k]) for k in ("value", "lo", "hi"))
    assert value == pytest.approx(100 * 12 / 20)  # pairs 0-7 of 20 wrong
    magnitude = cell_magnitude(value, lo, hi)
    tex = (tables / "table_verify_accuracy.tex").read_text()
    header = tex.split("\\toprule\n", 1)[1].split(" \\\\", 1)[0].split(" & ")
    (under,) = [cells for cells in body_rows(tex) if cells[0] == "African"]
    assert header[:3] == ["minority", "weight", "Seeds"] and under[1:3] == ["0.5", "1"]
    numbers = [format_number(v, magnitude) for v in (value, lo, hi)]
    assert under[header.index("African")] == interval_cell(value, lo, hi, int(row["n_items"]))
    assert re.findall(r"\{([-\d.]+)\}", under[header.index("African")]) == numbers
    ser = next(r for r in read_csv(tables / "ci_verify.csv") if r["minority"] == "African" and r["quantity"] == "ser")
    value, lo, hi = (float(ser[k]) for k in ("value", "lo", "hi"))
    assert re.findall(r"\{([-\d.]+)\}", under[-1])[0] == format_number(value, cell_magnitude(value, lo, hi))


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX install (pdflatex) on this machine")
def test_the_tables_compile_in_a_minimal_document(tables, tmp_path):
    inputs = "\n".join(f"\\input{{{tables / name}}}" for name in sorted(os.listdir(tables)) if name.endswith(".tex"))
    (tmp_path / "paper.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                                        f"{inputs}\n\\end{{document}}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "paper.pdf").read_bytes().startswith(b"%PDF-")
