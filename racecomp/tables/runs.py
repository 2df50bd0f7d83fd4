"""Finished run folders found (find_run_folders) and each read once into a Run (load_runs); every file or run left
out is reported to a Problems with its path and the reason.
"""
import glob
import math
import os
from dataclasses import dataclass

from racecomp.schema import (BIAS_PROBE_FILE, COLLAPSE_CHECKS, DATA_KEY, FINISHED_MARKER, ITEM_FILES,
                             PROBE_GENDER_FILE, RECORD_FILE, WARNINGS_KEY, read_record)
from racecomp.tables.run_files import read_bias_probe, read_gender_probe, read_items, read_per_race


class Problems:
    """[(path, message)] of everything left out or suspicious (`entries`), each printed when found unless quiet."""

    def __init__(self, echo=True):
        self.entries, self.echo = [], echo

    @classmethod
    def quiet(cls):
        """For a search whose misses are expected, which the caller reports in its own words."""
        return cls(echo=False)

    def add(self, path, message):
        if (path, message) not in self.entries:  # the same check may run for several tables
            self.entries.append((path, message))
            if self.echo:
                print(f"[problem] {path}: {message}", flush=True)


@dataclass(frozen=True, eq=False)
class Run:
    """One finished run, read once (load_run) and never changed; compared and hashed as itself."""
    folder: str
    family: str  # upscale, verify, quantize-upscale or quantize-verify
    kind: str  # "upscale" or "verify": which per-item file and metrics
    columns: dict  # identifying column -> value as written, in file order
    per_race: dict  # race -> {"n": items, metric: mean}; optional metrics only when the run has them
    items: list  # run_files.read_items' dicts, None when the per-item file is missing or unusable
    record: dict = None  # args.json: {"args": every resolved argument, ...}; None without one
    gender_probe: list = None  # run_files.read_gender_probe's rows; None without a usable probe_gender.csv
    bias_probe: list = None  # run_files.read_bias_probe's rows; None without a usable bias_probe.csv
    bias_transfer_score: float = None  # of bias_probe's rows, from args.json; None when unknown (reported)

    @property
    def path(self):
        return os.path.join(self.folder, FINISHED_MARKER)

    @property
    def args(self):
        return (self.record or {}).get("args")

    @property
    def warnings(self):
        """The sanity checks (racecomp.sanity) the run failed, from args.json."""
        return [found["check"] for found in (self.record or {}).get(WARNINGS_KEY, [])]

    @property
    def data_ids(self):
        """{argument name: fingerprint id} of the data folders the run read (args.json), None when unrecorded."""
        found = (self.record or {}).get(DATA_KEY)
        return {name: fingerprint["id"] for name, fingerprint in found.items()} if found else None


def find_run_folders(patterns, problems):
    """Sorted folders holding per_race.csv under the given folders, per_race.csv files or globs (recursively).
    Reported: a pattern with no new finished run, a named file that is not a per_race.csv, and an unfinished
    run (a folder with args.json but no per_race.csv, and no finished run inside)."""
    found, unfinished = {}, []  # real path -> path as found
    for pattern in patterns:
        before = len(found)
        for match in sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]:
            if os.path.isfile(match):
                if os.path.basename(match) == FINISHED_MARKER:
                    found.setdefault(os.path.realpath(os.path.dirname(match)), os.path.dirname(match) or ".")
                elif not glob.has_magic(pattern):
                    problems.add(match, f"not a run folder or {FINISHED_MARKER}")
                continue
            visited = set()  # a linked run folder is read as through a glob; a link back up is walked once
            for folder, subfolders, names in os.walk(match, followlinks=True):
                visited.add(os.path.realpath(folder))
                subfolders[:] = sorted(name for name in subfolders
                                       if os.path.realpath(os.path.join(folder, name)) not in visited)
                if FINISHED_MARKER in names:
                    found.setdefault(os.path.realpath(folder), folder)
                elif RECORD_FILE in names:
                    unfinished.append(folder)
        if len(found) == before:
            problems.add(pattern, f"no {FINISHED_MARKER} found (nothing there, or only runs already found)")
    for folder in dict.fromkeys(unfinished):  # a quantization run's top folder holds args.json, its runs inside
        inside = os.path.realpath(folder) + os.sep
        if not any(real.startswith(inside) for real in found):
            problems.add(folder, f"unfinished run ({RECORD_FILE} but no {FINISHED_MARKER}): left out")
    return sorted(found.values())


def load_runs(folders, problems):
    """The Run of each folder that has a usable per_race.csv; whatever a folder holds, it is at worst a problem."""
    runs = []
    for folder in folders:
        try:
            run = load_run(folder, problems)
        except Exception as error:  # noqa: BLE001 -- one bad folder never ends the tables of every other run
            problems.add(folder, f"unreadable run folder ({type(error).__name__}: {error}); run left out")
            continue
        if run is not None:
            runs.append(run)
    unchecked = [run.folder for run in runs if run.record is not None and DATA_KEY not in run.record]
    if unchecked:  # one line: a sweep of older runs is one fact; they may pool runs on other data at one path
        problems.add(os.path.commonpath(unchecked) if len(unchecked) > 1 else unchecked[0],
                     f"{len(unchecked)} run(s) made before runs recorded their data's fingerprint (args.json has no "
                     f"{DATA_KEY}): pooled by recipe, which knows their data by its path only")
    return runs


def load_run(folder, problems):
    """The Run of a folder, or None after reporting why its per_race.csv or args.json cannot be used. A missing
    or unusable per-item file is reported and leaves items=None: the run is then only in the per-race tables."""
    path = os.path.join(folder, FINISHED_MARKER)
    try:
        columns, family, kind, per_race = read_per_race(path)
    except ValueError as error:
        problems.add(path, f"{error}; run left out")
        return None
    for race, metric in [(race, m) for race, values in per_race.items() for m, v in values.items() if v == math.inf]:
        problems.add(path, f"{race}: mean {metric} is infinite (an image reproduced exactly); kept as inf")
    record = _read_record(folder, problems)
    error = record is not None and _record_error(record)
    if error:
        problems.add(os.path.join(folder, RECORD_FILE), f"{error}; run left out")
        return None
    for found in (record or {}).get(WARNINGS_KEY, []):
        problems.add(path, f"sanity check failed, its rows are marked: {found['message']}")
    collapsed = _recognizer_collapsed(path, record, problems)
    for values in per_race.values() if collapsed else ():
        values.pop("id_cos", None)
    probes = _read_probes(folder, columns, record, problems)
    item_path, items = os.path.join(folder, ITEM_FILES[kind]), None
    try:
        items = read_items(item_path, kind, per_race, left_out=("id_cos",) if collapsed else ())
    except ValueError as error:
        problems.add(item_path, f"{error}; the run appears only in the per-race tables (no CIs, no paired tests)")
    return Run(folder, family, kind, columns, per_race, items, record, **probes)


def _read_record(folder, problems):
    """The folder's args.json, or None: it has none, or it is unreadable (reported)."""
    try:
        return read_record(folder)
    except ValueError as error:
        problems.add(os.path.join(folder, RECORD_FILE), f"{error}; the run's settings are not in the recipe legend")
        return None


def _record_error(record):
    """What is malformed in the args.json fields the tables use (None when nothing): a run whose warnings, data
    fingerprints or identity metric cannot be read cannot be marked or kept apart rightly."""
    warnings, data = record.get(WARNINGS_KEY, []), record.get(DATA_KEY, {})
    metric = record.get("identity_metric", {})
    if not isinstance(warnings, list) or not all(isinstance(w, dict) and isinstance(w.get("check"), str)
                                                 and isinstance(w.get("message"), str) for w in warnings):
        return f"`{WARNINGS_KEY}` is not a list of {{check, message, value}}"
    if not isinstance(data, dict) or not all(isinstance(found, dict) and isinstance(found.get("id"), str)
                                             for found in data.values()):
        return f"`{DATA_KEY}` is not a dict of fingerprints with an `id`"
    if not isinstance(metric, dict) or not isinstance(metric.get("model", ""), str):
        return "`identity_metric` is not a dict naming its `model`"
    if not isinstance(record.get("restore", {}), dict):
        return "`restore` is not a dict"
    return None


def _recognizer_collapsed(path, record, problems):
    """True (reported) when the run's id_cos was measured with a verification run whose embeddings collapsed (its
    args.json warnings): every face then scores about 1, whatever the upscaler did."""
    recognizer = ((record or {}).get("identity_metric") or {}).get("model")
    if not recognizer or not os.path.isdir(recognizer):
        return False
    try:
        recognizer_record = read_record(recognizer) or {}
    except ValueError as error:  # the run itself refused a collapsed recognizer when it started (runs.py)
        problems.add(path, f"id_cos kept unchecked: the args.json of its recognizer {recognizer} is unreadable "
                           f"({error}); the run checked that recognizer for collapse when it started")
        return False
    error = _record_error(recognizer_record)
    if error:
        problems.add(path, f"id_cos left out: the args.json of its recognizer {recognizer} is malformed ({error})")
        return True
    collapsed = [found for found in recognizer_record.get(WARNINGS_KEY, []) if found["check"] in COLLAPSE_CHECKS]
    if collapsed:
        problems.add(path, f"id_cos left out: measured with {recognizer}, whose {collapsed[0]['message']}")
    return bool(collapsed)


def _read_probes(folder, columns, record, problems):
    """The run's optional probe results (run_verify --probe gender, --bias-probe) as Run fields; a malformed file
    is reported and left out. The Bias Transfer Score is the one the run computed (args.json)."""
    probes = {}
    for field, name, read in (("gender_probe", PROBE_GENDER_FILE, read_gender_probe),
                              ("bias_probe", BIAS_PROBE_FILE, read_bias_probe)):
        path = os.path.join(folder, name)
        try:
            probes[field] = read(path, columns) if os.path.isfile(path) else None
        except ValueError as error:
            problems.add(path, f"{error}; the probe is left out of the tables")
    if probes.get("bias_probe") is None:
        return probes
    score, path = (record or {}).get("bias_transfer_score"), os.path.join(folder, BIAS_PROBE_FILE)
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        problems.add(path, "no numeric bias_transfer_score in the run's args.json: its Bias Transfer Score is left "
                           "out of the tables")
    elif math.isnan(score):
        problems.add(path, "Bias Transfer Score NaN in args.json (one side's association scores all equal): left "
                           "out of the tables")
    elif not -1.0 - 1e-9 <= score <= 1.0 + 1e-9:
        problems.add(path, f"Bias Transfer Score {score!r} in args.json is outside [-1, 1]: left out of the tables")
    else:
        probes["bias_transfer_score"] = float(score)
    return probes
