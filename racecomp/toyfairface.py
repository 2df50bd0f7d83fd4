"""The FairFace-layout demo writer: fairface_label_{train,val}.csv and train/, val/ JPEGs of procedural faces
(racecomp.toyfaces; made-up groups, not real people), rendered in worker processes."""
import csv
import math
import multiprocessing
import os

import numpy as np

from racecomp.errors import InputError
from racecomp.races import FAIRFACE_RACES
from racecomp.toyfaces import group_styles, sample_identity, sample_view
from racecomp.toyoutput import GENERATOR_VERSION, check_common, finish_output, prepare_output, save_jpeg
from racecomp.toyrender import render_face, similarity_matrix

FAIRFACE_AGE_BINS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
FAIRFACE_GENDERS = ("Male", "Female")

# Random-stream tag of FairFace images (racecomp.toyrfw has the others): equal seeds give unrelated faces across kinds.
_STREAM_FAIRFACE = 11
# Texture gain of the hard FairFace group: 1 + _FAIRFACE_HARD_GAIN * hard_strength.
_FAIRFACE_HARD_GAIN = 2.0


def _balanced_labels(rng, count, vocabulary):
    """`count` labels, each label of `vocabulary` used count // len or +1 times, in seeded random order."""
    labels = [vocabulary[i % len(vocabulary)] for i in range(count)]
    rng.shuffle(labels)
    return labels


def _fairface_image(job):
    """Render and write one FairFace demo image; job = (path, seed, split_index, index, race, size, gain).

    The image depends on the job only (its own random stream), so any number of processes in any order
    writes the same bytes.
    """
    path, seed, split_index, index, race, size, gain = job
    rng = np.random.default_rng([seed, _STREAM_FAIRFACE, split_index, index])
    identity = sample_identity(rng, group_styles(FAIRFACE_RACES)[race])
    view = sample_view(rng)
    # Loose crop with margin: the face spans about 60% of the image, small pose jitter.
    scale = size / 112.0 * 0.62 * float(np.exp(rng.normal(0.0, 0.05)))
    angle = math.radians(float(rng.normal(0.0, 5.0)))
    centre = ((size - 1) / 2 + rng.normal(0.0, 0.03 * size), (size - 1) / 2 + rng.normal(0.0, 0.03 * size))
    matrix = similarity_matrix(scale, angle, (56.0, 64.0), centre)
    pixels, _ = render_face(identity, view, matrix, size, size, texture_gain=gain, rng=rng)
    save_jpeg(pixels, path)


def _run_jobs(function, jobs, workers, label):
    """function(job) for every job, in `workers` processes (1: in this one), with progress lines."""
    from racecomp.progress import Progress

    progress = Progress(label, len(jobs))
    if workers <= 1 or len(jobs) < 2:
        for job in jobs:
            function(job)
            progress.update(1)
    else:
        # spawn: a fresh interpreter per worker, safe whatever threads the caller (e.g. torch) has started.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(function, jobs, chunksize=max(1, min(64, len(jobs) // (8 * workers)))):
                progress.update(1)
    progress.finish()


def make_fairface(out_dir, n_train=350, n_val=140, size=64, seed=0, hard_race=None, hard_strength=1.0, workers=1):
    """Write a FairFace-layout demo set: fairface_label_{train,val}.csv and train/, val/ JPEGs (quality 95).

    Each image is a new identity; races are balanced to within one image over FAIRFACE_RACES in both
    splits (so each split needs at least 7 images). age, gender and service_test are random labels,
    independent of the image. `hard_race` gets `1 + 2 * hard_strength` times the fine skin/hair texture.
    `workers` processes render the images (the bytes do not depend on it). Until the label CSVs are
    written, last, the folder holds UNFINISHED_MARKER: the same call again (after a crash or Ctrl-C) keeps
    the images already there and renders the rest. Returns the absolute root path.
    """
    check_common(size, seed, hard_race, hard_strength, FAIRFACE_RACES)
    for split, count in (("train", n_train), ("val", n_val)):
        if count < len(FAIRFACE_RACES):
            raise InputError(f"n_{split}={count}: need at least {len(FAIRFACE_RACES)} images so every race is present")
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    root = prepare_output(out_dir, {"kind": "fairface", "version": GENERATOR_VERSION, "n_train": n_train,
                                     "n_val": n_val, "size": size, "seed": seed, "hard_race": hard_race,
                                     "hard_strength": hard_strength})
    jobs, tables = [], {}
    for split_index, (split, count) in enumerate((("train", n_train), ("val", n_val))):
        os.makedirs(os.path.join(root, split), exist_ok=True)
        label_rng = np.random.default_rng([seed, _STREAM_FAIRFACE, split_index])
        races = _balanced_labels(label_rng, count, FAIRFACE_RACES)
        rows = []
        for index, race in enumerate(races, start=1):
            name = f"{split}/{index}.jpg"
            gain = 1.0 + _FAIRFACE_HARD_GAIN * hard_strength if race == hard_race else 1.0
            if not os.path.isfile(os.path.join(root, name)):
                jobs.append((os.path.join(root, name), seed, split_index, index, race, size, gain))
            rows.append((name, FAIRFACE_AGE_BINS[int(label_rng.integers(len(FAIRFACE_AGE_BINS)))],
                         FAIRFACE_GENDERS[int(label_rng.integers(2))], race, str(bool(label_rng.random() < 0.5))))
        tables[split] = rows
    val_first = [job for job in jobs if job[2] == 1] + [job for job in jobs if job[2] == 0]  # the smaller split
    _run_jobs(_fairface_image, val_first, workers, f"generate {size} px")
    for split, rows in tables.items():
        with open(os.path.join(root, f"fairface_label_{split}.csv"), "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["file", "age", "gender", "race", "service_test"])
            writer.writerows(rows)
    finish_output(root)
    return root
