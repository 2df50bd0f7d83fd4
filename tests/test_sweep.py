"""racecomp.sweep: grid expansion, folder names, validation by the scripts' parsers, status and SLURM output."""
import argparse
import itertools
import os
import shlex
import subprocess
import sys

import pytest

from racecomp import files, sweep, toyfairface
from racecomp.studies import quantize, run_folder, upscale

FAIRFACE_SLUGS = ("white", "black", "latino_hispanic", "east_asian", "southeast_asian", "indian", "middle_eastern")
UPSCALE_GRID = ["arch=resnet50,fastvit", f"minority=none,{','.join(FAIRFACE_SLUGS)}", "weight=0.2,0.05",
                "scale=2,4", "seed=0,1,2"]
BICUBIC_GRID = ["arch=bicubic", "scale=2,4"]
SCRIPT = os.path.join(sweep.REPO_ROOT, "run_upscale.py")


def sweep_main(*argv):
    return sweep.main(sweep.get_args_parser().parse_args(list(argv)))


def expand(grids, fixed=(), out_root="root", study="upscale"):
    return sweep.expand(study, [sweep.parse_grid(g) for g in grids], sweep.parse_fixed(list(fixed)), out_root)


def script_args(command, module=upscale):
    """A printed command line parsed as the shell and then the script itself would (--out made absolute)."""
    tokens = shlex.split(command)
    args = module.get_args_parser().parse_args(tokens[2:])
    args.out = os.path.abspath(args.out)
    return tokens, args


def test_whole_upscaling_grid_expands_with_one_balanced_run_per_weightless_setting(tmp_path):
    runs = expand([UPSCALE_GRID, BICUBIC_GRID], out_root=tmp_path)
    assert len(runs) == 2 * 7 * 2 * 2 * 3 + 2 * 2 * 3 + 2 == 182
    seen = [(r.args.arch, r.args.minority, r.args.weight, r.args.scale, r.args.seed) for r in runs]
    expected = set(itertools.product(("resnet50", "fastvit"), FAIRFACE_SLUGS, (0.2, 0.05), (2, 4), (0, 1, 2)))
    expected |= set(itertools.product(("resnet50", "fastvit"), ("none",), (1.0,), (2, 4), (0, 1, 2)))
    expected |= {("bicubic", "none", 1.0, 2, 0), ("bicubic", "none", 1.0, 4, 0)}
    assert len(seen) == len(set(seen)) and set(seen) == expected
    balanced = [r for r in runs if r.args.minority == "none" and r.args.arch != "bicubic"]
    assert len(balanced) == 12
    assert all("weight" not in os.path.basename(r.folder) and r.argv[r.argv.index("--weight") + 1] == "1"
               for r in balanced)


def test_folder_names_are_deterministic_unique_and_in_sorted_key_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = [r.folder for r in expand([UPSCALE_GRID, BICUBIC_GRID], out_root="runs/grid")]
    shuffled = [list(reversed(UPSCALE_GRID)), list(reversed(BICUBIC_GRID))]
    second = [r.folder for r in expand(shuffled, fixed=["epochs=20"], out_root="runs/grid")]
    assert first == [r.folder for r in expand([UPSCALE_GRID, BICUBIC_GRID], out_root="runs/grid")]
    assert set(first) == set(second) and len(set(first)) == len(first)
    root = os.path.join(str(tmp_path), "runs", "grid", "upscale")
    assert all(os.path.dirname(folder) == root for folder in first)
    names = {os.path.basename(folder) for folder in first}
    assert {"arch-fastvit_minority-east_asian_scale-4_seed-1_weight-0.05",
            "arch-resnet50_minority-none_scale-2_seed-0", "arch-bicubic_scale-4"} <= names


def test_every_printed_command_parses_with_the_scripts_parser(tmp_path, capsys):
    sweep_main("upscale", "--grid", *UPSCALE_GRID, "--grid", *BICUBIC_GRID, "--out-root", str(tmp_path / "g"),
               "--fixed", "epochs=20", "batch-size=64", "data=/data/my fairface", "pretrained")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 182
    folders = set()
    for line in lines:
        tokens, args = script_args(line)
        assert tokens[:2] == [sys.executable, SCRIPT]  # the interpreter running the sweep: a venv needs no activation
        assert (args.epochs, args.batch_size, args.data, args.pretrained) == (20, 64, "/data/my fairface", True)
        name = f"arch-{args.arch}"
        if args.arch != "bicubic":
            name += f"_minority-{args.minority}_scale-{args.scale}_seed-{args.seed}"
            name += f"_weight-{args.weight:g}" if args.minority != "none" else ""
        else:
            name += f"_scale-{args.scale}"
        assert args.out == str(tmp_path / "g" / "upscale" / name)
        folders.add(args.out)
    assert len(folders) == 182


@pytest.mark.parametrize("grid, fixed, message", [
    (["archh=resnet50"], [], r"--grid archh=resnet50: unrecognized arguments: --archh"),
    (["arch=resnet50,resnet5O"], [], r"--grid arch=resnet5O: argument --arch: invalid choice"),
    (["scal=2"], [], r"--grid scal=2: unrecognized arguments"),  # no argparse abbreviations
    (["minority=black,blak", "weight=0.2"], [], r"--grid minority=blak: --minority blak: unknown race 'blak'"),
    (["minority=black", "weight=0.2,1.5"], [], r"--grid weight=1.5: --weight 1.5: must be in \(0, 1\]"),
    (["seed=0,one"], [], r"--grid seed=one: argument --seed: invalid int value"),
    (["seed=0"], ["epochs=two"], r"--fixed epochs=two: argument --epochs: invalid int"),
    (["pretrained=yes"], [], r"--grid pretrained=yes: unrecognized arguments: yes"),
    (["out=elsewhere"], [], r"key 'out' is not allowed"),
    (["seed=0"], ["overwrite"], r"key 'overwrite' is not allowed"),
    (["seed=0"], ["seed=1"], r"key 'seed' is both in --grid and in --fixed"),
    # A balanced run (the default minority) has no weight: refused as the script refuses --weight alone.
    (["weight=0.2,0.05"], [], r"weight=0.2,0.05 without a minority"),
    (["weight=0.2,0.05", "seed=0,1"], [], r"weight=0.2,0.05 without a minority"),
    (["seed=0,1"], ["weight=0.2", "minority=none"], r"weight=0.2 without a minority"),
])
def test_a_typo_fails_before_any_run_naming_key_and_value(grid, fixed, message):
    with pytest.raises(ValueError, match=message):
        expand([grid], fixed)


@pytest.mark.parametrize("items, message", [
    (["arch"], "expected KEY=VALUE"), (["arch="], "no empty value"), (["seed=0,,1"], "no empty value"),
    (["seed=0,0"], "repeated"), (["seed=0", "seed=1"], "given twice"),
])
def test_malformed_grid_items_are_refused(items, message):
    with pytest.raises(ValueError, match=message):
        sweep.parse_grid(items)


def test_one_run_under_two_folders_or_two_runs_in_one_folder_are_refused():
    with pytest.raises(ValueError, match="same run is listed under two folders"):
        expand([BICUBIC_GRID, BICUBIC_GRID + ["seed=0"]])
    with pytest.raises(ValueError, match="two different runs would share .*model-run-run1"):
        expand([["model-run=/a/run1,/b/run1"]], study="quantize")


def test_rfw_vocabulary_and_bit_widths_are_checked_per_study():
    assert len(expand([["minority=none,african", "weight=0.1,0.5"]], study="verify")) == 3
    with pytest.raises(ValueError, match="--grid minority=black: --minority black: unknown race"):
        expand([["minority=black"]], study="verify")  # a FairFace name, not an RFW one
    with pytest.raises(ValueError, match="--grid bits=w9a8: weight bits"):
        expand([["bits=w8a8,w9a8"]], study="quantize")


def plant_state(line, state):
    """Put a run folder in `state`, with args.json written from the printed command as the script would."""
    _, args = script_args(line)
    if state == "not started":
        return
    if state == "conflict":
        args.epochs += 1
    files.write_json(os.path.join(args.out, "args.json"), files.run_record(args, study="upscale"))
    if state == "finished":
        files.write_csv(os.path.join(args.out, files.FINISHED_MARKER), [{"race": "White", "psnr_y": 30.0}])
    if state == "checkpoint":
        files.write_bytes(os.path.join(args.out, "checkpoint.pth"), b"")
    if state == "locked":
        files.write_json(os.path.join(args.out, run_folder.LOCK_FILE), {"host": "node7", "pid": 12})


def test_status_and_pending_follow_each_folder_state(tmp_path, capsys):
    common = ["upscale", "--grid", "arch=bicubic", "seed=0,1,2,3,4,5", "--out-root", str(tmp_path)]
    sweep_main(*common)
    lines = capsys.readouterr().out.splitlines()
    planted = ("finished", "checkpoint", "args only", "conflict", "not started", "locked")
    for line, state in zip(lines, planted):
        plant_state(line, state)
    states = sweep_main(*common, "--status")
    report = capsys.readouterr().out.splitlines()
    assert [state for _, state, _ in states] == ["finished", "partial", "partial", "conflict", "not started",
                                                 "partial"]
    details = [detail for _, _, detail in states]
    assert details[1] == "checkpoint: resumes" and details[2] == "no checkpoint yet: restarts"
    assert details[5].startswith('run.lock { "host": "node7", "pid": 12 }') and "running, or killed on another host" in details[5]
    assert "holds a run with different arguments (epochs)" in details[3]
    assert report[0].startswith("finished    ") and report[0].endswith("arch-bicubic_seed-0")
    assert report[-1] == "6 runs: 1 finished, 3 partial, 1 not started, 1 conflict"
    assert sweep_main(*common, "--pending") == lines[1:]
    captured = capsys.readouterr()
    assert captured.out.splitlines() == lines[1:]
    assert "arch-bicubic_seed-3 will be refused" in captured.err


def test_status_predicts_what_the_script_does_end_to_end(tmp_path, capsys):
    data = toyfairface.make_fairface(str(tmp_path / "fairface"), n_train=70, n_val=28, size=32, seed=5)
    common = ["upscale", "--grid", "arch=bicubic", "scale=2", "--out-root", str(tmp_path / "runs"), "--fixed",
              f"data={data}", "workers=0", "save-samples=0", "device=cpu", "dev-fraction=0.1"]
    (line,) = sweep_main(*common)
    capsys.readouterr()
    assert [s for _, s, _ in sweep_main(*common, "--status")] == ["not started"]
    _, args = script_args(line)
    assert upscale.main(args) is not None
    assert [s for _, s, _ in sweep_main(*common, "--status")] == ["finished"]
    assert sweep_main(*common, "--pending") == []
    _, args = script_args(line)
    assert upscale.main(args) is None  # the script skips it too
    changed = [item.replace("dev-fraction=0.1", "dev-fraction=0.2") for item in common]
    assert [s for _, s, _ in sweep_main(*changed, "--status")] == ["conflict"]
    (changed_line,) = sweep_main(*changed)
    with pytest.raises(ValueError, match="different arguments"):
        upscale.main(script_args(changed_line)[1])


def test_quantize_status_counts_its_setting_folders(tmp_path, capsys):
    common = ["quantize", "--grid", "seed=0", "--out-root", str(tmp_path), "--fixed", "bits=w8a8",
              "calib=real", "model-run=/models/up", "task=upscale"]
    (line,) = sweep_main(*common)
    _, args = script_args(line, quantize)

    def finish(name):
        sub_args = argparse.Namespace(**vars(args), setting=name)
        files.write_json(os.path.join(args.out, name, "args.json"), files.run_record(sub_args))
        files.write_csv(os.path.join(args.out, name, files.FINISHED_MARKER), [{"race": "White"}])

    finish("fp32")
    assert sweep_main(*common, "--status")[0][1:] == ("partial", "1 of 2 settings finished")
    finish("w8a8-real")
    assert sweep_main(*common, "--status")[0][1:] == ("finished", "")


def test_slurm_script_runs_line_of_its_array_task(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["upscale", "--grid", "arch=bicubic", "scale=2,4", "seed=0,1", "--out-root", "runs", "--python", "echo"]
    lines = sweep_main(*common)
    capsys.readouterr()
    sweep_main(*common, "--format", "slurm", "--slurm-option=--gres=gpu:1", "--slurm-max-parallel", "3")
    captured = capsys.readouterr()
    script = captured.out
    commands_path = captured.err.split(" commands in ")[1].strip()
    assert open(commands_path).read().splitlines() == lines
    assert os.path.basename(commands_path).startswith("sweep-") and commands_path.startswith(str(tmp_path))
    assert "#SBATCH --array=1-4%3\n" in script and "#SBATCH --gres=gpu:1\n" in script
    assert f"#SBATCH --output={tmp_path}/runs/upscale/slurm-logs/%A_%a.out\n" in script
    assert os.path.isdir(tmp_path / "runs" / "upscale" / "slurm-logs")
    (tmp_path / "job.sh").write_text(script)
    for task in (1, 4):
        done = subprocess.run(["bash", "job.sh"], capture_output=True, text=True, timeout=30,
                              env={**os.environ, "SLURM_ARRAY_TASK_ID": str(task)})
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == shlex.join(shlex.split(lines[task - 1])[1:])
    done = subprocess.run(["bash", "job.sh"], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "SLURM_ARRAY_TASK_ID": "5"})
    assert done.returncode == 1 and "no line 5" in done.stderr
    sweep_main(*common, "--format", "slurm")
    assert capsys.readouterr().err.split(" commands in ")[1].strip() == commands_path  # same text, same file


def test_commands_call_the_scripts_by_absolute_path_from_any_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sweep.script_path("upscale") == SCRIPT and os.path.isfile(SCRIPT)
    run = expand([["seed=0"]])[0]
    assert shlex.split(sweep.command_line(run, "upscale"))[:2] == [sys.executable, SCRIPT]
