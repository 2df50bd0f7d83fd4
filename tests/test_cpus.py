"""Thread and core counts (racecomp.cpus): OMP_NUM_THREADS first, else the idle cores, never 0."""
import os

import pytest
import torch

from racecomp import cpus


@pytest.mark.parametrize("cores, idle, omp, expected", [
    (2, 2.0, None, 2),  # quiet: every core
    (2, 1.4, None, 1),  # one core busy with another job
    (2, 1.6, None, 2),
    (2, 0.1, None, 1),  # fully loaded: still one thread
    (8, None, None, 8),  # idleness unknown: the cores
    (2, 0.1, "3", 3),  # the user's choice wins, whatever the load
])
def test_choose_threads(cores, idle, omp, expected):
    assert cpus.choose_threads(cores, idle, omp) == expected


@pytest.mark.parametrize("omp", ["0", "two", "-1"])
def test_a_bad_omp_num_threads_is_refused(omp):
    with pytest.raises(ValueError, match="OMP_NUM_THREADS"):
        cpus.choose_threads(2, 2.0, omp)


def write_stat(path, rows):
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"] + [f"cpu{i} {' '.join(str(v) for v in row)} 0 0" for i, row in enumerate(rows)]
    path.write_text("\n".join(lines + ["intr 1 2 3", "ctxt 5"]) + "\n")
    return cpus.read_cpu_times(str(path))


def test_idle_cores_from_two_proc_stat_snapshots(tmp_path):
    # user nice system idle iowait irq softirq steal: cpu0 busy the whole interval, cpu1 idle (iowait counts
    # as idle), cpu2 half busy.
    before = write_stat(tmp_path / "a", [(100, 0, 0, 50, 0, 0, 0, 0), (10, 0, 0, 500, 5, 0, 0, 0),
                                         (0, 0, 0, 0, 0, 0, 0, 0)])
    after = write_stat(tmp_path / "b", [(150, 0, 50, 50, 0, 0, 0, 0), (10, 0, 0, 580, 25, 0, 0, 0),
                                        (20, 0, 0, 40, 0, 0, 20, 0)])
    assert before[0] == (100, 150) and before[1] == (10, 515)
    assert cpus.idle_cores(before, after, [0]) == 0.0
    assert cpus.idle_cores(before, after, [1]) == 1.0
    assert cpus.idle_cores(before, after, [0, 1, 2]) == pytest.approx(3 * (1 - 140 / 280))
    assert cpus.idle_cores(before, after, [0, 7]) is None  # a core the snapshots do not have
    assert cpus.idle_cores(before, before, [0]) is None  # no time passed
    assert cpus.read_cpu_times(str(tmp_path / "missing")) == {}


def test_configure_respects_omp_num_threads_once_per_process(monkeypatch, capsys):
    previous = torch.get_num_threads()
    monkeypatch.setattr(cpus, "_chosen", [])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        assert cpus.configure_torch_threads() == 1 and torch.get_num_threads() == 1
        assert "OMP_NUM_THREADS=1" in capsys.readouterr().out
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # chosen once: a later run in the same process keeps it
        assert cpus.configure_torch_threads() == 1
    finally:
        torch.set_num_threads(previous)


def test_available_cores_is_at_least_one_and_at_most_the_machine():
    assert 1 <= cpus.available_cores() <= os.cpu_count()


def test_a_forked_child_keeps_the_threads_torch_gave_it(monkeypatch, capsys):
    previous = torch.get_num_threads()
    monkeypatch.setattr(cpus, "_IMPORTED_IN", os.getpid() + 1)  # as if this process had been forked
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpus.configure_torch_threads() == previous and torch.get_num_threads() == previous
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("cores, local_world, gpu, memory_gb, expected", [
    (2, None, True, 12.7, 2), (16, None, True, 128, 16), (64, None, True, 128, 64), (64, "8", True, 256, 8),
    (16, "8", True, 128, 2), (4, "8", True, 64, 1), (2, "x", True, 12.7, 2),
    (16, None, False, 128, 2), (1, None, False, 8, 1),  # CPU training: the step needs the cores
    (16, None, True, 4.2, 3), (64, "8", True, 16, 1), (8, None, True, None, 8),  # memory-bound; unknown memory
])
def test_default_workers_follow_the_cores_the_device_and_the_memory(monkeypatch, cores, local_world, gpu, memory_gb,
                                                                    expected):
    monkeypatch.setattr(cpus, "available_cores", lambda: cores)
    monkeypatch.setattr(cpus, "memory_bytes", lambda: memory_gb and memory_gb * 1e9)
    if local_world is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world)
    assert cpus.default_workers(gpu) == expected


def test_memory_is_read_on_this_machine():
    assert cpus.memory_bytes() is None or cpus.memory_bytes() > 1e8
