"""The pre-decoded uint8 image cache: same items as FairFaceSR, reused, rebuilt on change, never left half-built."""
import csv
import functools
import os
import pickle
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from racecomp import imagecache
from racecomp.datasets import FairFaceSR, read_fairface
from racecomp.imagecache import CachedFairFaceSR, open_image_cache
from racecomp.races import FAIRFACE_RACES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_noise_jpeg(path, size, seed):
    """Random-noise JPEG: every pixel matters, so any decode or resize difference shows."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def write_fairface(root, sizes):
    """FairFace-layout train split, one JPEG per entry of `sizes` (px), races cycling; returns the records."""
    os.makedirs(os.path.join(root, "train"), exist_ok=True)
    with open(os.path.join(root, "fairface_label_train.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "age", "gender", "race", "service_test"])
        for index, size in enumerate(sizes):
            name = f"train/{index}.jpg"
            write_noise_jpeg(os.path.join(root, name), size, seed=index)
            writer.writerow([name, "20-29", "Female", FAIRFACE_RACES[index % len(FAIRFACE_RACES)], "False"])
    return read_fairface(root, "train")


def assert_same_items(expected, actual):
    assert len(expected) == len(actual)
    for index in range(len(expected)):
        want, got = expected[index], actual[index]
        assert want.keys() == got.keys()
        assert torch.equal(want["hr"], got["hr"]) and want["hr"].dtype == got["hr"].dtype, index
        assert torch.equal(want["lr"], got["lr"]) and want["lr"].shape == got["lr"].shape, index
        assert [want[k] for k in ("race", "gender", "age", "file", "index")] == \
               [got[k] for k in ("race", "gender", "age", "file", "index")]


@pytest.mark.parametrize("native_sizes, hr_size, scale", [
    ([32] * 5, None, 2),          # native size, no resize
    ([32] * 5, 32, 4),            # hr_size equal to the native size: no resize either
    ([40, 24, 40, 32, 40], 32, 4),  # down-, up- and no resize in one list
])
def test_cached_items_equal_fairfacesr(tmp_path, native_sizes, hr_size, scale):
    records = write_fairface(str(tmp_path / "data"), native_sizes)
    cache = open_image_cache(str(tmp_path / "cache.npy"), records, hr_size=hr_size, progress=False)
    assert cache.built and cache.shape == (5, 32, 32, 3)
    assert_same_items(FairFaceSR(records, scale, hr_size=hr_size), CachedFairFaceSR(cache, records, scale))
    # Training flips draw from torch's global RNG in the same way: same seed, same flips.
    torch.manual_seed(1)
    expected = [FairFaceSR(records, scale, hr_size=hr_size, train=True)[i] for i in range(5)]
    torch.manual_seed(1)
    assert_same_items(expected, [CachedFairFaceSR(cache, records, scale, train=True)[i] for i in range(5)])
    plain = CachedFairFaceSR(cache, records, scale)
    flipped = [not torch.equal(expected[i]["hr"], plain[i]["hr"]) for i in range(5)]
    assert any(flipped) and not all(flipped)  # seed 1 flips images 1, 2, 4 only: both paths ran


def test_cache_is_reused_without_decoding(tmp_path, monkeypatch):
    records = write_fairface(str(tmp_path / "data"), [32] * 4)
    path = str(tmp_path / "cache.npy")
    first = open_image_cache(path, records, hr_size=32, progress=False)
    stat = os.stat(path)

    def no_decoding(self, index):
        raise AssertionError("a reused cache must not decode images")

    monkeypatch.setattr(imagecache._HighResolutionImages, "__getitem__", no_decoding)
    second = open_image_cache(path, records, hr_size=32, progress=False)
    assert first.built and not second.built
    assert (os.stat(path).st_ino, os.stat(path).st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert_same_items(FairFaceSR(records, 2, hr_size=32), CachedFairFaceSR(second, records, 2))


def test_cache_is_rebuilt_when_an_image_or_hr_size_changes(tmp_path):
    root = str(tmp_path / "data")
    records = write_fairface(root, [32] * 4)
    path = str(tmp_path / "cache.npy")
    old = open_image_cache(path, records, hr_size=32, progress=False)
    old_hr = CachedFairFaceSR(old, records, 2)[1]["hr"]
    write_noise_jpeg(records[1].path, 32, seed=99)  # same name, new pixels
    os.utime(records[1].path, ns=(time.time_ns(), os.stat(records[1].path).st_mtime_ns + 10**9))
    with pytest.raises(ValueError, match="images changed"):
        CachedFairFaceSR(old, records, 2)  # a cache opened before the change refuses to serve stale pixels
    new = open_image_cache(path, records, hr_size=32, progress=False)
    assert new.built
    items = CachedFairFaceSR(new, records, 2)
    assert not torch.equal(items[1]["hr"], old_hr)
    assert_same_items(FairFaceSR(records, 2, hr_size=32), items)
    resized = open_image_cache(path, records, hr_size=16, progress=False)
    assert resized.built and resized.shape == (4, 16, 16, 3)
    assert_same_items(FairFaceSR(records, 2, hr_size=16), CachedFairFaceSR(resized, records, 2))


def test_error_during_build_leaves_nothing_behind(tmp_path, monkeypatch):
    records = write_fairface(str(tmp_path / "data"), [32] * 40)
    folder = tmp_path / "cache"
    path = str(folder / "cache.npy")
    open_image_cache(path, records, hr_size=32, progress=False)
    write_noise_jpeg(records[0].path, 32, seed=123)
    os.utime(records[0].path, ns=(time.time_ns(), os.stat(records[0].path).st_mtime_ns + 10**9))
    decode = imagecache._HighResolutionImages.__getitem__

    def crash_after_20(self, index):
        if index == 20:
            raise KeyboardInterrupt  # not an Exception: the cleanup must catch BaseException
        return decode(self, index)

    monkeypatch.setattr(imagecache._HighResolutionImages, "__getitem__", crash_after_20)
    with pytest.raises(KeyboardInterrupt):
        open_image_cache(path, records, hr_size=32, progress=False)
    assert os.listdir(folder) == []  # no temporary file, no stale array, no key
    monkeypatch.setattr(imagecache._HighResolutionImages, "__getitem__", decode)
    cache = open_image_cache(path, records, hr_size=32, progress=False)
    assert cache.built
    assert_same_items(FairFaceSR(records, 2, hr_size=32), CachedFairFaceSR(cache, records, 2))


KILLED_BUILD = """
import sys, time
from racecomp import imagecache
from racecomp.datasets import read_fairface
decode = imagecache._HighResolutionImages.__getitem__
def slow(self, index):
    if index == 20:
        print("half built", flush=True)
        time.sleep(60)
    return decode(self, index)
imagecache._HighResolutionImages.__getitem__ = slow
imagecache.open_image_cache(sys.argv[2], read_fairface(sys.argv[1], "train"), hr_size=32, progress=False)
"""


def test_killed_build_is_not_accepted_and_its_temporary_file_is_removed(tmp_path):
    root = str(tmp_path / "data")
    records = write_fairface(root, [32] * 40)
    folder = tmp_path / "cache"
    path = str(folder / "cache.npy")
    builder = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, root, path], cwd=REPO, stdout=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONPATH": REPO})
    try:
        assert builder.stdout.readline().strip() == "half built"
    finally:
        builder.send_signal(signal.SIGKILL)  # no chance to clean up
        builder.wait()
    # The half-written array, under a temporary name with the host and process that wrote it.
    assert os.listdir(folder) == [f".cache.npy.tmp-{socket.gethostname()}-{builder.pid}"]
    cache = open_image_cache(path, records, hr_size=32, progress=False)
    assert cache.built
    assert sorted(os.listdir(folder)) == ["cache.json", "cache.npy"]
    assert_same_items(FairFaceSR(records, 4, hr_size=32), CachedFairFaceSR(cache, records, 4))


def test_another_hosts_build_in_progress_is_left_alone(tmp_path):
    # On a shared file system a build of another node has a process id that means nothing here.
    records = write_fairface(str(tmp_path / "data"), [32] * 3)
    folder = tmp_path / "cache"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    theirs = folder / f".cache.npy.tmp-another-node-{int(dead.stdout)}"
    theirs.write_bytes(b"half")
    assert open_image_cache(str(folder / "cache.npy"), records, hr_size=32, progress=False).built
    assert theirs.exists()


def test_progress_lines_and_pickled_dataset_carries_no_pixels(tmp_path, capsys, monkeypatch):
    records = write_fairface(str(tmp_path / "data"), [32] * 40)
    # A line as soon as any time has passed (a real build prints one every progress.EVERY_SECONDS).
    monkeypatch.setattr(imagecache, "Progress", functools.partial(imagecache.Progress, every_seconds=0.0))
    cache = open_image_cache(str(tmp_path / "cache.npy"), records, hr_size=32)
    output = capsys.readouterr().out
    assert "building" in output and "40/40 images (100%)" in output
    dataset = CachedFairFaceSR(cache, records, 2)
    dataset[0]  # opens the memory map in this process
    payload = pickle.dumps(dataset)
    assert len(payload) < 32 * 32 * 3 * 40 // 4  # a DataLoader worker gets the path, not the pixels
    assert_same_items(dataset, pickle.loads(payload))


def test_bad_inputs_are_refused(tmp_path):
    records = write_fairface(str(tmp_path / "data"), [32, 32, 40, 32])
    with pytest.raises(ValueError, match="must end in .npy"):
        open_image_cache(str(tmp_path / "cache.bin"), records, progress=False)
    with pytest.raises(ValueError, match=r"train/2.jpg \(CSV line 4\): image size 40x40 differs .* pass hr_size"):
        open_image_cache(str(tmp_path / "native.npy"), records, progress=False)
    assert os.listdir(tmp_path) == ["data"]
    cache = open_image_cache(str(tmp_path / "cache.npy"), records[:2], hr_size=32, progress=False)
    with pytest.raises(ValueError, match="built from other records"):
        CachedFairFaceSR(cache, records[1:3], 2)
    odd = open_image_cache(str(tmp_path / "odd.npy"), records[:2], hr_size=30, progress=False)
    with pytest.raises(ValueError, match="30 is not divisible by scale 4"):
        CachedFairFaceSR(odd, records[:2], 4)


def test_default_cache_path_depends_on_the_image_list_and_size_only(tmp_path):
    records = write_fairface(str(tmp_path / "data"), [32] * 3)
    path = imagecache.default_cache_path(records, 224, str(tmp_path / "c"))
    assert path.startswith(str(tmp_path / "c" / "imagecache" / "fairface-")) and path.endswith("-224.npy")
    write_noise_jpeg(records[0].path, 32, seed=7)
    assert imagecache.default_cache_path(records, 224, str(tmp_path / "c")) == path
    assert imagecache.default_cache_path(records[:2], 224, str(tmp_path / "c")) != path
    assert imagecache.default_cache_path(records, None, str(tmp_path / "c")).endswith("-native.npy")
