"""The four scripts at the top, run the ways users run them: pasted whole into a notebook cell (kernel argv,
arguments on the ARGS line), and from the command line (where ARGS must stay empty and typos stay errors)."""
import argparse
import csv
import os
import re
import runpy
import sys

import pytest
import torch

from racecomp import cli, facenets, toyfairface, toyrfw
from racecomp.errors import InputError
from racecomp.studies import upscale

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNEL_ARGV = ["/usr/local/lib/python3.11/dist-packages/colab_kernel_launcher.py", "-f",
               "/root/.local/share/jupyter/runtime/kernel-abc.json"]
SIZE = 32


def paste_into_cell(script, arguments, monkeypatch):
    """Run `script`'s text the way a notebook cell runs it: in a fresh __main__ namespace, the kernel's own
    sys.argv, and the run's arguments written on the ARGS line as the README tells the user to."""
    with open(os.path.join(REPO_ROOT, script), encoding="utf-8") as handle:
        text = handle.read()
    text, count = re.subn(r'^ARGS = ""$', f"ARGS = {arguments!r}", text, flags=re.MULTILINE)
    assert count == 1, f"{script}: no ARGS line"
    monkeypatch.setattr(sys, "argv", list(KERNEL_ARGV))
    exec(compile(text, "<cell>", "exec"), {"__name__": "__main__"})


def read_races(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return [row["race"] for row in csv.DictReader(handle)]


def test_each_script_pasted_into_a_cell_runs_with_the_cell_arguments(tmp_path, monkeypatch):
    fairface = toyfairface.make_fairface(tmp_path / "ff", n_train=28, n_val=14, size=SIZE, seed=2)
    rfw = toyrfw.make_rfw(tmp_path / "rfw", n_ids=20, images_per_id=2, pairs_per_fold=2, size=SIZE, seed=2)
    identities = toyrfw.make_identities(tmp_path / "ids", n_ids_per_race=2, images_per_id=2, size=SIZE, seed=2)
    torch.manual_seed(0)
    weights = tmp_path / "w.pth"
    torch.save(facenets.get_model("fastvit_t8", 32).state_dict(), weights)
    runs = tmp_path / "runs"
    paste_into_cell("run_upscale.py", f"--arch bicubic --data {fairface} --out {runs}/upscale --workers 0 "
                                      f"--save-samples 0", monkeypatch)
    assert len(read_races(runs / "upscale" / "per_race.csv")) == 7
    model = f"--arch fastvit_t8 --embedding-size 32 --image-size {SIZE}"
    paste_into_cell("run_verify.py", f"{model} --weights {weights} --epochs 0 --rfw {rfw} --races african "
                                     f"--out {runs}/verify --workers 0", monkeypatch)
    assert read_races(runs / "verify" / "per_race.csv") == ["African"]
    paste_into_cell("run_quantize.py", f"--model-run {runs}/verify --bits w8a8 --calib real --calib-data "
                                       f"{identities} --calib-size 4 --out {runs}/quantize --workers 0", monkeypatch)
    assert read_races(runs / "quantize" / "w8a8-real" / "per_race.csv") == ["African"]
    paste_into_cell("summarize.py", f"{runs} --out {tmp_path / 'tables'} --n-boot 20", monkeypatch)
    assert (tmp_path / "tables" / "tables.md").is_file()


def test_outside_a_notebook_the_command_line_rules(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["run_upscale.py", "--arch", "bicubic"])
    assert not cli.in_notebook_kernel()
    assert cli.script_arguments("") == ["--arch", "bicubic"]
    with pytest.raises(SystemExit, match="ARGS .* is for a notebook cell"):
        cli.script_arguments("--arch resnet50")
    monkeypatch.setattr(sys, "argv", list(KERNEL_ARGV))
    assert cli.in_notebook_kernel()
    assert cli.script_arguments("--arch resnet50 --weight 0.2") == ["--arch", "resnet50", "--weight", "0.2"]


@pytest.mark.parametrize("typo", ["--scal 4", "--archh bicubic"])
def test_a_typo_in_the_cell_arguments_is_still_an_error(typo, monkeypatch, capsys):
    # Not even a prefix of a real flag is taken for it ("--scal" would silently mean --scale).
    with pytest.raises(SystemExit):
        paste_into_cell("run_upscale.py", f"--arch bicubic {typo}", monkeypatch)
    assert f"unrecognized arguments: {typo}" in capsys.readouterr().err


@pytest.mark.parametrize("entry", ["script", "installed"])
def test_a_user_error_is_one_line_and_leaves_no_empty_run_folder(entry, tmp_path, monkeypatch):
    # `python run_upscale.py ...` (runpy, __main__) and the installed `racecomp-upscale` (command_line): SystemExit
    # carries the one line that Python prints to stderr, with exit status 1, instead of a traceback.
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["run_upscale.py", "--arch", "bicubic", "--data", str(tmp_path / "nowhere"),
                                      "--out", str(out)])
    with pytest.raises(SystemExit) as stopped:
        if entry == "script":
            runpy.run_path(os.path.join(REPO_ROOT, "run_upscale.py"), run_name="__main__")
        else:
            upscale.command_line()
    message = str(stopped.value.code)
    assert message.startswith(f"error: {tmp_path / 'nowhere'}: no such folder") and "Traceback" not in message
    assert not out.exists()


def test_ctrl_c_says_how_to_continue_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    def interrupted(args):
        os.makedirs(args.out)
        raise KeyboardInterrupt

    def bad_value(args):
        raise InputError("--weight 2: must be in (0, 1]")

    def bug(args):
        raise ValueError("operands could not be broadcast together")

    with pytest.raises(SystemExit, match=f"Run the same command again.*{tmp_path / 'run'}"):
        cli.run_script(interrupted, argparse.Namespace(out=str(tmp_path / "run")))
    with pytest.raises(SystemExit, match=r"error: --weight 2") as stopped:
        cli.run_script(bad_value, argparse.Namespace(out=None))
    assert "\n" not in str(stopped.value.code)  # one line
    # A ValueError that is not an InputError is a bug inside the code: its traceback is shown, never one line.
    with pytest.raises(ValueError, match="broadcast"):
        cli.run_script(bug, argparse.Namespace(out=None))
    monkeypatch.setenv("RACECOMP_DEBUG", "1")
    with pytest.raises(InputError):
        cli.run_script(bad_value, argparse.Namespace(out=None))
