"""The commands README.md, the notebook and BENCHMARKS.md show are ones the code takes, and each flow holds.

README.md, each fenced code block: every command line of a project command (run_*.py, summarize.py,
python -m racecomp.sweep / toydata / datasets / tables / studies.*, racecomp-*) is parsed by that command's own
parser, with exact flag names, and checked as the command checks its flags before any work (a study's
check_args, the sweep's expansion); nothing runs. Then the block is followed as a flow: each command writes its
--out (or the study's default_out, the sweep's run folders), and every folder or file a command reads
(--restore, --identity-model, --init-from, --model-run, --weights, data roots, summarize's folders and globs)
must be written by an earlier command of the block (a file in it: that study's final weights), or be one of
USER_PATHS, the documented placeholders for the user's own data and downloads.
README.md, inline `python ...` commands (tables, sentences): parsed and checked the same way, without a flow.
The notebook: the cells that build commands run with every command's main replaced by a recorder, for each
parameter value it documents (MINORITY "none" included); the recorded commands are checked and followed as
one flow. BENCHMARKS.md: every `python -m bench.*` / project command is parsed by its script's parser.
"""
import argparse
import fnmatch
import importlib
import json
import os
import re
import shlex
import shutil
import sys
import types

import pytest

from racecomp import runs, sweep
from racecomp.studies import quantize, upscale, verify

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
BENCHMARKS = os.path.join(REPO, "BENCHMARKS.md")
NOTEBOOK = os.path.join(REPO, "notebooks", "racecomp_colab.ipynb")

# Paths the docs name that no command writes: the user's downloads and weights. Keep this list short: a run
# folder belongs here only if the docs say the user brings it.
USER_PATHS = {"/data/fairface", "/data/RFW", "/data/BUPT-Balancedface", "backbone.pth",
              "/content/drive/MyDrive/FairFace", "/content/fairface"}  # the last: the notebook's local copy of Drive's
# Inline placeholders and their stand-ins for parsing (inline commands have no flow).
INLINE_PLACEHOLDERS = {"{fairface,rfw,identities}": "fairface", "[--profile 12]": "--profile 12"}
# Tokens that end a command on a shell line: redirections, pipes, separators.
SHELL_OPERATORS = {">", ">>", "<", "|", ";", "&&", "||", "&"}
# Program -> command kind.
SCRIPTS = {"run_upscale.py": "upscale", "run_verify.py": "verify", "run_quantize.py": "quantize",
           "summarize.py": "summarize"}
MODULES = {"racecomp.studies.upscale": "upscale", "racecomp.studies.verify": "verify",
           "racecomp.studies.quantize": "quantize", "racecomp.tables": "summarize", "racecomp.sweep": "sweep",
           "racecomp.toydata": "toydata", "racecomp.datasets": "datasets"}
ENTRY_POINTS = {"racecomp-upscale": "upscale", "racecomp-verify": "verify", "racecomp-quantize": "quantize",
                "racecomp-summarize": "summarize"}
STUDIES = {"upscale": upscale, "verify": verify, "quantize": quantize}
# Each command's main, replaced by a recorder when the notebook's cells run.
MAINS = {"upscale": "racecomp.studies.upscale", "verify": "racecomp.studies.verify",
         "quantize": "racecomp.studies.quantize", "summarize": "racecomp.tables.command",
         "sweep": "racecomp.sweep", "toydata": "racecomp.toydata", "datasets": "racecomp.datasets.__main__"}


def parser_of(kind):
    """The command's own parser, raising ValueError instead of exiting (bench scripts: exact flag names too)."""
    if kind.startswith("bench."):
        parser = importlib.import_module(kind).get_args_parser()
        parser.allow_abbrev = False  # the project's commands take exact names; hold the benches' docs to it
    else:
        parser = importlib.import_module(MAINS[kind]).get_args_parser()

    def refuse(message):
        raise ValueError(message)

    parser.error = refuse
    for action in parser._actions:  # the datasets command's sub-command parsers
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.error = refuse
    return parser


def split_command(line):
    """(kind, argv) of a shell line running a project or bench command, else None."""
    tokens = shlex.split(line, comments=True)
    for index, token in enumerate(tokens):
        if token in SHELL_OPERATORS:
            tokens = tokens[:index]
            break
    while tokens and (re.fullmatch(r"[A-Z_]+=\S*", tokens[0]) or tokens[0] == "/usr/bin/time"):
        tokens = tokens[3 if tokens[0] == "/usr/bin/time" and tokens[1] == "-f" else
                        2 if tokens[0] == "/usr/bin/time" and tokens[1].startswith("-") else 1:]
    if tokens and tokens[0] in ENTRY_POINTS:
        return ENTRY_POINTS[tokens[0]], tokens[1:]
    if len(tokens) < 2 or tokens[0] != "python":
        return None
    if tokens[1] in SCRIPTS:
        return SCRIPTS[tokens[1]], tokens[2:]
    if tokens[1] == "-m" and tokens[2] in MODULES:
        return MODULES[tokens[2]], tokens[3:]
    if tokens[1] == "-m" and tokens[2].startswith("bench."):
        return tokens[2], tokens[3:]
    return None


def parse(kind, argv, where):
    try:
        return parser_of(kind).parse_args(argv)
    except ValueError as error:
        pytest.fail(f"{where}: {error}")


def check(kind, args, where):
    """The command's checks of its flags, before any work (nothing runs, nothing is read)."""
    try:
        if kind in STUDIES:
            STUDIES[kind].check_args(args)
        elif kind == "sweep":
            sweep_runs(args)
    except ValueError as error:
        pytest.fail(f"{where}: {error}")


def sweep_runs(args):
    return sweep.expand(args.study, [sweep.parse_grid(group) for group in args.grid], sweep.parse_fixed(args.fixed),
                        args.out_root)


def writes(kind, args):
    """{absolute folder: the study whose run it holds (None: other files)} that the command writes."""
    if kind in STUDIES:
        folders = {os.path.abspath(args.out or STUDIES[kind].default_out(args)): kind}
        if kind == "quantize" and args.model_run is None and args.weights is None:
            folders[quantize.demo_model_run(args)] = "verify"  # it trains run_verify's demo run first
        return folders
    if kind == "sweep":
        return {run.folder: args.study for run in sweep_runs(args)}
    if kind in ("summarize", "toydata"):
        return {os.path.abspath(args.out): None}
    return {}


def reads(kind, args):
    """[(path, the study whose run folder it must be, or None for data and weights files)] of the command."""
    found = []
    if kind == "upscale":
        found = [(args.identity_model, None if args.identity_arch else "verify"), (args.data, None),
                 (args.pretrained_path, None), (args.vgg_weights, None)]
    elif kind == "verify":
        restore = None if verify.restore_setting(args) in (None, *verify.BICUBIC_RESTORES) else args.restore
        found = [(args.weights, None), (args.init_from, "upscale"), (restore, "upscale"), (args.data, None),
                 (args.rfw, None), (args.probe_data, None)]
    elif kind == "quantize":
        found = [(args.model_run, args.task), (args.weights, None), (args.calib_data, None),
                 (args.synthetic_folder, None), (args.rfw, None), (args.data, None)]
    elif kind == "summarize":
        found = [(path, "any") for path in args.paths]
    elif kind == "datasets":
        found = [(args.fairface, None), (args.rfw, None), (args.identities, None)]
    return [(path, study) for path, study in found if path is not None]


def read_problem(path, study, written):
    """Why `path` (read by a command) is not there when the command runs, or None."""
    if path in USER_PATHS:
        return None
    target = os.path.abspath(path)
    if study == "any":  # summarize: a folder above finished runs, or a glob matching them
        if any(folder == target or folder.startswith(target + os.sep) or fnmatch.fnmatch(folder, target)
               for folder in written):
            return None
        return f"{path}: no earlier command writes a run below it"
    if target in written:
        if study is not None and written[target] != study:
            return f"{path}: a {written[target]} run, not a {study} run"
        return None
    parent = os.path.dirname(target)
    if study is None and written.get(parent) in runs.FINAL_WEIGHTS:
        final = runs.FINAL_WEIGHTS[written[parent]]
        return None if os.path.basename(target) == final else \
            f"{path}: a {written[parent]} run keeps {final}, not {os.path.basename(target)}"
    return f"{path}: no earlier command writes it (and it is not one of the user's paths, USER_PATHS)"


def follow(commands):
    """Check each (kind, args, where) in order: its reads against what the earlier ones wrote; [problems]."""
    written, problems = {}, []
    for kind, args, where in commands:
        problems += [f"{where}: {problem}" for path, study in reads(kind, args)
                     if (problem := read_problem(path, study, written))]
        written.update(writes(kind, args))
    return problems


# ----------------------------------------------------------------------------------------------------
# README.md

def fenced_blocks(text):
    """[(language, [lines], line number of the opening fence, the text before the block)]."""
    blocks, lines, inside, start = [], text.split("\n"), None, 0
    for number, line in enumerate(lines, 1):
        if line.startswith("```") and inside is None:
            inside, start, language = [], number, line[3:].strip()
        elif line.startswith("```"):
            blocks.append((language, inside, start, "\n".join(lines[:start - 1])))
            inside = None
        elif inside is not None:
            inside.append(line)
    return blocks


def shell_lines(lines):
    """Lines with `\\` continuations joined, (line, number in the block)."""
    joined, current, first = [], "", 0
    for number, line in enumerate(lines):
        current, first = (current + " " + line.rstrip("\\").strip(), first) if current else (line.rstrip("\\"), number)
        if not line.rstrip().endswith("\\"):
            joined.append((current, first))
            current = ""
    return joined


def block_commands(language, lines, start, before, name):
    """[(kind, args, where)] of one fenced block, checked; `<same arguments>` stands for the previous sweep's."""
    commands = []
    if language == "python":  # a pasted script's ARGS line: the script named last before the block
        script = re.findall(r"(run_\w+\.py|summarize\.py)", before)[-1]
        for offset, line in enumerate(lines):
            match = re.fullmatch(r'ARGS = "(.*)"', line.strip())
            if match:
                where = f"{name}:{start + 1 + offset}"
                args = parse(SCRIPTS[script], shlex.split(match.group(1)), where)
                commands.append((SCRIPTS[script], args, where))
        return commands
    for line, offset in shell_lines(lines):
        where = f"{name}:{start + 1 + offset}"
        if "<same arguments>" in line:
            previous = [shlex.join(args_line) for kind, args_line in block_commands.sweeps]
            assert previous, f"{where}: <same arguments> with no sweep command before it"
            line = line.replace("<same arguments>", previous[-1])
        command = split_command(line)
        if command is None:
            continue
        kind, argv = command
        args = parse(kind, argv, where)
        check(kind, args, where)
        if kind == "sweep" and "--format" not in argv and "--status" not in argv:
            block_commands.sweeps.append((kind, argv[1:]))
        commands.append((kind, args, where))
    return commands


block_commands.sweeps = []


def readme_flows(text, name="README.md"):
    block_commands.sweeps = []
    return [block_commands(*block, name) for block in fenced_blocks(text)]


def inline_commands(text):
    """(`python ...` command, line number) of every inline code span outside the fenced blocks."""
    found, fence = [], False
    for number, line in enumerate(text.split("\n"), 1):
        if line.startswith("```"):
            fence = not fence
            continue
        if fence:
            continue
        for span in re.findall(r"`([^`]+)`", line):
            for placeholder, stand_in in INLINE_PLACEHOLDERS.items():
                span = span.replace(placeholder, stand_in)
            command = split_command(span) if "python" in span or "racecomp-" in span else None
            if command is not None and command[1] and "--help" not in command[1]:
                found.append((command, number))
    return found


def test_readme_fenced_commands_parse_and_each_block_reads_only_what_it_writes():
    with open(README, encoding="utf-8") as handle:
        flows = readme_flows(handle.read())
    problems = [problem for commands in flows for problem in follow(commands)]
    assert not problems, "\n".join(problems)
    kinds = {kind for commands in flows for kind, _, _ in commands}
    assert {"upscale", "verify", "summarize", "sweep", "datasets"} <= kinds  # the extraction found them


def test_readme_inline_commands_parse():
    with open(README, encoding="utf-8") as handle:
        found = inline_commands(handle.read())
    for (kind, argv), number in found:
        check(kind, parse(kind, argv, f"README.md:{number}"), f"README.md:{number}")
    assert {"verify", "quantize", "summarize"} <= {kind for (kind, _), _ in found}


def test_benchmarks_commands_parse():
    with open(BENCHMARKS, encoding="utf-8") as handle:
        found = inline_commands(handle.read())
    for (kind, argv), number in found:
        args = parse(kind, argv, f"BENCHMARKS.md:{number}")
        if kind == "bench.bench_threads":  # the arguments after -- are run_upscale.py's
            upscale_argv = args.arguments[1:] if args.arguments[:1] == ["--"] else args.arguments
            check("upscale", parse("upscale", upscale_argv, f"BENCHMARKS.md:{number}"), f"BENCHMARKS.md:{number}")
    assert sum(kind.startswith("bench.") for (kind, _), _ in found) >= 10


# ----------------------------------------------------------------------------------------------------
# The notebook

def notebook_commands(monkeypatch, parameters):
    """(kind, args, where) of every command the notebook's cells run, with `parameters` set right after its
    parameters cell; every command's main is a recorder and Colab's Drive a stub, so nothing runs."""
    with open(NOTEBOOK, encoding="utf-8") as handle:
        cells = [cell for cell in json.load(handle)["cells"] if cell["cell_type"] == "code"]
    recorded = []
    for kind, module in MAINS.items():
        def record(args, kind=kind):
            recorded.append((kind, args, f"notebook cell {current[0]}"))
            return 0
        monkeypatch.setattr(importlib.import_module(module), "main", record)
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=lambda path: None)
    monkeypatch.setattr(shutil, "copytree", lambda *args, **kwargs: None)  # the local copy of Drive's FairFace
    monkeypatch.setattr(os, "rename", lambda *args: None)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    last = max(index for index, cell in enumerate(cells) if "parse_args(" in "".join(cell["source"]))
    namespace, current = {"__name__": "__main__"}, [None]
    for cell in cells[1:last + 1]:  # the install cell installs; the cells after the last command show files
        current[0] = cell["id"]
        source = "".join(line for line in cell["source"] if not line.lstrip().startswith(("!", "%")))
        try:
            exec(compile(source, f"<{cell['id']}>", "exec"), namespace)
        except SystemExit as error:  # argparse: a misspelled flag
            pytest.fail(f"notebook cell {cell['id']}: exits ({error}) with parameters {parameters}")
        if "parameters" in cell["metadata"].get("tags", []):
            namespace.update(parameters)
    return recorded


@pytest.mark.parametrize("parameters", [{}, {"RECIPE": None}, {"MINORITY": "none"}, {"FAIRFACE": "/content/drive/MyDrive/FairFace"},
                                        {"SCALE": 4, "ARCH": "fastvit"}])
def test_notebook_commands_parse_and_read_only_what_they_write(parameters, monkeypatch):
    commands = notebook_commands(monkeypatch, parameters)
    for kind, args, where in commands:
        check(kind, args, f"{where} with {parameters}")
    assert [kind for kind, _, _ in commands if kind != "datasets"] == ["upscale", "upscale", "summarize"]
    assert not (problems := follow(commands)), "\n".join(problems)


# ----------------------------------------------------------------------------------------------------
# The checker itself: it must catch what it is for.

IDENTITY_FLOW = """
```bash
python run_verify.py
python run_upscale.py --arch fastvit_t8 --identity-model runs/verify/mobilefacenet-scratch-full-balanced-seed0
python run_verify.py --epochs 0 --weights runs/verify/mobilefacenet-scratch-full-balanced-seed0/model.pth \\
    --restore runs/upscale/fastvit_t8-x2-pixelshuffle-balanced-seed0-id-mobilefacenet-scratch-full-balanced-seed0
python summarize.py runs/ --out tables/
```
"""


def problems_of(text):
    return [problem for commands in readme_flows(text, "doc") for problem in follow(commands)]


def test_checker_accepts_a_right_flow():
    assert problems_of(IDENTITY_FLOW) == []


@pytest.mark.parametrize("wrong, right, says", [
    # the README's identity flow before it was fixed: the upscaler run writes the -id-... folder
    ("--restore runs/upscale/fastvit_t8-x2-pixelshuffle-balanced-seed0-id-mobilefacenet-scratch-full-balanced-seed0",
     "--restore runs/upscale/fastvit_t8-x2-pixelshuffle-balanced-seed0", "no earlier command writes it"),
    ("seed0/model.pth", "seed0/checkpoint.pth", "keeps model.pth, not checkpoint.pth"),
    ("--identity-model runs/verify/", "--identity-model runs/upscale/", "no earlier command writes it"),
    ("python summarize.py runs/", "python summarize.py elsewhere/", "writes a run below it"),
])
def test_checker_finds_a_folder_no_command_writes(wrong, right, says):
    problems = problems_of(IDENTITY_FLOW.replace(wrong, right, 1))
    assert problems and says in problems[0], problems


@pytest.mark.parametrize("wrong, right", [("--arch fastvit_t8", "--arc fastvit_t8"), ("--epochs 0", "--epoch 0"),
                                          ("--out tables/", "--out tables/ --n-bot 10")])
def test_checker_refuses_a_misspelled_or_abbreviated_flag(wrong, right):
    with pytest.raises(pytest.fail.Exception, match="unrecognized arguments"):
        problems_of(IDENTITY_FLOW.replace(wrong, right, 1))


def test_checker_refuses_a_weight_without_minority():
    with pytest.raises(pytest.fail.Exception, match="--weight needs --minority"):
        problems_of("```bash\npython run_upscale.py --minority none --weight 0.2\n```\n")
