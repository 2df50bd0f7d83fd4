"""What a data folder holds, cheaply: a fingerprint a run records in args.json and hashes into its recipe, so
a resume on other data is refused and summarize.py never pools runs made on different data.

Every file under the root counts (hidden files and folders left out): its path relative to the root and its
size; label files (LABEL_SUFFIXES) by their whole content; the images by the content of SAMPLED of them,
spread evenly over the sorted list. Modification times are left out on purpose: a copy of the dataset (rsync,
another machine, another mount point) is the same data and must give the same fingerprint. Cost on a
FairFace-size tree: BENCHMARKS.md.
"""
import hashlib
import os

LABEL_SUFFIXES = (".csv", ".txt")
SAMPLED = 64  # image files hashed by content
PARTS = ("listing", "labels", "sample")  # what a fingerprint compares, in the order differences() names them


def _files(root):
    """Sorted (relative path, size) of every file under `root`, hidden files and folders left out."""
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in names:
            if not name.startswith("."):
                path = os.path.join(folder, name)
                found.append((os.path.relpath(path, root).replace(os.sep, "/"), os.path.getsize(path)))
    return sorted(found)


def _hash_contents(root, relative_paths):
    digest = hashlib.sha1()
    for relative in relative_paths:
        digest.update(relative.encode("utf-8", "surrogateescape") + b"\0")
        with open(os.path.join(root, relative), "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def fingerprint(root):
    """{"root" (absolute), "files", "bytes", "listing", "labels", "sample", "id"} of the data folder `root`:
    `id` hashes the three parts, the rest say where two fingerprints differ (differences())."""
    root = os.path.abspath(root)
    found = _files(root)
    labels = [path for path, _ in found if path.lower().endswith(LABEL_SUFFIXES)]
    others = [path for path, _ in found if not path.lower().endswith(LABEL_SUFFIXES)]
    sample = others[::max(1, -(-len(others) // SAMPLED))]
    listing = hashlib.sha1("".join(f"{path}\0{size}\n" for path, size in found).encode("utf-8", "surrogateescape"))
    parts = {"listing": listing.hexdigest(), "labels": _hash_contents(root, labels),
             "sample": _hash_contents(root, sample)}
    identity = hashlib.sha1("".join(parts[name] for name in PARTS).encode()).hexdigest()[:16]
    return {"root": root, "files": len(found), "bytes": sum(size for _, size in found), **parts, "id": identity}


def differences(before, now):
    """What differs between two fingerprints, in words ([] when they are the same data)."""
    if before.get("id") == now.get("id"):
        return []
    said = {"listing": "file names or sizes", "labels": "label files' content", "sample": "image content"}
    found = [said[name] for name in PARTS if before.get(name) != now.get(name)]
    counts = (f"{before.get('files')} files, {before.get('bytes')} bytes then; "
              f"{now['files']} files, {now['bytes']} bytes now")
    return [f"{', '.join(found) or 'fingerprint'} differ ({counts})"]
