"""Finding and reading finished run folders into Runs (racecomp.tables.experiments pools their seeds).

The files read are those of racecomp.schema's contract (parsed by racecomp.tables.run_files); every file or run
left out is reported to a Problems with its path and the reason.
"""
import glob
import math
import os
from dataclasses import dataclass, replace

from racecomp.schema import (BIAS_PROBE_COLUMNS, BIAS_PROBE_FILE, COLLAPSE_CHECKS, COUNT_COLUMN, DATA_KEY,
                             FINISHED_MARKER, ITEM_FILES, PROBE_GENDER_COLUMNS, PROBE_GENDER_FILE, RACE_METRICS,
                             RECORD_FILE, WARNINGS_KEY, read_record)
from racecomp.tables.run_files import (INFINITE_ALLOWED, REQUIRED_ITEM_COLUMNS, bias_probe_rows, check_items,
                                       gender_probe_rows, item_rows, per_race_values, probe_file, read_csv,
                                       run_family, run_columns)


class Problems:
    """Everything left out or suspicious, by file: printed when found and listed in tables.md."""

    def __init__(self, echo=True):
        self.entries = []  # (path, message)
        self.echo = echo

    @classmethod
    def quiet(cls):
        """A Problems that only collects: for a search whose misses are expected (e.g. a reference that may
        not exist), reported by the caller in its own words."""
        return cls(echo=False)

    def add(self, path, message):
        if (path, message) in self.entries:  # the same check may run for several tables
            return
        self.entries.append((path, message))
        if self.echo:
            print(f"[problem] {path}: {message}", flush=True)


@dataclass(frozen=True, eq=False)
class Run:
    """One finished run: identifying columns as written, per-race means, per-item rows (None if unusable) and
    its args.json (None if it has none). Read once (load_run), never changed; compared and hashed as itself."""
    folder: str
    family: str
    kind: str  # "upscale" or "verify": which per-item file and metrics
    columns: dict  # identifying column -> value as written, in file order
    per_race: dict  # race -> {"n": items, metric: mean}; optional metrics only when the run has them
    items: list  # [{"key", "race", "cluster" (file or id1), "cluster2" (id2, pairs only), <per-item column>}] or None
    record: dict = None  # args.json: {"args": every resolved argument, ...}
    # The optional probes of a verification run (schema.PROBE_GENDER_FILE, BIAS_PROBE_FILE), None without them:
    gender_probe: list = None  # [{"race", "n", "f1_in", "f1_out", "worst", "gap", "accuracy"}], FairFace races
    bias_probe: list = None  # [{"set_a", "set_b", "n_a", "n_b", "assoc_pretrained", "assoc_finetuned"}]
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

    A pattern under which no finished run is found, a named file that is not a per_race.csv, and a folder
    with args.json but no per_race.csv (an unfinished run) are reported.
    """
    found = {}  # real path -> path as found
    unfinished = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        before = len(found)
        for match in matches:
            if os.path.isfile(match):
                if os.path.basename(match) == FINISHED_MARKER:
                    found.setdefault(os.path.realpath(os.path.dirname(match)), os.path.dirname(match) or ".")
                elif not glob.has_magic(pattern):
                    problems.add(match, f"not a run folder or {FINISHED_MARKER}")
                continue
            visited = set()
            for folder, subfolders, names in os.walk(match, followlinks=True):
                # A run folder that is a symlink is read as it is through a glob; a link back up is walked once.
                visited.add(os.path.realpath(folder))
                subfolders[:] = sorted(name for name in subfolders
                                       if os.path.realpath(os.path.join(folder, name)) not in visited)
                if FINISHED_MARKER in names:
                    found.setdefault(os.path.realpath(folder), folder)
                elif "args.json" in names:
                    unfinished.append(folder)
        if len(found) == before:
            problems.add(pattern, f"no {FINISHED_MARKER} found (nothing there, or only runs already found)")
    for folder in dict.fromkeys(unfinished):
        # A quantization run's top folder may hold args.json while its runs are subfolders.
        inside = os.path.realpath(folder) + os.sep
        if not any(real.startswith(inside) for real in found):
            problems.add(folder, f"unfinished run (args.json but no {FINISHED_MARKER}): left out")
    return sorted(found.values())


def _read_record(folder, problems):
    """The folder's args.json (schema.read_record), or None (missing: nothing reported here; unusable: reported)."""
    try:
        return read_record(folder)
    except ValueError as error:
        problems.add(os.path.join(folder, RECORD_FILE), f"{error}; the run's settings are not in the recipe legend")
        return None


def _record_error(record):
    """What is malformed in the fields of an args.json the tables use (None when nothing): a run whose warnings,
    data fingerprints or identity metric cannot be read cannot be marked or kept apart rightly."""
    warnings = record.get(WARNINGS_KEY, [])
    if not isinstance(warnings, list) or not all(isinstance(w, dict) and isinstance(w.get("check"), str)
                                                 and isinstance(w.get("message"), str) for w in warnings):
        return f"`{WARNINGS_KEY}` is not a list of {{check, message, value}}"
    data = record.get(DATA_KEY, {})
    if not isinstance(data, dict) or not all(isinstance(found, dict) and isinstance(found.get("id"), str)
                                             for found in data.values()):
        return f"`{DATA_KEY}` is not a dict of fingerprints with an `id`"
    metric = record.get("identity_metric", {})
    if not isinstance(metric, dict) or not isinstance(metric.get("model", ""), str):
        return "`identity_metric` is not a dict naming its `model`"
    if not isinstance(record.get("restore", {}), dict):
        return "`restore` is not a dict"
    return None


def _recognizer_collapsed(run, problems):
    """True (reported) when the run's id_cos was measured with a verification run whose embeddings collapsed
    (its args.json warnings): every face then scores about 1, whatever the upscaler did."""
    recognizer = ((run.record or {}).get("identity_metric") or {}).get("model")
    if not recognizer or not os.path.isdir(recognizer):
        return False
    record = _read_record(recognizer, problems) or {}
    error = _record_error(record)
    if error:
        problems.add(run.path, f"id_cos left out: the args.json of its recognizer {recognizer} is malformed ({error})")
        return True
    collapsed = [found for found in record.get(WARNINGS_KEY, []) if found["check"] in COLLAPSE_CHECKS]
    if collapsed:
        problems.add(run.path, f"id_cos left out: measured with {recognizer}, whose {collapsed[0]['message']}")
    return bool(collapsed)


def load_run(folder, problems):
    """The Run of a folder, or None after reporting why per_race.csv cannot be used.

    A missing or inconsistent per-item file is reported too; the run then keeps items=None and appears
    only in the tables built from per-race means.
    """
    path = os.path.join(folder, FINISHED_MARKER)
    table = read_csv(path, ("study", "seed", "code_version", "race"), problems)
    if table is None:
        return None
    header, rows = table
    rows = [(line, dict(zip(header, fields))) for line, fields in rows]
    try:
        columns = run_columns(header, rows)
        family, kind = run_family(columns)
        missing = [c for c in (COUNT_COLUMN[kind],) + RACE_METRICS[kind] if c not in header]
        if missing:
            raise ValueError(f"missing column(s) {missing} of a {kind} per_race.csv")
        per_race = per_race_values(header, rows, kind)
    except ValueError as error:
        problems.add(path, f"{error}; run left out")
        return None
    for race, values in per_race.items():
        for metric in INFINITE_ALLOWED:
            if values.get(metric) == math.inf:
                problems.add(path, f"{race}: mean {metric} is infinite (an image reproduced exactly); kept as inf")
    run = Run(folder, family, kind, columns, per_race, None, _read_record(folder, problems))
    error = run.record is not None and _record_error(run.record)
    if error:
        problems.add(os.path.join(folder, RECORD_FILE), f"{error}; run left out")
        return None
    for found in (run.record or {}).get(WARNINGS_KEY, []):
        problems.add(path, f"sanity check failed, its rows are marked: {found['message']}")
    collapsed = _recognizer_collapsed(run, problems)
    for values in per_race.values() if collapsed else ():
        values.pop("id_cos", None)
    run = replace(run, **_read_probes(run, problems))
    item_path = os.path.join(folder, ITEM_FILES[kind])
    if not os.path.isfile(item_path):
        problems.add(item_path, "missing: the run appears only in the per-race tables (no CIs, no paired tests)")
        return run
    table = read_csv(item_path, REQUIRED_ITEM_COLUMNS[kind], problems)
    if table is None:
        problems.add(item_path, "unusable: the run appears only in the per-race tables")
        return run
    try:
        items = item_rows(*table, kind)
        check_items(items, per_race, kind)
    except ValueError as error:
        problems.add(item_path, f"{error}; the run appears only in the per-race tables")
        return run
    return replace(run, items=[{k: v for k, v in item.items() if k != "id_cos"} for item in items] if collapsed
                   else items)


def load_runs(folders, problems):
    """load_run of each folder; one that cannot be read for any reason is a problem line, never the end of the
    tables of every other run."""
    runs = []
    for folder in folders:
        try:
            run = load_run(folder, problems)
        except Exception as error:  # noqa: BLE001 -- whatever a bad folder holds, the other runs are tabulated
            problems.add(folder, f"unreadable run folder ({type(error).__name__}: {error}); run left out")
            continue
        if run is not None:
            runs.append(run)
    unchecked = [run.folder for run in runs if run.record is not None and DATA_KEY not in run.record]
    if unchecked:  # one line: a whole sweep of older runs is one fact, not hundreds of problems
        problems.add(os.path.commonpath(unchecked) if len(unchecked) > 1 else unchecked[0],
                     f"{len(unchecked)} run(s) made before runs recorded their data's fingerprint (args.json has no "
                     f"{DATA_KEY}): pooled by recipe, which knows their data by its path only")
    return runs


def _read_probes(run, problems):
    """The run's optional probe results (run_verify --probe gender, --bias-probe) as Run fields; a run without
    them is fine, a malformed file is reported and left out. The Bias Transfer Score is the one the run computed
    from its bias_probe.csv rows (args.json), so that the tables need no statistics of racecomp.probes."""
    probes = {"gender_probe": probe_file(run, PROBE_GENDER_FILE, PROBE_GENDER_COLUMNS, gender_probe_rows, problems),
              "bias_probe": probe_file(run, BIAS_PROBE_FILE, BIAS_PROBE_COLUMNS, bias_probe_rows, problems)}
    if probes["bias_probe"] is None:
        return probes
    score = (run.record or {}).get("bias_transfer_score")
    path = os.path.join(run.folder, BIAS_PROBE_FILE)
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
