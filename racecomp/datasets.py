"""Data layer: FairFace (super-resolution), RFW pairs (verification), identity folders (recognition training).

Readers check everything that could silently change a number: labels are spelled exactly as in
`racecomp.races`, every listed image exists, and bad data raises an error naming the file and line.
Images are decoded only when an item is requested, never at read time.

Layouts on disk are described in the project's formats brief: FairFace `fairface_label_<split>.csv`
with `file,age,gender,race,service_test`; RFW `test/txts/<Race>/<Race>_pairs.txt` and `_lmk.txt`
with images at `test/data/<Race>/<id>/<id>_<NNNN>.jpg`; identity folders `<Race>/<identity>/*.jpg`.
"""
import csv
import math
import os
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from racecomp.alignment import ARCFACE_TEMPLATE_112, align_face, similarity_transform  # noqa: F401 (re-exported)
from racecomp.races import FAIRFACE_RACES, RFW_RACES, check_label

FAIRFACE_SPLITS = ("train", "val")
FAIRFACE_COLUMNS = ("file", "age", "gender", "race")
FAIRFACE_GENDERS = ("Male", "Female")
FAIRFACE_AGES = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
SAMPLER_MODES = ("subsample", "reweight")
IDENTITY_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

# RFW image file names: <id>_<NNNN>.jpg
_RFW_FILE_NAME = re.compile(r"^(?P<id>.+)_(?P<n>\d+)\.jpg$")


def _round_half_up(x):
    """Nearest integer, halves rounded up (Python's round() sends 2.5 to 2)."""
    return int(math.floor(x + 0.5))


# ---------------------------------------------------------------------------------------------- FairFace

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
        raise ValueError(f"{where}: file {entry!r} must be a relative path inside the data root")


def read_fairface(root, split):
    """FairFace records of `split` ('train' or 'val') from `root/fairface_label_<split>.csv`, in file order.

    Checks every row: required columns, race (exact FairFace spelling), gender, age bin, a relative
    `file` inside `root`, no duplicate file, and that the image exists (not decoded here). Raises
    FileNotFoundError or ValueError naming the CSV and line.
    """
    if split not in FAIRFACE_SPLITS:
        raise ValueError(f"unknown FairFace split {split!r}; valid: {', '.join(FAIRFACE_SPLITS)}")
    csv_path = os.path.join(root, f"fairface_label_{split}.csv")
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"{csv_path}: FairFace label file not found")
    records = []
    seen_files = {}
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [column for column in FAIRFACE_COLUMNS if column not in header]
        if missing:
            raise ValueError(f"{csv_path}:1: missing column(s) {missing}; header is {header}")
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            if None in row or any(row[column] is None for column in header):
                raise ValueError(f"{where}: expected {len(header)} fields ({','.join(header)})")
            race = check_label(row["race"], FAIRFACE_RACES, where)
            if row["gender"] not in FAIRFACE_GENDERS:
                raise ValueError(f"{where}: unknown gender {row['gender']!r}; expected one of {list(FAIRFACE_GENDERS)}")
            if row["age"] not in FAIRFACE_AGES:
                raise ValueError(f"{where}: unknown age bin {row['age']!r}; expected one of {list(FAIRFACE_AGES)}")
            _check_relative_file(row["file"], where)
            if row["file"] in seen_files:
                raise ValueError(f"{where}: file {row['file']!r} already listed at line {seen_files[row['file']]}")
            seen_files[row["file"]] = reader.line_num
            path = os.path.join(root, row["file"])
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{where}: image {path} not found")
            records.append(FaceRecord(file=row["file"], path=path, race=race, gender=row["gender"],
                                      age=row["age"], line=reader.line_num))
    if not records:
        raise ValueError(f"{csv_path}: no data rows")
    return records


def split_dev(records, dev_fraction, seed):
    """Seeded, race-stratified split of FairFace train records into (train, dev), each in input order.

    FairFace has no test split: `dev` selects checkpoints and `val` is only for reporting, so no
    reported number also chose the model. Each race gives round(dev_fraction * n) images to dev (halves
    up), at least 1 and at most n - 1 when it has n >= 2 images; a race with one image stays in train.
    Each race draws from its own seeded stream, so its split does not depend on the other races.
    """
    if not 0.0 < dev_fraction < 1.0:
        raise ValueError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
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


class MinoritySampler(torch.utils.data.Sampler):
    """Index sampler that under-represents one race in training, at equal compute.

    `minority` is a FairFace label (None: balanced run, every image drawn uniformly; `weight` is then
    not used) and `weight` W in (0, 1]:
      - mode 'subsample': a seeded subset of round(W * n) of the minority's n images (halves up, at
        least 1) is kept for the whole run (depends on `seed`, not on the epoch); other races keep all
        images. An epoch concatenates fresh seeded permutations of the kept pool, truncated to
        `num_samples`.
      - mode 'reweight': every image is kept; each draw picks the minority's images with W times the
        probability of the others' (with replacement, like WeightedRandomSampler, seeded per epoch).
    Equal compute: an epoch is always `num_samples` draws (default: len(records), the count before
    under-sampling), so the number of optimizer steps never depends on W or the mode.
    The global epoch order is a function of (seed, epoch) only. With `num_replicas` > 1 it is padded by
    wrapping to a multiple of num_replicas and rank r takes positions r, r + num_replicas, ...: disjoint,
    equal-length slices of the same order. Call `set_epoch(epoch)` before each epoch.
    With `flips=True` it yields (index, flip) pairs for FairFaceSR(train=True): flip is a fair coin per
    position of the global order, a function of (seed, epoch, position) only, so which draws are flipped
    does not depend on the number of processes, DataLoader workers, or a resume.
    """

    def __init__(self, records, minority, weight, mode="subsample", seed=0, num_samples=None,
                 num_replicas=1, rank=0, flips=False):
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"weight must be in (0, 1], got {weight}")
        if mode not in SAMPLER_MODES:
            raise ValueError(f"unknown sampler mode {mode!r}; valid: {', '.join(SAMPLER_MODES)}")
        if not records:
            raise ValueError("no records to sample from")
        if num_samples is None:
            num_samples = len(records)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need 0 <= rank < num_replicas, got rank={rank}, num_replicas={num_replicas}")
        self.races = [record.race for record in records]
        if minority is not None:
            check_label(minority, FAIRFACE_RACES, "minority race")
            if minority not in self.races:
                raise ValueError(f"minority race {minority!r} has no training images")
        self.minority = minority
        self.weight = weight
        self.mode = mode
        self.seed = seed
        self.num_samples = num_samples
        self.num_replicas = num_replicas
        self.rank = rank
        self.flips = flips
        self.epoch = 0
        self.pool = self._kept_pool()  # sorted record indices available to this run
        # Per-record draw probability over the pool (reweight only; uniform otherwise).
        self.draw_weights = np.array([self._relative_weight(self.races[i]) for i in self.pool], dtype=np.float64)
        self.probabilities = self.draw_weights / self.draw_weights.sum()

    def _relative_weight(self, race):
        if self.mode == "reweight" and race == self.minority:
            return self.weight
        return 1.0

    def _kept_pool(self):
        all_indices = np.arange(len(self.races))
        if self.minority is None or self.mode == "reweight":
            return all_indices
        is_minority = np.array([race == self.minority for race in self.races])
        minority_indices = all_indices[is_minority]
        keep_count = max(1, _round_half_up(self.weight * len(minority_indices)))
        rng = np.random.default_rng([self.seed, 0])  # stream 0: the run's fixed subset
        kept = rng.choice(minority_indices, size=keep_count, replace=False)
        return np.sort(np.concatenate([all_indices[~is_minority], kept]))

    def set_epoch(self, epoch):
        self.epoch = epoch

    def global_order(self):
        """Record indices of the whole epoch (all ranks), length `num_samples`."""
        rng = np.random.default_rng([self.seed, 1, self.epoch])  # stream 1: per-epoch order
        if self.mode == "reweight" and self.minority is not None:
            return self.pool[rng.choice(len(self.pool), size=self.num_samples, replace=True, p=self.probabilities)]
        repeats = math.ceil(self.num_samples / len(self.pool))
        order = np.concatenate([rng.permutation(self.pool) for _ in range(repeats)])
        return order[:self.num_samples]

    def global_flips(self):
        """Horizontal-flip bits (bool) of the whole epoch's positions, length `num_samples`."""
        rng = np.random.default_rng([self.seed, 2, self.epoch])  # stream 2: per-epoch flips
        return rng.integers(0, 2, size=self.num_samples).astype(bool)

    def __len__(self):
        return math.ceil(self.num_samples / self.num_replicas)

    def __iter__(self):
        padded_length = len(self) * self.num_replicas
        mine = slice(self.rank, padded_length, self.num_replicas)
        order = np.resize(self.global_order(), padded_length)[mine]  # wraps around to pad
        if not self.flips:
            return iter(order.tolist())
        flips = np.resize(self.global_flips(), padded_length)[mine]
        return iter(zip(order.tolist(), flips.tolist()))

    def realized_counts(self):
        """race -> {'available': images in the pool, 'expected_per_epoch': expected draws per global epoch}.

        Expected draws are exact expectations over the epoch's randomness: num_samples times the race's
        share of the draw probability (every position of a random permutation has the pool's proportions).
        """
        counts = {}
        pool_races = [self.races[i] for i in self.pool]
        for race in FAIRFACE_RACES:
            if race not in self.races:
                continue
            in_race = np.array([r == race for r in pool_races])
            counts[race] = {
                "available": int(in_race.sum()),
                "expected_per_epoch": float(self.num_samples * self.draw_weights[in_race].sum()
                                            / self.draw_weights.sum()),
            }
        return counts


def _load_rgb(path, where):
    """Decode `path` to a uint8 tensor (3, H, W), RGB. A corrupt or unreadable image raises naming `where`."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as error:  # PIL's decode errors
        raise ValueError(f"{where}: cannot decode image {path}: {error}") from error
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _resize_bicubic(image, size):
    """Resize float (B, 3, H, W) in [0, 1] to `size` (h, w), bicubic a = -0.5 with antialias, on the uint8 grid."""
    resized = F.interpolate(image, size=size, mode="bicubic", antialias=True, align_corners=False)
    return (resized.clamp(0.0, 1.0) * 255.0).round() / 255.0


def downscale_bicubic(hr, scale):
    """Low-resolution image from `hr`: bicubic, antialiased, quantized as if saved as an 8-bit image.

    hr: (B, 3, H, W) or (3, H, W), uint8 in [0, 255] or float in [0, 1], RGB, any device; H and W
    divisible by `scale`. Returns float32 of shape (..., 3, H/scale, W/scale), values in [0, 1] on the
    uint8 grid (k / 255), on hr's device. The kernel is torch's antialiased bicubic
    (`F.interpolate(mode='bicubic', antialias=True, align_corners=False)`): Keys' cubic with a = -0.5,
    stretched by `scale` over the footprint, the same filter as PIL's Image.resize(BICUBIC) (torch's
    non-antialiased bicubic uses a = -0.75 instead). It equals PIL's float-mode ('F') resize after
    quantization; PIL's uint8 resize rounds to uint8 between its horizontal and vertical passes, so it
    differs by at most 1 grey level (on ~10% of pixels of random 64 px images). This is the only place
    LR images are made.
    """
    if hr.dim() not in (3, 4) or hr.shape[-3] != 3:
        raise ValueError(f"hr must be (B, 3, H, W) or (3, H, W), got shape {tuple(hr.shape)}")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    height, width = hr.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(f"image size {height}x{width} is not divisible by scale {scale}")
    image = hr.float() / 255.0 if hr.dtype == torch.uint8 else hr.float()
    batch = image if image.dim() == 4 else image.unsqueeze(0)
    lr = _resize_bicubic(batch, (height // scale, width // scale))
    return lr if hr.dim() == 4 else lr.squeeze(0)


class FairFaceSR(torch.utils.data.Dataset):
    """FairFace super-resolution pairs: item = dict(hr, lr, race, gender, age, file, index).

    hr: float32 (3, H, W) RGB in [0, 1] at native size, or resized to `hr_size` x `hr_size` (bicubic,
    antialias, on the uint8 grid) when given. lr: downscale_bicubic(hr, scale). `train=False` is
    deterministic. `train=True` flips hr horizontally before lr is made: an item requested as an
    (index, flip) pair (MinoritySampler(flips=True), the training scripts' path) is flipped when `flip`
    is true, which makes flips independent of the process layout; a plain integer index flips with
    probability 1/2 from torch's global RNG (seeded per DataLoader worker). A corrupt image raises
    ValueError naming the file and line.
    """

    def __init__(self, records, scale, hr_size=None, train=False):
        if hr_size is not None and hr_size % scale:
            raise ValueError(f"hr_size {hr_size} is not divisible by scale {scale}")
        self.records = list(records)
        self.scale = scale
        self.hr_size = hr_size
        self.train = train

    def __len__(self):
        return len(self.records)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            index, flip = key
            if flip and not self.train:
                raise ValueError(f"item {index}: a flip was requested from an evaluation dataset (train=False)")
        else:
            index, flip = key, self.train and bool(torch.rand(()) < 0.5)
        record = self.records[index]
        hr = self.high_resolution(index)
        height, width = hr.shape[-2:]
        if height % self.scale or width % self.scale:
            raise ValueError(f"{record.file} (CSV line {record.line}): image size {height}x{width} is not "
                             f"divisible by scale {self.scale}; pass hr_size")
        if flip:
            hr = hr.flip(-1)
        lr = downscale_bicubic(hr, self.scale)
        return dict(hr=hr[0], lr=lr[0], race=record.race, gender=record.gender, age=record.age,
                    file=record.file, index=index)


    def high_resolution(self, index):
        """Item `index`'s high-resolution image, (1, 3, H, W) float in [0, 1] on the uint8 grid, unflipped."""
        record = self.records[index]
        hr = _load_rgb(record.path, f"{record.file} (CSV line {record.line})").float().unsqueeze(0) / 255.0
        if self.hr_size is not None and tuple(hr.shape[-2:]) != (self.hr_size, self.hr_size):
            hr = _resize_bicubic(hr, (self.hr_size, self.hr_size))
        return hr


def drop_unreadable(records):
    """Decode every record's image once; returns (good, bad) lists, for a `--skip-bad` flag."""
    good, bad = [], []
    for record in records:
        try:
            _load_rgb(record.path, record.file)
        except ValueError:
            bad.append(record)
        else:
            good.append(record)
    return good, bad


# ---------------------------------------------------------------------------------------------- RFW

@dataclass(frozen=True)
class Pair:
    """One RFW verification pair; label 1 genuine (same person), 0 impostor; fold in 0..9; line from 1."""
    race: str
    fold: int
    line: int
    id1: str
    n1: int
    id2: str
    n2: int
    label: int


def rfw_image_path(root, race, identity, n):
    """Path of RFW test image number `n` of `identity` under `race`: test/data/<race>/<id>/<id>_<NNNN>.jpg."""
    return os.path.join(root, "test", "data", race, identity, f"{identity}_{n:04d}.jpg")


def _rfw_txt(root, race, suffix):
    check_label(race, RFW_RACES, "RFW race argument")
    path = os.path.join(root, "test", "txts", race, f"{race}_{suffix}.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: RFW {suffix} file not found")
    return path


def _image_number(text, where):
    if not text.isdigit():
        raise ValueError(f"{where}: image number {text!r} is not a non-negative integer")
    return int(text)


def read_rfw_pairs(root, race):
    """Pairs of `race` from test/txts/<race>/<race>_pairs.txt, in file order.

    Genuine lines are `id<TAB>n1<TAB>n2`, impostor lines `id1<TAB>n1<TAB>id2<TAB>n2`. The file holds 10
    folds of equal length in order (fold = line index // (lines / 10)); inside each fold the first half
    is genuine and the second half impostor, which is checked, so a line with a field missing cannot
    turn into a pair of the other kind. Every image must exist. Errors name the file and line.
    """
    path = _rfw_txt(root, race, "pairs")
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().rstrip().splitlines()
    if not lines or len(lines) % 10:
        raise ValueError(f"{path}: {len(lines)} lines, expected a positive multiple of 10 (10 equal folds)")
    fold_size = len(lines) // 10
    if fold_size % 2:
        raise ValueError(f"{path}: folds of {fold_size} lines, expected an even size (half genuine, half impostor)")
    pairs = []
    for index, text in enumerate(lines):
        where = f"{path}:{index + 1}"
        fields = text.strip().split("\t")
        fold, position = divmod(index, fold_size)
        genuine_expected = position < fold_size // 2
        if len(fields) not in (3, 4):
            raise ValueError(f"{where}: expected 3 (genuine) or 4 (impostor) tab-separated fields, got {len(fields)}")
        if (len(fields) == 3) != genuine_expected:
            kind = "a genuine pair (3 fields)" if genuine_expected else "an impostor pair (4 fields)"
            raise ValueError(f"{where}: expected {kind} at position {position + 1} of fold {fold + 1}, "
                             f"got {len(fields)} fields")
        if len(fields) == 3:
            id1, id2 = fields[0], fields[0]
            n1, n2 = _image_number(fields[1], where), _image_number(fields[2], where)
        else:
            id1, id2 = fields[0], fields[2]
            n1, n2 = _image_number(fields[1], where), _image_number(fields[3], where)
        for identity, n in ((id1, n1), (id2, n2)):
            image_path = rfw_image_path(root, race, identity, n)
            if not os.path.isfile(image_path):
                raise FileNotFoundError(f"{where}: image {image_path} not found")
        pairs.append(Pair(race=race, fold=fold, line=index + 1, id1=id1, n1=n1, id2=id2, n2=n2,
                          label=int(genuine_expected)))
    return pairs


def read_rfw(root, races=RFW_RACES):
    """Pairs of every race in `races`, race by race (see read_rfw_pairs)."""
    return [pair for race in races for pair in read_rfw_pairs(root, race)]


def read_rfw_landmarks(root, race):
    """Five landmarks per image from test/txts/<race>/<race>_lmk.txt: dict (race, id, n) -> (5, 2) float64.

    Each line: first field the image path ending in <id>/<id>_<NNNN>.jpg, last 10 fields x1 y1 ... x5 y5
    in pixel coordinates of the unaligned image (left eye, right eye, nose tip, left mouth corner, right
    mouth corner, as seen in the image); fields in between are ignored. Errors name the file and line.
    """
    path = _rfw_txt(root, race, "lmk")
    landmarks = {}
    with open(path, encoding="utf-8") as handle:
        for line_number, text in enumerate(handle, start=1):
            where = f"{path}:{line_number}"
            fields = text.split()
            if not fields:
                continue
            if len(fields) < 11:
                raise ValueError(f"{where}: expected an image path and 10 coordinates, got {len(fields)} fields")
            components = re.split(r"[\\/]", fields[0])
            match = _RFW_FILE_NAME.match(components[-1])
            if len(components) < 2 or match is None or match["id"] != components[-2]:
                raise ValueError(f"{where}: image path {fields[0]!r} does not end in <id>/<id>_<NNNN>.jpg")
            try:
                points = np.array([float(value) for value in fields[-10:]]).reshape(5, 2)
            except ValueError as error:
                raise ValueError(f"{where}: non-numeric landmark coordinate ({error})") from error
            key = (race, match["id"], int(match["n"]))
            if key in landmarks:
                raise ValueError(f"{where}: landmarks for {fields[0]} listed twice")
            landmarks[key] = points
    return landmarks


class FaceImages(torch.utils.data.Dataset):
    """Face images for recognition: item = dict(image, index), `index` into `items`.

    items: list of (key, path). image: float32 (3, S, S) RGB in [0, 1], S = image_size. With
    `align_landmarks` (dict key -> (5, 2) landmarks) each image is aligned with align_face; without it
    images of another size are resized (bicubic, antialias). `flip=True` flips horizontally with
    probability 1/2 (training only). Used for RFW evaluation (unique images of all pairs) and for
    identity training.
    """

    def __init__(self, items, image_size=112, align_landmarks=None, flip=False):
        self.items = list(items)
        self.image_size = image_size
        self.align_landmarks = align_landmarks
        self.flip = flip
        if align_landmarks is not None:
            missing = [key for key, _ in self.items if key not in align_landmarks]
            if missing:
                raise ValueError(f"no landmarks for {len(missing)} image(s), e.g. {missing[:3]}")

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        key, path = self.items[index]
        image = _load_rgb(path, str(key))
        if self.align_landmarks is not None:
            source = Image.fromarray(image.permute(1, 2, 0).numpy())
            aligned = align_face(source, self.align_landmarks[key], self.image_size)
            image = torch.from_numpy(np.asarray(aligned).copy()).permute(2, 0, 1).float() / 255.0
        else:
            image = image.float() / 255.0
            if tuple(image.shape[-2:]) != (self.image_size, self.image_size):
                image = _resize_bicubic(image.unsqueeze(0), (self.image_size, self.image_size))[0]
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return dict(image=image, index=index)


# ---------------------------------------------------------------------------------------------- identity folders

@dataclass(frozen=True)
class IdentityImage:
    """One training image of an identity folder; class_index is shared by all images of an identity id."""
    path: str
    race: str
    identity: str
    class_index: int


def read_identity_folders(root):
    """Images of root/<Race>/<identity>/*.jpg|jpeg|png (BUPT layout), sorted by race, identity, file name.

    Race folders must be RFW labels (error naming the folder). Class indices are 0..K-1 over the sorted
    identity ids; an id found under two race folders is one person and gets one class. An identity
    folder without images is an error (it would leave a class with no samples).
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: identity folder root not found")
    found = []  # (race, identity, path)
    for race in sorted(os.listdir(root)):
        race_dir = os.path.join(root, race)
        if not os.path.isdir(race_dir):
            continue
        check_label(race, RFW_RACES, f"folder {race_dir}")
        for identity in sorted(os.listdir(race_dir)):
            identity_dir = os.path.join(race_dir, identity)
            if not os.path.isdir(identity_dir):
                continue
            names = sorted(name for name in os.listdir(identity_dir)
                           if name.lower().endswith(IDENTITY_IMAGE_EXTENSIONS))
            if not names:
                raise ValueError(f"folder {identity_dir}: identity folder has no images")
            found.extend((race, identity, os.path.join(identity_dir, name)) for name in names)
    if not found:
        raise ValueError(f"{root}: no identity images found under <Race>/<identity>/")
    class_of = {identity: index for index, identity in enumerate(sorted({identity for _, identity, _ in found}))}
    return [IdentityImage(path=path, race=race, identity=identity, class_index=class_of[identity])
            for race, identity, path in found]


def check_identity_overlap(train_identities, pairs, allow=False):
    """Sorted identity ids that are both in training and in evaluated RFW pairs.

    train_identities: identity id strings, or records with an `identity` attribute (IdentityImage).
    Compared by id only: a person is a person whatever race folder holds them. Raises ValueError
    listing some of them unless `allow`, in which case they are returned for the run to report.
    """
    train_ids = {getattr(item, "identity", item) for item in train_identities}
    evaluated_ids = {pair.id1 for pair in pairs} | {pair.id2 for pair in pairs}
    overlap = sorted(train_ids & evaluated_ids)
    if overlap and not allow:
        raise ValueError(f"{len(overlap)} training identities also appear in evaluated RFW pairs, e.g. "
                         f"{', '.join(overlap[:10])}; remove them from training or allow the overlap explicitly")
    return overlap
