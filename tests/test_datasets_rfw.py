"""RFW pairs and landmarks on tiny files written into tmp_path: every error names its file and line."""
import os

import numpy as np
import pytest
from PIL import Image

from racecomp.datasets.images import FaceImages
from racecomp.datasets.rfw import Pair, read_rfw, read_rfw_landmarks, read_rfw_pairs, rfw_image_path
from racecomp.toyrfw import make_rfw


def write_jpeg(path, size=32, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


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


# ---------------------------------------------------------------------------------------------- landmarks

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


# ---------------------------------------------------------------------------------------------- demo generator output

def test_reads_toydata_rfw_with_landmarks(tmp_path):
    # Smallest demo RFW tree, unaligned 32 px canvases so that alignment has work to do.
    root = make_rfw(str(tmp_path / "rfw"), n_ids=20, images_per_id=2, pairs_per_fold=1, size=16, seed=0,
                    aligned=False)
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
