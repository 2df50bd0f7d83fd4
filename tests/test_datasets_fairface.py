"""FairFace reader, dev split and FairFaceSR on tiny files written into tmp_path: errors name file and line."""
import csv
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from racecomp.datasets.fairface import FaceRecord, FairFaceSR, read_fairface, split_dev
from racecomp.datasets.check import drop_unreadable
from racecomp import batches
from racecomp.datasets.images import downscale, resize_bicubic, unit_images
from racecomp.races import FAIRFACE_RACES
from racecomp.toyfairface import make_fairface

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


# ---------------------------------------------------------------------------------------------- FairFaceSR

def test_fairface_sr_item(tmp_path):
    write_fairface(tmp_path)
    records = read_fairface(str(tmp_path), "train")
    item = FairFaceSR(records, scale=4)[1]
    decoded = torch.from_numpy(np.asarray(Image.open(records[1].path).convert("RGB")).copy()).permute(2, 0, 1)
    assert item["hr"].dtype == item["lr"].dtype == torch.uint8
    assert torch.equal(item["hr"], decoded)
    assert torch.equal(unit_images(item["lr"]), downscale(decoded, 4))
    assert (item["race"], item["gender"], item["file"], item["index"]) == ("Black", "Male", "train/2.jpg", 1)
    resized = FairFaceSR(records, scale=4, hr_size=16)[0]
    assert resized["hr"].shape == (3, 16, 16) and resized["lr"].shape == (3, 4, 4)
    with pytest.raises(ValueError, match="hr_size 18 is not divisible by scale 4"):
        FairFaceSR(records, scale=4, hr_size=18)


def test_uint8_items_give_the_model_the_floats_of_the_float32_path(tmp_path):
    """Items travel as uint8 and become floats on the device: exactly the float32 tensors that the float path
    (decode, / 255, resize, flip, downscale, all on the CPU) gave the model, through engine's batch copy."""
    levels = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(unit_images(levels), levels.float() / 255.0)  # every level, as the CPU divides
    write_fairface(tmp_path)
    records = read_fairface(str(tmp_path), "train")
    for hr_size, flip in ((None, False), (None, True), (16, True)):  # native size, flipped, resized and flipped
        dataset = FairFaceSR(records, scale=2, hr_size=hr_size, train=True)
        items = [dataset[index, flip] for index in range(len(records))]
        batch = batches.to_device(torch.utils.data.default_collate(items), "cpu")
        for index, record in enumerate(records):
            hr = torch.from_numpy(np.asarray(Image.open(record.path).convert("RGB")).copy()).permute(2, 0, 1)
            hr = hr.float().unsqueeze(0) / 255.0
            if hr_size:
                hr = resize_bicubic(hr, (hr_size, hr_size))
            hr = hr.flip(-1) if flip else hr
            assert batch["hr"].dtype == batch["lr"].dtype == torch.float32
            assert torch.equal(batch["hr"][index], hr[0])
            assert torch.equal(batch["lr"][index], downscale(hr, 2)[0])


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
        assert torch.equal(unit_images(item["lr"]), downscale(item["hr"], 2))  # lr made after the flip
        flipped += is_flipped
    assert 0 < flipped < 20


def test_fairface_sr_makes_lr_with_its_kernel(tmp_path):
    write_fairface(tmp_path)
    records = read_fairface(str(tmp_path), "train")
    item = FairFaceSR(records, scale=2, lr_kernel="bilinear")[0]
    assert torch.equal(unit_images(item["lr"]), downscale(item["hr"], 2, "bilinear"))
    assert not torch.equal(item["lr"], FairFaceSR(records, scale=2)[0]["lr"])  # the default stays bicubic


def test_corrupt_image_named_and_skippable(tmp_path):
    write_fairface(tmp_path, rows=[row(1), row(2), row(3)])
    (tmp_path / "train" / "2.jpg").write_bytes(b"not a jpeg")
    records = read_fairface(str(tmp_path), "train")  # read time only checks existence
    with pytest.raises(ValueError, match=r"train/2\.jpg \(CSV line 3\): cannot decode image"):
        FairFaceSR(records, scale=2)[1]
    for decode in (True, False):  # a broken header is found without decoding
        good, bad = drop_unreadable(records, decode=decode, workers=2)
        assert [r.file for r in good] == ["train/1.jpg", "train/3.jpg"]
        assert [(r.file, "CSV line 3" in error) for r, error in bad] == [("train/2.jpg", True)]
    jpeg = (tmp_path / "train" / "3.jpg").read_bytes()
    (tmp_path / "train" / "3.jpg").write_bytes(jpeg[:len(jpeg) // 2])  # cut short: its header still reads
    good, bad = drop_unreadable(records, decode=False, workers=1)
    assert [r.file for r in good] == ["train/1.jpg"] and [r.file for r, _ in bad] == ["train/2.jpg", "train/3.jpg"]


# ---------------------------------------------------------------------------------------------- demo generator output

def test_reads_toydata_fairface(tmp_path):
    root = make_fairface(str(tmp_path / "fairface"), n_train=28, n_val=14, size=32, seed=0)
    train, val = read_fairface(root, "train"), read_fairface(root, "val")
    assert len(train) == 28 and len(val) == 14
    assert {r.race for r in train} == set(FAIRFACE_RACES) == {r.race for r in val}
    _, dev = split_dev(train, 0.25, seed=0)
    assert {r.race for r in dev} == set(FAIRFACE_RACES)
    item = FairFaceSR(val, scale=4)[0]
    assert item["hr"].shape == (3, 32, 32) and item["lr"].shape == (3, 8, 8)
    assert drop_unreadable(val) == (val, [])
    assert drop_unreadable(val, decode=False) == (val, [])
