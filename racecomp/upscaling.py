"""The upscaling study's pieces that more than one script needs: FairFace splits, the training step,
dev-set selection and the evaluation written to a run folder."""
import math

from racecomp import datasets, distributed, engine, evaluation, imagecache, toydata
from racecomp.races import FAIRFACE_RACES


def fairface_root(data):
    """`--data` when given; else the built-in synthetic demo FairFace (generated once into a cache)."""
    return data if data is not None else toydata.ensure_demo_data("fairface")


def load_fairface_splits(root, dev_fraction, seed, skip_bad=False):
    """{'train', 'dev', 'val'} record lists: dev is a seeded, race-stratified carve-out of train used only
    to choose the checkpoint; val is only for reporting. With `skip_bad`, unreadable images are dropped
    and counted (returned under 'dropped'); without it the first one stops the run with its file name."""
    train_all = datasets.read_fairface(root, "train")
    val = datasets.read_fairface(root, "val")
    dropped = {}
    if skip_bad:
        train_all, bad_train = datasets.drop_unreadable(train_all)
        val, bad_val = datasets.drop_unreadable(val)
        dropped = {"train": len(bad_train), "val": len(bad_val)}
        if distributed.is_main():
            print(f"[data] --skip-bad: dropped {len(bad_train)} unreadable train and {len(bad_val)} val images"
                  + "".join(f"\n  {r.file}" for r in (bad_train + bad_val)[:10]))
    train, dev = datasets.split_dev(train_all, dev_fraction, seed)
    return {"train": train, "dev": dev, "val": val, "dropped": dropped}


def training_dataset(records, scale, hr_size, image_cache=False, workers=0):
    """FairFaceSR over the training records, or the same items from the pre-decoded uint8 cache."""
    if not image_cache:
        return datasets.FairFaceSR(records, scale, hr_size=hr_size, train=True)
    path = imagecache.default_cache_path(records, hr_size, toydata.default_cache_dir())
    cache = imagecache.open_image_cache(path, records, hr_size, workers=workers, progress=distributed.is_main())
    return imagecache.CachedFairFaceSR(cache, records, scale, train=True)


def sr_compute_loss(loss_fn):
    """compute_loss for engine.Trainer: the model's output against the high-resolution target."""
    def compute_loss(model, batch):
        total, parts = loss_fn(model(batch["lr"]), batch["hr"])
        return total, parts
    return compute_loss


def mean_psnr_selector(loader, scale, device):
    """select() for engine.Trainer: mean per-image PSNR-Y on the dev split (higher is better).

    `loader` covers this process's shard of dev (distributed.shard(records); all of dev in a single
    process); the values of every rank are gathered, so all ranks return the same mean of all dev images
    (math.fsum: exact whatever the order). An image reproduced exactly has infinite PSNR; it is capped
    at 100 dB here so one such image cannot make every epoch tie at infinity (the reported tables keep
    the uncapped values).
    """
    def select(model):
        rows = evaluation.evaluate_upscaler(model, loader, scale, device, log_every=0)
        values = [value for part in distributed.all_gather_objects([min(100.0, row["psnr_y"]) for row in rows])
                  for value in part]
        return math.fsum(values) / len(values)
    return select


def training_steps(n_draws, batch_size, accum_steps):
    """Optimizer steps per epoch: depends on the epoch's draw count, never on the under-sampling weight."""
    return math.ceil(math.ceil(n_draws / batch_size) / accum_steps)


def evaluate_to_dir(model, records, scale, hr_size, batch_size, workers, device, out_dir, run_columns):
    """Evaluate on `records` (deterministic), write per_image.csv and per_race.csv; return (rows, table).

    Under torchrun each rank evaluates its shard (distributed.shard: positions rank, rank + world, ...)
    and the rows of all ranks are put back in file order on every rank; only rank 0 writes the files.
    Every rank returns the same rows and table.
    """
    loader = engine.make_loader(datasets.FairFaceSR(distributed.shard(records), scale, hr_size=hr_size,
                                                    train=False), batch_size, workers, device)
    rows = distributed.gather_shards(evaluation.evaluate_upscaler(model, loader, scale, device,
                                                                  log_every=50 if distributed.is_main() else 0))
    table = evaluation.mean_by_group(rows, evaluation.IMAGE_QUALITY_KEYS, order=FAIRFACE_RACES)
    if distributed.is_main():
        evaluation.write_results(out_dir, rows, table, run_columns=run_columns)
    distributed.barrier()  # the run's files exist when any rank returns
    return rows, table


def print_table(table, keys=evaluation.IMAGE_QUALITY_KEYS):
    print(f"{'race':<16} {'n':>6} " + " ".join(f"{k:>9}" for k in keys))
    for row in table:
        print(f"{row['race']:<16} {row['n']:>6} " + " ".join(f"{row[k]:>9.4f}" for k in keys))

