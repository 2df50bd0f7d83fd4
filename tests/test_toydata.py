"""Synthetic demo datasets: exact on-disk layouts, determinism, planted difficulty, cache, CLI."""
import csv
import functools
import itertools
import math
import os
import re

import numpy as np
import pytest
from PIL import Image

from racecomp import toydata, toyfairface, toyoutput, toyrfw
from racecomp.alignment import ARCFACE_TEMPLATE_112
from racecomp.races import FAIRFACE_RACES, RFW_RACES

ID_PATTERN = re.compile(r"^m\.0[0-9a-z_]+$")


def tree_bytes(root):
    """{relative path: file bytes} of every file under root."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                files[os.path.relpath(path, root)] = handle.read()
    return files


def bicubic_psnr(image):
    """PSNR (dB, 8-bit RGB) of a PIL image against its bicubic 4x down-then-up copy."""
    width, height = image.size
    restored = image.resize((width // 4, height // 4), Image.BICUBIC).resize((width, height), Image.BICUBIC)
    error = np.mean((np.asarray(image, np.float64) - np.asarray(restored, np.float64)) ** 2)
    return 10 * math.log10(255.0 ** 2 / error)


def fairface_rows(root, split):
    with open(os.path.join(root, f"fairface_label_{split}.csv"), newline="") as handle:
        return list(csv.reader(handle))


def psnr_by_race(root):
    """{race: [bicubic PSNR of each image]} over both FairFace splits, in CSV order."""
    scores = {race: [] for race in FAIRFACE_RACES}
    for split in ("train", "val"):
        for name, _, _, race, _ in fairface_rows(root, split)[1:]:
            with Image.open(os.path.join(root, name)) as image:
                scores[race].append(bicubic_psnr(image.convert("RGB")))
    return scores


def rfw_images(root, race):
    """{identity id: [sorted image paths]} of one race of an RFW tree."""
    race_dir = os.path.join(root, "test", "data", race)
    return {identity: sorted(os.path.join(race_dir, identity, name)
                             for name in os.listdir(os.path.join(race_dir, identity)))
            for identity in sorted(os.listdir(race_dir))}


def rfw_image_path(root, race, identity, n):
    return os.path.join(root, "test", "data", race, identity, f"{identity}_{n:04d}.jpg")


def read_lmk(root, race):
    with open(os.path.join(root, "test", "txts", race, f"{race}_lmk.txt")) as handle:
        return [line.rstrip("\n").split("\t") for line in handle]


def read_pairs(root, race):
    with open(os.path.join(root, "test", "txts", race, f"{race}_pairs.txt")) as handle:
        return [line.rstrip("\n").split("\t") for line in handle]


def luma(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), np.float64)


# ---------------------------------------------------------------------------------------------------
# Determinism

def test_fairface_files_do_not_depend_on_the_number_of_processes(tmp_path):
    kwargs = dict(n_train=14, n_val=7, size=32, seed=2)
    one = tree_bytes(toyfairface.make_fairface(tmp_path / "one", workers=1, **kwargs))
    assert tree_bytes(toyfairface.make_fairface(tmp_path / "two", workers=2, **kwargs)) == one
    assert not any(name.endswith(".partial") or name == toyoutput.UNFINISHED_MARKER for name in one)


def test_an_interrupted_fairface_generation_resumes_to_the_same_files(tmp_path, monkeypatch):
    kwargs = dict(n_train=14, n_val=7, size=32, seed=2)
    expected = tree_bytes(toyfairface.make_fairface(tmp_path / "whole", **kwargs))
    render, calls = toyfairface._fairface_image, []

    def render_counted(job, crash_at=None):
        if len(calls) == crash_at:
            raise RuntimeError("killed")
        calls.append(job)
        render(job)

    monkeypatch.setattr(toyfairface, "_fairface_image", functools.partial(render_counted, crash_at=5))
    with pytest.raises(RuntimeError, match="killed"):
        toyfairface.make_fairface(tmp_path / "cut", **kwargs)
    assert not (tmp_path / "cut" / "fairface_label_val.csv").exists()  # visibly unfinished
    with pytest.raises(ValueError, match="not empty"):  # other arguments never mix into it
        toyfairface.make_fairface(tmp_path / "cut", **{**kwargs, "seed": 3})
    calls.clear()
    monkeypatch.setattr(toyfairface, "_fairface_image", render_counted)
    assert tree_bytes(toyfairface.make_fairface(tmp_path / "cut", **kwargs)) == expected
    assert len(calls) == 21 - 5  # the images already written were kept


def test_same_seed_gives_identical_files_and_other_seed_other_images(tmp_path):
    kwargs = dict(n_train=14, n_val=7, size=32)
    first = tree_bytes(toyfairface.make_fairface(tmp_path / "a", seed=3, **kwargs))
    again = tree_bytes(toyfairface.make_fairface(tmp_path / "b", seed=3, **kwargs))
    other = tree_bytes(toyfairface.make_fairface(tmp_path / "c", seed=4, **kwargs))
    assert first == again
    images = [name for name in first if name.endswith(".jpg")]
    assert len(images) == 21 and set(images) == {name for name in other if name.endswith(".jpg")}
    assert all(first[name] != other[name] for name in images)
    # Strength 0 plants nothing: byte-identical to no hard race.
    unplanted = toyfairface.make_fairface(tmp_path / "d", seed=3, hard_race="Black", hard_strength=0.0, **kwargs)
    assert tree_bytes(unplanted) == first

    rfw_kwargs = dict(n_ids=20, images_per_id=2, pairs_per_fold=1, size=24)
    assert tree_bytes(toyrfw.make_rfw(tmp_path / "r1", seed=5, **rfw_kwargs)) == \
        tree_bytes(toyrfw.make_rfw(tmp_path / "r2", seed=5, **rfw_kwargs))
    id_kwargs = dict(n_ids_per_race=2, images_per_id=2, size=24)
    assert tree_bytes(toyrfw.make_identities(tmp_path / "i1", seed=5, **id_kwargs)) == \
        tree_bytes(toyrfw.make_identities(tmp_path / "i2", seed=5, **id_kwargs))
    assert tree_bytes(toyrfw.make_identities(tmp_path / "i3", seed=6, **id_kwargs)) != \
        tree_bytes(toyrfw.make_identities(tmp_path / "i4", seed=5, **id_kwargs))


# ---------------------------------------------------------------------------------------------------
# Layouts

def test_fairface_layout(tmp_path):
    root = toyfairface.make_fairface(tmp_path / "ff", n_train=15, n_val=8, size=40)
    assert sorted(os.listdir(root)) == ["fairface_label_train.csv", "fairface_label_val.csv", "train", "val"]
    with open(os.path.join(root, "fairface_label_train.csv")) as handle:
        assert handle.readline() == "file,age,gender,race,service_test\n"
    for split, count in (("train", 15), ("val", 8)):
        rows = fairface_rows(root, split)
        assert rows[0] == ["file", "age", "gender", "race", "service_test"]
        body = rows[1:]
        assert [row[0] for row in body] == [f"{split}/{i}.jpg" for i in range(1, count + 1)]
        assert sorted(os.listdir(os.path.join(root, split))) == sorted(f"{i}.jpg" for i in range(1, count + 1))
        for name, age, gender, race, service_test in body:
            assert age in toyfairface.FAIRFACE_AGE_BINS and gender in ("Male", "Female")
            assert race in FAIRFACE_RACES and service_test in ("True", "False")
            with Image.open(os.path.join(root, name)) as image:
                assert image.format == "JPEG" and image.mode == "RGB" and image.size == (40, 40)
        counts = [sum(row[3] == race for row in body) for race in FAIRFACE_RACES]
        assert min(counts) >= 1 and max(counts) - min(counts) <= 1  # every race, balanced to one image


def test_rfw_layout_folds_pairs_and_landmarks(tmp_path):
    ppf = 3
    root = toyrfw.make_rfw(tmp_path / "rfw", n_ids=25, images_per_id=3, pairs_per_fold=ppf, size=32)
    assert sorted(os.listdir(os.path.join(root, "test"))) == ["data", "txts"]
    for race in RFW_RACES:
        images = rfw_images(root, race)
        assert len(images) == 25
        for identity, paths in images.items():
            assert ID_PATTERN.match(identity)
            assert [os.path.basename(p) for p in paths] == [f"{identity}_{n:04d}.jpg" for n in (1, 2, 3)]
        assert sorted(os.listdir(os.path.join(root, "test", "txts", race))) == [f"{race}_lmk.txt", f"{race}_pairs.txt"]

        lines = read_pairs(root, race)
        assert len(lines) == toyrfw.RFW_FOLDS * 2 * ppf
        fold_ids = []
        for fold in range(toyrfw.RFW_FOLDS):
            block = lines[fold * 2 * ppf:(fold + 1) * 2 * ppf]
            genuine, impostor = block[:ppf], block[ppf:]
            assert all(len(f) == 3 and f[1] != f[2] for f in genuine)
            assert all(len(f) == 4 and f[0] != f[2] for f in impostor)
            assert len({tuple(f) for f in block}) == len(block)  # no repeated pair
            ids = {f[0] for f in genuine} | {f[0] for f in impostor} | {f[2] for f in impostor}
            fold_ids.append(ids)
            for fields in block:  # every referenced image exists, within this race
                refs = [(fields[0], fields[1]), (fields[0], fields[2])] if len(fields) == 3 else \
                    [(fields[0], fields[1]), (fields[2], fields[3])]
                for identity, n in refs:
                    assert n.isdigit()
                    assert os.path.isfile(rfw_image_path(root, race, identity, int(n)))
        for a, b in itertools.combinations(fold_ids, 2):
            assert not a & b  # no identity shared between folds

        lmk = read_lmk(root, race)
        every_image = sorted(os.path.relpath(p, root).replace(os.sep, "/") for paths in images.values() for p in paths)
        assert sorted(fields[0] for fields in lmk) == every_image
        for fields in lmk:
            assert len(fields) == 12 and fields[1].isdigit()
            points = np.array(fields[2:], dtype=float).reshape(5, 2)
            # Aligned crops: landmarks near the ArcFace template scaled to 32 px (pose jitter only).
            assert np.abs(points - ARCFACE_TEMPLATE_112 * 32 / 112).max() < 8
            assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]  # left/right as seen


@pytest.mark.parametrize("aligned", [True, False])
def test_rfw_landmarks_sit_on_the_drawn_features(tmp_path, aligned):
    # Pupils are drawn darker than the skin; eye landmarks that missed them (wrong transform, swapped
    # x/y, off by the supersampling) would average no darker than the cheek below the eye.
    size = 48 if aligned else 40
    root = toyrfw.make_rfw(tmp_path / "rfw", n_ids=20, images_per_id=2, pairs_per_fold=1, size=size, aligned=aligned)
    at_eye, below_eye = [], []
    for fields in read_lmk(root, "Caucasian"):
        image = luma(os.path.join(root, fields[0]))
        assert image.shape == ((size, size) if aligned else (2 * size, 2 * size))
        points = np.array(fields[2:], dtype=float).reshape(5, 2)
        assert (points >= 0).all() and (points <= image.shape[0] - 1).all()
        eye_distance = np.linalg.norm(points[1] - points[0])
        down = np.array([-(points[1] - points[0])[1], (points[1] - points[0])[0]]) / eye_distance  # face's "down"
        for eye in points[:2]:
            x, y = np.round(eye).astype(int)
            at_eye.append(image[y, x])
            x, y = np.round(eye + 0.6 * eye_distance * down).astype(int)
            below_eye.append(image[y, x])
        if not aligned:
            assert eye_distance == pytest.approx(35.2 * size / 112, rel=0.5)
    assert np.mean(at_eye) < np.mean(below_eye) - 15


def test_identity_folders_are_disjoint_from_rfw_and_overlap_option(tmp_path):
    rfw = toyrfw.make_rfw(tmp_path / "rfw", n_ids=20, images_per_id=2, pairs_per_fold=1, size=24, seed=0)
    rfw_ids = {identity for race in RFW_RACES for identity in rfw_images(rfw, race)}
    for seed in (0, 1):
        root = toyrfw.make_identities(tmp_path / f"ids{seed}", n_ids_per_race=15, images_per_id=2, size=24, seed=seed)
        assert sorted(os.listdir(root)) == sorted(RFW_RACES)
        ids = set()
        for race in RFW_RACES:
            for identity in os.listdir(os.path.join(root, race)):
                assert ID_PATTERN.match(identity)
                names = sorted(os.listdir(os.path.join(root, race, identity)))
                assert names == [f"{identity}_0001.jpg", f"{identity}_0002.jpg"]
                ids.add(identity)
        assert len(ids) == 4 * 15
        assert not ids & rfw_ids

    overlapping = toyrfw.make_identities(tmp_path / "overlap", n_ids_per_race=3, images_per_id=2, size=24,
                                          overlap_with_rfw=rfw)
    shared = [(race, identity) for race in RFW_RACES for identity in os.listdir(os.path.join(overlapping, race))
              if identity in rfw_ids]
    assert len(shared) == 1
    race, identity = shared[0]
    assert identity in {fields[0] for fields in read_pairs(rfw, race)}  # an identity the evaluation uses
    copied = tree_bytes(os.path.join(overlapping, race, identity))
    assert copied == tree_bytes(os.path.join(rfw, "test", "data", race, identity))
    assert sum(len(os.listdir(os.path.join(overlapping, r))) for r in RFW_RACES) == 4 * 3 + 1


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="at least 7"):
        toyfairface.make_fairface(tmp_path / "a", n_train=6, n_val=7, size=32)
    with pytest.raises(ValueError, match="hard_race"):
        toyfairface.make_fairface(tmp_path / "b", n_train=7, n_val=7, size=32, hard_race="Asian")  # RFW label
    with pytest.raises(ValueError, match="distinct pairs"):
        toyrfw.make_rfw(tmp_path / "c", n_ids=20, images_per_id=2, pairs_per_fold=3, size=32)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.txt").write_text("leftover")
    with pytest.raises(ValueError, match="not empty"):
        toyrfw.make_identities(tmp_path / "full", n_ids_per_race=1, images_per_id=1, size=32)


# ---------------------------------------------------------------------------------------------------
# Planted difficulty

def test_fairface_hard_race_is_harder_to_upscale_and_leaves_other_groups_unchanged(tmp_path):
    kwargs = dict(n_train=105, n_val=42, size=64, seed=0)
    plain = toyfairface.make_fairface(tmp_path / "plain", **kwargs)
    hard = toyfairface.make_fairface(tmp_path / "hard", hard_race="Indian", hard_strength=1.0, **kwargs)
    plain_files, hard_files = tree_bytes(plain), tree_bytes(hard)
    races = {row[0]: row[3] for split in ("train", "val") for row in fairface_rows(plain, split)[1:]}
    for name, race in races.items():
        assert (plain_files[name] == hard_files[name]) == (race != "Indian")
    assert plain_files["fairface_label_train.csv"] == hard_files["fairface_label_train.csv"]

    plain_psnr, hard_psnr = psnr_by_race(plain), psnr_by_race(hard)
    drop = np.array(plain_psnr["Indian"]) - np.array(hard_psnr["Indian"])
    assert (drop > 0).all() and drop.mean() > 2.0  # measured (seeds 0-3): 2.7 to 3.0 dB at 64 px
    others = [np.mean(scores) for race, scores in hard_psnr.items() if race != "Indian"]
    assert np.mean(hard_psnr["Indian"]) < min(others) - 1.0  # measured margin (seeds 0-3): 2.1 to 2.7 dB


def identity_separation(root, race, crop=0.15):
    """Within-identity / between-identity RMS pixel distance of one race (central crop, identity means)."""
    images = rfw_images(root, race)
    vectors, labels = [], []
    for label, paths in enumerate(images.values()):
        for path in paths:
            pixels = luma(path)
            c = int(pixels.shape[0] * crop)
            vectors.append(pixels[c:-c, c:-c].ravel())
            labels.append(label)
    vectors, labels = np.array(vectors), np.array(labels)
    means = np.array([vectors[labels == k].mean(axis=0) for k in range(len(images))])
    within = np.sqrt(np.mean(np.sum((vectors - means[labels]) ** 2, axis=1)))
    between = np.sqrt(np.mean([np.sum((means[a] - means[b]) ** 2)
                               for a, b in itertools.combinations(range(len(means)), 2)]))
    return within / between


def test_rfw_hard_race_has_more_within_identity_variation(tmp_path):
    kwargs = dict(n_ids=20, images_per_id=4, pairs_per_fold=2, size=24, seed=0)
    plain = toyrfw.make_rfw(tmp_path / "plain", **kwargs)
    hard = toyrfw.make_rfw(tmp_path / "hard", hard_race="Asian", **kwargs)
    plain_files, hard_files = tree_bytes(plain), tree_bytes(hard)
    for name in plain_files:
        if "Asian" not in name:
            assert plain_files[name] == hard_files[name]

    plain_ratio = {race: identity_separation(plain, race) for race in RFW_RACES}
    hard_ratio = {race: identity_separation(hard, race) for race in RFW_RACES}
    # Measured (seeds 0-3): unplanted spread over groups 0.05-0.14; planting raises the group's ratio
    # by 0.24-0.47, which leaves it above every other group by 0.10-0.52.
    assert max(plain_ratio.values()) - min(plain_ratio.values()) < 0.25
    assert hard_ratio["Asian"] > plain_ratio["Asian"] + 0.15
    assert hard_ratio["Asian"] > max(ratio for race, ratio in hard_ratio.items() if race != "Asian") + 0.05


# ---------------------------------------------------------------------------------------------------
# Cache and command line

def test_ensure_demo_data_generates_once_and_says_it_is_synthetic(tmp_path, monkeypatch, capsys):
    calls = []
    original = toyfairface.make_fairface

    @functools.wraps(original)
    def counting(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setitem(toydata._MAKERS, "fairface", counting)
    monkeypatch.setenv("RACECOMP_CACHE", str(tmp_path / "cache"))
    first = toydata.ensure_demo_data("fairface", n_train=7, n_val=7, size=32)
    notice = capsys.readouterr().out
    assert "synthetic" in notice and "not real people" in notice and first in notice
    assert os.path.dirname(first) == str(tmp_path / "cache") and os.path.basename(first).startswith("fairface-")
    marker = os.path.join(first, "fairface_label_train.csv")
    stamp = os.stat(marker).st_mtime_ns

    again = toydata.ensure_demo_data("fairface", n_train=7, n_val=7, size=32, seed=0)  # seed=0 is the default
    assert again == first and len(calls) == 1 and os.stat(marker).st_mtime_ns == stamp
    assert "not real people" in capsys.readouterr().out
    other = toydata.ensure_demo_data("fairface", n_train=7, n_val=7, size=32, seed=1)
    assert other != first and len(calls) == 2
    assert sorted(os.listdir(tmp_path / "cache")) == sorted([os.path.basename(first), os.path.basename(other)])


def test_ensure_demo_data_leaves_nothing_behind_when_generation_fails(tmp_path, monkeypatch):
    def failing(out_dir, size=32):
        os.makedirs(os.path.join(out_dir, "train"))
        raise RuntimeError("disk full")

    monkeypatch.setitem(toydata._MAKERS, "fairface", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        toydata.ensure_demo_data("fairface", cache_dir=str(tmp_path))
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="unknown demo data kind"):
        toydata.ensure_demo_data("lfw", cache_dir=str(tmp_path))


def test_cli_writes_each_kind(tmp_path, capsys):
    parser = toydata.get_args_parser()
    root = toydata.main(parser.parse_args(["fairface", "--out", str(tmp_path / "ff"), "--size", "32", "--count", "20",
                                           "--hard-race", "east_asian", "--hard-strength", "0.5"]))
    out = capsys.readouterr().out
    assert "20 train + 8 val" in out and "not real people" in out
    assert len(fairface_rows(root, "train")) == 21 and len(fairface_rows(root, "val")) == 9

    root = toydata.main(parser.parse_args(["rfw", "--out", str(tmp_path / "rfw"), "--size", "24", "--count", "20"]))
    assert all(len(rfw_images(root, race)) == 20 for race in RFW_RACES)
    assert len(read_pairs(root, "African")) == 10 * 2 * 10

    root = toydata.main(parser.parse_args(["identities", "--out", str(tmp_path / "ids"), "--size", "24", "--count", "2",
                                           "--seed", "3"]))
    assert all(len(os.listdir(os.path.join(root, race))) == 2 for race in RFW_RACES)
    assert "identity-folder layout" in capsys.readouterr().out

    with pytest.raises(ValueError, match="unknown race"):
        toydata.main(parser.parse_args(["rfw", "--out", str(tmp_path / "x"), "--hard-race", "east_asian"]))
    for flags, message in ((["--workers", "0"], "--workers 0: must be at least 1"),
                           (["--val-count", "3"], "--val-count 3: need at least 7")):
        with pytest.raises(ValueError, match=message):
            toydata.main(parser.parse_args(["fairface", "--out", str(tmp_path / "y"), *flags]))
    with pytest.raises(ValueError, match="apply to fairface only"):
        toydata.main(parser.parse_args(["rfw", "--out", str(tmp_path / "y"), "--workers", "2"]))
    assert not (tmp_path / "y").exists()  # refused before anything is written
