"""Evaluation passes: per-group aggregation (every item under its own label) and sample grids."""
import numpy as np
import torch
from PIL import Image

from racecomp import datasets, evaluation, metrics, toyfairface, upscalers
from racecomp.races import FAIRFACE_RACES


def test_mean_by_group_counts_each_row_under_its_own_label():
    rows = [{"race": "Black", "v": 1.0}, {"race": "White", "v": 3.0}, {"race": "Black", "v": 2.0}]
    table = evaluation.mean_by_group(rows, ["v"], order=FAIRFACE_RACES)
    assert table == [{"race": "White", "n": 1, "v": 3.0}, {"race": "Black", "n": 2, "v": 1.5}]



def test_sample_grids_label_their_columns(tmp_path):
    root = toyfairface.make_fairface(str(tmp_path / "ff"), n_train=7, n_val=14, size=32, seed=1)
    val = datasets.FairFaceSR(datasets.read_fairface(root, "val"), 2)
    (path, *_) = evaluation.save_sample_grids(upscalers.build_upscaler("bicubic", 2), val, 2, str(tmp_path), "cpu")
    image = np.asarray(Image.open(path).convert("L"))
    assert image.shape == (evaluation.SAMPLE_HEADER_PX + 2 + 2 * (32 + 2), 2 + 4 * (32 + 2))
    for column in range(4):  # dark label text in the header above each column
        header = image[:evaluation.SAMPLE_HEADER_PX, 2 + column * 34: column * 34 + 34]
        assert header.min() < 128 and header.max() == 255


def test_the_floor_computes_its_psnr_y_alone_with_the_same_values(tmp_path, monkeypatch):
    """The bicubic floor keeps only PSNR-Y: its values are image_quality's (exactly), and no SSIM is computed for it."""
    root = toyfairface.make_fairface(str(tmp_path / "ff"), n_train=7, n_val=14, size=32, seed=1)
    val = datasets.FairFaceSR(datasets.read_fairface(root, "val"), 2)
    loader = torch.utils.data.DataLoader(val, batch_size=5)
    torch.manual_seed(0)
    model = torch.nn.Sequential(upscalers.build_upscaler("bicubic", 2), torch.nn.Conv2d(3, 3, 1))
    floor = upscalers.build_upscaler("bicubic", 2)
    ssim_calls = []
    ssim = metrics.ssim
    monkeypatch.setattr(metrics, "ssim", lambda *args, **kwargs: ssim_calls.append(1) or ssim(*args, **kwargs))
    rows = evaluation.evaluate_upscaler(model, loader, 2, "cpu", show=False, floor=floor)
    assert len(ssim_calls) == 2 * 14  # ssim_y and ssim_rgb of the model's images, one image at a time, nothing more
    expected = []
    for batch in loader:
        lr, hr = datasets.unit_images(batch["lr"]), datasets.unit_images(batch["hr"])
        expected += metrics.image_quality(floor(lr).float(), hr, 2)["psnr_y"].tolist()
    assert [row["floor_psnr_y"] for row in rows] == expected
