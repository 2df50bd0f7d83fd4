"""racecomp.tables.report and .sections: the blocks of experiments, the columns that label rows, and the scope of a
comparison."""
from racecomp.tables.sections import MAX_COLUMNS, label_layout, scope_text, seed_sd_text, varying_columns
from racecomp.tables.report import blocks_of
from racecomp.tables.experiments import Experiment


def experiment(family="upscale", **columns):
    return Experiment(family, family.split("-")[-1], {"study": family.split("-")[0], **columns}, [])


def test_varying_columns_compare_values_not_spellings():
    experiments = [experiment(arch=arch, scale=scale) for arch, scale in (("resnet50", "2"), ("vgg", "2.0"))]
    varying, constant = varying_columns(experiments)
    assert varying == ["arch"] and constant == "scale=2"


def test_label_columns_are_joined_when_they_would_not_fit():
    experiments = [experiment(arch=arch, minority=minority, weight=weight)
                   for arch, minority, weight in (("resnet50", "none", "1.0"), ("vgg", "Black", "0.2"))]
    header, cells, _ = label_layout(experiments, MAX_COLUMNS - 3)  # three columns fit beside the others
    assert header == ["arch", "minority", "weight"] and cells(experiments[1]) == ["vgg", "Black", "0.2"]
    header, cells, _ = label_layout(experiments, MAX_COLUMNS - 2)
    assert header == ["experiment"] and cells(experiments[1]) == ["arch=vgg, minority=Black, weight=0.2"]
    header, cells, constant = label_layout(experiments[:1], MAX_COLUMNS)  # one experiment: the intro names it
    assert header == [] and cells(experiments[0]) == [] and constant == "arch=resnet50, minority=none, weight=1.0"


def test_blocks_split_upscaling_by_scale_in_family_order():
    experiments = [experiment("verify", arch="mobilefacenet"), experiment(arch="vgg", scale="4"),
                   experiment(arch="bicubic", scale="2.0"), experiment("quantize-verify", arch="iresnet50"),
                   experiment(arch="resnet50", scale="2")]
    blocks = blocks_of(experiments)
    assert [(b.name, b.title, len(b.experiments)) for b in blocks] == [
        ("upscale-x2", "upscaling x2", 2), ("upscale-x4", "upscaling x4", 1), ("verify", "verification", 1),
        ("quantize-verify", "quantized verification", 1)]


def test_scope_and_seed_spread_say_what_a_comparison_is_about():
    one_seed = {"level": "model", "scope": "model difference (1 seed; not a recipe effect)"}
    assert scope_text(one_seed) == "model difference (1 seed; not a recipe effect)"
    assert seed_sd_text(one_seed) == "(1 seed)"
    seeds = {"level": "recipe", "scope": "recipe difference (seed and item variance)", "n_seeds_a": 3,
             "n_seeds_b": 3, "seeds_paired": True, "seed_sd_a": 0.12, "seed_sd_b": 0.2, "seed_sd_difference": 0.1,
             "reference_exact": False}
    assert scope_text(seeds) == "recipe difference (seed and item variance): 3 vs 3 seeds, seeds paired"
    assert seed_sd_text(seeds) == "0.120 / 0.200 (difference 0.100)"
    bicubic = {**seeds, "n_seeds_b": 1, "seeds_paired": False, "seed_sd_b": float("nan"), "reference_exact": True}
    assert scope_text(bicubic) == ("recipe difference (seed and item variance): 3 seeds vs an untrained reference "
                                    "(known exactly)")
    assert seed_sd_text(bicubic) == "0.120 / exact"
