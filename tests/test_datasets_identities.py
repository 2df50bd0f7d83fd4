"""Identity folders (BUPT layout) and the guard against training on people RFW evaluates."""
import os

import numpy as np
import pytest
from PIL import Image

from racecomp.datasets.check import check_identity_images
from racecomp.datasets.identities import IdentityImage, check_identity_overlap, read_identity_folders
from racecomp.datasets.rfw import Pair, read_rfw
from racecomp.toyrfw import make_identities, make_rfw


def write_jpeg(path, size=32, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


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



def test_check_identity_images_names_each_unreadable_image(tmp_path):
    make_identity_tree(str(tmp_path), {"African": {"m.0a": 2, "m.0b": 1}, "Asian": {"m.0c": 1}})
    cut = tmp_path / "Asian" / "m.0c" / "0.jpg"
    write_jpeg(str(cut), size=64)  # large enough that its first half holds the whole header
    records = read_identity_folders(str(tmp_path))
    check_identity_images(records, workers=1)  # all readable: nothing raised
    (tmp_path / "African" / "m.0a" / "1.jpg").write_bytes(b"not a jpeg")
    cut.write_bytes(cut.read_bytes()[:cut.stat().st_size // 2])  # cut short: only a decode finds it
    with pytest.raises(ValueError) as error:
        check_identity_images(records, workers=1)
    lines = str(error.value).splitlines()
    assert lines[0] == "2 unreadable training image(s) in the identity folders, found before training:"
    assert lines[1].startswith(f"  identity m.0a: cannot decode image {tmp_path / 'African' / 'm.0a' / '1.jpg'}: ")
    assert lines[2].startswith(f"  identity m.0c: cannot decode image {cut}: ")
    assert lines[3].startswith("Replace or delete") and len(lines) == 4


def test_identity_overlap_guard():
    pairs = [Pair("Asian", 0, 1, "m.0a", 1, "m.0a", 2, 1), Pair("Asian", 0, 2, "m.0b", 1, "m.0c", 1, 0)]
    assert check_identity_overlap(["m.0x", "m.0y"], pairs) == []
    with pytest.raises(ValueError, match="2 training identities also appear in evaluated RFW pairs, e.g. m.0a, m.0c"):
        check_identity_overlap(["m.0c", "m.0a", "m.0x"], pairs)
    records = [IdentityImage(path="p", race="African", identity="m.0c", class_index=0)]
    assert check_identity_overlap(records, pairs, allow=True) == ["m.0c"]  # another race folder, same person


# ---------------------------------------------------------------------------------------------- demo generator output

def test_reads_toydata_identities_and_overlap_guard(tmp_path):
    rfw_root = make_rfw(str(tmp_path / "rfw"), n_ids=20, images_per_id=2, pairs_per_fold=1, size=16, seed=0,
                        aligned=False)
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
