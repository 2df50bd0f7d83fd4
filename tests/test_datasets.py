"""Data layer readers on tiny files written into tmp_path: every error names its file and line."""
import csv
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from racecomp import datasets
from racecomp.datasets import (ARCFACE_TEMPLATE_112, FaceImages, FaceRecord, FairFaceSR, MinoritySampler, Pair,
                               align_face, check_identity_overlap, downscale_bicubic, drop_unreadable,
                               read_fairface, read_identity_folders, read_rfw, read_rfw_landmarks,
                               read_rfw_pairs, rfw_image_path, similarity_transform, split_dev)
from racecomp.races import FAIRFACE_RACES

HEADER = ["file", "age", "gender", "race", "service_test"]


def write_jpeg(path, size=32, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


def write_fairface(root, split="train", rows=None, header=HEADER, size=32):
    """FairFace CSV + JPEGs; rows are lists of CSV fields (default: one row per race). Returns the CSV path."""
    if rows is None:
        rows = [[f"{split}/{i + 1}.jpg", "20-29", "Male" if i % 2 else "Female", race, "True"]
                for i, race in enumerate(FAIRFACE_RACES)]
    for i, row in enumerate(rows):
        name = row[0]
        if name and not os.path.isabs(name) and ".." not in name:
            write_jpeg(os.path.join(root, name), size=size, seed=i)
    csv_path = os.path.join(root, f"fairface_label_{split}.csv")
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return csv_path


def row(i, race="White", gender="Male", age="20-29"):
    return [f"train/{i}.jpg", age, gender, race, "False"]


def fake_records(counts):
    """FaceRecords without files, `counts` = {race: n}, races interleaved in file order."""
    races = [race for race, n in counts.items() for _ in range(n)]
    races = [races[i] for i in np.random.default_rng(0).permutation(len(races))]
    return [FaceRecord(file=f"train/{i + 1}.jpg", path=f"/nowhere/{i + 1}.jpg", race=race, gender="Male",
                       age="20-29", line=i + 2) for i, race in enumerate(races)]


# ---------------------------------------------------------------------------------------------- FairFace reader

def test_read_fairface_reads_rows_in_order(tmp_path):
    write_fairface(tmp_path, "val")
    records = read_fairface(str(tmp_path), "val")
    assert [r.race for r in records] == list(FAIRFACE_RACES)
    assert records[2] == FaceRecord(file="val/3.jpg", path=os.path.join(str(tmp_path), "val/3.jpg"),
                                    race="Latino_Hispanic", gender="Female", age="20-29", line=4)


def test_read_fairface_missing_csv(tmp_path):
    with pytest.raises(FileNotFoundError, match="fairface_label_train.csv"):
        read_fairface(str(tmp_path), "train")


def test_read_fairface_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="unknown FairFace split 'test'"):
        read_fairface(str(tmp_path), "test")


def test_read_fairface_missing_column(tmp_path):
    write_fairface(tmp_path, rows=[["train/1.jpg", "20-29", "Male", "True"]],
                   header=["file", "age", "gender", "service_test"])
    with pytest.raises(ValueError, match=r"fairface_label_train\.csv:1: missing column\(s\) \['race'\]"):
        read_fairface(str(tmp_path), "train")


@pytest.mark.parametrize("bad_row, message", [
    (row(3, race="Latino Hispanic"), "unknown race label 'Latino Hispanic'"),
    (row(3, race="white"), "unknown race label 'white'"),
    (row(3, gender="male"), "unknown gender 'male'"),
    (row(3, age="70+"), "unknown age bin '70\\+'"),
    (["train/3.jpg", "20-29", "Male", "White"], "expected 5 fields"),
    (["train/3.jpg", "20-29", "Male", "White", "True", "extra"], "expected 5 fields"),
    (["../outside.jpg", "20-29", "Male", "White", "True"], "must be a relative path inside the data root"),
    (["train/../../outside.jpg", "20-29", "Male", "White", "True"], "must be a relative path inside"),
    (["/etc/passwd", "20-29", "Male", "White", "True"], "must be a relative path inside the data root"),
    (row(1), "already listed at line 2"),
])
def test_read_fairface_bad_row_names_file_and_line(tmp_path, bad_row, message):
    write_fairface(tmp_path, rows=[row(1), row(2), bad_row])
    with pytest.raises(ValueError, match=r"fairface_label_train\.csv:4: .*" + message):
        read_fairface(str(tmp_path), "train")


def test_read_fairface_missing_image(tmp_path):
    write_fairface(tmp_path, rows=[row(1), row(2)])
    os.remove(tmp_path / "train" / "2.jpg")
    with pytest.raises(FileNotFoundError, match=r"fairface_label_train\.csv:3: image .*2\.jpg not found"):
        read_fairface(str(tmp_path), "train")


def test_read_fairface_empty(tmp_path):
    write_fairface(tmp_path, rows=[])
    with pytest.raises(ValueError, match="no data rows"):
        read_fairface(str(tmp_path), "train")


# ---------------------------------------------------------------------------------------------- dev split

def test_split_dev_stratified_deterministic_disjoint():
    counts = {race: 10 + 7 * i for i, race in enumerate(FAIRFACE_RACES)}
    counts["Middle Eastern"] = 2
    records = fake_records(counts)
    train, dev = split_dev(records, 0.1, seed=3)
    assert split_dev(records, 0.1, seed=3) == (train, dev)
    assert split_dev(records, 0.1, seed=4)[1] != dev
    assert not set(train) & set(dev) and len(train) + len(dev) == len(records)
    assert train == [r for r in records if r in set(train)]  # input order kept
    for race, n in counts.items():
        expected = min(max(math.floor(0.1 * n + 0.5), 1), n - 1)
        assert sum(r.race == race for r in dev) == expected, race
    assert {r.race for r in dev} == set(FAIRFACE_RACES)


def test_split_dev_single_image_race_stays_in_train():
    records = fake_records({"White": 20, "Black": 1})
    train, dev = split_dev(records, 0.5, seed=0)
    assert [r.race for r in train].count("Black") == 1 and len(dev) == 10


def test_split_dev_race_split_independent_of_other_races():
    records = fake_records({"White": 30, "Black": 30})
    whites = [r for r in records if r.race == "White"]
    dev_whites = [r for r in split_dev(records, 0.2, seed=1)[1] if r.race == "White"]
    assert dev_whites == split_dev(whites, 0.2, seed=1)[1]


def test_split_dev_bad_fraction():
    with pytest.raises(ValueError, match="dev_fraction must be in"):
        split_dev(fake_records({"White": 4}), 1.0, seed=0)


# ---------------------------------------------------------------------------------------------- minority sampler

BALANCED = {race: 100 for race in FAIRFACE_RACES}


@pytest.mark.parametrize("weight", [0, 1.5, -0.2])
def test_sampler_weight_out_of_range(weight):
    with pytest.raises(ValueError, match=r"weight must be in \(0, 1\]"):
        MinoritySampler(fake_records(BALANCED), "Black", weight)


def test_sampler_rejects_misspelled_minority_and_mode():
    with pytest.raises(ValueError, match="unknown race label 'Latino Hispanic'"):
        MinoritySampler(fake_records(BALANCED), "Latino Hispanic", 0.5)
    with pytest.raises(ValueError, match="unknown sampler mode"):
        MinoritySampler(fake_records(BALANCED), "Black", 0.5, mode="drop")
    with pytest.raises(ValueError, match="has no training images"):
        MinoritySampler(fake_records({"White": 5}), "Black", 0.5)


@pytest.mark.parametrize("weight, kept", [(1.0, 100), (0.2, 20), (0.05, 5), (0.013, 1), (0.001, 1)])
def test_subsample_keeps_round_w_n_of_minority_and_all_others(weight, kept):
    records = fake_records(BALANCED)
    sampler = MinoritySampler(records, "Indian", weight, seed=7)
    pool_races = [records[i].race for i in sampler.pool]
    assert pool_races.count("Indian") == kept
    assert all(pool_races.count(race) == 100 for race in FAIRFACE_RACES if race != "Indian")
    counts = sampler.realized_counts()
    assert counts["Indian"]["available"] == kept and counts["White"]["available"] == 100
    assert sum(c["expected_per_epoch"] for c in counts.values()) == pytest.approx(len(records))
    assert counts["Indian"]["expected_per_epoch"] == pytest.approx(len(records) * kept / (600 + kept))


def test_subsample_pool_fixed_for_run_and_epoch_is_concatenated_permutations():
    records = fake_records(BALANCED)
    sampler = MinoritySampler(records, "Black", 0.1, seed=1)
    pool = sampler.pool.tolist()
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == 700
        assert sorted(order[:len(pool)]) == pool  # first block is one permutation of the pool
        assert set(order) <= set(pool)
    assert MinoritySampler(records, "Black", 0.1, seed=1).pool.tolist() == pool
    assert MinoritySampler(records, "Black", 0.1, seed=2).pool.tolist() != pool


def test_sampler_deterministic_given_seed_and_epoch():
    records = fake_records(BALANCED)
    for mode in ("subsample", "reweight"):
        first, second = MinoritySampler(records, "Black", 0.3, mode, seed=5), \
            MinoritySampler(records, "Black", 0.3, mode, seed=5)
        first.set_epoch(2)
        second.set_epoch(2)
        assert list(first) == list(second)
        second.set_epoch(3)
        assert list(first) != list(second)


@pytest.mark.parametrize("mode", ["subsample", "reweight"])
def test_equal_compute_epoch_length_independent_of_weight(mode):
    records = fake_records(BALANCED)
    lengths = {len(list(MinoritySampler(records, "East Asian", w, mode))) for w in (1.0, 0.2, 0.05)}
    assert lengths == {700}
    sampler = MinoritySampler(records, "East Asian", 0.05, mode, num_samples=333)
    assert len(sampler) == 333 and len(list(sampler)) == 333


def test_reweight_draws_minority_at_w_relative_rate():
    records = fake_records(BALANCED)
    draws = 21000
    sampler = MinoritySampler(records, "Black", 0.2, mode="reweight", seed=11, num_samples=draws)
    assert len(sampler.pool) == 700  # nothing dropped
    rate = 0.2 * 100 / (0.2 * 100 + 600)
    count = sum(records[i].race == "Black" for i in sampler)
    std = math.sqrt(draws * rate * (1 - rate))
    assert abs(count - draws * rate) < 4 * std  # uniform drawing would give 3000, ~95 std away
    assert sampler.realized_counts()["Black"] == {"available": 100, "expected_per_epoch": pytest.approx(draws * rate)}


def test_balanced_run_draws_uniformly_without_replacement():
    records = fake_records({"White": 30, "Black": 10})
    sampler = MinoritySampler(records, None, 1.0, seed=0)
    assert sorted(sampler) == list(range(40))
    assert sampler.realized_counts() == {"White": {"available": 30, "expected_per_epoch": pytest.approx(30.0)},
                                         "Black": {"available": 10, "expected_per_epoch": pytest.approx(10.0)}}


@pytest.mark.parametrize("mode, num_samples", [("subsample", 700), ("reweight", 700), ("subsample", 701)])
def test_two_ranks_disjoint_slices_of_the_single_process_epoch(mode, num_samples):
    records = fake_records(BALANCED)
    single = MinoritySampler(records, "Indian", 0.2, mode, seed=3, num_samples=num_samples)
    ranks = [MinoritySampler(records, "Indian", 0.2, mode, seed=3, num_samples=num_samples, num_replicas=2, rank=r)
             for r in (0, 1)]
    for sampler in [single] + ranks:
        sampler.set_epoch(4)
    epoch = list(single)
    slices = [list(sampler) for sampler in ranks]
    assert len(slices[0]) == len(slices[1]) == math.ceil(num_samples / 2)
    interleaved = [index for both in zip(*slices) for index in both]  # positions r, r + 2, ...: disjoint
    assert interleaved[:num_samples] == epoch
    assert interleaved[num_samples:] == epoch[:len(interleaved) - num_samples]  # padding wraps around


def test_sampler_rank_checked():
    with pytest.raises(ValueError, match="rank"):
        MinoritySampler(fake_records(BALANCED), None, 1.0, num_replicas=2, rank=2)


# ---------------------------------------------------------------------------------------------- bicubic downscale

def random_image(size=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_downscale_matches_pil_bicubic(scale):
    pixels = random_image(48)
    lr = downscale_bicubic(torch.from_numpy(pixels).permute(2, 0, 1), scale)
    assert torch.allclose(lr * 255, (lr * 255).round(), atol=1e-4)  # on the uint8 grid
    ours = (lr * 255).round().permute(1, 2, 0).numpy()
    small = (48 // scale, 48 // scale)
    pil_uint8 = np.asarray(Image.fromarray(pixels).resize(small, Image.BICUBIC)).astype(np.float64)
    assert np.abs(ours - pil_uint8).max() <= 1  # PIL rounds to uint8 between its two passes
    # PIL in float mode has no intermediate rounding: then the kernels agree exactly.
    pil_float = np.stack([np.asarray(Image.fromarray(pixels[..., c].astype(np.float32), "F")
                                     .resize(small, Image.BICUBIC)) for c in range(3)], axis=-1)
    assert np.array_equal(ours, np.clip(np.round(pil_float), 0, 255))


def test_downscale_shapes_dtypes_and_constant_image():
    batch = torch.from_numpy(np.stack([random_image(32, s) for s in range(2)])).permute(0, 3, 1, 2)
    lr = downscale_bicubic(batch, 4)
    assert lr.shape == (2, 3, 8, 8) and lr.dtype == torch.float32
    assert torch.equal(downscale_bicubic(batch[1], 4), lr[1])
    assert torch.equal(downscale_bicubic(batch.float() / 255, 4), lr)
    constant = torch.full((3, 16, 16), 100, dtype=torch.uint8)
    assert torch.allclose(downscale_bicubic(constant, 2), torch.full((3, 8, 8), 100 / 255))


def test_downscale_rejects_non_divisible_size_and_bad_shape():
    with pytest.raises(ValueError, match="30x32 is not divisible by scale 4"):
        downscale_bicubic(torch.zeros(3, 30, 32), 4)
    with pytest.raises(ValueError, match="must be"):
        downscale_bicubic(torch.zeros(1, 32, 32), 2)


# ---------------------------------------------------------------------------------------------- FairFaceSR

def test_fairface_sr_item(tmp_path):
    write_fairface(tmp_path)
    records = read_fairface(str(tmp_path), "train")
    item = FairFaceSR(records, scale=4)[1]
    decoded = torch.from_numpy(np.asarray(Image.open(records[1].path).convert("RGB")).copy()).permute(2, 0, 1)
    assert torch.equal(item["hr"], decoded.float() / 255)
    assert torch.equal(item["lr"], downscale_bicubic(decoded, 4))
    assert (item["race"], item["gender"], item["file"], item["index"]) == ("Black", "Male", "train/2.jpg", 1)
    resized = FairFaceSR(records, scale=4, hr_size=16)[0]
    assert resized["hr"].shape == (3, 16, 16) and resized["lr"].shape == (3, 4, 4)
    with pytest.raises(ValueError, match="hr_size 18 is not divisible by scale 4"):
        FairFaceSR(records, scale=4, hr_size=18)


def test_fairface_sr_flip_only_in_train_mode(tmp_path):
    write_fairface(tmp_path)
    records = read_fairface(str(tmp_path), "train")
    reference = FairFaceSR(records, scale=2)[0]
    torch.manual_seed(0)
    evaluation = FairFaceSR(records, scale=2, train=False)
    assert all(torch.equal(evaluation[0]["hr"], reference["hr"]) for _ in range(8))
    training = FairFaceSR(records, scale=2, train=True)
    flipped = 0
    for _ in range(20):
        item = training[0]
        is_flipped = torch.equal(item["hr"], reference["hr"].flip(-1))
        assert is_flipped or torch.equal(item["hr"], reference["hr"])
        assert torch.equal(item["lr"], downscale_bicubic(item["hr"], 2))  # lr made after the flip
        flipped += is_flipped
    assert 0 < flipped < 20


def test_corrupt_image_named_and_skippable(tmp_path):
    write_fairface(tmp_path, rows=[row(1), row(2), row(3)])
    (tmp_path / "train" / "2.jpg").write_bytes(b"not a jpeg")
    records = read_fairface(str(tmp_path), "train")  # read time only checks existence
    with pytest.raises(ValueError, match=r"train/2\.jpg \(CSV line 3\): cannot decode image"):
        FairFaceSR(records, scale=2)[1]
    good, bad = drop_unreadable(records)
    assert [r.file for r in good] == ["train/1.jpg", "train/3.jpg"] and [r.file for r in bad] == ["train/2.jpg"]


# ---------------------------------------------------------------------------------------------- RFW pairs

def write_rfw_pairs(root, race, lines, make_images=True):
    """Pairs file with `lines` (lists of fields) and an 8 px JPEG for every image it names. Returns its path."""
    directory = os.path.join(root, "test", "txts", race)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{race}_pairs.txt")
    with open(path, "w") as handle:
        handle.write("".join("\t".join(fields) + "\n" for fields in lines))
    if make_images:
        for fields in lines:
            named = [(fields[0], fields[1]), (fields[0], fields[2])] if len(fields) == 3 else \
                [(fields[0], fields[1]), (fields[2], fields[3])] if len(fields) == 4 else []
            for identity, n in named:
                if n.isdigit():
                    write_jpeg(rfw_image_path(root, race, identity, int(n)), size=8)
    return path


def fold_lines(folds=10, half=2, prefix="m.0a"):
    """RFW-structured lines: per fold `half` genuine then `half` impostor pairs."""
    lines = []
    for fold in range(folds):
        lines += [[f"{prefix}{fold}g{k}", "1", str(k + 2)] for k in range(half)]
        lines += [[f"{prefix}{fold}i{k}", "1", f"{prefix}{fold}j{k}", str(k + 3)] for k in range(half)]
    return lines


def test_rfw_image_path_zero_pads():
    assert rfw_image_path("/r", "African", "m.0c7mh2", 3) == "/r/test/data/African/m.0c7mh2/m.0c7mh2_0003.jpg"


def test_read_rfw_pairs_folds_and_labels(tmp_path):
    write_rfw_pairs(str(tmp_path), "Asian", fold_lines())
    pairs = read_rfw_pairs(str(tmp_path), "Asian")
    assert len(pairs) == 40
    assert [p.fold for p in pairs] == [line // 4 for line in range(40)]
    assert [p.label for p in pairs[:8]] == [1, 1, 0, 0, 1, 1, 0, 0]
    assert pairs[5] == Pair(race="Asian", fold=1, line=6, id1="m.0a1g1", n1=1, id2="m.0a1g1", n2=3, label=1)
    assert pairs[7] == Pair(race="Asian", fold=1, line=8, id1="m.0a1i1", n1=1, id2="m.0a1j1", n2=4, label=0)


@pytest.mark.parametrize("line_index, fields, message", [
    (2, ["m.0x", "1", "2"], "expected an impostor pair \\(4 fields\\) at position 3 of fold 1, got 3 fields"),
    (1, ["m.0x", "1", "m.0y", "2"], "expected a genuine pair \\(3 fields\\) at position 2 of fold 1"),
    (3, ["m.0x", "1", "m.0y", "2", "7"], "expected 3 \\(genuine\\) or 4 \\(impostor\\)"),
    (3, ["m.0x", "1", "m.0y"], "expected an impostor pair"),
    (0, ["m.0x", "1", "two"], "image number 'two' is not a non-negative integer"),
    (2, ["m.0x", "1.0", "m.0y", "2"], "image number '1.0'"),
])
def test_read_rfw_pairs_malformed_line(tmp_path, line_index, fields, message):
    lines = fold_lines()
    lines[line_index] = fields
    write_rfw_pairs(str(tmp_path), "Indian", lines)
    with pytest.raises(ValueError, match=rf"Indian_pairs\.txt:{line_index + 1}: {message}"):
        read_rfw_pairs(str(tmp_path), "Indian")


def test_read_rfw_pairs_line_count_not_multiple_of_10(tmp_path):
    write_rfw_pairs(str(tmp_path), "African", fold_lines()[:-1])
    with pytest.raises(ValueError, match=r"African_pairs\.txt: 39 lines, expected a positive multiple of 10"):
        read_rfw_pairs(str(tmp_path), "African")


def test_read_rfw_pairs_missing_image(tmp_path):
    write_rfw_pairs(str(tmp_path), "African", fold_lines())
    os.remove(rfw_image_path(str(tmp_path), "African", "m.0a2j1", 4))
    with pytest.raises(FileNotFoundError, match=r"African_pairs\.txt:12: image .*m\.0a2j1_0004\.jpg not found"):
        read_rfw_pairs(str(tmp_path), "African")


def test_read_rfw_missing_file_and_bad_race(tmp_path):
    with pytest.raises(FileNotFoundError, match="Caucasian_pairs.txt"):
        read_rfw_pairs(str(tmp_path), "Caucasian")
    with pytest.raises(ValueError, match="unknown race label 'White'"):
        read_rfw_pairs(str(tmp_path), "White")


def test_read_rfw_same_id_under_two_races_keyed_by_race(tmp_path):
    write_rfw_pairs(str(tmp_path), "Asian", fold_lines(prefix="m.0s"))
    write_rfw_pairs(str(tmp_path), "Indian", fold_lines(prefix="m.0s"))
    pairs = read_rfw(str(tmp_path), races=("Asian", "Indian"))
    assert len(pairs) == 80 and [p.race for p in pairs] == ["Asian"] * 40 + ["Indian"] * 40
    shared_id = pairs[0].id1
    assert pairs[40].id1 == shared_id
    assert rfw_image_path(str(tmp_path), "Asian", shared_id, 1) != rfw_image_path(str(tmp_path), "Indian", shared_id, 1)


# ---------------------------------------------------------------------------------------------- landmarks and alignment

def write_lmk(root, race, lines):
    directory = os.path.join(root, "test", "txts", race)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"{race}_lmk.txt"), "w") as handle:
        handle.write("".join(line + "\n" for line in lines))


def test_read_rfw_landmarks(tmp_path):
    coordinates = "\t".join(str(v) for v in range(10, 20))
    write_lmk(str(tmp_path), "African", [
        f"test/data/African/m.0c7mh2/m.0c7mh2_0003.jpg\t2\t{coordinates}",
        "",
        f"./test/data/African/m.0z/m.0z_0012.jpg\t0\t{coordinates}",
    ])
    landmarks = read_rfw_landmarks(str(tmp_path), "African")
    assert set(landmarks) == {("African", "m.0c7mh2", 3), ("African", "m.0z", 12)}
    assert np.array_equal(landmarks[("African", "m.0c7mh2", 3)], np.arange(10, 20, dtype=float).reshape(5, 2))


@pytest.mark.parametrize("line, message", [
    ("test/data/African/m.0a/m.0a_0001.jpg\t1\t1\t2\t3", "expected an image path and 10 coordinates, got 5"),
    ("test/data/African/m.0a/m.0b_0001.jpg\t1\t" + "\t".join(["1"] * 10), "does not end in <id>/<id>_<NNNN>.jpg"),
    ("test/data/African/m.0a/m.0a_0001.jpg\t1\t" + "\t".join(["1"] * 9 + ["x"]), "non-numeric landmark"),
])
def test_read_rfw_landmarks_errors(tmp_path, line, message):
    good = "test/data/African/m.0q/m.0q_0001.jpg\t1\t" + "\t".join(["1"] * 10)
    write_lmk(str(tmp_path), "African", [good, line])
    with pytest.raises(ValueError, match=rf"African_lmk\.txt:2: .*{message}"):
        read_rfw_landmarks(str(tmp_path), "African")


def known_similarity(angle_degrees=12.0, scale=1.7, shift=(5.0, -3.0)):
    angle = math.radians(angle_degrees)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return np.hstack([scale * rotation, np.array(shift)[:, None]])


def apply(matrix, points):
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_similarity_transform_recovers_known_transform():
    matrix = known_similarity()
    destination = apply(matrix, ARCFACE_TEMPLATE_112)
    assert np.allclose(similarity_transform(ARCFACE_TEMPLATE_112, destination), matrix, atol=1e-10)
    mirrored = ARCFACE_TEMPLATE_112 * np.array([-1.0, 1.0])  # a reflection is not a similarity
    fitted = similarity_transform(ARCFACE_TEMPLATE_112, mirrored)
    assert np.linalg.det(fitted[:, :2]) > 0
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), ARCFACE_TEMPLATE_112)


def blob_image(points, size=(140, 120), sigma=1.5):
    """Grey image, Gaussian dots centred at `points` (pixel-index coordinates)."""
    ys, xs = np.mgrid[0:size[1], 0:size[0]]
    field = sum(np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2)) for x, y in points)
    grey = np.clip(field * 255, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey] * 3, axis=-1))


def centroids(image, expected, radius=5):
    grey = np.asarray(image)[..., 0].astype(np.float64)
    found = []
    for x, y in expected:
        cx, cy = int(round(x)), int(round(y))
        window = grey[cy - radius:cy + radius + 1, cx - radius:cx + radius + 1]
        ys, xs = np.mgrid[cy - radius:cy + radius + 1, cx - radius:cx + radius + 1]
        found.append([(window * xs).sum() / window.sum(), (window * ys).sum() / window.sum()])
    return np.array(found)


@pytest.mark.parametrize("size", [112, 56])
def test_align_face_puts_landmarks_on_template(size):
    # Landmarks of a face 1.25x larger than the template, rotated and shifted inside a 140x120 image.
    landmarks = apply(known_similarity(angle_degrees=-15.0, scale=1.25, shift=(10.0, -15.0)), ARCFACE_TEMPLATE_112)
    aligned = align_face(blob_image(landmarks), landmarks, size=size)
    assert aligned.size == (size, size)
    template = ARCFACE_TEMPLATE_112 * size / 112
    # Within 0.25 px: a half-pixel convention error (PIL samples at pixel centres) would miss this.
    assert np.abs(centroids(aligned, template) - template).max() < 0.25


# ---------------------------------------------------------------------------------------------- FaceImages

def test_face_images_resize_align_and_flip(tmp_path):
    path = str(tmp_path / "face.jpg")
    landmarks = apply(known_similarity(angle_degrees=5.0, scale=1.1, shift=(8.0, 4.0)), ARCFACE_TEMPLATE_112)
    blob_image(landmarks).save(path, quality=95)
    plain = FaceImages([("k", path)], image_size=32)
    item = plain[0]
    assert item["image"].shape == (3, 32, 32) and item["index"] == 0 and torch.equal(plain[0]["image"], item["image"])
    aligned = FaceImages([("k", path)], image_size=56, align_landmarks={"k": landmarks})[0]["image"]
    pixels = (aligned.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    template = ARCFACE_TEMPLATE_112 / 2
    assert np.abs(centroids(Image.fromarray(pixels), template, radius=4) - template).max() < 0.5
    torch.manual_seed(0)
    flips = FaceImages([("k", path)], image_size=32, flip=True)
    results = [flips[0]["image"] for _ in range(12)]
    assert any(torch.equal(r, item["image"].flip(-1)) for r in results) and \
        any(torch.equal(r, item["image"]) for r in results)
    with pytest.raises(ValueError, match="no landmarks for 1 image"):
        FaceImages([("other", path)], align_landmarks={"k": landmarks})


# ---------------------------------------------------------------------------------------------- identity folders

def make_identity_tree(root, layout):
    for race, identities in layout.items():
        for identity, count in identities.items():
            for k in range(count):
                write_jpeg(os.path.join(root, race, identity, f"{k}.jpg"), size=8)


def test_read_identity_folders(tmp_path):
    make_identity_tree(str(tmp_path), {"Caucasian": {"m.0c": 2, "m.0a": 1}, "African": {"m.0b": 1, "m.0a": 1}})
    (tmp_path / "README.txt").write_text("not a race folder")
    records = read_identity_folders(str(tmp_path))
    assert [(r.race, r.identity, os.path.basename(r.path), r.class_index) for r in records] == [
        ("African", "m.0a", "0.jpg", 0), ("African", "m.0b", "0.jpg", 1),
        ("Caucasian", "m.0a", "0.jpg", 0), ("Caucasian", "m.0c", "0.jpg", 2), ("Caucasian", "m.0c", "1.jpg", 2)]


def test_read_identity_folders_bad_race_and_empty_identity(tmp_path):
    make_identity_tree(str(tmp_path), {"Afrcan": {"m.0a": 1}})
    with pytest.raises(ValueError, match=r"folder .*Afrcan: unknown race label 'Afrcan'"):
        read_identity_folders(str(tmp_path))
    os.rename(tmp_path / "Afrcan", tmp_path / "African")
    os.makedirs(tmp_path / "African" / "m.0e")
    with pytest.raises(ValueError, match=r"m\.0e: identity folder has no images"):
        read_identity_folders(str(tmp_path))


def test_identity_overlap_guard():
    pairs = [Pair("Asian", 0, 1, "m.0a", 1, "m.0a", 2, 1), Pair("Asian", 0, 2, "m.0b", 1, "m.0c", 1, 0)]
    assert check_identity_overlap(["m.0x", "m.0y"], pairs) == []
    with pytest.raises(ValueError, match="2 training identities also appear in evaluated RFW pairs, e.g. m.0a, m.0c"):
        check_identity_overlap(["m.0c", "m.0a", "m.0x"], pairs)
    records = [datasets.IdentityImage(path="p", race="African", identity="m.0c", class_index=0)]
    assert check_identity_overlap(records, pairs, allow=True) == ["m.0c"]  # another race folder, same person


# ---------------------------------------------------------------------------------------------- demo generator output

def test_reads_toydata_fairface(tmp_path):
    from racecomp.toydata import make_fairface
    root = make_fairface(str(tmp_path / "fairface"), n_train=28, n_val=14, size=32, seed=0)
    train, val = read_fairface(root, "train"), read_fairface(root, "val")
    assert len(train) == 28 and len(val) == 14
    assert {r.race for r in train} == set(FAIRFACE_RACES) == {r.race for r in val}
    _, dev = split_dev(train, 0.25, seed=0)
    assert {r.race for r in dev} == set(FAIRFACE_RACES)
    item = FairFaceSR(val, scale=4)[0]
    assert item["hr"].shape == (3, 32, 32) and item["lr"].shape == (3, 8, 8)
    assert drop_unreadable(val) == (val, [])


@pytest.fixture(scope="module")
def toy_rfw_root(tmp_path_factory):
    """Smallest demo RFW tree (unaligned 32 px canvases), shared by the tests below."""
    from racecomp.toydata import make_rfw
    return make_rfw(str(tmp_path_factory.mktemp("toy") / "rfw"), n_ids=20, images_per_id=2, pairs_per_fold=1,
                    size=16, seed=0, aligned=False)


def test_reads_toydata_rfw_with_landmarks(toy_rfw_root):
    root = toy_rfw_root
    pairs = read_rfw(root)
    assert len(pairs) == 4 * 10 * 2
    assert [p.label for p in pairs[:4]] == [1, 0, 1, 0] and [p.fold for p in pairs[:4]] == [0, 0, 1, 1]
    landmarks = {key: points for race in ("African", "Asian", "Caucasian", "Indian")
                 for key, points in read_rfw_landmarks(root, race).items()}
    keys = {(p.race, p.id1, p.n1) for p in pairs} | {(p.race, p.id2, p.n2) for p in pairs}
    assert keys <= set(landmarks)
    items = sorted((key, rfw_image_path(root, *key)) for key in keys)
    images = FaceImages(items, image_size=16, align_landmarks=landmarks)
    assert images[0]["image"].shape == (3, 16, 16)


def test_reads_toydata_identities_and_overlap_guard(tmp_path, toy_rfw_root):
    from racecomp.toydata import make_identities
    rfw_root = toy_rfw_root
    pairs = read_rfw(rfw_root)
    clean = read_identity_folders(make_identities(str(tmp_path / "ids"), n_ids_per_race=2, images_per_id=2,
                                                  size=16, seed=0))
    assert len(clean) == 16 and sorted({r.class_index for r in clean}) == list(range(8))
    assert check_identity_overlap(clean, pairs) == []
    overlapping = read_identity_folders(make_identities(str(tmp_path / "ids_overlap"), n_ids_per_race=2,
                                                        images_per_id=2, size=16, seed=0,
                                                        overlap_with_rfw=rfw_root))
    with pytest.raises(ValueError, match="1 training identities also appear"):
        check_identity_overlap(overlapping, pairs)
