"""Named recipes (racecomp.recipes): what each sets, overrides, the recipe hash, and weights needed offline."""
import math

import pytest
import torch

from racecomp import datasets, engine, errors, files, finetune, margin_heads, recipes, schema
from racecomp.races import FAIRFACE_RACES
from racecomp.studies import quantize, upscale, verify

# Each recipe's settings as its source has them, with where: {argument: (value, "file:line")}. Written from the
# sources (racecomp.recipes' docstring), not from the code that expands them. RaceComp: general_trainer.py
# @4ef67093 unless named; load_redux.py @0cfdbee0; vit_56.py and cnn_56_bridged_unet.py @01f97095.
RACECOMP_SOURCE = {
    "pretrained": (True, "cnn_56_bridged_unet.py:29 (IMAGENET1K_V2), vit_56.py:37-40"),
    "optimizer": ("adamw", "L185"), "lr": (3e-4, "L105, train(..., lr=3e-4)"),
    "encoder_lr": (7.5e-5, "L185 enc_mult=0.25"), "weight_decay": (1e-4, "L185"),
    "decay_all": (True, "L185: one AdamW weight_decay for every group"),
    "warmup_steps": (0, "L186: CosineAnnealingLR, no warm-up"), "schedule": ("cosine-stages", "L185-186: per stage"),
    "batch_size": (32, "L43"), "accum_steps": (4, "L65"), "clip_grad": (1.0, "L274"),
    "epochs": (3, "L67: (2, 1) at 112 px"), "unfreeze": ("0,2", "L67, L89: enc4 for 2 epochs, then enc4+enc3"),
    "epoch_copies": (6, "load_redux.py:65-75: __len__ = n x 6 augmentations"),
    "lr_kernel": ("bilinear", "load_redux.py:62: Resize(lr_size), antialiased bilinear"),
    "pixel_loss": ("l1", "L145"), "pixel_weight": (0.1, "L63, L255"),
    "pixel_space": ("imagenet", "load_redux.py:55-58: Normalize before the loss"),
    "perceptual_weight": (1.0, "L255"), "vgg_layer_weights": ("1,1,1,1", "L146-147"), "ssim_weight": (0.0, "L64"),
}
RACECOMP_X4 = {"scale": (4, "L66: sz = 56"), "epochs": (4, "L67: (2, 2) at 56 px")}
RACECOMP_FASTVIT = {"arch": ("fastvit_ma36", "L78"),
                    "last_blocks": ("decoder", "vit_56.py:72-76 `out` is no enc* group (L105-120, L179-183)")}
# As it ran: L179-183 re-enable the child holding the whole encoder, so no stage stays frozen; the cosine is
# made anew for the second stage (L186).
RACECOMP_AS_RUN = {**{k: v for k, v in RACECOMP_SOURCE.items() if k != "unfreeze"},
                   "cosine_restarts": ("2", "L67, L186: a new cosine at the second stage")}
ARCFACE_SOURCE = {  # insightface recognition/arcface_torch @7fadd420
    "margin": ("arcface", "configs/ms1mv3_r50_onegpu.py:8 margin_list (1.0, 0.5, 0.0)"),
    "margin_grad": ("arcface_torch", "losses.py:42-48: margin under no_grad"),
    "embedding_size": (512, "ms1mv3_r50_onegpu.py:12"), "optimizer": ("sgd", "train_v2.py:121-123"),
    "lr": (0.02, "ms1mv3_r50_onegpu.py:18"), "weight_decay": (5e-4, "ms1mv3_r50_onegpu.py:16"),
    "decay_all": (True, "train_v2.py:121-123: one weight_decay for every parameter"),
    "warmup_steps": (0, "ms1mv3_r50_onegpu.py:26"),
    "schedule": ("linear", "lr_scheduler.py: PolynomialLRWarmup, power 1"),
    "batch_size": (128, "ms1mv3_r50_onegpu.py:17"), "accum_steps": (1, "configs/base.py:44 gradient_acc"),
    "clip_grad": (5.0, "train_v2.py:189"), "epochs": (20, "ms1mv3_r50_onegpu.py:25"),
}
ARCFACE_MBF = {"weight_decay": (1e-4, "configs/ms1mv3_mbf.py:16"), "epochs": (40, "configs/ms1mv3_mbf.py:25")}
QUANTFACE_SOURCE = {  # fdbtrs/QuantFace @a603c267
    "bits": (["w8a8", "w6a6"], "README.md:14-35, config/config_Quantization.py:18-19"),
    "quant_convention": ("quantface", "quantization_utils/quant_modules.py"),
    "calib": (["real", "synthetic"], "config_Quantization.py, config_Quantization_Synthetic.py"),
    "calib_size": (4096, "this project's pool (DEPARTURES)"), "qat_steps": (1000, "this project's (DEPARTURES)"),
    "qat_calibrate_steps": (299, "train_quantization.py:114-115: global_step < 300"),
    "qat_lr": (0.00625, "train_quantization.py:91, config_Quantization.py:10: 0.1 / 512 x our batch of 32"),
    "qat_weight_decay": (5e-4, "train_quantization.py:92, config_Quantization.py:7"),
}


def values(source):
    return {name: value for name, (value, _) in source.items()}


def parse(study, flags):
    return study.get_args_parser().parse_args(flags)


def changed(study, args):
    """{flag: value} of `args` that differ from the study's defaults (recipe name aside)."""
    defaults = vars(parse(study, []))
    return {k: v for k, v in vars(args).items() if v != defaults[k] and k != "recipe"}


@pytest.mark.parametrize("study, flags, source", [
    (upscale, ["--recipe", "racecomp"], RACECOMP_SOURCE),
    (upscale, ["--recipe", "racecomp", "--scale", "4"], {**RACECOMP_SOURCE, **RACECOMP_X4}),
    (upscale, ["--recipe", "racecomp", "--arch", "fastvit_ma36"], {**RACECOMP_SOURCE, **RACECOMP_FASTVIT}),
    (upscale, ["--recipe", "racecomp-as-run"], RACECOMP_AS_RUN),
    (upscale, ["--recipe", "racecomp-as-run", "--scale", "4", "--arch", "fastvit_ma36"],
     {**RACECOMP_AS_RUN, **RACECOMP_X4, **RACECOMP_FASTVIT}),
    # The floor trains nothing: only its LR images are the source's.
    (upscale, ["--recipe", "racecomp", "--arch", "bicubic"], {"arch": ("bicubic", ""), "lr_kernel": ("bilinear", "")}),
    (upscale, ["--recipe", "racecomp-as-run", "--arch", "bicubic"],
     {"arch": ("bicubic", ""), "lr_kernel": ("bilinear", "")}),
    (verify, ["--recipe", "arcface", "--arch", "iresnet50"], {**ARCFACE_SOURCE, "arch": ("iresnet50", "")}),
    (verify, ["--recipe", "arcface"], {**ARCFACE_SOURCE, **ARCFACE_MBF}),  # mobilefacenet, the default
    (verify, ["--recipe", "arcface", "--margin", "cosface"],  # an override: CosFace has the exact gradient only
     {**ARCFACE_SOURCE, **ARCFACE_MBF, "margin": ("cosface", ""), "margin_grad": ("exact", "")}),
    (quantize, ["--recipe", "quantface"], QUANTFACE_SOURCE),
])
def test_a_recipe_sets_exactly_what_its_source_has(study, flags, source):
    expected = values(source)
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


def upscale_help(capsys):
    """run_upscale.py --help as one line of words."""
    with pytest.raises(SystemExit):
        parse(upscale, ["--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_lists_what_each_recipe_sets(capsys):
    text = upscale_help(capsys)
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


def test_help_says_which_scale_the_source_trained(capsys):
    text = upscale_help(capsys)
    assert "the source's commit trained x4, 56 -> 224 px: give --scale 4 for it" in text
    assert "racecomp-as-run:" in text


# The source's encoder groups (general_trainer.py L105-120, names at L106 and L168) on our models, by parameter
# name: cnn_56_bridged_unet.py L31-38 (entry = conv1, bn1; enc1 = layer1; ...); vit_56.py L49-71 (entry = the
# stem; enc1 = network[0] = stages_0; enc2 = network[1:3] = stages_1; enc3 = stages_2; enc4 = network[5:7], the
# last stage's downsampling and positional encoding). Its `out` (L72-76, network[7]: the last stage's blocks) is
# no enc* group: the decoder's lr, trainable throughout.
SOURCE_ENCODER_GROUPS = {
    "resnet50": {"entry": ("encoder.conv1.", "encoder.bn1."), "enc1": ("encoder.layer1.",),
                 "enc2": ("encoder.layer2.",), "enc3": ("encoder.layer3.",), "enc4": ("encoder.layer4.",)},
    "fastvit_ma36": {"entry": ("encoder.stem_",), "enc1": ("encoder.stages_0.",), "enc2": ("encoder.stages_1.",),
                     "enc3": ("encoder.stages_2.",),
                     "enc4": ("encoder.stages_3.downsample.", "encoder.stages_3.pos_emb.")},
}
SOURCE_LR, SOURCE_ENCODER_MULTIPLIER, SOURCE_WEIGHT_DECAY = 3e-4, 0.25, 1e-4  # L185, L490's lr=3e-4


@pytest.fixture(scope="module")
def source_models():
    """Our UNets under --recipe racecomp(-as-run) (random weights: the groups do not depend on them)."""
    return {arch: upscale.build_model(parse(upscale, ["--recipe", "racecomp", "--arch", arch]), starting_weights=False)
            for arch in SOURCE_ENCODER_GROUPS}


def in_source_group(name, arch):
    return any(name.startswith(prefixes) for prefixes in SOURCE_ENCODER_GROUPS[arch].values())


def source_learning_rates(model, arch):
    """{parameter name: lr} by the source's make_param_groups (L105-120): its enc* groups at 0.25x."""
    return {name: SOURCE_LR * (SOURCE_ENCODER_MULTIPLIER if in_source_group(name, arch) else 1.0)
            for name, _ in model.named_parameters()}


def source_trainable(model, arch, layer_list):
    """Names of the parameters the source's unfreezing loop (L168-183) leaves trainable for stage `layer_list`,
    run on our model: our `encoder` child holds the whole encoder as the source's `resnet` / `encoder` child
    (cnn_56_bridged_unet.py L29, vit_56.py L37) did, and L179-183 re-enable every child that is no enc* name."""
    groups = SOURCE_ENCODER_GROUPS[arch]
    members = {group: [p for name, p in model.named_parameters() if name.startswith(prefixes)]
               for group, prefixes in groups.items()}
    for name in ("entry", "enc1", "enc2", "enc3", "enc4"):
        for param in members[name]:
            param.requires_grad = False
        for opened in layer_list:
            for param in members[opened]:
                param.requires_grad = True
        for child_name, child in model.named_children():
            if child_name not in groups:
                for param in child.parameters():
                    param.requires_grad = True
    return {name for name, param in model.named_parameters() if param.requires_grad}


@pytest.mark.parametrize("recipe", ["racecomp", "racecomp-as-run"])
@pytest.mark.parametrize("arch", list(SOURCE_ENCODER_GROUPS))
def test_each_parameter_gets_the_sources_learning_rate_and_weight_decay(source_models, recipe, arch):
    args = parse(upscale, ["--recipe", recipe, "--arch", arch])
    model = source_models[arch]
    optimizer = engine.build_optimizer(model, args.lr, args.encoder_lr, args.weight_decay, optimizer=args.optimizer,
                                       decay_all=args.decay_all)
    names = {id(param): name for name, param in model.named_parameters()}
    got = {names[id(p)]: (group["lr"], group["weight_decay"]) for group in optimizer.param_groups
           for p in group["params"]}
    assert got == {name: (lr, SOURCE_WEIGHT_DECAY) for name, lr in source_learning_rates(model, arch).items()}
    if arch == "fastvit_ma36":  # the source's `out`: the decoder's lr
        assert got["encoder.stages_3.blocks.0.mlp.fc1.weight"][0] == SOURCE_LR


@pytest.mark.parametrize("arch", list(SOURCE_ENCODER_GROUPS))
def test_the_as_run_recipe_trains_what_the_sources_loop_trained_at_each_stage(source_models, arch, tmp_path):
    # At 112 px (x2) the source's stages are ["enc4"] for 2 epochs then ["enc4", "enc3"] for 1 (L67, L89), each
    # with a new CosineAnnealingLR over its steps (L186, stepped per optimizer step at L280).
    args = parse(upscale, ["--recipe", "racecomp-as-run", "--arch", arch])
    model = source_models[arch]
    steps_per_epoch = 5
    optimizer = engine.build_optimizer(model, args.lr, args.encoder_lr, args.weight_decay, optimizer=args.optimizer,
                                       decay_all=args.decay_all)
    trainer = engine.Trainer(model, None, optimizer, str(tmp_path), engine.TrainingSettings.from_args(args),
                             steps_per_epoch)
    lrs = source_learning_rates(model, arch)
    names = {id(param): name for name, param in model.named_parameters()}
    step = 0
    for layer_list, epochs in ((["enc4"], 2), (["enc4", "enc3"], 1)):
        expected_trainable = source_trainable(model, arch, layer_list)
        assert len(expected_trainable) == len(lrs)  # the loop's bug: every encoder group stays trainable
        source_optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=1.0)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(source_optimizer, T_max=epochs * steps_per_epoch)
        for epoch in range(trainer.epoch, trainer.epoch + epochs):
            finetune.configure_finetune(model, "full")  # what the Trainer sets; no --unfreeze changes it
            assert {name for name, p in model.named_parameters() if p.requires_grad} == expected_trainable
            for _ in range(steps_per_epoch):
                factor = source_optimizer.param_groups[0]["lr"]
                got = {names[id(p)]: group["lr"] for group in optimizer.param_groups for p in group["params"]}
                assert got == pytest.approx({name: lr * factor for name, lr in lrs.items()}, rel=1e-12, abs=0)
                optimizer.step()  # no gradients: nothing moves
                trainer.scheduler.step()
                source_optimizer.step()
                cosine.step()
                step += 1
            trainer.epoch += 1
    assert step == args.epochs * steps_per_epoch


def test_the_intended_recipe_opens_the_sources_stages_and_keeps_fastvits_out_trainable(source_models, tmp_path):
    args = parse(upscale, ["--recipe", "racecomp", "--arch", "fastvit_ma36"])
    model = source_models["fastvit_ma36"]
    optimizer = engine.build_optimizer(model, args.lr, args.encoder_lr, args.weight_decay, decay_all=args.decay_all)
    trainer = engine.Trainer(model, None, optimizer, str(tmp_path), engine.TrainingSettings.from_args(args), 1)
    groups = SOURCE_ENCODER_GROUPS["fastvit_ma36"]
    for epoch, opened in ((0, ["enc4"]), (2, ["enc4", "enc3"])):  # the source's intent (L89-90)
        finetune.apply_unfreeze(model, trainer.settings.unfreeze, trainer.stage_prefixes, epoch)
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        closed = {name for name, _ in model.named_parameters() if name.startswith(
            tuple(prefix for group, prefixes in groups.items() if group not in opened for prefix in prefixes))}
        assert trainable == {name for name, _ in model.named_parameters()} - closed
        assert "encoder.stages_3.blocks.0.mlp.fc1.weight" in trainable


# FairFace's released train split (fairface_label_train.csv), in images.
FAIRFACE_TRAIN_IMAGES = 86_744


def source_steps_per_epoch(train_images):
    """The source's optimizer steps per epoch: len(loader) = ceil(6 n / 32) batches (load_redux.py L74-75,
    general_trainer.py L43), a step every 4 and at the last (L272)."""
    return math.ceil(math.ceil(6 * train_images / 32) / 4)


@pytest.mark.parametrize("recipe", ["racecomp", "racecomp-as-run"])
def test_an_epoch_takes_the_sources_optimizer_steps(recipe):
    assert source_steps_per_epoch(FAIRFACE_TRAIN_IMAGES) == 4067  # the README's figure
    races = [race for race in FAIRFACE_RACES for _ in range(FAIRFACE_TRAIN_IMAGES // len(FAIRFACE_RACES) + 1)]
    records = [datasets.FaceRecord(file=f"{i}.jpg", path="", race=race, gender="Male", age="20-29", line=i + 2)
               for i, race in enumerate(races[:FAIRFACE_TRAIN_IMAGES])]
    train, dev = datasets.split_dev(records, 0.1, seed=0)
    for minority, weight in ((None, 1.0), ("Black", 0.05)):  # equal compute: under-sampling keeps the length
        args = parse(upscale, ["--recipe", recipe])
        sampler = datasets.MinoritySampler(train, minority, weight, num_samples=upscale.epoch_draws(
            args, {"train": train, "dev": dev}), flips=True)
        loader = engine.make_loader(records, args.batch_size, 0, "cpu", sampler=sampler)
        assert math.ceil(len(loader) / args.accum_steps) == source_steps_per_epoch(FAIRFACE_TRAIN_IMAGES)
    without = parse(upscale, ["--recipe", recipe, "--epoch-copies", "1"])
    assert upscale.epoch_draws(without, {"train": train, "dev": dev}) == FAIRFACE_TRAIN_IMAGES


def test_the_bicubic_floor_of_the_recipe_is_made_from_the_same_lr_images():
    floor = parse(upscale, ["--recipe", "racecomp", "--arch", "bicubic"])
    plain_floor = parse(upscale, ["--arch", "bicubic"])
    assert floor.lr_kernel == "bilinear"
    # Different LR images, different experiments; the default kernel leaves older runs' recipe as it was.
    assert upscale.run_columns(floor, "v")[schema.RECIPE_COLUMN] != upscale.run_columns(plain_floor, "v")[
        schema.RECIPE_COLUMN]
    old_settings = {k: v for k, v in vars(plain_floor).items() if k != "lr_kernel"}
    assert schema.recipe_id(old_settings, ()) == schema.recipe_id(vars(plain_floor), ())


@pytest.mark.parametrize("flags, message", [
    (["--arch", "resnet50", "--last-blocks", "decoder"], "FastViT"),
    (["--arch", "fastvit_t8", "--last-blocks", "decoder", "--finetune", "frozen"], "--finetune full"),
    (["--epoch-copies", "0"], "--epoch-copies"),
])
def test_source_options_that_cannot_act_are_refused(flags, message):
    with pytest.raises(errors.InputError, match=message):
        upscale.check_args(parse(upscale, flags))
    with pytest.raises(errors.InputError, match="ArcFace"):
        verify.check_args(parse(verify, ["--margin", "cosface", "--margin-grad", "arcface_torch"]))


@pytest.mark.parametrize("arch", ["resnet50", "fastvit_ma36"])
def test_the_arcface_recipe_decays_every_parameter_at_one_learning_rate(arch):
    # arcface_torch (train_v2.py L121-123): one SGD group setting for the backbone and the margin head alike.
    args = parse(verify, ["--recipe", "arcface", "--arch", arch])
    model = verify.build_model(args, starting_weights=False)
    head = margin_heads.get_margin_head(args.margin, args.embedding_size, 10, gradient=args.margin_grad)
    optimizer = engine.build_optimizer(model, args.lr, args.encoder_lr, args.weight_decay, extra_modules=[head],
                                       optimizer=args.optimizer, decay_all=args.decay_all)
    settings = {(group["lr"], group["weight_decay"]) for group in optimizer.param_groups}
    assert settings == {(0.02, 5e-4)}
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(list(model.parameters())) + 1
