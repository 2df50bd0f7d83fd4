"""The RFW-layout demo writer (test/data, per race the pairs and lmk files) and the BUPT-layout identity-folder
writer, of procedural faces (racecomp.toyfaces; made-up groups, not real people)."""
import math
import os
import shutil

import numpy as np

from racecomp.errors import InputError
from racecomp.races import RFW_RACES
from racecomp.toyfaces import group_styles, sample_identity, sample_view
from racecomp.toyoutput import check_common, prepare_output, save_jpeg
from racecomp.toyrender import render_face, similarity_matrix

RFW_FOLDS = 10
# Freebase-style ids (m.0 + characters of the Freebase id alphabet, '_' included as in real RFW ids
# such as m.0b__05j). The first character after "m.0" separates the namespaces, so demo RFW and demo
# identity-folder ids can never collide, whatever the seeds.
_ID_ALPHABET = "0123456789bcdfghjklmnpqrstvwxyz_"
_RFW_ID_LEADS = "bcdfgh"
_IDENTITY_ID_LEADS = "jklmnp"

# Random-stream tags (racecomp.toyfairface has 11): equal seeds give unrelated faces across kinds.
_STREAM_RFW, _STREAM_IDENTITIES = 12, 13

# Verification knob: within-identity variation x (1 + gain * strength), between-identity spread / (1 + gain * strength).
_WITHIN_HARD_GAIN = 2.0
_BETWEEN_HARD_GAIN = 1.0


def _make_ids(rng, count, leads, taken):
    """`count` new Freebase-style ids (m.0 + lead + 5 characters) not in `taken`; adds them to `taken`."""
    ids = []
    while len(ids) < count:
        middle = "".join(rng.choice(list(_ID_ALPHABET), size=4))
        tail = rng.choice(list(_ID_ALPHABET[:-1]))  # no trailing '_'
        identity_id = "m.0" + leads[int(rng.integers(len(leads)))] + middle + tail
        if identity_id not in taken:
            taken.add(identity_id)
            ids.append(identity_id)
    return ids


def _verification_knobs(race, hard_race, hard_strength):
    """(within-identity variation, between-identity spread, occlusion probability) of `race`."""
    if race != hard_race:
        return 1.0, 1.0, 0.1
    return (1.0 + _WITHIN_HARD_GAIN * hard_strength, 1.0 / (1.0 + _BETWEEN_HARD_GAIN * hard_strength),
            0.1 * (1.0 + 3.0 * hard_strength))


def _render_identity_images(identity, rng, count, size, variation, occlusion_probability, aligned):
    """`count` (pixels, landmarks) views of one identity: aligned crops at `size` or unaligned 2x canvases."""
    images = []
    for _ in range(count):
        view = sample_view(rng, variation, occlusion_probability)
        if aligned:
            # Template frame scaled to `size`, with small pose jitter (within-identity variation).
            scale = size / 112.0 * float(np.exp(rng.normal(0.0, 0.04 * variation)))
            angle = math.radians(float(rng.normal(0.0, 4.0 * variation)))
            shift = rng.normal(0.0, 0.025 * size * variation, size=2)
            centre = (56.0 * size / 112.0 + shift[0], 56.0 * size / 112.0 + shift[1])
            height = width = size
        else:
            # Bigger canvas, face off-centre and rotated, so alignment has real work to do.
            height = width = 2 * size
            scale = size / 112.0 * float(rng.uniform(0.8, 1.2))
            angle = math.radians(float(rng.uniform(-25.0, 25.0)))
            centre = (size + rng.uniform(-0.3, 0.3) * size, size + rng.uniform(-0.3, 0.3) * size)
        matrix = similarity_matrix(scale, angle, (56.0, 56.0), centre)
        images.append(render_face(identity, view, matrix, height, width, rng=rng))
    return images


def make_rfw(out_dir, n_ids=30, images_per_id=4, pairs_per_fold=10, size=112, seed=0, hard_race=None,
             hard_strength=1.0, aligned=True):
    """Write an RFW-layout demo test set: test/data, and per race the pairs and lmk files.

    `n_ids` identities per race, `images_per_id` images each (numbered from 1). Identities are split
    into 10 disjoint folds; each fold lists `pairs_per_fold` genuine then `pairs_per_fold` impostor
    pairs (impostors within the race and fold), without repeated pairs. The lmk file gives each image's
    true 5 landmarks; its middle field is the identity's index within the race. aligned=True: `size`
    px crops near the ArcFace template; False: 2*size px canvases with the face off-centre and rotated.
    Returns the absolute root path.
    """
    check_common(size, seed, hard_race, hard_strength, RFW_RACES)
    if n_ids < 2 * RFW_FOLDS:
        raise InputError(f"n_ids={n_ids}: need at least {2 * RFW_FOLDS} identities per race "
                         "(2 per fold for impostor pairs)")
    if images_per_id < 2:
        raise InputError(f"images_per_id={images_per_id}: genuine pairs need at least 2 images per identity")
    if pairs_per_fold < 1:
        raise InputError(f"pairs_per_fold must be >= 1, got {pairs_per_fold}")
    ids_per_fold = n_ids // RFW_FOLDS  # the smallest fold decides how many distinct pairs exist
    genuine_available = ids_per_fold * images_per_id * (images_per_id - 1) // 2
    impostor_available = ids_per_fold * (ids_per_fold - 1) // 2 * images_per_id ** 2
    if pairs_per_fold > min(genuine_available, impostor_available):
        raise InputError(f"pairs_per_fold={pairs_per_fold} exceeds the {min(genuine_available, impostor_available)} "
                         f"distinct pairs per fold that n_ids={n_ids}, images_per_id={images_per_id} allow")
    root = prepare_output(out_dir)
    styles = group_styles(RFW_RACES)
    taken = set()
    for race_index, race in enumerate(RFW_RACES):
        variation, spread, occlusion_probability = _verification_knobs(race, hard_race, hard_strength)
        id_rng = np.random.default_rng([seed, _STREAM_RFW, race_index])
        ids = _make_ids(id_rng, n_ids, _RFW_ID_LEADS, taken)
        lmk_lines = []
        for label, identity_id in enumerate(ids):
            rng = np.random.default_rng([seed, _STREAM_RFW, race_index, label])
            identity = sample_identity(rng, styles[race], spread)
            folder = os.path.join(root, "test", "data", race, identity_id)
            os.makedirs(folder)
            images = _render_identity_images(identity, rng, images_per_id, size, variation, occlusion_probability,
                                             aligned)
            for n, (pixels, landmarks) in enumerate(images, start=1):
                name = f"{identity_id}_{n:04d}.jpg"
                save_jpeg(pixels, os.path.join(folder, name))
                coordinates = "\t".join(f"{value:.2f}" for value in landmarks.reshape(-1))
                lmk_lines.append(f"test/data/{race}/{identity_id}/{name}\t{label}\t{coordinates}\n")
        pair_lines = _rfw_pairs(id_rng, ids, images_per_id, pairs_per_fold)
        txt_folder = os.path.join(root, "test", "txts", race)
        os.makedirs(txt_folder)
        with open(os.path.join(txt_folder, f"{race}_pairs.txt"), "w") as handle:
            handle.writelines(pair_lines)
        with open(os.path.join(txt_folder, f"{race}_lmk.txt"), "w") as handle:
            handle.writelines(lmk_lines)
    return root


def _rfw_pairs(rng, ids, images_per_id, pairs_per_fold):
    """Pair lines of one race: 10 folds over disjoint identities, each genuine lines then impostor lines."""
    order = rng.permutation(len(ids))
    lines = []
    for fold in range(RFW_FOLDS):
        members = [ids[i] for i in order[fold::RFW_FOLDS]]
        genuine = [(member, n1, n2) for member in members
                   for n1 in range(1, images_per_id + 1) for n2 in range(n1 + 1, images_per_id + 1)]
        impostor = [(a, n1, b, n2) for i, a in enumerate(members) for b in members[i + 1:]
                    for n1 in range(1, images_per_id + 1) for n2 in range(1, images_per_id + 1)]
        for index in rng.choice(len(genuine), size=pairs_per_fold, replace=False):
            lines.append("{}\t{}\t{}\n".format(*genuine[index]))
        for index in rng.choice(len(impostor), size=pairs_per_fold, replace=False):
            lines.append("{}\t{}\t{}\t{}\n".format(*impostor[index]))
    return lines


def make_identities(out_dir, n_ids_per_race=16, images_per_id=6, size=112, seed=0, hard_race=None,
                    hard_strength=1.0, overlap_with_rfw=None):
    """Write a BUPT-layout identity-folder demo set: <Race>/<id>/<id>_<NNNN>.jpg, aligned `size` px crops.

    Ids come from a namespace disjoint from make_rfw's, so the two never share an identity, whatever
    the seeds. overlap_with_rfw=<RFW root> deliberately copies one RFW identity that its pairs use
    (with its images) into the set, to test overlap guards. Returns the absolute root.
    """
    check_common(size, seed, hard_race, hard_strength, RFW_RACES)
    if n_ids_per_race < 1 or images_per_id < 1:
        raise InputError(f"need n_ids_per_race >= 1 and images_per_id >= 1, got {n_ids_per_race}, {images_per_id}")
    overlap = _first_rfw_identity(overlap_with_rfw) if overlap_with_rfw is not None else None
    root = prepare_output(out_dir)
    styles = group_styles(RFW_RACES)
    taken = set()
    for race_index, race in enumerate(RFW_RACES):
        variation, spread, occlusion_probability = _verification_knobs(race, hard_race, hard_strength)
        ids = _make_ids(np.random.default_rng([seed, _STREAM_IDENTITIES, race_index]), n_ids_per_race,
                        _IDENTITY_ID_LEADS, taken)
        for label, identity_id in enumerate(ids):
            rng = np.random.default_rng([seed, _STREAM_IDENTITIES, race_index, label])
            identity = sample_identity(rng, styles[race], spread)
            folder = os.path.join(root, race, identity_id)
            os.makedirs(folder)
            images = _render_identity_images(identity, rng, images_per_id, size, variation, occlusion_probability, True)
            for n, (pixels, _) in enumerate(images, start=1):
                save_jpeg(pixels, os.path.join(folder, f"{identity_id}_{n:04d}.jpg"))
    if overlap is not None:
        race, identity_id, source = overlap
        shutil.copytree(source, os.path.join(root, race, identity_id))
    return root


def _first_rfw_identity(rfw_root):
    """(race, id, folder) of the identity in the first line of the first race's pairs file of an RFW tree.

    Taken from the pairs, not the folders, so that the overlap is one that an evaluation actually uses.
    """
    for race in RFW_RACES:
        pairs_path = os.path.join(rfw_root, "test", "txts", race, f"{race}_pairs.txt")
        if os.path.isfile(pairs_path):
            with open(pairs_path) as handle:
                identity_id = handle.readline().split("\t")[0]
            folder = os.path.join(rfw_root, "test", "data", race, identity_id)
            if not os.path.isdir(folder):
                raise InputError(f"{pairs_path}:1: identity {identity_id!r} has no folder {folder}")
            return race, identity_id, folder
    raise InputError(f"overlap_with_rfw={rfw_root}: no test/txts/<Race>/<Race>_pairs.txt found")
