"""The quantization study (racecomp.studies.quantize) end to end, and quantized-vs-float closeness on demo faces."""
import csv
import json
import os

import numpy as np
import pytest
import torch

from racecomp import calibration, datasets, facenets, quant, toyrfw, verification
from racecomp.studies import quantize, verify
from racecomp.tables import command as summarize

ARCH = "resnet50"
SCRIPT_ARCH = "fastvit_t8"  # the smallest backbone that runs the same code end to end
SIZE = 48


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    rfw = toyrfw.make_rfw(str(root / "rfw"), n_ids=20, images_per_id=2, pairs_per_fold=2, size=48, seed=5)
    identities = toyrfw.make_identities(str(root / "ids"), n_ids_per_race=4, images_per_id=2, size=48, seed=5)
    torch.manual_seed(0)
    # A ResNet50 embedding net at 48 px: quantized like the others, but fast enough for CI on 2 cores.
    weights = root / "resnet50.pth"
    torch.save(facenets.get_model(ARCH).state_dict(), weights)
    small = root / "fastvit_t8.pth"
    torch.save(facenets.get_model(SCRIPT_ARCH).state_dict(), small)
    return {"rfw": rfw, "identities": identities, "weights": str(weights), "small_weights": str(small)}


def embeddings(model, loader):
    return verification.embed(model, loader, "cpu", flip=False)


def test_w8a8_stays_close_to_float_and_w6a6_less_so(demo):
    model = facenets.get_model(ARCH)
    model.load_state_dict(torch.load(demo["weights"], weights_only=True))
    model.eval()
    records = datasets.read_identity_folders(demo["identities"])
    faces = datasets.FaceImages([((r.race, r.identity, r.path), r.path) for r in records], image_size=SIZE)
    batches, _ = calibration.real_calibration(faces, 32, seed=0)
    batches = [verification.to_model_range(b) for b in batches]
    pairs = datasets.read_rfw(demo["rfw"])
    loader, _ = verification.rfw_loader(demo["rfw"], pairs, 64, 0, "cpu", image_size=SIZE)
    reference = embeddings(model, loader)
    closeness = {}
    for bits in (8, 6):
        qmodel = quant.quantize_model(model, bits, bits)
        quant.calibrate(qmodel, batches)
        quantized = embeddings(qmodel.eval(), loader)
        cosine = np.sum(reference * quantized, axis=1) / (
            np.linalg.norm(reference, axis=1) * np.linalg.norm(quantized, axis=1))
        closeness[bits] = cosine.mean()
    assert closeness[8] > 0.99
    assert closeness[6] < closeness[8]


def test_script_writes_one_run_folder_per_setting(demo, tmp_path):
    out = tmp_path / "quant"
    args = quantize.get_args_parser().parse_args(
        ["--arch", SCRIPT_ARCH, "--image-size", str(SIZE), "--weights", demo["small_weights"], "--rfw", demo["rfw"],
         "--calib-data", demo["identities"],
         "--synthetic-folder", demo["identities"], "--calib-size", "8", "--datafree-steps", "2",
         "--bits", "w4a8", "--out", str(out), "--workers", "0", "--calib-race-weights", "caucasian=1"])
    quantize.main(args)
    expected = ["fp32"] + [f"{b}-{c}" for c in ("real", "synthetic", "datafree") for b in ("w4a8",)]
    for name in expected:
        with open(out / name / "per_race.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [row["race"] for row in rows] == ["African", "Asian", "Caucasian", "Indian"]
        assert rows[0]["study"] == "quantize" and rows[0]["task"] == "verify"
        assert (out / name / "per_pair.csv").exists()
    record = json.loads((out / "w4a8-real" / "args.json").read_text())
    assert record["calibration"]["composition"] == {"African": 0, "Asian": 0, "Caucasian": 8, "Indian": 0}
    assert record["quantization"]["wbits"] == [4] and record["quantization"]["abits"] == [8]
    fp32 = json.loads((out / "fp32" / "args.json").read_text())["model_size_bytes"]
    assert record["model_size_bytes"] < fp32 / 6  # 4-bit weights: about an eighth, plus fp32 BN and biases


def test_bad_bit_settings_are_refused():
    with pytest.raises(ValueError, match="wXaY"):
        quantize.parse_bits("8bit")
    with pytest.raises(ValueError):
        quantize.parse_bits("w9a8")
    with pytest.raises(ValueError, match="valid names"):
        quantize.parse_race_weights("caucasians=1", ("African", "Asian", "Caucasian", "Indian"))


def test_an_unfinished_model_run_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    args = quantize.get_args_parser().parse_args(["--model-run", str(tmp_path / "run"), "--out",
                                                       str(tmp_path / "q")])
    with pytest.raises(ValueError, match="not a finished run folder"):
        quantize.main(args)


def test_readme_flow_quantizes_the_verify_demo_run_itself_and_keeps_its_table(demo, tmp_path, monkeypatch):
    """python run_verify.py; python run_quantize.py; python summarize.py runs/: the quantization study reuses the
    finished verification run (no second copy of the same experiment), so the verification table survives."""
    monkeypatch.chdir(tmp_path)
    small = ["--arch", SCRIPT_ARCH, "--image-size", str(SIZE), "--weights", demo["small_weights"], "--epochs", "0",
             "--rfw", demo["rfw"], "--workers", "0"]

    def demo_arguments(args):  # the demo run, made small enough for CI
        return verify.get_args_parser().parse_args([*small, "--seed", str(args.seed)])

    monkeypatch.setattr(quantize, "demo_arguments", demo_arguments)
    verify_run = tmp_path / "runs" / "verify" / f"{SCRIPT_ARCH}-weights-full-balanced-seed0"
    verify.main(verify.get_args_parser().parse_args(small))
    assert (verify_run / "per_race.csv").is_file()
    written = (verify_run / "per_race.csv").stat().st_mtime_ns
    quantize.main(quantize.get_args_parser().parse_args(
        ["--bits", "w8a8", "--calib", "datafree", "--calib-size", "4", "--datafree-steps", "1", "--workers", "0"]))
    assert (verify_run / "per_race.csv").stat().st_mtime_ns == written  # reused, not retrained or rewritten
    assert not list((tmp_path / "runs" / "quantize").rglob("fp_model"))
    result = summarize.main(summarize.get_args_parser().parse_args(["runs", "--out", "tables", "--n-boot", "20"]))
    assert not [message for _, message in result["problems"] if "same experiment and seed" in message]
    outputs = sorted(os.path.basename(path) for path in result["written"])
    assert [name for name in outputs if name.endswith("_verify.csv") and "quantize" not in name], outputs
