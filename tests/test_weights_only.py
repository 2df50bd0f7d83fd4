"""Every torch.load in racecomp refuses a pickle that would run code, and runs none of it.

The payload's unpickling calls os.mkdir(marker): a visible side effect standing for whatever an attacker's
file would run. Each load site must raise a clear error AND leave no marker; the same file loaded without
weights_only makes the marker, so the payload is proven live and the refusal is what stopped it.
"""
import ast
import os
import pickle
import re
import sys

import pytest
import torch

from racecomp import calibration, engine, facenets, files, losses, runs
from racecomp.studies import upscale, verify

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


# ---------------------------------------------------------------------------------------------------------
# Every path a user-supplied run folder reaches (--restore, --identity-model, --model-run, --init-from, resume)


def finished_run(folder, study, args, weights_name):
    """A finished run folder as runs.read_run reads it: args.json, per_race.csv and its final weights file."""
    folder.mkdir(parents=True)
    files.write_json(str(folder / "args.json"), {"study": study, "args": args})
    files.write_csv(str(folder / "per_race.csv"), [{"study": study, "seed": 0, "code_version": "x", "race": "White"}])
    return folder / weights_name


UPSCALER_ARGS = {"arch": "fastvit_t8", "scale": 2, "upsampler": "pixelshuffle", "hr_size": None}
RECOGNIZER_ARGS = {"arch": "mobilefacenet", "embedding_size": 512, "image_size": 112, "epochs": 1}


def restore_load(folder):
    args = verify.get_args_parser().parse_args(["--restore", str(folder), "--epochs", "0", "--weights", "w.pth"])
    return verify.restoration(args)


def identity_model_load(folder):
    args = upscale.get_args_parser().parse_args(["--identity-model", str(folder)])
    return upscale.identity_similarity(args, "cpu")


def init_from_load(folder):
    return runs.load_starting_weights(facenets.get_model("resnet50"), None, str(folder))


LOAD_PATHS = {  # flag -> (study of the run folder, its args, its final weights, how the flag loads it)
    "--restore": ("upscale", UPSCALER_ARGS, "best.pth", restore_load),
    "--identity-model": ("verify", RECOGNIZER_ARGS, "model.pth", identity_model_load),
    "--model-run": ("verify", RECOGNIZER_ARGS, "model.pth",
                    lambda folder: runs.load_trained(str(folder), "verify", "--model-run")),
    "--init-from": ("upscale", UPSCALER_ARGS, "best.pth", init_from_load),
}


@pytest.mark.parametrize("flag", sorted(LOAD_PATHS))
def test_a_run_folder_given_to_a_flag_refuses_a_payload(tmp_path, flag):
    study, args, weights_name, load = LOAD_PATHS[flag]
    path = finished_run(tmp_path / "run", study, args, weights_name)
    assert_refused_without_running(lambda: load(tmp_path / "run"), path,
                                   lambda payload: {"model": payload}, "torch.save",
                                   f"{re.escape(str(path))}: refused to load")


def test_a_resumed_checkpoint_refuses_a_payload(tmp_path):
    model = torch.nn.Linear(2, 2)
    trainer = engine.Trainer(model, lambda m, batch: m(batch).sum(), torch.optim.SGD(model.parameters(), lr=0.1),
                             str(tmp_path), engine.TrainingSettings(), 1)
    path = tmp_path / "checkpoint.pth"
    assert_refused_without_running(trainer.resume, path, lambda payload: {"model": payload, "epoch": 1},
                                   "torch.save", f"{re.escape(str(path))}: refused to load")


# ---------------------------------------------------------------------------------------------------------
# The scan that keeps it so: every unpickling call in racecomp, found in the syntax tree


UNPICKLERS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads", "dill.load",
              "joblib.load", "torch.serialization.load"}


def _dotted(node, aliases):
    """The full dotted name a call's function refers to, through `import x as y` and `from x import y as z`."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([aliases.get(node.id, node.id)] + parts[::-1])


def unsafe_loads(source):
    """(torch.load calls as (line, weights_only is literally True), other unpickling calls as (line, name))."""
    tree = ast.parse(source)
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases.update({alias.asname or alias.name: alias.name for alias in node.names})
        elif isinstance(node, ast.ImportFrom) and node.module:
            aliases.update({alias.asname or alias.name: f"{node.module}.{alias.name}" for alias in node.names})
    torch_loads, unpicklers = [], []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        keywords = {keyword.arg: keyword.value for keyword in node.keywords}
        if name == "torch.load":
            safe = isinstance(keywords.get("weights_only"), ast.Constant) and keywords["weights_only"].value is True
            torch_loads.append((node.lineno, safe))
        elif name in UNPICKLERS:
            unpicklers.append((node.lineno, name))
        elif name == "numpy.load" and not (isinstance(keywords.get("allow_pickle", ast.Constant(False)), ast.Constant)
                                           and keywords.get("allow_pickle", ast.Constant(False)).value is False):
            unpicklers.append((node.lineno, "numpy.load(allow_pickle=...)"))
    return torch_loads, unpicklers


@pytest.mark.parametrize("source", [
    "import torch\ntorch.load(p, weights_only=False)\n",
    "from torch import load as x\nx(p, map_location='cpu', weights_only=False)\n",
    "import torch as t\nt.load(p)\n",
    "import torch\nflag = True\ntorch.load(p, weights_only=flag)\n",
    "import pickle\npickle.load(handle)\n",
    "from pickle import loads\nloads(data)\n",
    "import numpy as np\nnp.load(p, allow_pickle=True)\n",
])
def test_the_scan_finds_every_unsafe_spelling(source):
    torch_loads, unpicklers = unsafe_loads(source)
    assert unpicklers or any(not safe for _, safe in torch_loads), source


def test_every_torch_load_is_one_of_the_tested_sites_and_nothing_else_unpickles():
    # A new load elsewhere would be untested by the payloads above: route it through files.load_checkpoint.
    sites, unpicklers = {}, {}
    for folder, _, names in os.walk(RACECOMP):
        for name in (name for name in names if name.endswith(".py")):
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as handle:
                torch_loads, others = unsafe_loads(handle.read())
            if torch_loads:
                sites[os.path.relpath(path, RACECOMP)] = torch_loads
            if others:
                unpicklers[os.path.relpath(path, RACECOMP)] = others
    assert set(sites) == {"files.py", "facenets.py"}, sites
    assert all(len(calls) == 1 and calls[0][1] for calls in sites.values()), sites
    assert not unpicklers, unpicklers
