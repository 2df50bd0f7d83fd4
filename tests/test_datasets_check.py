"""`python -m racecomp.datasets check` on tiny demo trees: clean trees pass with size warnings, each kind of damage
is reported naming its file, and the exit code says whether any dataset has problems."""
import glob
import itertools
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from racecomp.datasets import check
from racecomp.datasets.__main__ import get_args_parser, main
from racecomp.datasets.rfw import read_rfw_pairs, rfw_image_path
from racecomp.toyfairface import make_fairface
from racecomp.toyrfw import make_identities, make_rfw

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """Tiny demo trees, made once; tests damage copies (see `trees`)."""
    base = tmp_path_factory.mktemp("pristine")
    return {"fairface": make_fairface(str(base / "fairface"), n_train=7, n_val=7, size=32),
            # 2 identities per fold, 2 images each: the smallest RFW tree with 1 genuine + 1 impostor per fold.
            "rfw": make_rfw(str(base / "rfw"), n_ids=20, images_per_id=2, pairs_per_fold=1, size=32),
            "identities": make_identities(str(base / "identities"), n_ids_per_race=2, images_per_id=2, size=32)}


@pytest.fixture
def trees(pristine, tmp_path):
    return {kind: shutil.copytree(root, str(tmp_path / kind)) for kind, root in pristine.items()}


def run_check(capsys, *argv):
    code = main(get_args_parser().parse_args(["check", *argv]))
    return code, capsys.readouterr().out


def texts(report, level):
    return [text for line_level, text in report.lines if line_level == level]


def write_jpeg(path, width, height):
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


def truncate(path):
    """Cut a JPEG inside its compressed data: the header (up to the start-of-scan marker) stays readable."""
    with open(path, "rb") as handle:
        data = handle.read()
    cut = data.index(b"\xff\xda") + 40
    assert cut < len(data) - 100
    with open(path, "wb") as handle:
        handle.write(data[:cut])


def test_clean_trees_pass_with_size_warnings(trees, capsys):
    code, out = run_check(capsys, "--fairface", trees["fairface"], "--rfw", trees["rfw"],
                          "--identities", trees["identities"], "--workers", "1")
    assert code == 0
    assert "WARNING: train images: expected 86,744 (published size), found 7" in out
    assert "WARNING: val images: expected 10,954 (published size), found 7" in out
    assert "WARNING: African pairs: expected 6,000 (published size), found 20" in out
    assert "African: 20 pairs in 10 folds of 1 genuine + 1 impostor" in out
    assert "WARNING: Indian identities (BUPT-Balancedface): expected 7,000 (published size), found 2" in out
    assert "WARNING: image size: expected 224x224 (published size), found 32x32" in out
    assert "image sizes (width x height): 32x32: 14" in out
    assert "PROBLEM" not in out
    verdicts = out.split("== verdict\n")[1].splitlines()
    assert verdicts == [f"FairFace ({trees['fairface']}): OK with warnings (3)",
                        f"RFW ({trees['rfw']}): OK with warnings (4)",
                        f"identity folders ({trees['identities']}): OK with warnings (4)"]


def test_deleted_image_is_a_problem_naming_it_and_the_other_split_is_still_checked(trees):
    missing = os.path.join(trees["fairface"], "train", "3.jpg")
    os.remove(missing)
    report = check.check_fairface(trees["fairface"], workers=1)
    assert report.verdict == "PROBLEMS (1)"
    assert missing in texts(report, "problem")[0] and "not found" in texts(report, "problem")[0]
    assert any(text.startswith("train: 6 files in") for text in texts(report, "info"))
    assert any(text.startswith("val images per race") for text in texts(report, "info"))


def test_misspelled_race_label_names_file_and_line(trees):
    csv_path = os.path.join(trees["fairface"], "fairface_label_val.csv")
    with open(csv_path) as handle:
        lines = handle.read().splitlines()
    line = next(i for i, text in enumerate(lines) if ",Latino_Hispanic," in text)
    lines[line] = lines[line].replace("Latino_Hispanic", "Latino Hispanic")
    with open(csv_path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    report = check.check_fairface(trees["fairface"], workers=1)
    [problem] = texts(report, "problem")
    assert f"{csv_path}:{line + 1}: unknown race label 'Latino Hispanic'" in problem


def test_odd_size_image_is_reported(trees):
    odd = os.path.join(trees["fairface"], "val", "2.jpg")
    write_jpeg(odd, 40, 32)
    report = check.check_fairface(trees["fairface"], workers=1)
    assert report.problems == 0
    assert f"{odd}: 40x32, unlike the most common 32x32" in texts(report, "warning")
    assert "image sizes (width x height): 32x32: 13, 40x32: 1" in texts(report, "info")


def test_odd_size_is_information_where_images_are_resized(trees):
    odd = min(glob.glob(os.path.join(trees["identities"], "Asian", "*", "*.jpg")))
    write_jpeg(odd, 40, 32)
    report = check.check_identities(trees["identities"], workers=1)
    assert report.verdict == "OK with warnings (4)"  # the 4 published-size warnings only
    assert f"{odd}: 40x32, unlike the most common 32x32" in texts(report, "info")


def test_truncated_jpeg_warned_from_headers_and_found_by_decode(trees):
    bad = os.path.join(trees["fairface"], "train", "5.jpg")
    truncate(bad)
    headers_only = check.check_fairface(trees["fairface"], workers=1)
    assert headers_only.problems == 0
    assert any(bad in text and "end marker" in text for text in texts(headers_only, "warning"))
    decoded = check.check_fairface(trees["fairface"], decode=True, workers=1)
    [problem] = texts(decoded, "problem")
    assert "train/5.jpg (CSV line" in problem and "cannot decode image" in problem and bad in problem


def test_corrupt_images_in_parallel_decode(trees):
    """160 images: the decode runs in a process pool; a non-image file fails already at its header."""
    first = read_rfw_pairs(trees["rfw"], "Asian")[0]  # a genuine pair: two images of one identity
    truncated, garbage = (rfw_image_path(trees["rfw"], "Asian", first.id1, n) for n in (first.n1, first.n2))
    truncate(truncated)
    with open(garbage, "wb") as handle:
        handle.write(b"<html>not found</html>")
    report = check.check_rfw(trees["rfw"], decode=True, workers=2)
    problems = texts(report, "problem")
    assert len(problems) == 2
    assert any(garbage in text and "cannot read the image header" in text for text in problems)
    assert any(truncated in text and "cannot decode image" in text for text in problems)


def test_pool_keeps_order_and_prints_progress_lines(trees, capsys, monkeypatch):
    paths = sorted(glob.glob(os.path.join(trees["rfw"], "test", "data", "*", "*", "*.jpg")))  # 160 images
    # A clock that advances 2 s per reading, so every 5% step prints a line (itertools.count: thread-safe).
    monkeypatch.setattr(check.time, "monotonic", itertools.count(0, 2).__next__)
    results, _ = check._parallel(check._read_headers, paths, 2, 8, "headers", every_fraction=0.05)
    assert results == check._read_headers(paths)
    progress = capsys.readouterr().out.splitlines()
    assert len(progress) == 20
    assert all(re.fullmatch(r"  headers: [\d,]+/160 images, [\d,]+/s, ETA [\d,]+ s", line) for line in progress)


def test_rfw_deleted_pairs_line_breaks_the_folds(trees):
    pairs_path = os.path.join(trees["rfw"], "test", "txts", "Caucasian", "Caucasian_pairs.txt")
    with open(pairs_path) as handle:
        lines = handle.readlines()
    with open(pairs_path, "w") as handle:
        handle.writelines(lines[:5] + lines[6:])
    report = check.check_rfw(trees["rfw"], workers=1)
    [problem] = texts(report, "problem")
    assert problem.startswith(f"Caucasian: {pairs_path}: 19 lines, expected a positive multiple of 10")
    assert any(text.startswith("Indian: 20 pairs") for text in texts(report, "info"))  # later races still checked


def test_rfw_missing_landmarks_only_warn(trees):
    os.remove(os.path.join(trees["rfw"], "test", "txts", "African", "African_lmk.txt"))
    report = check.check_rfw(trees["rfw"], workers=1)
    assert report.problems == 0
    assert any("African_lmk.txt" in text and "--align" in text for text in texts(report, "warning"))


def test_identities_missing_race_and_archive_warn(trees, capsys):
    shutil.rmtree(os.path.join(trees["identities"], "Indian"))
    open(os.path.join(trees["identities"], "Indian.tar.gz"), "wb").close()
    code, out = run_check(capsys, "--identities", trees["identities"], "--workers", "1")
    assert code == 0
    assert "WARNING: identities: none of race Indian" in out
    assert "Indian.tar.gz: a file, not a race folder (archive not extracted?)" in out


def test_identities_misspelled_race_folder(trees):
    os.rename(os.path.join(trees["identities"], "Asian"), os.path.join(trees["identities"], "asian"))
    report = check.check_identities(trees["identities"], workers=1)
    [problem] = texts(report, "problem")
    assert "asian: unknown race label 'asian'" in problem and "identity-folder layout" in problem


def test_missing_roots_and_files_name_the_expected_layout(tmp_path):
    missing = check.check_fairface(str(tmp_path / "nowhere"), workers=1)
    assert texts(missing, "problem") == [f"{tmp_path / 'nowhere'}: not found ({check.FAIRFACE_LAYOUT})"]
    no_csv = check.check_fairface(str(tmp_path), workers=1)
    assert f"{tmp_path / 'fairface_label_train.csv'}: not found ({check.FAIRFACE_LAYOUT})" in texts(no_csv, "problem")
    rfw = check.check_rfw(str(tmp_path), workers=1)
    assert texts(rfw, "problem") == [f"{tmp_path / 'test' / 'txts'}: not found ({check.RFW_LAYOUT})"]


def test_report_lists_at_most_listed_and_counts_the_rest():
    report = check.Report("x", "/x")
    report.add_listed("problem", [f"file {i}" for i in range(check.LISTED + 5)])
    assert report.problems == check.LISTED + 5 and report.verdict == f"PROBLEMS ({check.LISTED + 5})"
    assert report.lines[-1] == ("problem", "... and 5 more like this")


def test_usage_errors(capsys):
    assert main(get_args_parser().parse_args(["check"])) == 2
    assert main(get_args_parser().parse_args(["check", "--rfw", "/x", "--workers", "0"])) == 2


@pytest.mark.parametrize("flag", ["--fair", "--ident", "--dec"])
def test_abbreviated_flags_are_refused(flag, capsys):
    """Exact flag names only, as in every other command of the project ('--fair' is not --fairface)."""
    with pytest.raises(SystemExit) as error:
        get_args_parser().parse_args(["check", flag, "/x"])
    assert error.value.code == 2 and f"unrecognized arguments: {flag}" in capsys.readouterr().err


def test_command_exit_code_without_traceback(trees):
    os.remove(os.path.join(trees["fairface"], "fairface_label_train.csv"))
    result = subprocess.run([sys.executable, "-m", "racecomp.datasets", "check", "--fairface", trees["fairface"],
                             "--identities", trees["identities"], "--workers", "1"],
                            check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    train_csv = os.path.join(trees["fairface"], "fairface_label_train.csv")
    assert f"PROBLEM: {train_csv}: not found (FairFace layout: fairface_label_{{train,val}}.csv, train/, val/)" \
        in result.stdout
    assert result.stdout.rstrip().endswith(f"identity folders ({trees['identities']}): OK with warnings (4)")
    assert f"FairFace ({trees['fairface']}): PROBLEMS (1)" in result.stdout
