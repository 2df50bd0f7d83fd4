"""The three studies, one module each, all with the same surface (see racecomp.studies.upscale).

The scripts at the top of the repository (run_upscale.py, run_verify.py, run_quantize.py) are shims over
these modules; racecomp.sweep reaches them through `get`.
"""
from racecomp.errors import InputError
from racecomp.studies import quantize, upscale, verify

STUDIES = {"upscale": upscale, "verify": verify, "quantize": quantize}


def get(name):
    """The study module called `name`."""
    if name not in STUDIES:
        raise InputError(f"unknown study {name!r}; expected one of {', '.join(STUDIES)}")
    return STUDIES[name]
