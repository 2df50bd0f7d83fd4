"""Everything the project writes goes through here: atomic files, run records, safe checkpoint loading.

Every file is written to a temporary name in the same folder, flushed to disk and renamed over the
target, so a crash (or a full disk) never leaves a half-written file that a later step reads as whole.
"""
import contextlib
import csv
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile

from racecomp.errors import InputError
from racecomp.schema import (ADDED_LATER, FINISHED_MARKER, KERNEL_ARGS, NON_RESULT_ARGS, RECORD_FILE, RESUME_ARGS,
                             read_record)

# torch is imported inside the functions that need it: the tables write through this module and stand on numpy.


def _umask():
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path, temporary=None):
    """Yield a temporary file name beside `path` for the caller to write; on success fsync that file and
    rename it over `path`, on any error remove it. `temporary` names it (e.g. after the writing process, so
    a later run can remove one left by a killed process); default: a fresh unique hidden name."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if temporary is None:
        fd, temporary = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
        os.close(fd)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it 0600; results are for the whole group
    try:
        yield temporary
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


@contextlib.contextmanager
def atomic_open(path, mode="w", **kwargs):
    """open() a temporary file beside `path`, renamed to `path` once written (atomic_path)."""
    with atomic_path(path) as temporary:
        with open(temporary, mode, **kwargs) as handle:
            yield handle


def write_json(path, obj):
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")


def write_csv(path, rows, fieldnames=None):
    """Write dict rows with a header; `fieldnames` defaults to the first row's keys in order."""
    rows = list(rows)
    if fieldnames is None:
        if not rows:
            raise InputError(f"{path}: no rows and no fieldnames")
        fieldnames = list(rows[0].keys())
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)


def write_bytes(path, data):
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def save_checkpoint(state, path):
    """torch.save a flat dict atomically (serialized in memory first, then one atomic write)."""
    import torch
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes(path, buffer.getvalue())


def load_checkpoint(path):
    """Load a checkpoint with weights_only=True: tensors and plain containers only, never arbitrary pickles."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    import torch
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError or RuntimeError depending on the payload
        raise InputError(f"{path}: refused to load (not a plain tensor checkpoint, or corrupt): {error}") from error


def package_hash():
    """Short hash of the racecomp package's source files (paths and contents)."""
    package = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha1()
    for folder, subfolders, names in os.walk(package):
        subfolders[:] = sorted(name for name in subfolders if name != "__pycache__")
        for name in sorted(name for name in names if name.endswith(".py")):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, package).encode() + b"\0")
            with open(path, "rb") as handle:
                digest.update(handle.read())
    return digest.hexdigest()[:12]


def code_version():
    """git commit of the RaceComp checkout, with '+dirty-<package_hash>' when modified (two different changes
    read as two versions); outside git 'files-<package_hash>'."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"files-{package_hash()}"
    return commit + (f"+dirty-{package_hash()}" if dirty else "")


def library_versions():
    import numpy
    import PIL
    import timm
    import torch
    import torchvision
    return {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "numpy": numpy.__version__, "pillow": PIL.__version__,
            "platform": platform.platform()}


def run_record(args, **extra):
    """What produced a run: every resolved argument, code version and library versions, plus `extra`; with
    --recipe, where that recipe departs from its source (recipes.DEPARTURES)."""
    from racecomp import recipes
    recipe = getattr(args, "recipe", None)
    departures = {"recipe_departures": list(recipes.DEPARTURES[recipe])} if recipe else {}
    return {"args": recorded_args(args), "code_version": code_version(), "versions": library_versions(),
            **departures, **extra}


def recorded_args(args):
    """`args` as args.json and checkpoints hold them: {flag name: value}, sorted by name."""
    return dict(sorted(vars(args).items()))


def prepare_out_dir(out_dir, args, overwrite=False, compare_ignore=NON_RESULT_ARGS + KERNEL_ARGS + RESUME_ARGS):
    """Decide what to do with an existing --out folder, say it, and return 'fresh', 'resume' or 'skip'.

    - finished results there (FINISHED_MARKER): 'skip' unless --overwrite;
    - a checkpoint from the same arguments: 'resume';
    - results from different arguments: refuse (ValueError naming the differing arguments) unless --overwrite.
    Never deletes anything by itself (racecomp.studies.run_folder, which calls it, removes an old run's results
    on --overwrite and checks the data, code and finished marker on top).
    """
    os.makedirs(out_dir, exist_ok=True)
    if overwrite:
        print(f"[out] {out_dir}: --overwrite given; earlier results there will be replaced")
        return "fresh"
    record = previous_record(out_dir)
    if record:
        previous = record["args"]
        current = json.loads(json.dumps(vars(args), default=str))
        if current.get("amp") == "auto":  # not resolved here (racecomp.sweep's status): the run records its own
            current["amp"] = previous.get("amp", "auto")
        differing = sorted(k for k in set(previous) | set(current)
                           if k not in compare_ignore and previous.get(k, ADDED_LATER.get(k)) != current.get(k))
        if differing:
            raise InputError(f"{out_dir} holds a run with different arguments ({', '.join(differing)}); "
                             f"choose another --out or pass --overwrite")
    if os.path.isfile(os.path.join(out_dir, FINISHED_MARKER)):
        print(f"[out] {out_dir}: finished results already there; skipping (pass --overwrite to redo)")
        return "skip"
    if os.path.isfile(os.path.join(out_dir, "checkpoint.pth")):
        print(f"[out] {out_dir}: resuming from its last checkpoint")
        return "resume"
    return "fresh"


def previous_record(out_dir):
    """The args.json of the run already in `out_dir` (schema.read_record), {} when there is none; InputError when
    it cannot be used."""
    try:
        return read_record(out_dir) or {}
    except ValueError as error:
        raise InputError(f"{os.path.join(out_dir, RECORD_FILE)}: {error}; use --overwrite or another --out") from None


def finish_run(out_dir, keep_checkpoint=False):
    """After a run's last file: remove its resumable checkpoint.pth (optimizer state, ~3x the model) unless
    asked to keep it; the final weights (best.pth / model.pth) stay. A finished run is never resumed."""
    path = os.path.join(out_dir, "checkpoint.pth")
    if not keep_checkpoint and os.path.isfile(path):
        os.remove(path)
