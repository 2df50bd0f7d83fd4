"""Every torch.load in racecomp refuses a pickle that would run code, and runs none of it.

The payload's unpickling calls os.mkdir(marker): a visible side effect standing for whatever an attacker's
file would run. Each load site must raise a clear error AND leave no marker; the same file loaded without
weights_only makes the marker, so the payload is proven live and the refusal is what stopped it.
"""
import os
import pickle
import re
import sys

import pytest
import torch

from racecomp import calibration, facenets, files, losses

RACECOMP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "racecomp")
WRITERS = ("torch.save", "pickle.dump")  # the zip format of torch.save, and a plain (legacy) pickle


class MakesADirectory:
    """Unpickling it calls os.mkdir(path); the class itself is not needed to load it (pickle stores os.mkdir)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def plant(path, wrap, writer):
    """Write wrap(payload) to `path` with `writer`; return the marker the payload makes when it runs."""
    marker = path.parent / f"{path.name}.payload-ran"
    content = wrap(MakesADirectory(marker))
    if writer == "torch.save":
        torch.save(content, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump(content, handle, protocol=2)  # torch's own pickle protocol
    return marker


def assert_refused_without_running(load, path, wrap, writer, match):
    marker = plant(path, wrap, writer)
    with pytest.raises(ValueError, match=match):
        load()
    assert not marker.exists(), "the payload ran: the file was unpickled with code execution"
    # The same file, loaded without weights_only, runs the payload: the test's payload is live.
    if writer == "torch.save":
        torch.load(path, map_location="cpu", weights_only=False)
    else:
        with open(path, "rb") as handle:
            pickle.load(handle)
    assert marker.is_dir()


@pytest.mark.parametrize("writer", WRITERS)
def test_load_checkpoint_refuses_a_payload(tmp_path, writer):
    path = tmp_path / "checkpoint.pth"
    assert_refused_without_running(lambda: files.load_checkpoint(str(path)), path,
                                   lambda payload: {"model": {}, "epoch": 1, "args": payload}, writer,
                                   f"{re.escape(str(path))}: refused to load")


@pytest.mark.parametrize("writer", WRITERS)
def test_load_backbone_weights_refuses_a_payload(tmp_path, writer):
    path = tmp_path / "backbone.pth"
    model = torch.nn.Linear(2, 2)
    assert_refused_without_running(lambda: facenets.load_backbone_weights(model, str(path)), path,
                                   lambda payload: {"model": model.state_dict(), "args": payload}, writer,
                                   f"{re.escape(str(path))}: refused")


@pytest.mark.parametrize("writer", WRITERS)
def test_vgg_weights_refuse_a_payload(tmp_path, writer):
    path = tmp_path / "vgg19.pth"
    assert_refused_without_running(lambda: losses.VGGPerceptualLoss(weights_path=str(path)), path,
                                   lambda payload: {"features.0.weight": payload}, writer,
                                   f"{re.escape(str(path))}: refused to load")


STAND_IN_MODELS = '''
from torch import nn


class Generator(nn.Module):
    def __init__(self, ngpu, nc, nz, ngf):
        super().__init__()
'''


@pytest.fixture
def gan_package(tmp_path, monkeypatch):
    """Test-only stand-in for the optional gan-face-generate (its layout: models.Generator, weights.tar beside
    __init__.py); yields the weights.tar path that calibration.gan_calibration loads."""
    package = tmp_path / "site" / "gan_face_generate"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(STAND_IN_MODELS)
    monkeypatch.syspath_prepend(str(package.parent))
    names = ("gan_face_generate", "gan_face_generate.models")
    for name in names:
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield package / "weights.tar"
    for name in names:  # the stand-in must not outlive this test
        sys.modules.pop(name, None)


@pytest.mark.parametrize("writer", WRITERS)
def test_gan_generator_weights_refuse_a_payload(gan_package, writer):
    assert_refused_without_running(lambda: calibration.gan_calibration(2, 8), gan_package,
                                   lambda payload: {"netG_state_dict": payload}, writer,
                                   f"{re.escape(str(gan_package))}: refused to load")


def test_every_torch_load_is_one_of_the_tested_sites():
    # A new torch.load elsewhere would be untested by the payloads above: route it through files.load_checkpoint.
    sites = {}
    for folder, _, names in os.walk(RACECOMP):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as handle:
                    calls = re.findall(r"torch\.load\([^)]*\)", handle.read())
                if calls:
                    sites[os.path.relpath(path, RACECOMP)] = calls
    assert set(sites) == {"files.py", "facenets.py"}, sites
    assert all(len(calls) == 1 and "weights_only=True" in calls[0] for calls in sites.values()), sites
