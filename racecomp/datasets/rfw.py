"""RFW verification pairs and their five-point landmarks (the test set of the verification study).

Layout under `root`: `test/txts/<Race>/<Race>_pairs.txt` and `<Race>_lmk.txt`, images at
`test/data/<Race>/<id>/<id>_<NNNN>.jpg`. Races are RFW labels (racecomp.races.RFW_RACES). Images are
read and aligned by images.FaceImages.
"""
import os
import re
from dataclasses import dataclass

import numpy as np

from racecomp.errors import InputError
from racecomp.races import RFW_RACES, check_label

# RFW image file names: <id>_<NNNN>.jpg
_RFW_FILE_NAME = re.compile(r"^(?P<id>.+)_(?P<n>\d+)\.jpg$")


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
        raise InputError(f"{where}: image number {text!r} is not a non-negative integer")
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
        raise InputError(f"{path}: {len(lines)} lines, expected a positive multiple of 10 (10 equal folds)")
    fold_size = len(lines) // 10
    if fold_size % 2:
        raise InputError(f"{path}: folds of {fold_size} lines, expected an even size (half genuine, half impostor)")
    pairs = []
    for index, text in enumerate(lines):
        where = f"{path}:{index + 1}"
        fields = text.strip().split("\t")
        fold, position = divmod(index, fold_size)
        genuine_expected = position < fold_size // 2
        if len(fields) not in (3, 4):
            raise InputError(f"{where}: expected 3 (genuine) or 4 (impostor) tab-separated fields, got {len(fields)}")
        if (len(fields) == 3) != genuine_expected:
            kind = "a genuine pair (3 fields)" if genuine_expected else "an impostor pair (4 fields)"
            raise InputError(f"{where}: expected {kind} at position {position + 1} of fold {fold + 1}, "
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
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such folder (RFW root: test/data/<Race>/, test/txts/<Race>/)")
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
                raise InputError(f"{where}: expected an image path and 10 coordinates, got {len(fields)} fields")
            components = re.split(r"[\\/]", fields[0])
            match = _RFW_FILE_NAME.match(components[-1])
            if len(components) < 2 or match is None or match["id"] != components[-2]:
                raise InputError(f"{where}: image path {fields[0]!r} does not end in <id>/<id>_<NNNN>.jpg")
            try:
                points = np.array([float(value) for value in fields[-10:]]).reshape(5, 2)
            except ValueError as error:
                raise InputError(f"{where}: non-numeric landmark coordinate ({error})") from error
            key = (race, match["id"], int(match["n"]))
            if key in landmarks:
                raise InputError(f"{where}: landmarks for {fields[0]} listed twice")
            landmarks[key] = points
    return landmarks
