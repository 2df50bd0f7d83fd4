"""Every study's run from start to end, one function for all three (run_study), and its run folder (--out).

A study (racecomp.studies.get(name): upscale, verify, quantize) says what a run is (default_out, DATA_ARGS,
data_folders, run_columns) and does its own work in four hooks; the rest is run_study's, the same for all:

    build_model(args)            -> the model, on the CPU (a quantization setting hands its model in instead)
    prepare(run, model)          -> (inputs, facts): what train and evaluate read, checked before args.json
    train(run, model, inputs)    -> facts; trains `model` in place, resumed when run.action is "resume"
                                    (None where nothing trains: quantization scores the models it is given)
    evaluate(run, model, inputs) -> (table, facts); the per-item CSV, then per_race.csv (the finished marker)

    run_study(name, args, device):
        --out and data folders absolute; data fingerprinted; columns = run_columns(args, code version, data)
        with RunFolder(args.out, args, columns, data, device) as run:   # one writer; fresh / resume / skip
            skip: return None
            seed, build_model, prepare                                  # bad input stops before args.json
            args.json (start), train, evaluate, args.json (end)         # the checkpoint goes (finish)

args.json has one writer, RunFolder.save; a run's facts reach it only as what the hooks return.

- One writer: an exclusive lock file (LOCK_FILE: host, pid) is taken before anything in the folder is read or
  written; a second process is refused naming the holder. A lock left by a dead process on this host is stale
  and taken over; one from another host is only reported (its process cannot be seen from here).
- What is there (files.prepare_out_dir): finished results are skipped, a checkpoint of the same arguments is
  resumed, other arguments are refused unless --overwrite. On top of it:
  - the finished marker (per_race.csv) counts only when its identifying columns are this run's: a stale one is
    refused, naming the columns. --overwrite removes the old marker, checkpoint and final weights before the
    new args.json is written, so an interrupted overwrite resumes or restarts, never skips;
  - data: the fingerprints (racecomp.datasets.fingerprint) of every data folder the run reads go into
    args.json; results or a checkpoint made on other data are refused, naming the folder and what differs;
  - code: a resume whose code (files.code_version) differs from the one that started the run is refused
    unless --allow-code-change, recorded in args.json ("code_changes") and as a warning the tables show.
"""
import contextlib
import json
import os
import socket
import time

from racecomp import distributed, engine, files, runs, sanity, schema, studies
from racecomp.datasets import fingerprint
from racecomp.errors import InputError

LOCK_FILE = "run.lock"
CODE_CHANGED = "code changed on resume"  # the sanity-warning check name of a resume across code versions
# What a run leaves that a later run of other arguments must not take for its own.
RUN_STATE = (schema.FINISHED_MARKER, "checkpoint.pth") + tuple(runs.FINAL_WEIGHTS.values())


def flag(name):
    return "--" + name.replace("_", "-")


def absolute_paths(args, names):
    """Make the folder arguments `names` of `args` absolute (those given), so args.json says which folder."""
    for name in names:
        if getattr(args, name, None) is not None:
            setattr(args, name, os.path.abspath(getattr(args, name)))


def fingerprints(folders):
    """{argument name: fingerprint} of {argument name: data folder} (the folders a run reads)."""
    return {name: fingerprint.fingerprint(folder) for name, folder in folders.items()}


def run_study(name, args, device, out_dir=None, data=None, model=None, **facts):
    """Run study `name` from start to end (module docstring) in its run folder: `out_dir`, else args.out made
    absolute (unset: the study's default_out). Returns its evaluate's table, None when finished results of this
    run are already there. For the settings of a quantization run, each in a sub-folder of its --out: `data`,
    the fingerprints they share; `model`, the model to score instead of build_model's; `facts`, more for
    args.json (after prepare's)."""
    study = studies.get(name)
    if out_dir is None:
        args.out = out_dir = os.path.abspath(args.out or study.default_out(args))
    absolute_paths(args, study.DATA_ARGS)
    if data is None:  # on rank 0 under torchrun, which also makes the demo data once
        data = distributed.run_on_main(lambda: fingerprints(study.data_folders(args)))
    columns = study.run_columns(args, files.code_version(), data)
    with RunFolder(out_dir, args, columns, data, device) as run:
        if run.action == "skip":
            return None
        if model is None:
            engine.seed_everything(args.seed)  # the model's initialisation is the seed's
            model = study.build_model(args)
        model = model.to(device)
        inputs, found = study.prepare(run, model)
        record = files.run_record(args, study=name, **found, **facts)
        run.save(record)
        if study.train is not None:
            started = time.time()
            record.update(study.train(run, model, inputs))
            record["train_seconds"] = time.time() - started
        table, found = study.evaluate(run, model, inputs)
        record.update(found)
        run.finish(record, args.keep_checkpoint)
        return table


def data_ids(data):
    """{argument name: fingerprint id}: what a recipe holds in place of the data folders' paths."""
    return {name: found["id"] for name, found in data.items()}


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def take_lock(out_dir):
    """Create out_dir/LOCK_FILE exclusively, holding this process's host and pid; return its path."""
    path = os.path.join(out_dir, LOCK_FILE)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            try:
                with open(path, encoding="utf-8") as existing:
                    holder = json.load(existing)
                host, pid = holder["host"], int(holder["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                holder, host, pid = {}, "unknown", None
            if host == me["host"] and pid is not None and not _pid_alive(pid):
                print(f"[out] {path}: stale lock of process {pid} (no longer running); taking it over")
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                continue
            raise InputError(f"{out_dir} is in use by another run (host {host}, pid {pid}, since "
                             f"{holder.get('since', '?')}; lock file {path}): wait for it to end, or choose "
                             f"another --out. If that process is gone, remove {path}.") from None
        with os.fdopen(handle, "w", encoding="utf-8") as written:
            json.dump(me, written)
        return path
    raise InputError(f"{path}: another process took the lock at the same moment; try again")


@contextlib.contextmanager
def locked(out_dir):
    """take_lock for the time of the block (a folder of several run folders: a quantization run's --out); a
    folder this created is removed again if the block fails leaving it empty."""
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    take_lock(out_dir)
    try:
        yield
    except BaseException:
        _remove(out_dir, [LOCK_FILE])
        if created and not os.listdir(out_dir):
            os.rmdir(out_dir)
        raise
    _remove(out_dir, [LOCK_FILE])


def _remove(out_dir, names):
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out_dir, name))


class RunFolder:
    """A study's --out folder while this process runs in it (module docstring): what the hooks get as `run`.
    `columns`: the run's identifying columns (its study's run_columns), `data`: fingerprints() of the folders
    it reads, `device`: where this process runs the model. Under torchrun only rank 0 locks, checks and writes;
    every rank gets the same `action` ("fresh", "resume" or "skip")."""

    def __init__(self, out_dir, args, columns, data, device=None):
        self.out_dir, self.args, self.columns, self.data, self.device = out_dir, args, columns, data, device
        self.action = None
        self.code_changes = []  # [{"from", "to"}] of resumes across code versions (--allow-code-change)
        self._lock = None
        self._created = False

    def __enter__(self):
        try:
            self.action = distributed.run_on_main(self._open)
        except BaseException:
            self._close(failed=True)
            raise
        return self

    def __exit__(self, kind, error, traceback):
        self._close(failed=kind is not None)

    def _open(self):
        self._created = not os.path.isdir(self.out_dir)
        os.makedirs(self.out_dir, exist_ok=True)
        self._lock = take_lock(self.out_dir)
        if getattr(self.args, "overwrite", False):
            # Before the new args.json: an interrupted overwrite must not leave the old results looking like its own.
            _remove(self.out_dir, RUN_STATE)
            print(f"[out] {self.out_dir}: --overwrite given; earlier results there removed")
            return "fresh"
        previous = files.previous_record(self.out_dir)
        action = files.prepare_out_dir(self.out_dir, self.args)
        if action != "fresh":
            self._check_data(previous)
        if action == "skip":
            self._check_marker()
        if action == "resume":
            self._check_code(previous)
        return action

    def _close(self, failed):
        if not distributed.is_main():
            return
        if self._lock is not None:
            _remove(self.out_dir, [LOCK_FILE])
            self._lock = None
        # Only what this run made goes: a folder it created and left empty, never the user's own.
        if failed and self._created and os.path.isdir(self.out_dir) and not os.listdir(self.out_dir):
            os.rmdir(self.out_dir)

    def _check_data(self, previous):
        before = previous.get(schema.DATA_KEY)
        if not isinstance(before, dict):
            print(f"[out] {self.out_dir}: made before RaceComp recorded data fingerprints; its data cannot be "
                  f"checked against this run's")
            return
        for name in sorted(set(before) | set(self.data)):
            was, now = before.get(name), self.data.get(name)
            if was is None or now is None:
                found = [f"read {'only now' if was is None else 'only then'}"]
            else:
                found = fingerprint.differences(was, now)
            if found:
                root = (now or was)["root"]
                raise InputError(f"{self.out_dir} holds a run made on other data: {flag(name)} {root}: "
                                 f"{'; '.join(found)}. Use the data it ran on, another --out, or --overwrite")

    def _check_marker(self):
        """InputError unless per_race.csv's identifying columns are this run's. The recipe is left out: with the
        same arguments and data it differs only where a later version hashes them otherwise."""
        try:
            written = runs.run_columns(self.out_dir)
        except InputError as error:
            raise InputError(f"{self.out_dir}: {error}; use --overwrite to run it again") from None
        differing = [c for c in written if c != schema.RECIPE_COLUMN and str(self.columns.get(c)) != written[c]]
        if differing:
            shown = ", ".join(f"{c} {written[c]!r} there, {self.columns.get(c)!r} now" for c in differing)
            raise InputError(f"{self.out_dir}: its {schema.FINISHED_MARKER} is not the result of these arguments "
                             f"({shown}; an interrupted --overwrite of an older version?): pass --overwrite to run "
                             f"it again")

    def _check_code(self, previous):
        was, now = previous.get("code_version"), files.code_version()
        self.code_changes = list(previous.get("code_changes", []))
        if was == now:
            return
        if not getattr(self.args, "allow_code_change", False):
            raise InputError(f"{self.out_dir}: its checkpoint was made by code {was}, this is {now}; a resume "
                             f"would mix the two. Use that code, --overwrite to start again, or "
                             f"--allow-code-change (recorded, and marked in the tables)")
        self.code_changes.append({"from": was, "to": now})
        print(f"[warning] {CODE_CHANGED}: {was} -> {now} (--allow-code-change)")

    def save(self, record):
        """Write args.json (rank 0): `record` with the data fingerprints, code changes and their warnings."""
        record[schema.DATA_KEY] = self.data
        if self.code_changes:
            record["code_changes"] = self.code_changes
            changes = ", ".join(f"{change['from']} -> {change['to']}" for change in self.code_changes)
            found = sanity.warning(CODE_CHANGED, f"resumed on other code ({changes})", len(self.code_changes))
            record[schema.WARNINGS_KEY] = [found] + [w for w in record.get(schema.WARNINGS_KEY, [])
                                                     if w.get("check") != CODE_CHANGED]
        if distributed.is_main():
            files.write_json(os.path.join(self.out_dir, schema.RECORD_FILE), record)

    def finish(self, record, keep_checkpoint):
        """The last args.json, then the resumable checkpoint goes (files.finish_run)."""
        self.save(record)
        if distributed.is_main():
            files.finish_run(self.out_dir, keep_checkpoint)
