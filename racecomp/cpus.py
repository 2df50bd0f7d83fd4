"""How many CPU cores this process may use, and how many torch threads to run on them.

torch starts one intra-op thread per core of the machine. On a machine shared with other jobs that
oversubscribes the cores, and OpenMP's threads, which wait for each other at every parallel operation, then
wait for a descheduled sibling each time: measured here, a 2-thread evaluation under load ran far slower
than a 1-thread one (BENCHMARKS.md, "Thread count"). So each study picks its thread count once, at start:
OMP_NUM_THREADS when the user set it, else the cores that are idle right now (at least 1). One thread too
few costs at most the parallel speed-up; one too many under load costs far more.

Torch-free (racecomp.toydata uses it to choose its worker processes).
"""
import math
import os
import time

from racecomp.errors import InputError

SAMPLE_SECONDS = 0.25  # long enough to see a busy core, short beside any run


def available_cores():
    """The cores this process may run on: its CPU affinity (taskset, container cpusets), reduced to a cgroup
    v2 CPU quota (docker --cpus) when one is set; os.cpu_count() where neither can be read."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as handle:
            quota, period = handle.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


# One DataLoader worker's resident memory at FairFace size (BENCHMARKS.md: 687 MiB); the workers of all of a node's
# processes take at most WORKER_MEMORY_SHARE of its memory.
WORKER_BYTES = 0.7e9
WORKER_MEMORY_SHARE = 0.5
# On the CPU the training step runs on the same cores, and 2 workers already feed 300-500 img/s, hundreds of times
# what a CPU trains (BENCHMARKS.md): more would only take cores and memory from the step.
CPU_TRAINING_WORKERS = 2


def memory_bytes():
    """The memory this process may use: the machine's, reduced to a cgroup v2 limit (docker --memory) when one is
    set; None where neither can be read."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = None
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as handle:
            limit = handle.read().strip()
        if limit != "max":
            total = min(total or math.inf, int(limit))
    except (OSError, ValueError):
        pass
    return total


def default_workers(gpu=None):
    """DataLoader workers per process by default, from the cores and the device: the available cores shared among
    the processes torchrun started on this node (LOCAL_WORLD_SIZE), all of them on a GPU machine (the loader must
    keep the device fed) but at most CPU_TRAINING_WORKERS on a CPU one; no more than WORKER_MEMORY_SHARE of the
    memory holds at WORKER_BYTES a worker; at least 1. gpu: whether the processes train on a CUDA device
    (default: whether torch sees one, as --device auto)."""
    try:
        processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        processes = 1
    if gpu is None:
        import torch  # here only: this module stays torch-free for racecomp.toydata
        gpu = torch.cuda.is_available()
    workers = available_cores() // processes
    if not gpu:
        workers = min(workers, CPU_TRAINING_WORKERS)
    memory = memory_bytes()
    if memory is not None:
        workers = min(workers, int(WORKER_MEMORY_SHARE * memory / WORKER_BYTES) // processes)
    return max(1, workers)


def read_cpu_times(path="/proc/stat"):
    """{cpu index: (busy, total) jiffies} of each core in a /proc/stat file; {} where there is none."""
    times = {}
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
                    idle = values[3] + values[4]
                    times[int(name[3:])] = (sum(values) - idle, sum(values))
    except (OSError, ValueError):
        return {}
    return times


def idle_cores(before, after, cpus):
    """How many of `cpus` were idle between two read_cpu_times snapshots (fractions add up); None when the
    snapshots do not cover them or no time passed."""
    busy = total = 0
    for cpu in cpus:
        if cpu not in before or cpu not in after:
            return None
        busy += after[cpu][0] - before[cpu][0]
        total += after[cpu][1] - before[cpu][1]
    if total <= 0:
        return None
    return len(cpus) * (1.0 - busy / total)


def choose_threads(cores, idle, omp_num_threads):
    """Intra-op threads: OMP_NUM_THREADS when set (a positive integer), else the idle cores rounded to the
    nearest whole core, between 1 and `cores` (all of them when idleness is unknown)."""
    if omp_num_threads:
        try:
            value = int(omp_num_threads)
        except ValueError:
            value = 0
        if value < 1:
            raise InputError(f"OMP_NUM_THREADS={omp_num_threads!r}: expected a positive integer")
        return value
    if idle is None:
        return cores
    return max(1, min(cores, int(idle + 0.5)))


_chosen = []  # the count chosen in this process: chosen once, so a notebook's later runs keep it
# A process forked after this import (torch.multiprocessing with fork) inherits torch's OpenMP state, which is
# not fork-safe: torch gives such a child one thread, and raising it can hang the child (measured: it did).
_IMPORTED_IN = os.getpid()


def configure_torch_threads(show=True):
    """Set torch's intra-op thread count by choose_threads (idle cores sampled over SAMPLE_SECONDS), once
    per process, and print what was chosen and why; returns the count. DataLoader workers run one thread
    each (torch's own rule), so they are not counted here; a process forked from one that imported this
    module keeps the thread count torch gave it."""
    import torch

    if os.getpid() != _IMPORTED_IN:
        return torch.get_num_threads()
    if _chosen:
        torch.set_num_threads(_chosen[0])
        return _chosen[0]
    cores = available_cores()
    omp = os.environ.get("OMP_NUM_THREADS")
    idle = None
    if not omp and hasattr(os, "sched_getaffinity"):
        before = read_cpu_times()
        time.sleep(SAMPLE_SECONDS)
        idle = idle_cores(before, read_cpu_times(), sorted(os.sched_getaffinity(0)))
    threads = choose_threads(cores, idle, omp)
    torch.set_num_threads(threads)
    _chosen.append(threads)
    if show:
        why = f"OMP_NUM_THREADS={omp}" if omp else (
            f"{cores} cores available, {idle:.1f} idle" if idle is not None else f"{cores} cores available")
        print(f"[threads] {threads} torch thread(s) ({why}; set OMP_NUM_THREADS to choose)", flush=True)
    return threads
