"""Identity folders for recognition training (BUPT layout), and the guard against training on RFW's people.

Layout: `<root>/<Race>/<identity>/*.jpg|jpeg|png`, race folders named by RFW labels.
"""
import os
from dataclasses import dataclass

from racecomp.errors import InputError
from racecomp.races import RFW_RACES, check_label

IDENTITY_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


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
                raise InputError(f"folder {identity_dir}: identity folder has no images")
            found.extend((race, identity, os.path.join(identity_dir, name)) for name in names)
    if not found:
        raise InputError(f"{root}: no identity images found under <Race>/<identity>/")
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
        raise InputError(f"{len(overlap)} training identities also appear in evaluated RFW pairs, e.g. "
                         f"{', '.join(overlap[:10])}; remove them from training or allow the overlap explicitly")
    return overlap
