"""Named recipes (racecomp.recipes): what each sets, overrides, the recipe hash, and weights needed offline."""
import pytest

from racecomp import errors, files, recipes, schema
from racecomp.studies import quantize, upscale, verify

# The documented settings of each recipe, written out from their sources (racecomp.recipes' docstring), not
# from the code that expands them.
RACECOMP_X2 = {"pretrained": True, "optimizer": "adamw", "lr": 3e-4, "encoder_lr": 7.5e-5, "weight_decay": 1e-4,
               "warmup_steps": 0, "schedule": "cosine-stages", "batch_size": 32, "accum_steps": 4,
               "clip_grad": 1.0, "epochs": 3, "unfreeze": "0,2", "pixel_loss": "l1", "pixel_weight": 0.1,
               "perceptual_weight": 1.0, "vgg_layer_weights": "1,1,1,1", "ssim_weight": 0.0}
ARCFACE_R50 = {"margin": "arcface", "embedding_size": 512, "optimizer": "sgd", "lr": 0.02, "weight_decay": 5e-4,
               "warmup_steps": 0, "schedule": "linear", "batch_size": 128, "accum_steps": 1, "clip_grad": 5.0,
               "epochs": 20}
QUANTFACE = {"bits": ["w8a8", "w6a6"], "quant_convention": "quantface", "calib": ["real", "synthetic"],
             "calib_size": 4096, "qat_steps": 1000, "qat_calibrate_steps": 299, "qat_lr": 0.00625,
             "qat_weight_decay": 5e-4}


def parse(study, flags):
    return study.get_args_parser().parse_args(flags)


def changed(study, args):
    """{flag: value} of `args` that differ from the study's defaults (recipe name aside)."""
    defaults = vars(parse(study, []))
    return {k: v for k, v in vars(args).items() if v != defaults[k] and k != "recipe"}


@pytest.mark.parametrize("study, flags, expected", [
    (upscale, ["--recipe", "racecomp"], RACECOMP_X2),
    (upscale, ["--recipe", "racecomp", "--scale", "4"], {**RACECOMP_X2, "scale": 4, "epochs": 4}),
    (upscale, ["--recipe", "racecomp", "--arch", "bicubic"], {"arch": "bicubic"}),  # the floor trains nothing
    (verify, ["--recipe", "arcface", "--arch", "iresnet50"], {**ARCFACE_R50, "arch": "iresnet50"}),
    (verify, ["--recipe", "arcface"], {**ARCFACE_R50, "weight_decay": 1e-4, "epochs": 40}),  # mobilefacenet
    (quantize, ["--recipe", "quantface"], QUANTFACE),
])
def test_a_recipe_sets_exactly_what_it_documents(study, flags, expected):
    args = parse(study, flags)
    assert args.recipe == flags[1]
    defaults = vars(parse(study, []))
    # Every documented setting holds; nothing else moved from the defaults (values equal to a default are
    # set too, but cannot be seen here).
    assert {k: getattr(args, k) for k in expected} == expected
    assert set(changed(study, args)) == {k for k in expected if expected[k] != defaults[k]}


def test_an_explicit_flag_overrides_the_recipe_wherever_it_is_given():
    for flags in (["--recipe", "racecomp", "--lr", "1e-3", "--no-pretrained"],
                  ["--lr", "1e-3", "--no-pretrained", "--recipe", "racecomp"]):
        args = parse(upscale, flags)
        assert (args.lr, args.pretrained, args.encoder_lr) == (1e-3, False, 7.5e-5)
    assert parse(quantize, ["--recipe", "quantface", "--bits", "w4a8"]).bits == ["w4a8"]


def test_the_same_settings_with_or_without_a_recipe_are_one_experiment():
    expanded = recipes.expand("upscale", "racecomp", parse(upscale, []))
    with_recipe = parse(upscale, ["--recipe", "racecomp", "--arch", "resnet50"])
    by_hand = parse(upscale, [*expanded, "--arch", "resnet50"])
    assert vars(with_recipe) == {**vars(by_hand), "recipe": "racecomp"}  # args.json records the name and flags
    assert upscale.run_columns(with_recipe, "v") == upscale.run_columns(by_hand, "v")
    other = parse(upscale, ["--recipe", "racecomp", "--lr", "1e-3"])
    assert upscale.run_columns(other, "v")[schema.RECIPE_COLUMN] != upscale.run_columns(by_hand, "v")[schema.RECIPE_COLUMN]
    for study, name in ((verify, "arcface"), (quantize, "quantface")):
        assert vars(parse(study, recipes.expand(study.NAME, name, parse(study, [])))) == {
            **vars(parse(study, ["--recipe", name])), "recipe": None}


def test_help_lists_what_each_recipe_sets(capsys):
    with pytest.raises(SystemExit):
        parse(upscale, ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "racecomp: --pretrained --optimizer adamw --lr 3e-4 --encoder-lr 7.5e-5" in text
    assert "depends on --scale" in text
    with pytest.raises(SystemExit):
        parse(upscale, ["--recipe", "arcface"])  # another study's recipe: refused by the parser


def test_a_recipe_needing_weights_offline_stops_before_any_work(offline_hub, monkeypatch, tmp_path):
    # No network: the ImageNet encoder cannot be had. The run must say how to pass the file before reading data.

    def no_data(*_):
        raise AssertionError("data was read before the weights were found")

    monkeypatch.setattr(upscale, "load_splits", no_data)
    args = parse(upscale, ["--recipe", "racecomp", "--arch", "fastvit_t8", "--out", str(tmp_path / "run"),
                           "--workers", "0"])
    with pytest.raises(errors.InputError, match="--pretrained-path"):
        upscale.main(args)


def test_args_json_records_where_the_recipe_departs_from_its_source():
    record = files.run_record(parse(upscale, ["--recipe", "racecomp"]))
    assert record["args"]["recipe"] == "racecomp"
    assert record["recipe_departures"] == list(recipes.DEPARTURES["racecomp"])
    assert "recipe_departures" not in files.run_record(parse(upscale, []))
