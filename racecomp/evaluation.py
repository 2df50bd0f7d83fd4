"""Deterministic evaluation passes and per-group aggregation, shared by every script.

Per-group numbers are always aggregated from per-item values, each item by its OWN label: an earlier
study credited every image with its batch's mean, which made all races come out equal.
"""
import io
import math
import os

import torch
from PIL import Image, ImageDraw, ImageFont

from racecomp import datasets, files, metrics
from racecomp.progress import Progress

IMAGE_QUALITY_KEYS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
SAMPLE_COLUMNS = ("LR", "bicubic", "model", "HR")  # the columns of a sample grid, labelled in its header
SAMPLE_HEADER_PX = 14
SAMPLE_KEYS = ("file", "race", "gender", "age")


@torch.no_grad()
def evaluate_upscaler(model, loader, scale, device, label="eval", show=True, identity=None, floor=None):
    """One per-image row (file, race, gender, age, psnr_y, ssim_y, psnr_rgb, ssim_rgb) per evaluated image.

    The model runs in fp32 in eval mode; the metrics follow metrics.image_quality's pinned convention
    (uint8-rounded, 0-255, `scale`-pixel border cropped, Gaussian-window SSIM). Progress lines are labelled
    `label` (printed only with `show`). `identity` (optional, racecomp.identity.IdentitySimilarity) is
    called on each batch on the device, identity(output, hr) -> {column: per-image values}, and its
    columns (id_cos) join the rows: no second pass over the data. `floor` (optional, the bicubic upscaler)
    adds each image's `floor_psnr_y`, its PSNR-Y by that module (for racecomp.sanity).
    """
    model.eval()
    rows = []
    # A DataLoader, or any iterable of batches (bench/ passes prepared lists).
    total = len(loader.dataset) if hasattr(loader, "dataset") else sum(len(batch["hr"]) for batch in loader)
    progress = Progress(label, total, enabled=show)
    for batch in loader:
        lr = datasets.unit_images(batch["lr"].to(device, non_blocking=True))  # uint8 to the device, float there
        hr = datasets.unit_images(batch["hr"].to(device, non_blocking=True))
        output = model(lr).float()
        quality = metrics.image_quality(output, hr, scale)
        values = {key: quality[key].cpu().tolist() for key in IMAGE_QUALITY_KEYS}
        if identity is not None:
            values.update(identity(output, hr))
        if floor is not None:
            floor_quality = metrics.image_quality(floor(lr).float(), hr, scale, keys=("psnr_y",))
            values["floor_psnr_y"] = floor_quality["psnr_y"].cpu().tolist()
        for i in range(hr.shape[0]):
            row = {key: batch[key][i] for key in SAMPLE_KEYS}
            row.update({key: column[i] for key, column in values.items()})
            rows.append(row)
        progress.update(hr.shape[0])
    progress.finish()
    return rows


def mean_by_group(rows, value_keys, group_key="race", order=None):
    """[{group_key, n, <value means>}] with each row counted under its own `group_key` label.

    Infinite values (PSNR of an image reproduced exactly) make that group's mean infinite, which is
    reported as such rather than silently dropped. `order` fixes the row order (a vocabulary).
    """
    groups = {}
    for row in rows:
        groups.setdefault(row[group_key], []).append(row)
    labels = [g for g in (order or ()) if g in groups] + sorted(g for g in groups if g not in (order or ()))
    table = []
    for label in labels:
        members = groups[label]
        entry = {group_key: label, "n": len(members)}
        for key in value_keys:
            entry[key] = math.fsum(float(m[key]) for m in members) / len(members)
        table.append(entry)
    return table


@torch.no_grad()
def save_sample_grids(model, dataset, n_per_group, out_dir, device, group_key="race"):
    """One PNG per group: a header naming the columns (SAMPLE_COLUMNS), then rows of (low-res input,
    bicubic, model output, target), n images each.

    The low-res input is shown with nearest-neighbour enlargement, so its pixels stay visible.
    """
    from torchvision.utils import make_grid

    model.eval()
    chosen = {}
    for index in range(len(dataset)):
        label = dataset.records[index].race if hasattr(dataset, "records") else dataset[index][group_key]
        if len(chosen.setdefault(label, [])) < n_per_group:
            chosen[label].append(index)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for label, indices in chosen.items():
        tiles = []
        for index in indices:
            item = dataset[index]
            lr = datasets.unit_images(item["lr"].unsqueeze(0).to(device))
            hr = datasets.unit_images(item["hr"].unsqueeze(0).to(device))
            size = hr.shape[-2:]
            nearest = torch.nn.functional.interpolate(lr, size=size, mode="nearest")
            bicubic = torch.nn.functional.interpolate(lr, size=size, mode="bicubic", align_corners=False)
            output = model(lr).float()
            tiles += [nearest, bicubic.clamp(0, 1), output.clamp(0, 1), hr]
        grid = make_grid(torch.cat(tiles), nrow=len(SAMPLE_COLUMNS), padding=2)  # (3, H, W) in [0, 1]
        pixels = grid.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        body = Image.fromarray(pixels)
        canvas = Image.new("RGB", (body.width, body.height + SAMPLE_HEADER_PX), "white")
        canvas.paste(body, (0, SAMPLE_HEADER_PX))
        draw = ImageDraw.Draw(canvas)
        for column, name in enumerate(SAMPLE_COLUMNS):
            draw.text((2 + column * (size[1] + 2), 1), name, fill="black", font=ImageFont.load_default())
        buffer = io.BytesIO()
        canvas.save(buffer, format="png")
        path = os.path.join(out_dir, f"samples_{label.replace(' ', '_')}.png")
        files.write_bytes(path, buffer.getvalue())
        written.append(path)
    return written


def write_results(out_dir, item_rows, group_rows, item_name="per_image.csv", run_columns=None):
    """Write the per-item CSV, then the per-group CSV last: its presence marks the run as finished.

    `run_columns` (e.g. arch, seed, code version) are prepended to every per-group row, so a table row
    can always be traced back to what produced it.
    """
    files.write_csv(os.path.join(out_dir, item_name), item_rows)
    run_columns = dict(run_columns or {})
    files.write_csv(os.path.join(out_dir, files.FINISHED_MARKER), [{**run_columns, **row} for row in group_rows])
