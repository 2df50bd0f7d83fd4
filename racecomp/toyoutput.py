"""Writing a demo dataset folder (racecomp.toydata): whole JPEGs, the marker of an unfinished generation that
the same call resumes, and the argument checks every writer shares."""
import json
import os

from PIL import Image

from racecomp.errors import InputError

# Bump when the drawing (racecomp.toyfaces, toyrender) or the layout changes, so cached demo data is regenerated.
GENERATOR_VERSION = "1"


def save_jpeg(pixels, path):
    """JPEG quality 95, written to a temporary name and renamed: a file present under its name is whole."""
    partial = f"{path}.partial"
    Image.fromarray(pixels).save(partial, format="JPEG", quality=95)
    os.replace(partial, path)


UNFINISHED_MARKER = "unfinished_generation.json"


def prepare_output(out_dir, arguments=None):
    """Create `out_dir`; refuse a non-empty one, so leftovers of another run never mix into a dataset.

    With `arguments` (a maker's that can resume), the folder is marked unfinished with them until
    finish_output; a folder marked with the same arguments is accepted again, to resume.
    """
    marker = os.path.join(out_dir, UNFINISHED_MARKER)
    text = None if arguments is None else json.dumps(arguments, sort_keys=True) + "\n"
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        resumable = False
        if text is not None and os.path.isfile(marker):
            with open(marker, encoding="utf-8") as handle:
                resumable = handle.read() == text
        if not resumable:
            raise InputError(f"{out_dir}: folder is not empty; demo data is written only into a new or empty folder "
                             f"(or, to resume, into an unfinished one with the same arguments)")
        print(f"resuming the unfinished generation in {out_dir}", flush=True)
    os.makedirs(out_dir, exist_ok=True)
    if text is not None:
        with open(marker, "w") as handle:
            handle.write(text)
    return os.path.abspath(out_dir)


def finish_output(root):
    os.remove(os.path.join(root, UNFINISHED_MARKER))


def check_common(size, seed, hard_race, hard_strength, vocabulary):
    if size < 16:
        raise InputError(f"size must be at least 16 px, got {size}")
    if seed < 0:
        raise InputError(f"seed must be >= 0, got {seed}")
    if hard_strength < 0:
        raise InputError(f"hard_strength must be >= 0, got {hard_strength}")
    if hard_race is not None and hard_race not in vocabulary:
        raise InputError(f"hard_race {hard_race!r} is not one of {list(vocabulary)}")
