"""Sanity checks after evaluation (racecomp.sanity): a broken model never yields an unmarked number."""
import ast
import json
import math
import pathlib
from statistics import NormalDist

import numpy as np
import pytest
import torch
from torch import nn

from racecomp import facenets, metrics, sanity, upscalers
from racecomp.studies import upscale, verify
from racecomp.tables import summarize
from racecomp.tables.runs import Problems, load_run

SIZE = 32


def pair_rows(negative_scores, positive_scores):
    return ([{"label": 0, "score": s} for s in negative_scores] + [{"label": 1, "score": s} for s in positive_scores])


def test_verification_warnings_chance_and_collapse_by_hand():
    # 2 races x 50 pairs: n = 100 pairs in all, the chance margin max(5, 100 / sqrt(100)) = 10 points.
    near_chance = [{"race": "African", "n_pairs": 50, "accuracy": 65.8}, {"race": "Asian", "n_pairs": 50, "accuracy": 54.0}]
    above = [near_chance[0], {"race": "Asian", "n_pairs": 50, "accuracy": 54.4}]  # mean 60.1
    collapsed = pair_rows([0.99, 0.97, 0.96], [0.99, 0.99])  # median of the different-identity pairs 0.97
    spread = pair_rows([0.10, 0.97, 0.20], [0.99, 0.99])     # median 0.20
    found = sanity.verification_warnings(near_chance, collapsed)
    assert [w["check"] for w in found] == ["chance accuracy", "collapsed embeddings"]
    assert found[0]["value"] == pytest.approx(59.9) and found[1]["value"] == pytest.approx(0.97)
    assert "59.9% on average over races, within 10.0 points of 50%" in found[0]["message"]
    assert sanity.verification_warnings(above, spread) == []
    # Large RFW (4 x 6000 pairs): the margin is the 5-point floor.
    assert sanity.chance_margin(24000) == 5.0 and sanity.chance_margin(25) == 20.0


def simulated_race(rng, n_pairs, true_accuracy):
    """One race's RFW-protocol accuracy (percent) of a model whose best possible accuracy is `true_accuracy`:
    genuine scores shifted by d' = 2 z(accuracy), 10 folds of half genuine, half impostor pairs."""
    per_fold = n_pairs // 10
    labels = np.concatenate([np.r_[np.ones(per_fold // 2), np.zeros(per_fold - per_fold // 2)]] * 10).astype(int)
    shift = 2.0 * NormalDist().inv_cdf(true_accuracy / 100.0) if true_accuracy > 50 else 0.0
    scores = np.tanh((rng.normal(0.0, 1.0, n_pairs) + shift * labels) / 3.0)  # cosine-like, in (-1, 1)
    return 100.0 * metrics.kfold_accuracy(scores, labels, folds=10)["accuracy"]


@pytest.mark.parametrize("n_pairs, true_accuracy, low, high", [
    (20, 50, 0.93, 1.0), (100, 50, 0.93, 1.0),    # a model at chance is flagged (measured 0.98, 0.97)
    (20, 75, 0.0, 0.08), (100, 65, 0.0, 0.02),    # a weak working model is not (measured 0.035, 0.0)
])
def test_chance_check_rates_by_simulation(n_pairs, true_accuracy, low, high):
    # 200 draws of 4 races: Monte Carlo SE <= 0.035 at a rate of 0.5, about 0.013 at 0.97.
    rng = np.random.default_rng(0)
    flagged = 0
    for _ in range(200):
        table = [{"race": str(r), "n_pairs": n_pairs, "accuracy": simulated_race(rng, n_pairs, true_accuracy)}
                 for r in range(4)]
        flagged += any(w["check"] == "chance accuracy" for w in sanity.verification_warnings(table, []))
    assert low <= flagged / 200 <= high


def test_upscaling_warning_below_the_bicubic_floor_by_hand():
    rows = [{"psnr_y": 30.0, "floor_psnr_y": 30.15}, {"psnr_y": 31.0, "floor_psnr_y": 31.05}]  # mean -0.1 dB
    assert sanity.upscaling_warnings(rows) == []  # within BELOW_FLOOR_DB
    rows[0]["psnr_y"] = 29.9  # mean -0.15 dB
    (found,) = sanity.upscaling_warnings(rows)
    assert found["check"] == "below bicubic" and found["value"] == pytest.approx(-0.15)
    # An exact reproduction (inf) counts as 100 dB, as in checkpoint selection, not as an infinite gain.
    assert sanity.upscaling_warnings([{"psnr_y": math.inf, "floor_psnr_y": 40.0}, {"psnr_y": 20.0, "floor_psnr_y": 90.0}])


def test_non_finite_metrics_stop_naming_the_step():
    sanity.check_finite([{"psnr_y": math.inf, "ssim_y": 1.0}], ["psnr_y", "ssim_y"], "val",
                        infinite_allowed=("psnr_y",))
    with pytest.raises(sanity.NonFiniteMetricError, match="evaluation on val: ssim_y is nan for 1 of 2"):
        sanity.check_finite([{"file": "a.jpg", "ssim_y": 0.5}, {"file": "b.jpg", "ssim_y": math.nan}], ["ssim_y"],
                            "evaluation on val")
    with pytest.raises(sanity.NonFiniteMetricError, match="id_cos is inf"):
        sanity.check_finite([{"id_cos": math.inf}], ["id_cos"], "val", infinite_allowed=("psnr_y",))


# ---------------------------------------------------------------------------------------------- in the studies


@pytest.fixture(scope="module")
def data(small_study_data):
    return small_study_data  # 32 px: SIZE


@pytest.fixture(scope="module")
def collapsed_run(data, tmp_path_factory):
    """A finished run_verify folder of a fastvit_t8 whose embedding layer is zeroed (its output normalization
    keeping a constant non-zero bias): every face maps to one point."""
    root = tmp_path_factory.mktemp("collapsed")
    torch.manual_seed(0)
    model = facenets.get_model("fastvit_t8", 32)
    nn.init.zeros_(model.fc.weight)
    nn.init.ones_(model.features.bias)
    torch.save(model.state_dict(), root / "zeroed.pth")
    out = root / "run"
    verify.main(verify.get_args_parser().parse_args(
        ["--arch", "fastvit_t8", "--embedding-size", "32", "--image-size", str(SIZE), "--weights",
         str(root / "zeroed.pth"), "--epochs", "0", "--rfw", data["rfw"], "--no-flip", "--out", str(out),
         "--workers", "0", "--eval-batch-size", "40"]))
    return out


def test_a_collapsed_recognizer_is_flagged_everywhere(collapsed_run, data, tmp_path):
    record = json.loads((collapsed_run / "args.json").read_text())
    assert [w["check"] for w in record["warnings"]] == ["chance accuracy", "collapsed embeddings"]
    # summarize marks the experiment's rows: a column in the CSVs and the tables, a note under each table.
    summarize([str(collapsed_run)], str(tmp_path / "tables"), n_boot=50)
    report = (tmp_path / "tables" / "tables.md").read_text()
    assert "| warnings |" in report and "chance accuracy, collapsed embeddings |" in report
    assert report.count("a broken model, not a result") >= 2
    with open(tmp_path / "tables" / "ci_verify.csv", encoding="utf-8") as handle:
        assert "chance accuracy;collapsed embeddings" in handle.read()
    # ... and it cannot be the recognizer of the identity metric: refused before the upscaling run starts.
    out = tmp_path / "upscale"
    with pytest.raises(ValueError, match="failed a sanity check .*collapsed"):
        upscale.main(upscale.get_args_parser().parse_args(
            ["--arch", "bicubic", "--data", data["fairface"], "--identity-model", str(collapsed_run),
             "--out", str(out), "--workers", "0", "--save-samples", "0"]))
    assert not (out / "per_image.csv").exists() and not (out / "args.json").exists()


def test_summarize_leaves_out_id_cos_of_a_collapsed_recognizer(collapsed_run, data, tmp_path):
    # A run made before the check existed (or with its recognizer's warnings written afterwards): the tables
    # refuse its id_cos with a problem line instead of tabulating "perfect identity preservation".
    healthy = tmp_path / "healthy"
    healthy_record = json.loads((collapsed_run / "args.json").read_text())
    healthy_record["warnings"] = []
    (tmp_path / "recognizer").mkdir()
    for name in ("per_race.csv", "per_pair.csv"):
        (tmp_path / "recognizer" / name).write_bytes((collapsed_run / name).read_bytes())
    (tmp_path / "recognizer" / "args.json").write_text(json.dumps(healthy_record))
    upscale.main(upscale.get_args_parser().parse_args(
        ["--arch", "bicubic", "--data", data["fairface"], "--identity-model", str(tmp_path / "recognizer"),
         "--out", str(healthy), "--workers", "0", "--save-samples", "0"]))
    problems = Problems.quiet()
    assert "id_cos" in load_run(str(healthy), problems).per_race["Black"]
    (tmp_path / "recognizer" / "args.json").write_text((collapsed_run / "args.json").read_text())
    run = load_run(str(healthy), problems)
    assert all("id_cos" not in values for values in run.per_race.values())
    assert all("id_cos" not in item for item in run.items)
    assert any("id_cos left out" in message for _, message in problems.entries)
    # An unreadable recognizer record cannot be checked: id_cos stays (the run refused a collapsed recognizer when
    # it started), with a line that says so rather than one about the recipe legend.
    (tmp_path / "recognizer" / "args.json").write_text("{not json")
    problems = Problems.quiet()
    assert "id_cos" in load_run(str(healthy), problems).per_race["Black"]
    (line,) = [message for _, message in problems.entries if "recognizer" in message]
    assert line.startswith(f"id_cos kept unchecked: the args.json of its recognizer {tmp_path / 'recognizer'} is "
                           f"unreadable (") and line.endswith("checked that recognizer for collapse when it started")
    assert not any("recipe legend" in message for _, message in problems.entries)


class OffsetBicubic(nn.Module):
    """Bicubic plus a constant: an upscaler made worse than its own floor on purpose."""

    def __init__(self, scale, offset):
        super().__init__()
        self.bicubic, self.offset = upscalers.build_upscaler("bicubic", scale), offset

    def forward(self, lr):
        return self.bicubic(lr) + self.offset


@pytest.mark.parametrize("offset, warned", [(0.0, False), (0.08, True)])
def test_an_upscaler_below_its_bicubic_floor_is_warned(data, tmp_path, offset, warned, capsys):
    args = upscale.get_args_parser().parse_args(["--arch", "fastvit_t8", "--data", data["fairface"], "--workers", "0"])
    records = upscale.evaluation_data(args)
    columns = upscale.run_columns(args, "test")
    _, summary = upscale.evaluate_to_dir(OffsetBicubic(2, offset), args, records, str(tmp_path), columns, "cpu")
    assert [w["check"] for w in summary["warnings"]] == (["below bicubic"] if warned else [])
    assert ("[warning] below bicubic: the upscaler is below its bicubic floor" in capsys.readouterr().out) == warned
    assert "floor_psnr_y" not in (tmp_path / "per_image.csv").read_text()  # a check, not a result column


def test_the_studies_stand_side_by_side():
    """upscale and verify import neither each other (finished runs are read through racecomp.runs); quantize
    may use both (it wraps their evaluation)."""
    folder = pathlib.Path(upscale.__file__).parent
    for name, other in (("upscale", "verify"), ("verify", "upscale")):
        tree = ast.parse((folder / f"{name}.py").read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                imported |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
        assert not any(module.endswith(other) for module in imported), (name, imported)
