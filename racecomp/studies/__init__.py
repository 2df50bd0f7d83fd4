"""The three studies, one module each, all of one shape: each supplies the hooks build_model / prepare / train /
evaluate, and racecomp.studies.run_folder.run_study runs any of them from start to end (its docstring).

The scripts at the top of the repository (run_upscale.py, run_verify.py, run_quantize.py) are shims over
these modules; racecomp.sweep, run_study and the quantization study reach them by name, through `get`.
"""
from racecomp.errors import InputError
from racecomp.studies import quantize, upscale, verify

STUDIES = {"upscale": upscale, "verify": verify, "quantize": quantize}


def get(name):
    """The study module called `name`."""
    if name not in STUDIES:
        raise InputError(f"unknown study {name!r}; expected one of {', '.join(STUDIES)}")
    return STUDIES[name]
