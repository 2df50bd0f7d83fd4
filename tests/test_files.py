"""racecomp.files: atomic writes, their file modes, run-folder life cycle."""
import os

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
