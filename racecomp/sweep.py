"""Expand a grid of settings into one command line per run, each with its own deterministic run folder.

    python -m racecomp.sweep upscale --out-root runs/grid \\
        --grid arch=resnet50,fastvit minority=none,black,white weight=0.2,0.05 scale=2,4 seed=0,1,2 \\
        --grid arch=bicubic scale=2,4 \\
        --fixed epochs=20 batch-size=64 data=/data/fairface amp=auto

Grid keys and --fixed keys are the study script's flags without `--` (run_upscale.py, run_verify.py,
run_quantize.py). Each `--grid` group is a full product; several groups are unioned (runs that come out
identical are listed once). --fixed applies to every run: `KEY=VALUE`, or a bare `KEY` for an on/off flag
such as `pretrained`. Values are split on commas, so a value that itself holds a comma (`unfreeze=1,3`) can
only be given in --fixed.

Rules that keep a sweep's tables right:
- A balanced run (minority none, the default) has no weight: it is expanded once, with --weight 1, however
  many weights the grid lists, and its folder name leaves the weight out. A group that lists weights but no
  minority other than none is refused, as the script refuses --weight without --minority.
- Each run's --out is <out-root>/<study>/<key>-<value>_<key>-<value>..., over the group's grid keys in
  sorted order (not the order typed), so the same grid always gives the same folders. A value that is a
  path is named by its last component; characters other than letters, digits and `._+-` become `+`.
  --fixed values are not in the name: change them and the scripts refuse the old folders (--status says so).
- Every run's arguments are parsed by the script's own get_args_parser() (exact flag names: no
  abbreviations) and its race, weight and bit-width values are checked the way the script checks them,
  so a typo fails here, naming the key and value, before any run starts. Two folders holding the same
  run are refused too: summarize.py would leave both out as a clash.

Re-running the whole list is safe: each script skips a run folder that holds finished results (per_race.csv),
resumes one with a checkpoint, and refuses one made with other arguments, on other data or held by a running
process (racecomp.studies.run_folder).
So `--format lines` output can be run again after a crash or a partial SLURM array, and `--pending` only
saves the start-up of finished runs. --out is absolute; other relative paths (--data ...) resolve against the
folder the commands are run from (the SLURM script changes to the folder the sweep was made in; --status
resolves them against its own folder, as the runs record them absolute).

Output: `--format lines` (default) prints one shell command per line; `--format slurm` writes the commands
to <out-root>/<study>/sweep-<hash>.txt (named by content, so a queued array never sees its lines change)
and prints a SLURM array script running line $SLURM_ARRAY_TASK_ID of it; `--pending` keeps only runs not
finished; `--status` prints each run's state (finished / partial / not started / conflict) and the counts.
"""
import argparse
import contextlib
import dataclasses
import hashlib
import io
import itertools
import os
import re
import shlex
import sys

from racecomp import cli, files, studies
from racecomp.studies import run_folder
from racecomp.errors import InputError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The sweep chooses every folder, and re-running a sweep must never replace finished results.
RESERVED_KEYS = ("out", "overwrite", "help")
FINISHED, PARTIAL, NOT_STARTED, CONFLICT = "finished", "partial", "not started", "conflict"
STATES = (FINISHED, PARTIAL, NOT_STARTED, CONFLICT)
MAX_NAME_BYTES = 255  # longest file name most file systems take


@dataclasses.dataclass
class PlannedRun:
    """A run to be made: its folder (absolute), the script's arguments (--out last) and how the script parses them."""
    folder: str
    argv: list
    args: argparse.Namespace


def script_path(study):
    """The study's script at the top of the repository (run_upscale.py, ...), which the commands call."""
    return os.path.join(REPO_ROOT, f"run_{study}.py")


def parse_grid(items):
    """['arch=resnet50,fastvit', 'seed=0,1'] -> {'arch': ['resnet50', 'fastvit'], 'seed': ['0', '1']}."""
    grid = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        values = [value.strip() for value in text.split(",")]
        if not sep or not key or not all(values):
            raise InputError(f"--grid {item!r}: expected KEY=VALUE[,VALUE...] with no empty value")
        if key in grid:
            raise InputError(f"--grid {item!r}: key {key!r} given twice in one group")
        if len(set(values)) != len(values):
            raise InputError(f"--grid {item!r}: a value is repeated")
        grid[key] = values
    if not grid:
        raise InputError("--grid: a group needs at least one KEY=VALUE[,VALUE...]")
    return grid


def parse_fixed(items):
    """['epochs=20', 'pretrained'] -> {'epochs': '20', 'pretrained': None} (None: a bare on/off flag)."""
    fixed = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not key or (sep and not value.strip()):
            raise InputError(f"--fixed {item!r}: expected KEY=VALUE or a bare KEY for an on/off flag")
        if key in fixed:
            raise InputError(f"--fixed {item!r}: key {key!r} given twice")
        fixed[key] = value.strip() if sep else None
    return fixed


def flag_tokens(key, value):
    """Script arguments for one key: ['--key', 'value'], or ['--key'] for a bare flag (value None)."""
    return [f"--{key}"] if value is None else [f"--{key}", value]


def script_parser(study):
    """The study's own parser, taking exact flag names only and raising ValueError instead of exiting."""
    parser = study.get_args_parser()  # allow_abbrev=False: '--scal 4' would pass as --scale

    def refuse(message):
        raise InputError(message)

    parser.error = refuse  # argparse would print usage and exit; the sweep reports which key was wrong
    return parser


def parse_script_args(parser, argv, where):
    """Parse `argv` with a script_parser(); a parse error is a ValueError starting with `where`."""
    try:
        return parser.parse_args(argv)
    except ValueError as error:
        raise InputError(f"{where}: {error}") from None


def check_values(check, args, where):
    """Run a study's own check (check_values of one flag, check_args of a whole run) naming `where`."""
    try:
        check(args)
    except ValueError as error:
        raise InputError(f"{where}: {error}") from None


def check_keys(study, parser, grids, fixed):
    """Each grid and fixed key=value alone through the script's parser and value checks, so that an error
    names the one assignment at fault rather than a whole run."""
    assignments = [("--fixed", key, value) for key, value in fixed.items()]
    for grid in grids:
        for key, values in grid.items():
            if key in fixed:
                raise InputError(f"key {key!r} is both in --grid and in --fixed")
            assignments += [("--grid", key, value) for value in values]
    for option, key, value in assignments:
        where = f"{option} {key}" + ("" if value is None else f"={value}")
        if key.lstrip("-") in RESERVED_KEYS or key.startswith("-"):
            raise InputError(f"{where}: key {key!r} is not allowed (give flags without '--'; the sweep sets "
                             f"--out itself and never passes --overwrite)")
        check_values(study.check_values, parse_script_args(parser, flag_tokens(key, value), where), where)
    for grid in grids:
        check_weight_has_minority(parser, grid, fixed)


def check_weight_has_minority(parser, grid, fixed):
    """A weight in a grid group none of whose runs under-represents a race is refused, as the script refuses
    --weight without --minority (every such run would be the balanced run, --weight 1)."""
    weights = grid.get("weight", [fixed["weight"]] if "weight" in fixed else [])
    minorities = grid.get("minority", [fixed.get("minority", parser.get_default("minority"))])
    if any(float(weight) != 1.0 for weight in weights) and all(minority.strip().lower() == "none"
                                                               for minority in minorities if minority is not None):
        raise InputError(f"weight={','.join(weights)} without a minority: a balanced run has no weight (the script "
                         f"refuses --weight without --minority); add minority=<race> to that --grid or --fixed")


def folder_value(value):
    """A value as part of a folder name: a path by its last component, unsafe characters as '+'."""
    if "/" in value or os.sep in value:
        value = os.path.basename(os.path.normpath(value))
    return re.sub(r"[^A-Za-z0-9._+-]", "+", value)


def is_balanced(parser, setting, fixed):
    minority = setting.get("minority", fixed.get("minority", parser.get_default("minority")))
    return minority.strip().lower() == "none"


def make_run(study, parser, setting, fixed, study_root):
    """The PlannedRun of one grid point `setting` (key -> value) with the --fixed flags."""
    setting = dict(setting)
    keys = sorted(setting)
    fixed_flags = dict(fixed)
    if study.MINORITY_RACES is not None and is_balanced(parser, setting, fixed):
        # A balanced run has no weight: every grid weight gives this same run, named without one.
        keys = [key for key in keys if key != "weight"]
        if "weight" in setting:
            setting["weight"] = "1"
        elif "weight" in fixed_flags:
            fixed_flags["weight"] = "1"
    name = "_".join(f"{key}-{folder_value(setting[key])}" for key in keys)
    if not name:
        raise InputError(f"grid point {setting}: a balanced run has no weight, so nothing is left to name its "
                         f"folder; add a grid key (e.g. seed=0)")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise InputError(f"run folder name longer than {MAX_NAME_BYTES} bytes: {name}; move long values to --fixed")
    folder = os.path.join(study_root, name)
    argv = [token for key in sorted(setting) for token in flag_tokens(key, setting[key])]
    argv += [token for key in sorted(fixed_flags) for token in flag_tokens(key, fixed_flags[key])]
    argv += ["--out", folder]
    args = parse_script_args(parser, argv, f"run {name}")
    check_values(study.check_args, args, f"run {name}")
    run_folder.absolute_paths(args, study.DATA_ARGS)  # as the script records them (status compares them)
    return PlannedRun(folder, argv, args)


def expand(study, grids, fixed, out_root):
    """Every run of the union of `grids` (each a product, keys sorted, values in the order given).

    grids: list of {key: [values]}; fixed: {key: value or None}; out_root: folder of the sweep (made
    absolute). Runs that come out identical (the balanced run of each weight) are listed once.
    Raises ValueError naming the key, value or folder at fault.
    """
    study = studies.get(study)
    parser = script_parser(study)
    check_keys(study, parser, grids, fixed)
    study_root = os.path.join(os.path.abspath(out_root), study.NAME)
    runs, folder_of = {}, {}
    for grid in grids:
        keys = sorted(grid)
        for values in itertools.product(*(grid[key] for key in keys)):
            run = make_run(study, parser, dict(zip(keys, values)), fixed, study_root)
            if run.folder in runs:
                if runs[run.folder].argv != run.argv:
                    raise InputError(f"two different runs would share {run.folder} (a folder name keeps only a "
                                     f"path's last component and replaces unsafe characters):\n"
                                     f"  {runs[run.folder].argv}\n  {run.argv}")
                continue
            identity = repr(sorted((k, v) for k, v in vars(run.args).items() if k != "out"))
            if identity in folder_of:
                raise InputError(f"the same run is listed under two folders, {folder_of[identity]} and "
                                 f"{run.folder} (summarize.py would leave both out); remove it from one group")
            folder_of[identity] = run.folder
            runs[run.folder] = run
    return list(runs.values())


def command_line(run, study, python=sys.executable):
    """One shell command, quoted with shlex: <python> /abs/run_<study>.py <arguments>."""
    return shlex.join([python, script_path(study), *run.argv])


def folder_state(out_dir, args):
    """(state, detail) of one run folder: what prepare_out_dir will decide when the script is started.

    `args` must be the namespace the script passes to it (--out absolute, as every script makes it).
    """
    if not os.path.isdir(out_dir):
        return NOT_STARTED, ""
    lock = os.path.join(out_dir, run_folder.LOCK_FILE)
    if os.path.isfile(lock):
        with open(lock, encoding="utf-8", errors="replace") as handle:
            holder = " ".join(handle.read().split())
        return PARTIAL, f"{run_folder.LOCK_FILE} {holder}: running, or killed on another host (then remove it)"
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its '[out] ...' line belongs in the run's own log
            action = files.prepare_out_dir(out_dir, args)
    except ValueError as error:
        return CONFLICT, str(error)
    if action == "skip":
        return FINISHED, ""
    if action == "resume":
        return PARTIAL, "checkpoint: resumes"
    if os.path.isfile(os.path.join(out_dir, "args.json")):
        return PARTIAL, "no checkpoint yet: restarts"
    return NOT_STARTED, ""


def quantize_settings(args):
    """Sub-folders the quantization study writes under --out and the arguments it checks each one against."""
    quantize = studies.get("quantize")
    args = argparse.Namespace(**vars(args))
    if args.task == "verify" and args.model_run is None and args.weights is None:
        args.model_run = quantize.demo_model_run(args)  # main trains its demo model there first
    return [(setting.name, quantize.setting_args(args, setting)) for setting in quantize.settings(args)]


def run_state(study, run):
    """(state, detail) of a run: finished / partial / not started / conflict (the script will refuse it)."""
    if study != "quantize":
        return folder_state(run.folder, run.args)
    states = [(name, *folder_state(os.path.join(run.folder, name), sub_args))
              for name, sub_args in quantize_settings(run.args)]
    conflicts = [f"{name}: {detail}" for name, state, detail in states if state == CONFLICT]
    if conflicts:
        return CONFLICT, "; ".join(conflicts)
    finished = sum(state == FINISHED for _, state, _ in states)
    if finished == len(states):
        return FINISHED, ""
    if finished == 0 and all(state == NOT_STARTED for _, state, _ in states):
        return NOT_STARTED, ""
    return PARTIAL, f"{finished} of {len(states)} settings finished"


def status_report(states):
    """Lines 'state  folder  detail' and a last line of counts; `states` = [(run, state, detail)]."""
    lines = [f"{state:<11} {run.folder}" + (f"  ({detail})" if detail else "") for run, state, detail in states]
    counts = {state: sum(s == state for _, s, _ in states) for state in STATES}
    summary = ", ".join(f"{counts[state]} {state}" for state in STATES if counts[state] or state != CONFLICT)
    return lines + [f"{len(states)} runs: {summary}"]


def slurm_script(commands_path, n_commands, log_dir, workdir, job_name, options=(), max_parallel=0):
    """A SLURM array script whose task i (1-based) runs line i of `commands_path`."""
    for path in (commands_path, log_dir):
        if any(ch.isspace() for ch in path):
            raise InputError(f"{path}: #SBATCH lines cannot hold a path with spaces; choose another --out-root")
    array = f"1-{n_commands}" + (f"%{max_parallel}" if max_parallel else "")
    return "\n".join([
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --array={array}",
        f"#SBATCH --output={log_dir}/%A_%a.out",
        *(f"#SBATCH {option}" for option in options),
        "set -euo pipefail",
        f"cd {shlex.quote(workdir)}",
        f'line=$(sed -n "${{SLURM_ARRAY_TASK_ID}}p" {shlex.quote(commands_path)})',
        f'if [ -z "$line" ]; then echo "no line $SLURM_ARRAY_TASK_ID in {commands_path}" >&2; exit 1; fi',
        'echo "[sweep] task $SLURM_ARRAY_TASK_ID: $line"',
        'eval "$line"',
        ""])


def write_commands_file(commands, study_root):
    """Write the commands to <study_root>/sweep-<hash of the text>.txt and return its path (kept if present)."""
    text = "".join(command + "\n" for command in commands)
    path = os.path.join(study_root, f"sweep-{hashlib.sha256(text.encode()).hexdigest()[:12]}.txt")
    if not os.path.isfile(path):
        files.write_bytes(path, text.encode())
    return path


def get_args_parser(add_help=True):
    parser = cli.make_parser(__doc__.split("\n")[0], add_help)
    parser.add_argument("study", choices=tuple(studies.STUDIES), help="which study the runs are of")
    parser.add_argument("--grid", nargs="+", action="append", required=True, metavar="KEY=V1,V2",
                        help="a grid group: script flags without '--' and their values; repeat --grid for "
                             "groups whose runs are unioned (e.g. the bicubic baseline per scale)")
    parser.add_argument("--fixed", nargs="+", default=[], metavar="KEY=VALUE",
                        help="flags given to every run (a bare KEY for an on/off flag)")
    parser.add_argument("--out-root", required=True, help="runs go to <out-root>/<study>/<grid settings>")
    parser.add_argument("--format", choices=("lines", "slurm"), default="lines",
                        help="lines: one shell command per line on stdout; slurm: a commands file plus an "
                             "array script on stdout")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--status", action="store_true", help="print each run's state and the counts instead")
    mode.add_argument("--pending", action="store_true", help="only the runs not finished yet")
    parser.add_argument("--python", default=sys.executable, help="interpreter at the start of every command "
                        "(default: the one running this sweep, so a venv works without being activated)")
    parser.add_argument("--slurm-option", action="append", default=[], metavar="OPTION",
                        help="extra #SBATCH line, e.g. --slurm-option=--gres=gpu:1 (repeatable)")
    parser.add_argument("--slurm-max-parallel", type=int, default=0,
                        help="array tasks running at once (0: no limit)")
    return parser


def main(args):
    if args.status and args.format != "lines":
        raise InputError("--status prints a report; it takes no --format")
    runs = expand(args.study, [parse_grid(group) for group in args.grid], parse_fixed(args.fixed), args.out_root)
    if args.status or args.pending:
        states = [(run, *run_state(args.study, run)) for run in runs]
    if args.status:
        print("\n".join(status_report(states)))
        return states
    if args.pending:
        runs = [run for run, state, _ in states if state != FINISHED]
        for run, state, detail in states:
            if state == CONFLICT:
                print(f"[sweep] {run.folder} will be refused when run: {detail}", file=sys.stderr)
    commands = [command_line(run, args.study, args.python) for run in runs]
    if not commands:
        print("[sweep] nothing to run: every run is finished", file=sys.stderr)
        return commands
    if args.format == "lines":
        print("\n".join(commands))
        return commands
    study_root = os.path.join(os.path.abspath(args.out_root), args.study)
    log_dir = os.path.join(study_root, "slurm-logs")
    os.makedirs(log_dir, exist_ok=True)  # SLURM does not create the folder of --output
    commands_path = write_commands_file(commands, study_root)
    print(slurm_script(commands_path, len(commands), log_dir, os.getcwd(), f"racecomp-{args.study}",
                       args.slurm_option, args.slurm_max_parallel), end="")
    print(f"[sweep] {len(commands)} commands in {commands_path}", file=sys.stderr)
    return commands


if __name__ == "__main__":
    cli.run_script(main, get_args_parser().parse_args())
