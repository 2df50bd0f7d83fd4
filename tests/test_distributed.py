"""Multi-process runs (torchrun layout, gloo on CPU) give the numbers of one process; only rank 0 writes."""
import contextlib
import csv
import json
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import run_upscale
from racecomp import datasets, distributed, files, toydata
from racecomp.datasets import FairFaceSR, MinoritySampler, read_fairface
from racecomp.races import FAIRFACE_RACES

METRICS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def no_torchrun(monkeypatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_single_process_is_world_one_without_a_process_group(no_torchrun):
    assert distributed.environment_world() == (0, 1, 0)
    with distributed.session("cpu") as device:
        assert device == torch.device("cpu") and not dist.is_initialized()
        assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
        items = list("abcde")
        assert distributed.shard(items) == items and distributed.gather_shards(items) == items
        assert distributed.broadcast_object(3) == 3 and distributed.all_gather_objects(3) == [3]
        assert distributed.run_on_main(max, 2, 5) == 5
        with pytest.raises(ValueError, match="empty"):
            distributed.run_on_main(max, [])


def test_torchrun_environment_and_device_per_local_rank(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.environment_world() == (3, 4, 1)
    assert distributed.process_device("cuda", 1, 4) == torch.device("cuda", 1)
    assert distributed.process_device("cpu", 1, 4) == torch.device("cpu")
    assert distributed.process_device("cuda:0", 0, 1) == torch.device("cuda", 0)  # one process: as given
    with pytest.raises(ValueError, match="cuda:LOCAL_RANK"):
        distributed.process_device("cuda:0", 1, 4)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4"):
        distributed.environment_world()


@pytest.mark.parametrize("num_samples", [700, 701])
def test_flips_are_a_function_of_the_global_position_not_of_the_process_count(num_samples):
    records = [datasets.FaceRecord(f"{i}.jpg", f"/x/{i}.jpg", FAIRFACE_RACES[i % 7], "Male", "20-29", i + 2)
               for i in range(350)]

    def sampler(**kwargs):
        made = MinoritySampler(records, "Black", 0.5, seed=3, num_samples=num_samples, flips=True, **kwargs)
        made.set_epoch(2)
        return made

    single = list(sampler())
    ranks = [list(sampler(num_replicas=2, rank=r)) for r in (0, 1)]
    interleaved = [pair for both in zip(*ranks) for pair in both]
    assert interleaved[:num_samples] == single
    plain = MinoritySampler(records, "Black", 0.5, seed=3, num_samples=num_samples)
    plain.set_epoch(2)
    assert [index for index, _ in single] == list(plain)  # flips leave the order as it was
    flipped = sum(flip for _, flip in single)
    assert abs(flipped - num_samples / 2) < 4 * math.sqrt(num_samples / 4)  # a fair coin per draw
    other_epoch = sampler()
    other_epoch.set_epoch(3)
    assert [flip for _, flip in other_epoch] != [flip for _, flip in single]


def test_fairface_sr_follows_the_requested_flip(tmp_path):
    root = toydata.make_fairface(str(tmp_path / "ff"), n_train=7, n_val=7, size=32, seed=0)
    records = read_fairface(root, "train")
    reference = FairFaceSR(records, 2)[1]
    training = FairFaceSR(records, 2, train=True)
    for _ in range(4):  # the global RNG plays no part for (index, flip) keys
        assert torch.equal(training[1, False]["hr"], reference["hr"])
        item = training[1, True]
        assert torch.equal(item["hr"], reference["hr"].flip(-1)) and item["index"] == 1
        assert torch.equal(item["lr"], datasets.downscale_bicubic(item["hr"], 2))  # lr made after the flip
    assert torch.equal(FairFaceSR(records, 2)[1, False]["hr"], reference["hr"])
    with pytest.raises(ValueError, match="train=False"):
        FairFaceSR(records, 2)[1, True]


# ---------------------------------------------------------------------------------------------- end to end

def free_port():
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_args(data, out, *extra):
    return run_upscale.get_args_parser().parse_args(
        ["--data", data, "--out", str(out), "--workers", "0", "--eval-batch-size", "8", "--log-every", "0",
         "--save-samples", "1", *extra])


TRAINING = ("--arch", "fastvit_t8", "--finetune", "frozen", "--epochs", "2", "--warmup-steps", "2")


def one_rank(rank, world_size, port, data, out_root):
    """What torchrun does for one process: its environment, then run_upscale.main; logs the files it wrote."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    written = []
    original = files.atomic_open

    @contextlib.contextmanager
    def logged(path, *args, **kwargs):
        written.append(os.path.basename(path))
        with original(path, *args, **kwargs) as handle:
            yield handle

    files.atomic_open = logged  # every file the project writes goes through atomic_open
    try:
        run_upscale.main(run_args(data, os.path.join(out_root, "bicubic2"), "--arch", "bicubic"))
        run_upscale.main(run_args(data, os.path.join(out_root, "trained2"), "--batch-size", "4", *TRAINING))
    finally:
        files.atomic_open = original
    with open(os.path.join(out_root, f"written_by_rank{rank}.json"), "w") as handle:
        json.dump(written, handle)


def test_two_processes_give_the_results_of_one(tmp_path, no_torchrun):
    # 63 train images: 7 per race go to dev, 56 = 7 batches of 8 stay, so no rank pads its last batch.
    data = toydata.make_fairface(str(tmp_path / "ff"), n_train=63, n_val=21, size=32, seed=3)
    run_upscale.main(run_args(data, tmp_path / "bicubic1", "--arch", "bicubic"))
    run_upscale.main(run_args(data, tmp_path / "trained1", "--batch-size", "8", *TRAINING))
    # fork: the children reuse this process's imports (spawn or torchrun would re-import torch and timm)
    mp.start_processes(one_rank, args=(2, free_port(), data, str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")

    # (a) evaluation sharded over 2 ranks (11 + 10 images) and gathered back in file order: identical
    assert read_csv(tmp_path / "bicubic1" / "per_image.csv") == read_csv(tmp_path / "bicubic2" / "per_image.csv")
    tables = [read_csv(tmp_path / run / "per_race.csv") for run in ("bicubic1", "bicubic2")]
    assert tables[0][0]["recipe"] != tables[1][0]["recipe"]  # the process count is part of a run's recipe
    columns = ("race", "n") + METRICS
    assert [[row[c] for c in columns] for row in tables[0]] == [[row[c] for c in columns] for row in tables[1]]
    # (b) 2 ranks x batch 4 against 1 process x batch 8: same draws, flips, steps and averaged gradients;
    # equal up to float rounding (other batch shapes and summation order; Adam turns rounding-level
    # differences of near-zero gradients into small steps), about 2e-4 dB here.
    checkpoint_one = files.load_checkpoint(str(tmp_path / "trained1" / "checkpoint.pth"))
    checkpoint_two = files.load_checkpoint(str(tmp_path / "trained2" / "checkpoint.pth"))
    assert list(checkpoint_two["model"]) == list(checkpoint_one["model"])  # unprefixed: loads in one process
    for key, value in checkpoint_one["model"].items():  # rounding moved weights by < 4e-5 here
        assert torch.allclose(checkpoint_two["model"][key].double(), value.double(), rtol=0, atol=2e-4), key
    one, two = read_csv(tmp_path / "trained1" / "per_race.csv"), read_csv(tmp_path / "trained2" / "per_race.csv")
    assert [row["race"] for row in one] == [row["race"] for row in two] == list(FAIRFACE_RACES)
    for row_one, row_two in zip(one, two):
        assert row_one["n"] == row_two["n"]
        for key in METRICS:
            assert float(row_two[key]) == pytest.approx(float(row_one[key]), abs=1e-3 if "psnr" in key else 1e-4)
    record_one, record_two = (json.loads((tmp_path / run / "args.json").read_text()) for run in ("trained1", "trained2"))
    assert record_two["world_size"] == 2 and record_two["args"]["world_size"] == 2
    assert record_one["optimizer_steps"] == record_two["optimizer_steps"] == 2 * 7
    assert record_one["best_epoch"] == record_two["best_epoch"]
    assert record_two["dev_psnr_y"] == pytest.approx(record_one["dev_psnr_y"], abs=1e-3)
    for epoch_one, epoch_two in zip(record_one["history"], record_two["history"]):  # losses averaged over ranks
        assert epoch_two["loss"] == pytest.approx(epoch_one["loss"], rel=1e-4)
    # only rank 0 wrote files
    written = [json.loads((tmp_path / f"written_by_rank{rank}.json").read_text()) for rank in (0, 1)]
    assert written[1] == []
    assert {"args.json", "checkpoint.pth", "best.pth", "per_image.csv", "per_race.csv",
            "samples_Black.png"} <= set(written[0])
