"""The three studies, one module each, all of one shape: each supplies the hooks build_model / prepare / train /
evaluate, and racecomp.studies.run_folder.run_study runs any of them from start to end (its docstring).

The scripts at the top of the repository (run_upscale.py, run_verify.py, run_quantize.py) are shims over
these modules; racecomp.sweep, run_study and the quantization study reach them by name, through `get`.
"""
import importlib

from racecomp.errors import InputError
from racecomp.schema import STUDIES


def get(name):
    """The study module called `name`, imported on first use: run_folder and the quantization study reach the
    others through here, so importing them all with the package would make an import cycle."""
    if name not in STUDIES:
        raise InputError(f"unknown study {name!r}; expected one of {', '.join(STUDIES)}")
    return importlib.import_module(f"racecomp.studies.{name}")
