"""Data checks before a long run: is a FairFace, RFW or identity-folder download complete and readable?

Each check_* function reads a dataset with its own reader (fairface, rfw, identities), so labels, layout
and missing files are judged exactly as a run would judge them, and returns a Report: counts per split and
race against the published sizes, image sizes from the file headers (no decode), and with `decode=True`
a full decode of every image by load_rgb. The readers raise at the first bad row; that error is reported
as one problem and ends that part of the check (a split, a race), so one call still covers the other parts.
A size that differs from the published one is a warning, never a problem: demo data and subsets are smaller.
"""
import collections
import concurrent.futures
import csv
import os
import time
from dataclasses import dataclass, field

from PIL import Image

from racecomp import cpus
from racecomp.datasets.fairface import FAIRFACE_SPLITS, read_fairface
from racecomp.datasets.identities import read_identity_folders
from racecomp.datasets.images import check_header, load_rgb
from racecomp.datasets.rfw import read_rfw_landmarks, read_rfw_pairs, rfw_image_path
from racecomp.errors import InputError
from racecomp.races import FAIRFACE_RACES, RFW_RACES

# Published sizes: FairFace 0.25-margin release; RFW 10 folds x (300 genuine + 300 impostor) per race;
# BUPT-Balancedface identities per race.
FAIRFACE_IMAGES = {"train": 86_744, "val": 10_954}
FAIRFACE_IMAGE_SIZE = (224, 224)  # (width, height); the 1.25-margin release is 448x448
RFW_FOLDS, RFW_PAIRS_PER_FOLD = 10, 600
BALANCEDFACE_IDENTITIES = 7_000

FAIRFACE_LAYOUT = "FairFace layout: fairface_label_{train,val}.csv, train/, val/"
RFW_LAYOUT = "RFW layout: test/txts/<Race>/<Race>_pairs.txt and <Race>_lmk.txt, test/data/<Race>/<id>/<id>_<NNNN>.jpg"
IDENTITY_LAYOUT = f"identity-folder layout: <Race>/<identity>/*.jpg, Race one of {', '.join(RFW_RACES)}"
LISTED = 10  # findings of one kind printed before "... and N more": a broken folder must not flood the terminal
READER_STOPPED = "the reader stops at its first error; fix it and run the check again"


def default_workers():
    """min(8, CPUs this process may use): header reads and decoding are CPU-bound per file."""
    return min(8, cpus.available_cores())


@dataclass
class Report:
    """Findings on one dataset: `lines` are (level, text) in order, level 'info', 'warning' or 'problem'."""
    name: str
    root: str
    lines: list = field(default_factory=list)
    warnings: int = 0
    problems: int = 0

    def add(self, level, text, count=1):
        """Add one line that stands for `count` findings (more than 1 for a '... and N more' line)."""
        self.lines.append((level, text))
        if level == "warning":
            self.warnings += count
        elif level == "problem":
            self.problems += count

    def add_listed(self, level, texts):
        """One line per finding, the first LISTED of them, then one line counting the rest."""
        for text in texts[:LISTED]:
            self.add(level, text)
        if len(texts) > LISTED:
            self.add(level, f"... and {len(texts) - LISTED:,} more like this", count=len(texts) - LISTED)

    def expect(self, what, published, found):
        """Compare a count with its published value: a mismatch is a warning (subsets and demo data are smaller)."""
        if found == published:
            self.add("info", f"{what}: {found:,} (the published size)")
        else:
            self.add("warning", f"{what}: expected {published:,} (published size), found {found:,}")

    @property
    def verdict(self):
        if self.problems:
            return f"PROBLEMS ({self.problems})"
        return f"OK with warnings ({self.warnings})" if self.warnings else "OK"

    def render(self):
        prefix = {"info": "  ", "warning": "  WARNING: ", "problem": "  PROBLEM: "}
        return "\n".join([f"== {self.name}: {self.root}"] + [prefix[level] + text for level, text in self.lines])


# ---------------------------------------------------------------------------------------------- images

def _read_header(path):
    """(size (w, h) or None, error or None, ends_ok): header only, no decode; a JPEG must end with FFD9.

    A JPEG cut short still has a readable header; the missing end-of-image marker is the one sign of it
    that costs no decoding (a 2-byte read), so header-only checks can warn about it.
    """
    try:
        with open(path, "rb") as handle:
            with Image.open(handle) as image:
                size, is_jpeg = image.size, image.format == "JPEG"
                check_header(image, path, path)
            handle.seek(-2, os.SEEK_END)
            ends_ok = not is_jpeg or handle.read(2) == b"\xff\xd9"
    except InputError as error:  # too large, or pixels of unknown range: the run refuses it alike
        return None, str(error), True
    except (OSError, ValueError, Image.DecompressionBombError) as error:  # UnidentifiedImageError is an OSError
        return None, f"{path}: cannot read the image header: {error}", True
    return size, None, ends_ok


def _read_headers(paths):
    return [_read_header(path) for path in paths]


def _decode(items):
    """Error message or None per (where, path); the pixels are dropped, only decodability matters."""
    errors = []
    for where, path in items:
        try:
            load_rgb(path, where)
            errors.append(None)
        except ValueError as error:
            errors.append(str(error))
    return errors


def _map_chunks(function, chunks, workers):
    if workers < 2 or len(chunks) < 2:  # a process pool would be pure overhead
        yield from map(function, chunks)
        return
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        yield from pool.map(function, chunks)


def _parallel(function, items, workers, chunk, label, every_fraction=None):
    """function(list of items) -> list of results, mapped over chunks in `workers` processes, in input order.

    Chunks keep the per-task overhead of a process pool small against a ~0.1 ms header read. Progress
    lines (done, rate, ETA) come every 10 s, or every `every_fraction` of the items but at most one per
    second, so a small set stays quiet; plain lines, no carriage returns, so a log file stays readable.
    Returns (results, seconds).
    """
    chunks = [items[i:i + chunk] for i in range(0, len(items), chunk)]
    start = last_time = time.monotonic()
    last_done, results = 0, []
    for part in _map_chunks(function, chunks, workers):
        results.extend(part)
        now, done = time.monotonic(), len(results)
        if now - last_time >= 10 or (every_fraction and done - last_done >= every_fraction * len(items)
                                     and now - last_time >= 1):
            rate = done / (now - start)
            print(f"  {label}: {done:,}/{len(items):,} images, {rate:,.0f}/s, "
                  f"ETA {(len(items) - done) / rate:,.0f} s", flush=True)
            last_time, last_done = now, done
    return results, time.monotonic() - start


def _header_flags(paths):
    """Per path: True when its header is unreadable or it is a JPEG without its end marker (cut short)."""
    return [error is not None or not ends_ok for _, error, ends_ok in _read_headers(paths)]


def drop_unreadable(records, decode=True, workers=None, where=None):
    """(good, bad) records (anything with `path`, `file`, `line`), both in input order, for a run's check before
    it starts: every image decoded (`decode`), or only its header read, with a full decode of any JPEG cut
    short (no end marker), in parallel processes. `bad` holds (record, error message naming file and line).
    `where(record)` names a record in the messages instead (records without a CSV line: identity images)."""
    workers = workers or default_workers()
    where = where or (lambda r: f"{r.file} (CSV line {r.line})")
    items = [(where(r), r.path) for r in records]
    if decode:
        errors, _ = _parallel(_decode, items, workers, 32, "decoding", every_fraction=0.1)
    else:
        flags, _ = _parallel(_header_flags, [path for _, path in items], workers, 512, "image headers")
        errors = [None] * len(items)
        flagged = [i for i, flag in enumerate(flags) if flag]  # decoded, so the message names file and line
        for i, error in zip(flagged, _decode([items[i] for i in flagged])):
            errors[i] = error
    good = [r for r, error in zip(records, errors) if error is None]
    bad = [(r, error) for r, error in zip(records, errors) if error is not None]
    return good, bad


def check_identity_images(records, workers=None):
    """Stop a run before it trains on identity-folder `records` (IdentityImage) if any image is unreadable:
    ValueError naming each (header read, a JPEG cut short decoded: drop_unreadable with decode=False). No flag
    leaves them out: in identity folders the files are the list, so deleting or replacing one is the fix."""
    _, bad = drop_unreadable(records, decode=False, workers=workers, where=lambda r: f"identity {r.identity}")
    if bad:
        errors = [error for _, error in bad]
        more = f"\n  ... and {len(errors) - LISTED} more" if len(errors) > LISTED else ""
        shown = "\n  ".join(errors[:LISTED]) + more
        raise InputError(f"{len(errors)} unreadable training image(s) in the identity folders, found before "
                         f"training:\n  {shown}\nReplace or delete the file(s), then run the same command again.")


def _check_images(report, items, workers, decode, published_size=None, equal_sizes_needed=False):
    """Sizes from the headers of all (where, path) items, and with `decode` a full decode of each.

    Sizes unlike the most common are warnings only with `equal_sizes_needed` (FairFace: the upscaling study
    batches images at native size unless --hr-size is given); FaceImages resizes or aligns every RFW and
    identity image, so there they are listed as information.
    """
    headers, seconds = _parallel(_read_headers, [path for _, path in items], workers, 512, "image headers")
    report.add("info", f"image headers: {len(items):,} read in {seconds:.1f} s ({workers} workers)")
    report.add_listed("problem", [error for _, error, _ in headers if error])
    sizes = collections.Counter(size for size, _, _ in headers if size)
    if sizes:
        common = sizes.most_common(1)[0][0]
        shown = ", ".join(f"{w}x{h}: {n:,}" for (w, h), n in sizes.most_common(5))
        report.add("info", f"image sizes (width x height): {shown}" +
                   (f", and {len(sizes) - 5} other sizes" if len(sizes) > 5 else ""))
        if published_size and common != published_size:
            report.add("warning", f"image size: expected {published_size[0]}x{published_size[1]} (published size), "
                                  f"found {common[0]}x{common[1]} in most images")
        odd = [f"{path}: {size[0]}x{size[1]}, unlike the most common {common[0]}x{common[1]}"
               for (_, path), (size, _, _) in zip(items, headers) if size and size != common]
        report.add_listed("warning" if equal_sizes_needed else "info", odd)
    readable = [item for item, (size, _, _) in zip(items, headers) if size]
    if not decode:
        report.add_listed("warning", [f"{path}: JPEG without its end marker (truncated?); --decode tells for sure"
                                      for (_, path), (_, _, ends_ok) in zip(items, headers) if not ends_ok])
        return
    errors, seconds = _parallel(_decode, readable, workers, 32, "decoding", every_fraction=0.05)
    report.add("info", f"decoded: {len(readable):,} images in {seconds:.1f} s ({workers} workers)")
    report.add_listed("problem", [error for error in errors if error])


def _check_root(report, root, layout):
    if os.path.isdir(root):
        return True
    report.add("problem", f"{root}: not found ({layout})")
    return False


# ---------------------------------------------------------------------------------------------- datasets

def check_fairface(root, decode=False, workers=None):
    """FairFace at `root`: CSVs through read_fairface, counts per split and race, image sizes (224x224)."""
    report, workers = Report("FairFace", root), workers or default_workers()
    if not _check_root(report, root, FAIRFACE_LAYOUT):
        return report
    items = []
    for split in FAIRFACE_SPLITS:
        csv_path = os.path.join(root, f"fairface_label_{split}.csv")
        if not os.path.isfile(csv_path):
            report.add("problem", f"{csv_path}: not found ({FAIRFACE_LAYOUT})")
            continue
        try:
            records = read_fairface(root, split)
        except (OSError, ValueError, csv.Error) as error:
            report.add("problem", f"{error} ({READER_STOPPED})")
            folder = os.path.join(root, split)
            # How incomplete the download is, without parsing the rest of the CSV ourselves.
            on_disk = len(os.listdir(folder)) if os.path.isdir(folder) else 0
            report.add("info", f"{split}: {on_disk:,} files in {folder} (published: {FAIRFACE_IMAGES[split]:,} images)")
            continue
        report.expect(f"{split} images", FAIRFACE_IMAGES[split], len(records))
        _race_counts(report, f"{split} images", collections.Counter(record.race for record in records), FAIRFACE_RACES)
        items += [(f"{record.file} (CSV line {record.line})", record.path) for record in records]
    if items:
        _check_images(report, items, workers, decode, FAIRFACE_IMAGE_SIZE, equal_sizes_needed=True)
    return report


def _race_counts(report, what, counts, races, flag_zero=True):
    """One line of counts per race of `races`; a race with none is a warning: it would have no result row."""
    report.add("info", f"{what} per race: " + ", ".join(f"{race} {counts[race]:,}" for race in races))
    for race in races if flag_zero else ():
        if not counts[race]:
            report.add("warning", f"{what}: none of race {race}; per-race results would have no {race} row")


def check_rfw(root, decode=False, workers=None):
    """RFW at `root`: pairs (10 folds of genuine then impostor) per race, landmarks, and the pairs' images."""
    report, workers = Report("RFW", root), workers or default_workers()
    for folder in (root, os.path.join(root, "test", "txts"), os.path.join(root, "test", "data")):
        if not _check_root(report, folder, RFW_LAYOUT):
            return report
    txts = os.path.join(root, "test", "txts")
    # A misspelled race folder would otherwise show only as that race's missing pairs file.
    report.add_listed("warning", [f"{os.path.join(txts, name)}: not an RFW race folder (races: {', '.join(RFW_RACES)})"
                                  for name in sorted(os.listdir(txts)) if name not in RFW_RACES])
    images = {}  # (race, id, n) -> path, each image once
    for race in RFW_RACES:
        try:
            pairs = read_rfw_pairs(root, race)
        except (OSError, ValueError) as error:
            report.add("problem", f"{race}: {error} ({READER_STOPPED})")
            continue
        fold_size = len(pairs) // RFW_FOLDS  # the reader checked 10 equal folds, each half genuine, half impostor
        keys = {(race, identity, n) for pair in pairs for identity, n in ((pair.id1, pair.n1), (pair.id2, pair.n2))}
        report.add("info", f"{race}: {len(pairs):,} pairs in {RFW_FOLDS} folds of {fold_size // 2:,} genuine + "
                           f"{fold_size // 2:,} impostor; {len({key[1] for key in keys}):,} identities, "
                           f"{len(keys):,} images")
        report.expect(f"{race} pairs", RFW_FOLDS * RFW_PAIRS_PER_FOLD, len(pairs))
        images.update({key: rfw_image_path(root, *key) for key in sorted(keys)})
        # Landmarks matter only to run_verify.py --align, so their faults are warnings.
        try:
            landmarks = read_rfw_landmarks(root, race)
        except (OSError, ValueError) as error:
            report.add("warning", f"{race}: {error} (landmarks are needed only for --align)")
            continue
        unmarked = sorted(keys - landmarks.keys())
        if unmarked:
            report.add("warning", f"{race}: {len(unmarked):,} of {len(keys):,} pair images have no landmarks, e.g. "
                                  f"{images[unmarked[0]]} (needed only for --align)")
    if images:
        _check_images(report, [(os.path.relpath(path, root), path) for path in images.values()], workers, decode)
    return report


def check_identities(root, decode=False, workers=None):
    """Identity folders (BUPT layout) at `root`: identities and images per race, image sizes."""
    report, workers = Report("identity folders", root), workers or default_workers()
    if not _check_root(report, root, IDENTITY_LAYOUT):
        return report
    try:
        records = read_identity_folders(root)
    except (OSError, ValueError) as error:
        report.add("problem", f"{error} ({IDENTITY_LAYOUT})")
        return report
    identities = {race: set() for race in RFW_RACES}
    for record in records:
        identities[record.race].add(record.identity)
    _race_counts(report, "identities", collections.Counter({race: len(ids) for race, ids in identities.items()}),
                 RFW_RACES)
    _race_counts(report, "images", collections.Counter(record.race for record in records), RFW_RACES, flag_zero=False)
    for race in RFW_RACES:
        if identities[race]:
            report.expect(f"{race} identities (BUPT-Balancedface)", BALANCEDFACE_IDENTITIES, len(identities[race]))
    # A race folder left as an archive is the usual incomplete download: the reader skips plain files.
    report.add_listed("warning", [f"{os.path.join(root, name)}: a file, not a race folder (archive not extracted?)"
                                  for name in sorted(os.listdir(root)) if os.path.isfile(os.path.join(root, name))
                                  and name.lower().endswith((".tar", ".gz", ".tgz", ".zip", ".7z"))])
    _check_images(report, [(os.path.relpath(record.path, root), record.path) for record in records], workers, decode)
    return report


CHECKS = {"fairface": check_fairface, "rfw": check_rfw, "identities": check_identities}
