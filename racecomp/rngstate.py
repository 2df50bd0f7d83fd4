"""The random generators' states in a checkpoint: Python's, numpy's, torch's CPU generator and the CUDA
device's, saved as plain tensors and containers (a weights_only load reads them) and restored on resume."""
import random

import numpy as np
import torch

from racecomp import distributed
from racecomp.errors import InputError


def rng_state(device):
    """Python's, numpy's and torch's CPU generator states, and on CUDA the generator of `device` only (the
    one this process draws from: a checkpoint then resumes on a machine with fewer GPUs)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _rng_to_plain(state):
    """RNG states as tensors and plain containers, so checkpoints load with weights_only=True."""
    python_state = state["python"]
    numpy_state = state["numpy"]
    plain = {"python": [python_state[0], list(python_state[1]), python_state[2]],
             "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
             "torch": state["torch"]}
    if "cuda" in state:
        plain["cuda"] = state["cuda"]
    return plain


def rng_checkpoint(device):
    """This process's generators for a checkpoint (_rng_to_plain), the device generator of every rank
    gathered in rank order (a collective under torchrun: every rank calls it)."""
    state = rng_state(device)
    if "cuda" in state:
        state["cuda"] = distributed.all_gather_objects(state["cuda"])
    return _rng_to_plain(state)


def restore_rng(plain, device, rank=0):
    """Restore `plain` (_rng_to_plain's, its "cuda" a list of each rank's device state, in rank order) in the
    process of `rank` computing on `device`. A CUDA state is restored onto `device` only: one saved on the
    CPU, or a CUDA one resumed on the CPU, leaves the device generator as it is."""
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(plain["torch"])
    if "cuda" in plain and torch.device(device).type == "cuda":
        states = plain["cuda"]
        if rank >= len(states):
            raise InputError(f"the checkpoint holds the CUDA generator states of {len(states)} process(es), "
                             f"none for rank {rank}")
        torch.cuda.set_rng_state(states[rank], device)
