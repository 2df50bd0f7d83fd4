"""Multi-process training and evaluation under `torchrun`: process-group set-up, rank queries, gathering.

torchrun starts one process per device and gives each RANK (0..WORLD_SIZE-1 over all nodes), WORLD_SIZE and
LOCAL_RANK (0..processes-per-node-1) in its environment. A process without those variables is a single
process: world size 1, no process group, and every function here is then a cheap no-op or identity.
Nothing happens at import time; `setup` is called once by a script's main().
"""
import contextlib
import os

import torch
import torch.distributed as dist


def environment_world():
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) when it is not set."""
    if "WORLD_SIZE" not in os.environ:
        return 0, 1, 0
    try:
        world_size = int(os.environ["WORLD_SIZE"])
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError) as error:
        raise ValueError(f"torchrun environment is incomplete or not integers (RANK, WORLD_SIZE, LOCAL_RANK): "
                         f"{error}") from error
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ValueError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world_size}, LOCAL_RANK={local_rank}")
    return rank, world_size, local_rank


def refuse_torchrun(script):
    """ValueError when started by torchrun with several processes: for a study that runs as one process
    (every process would take cuda:0 and write the same --out)."""
    _, world_size, _ = environment_world()
    if world_size > 1:
        raise ValueError(f"{script} runs as one process, but torchrun started {world_size} (WORLD_SIZE): start "
                         f"it with python instead (only run_upscale.py trains over several processes)")


def local_rank():
    """This process's index among the processes of its node (torchrun's LOCAL_RANK; 0 in one process)."""
    return environment_world()[2] if dist.is_initialized() else 0


def process_device(device, local_rank, world_size):
    """The device this process computes on, from the resolved --device.

    With several processes, CUDA means one GPU per process: cuda:LOCAL_RANK. An explicit other index would
    put every process of a node on one GPU, so it is refused.
    """
    device = torch.device(device)
    if world_size == 1 or device.type != "cuda":
        return device
    if device.index is not None and device.index != local_rank:
        raise ValueError(f"--device {device} with {world_size} processes: each process uses cuda:LOCAL_RANK; "
                         f"pass --device auto or cuda")
    return torch.device("cuda", local_rank)


def setup(device):
    """Join torchrun's process group (when WORLD_SIZE > 1) and return this process's device.

    Backend: nccl on CUDA, gloo on CPU. The rendezvous address comes from torchrun's MASTER_ADDR and
    MASTER_PORT. A single process initializes nothing. Pair with `teardown` (or use `session`).
    """
    rank, world_size, local_rank = environment_world()
    device = process_device(device, local_rank, world_size)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # nccl collectives and gather_object use the current device
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=rank,
                                world_size=world_size, device_id=device if device.type == "cuda" else None)
    return device


def teardown():
    """Leave the process group (if one was joined); safe to call more than once."""
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def session(device):
    """`with session(device) as device:` set-up, then teardown even when the body raises."""
    try:
        yield setup(device)
    finally:
        teardown()


def world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def is_main():
    """True on the process that writes files and prints progress (global rank 0)."""
    return rank() == 0


def barrier():
    if dist.is_initialized():
        dist.barrier()


def broadcast_object(obj, source=0):
    """`obj` of rank `source`, on every rank (picklable Python objects); identity in a single process."""
    if not dist.is_initialized():
        return obj
    holder = [obj if rank() == source else None]
    dist.broadcast_object_list(holder, src=source)
    return holder[0]


def all_gather_objects(obj):
    """[obj of rank 0, obj of rank 1, ...] on every rank (picklable Python objects); [obj] in one process."""
    if not dist.is_initialized():
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_buffers(module, source=0):
    """Copy `module`'s buffers (BatchNorm running statistics) from rank `source` to every rank, in place.

    DDP broadcasts buffers before each forward, but the last training forward of an epoch updates each
    rank's statistics with its own batch, so after training the ranks' buffers differ; evaluation and
    checkpoints must all see rank `source`'s.
    """
    if not dist.is_initialized():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=source)


def shard(items):
    """This rank's share of `items`: positions rank, rank + world_size, ... (disjoint, sizes differ by <= 1)."""
    return list(items)[rank()::world_size()]


def gather_shards(shard_items):
    """Inverse of `shard` over all ranks: the full list in original order, on every rank.

    Each rank passes the list it computed for `shard(items)`, item for item in the same order.
    """
    parts = all_gather_objects(list(shard_items))
    total = sum(len(part) for part in parts)
    merged = [None] * total
    for source, part in enumerate(parts):
        merged[source::len(parts)] = part
    return merged


def run_on_main(function, *args, **kwargs):
    """function(*args, **kwargs) on rank 0 only; its result (or the exception it raised) on every rank.

    For decisions that read shared files which rank 0 may be about to change (e.g. whether a run folder
    is fresh, resumed or finished), so every rank acts on the same answer.
    """
    if not dist.is_initialized():
        return function(*args, **kwargs)
    outcome = None
    if is_main():
        try:
            outcome = (True, function(*args, **kwargs))
        except Exception as error:  # re-raised on every rank below, so all of them stop alike
            outcome = (False, error)
    succeeded, value = broadcast_object(outcome)
    if not succeeded:
        raise value
    return value
