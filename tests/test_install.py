"""`pip install .` installs a racecomp that imports from any folder, with every subpackage and its entry points."""
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pip_install_gives_an_importable_package_outside_the_checkout(tmp_path):
    # --target: a fresh install folder without a new environment (torch & co. come from this interpreter);
    # --no-deps: only what this repository's pyproject.toml packages, which is what is under test;
    # --no-build-isolation: the build backend (setuptools) of this interpreter, no download.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(target), REPO_ROOT],
                   check=True, capture_output=True, cwd=tmp_path)
    environment = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(target)}
    # One interpreter (torch loads once): where racecomp comes from, then the installed entry point's --help.
    entry_point = target / "bin" / "racecomp-upscale"
    probe = ("import runpy, sys, racecomp, racecomp.studies, racecomp.datasets, racecomp.tables;"
             f"print(racecomp.__file__); sys.argv = [{str(entry_point)!r}, '--help'];"
             f"runpy.run_path({str(entry_point)!r}, run_name='__main__')")
    output = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path,
                            env=environment).stdout
    where, usage = output.split("\n", 1)
    assert where == str(target / "racecomp" / "__init__.py"), where
    assert "--minority" in usage
