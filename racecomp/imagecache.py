"""Optional pre-decoded image cache: FairFace high-resolution images decoded once into a uint8 array on disk.

Decoding a JPEG (and resizing it to `hr_size`) costs more CPU per image than the bicubic down-scaling
that makes its low-resolution input, so a training run that reads the same images every epoch can
decode them once. The cache is a numpy `.npy` file holding (N, H, W, 3) uint8 RGB, read back memory-
mapped (the page cache keeps it in RAM when it fits), one image per record in record order. Beside it,
`<name>.json` holds the cache key: a hash of every record's absolute path, file size and modification
time, in order, and hr_size. A cache whose key differs from the records' current key is rebuilt.

Size on disk: N * H * W * 3 bytes, e.g. 13.1 GB for FairFace's 86,744 train images at 224 px, 1.65 GB
for its 10,954 val images.
"""
import contextlib
import hashlib
import json
import os
import socket

import numpy as np
import torch

from racecomp import datasets, distributed, files
from racecomp.errors import InputError
from racecomp.progress import Progress

# Bump when the stored pixels would change for the same records (decoding, resizing, layout).
CACHE_FORMAT_VERSION = "1"


def records_key(records, hr_size):
    """sha256 hex of the records' absolute paths, file sizes and mtimes (ns) in order, hr_size and the format.

    Any image replaced, edited, added, removed or reordered changes it; so does touching a file (a
    rebuild that was not needed, never a stale image).
    """
    entries = []
    for record in records:
        stat = os.stat(record.path)
        entries.append([os.path.abspath(record.path), stat.st_size, stat.st_mtime_ns])
    payload = json.dumps({"format": CACHE_FORMAT_VERSION, "hr_size": hr_size, "images": entries})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def default_cache_path(records, hr_size, cache_dir):
    """`<cache_dir>/imagecache/fairface-<hash of the record paths>-<hr_size or native>.npy`.

    Named after the list of paths only (not sizes or mtimes): the same image list always maps to the
    same file, which is rebuilt in place when the images change, instead of piling up stale copies.
    """
    paths = json.dumps([os.path.abspath(record.path) for record in records])
    digest = hashlib.sha256(paths.encode("utf-8")).hexdigest()[:16]
    size = "native" if hr_size is None else str(hr_size)
    return os.path.join(cache_dir, "imagecache", f"fairface-{digest}-{size}.npy")


def _metadata_path(path):
    return os.path.splitext(path)[0] + ".json"


def _temporary_path(path, pid):
    # The host in the name: a process id is checked (_remove_abandoned_temporaries) on its own machine only.
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{socket.gethostname()}-{pid}")


class ImageCache:
    """A built cache: `len(cache)` images of (height, width) px, `image(index)` -> uint8 (3, H, W) RGB.

    The array is opened memory-mapped, read-only, on first use in each process; pickling (DataLoader
    workers started by spawn) sends only the path, never the pixels.
    """

    def __init__(self, path, key, hr_size, shape, built):
        self.path = path
        self.key = key
        self.hr_size = hr_size
        self.shape = tuple(shape)  # (N, H, W, 3)
        self.built = built  # True when this call decoded the images, False when an existing cache was reused
        self._images = None

    def __len__(self):
        return self.shape[0]

    @property
    def images(self):
        if self._images is None:
            self._images = np.load(self.path, mmap_mode="r")
        return self._images

    def image(self, index):
        """uint8 (3, H, W) RGB, laid out in memory as a decoded JPEG is (HWC storage, CHW view)."""
        return torch.from_numpy(np.array(self.images[index])).permute(2, 0, 1)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_images"] = None
        return state


class _HighResolutionImages(torch.utils.data.Dataset):
    """uint8 (3, H, W) high-resolution images exactly as FairFaceSR makes its `hr` (before any flip)."""

    def __init__(self, records, hr_size):
        self.records = records
        self.hr_size = hr_size

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        record = self.records[index]
        hr = datasets.load_rgb(record.path, f"{record.file} (CSV line {record.line})")  # uint8 (3, H, W)
        if self.hr_size is not None and tuple(hr.shape[-2:]) != (self.hr_size, self.hr_size):
            hr = datasets.grey_levels(datasets.resize_bicubic(hr.float().unsqueeze(0) / 255.0,
                                                              (self.hr_size, self.hr_size)))[0]
        return hr


def _read_metadata(path):
    try:
        with open(_metadata_path(path), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _reusable(path, metadata, key, count):
    """Whether the cache at `path` was completely built for this key (the JSON is written last)."""
    if metadata is None or metadata.get("key") != key or not os.path.isfile(path):
        return False
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return array.dtype == np.uint8 and list(array.shape) == metadata.get("shape") and array.shape[0] == count


def _remove_abandoned_temporaries(path):
    """Delete temporary files of builds on this host whose process no longer exists (killed before it could
    clean up); another host's builds, on a shared file system, are left alone."""
    folder, prefix = os.path.dirname(path), os.path.basename(_temporary_path(path, ""))
    for name in os.listdir(folder):
        if not name.startswith(prefix) or not name[len(prefix):].isdigit():
            continue
        try:
            os.kill(int(name[len(prefix):]), 0)
        except ProcessLookupError:
            print(f"[imagecache] removing {name}, left by an interrupted build", flush=True)
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))
        except PermissionError:
            pass  # the process exists (another user's)


def _build(path, records, hr_size, workers, progress):
    """Decode every record into a temporary .npy beside `path`, then rename it to `path`; returns its shape."""
    # Batches of 16 images as lists (no collation): fewer hand-overs from workers, sizes checked here.
    loader = torch.utils.data.DataLoader(_HighResolutionImages(records, hr_size), batch_size=16, shuffle=False,
                                         num_workers=workers, collate_fn=list)
    # A pid-named temporary lets the next build remove one left by a killed process
    # (_remove_abandoned_temporaries). Written sequentially, not through a writable memory map: a map's dirty
    # pages count as this process's memory (12 GB for FairFace train at 224 px), a file's page cache does not.
    total = len(records)
    lines = Progress(f"imagecache {path}", total, enabled=progress)
    shape = None
    done = 0
    with files.atomic_path(path, temporary=_temporary_path(path, os.getpid())) as temporary:
        with open(temporary, "wb") as handle:
            for batch in loader:
                for hr in batch:  # uint8 (3, H, W)
                    if shape is None:
                        shape = (total, hr.shape[1], hr.shape[2], 3)
                        np.lib.format.write_array_header_1_0(
                            handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                                     "fortran_order": False, "shape": shape})
                    elif tuple(hr.shape[1:]) != shape[1:3]:
                        record = records[done]
                        raise InputError(f"{record.file} (CSV line {record.line}): image size "
                                         f"{hr.shape[1]}x{hr.shape[2]} differs from the first image's "
                                         f"{shape[1]}x{shape[2]}; pass hr_size")
                    handle.write(hr.permute(1, 2, 0).contiguous().numpy().tobytes())
                    done += 1
                lines.update(len(batch))
        lines.finish()
    return shape


def open_image_cache(path, records, hr_size=None, workers=0, progress=True):
    """The cache of `records` at `path` (a .npy file), built now unless a complete one with the same key exists.

    records: FairFace records (datasets.read_fairface), in the order items will be indexed.
    hr_size: side in px every image is resized to (bicubic, antialias, on the uint8 grid, exactly as
    datasets.FairFaceSR), or None to keep native sizes, which must then all be equal.
    workers: DataLoader worker processes decoding during a build. Progress lines go to stdout.

    A build first removes the old JSON key and array, writes `.<name>.tmp-<pid>` and renames it to
    `path` only when complete, then writes the JSON key last: a build that dies at any point leaves no
    cache that a later call would accept. Its temporary file is removed on error, or by the next build
    when the process was killed. A corrupt image raises ValueError naming the file and CSV line.
    """
    if not path.endswith(".npy"):
        raise InputError(f"image cache path {path!r} must end in .npy")
    if hr_size is not None and (not isinstance(hr_size, int) or hr_size < 1):
        raise InputError(f"hr_size must be a positive int or None, got {hr_size!r}")
    records = list(records)
    if not records:
        raise InputError("no records to cache")
    key = records_key(records, hr_size)
    metadata = _read_metadata(path)
    if _reusable(path, metadata, key, len(records)):
        return ImageCache(path, key, hr_size, metadata["shape"], built=False)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _remove_abandoned_temporaries(os.path.abspath(path))
    # Key first: from here on nothing vouches for `path`; the old array goes too (disk space for the new one).
    for stale in (_metadata_path(path), path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(stale)
    reason = "no cache yet" if metadata is None else "the images or hr_size changed"
    if progress:
        print(f"[imagecache] building {path} from {len(records)} images ({reason})", flush=True)
    shape = _build(path, records, hr_size, workers, progress)
    files.write_json(_metadata_path(path), {"key": key, "hr_size": hr_size, "shape": list(shape),
                                            "format": CACHE_FORMAT_VERSION, "count": len(records)})
    return ImageCache(path, key, hr_size, shape, built=True)


def open_image_cache_once(path, records, hr_size=None, workers=0, progress=True):
    """open_image_cache under torchrun without every process building the cache: global rank 0 opens (builds)
    it while the others wait (its error, if any, is raised on every rank); then the first process of every other
    node opens it, finding rank 0's cache where the cache folder is shared and building one for its node where
    it is not; then the rest only open it. In a single process, just open_image_cache. The waits are
    collectives, so a build must finish within the process group's timeout (a FairFace-size build takes
    minutes: BENCHMARKS.md).
    """
    cache = distributed.run_on_main(open_image_cache, path, records, hr_size, workers, progress)
    if distributed.rank() != 0 and distributed.local_rank() == 0:
        cache = open_image_cache(path, records, hr_size, workers, progress)
    distributed.barrier()
    if distributed.local_rank() != 0:
        cache = open_image_cache(path, records, hr_size, workers, progress)
    return cache


class CachedFairFaceSR(datasets.FairFaceSR):
    """datasets.FairFaceSR served from an ImageCache: the same items, tensor for tensor, the same keys
    (plain indices, or the (index, flip) pairs of MinoritySampler(flips=True)); only the high-resolution
    image comes from the uint8 cache instead of a JPEG. `records` must be the list the cache was built
    from (checked by key).
    """

    def __init__(self, cache, records, scale, train=False, lr_kernel="bicubic"):
        super().__init__(records, scale, hr_size=cache.hr_size, train=train, lr_kernel=lr_kernel)
        if records_key(self.records, cache.hr_size) != cache.key:
            raise InputError(f"image cache {cache.path} was built from other records, or the images changed "
                             f"since; reopen it with open_image_cache")
        height, width = cache.shape[1:3]
        if height % scale or width % scale:
            raise InputError(f"cached image size {height}x{width} is not divisible by scale {scale}; pass hr_size")
        self.cache = cache

    def high_resolution(self, index):
        return self.cache.image(index).unsqueeze(0)  # (1, 3, H, W) uint8, already at hr_size
