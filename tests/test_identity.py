"""Identity after upscaling (racecomp.identity): id_cos in the upscaling study and verification on restored
faces (run_verify --restore), on hand-computed cases, against run_verify's own embedding path, with planted
effects on tiny demo data, and end to end (fastvit_t8 at 32 px, fixed pixel embeddings)."""
import csv
import glob
import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from racecomp import (datasets, engine, evaluation, facenets, files, identity, metrics, schema, toyfairface, toyrfw,
                      upscalers, verification)
from racecomp.races import FAIRFACE_RACES, RFW_RACES
from racecomp.studies import upscale, verify

SIZE = 32  # px


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


class Pixels(torch.nn.Module):
    """A fixed embedding: the face's pixels (in the model range [-1, 1]), flattened."""

    def forward(self, x):
        return x.flatten(1)


class CentredPixels(torch.nn.Module):
    """The pixels minus their mean: an embedding of the face's pattern, not of its overall brightness."""

    def forward(self, x):
        flat = x.flatten(1)
        return flat - flat.mean(1, keepdim=True)


class CoarsePixels(torch.nn.Module):
    """The 8x8 mean-pooled face, centred: separates demo identities better than chance (as in
    test_studies_verify); blind to the finest detail."""

    def forward(self, x):
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)
        return pooled - pooled.mean(1, keepdim=True)


class HighPass(torch.nn.Module):
    """The face minus its 3x3 local mean: an embedding that sees only the finest detail."""

    def forward(self, x):
        return (x - torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)).flatten(1)


class Faces(torch.utils.data.Dataset):
    """Items dict(image) over a (N, 3, S, S) tensor: what verification.embed reads."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return {"image": self.images[index]}


def on_grid(*shape, seed=0):
    """Random float images on the uint8 grid (k / 255)."""
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed)).float() / 255.0


# ---------------------------------------------------------------------------------------------- the metric


def test_as_face_is_the_8_bit_image_resized_with_the_projects_bicubic():
    hr = on_grid(2, 3, SIZE, SIZE)
    assert torch.equal(identity.as_face(hr, SIZE), hr)  # already an 8-bit face of the model's size
    assert torch.equal(identity.as_face(hr, 16), datasets.resize_bicubic(hr, (16, 16)))
    raw = torch.tensor([-0.3, 0.6 / 255, 0.4 / 255, 1.7]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    expected = torch.tensor([0.0, 1.0, 0.0, 255.0]) / 255.0  # clamped, rounded to the uint8 grid
    assert torch.equal(identity.as_face(raw, 2)[0, 0].flatten(), expected)


def test_id_cos_hand_computed_with_a_pixel_embedding():
    # 4x4 faces, embedding = the pixels in [-1, 1] (no flip test: the mirrored pixels are not added). The
    # embeddings are fp32 (run_verify's convention), the reference float64: equal to 1e-6.
    hr = on_grid(1, 3, 4, 4, seed=1)
    output = hr.clone()
    output[0, :, 1, 2] = 1.0  # one pixel of the "upscaled" face differs
    values = identity.IdentitySimilarity(Pixels(), 4)(output, hr)
    assert set(values) == set(identity.IDENTITY_KEYS)

    def embedding(face):
        return (2.0 * face[0].double().numpy() - 1.0).ravel()

    a, b = embedding(output), embedding(hr)
    assert values["id_cos"][0] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-6)
    # A constant 0.2 face against a constant 0.6 face: embeddings -0.6 and 0.2 everywhere, opposite: -1.
    dark, light = torch.full((1, 3, 4, 4), 51 / 255), torch.full((1, 3, 4, 4), 153 / 255)
    assert identity.IdentitySimilarity(Pixels(), 4)(dark, light)["id_cos"] == [pytest.approx(-1.0, abs=1e-6)]


@pytest.mark.parametrize("arch, size", [("fastvit_t8", SIZE), ("mobilefacenet", facenets.FACE_IMAGE_SIZE)])
def test_an_unchanged_face_has_id_cos_one(arch, size):
    torch.manual_seed(0)
    model = facenets.get_model(arch, 32)
    hr = on_grid(3, 3, 2 * SIZE, 2 * SIZE, seed=2)  # resized to the model's input on the way
    bicubic = upscalers.bicubic_upsample(datasets.downscale(hr, 2), 2)
    similarity = identity.IdentitySimilarity(model, size)
    assert similarity(hr, hr)["id_cos"] == pytest.approx([1.0] * 3, abs=1e-6)
    assert all(-1.0 <= value < 0.9999 for value in similarity(bicubic, hr)["id_cos"])  # bicubic changed the faces
    assert not model.training  # scored in eval mode


def test_id_cos_is_run_verify_embedding_path_and_pair_scores():
    torch.manual_seed(0)
    model = facenets.get_model("fastvit_t8", 32).train()  # eval mode must be set by the metric itself
    hr = on_grid(4, 3, SIZE, SIZE, seed=3)
    lr = datasets.downscale(hr, 2)
    output = upscalers.bicubic_upsample(lr, 2) + 0.03 * torch.randn(hr.shape)  # an upscaler's unclamped output
    values = identity.IdentitySimilarity(model, SIZE)(output, hr)

    def run_verify_embeddings(faces):  # what run_verify does with faces of its --image-size
        loader = torch.utils.data.DataLoader(Faces(identity.as_face(faces, SIZE)), batch_size=4)
        return verification.embed(model, loader, "cpu", flip=False)

    original = run_verify_embeddings(hr)
    expected = metrics.pair_scores(run_verify_embeddings(output), original)
    assert values["id_cos"] == pytest.approx(expected.tolist(), abs=1e-6)
    assert set(identity.IDENTITY_KEYS) == set(values) <= set(schema.OPTIONAL_RACE_METRICS["upscale"])


def test_restoration_is_the_upscaling_degradation_then_the_upscaler_and_flip_mirrors_the_restored_face():
    faces = on_grid(4, 3, SIZE, SIZE, seed=4)
    restore = identity.Restoration(upscalers.build_upscaler("bicubic", 2), 2)
    expected = identity.as_face(upscalers.bicubic_upsample(datasets.downscale(faces, 2), 2), SIZE)
    assert torch.equal(restore(faces), expected)
    constant = torch.full((1, 3, SIZE, SIZE), 120 / 255)
    assert torch.equal(restore(constant), constant)
    # verification.embed with `restore`: the flip test mirrors the restored face (a flip-sensitive embedding).
    restored = verification.embed(Pixels(), torch.utils.data.DataLoader(Faces(faces), batch_size=3), "cpu",
                                  flip=True, restore=restore)
    direct = verification.embed(Pixels(), torch.utils.data.DataLoader(Faces(expected), batch_size=3), "cpu", flip=True)
    assert np.array_equal(restored, direct)


# ---------------------------------------------------------------------------------------------- planted effects


def test_planted_fine_texture_group_loses_more_id_cos_after_bicubic(tmp_path):
    # toydata's FairFace knob gives the hard group 3x the fine skin and hair texture, which bicubic cannot
    # bring back: with an embedding of the face's pixels its id_cos must drop; the other groups' images are
    # byte-identical, so their values must not move. (Measured, 6 images per group: Black 0.9722 -> 0.9339,
    # the lowest other group 0.9674; seeds 5 and 6 alike.)
    means = {}
    for name, planted in (("plain", {}), ("hard", {"hard_race": "Black", "hard_strength": 1.0})):
        root = toyfairface.make_fairface(str(tmp_path / name), n_train=7, n_val=42, size=SIZE, seed=4, **planted)
        loader = engine.make_loader(datasets.FairFaceSR(datasets.read_fairface(root, "val"), 2), 35, 0, "cpu")
        rows = evaluation.evaluate_upscaler(upscalers.build_upscaler("bicubic", 2), loader, 2, "cpu", show=False,
                                            identity=identity.IdentitySimilarity(CentredPixels(), SIZE))
        if name == "plain":  # the identity columns are added in the same pass and change no other value
            without = evaluation.evaluate_upscaler(upscalers.build_upscaler("bicubic", 2), loader, 2, "cpu", show=False)
            assert [{k: v for k, v in row.items() if k not in identity.IDENTITY_KEYS} for row in rows] == without
        table = evaluation.mean_by_group(rows, identity.IDENTITY_KEYS, order=FAIRFACE_RACES)
        means[name] = {row["race"]: row["id_cos"] for row in table}
    assert means["hard"]["Black"] < means["plain"]["Black"] - 0.005
    assert means["hard"]["Black"] < min(value for race, value in means["hard"].items() if race != "Black")
    assert {r: v for r, v in means["hard"].items() if r != "Black"} == {
        r: v for r, v in means["plain"].items() if r != "Black"}


def plant_fine_identity_cues(root, race, amplitude=0.06):
    """Add to every image of `race` in an RFW tree a fixed pattern per identity at the finest scale
    (a random +-1 field at half resolution times a pixel checkerboard: energy near the Nyquist frequency,
    which a x2 downscale removes). Grey, so JPEG's chroma subsampling keeps it; quality 100."""
    for folder in sorted(glob.glob(os.path.join(root, "test", "data", race, "*"))):
        seed = int(hashlib.sha256(os.path.basename(folder).encode()).hexdigest()[:8], 16)
        field = np.kron(np.random.default_rng(seed).choice([-1.0, 1.0], size=(SIZE // 2, SIZE // 2)), np.ones((2, 2)))
        pattern = amplitude * 255.0 * field * (-1.0) ** np.add.outer(np.arange(SIZE), np.arange(SIZE))
        for path in sorted(glob.glob(os.path.join(folder, "*.jpg"))):
            pixels = datasets.load_rgb(path, path).permute(1, 2, 0).numpy().astype(np.float64)
            planted = np.clip(np.round(pixels + pattern[..., None]), 0, 255).astype(np.uint8)
            Image.fromarray(planted).save(path, quality=100)


def rfw_accuracy(model, rfw, out, *flags):
    args = verify.get_args_parser().parse_args(["--rfw", rfw, "--image-size", str(SIZE), "--workers", "0",
                                                "--eval-batch-size", "128", *flags])
    table, _ = verify.evaluate_to_dir(model, args, verify.evaluation_data(args), str(out), {"study": "verify"}, "cpu")
    return {row["race"]: row["accuracy"] for row in table}


def test_demo_identities_stay_apart_after_a_x2_round_trip(tmp_path):
    # Measured (seed 0): original 66.7 / 60.0 / 56.2 / 69.6, after bicubic x2 65.0 / 59.2 / 56.2 / 70.0.
    rfw = toyrfw.make_rfw(tmp_path / "rfw", n_ids=20, images_per_id=4, pairs_per_fold=12, size=SIZE, seed=0)
    original = rfw_accuracy(CoarsePixels(), rfw, tmp_path / "hr")
    restored = rfw_accuracy(CoarsePixels(), rfw, tmp_path / "x2", "--restore", "bicubic-x2")
    assert all(value > 53.0 for value in restored.values())
    assert sum(restored.values()) / len(restored) > 58.0  # 960 pairs: chance is 50 +- 1.6
    assert all(abs(restored[race] - original[race]) < 5.0 for race in RFW_RACES)


def test_planted_fine_identity_cues_lose_more_verification_accuracy_after_restoration(tmp_path):
    # African identities carry a fixed finest-scale pattern each; an embedding of fine detail verifies them
    # almost perfectly on the original faces, and loses them after LR + bicubic. Measured (seed 0): African
    # 100 -> 63.7; the other groups move by -0.8 to +8.3 (bicubic smooths away noise that confused them).
    rfw = toyrfw.make_rfw(tmp_path / "rfw", n_ids=20, images_per_id=4, pairs_per_fold=12, size=SIZE, seed=0)
    plant_fine_identity_cues(rfw, "African")
    original = rfw_accuracy(HighPass(), rfw, tmp_path / "hr")
    restored = rfw_accuracy(HighPass(), rfw, tmp_path / "x2", "--restore", "bicubic-x2")
    drop = {race: original[race] - restored[race] for race in RFW_RACES}
    assert original["African"] > 95.0
    assert drop["African"] > 20.0
    assert drop["African"] > max(drop[race] for race in RFW_RACES if race != "African") + 15.0


# ---------------------------------------------------------------------------------------------- the studies


@pytest.fixture(scope="module")
def data(small_study_data):
    return small_study_data  # 32 px: SIZE


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random fastvit_t8 (embedding 32) and mobilefacenet weights files, as a backbone.pth is."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save(facenets.get_model("fastvit_t8", 32).state_dict(), root / "fastvit.pth")
    torch.save(facenets.get_model("mobilefacenet").state_dict(), root / "mobilefacenet.pth")
    return root


@pytest.fixture(scope="module")
def recognition_run(data, weights, tmp_path_factory):
    """A finished run_verify folder (fastvit_t8 from weights, 32 px, no flip test), scored on original faces."""
    out = tmp_path_factory.mktemp("recognition") / "run"
    run_verify(data, weights, out)
    return out


@pytest.fixture(scope="module")
def upscaler_run(data, tmp_path_factory):
    """A finished run_upscale folder: fastvit_t8 x2, one epoch."""
    out = tmp_path_factory.mktemp("upscaler") / "run"
    run_upscale(data, out, "--arch", "fastvit_t8", "--epochs", "1")
    return out


def run_upscale(data, out, *flags):
    return upscale.main(upscale.get_args_parser().parse_args(
        ["--data", data["fairface"], "--out", str(out), "--workers", "0", "--batch-size", "8", "--eval-batch-size",
         "16", "--log-every", "0", "--save-samples", "0", *flags]))


def run_verify(data, weights, out, *flags):
    return verify.main(verify.get_args_parser().parse_args(
        ["--arch", "fastvit_t8", "--embedding-size", "32", "--image-size", str(SIZE), "--weights",
         str(weights / "fastvit.pth"), "--epochs", "0", "--rfw", data["rfw"], "--races", "african", "--no-flip",
         "--out", str(out), "--workers", "0", "--eval-batch-size", "40", *flags]))


def test_upscale_run_with_a_verify_run_as_identity_model_writes_id_cos(data, recognition_run, tmp_path):
    out = tmp_path / "bicubic"
    run_upscale(data, out, "--arch", "bicubic", "--identity-model", str(recognition_run))
    images = read_csv(out / "per_image.csv")
    assert len(images) == 14
    assert all(-1.0 <= float(row["id_cos"]) <= 1.0 for row in images)  # the bicubic reference of model runs
    table = read_csv(out / "per_race.csv")
    assert [row["race"] for row in table] == list(FAIRFACE_RACES)
    for row in table:  # each race's mean over its own images
        members = [float(r["id_cos"]) for r in images if r["race"] == row["race"]]
        assert float(row["id_cos"]) == pytest.approx(sum(members) / len(members), abs=1e-12)
    record = json.loads((out / "args.json").read_text())
    assert record["identity_metric"]["face_px"] == SIZE and record["identity_metric"]["flip_test"] is False
    assert record["identity_metric"]["arch"] == "fastvit_t8"


def test_upscale_run_with_a_backbone_file_scores_at_112_px_without_the_flip_test(data, weights, upscaler_run, tmp_path):
    out = tmp_path / "with"
    run_upscale(data, out, "--arch", "bicubic", "--identity-model", str(weights / "mobilefacenet.pth"),
                "--identity-arch", "mobilefacenet")
    images = read_csv(out / "per_image.csv")
    assert all(-1.0 <= float(row[key]) <= 1.0 for row in images for key in identity.IDENTITY_KEYS)
    record = json.loads((out / "args.json").read_text())
    assert (record["identity_metric"]["face_px"], record["identity_metric"]["flip_test"]) == (112, False)
    # A run without --identity-model has no id_cos columns (schema.OPTIONAL_RACE_METRICS).
    assert "id_cos" not in read_csv(upscaler_run / "per_image.csv")[0]
    assert "id_cos" not in read_csv(upscaler_run / "per_race.csv")[0]


def test_identity_flags_are_checked_before_any_work(data, weights, recognition_run, upscaler_run, tmp_path):
    parse = upscale.get_args_parser().parse_args
    with pytest.raises(ValueError, match="give that too"):
        upscale.check_args(parse(["--identity-arch", "iresnet18"]))
    with pytest.raises(ValueError, match="needs --identity-arch"):
        run_upscale(data, tmp_path / "a", "--arch", "bicubic", "--identity-model", str(weights / "fastvit.pth"))
    with pytest.raises(ValueError, match="gives its own architecture"):
        run_upscale(data, tmp_path / "b", "--arch", "bicubic", "--identity-model", str(recognition_run),
                    "--identity-arch", "fastvit_t8")
    with pytest.raises(ValueError, match="not a 'verify' run"):
        run_upscale(data, tmp_path / "c", "--arch", "bicubic", "--identity-model", str(upscaler_run))
    with pytest.raises(ValueError, match="does not fit"):  # a 512-d mobilefacenet is not an iresnet18
        run_upscale(data, tmp_path / "d", "--arch", "bicubic", "--identity-model", str(weights / "mobilefacenet.pth"),
                    "--identity-arch", "iresnet18")
    assert not (tmp_path / "d" / "per_race.csv").exists()


def test_identity_flags_enter_the_recipe_and_leave_it_as_it_was_when_unset():
    parse = upscale.get_args_parser().parse_args
    for base in ([], ["--arch", "bicubic"]):  # the bicubic floor's recipe too: its id_cos depends on the model
        recipe = upscale.run_columns(parse(base), "v")["recipe"]
        assert upscale.run_columns(parse([*base, "--identity-model", "/runs/verify/a"]), "v")["recipe"] != recipe
        assert (upscale.run_columns(parse([*base, "--identity-model", "b.pth", "--identity-arch", "iresnet18"]),
                                    "v")["recipe"]
                != upscale.run_columns(parse([*base, "--identity-model", "b.pth", "--identity-arch", "iresnet50"]),
                                       "v")["recipe"])
    # Unset, they are left out: a run from before the flags existed keeps its recipe.
    args = parse(["--minority", "black", "--weight", "0.2"])
    before = {k: v for k, v in vars(args).items() if k not in ("identity_model", "identity_arch")}
    assert upscale.run_columns(args, "v")["recipe"] == schema.recipe_id(before, upscale.IDENTIFYING,
                                                                       upscale.NON_RESULT_ARGS)


def zeroed_copy(run, destination):
    """A copy of an upscaler run folder whose last layer is zero: its model is exactly bicubic."""
    shutil.copytree(run, destination)
    path = os.path.join(destination, upscale.FINAL_WEIGHTS)
    checkpoint = files.load_checkpoint(path)
    for key in ("to_rgb.weight", "to_rgb.bias"):
        checkpoint["model"][key] = torch.zeros_like(checkpoint["model"][key])
    files.save_checkpoint(checkpoint, path)
    return destination


def test_verify_restore_scores_restored_faces_and_says_so(data, weights, recognition_run, upscaler_run, tmp_path):
    shutil.copytree(recognition_run, tmp_path / "hr")  # the same model and protocol, on the original faces
    run_verify(data, weights, tmp_path / "bicubic", "--restore", "bicubic-x2")
    zeroed = zeroed_copy(upscaler_run, tmp_path / "zeroed")
    run_verify(data, weights, tmp_path / "model", "--restore", str(zeroed))
    scores = {name: [row["score"] for row in read_csv(tmp_path / name / "per_pair.csv")]
              for name in ("hr", "bicubic", "model")}
    assert scores["model"] == scores["bicubic"]  # a UNet whose residual is zero restores exactly as bicubic
    assert scores["bicubic"] != scores["hr"]
    # The trained upscaler itself restores otherwise: the run folder's model is what --restore runs.
    faces = on_grid(2, 3, SIZE, SIZE, seed=5)
    trained, _ = verify.restoration(verify.get_args_parser().parse_args(
        ["--restore", str(upscaler_run), "--image-size", str(SIZE)]))
    bicubic, _ = verify.restoration(verify.get_args_parser().parse_args(
        ["--restore", "bicubic-x2", "--image-size", str(SIZE)]))
    assert not torch.equal(trained.eval()(faces), bicubic(faces))
    tables = {name: read_csv(tmp_path / name / "per_race.csv") for name in ("hr", "bicubic", "model")}
    assert "restore" not in tables["hr"][0] and "restore_model" not in tables["hr"][0]
    assert (tables["bicubic"][0]["restore"], tables["bicubic"][0]["restore_model"]) == ("bicubic-x2", "none")
    assert tables["model"][0]["restore"] == "fastvit_t8-x2" and len(tables["model"][0]["restore_model"]) == 10
    # One model, one protocol: one recipe; the restoration is in its own columns. The upscaler run is known by
    # its identifying columns, recipe and seed (as quantize knows its model run), not by its folder.
    assert len({table[0]["recipe"] for table in tables.values()}) == 1
    assert verify.restore_columns(verify.get_args_parser().parse_args(["--restore", str(upscaler_run)])) == {
        key: tables["model"][0][key] for key in ("restore", "restore_model")}
    columns = list(tables["model"][0])
    assert columns.index("restore") < columns.index("restore_model") < columns.index("recipe")
    record = json.loads((tmp_path / "model" / "args.json").read_text())
    assert record["restore"]["face_px"] == SIZE and record["restore"]["low_resolution_px"] == SIZE // 2
    assert record["restore"]["upscaler"]["arch"] == "fastvit_t8" and record["restore"]["scale"] == 2


def test_verify_restore_is_refused_where_it_cannot_act(data, weights, recognition_run, tmp_path):
    parse = verify.get_args_parser().parse_args
    with pytest.raises(ValueError, match="use --epochs 0"):
        verify.check_args(parse(["--restore", "bicubic-x2", "--epochs", "1"]))
    with pytest.raises(ValueError, match="bicubic-x2 or bicubic-x4"):
        verify.check_args(parse(["--restore", "bicubic-x3", "--epochs", "0", "--weights", "w.pth"]))
    with pytest.raises(ValueError, match="not divisible by 4"):
        verify.check_args(parse(["--restore", "bicubic-x4", "--epochs", "0", "--weights", "w.pth",
                                 "--image-size", "30"]))
    with pytest.raises(ValueError, match="not a 'upscale' run"):
        run_verify(data, weights, tmp_path / "a", "--restore", str(recognition_run))
    with pytest.raises(ValueError, match="not a finished run folder"):
        run_verify(data, weights, tmp_path / "b", "--restore", str(tmp_path))
    assert verify.restore_setting(parse(["--restore", "none"])) is None  # none: the faces as they are
