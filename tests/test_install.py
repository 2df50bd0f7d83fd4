"""`pip install .` installs a racecomp that imports from any folder, with every subpackage and its entry points."""
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pip_install_gives_an_importable_package_outside_the_checkout(tmp_path):
    # --target: a fresh install folder without a new environment (torch & co. come from this interpreter);
    # --no-deps: only what this repository's pyproject.toml packages, which is what is under test.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), REPO_ROOT],
                   check=True, capture_output=True, cwd=tmp_path)
    environment = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(target)}
    probe = ("import racecomp, racecomp.studies, racecomp.datasets, racecomp.tables, racecomp.studies.upscale;"
             "print(racecomp.__file__)")
    where = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path,
                           env=environment).stdout.strip()
    assert where == str(target / "racecomp" / "__init__.py"), where
    usage = subprocess.run([sys.executable, str(target / "bin" / "racecomp-upscale"), "--help"], check=True,
                           capture_output=True, text=True, cwd=tmp_path, env=environment).stdout
    assert "--minority" in usage
