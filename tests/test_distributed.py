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
from torch import nn

from racecomp import datasets, distributed, engine, evaluation, files, imagecache, toyfairface, upscalers
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


@pytest.mark.parametrize("script", ["verify", "quantize"])
def test_single_process_studies_refuse_torchrun(monkeypatch, tmp_path, script):
    from racecomp.studies import quantize, verify
    study = {"verify": verify, "quantize": quantize}[script]
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match=f"run_{script}.py runs as one process, but torchrun started 2"):
        study.main(study.get_args_parser().parse_args(["--out", str(tmp_path / "run")]))
    assert not (tmp_path / "run").exists()


def open_cache_as_rank(rank, world_size, port, data, out_root):
    """One process of a 2-rank job opening the training image cache (racecomp.imagecache), as run_upscale does."""
    join_as_rank(rank, world_size, port)
    with distributed.session("cpu"):
        cache = imagecache.open_image_cache_once(os.path.join(out_root, "cache", "train.npy"),
                                                 read_fairface(data, "train"), hr_size=32, progress=False)
    with open(os.path.join(out_root, f"cache_rank{rank}.json"), "w") as handle:
        json.dump({"built": cache.built, "key": cache.key, "shape": list(cache.shape)}, handle)


def test_the_image_cache_is_built_once_under_two_processes(tmp_path, no_torchrun):
    data = toyfairface.make_fairface(str(tmp_path / "ff"), n_train=14, n_val=7, size=32, seed=2)
    mp.start_processes(open_cache_as_rank, args=(2, free_port(), data, str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    opened = [json.loads((tmp_path / f"cache_rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [entry["built"] for entry in opened] == [True, False]  # rank 0 built it, rank 1 found it finished
    assert opened[0]["key"] == opened[1]["key"] and opened[0]["shape"] == [14, 32, 32, 3]
    assert sorted(os.listdir(tmp_path / "cache")) == ["train.json", "train.npy"]


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
    root = toyfairface.make_fairface(str(tmp_path / "ff"), n_train=7, n_val=7, size=32, seed=0)
    records = read_fairface(root, "train")
    reference = FairFaceSR(records, 2)[1]
    training = FairFaceSR(records, 2, train=True)
    for _ in range(4):  # the global RNG plays no part for (index, flip) keys
        assert torch.equal(training[1, False]["hr"], reference["hr"])
        item = training[1, True]
        assert torch.equal(item["hr"], reference["hr"].flip(-1)) and item["index"] == 1
        assert torch.equal(datasets.unit_images(item["lr"]), datasets.downscale(item["hr"], 2))  # after the flip
    assert torch.equal(FairFaceSR(records, 2)[1, False]["hr"], reference["hr"])
    with pytest.raises(ValueError, match="train=False"):
        FairFaceSR(records, 2)[1, True]


# ---------------------------------------------------------------------------------------------- processes

def free_port():
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def join_as_rank(rank, world_size, port):
    """What torchrun gives one process: its environment (distributed.setup reads it), and one thread, so
    every process computes as the others do."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


@contextlib.contextmanager
def logged_writes(written):
    """Append the name of every file the project writes (all go through files.atomic_open) to `written`."""
    original = files.atomic_open

    @contextlib.contextmanager
    def logged(path, *args, **kwargs):
        written.append(os.path.basename(path))
        with original(path, *args, **kwargs) as handle:
            yield handle

    files.atomic_open = logged
    try:
        yield written
    finally:
        files.atomic_open = original


@contextlib.contextmanager
def one_thread():
    """This (the test's) process computes with one thread, as each rank does, and is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------- gradients

class TinySRNet(nn.Module):
    """Conv, BatchNorm (train mode: per-micro-batch statistics), ReLU, conv; float64."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                  nn.Conv2d(6, 3, 3, padding=1))

    def forward(self, x):
        return self.body(x)


def mse_loss(model, batch):
    return ((model(batch["x"]) - batch["y"]) ** 2).mean(), {}


def gradient_problem():
    """(model, [micro-batch 0, micro-batch 1]): the same weights and 2 x 4 images in every process."""
    torch.manual_seed(0)
    model = TinySRNet().double()
    generator = torch.Generator().manual_seed(1)
    x, y = (torch.randn(8, 3, 6, 6, generator=generator, dtype=torch.float64) for _ in range(2))
    return model, [{"x": x[:4], "y": y[:4]}, {"x": x[4:], "y": y[4:]}]


def one_sgd_step(micro_batches, accum_steps, out_dir):
    """One optimizer step of SGD(lr=1) with engine.Trainer over `micro_batches`: (start, trained model, trainer)."""
    model, _ = gradient_problem()
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    settings = engine.TrainingSettings(epochs=1, accum_steps=accum_steps, log_every=0)
    trainer = engine.Trainer(model, mse_loss, torch.optim.SGD(model.parameters(), lr=1.0), out_dir, settings, 1)
    trainer.fit(micro_batches)
    return start, model, trainer


def gradient_rank(rank, world_size, port, out_root):
    """One process of the 2-rank run: its micro-batch of the window, one step; saves what the test compares."""
    join_as_rank(rank, world_size, port)
    _, micro_batches = gradient_problem()
    with distributed.session("cpu"), logged_writes([]) as written:
        start, model, trainer = one_sgd_step(micro_batches[rank:rank + 1], 1, os.path.join(out_root, "ddp"))
    step = {name: p.detach() - start[name] for name, p in model.named_parameters()}
    torch.save({"step": step, "optimizer_steps": trainer.step, "history": trainer.history, "written": written},
               os.path.join(out_root, f"rank{rank}.pth"))


def test_two_ranks_average_gradients_as_one_process_accumulates(tmp_path, no_torchrun):
    # 2 ranks x batch 4 against 1 process x accum 2 x batch 4: the same micro-batches (shapes, contents and
    # BatchNorm statistics) on both sides, so only the averaging differs (DDP's all-reduce of g/2 against the
    # sum of the two (loss/2) gradients). With SGD(lr=1) the step is the gradient; in float64 the two agree
    # to rounding relative to its norm (measured: bit for bit), while summing instead of averaging, or
    # averaging twice, is off by half the gradient.
    mp.start_processes(gradient_rank, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{rank}.pth", weights_only=False) for rank in (0, 1)]
    with one_thread():
        start, model, trainer = one_sgd_step(gradient_problem()[1], 2, str(tmp_path / "one"))
    reference = {name: p.detach() - start[name] for name, p in model.named_parameters()}
    norm = torch.sqrt(sum(step.square().sum() for step in reference.values()))
    assert norm > 0 and all(torch.count_nonzero(step) > 0 for step in reference.values())
    for name, step in reference.items():
        assert torch.equal(ranks[1]["step"][name], ranks[0]["step"][name]), name  # one all-reduced gradient
        assert (ranks[0]["step"][name] - step).abs().max() / norm < 1e-12, name
    assert ranks[0]["optimizer_steps"] == ranks[1]["optimizer_steps"] == trainer.step == 1
    # The epoch's loss is the mean over ranks, on every rank: fl(l0 + l1) / 2 on both sides, bit for bit.
    losses = [[epoch["loss"] for epoch in history] for history in (ranks[0]["history"], ranks[1]["history"])]
    assert losses[0] == losses[1] == [epoch["loss"] for epoch in trainer.history]
    # Rank 0 alone writes the checkpoint, with the module's own (unprefixed) keys and the trained weights.
    assert ranks[0]["written"] == ["checkpoint.pth"] and ranks[1]["written"] == []
    saved = files.load_checkpoint(str(tmp_path / "ddp" / "checkpoint.pth"))["model"]
    assert list(saved) == list(model.state_dict())
    for name, p in model.named_parameters():
        assert torch.equal(saved[name], start[name] + ranks[0]["step"][name]), name


# ---------------------------------------------------------------------------------------------- end to end

def run_script(data, out, *extra):
    """run_upscale.main with these flags. Imported here, not at the top, so that the tests above need only
    racecomp."""
    import run_upscale
    run_upscale.main(run_upscale.get_args_parser().parse_args(
        ["--data", data, "--out", str(out), "--workers", "0", "--eval-batch-size", "8", "--log-every", "0",
         "--save-samples", "1", *extra]))


TRAINING = ("--arch", "fastvit_t8", "--finetune", "frozen", "--epochs", "2", "--warmup-steps", "2")


def one_rank(rank, world_size, port, data, out_root):
    """What torchrun does for one process: its environment, then run_upscale.main; logs the files it wrote."""
    join_as_rank(rank, world_size, port)
    with logged_writes([]) as written:
        run_script(data, os.path.join(out_root, "bicubic2"), "--arch", "bicubic")
        run_script(data, os.path.join(out_root, "trained2"), "--batch-size", "4", *TRAINING)
    with open(os.path.join(out_root, f"written_by_rank{rank}.json"), "w") as handle:
        json.dump(written, handle)


def evaluate_as_two_ranks(model, records, scale, batch_size):
    """Per-image rows of `records` computed as 2 ranks do (distributed.shard: rank r gets positions r, r + 2,
    ...; the same batches), in one process with one thread, put back in file order."""
    rows = [None] * len(records)
    with one_thread():
        for rank in (0, 1):
            loader = engine.make_loader(FairFaceSR(records[rank::2], scale, train=False), batch_size, 0, "cpu")
            rows[rank::2] = evaluation.evaluate_upscaler(model, loader, scale, "cpu", show=False)
    return rows


def test_two_processes_give_the_results_of_one(tmp_path, no_torchrun):
    # 63 train images: 7 per race go to dev, 56 = 7 batches of 8 stay, so no rank pads its last batch.
    data = toyfairface.make_fairface(str(tmp_path / "ff"), n_train=63, n_val=21, size=32, seed=3)
    run_script(data, tmp_path / "bicubic1", "--arch", "bicubic")
    run_script(data, tmp_path / "trained1", "--batch-size", "8", *TRAINING)
    # fork: the children reuse this process's imports (spawn or torchrun would re-import torch and timm)
    mp.start_processes(one_rank, args=(2, free_port(), data, str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")

    # (a) evaluation sharded over 2 ranks (11 + 10 images) and gathered back in file order: identical
    assert read_csv(tmp_path / "bicubic1" / "per_image.csv") == read_csv(tmp_path / "bicubic2" / "per_image.csv")
    tables = [read_csv(tmp_path / run / "per_race.csv") for run in ("bicubic1", "bicubic2")]
    columns = ("race", "n") + METRICS
    assert [[row[c] for c in columns] for row in tables[0]] == [[row[c] for c in columns] for row in tables[1]]
    # (b) 2 ranks x batch 4 against 1 process x batch 8: the same draws and optimizer steps, and weights
    # (best.pth) that load in one process. Their values are not compared: batch shapes and thread counts differ, and
    # Adam turns rounding-level gradient differences into machine-dependent steps; the averaged gradient is
    # checked exactly in test_two_ranks_average_gradients_as_one_process_accumulates.
    best_one = files.load_checkpoint(str(tmp_path / "trained1" / "best.pth"))
    best = files.load_checkpoint(str(tmp_path / "trained2" / "best.pth"))
    assert list(best["model"]) == list(best_one["model"])  # unprefixed: loads in one process
    record_one, record_two = (json.loads((tmp_path / run / "args.json").read_text())
                              for run in ("trained1", "trained2"))
    assert record_two["world_size"] == 2 and record_two["args"]["world_size"] == 2
    assert record_one["optimizer_steps"] == record_two["optimizer_steps"] == 2 * 7
    one, two = read_csv(tmp_path / "trained1" / "per_race.csv"), read_csv(tmp_path / "trained2" / "per_race.csv")
    assert one[0]["recipe"] != two[0]["recipe"]  # the process count is part of a trained run's recipe
    # (c) the 2-process tables are the evaluation of the selected weights (best.pth), exactly: recomputed
    # here from that file, shard by shard with the ranks' batches, and the selection agrees with the history.
    for record in (record_one, record_two):
        scores = [epoch["select_score"] for epoch in record["history"]]
        assert len(scores) == 2 and record["dev_psnr_y"] == max(scores) == scores[record["best_epoch"]]
    assert best["epoch"] == record_two["best_epoch"]
    model = upscalers.build_upscaler("fastvit_t8", 2)  # TRAINING's model
    model.load_state_dict(best["model"])
    rows = evaluate_as_two_ranks(model, read_fairface(data, "val"), 2, batch_size=8)
    per_image = read_csv(tmp_path / "trained2" / "per_image.csv")
    assert [row["file"] for row in per_image] == [row["file"] for row in rows]
    assert [[float(row[key]) for key in METRICS] for row in per_image] == \
        [[row[key] for key in METRICS] for row in rows]
    table = evaluation.mean_by_group(rows, METRICS, order=FAIRFACE_RACES)
    assert [(row["race"], row["n"]) for row in one] == [(row["race"], row["n"]) for row in two]
    assert [row["race"] for row in two] == list(FAIRFACE_RACES)
    assert [[row["race"], int(row["n"])] + [float(row[key]) for key in METRICS] for row in two] == \
        [[row["race"], row["n"]] + [row[key] for key in METRICS] for row in table]
    # only rank 0 wrote files
    written = [json.loads((tmp_path / f"written_by_rank{rank}.json").read_text()) for rank in (0, 1)]
    assert written[1] == []
    assert {"args.json", "checkpoint.pth", "best.pth", "per_image.csv", "per_race.csv",
            "samples_Black.png"} <= set(written[0])
