"""FairFace for super-resolution: the label CSV reader, the seeded dev split, and the HR/LR pair dataset.

Layout: `<root>/fairface_label_<split>.csv` with columns `file,age,gender,race,service_test`, `file`
relative to root (e.g. `train/1.jpg`). FairFace has no test split (see split_dev).
"""
import csv
import math
import os
import re
from dataclasses import dataclass

import numpy as np
import torch

from racecomp.datasets.images import downscale, grey_levels, load_rgb, resize_bicubic
from racecomp.errors import InputError
from racecomp.races import FAIRFACE_RACES, check_label

FAIRFACE_SPLITS = ("train", "val")
FAIRFACE_COLUMNS = ("file", "age", "gender", "race")
FAIRFACE_GENDERS = ("Male", "Female")
FAIRFACE_AGES = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")


def _round_half_up(x):
    """Nearest integer, halves rounded up (Python's round() sends 2.5 to 2)."""
    return int(math.floor(x + 0.5))


@dataclass(frozen=True)
class FaceRecord:
    """One FairFace image: `file` as written in the CSV, `path` on disk, labels, and its CSV line number."""
    file: str
    path: str
    race: str
    gender: str
    age: str
    line: int


def _check_relative_file(entry, where):
    """Raise unless `entry` is a relative path that stays inside the data root (no absolute path, no '..')."""
    parts = re.split(r"[\\/]", entry)
    if not entry or os.path.isabs(entry) or entry.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise InputError(f"{where}: file {entry!r} must be a relative path inside the data root")


def read_fairface(root, split):
    """FairFace records of `split` ('train' or 'val') from `root/fairface_label_<split>.csv`, in file order.

    Checks every row: required columns, race (exact FairFace spelling), gender, age bin, a relative
    `file` inside `root`, no duplicate file, and that the image exists (not decoded here). Raises
    FileNotFoundError or ValueError naming the CSV and line.
    """
    if split not in FAIRFACE_SPLITS:
        raise InputError(f"unknown FairFace split {split!r}; valid: {', '.join(FAIRFACE_SPLITS)}")
    csv_path = os.path.join(root, f"fairface_label_{split}.csv")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such folder (FairFace root: fairface_label_{{train,val}}.csv, "
                                f"train/, val/)")
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"{csv_path}: FairFace label file not found")
    records = []
    seen_files = {}
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [column for column in FAIRFACE_COLUMNS if column not in header]
        if missing:
            raise InputError(f"{csv_path}:1: missing column(s) {missing}; header is {header}")
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            if None in row or any(row[column] is None for column in header):
                raise InputError(f"{where}: expected {len(header)} fields ({','.join(header)})")
            race = check_label(row["race"], FAIRFACE_RACES, where)
            if row["gender"] not in FAIRFACE_GENDERS:
                raise InputError(f"{where}: unknown gender {row['gender']!r}; expected one of {list(FAIRFACE_GENDERS)}")
            if row["age"] not in FAIRFACE_AGES:
                raise InputError(f"{where}: unknown age bin {row['age']!r}; expected one of {list(FAIRFACE_AGES)}")
            _check_relative_file(row["file"], where)
            if row["file"] in seen_files:
                raise InputError(f"{where}: file {row['file']!r} already listed at line {seen_files[row['file']]}")
            seen_files[row["file"]] = reader.line_num
            path = os.path.join(root, row["file"])
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{where}: image {path} not found")
            records.append(FaceRecord(file=row["file"], path=path, race=race, gender=row["gender"],
                                      age=row["age"], line=reader.line_num))
    if not records:
        raise InputError(f"{csv_path}: no data rows")
    return records


def split_dev(records, dev_fraction, seed):
    """Seeded, race-stratified split of FairFace train records into (train, dev), each in input order.

    FairFace has no test split: `dev` selects checkpoints and `val` is only for reporting, so no
    reported number also chose the model. Each race gives round(dev_fraction * n) images to dev (halves
    up), at least 1 and at most n - 1 when it has n >= 2 images; a race with one image stays in train.
    Each race draws from its own seeded stream, so its split does not depend on the other races.
    """
    if not 0.0 < dev_fraction < 1.0:
        raise InputError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
    positions_by_race = {}
    for position, record in enumerate(records):
        check_label(record.race, FAIRFACE_RACES, f"record {record.file} (line {record.line})")
        positions_by_race.setdefault(record.race, []).append(position)
    dev_positions = set()
    for race, positions in positions_by_race.items():
        count = len(positions)
        if count < 2:
            continue
        dev_count = min(max(_round_half_up(dev_fraction * count), 1), count - 1)
        rng = np.random.default_rng([seed, FAIRFACE_RACES.index(race)])
        chosen = rng.permutation(count)[:dev_count]
        dev_positions.update(positions[i] for i in chosen)
    train = [record for position, record in enumerate(records) if position not in dev_positions]
    dev = [record for position, record in enumerate(records) if position in dev_positions]
    return train, dev


class FairFaceSR(torch.utils.data.Dataset):
    """FairFace super-resolution pairs: item = dict(hr, lr, race, gender, age, file, index).

    hr: uint8 (3, H, W) RGB grey levels at native size, or resized to `hr_size` x `hr_size` (bicubic,
    antialias, on the uint8 grid) when given. lr: uint8, downscale(hr, scale, lr_kernel)'s grey levels. Both are
    uint8 to save bytes to the device, where datasets.unit_images makes them the floats in [0, 1] that models
    and metrics take (engine.Trainer and evaluation do). `train=False` is
    deterministic. `train=True` flips hr horizontally before lr is made: an item requested as an
    (index, flip) pair (MinoritySampler(flips=True), the training scripts' path) is flipped when `flip`
    is true, which makes flips independent of the process layout; a plain integer index flips with
    probability 1/2 from torch's global RNG (seeded per DataLoader worker). A corrupt image raises
    ValueError naming the file and line.
    """

    def __init__(self, records, scale, hr_size=None, train=False, lr_kernel="bicubic"):
        if hr_size is not None and hr_size % scale:
            raise InputError(f"hr_size {hr_size} is not divisible by scale {scale}")
        self.records = list(records)
        self.scale = scale
        self.lr_kernel = lr_kernel
        self.hr_size = hr_size
        self.train = train

    def __len__(self):
        return len(self.records)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            index, flip = key
            if flip and not self.train:
                raise InputError(f"item {index}: a flip was requested from an evaluation dataset (train=False)")
        else:
            index, flip = key, self.train and bool(torch.rand(()) < 0.5)
        record = self.records[index]
        hr = self.high_resolution(index)
        height, width = hr.shape[-2:]
        if height % self.scale or width % self.scale:
            raise InputError(f"{record.file} (CSV line {record.line}): image size {height}x{width} is not "
                             f"divisible by scale {self.scale}; pass hr_size")
        if flip:
            hr = hr.flip(-1)
        lr = grey_levels(downscale(hr, self.scale, self.lr_kernel))
        return dict(hr=hr[0], lr=lr[0], race=record.race, gender=record.gender, age=record.age,
                    file=record.file, index=index)

    def high_resolution(self, index):
        """Item `index`'s high-resolution image, (1, 3, H, W) uint8 grey levels, unflipped."""
        record = self.records[index]
        hr = load_rgb(record.path, f"{record.file} (CSV line {record.line})").unsqueeze(0)
        if self.hr_size is not None and tuple(hr.shape[-2:]) != (self.hr_size, self.hr_size):
            hr = grey_levels(resize_bicubic(hr.float() / 255.0, (self.hr_size, self.hr_size)))
        return hr
