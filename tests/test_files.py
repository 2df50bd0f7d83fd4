"""racecomp.files: atomic writes, their file modes, run-folder life cycle (safe checkpoint loading: test_weights_only)."""
import argparse
import os

import pytest

from racecomp import files


def test_written_files_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        files.write_csv(os.path.join(tmp_path, "a.csv"), [{"x": 1}])
        os.umask(0o002)
        files.write_json(os.path.join(tmp_path, "b.json"), {"x": 1})
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / "a.csv").st_mode & 0o777 == 0o640
    assert os.stat(tmp_path / "b.json").st_mode & 0o777 == 0o664


def test_atomic_write_leaves_no_partial_file(tmp_path):
    path = tmp_path / "table.csv"
    files.write_csv(path, [{"a": 1}])

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with files.atomic_open(path, "w") as handle:
            handle.write("half")
            raise Boom()
    assert path.read_text().splitlines() == ["a", "1"]
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_prepare_out_dir_resumes_skips_or_refuses(tmp_path, capsys):
    args = argparse.Namespace(arch="resnet50", seed=0, overwrite=False)
    out = str(tmp_path)
    assert files.prepare_out_dir(out, args) == "fresh"
    files.write_json(os.path.join(out, "args.json"), files.run_record(args))
    files.write_bytes(os.path.join(out, "checkpoint.pth"), b"")
    assert files.prepare_out_dir(out, args) == "resume"
    files.write_csv(os.path.join(out, "per_race.csv"), [{"race": "Black"}])
    assert files.prepare_out_dir(out, args) == "skip"
    assert "skipping" in capsys.readouterr().out
    other = argparse.Namespace(arch="fastvit_sa24", seed=0, overwrite=False)
    with pytest.raises(ValueError, match="different arguments.*arch"):
        files.prepare_out_dir(out, other)
    assert files.prepare_out_dir(out, other, overwrite=True) == "fresh"


def test_a_run_from_before_the_gpu_flags_still_resumes_and_amp_auto_matches_what_ran(tmp_path):
    out = str(tmp_path)
    before = argparse.Namespace(arch="resnet50", amp="fp16", seed=0)  # args.json of a run made before --compile
    files.write_json(os.path.join(out, "args.json"), files.run_record(before))
    files.write_bytes(os.path.join(out, "checkpoint.pth"), b"")
    now = argparse.Namespace(arch="resnet50", amp="fp16", seed=0, compile=False, deterministic=True,
                             channels_last=True)
    assert files.prepare_out_dir(out, now) == "resume"
    # racecomp.sweep's status, on a machine that cannot resolve --amp auto: the run's own precision counts.
    assert files.prepare_out_dir(out, argparse.Namespace(**dict(vars(now), amp="auto"))) == "resume"
    for changed in (dict(compile=True), dict(amp="bf16")):
        with pytest.raises(ValueError, match=f"different arguments.*{next(iter(changed))}"):
            files.prepare_out_dir(out, argparse.Namespace(**dict(vars(now), **changed)))
