"""Named recipes: the training settings of the studies this project reproduces, one flag away (--recipe NAME).

A recipe is a list of ordinary flags. It is expanded before anything runs: the command line is parsed once
to read --recipe (and what the recipe depends on, e.g. --scale), the recipe's flags are put in front of the
command line, and it is parsed again, so a flag given explicitly overrides the recipe's. args.json records
`recipe` (the name) and every expanded flag; `recipe` itself is not hashed into the run's recipe id (the
flags it set are), so the same settings reached with or without --recipe are one experiment.

Sources (read for facts; every departure is named in DEPARTURES and the README):
  racecomp  Maltomatic/RaceComp general_trainer.py @ 4ef6709334cf: AdamW(weight_decay=1e-4), lr 3e-4 with
            the encoder's groups at 0.25x (L185, L105-120, lr passed at ~L490); CosineAnnealingLR made anew
            per unfreezing stage, no warm-up, stepped per optimizer step (L186, ~L280); batch 32 x 4
            micro-batches (L43, L65); clip_grad_norm_ 1.0 (~L274); loss = perceptual + 0.1 x L1 pixel
            (~L255, L63, L145); VGG19 conv2_2/conv3_4/conv4_4/conv5_4 (conv count 4/8/12/16) before ReLU,
            weights 1.0 each, L1 between features (L146-147; toolkit/VGGExtractor.py, VGGPerceptionLoss.py);
            stages (L89-90): at 112 px (x2) the last encoder stage for 2 epochs then the last two for 1; at
            56 px (x4) the third stage for 2 then the third and second for 2 (the fourth is unused at 56 px).
            ViT side: fastvit_ma36 (L78); ImageNet-pretrained encoders (models/*.py).
  arcface   insightface recognition/arcface_torch @ 7fadd420: ArcFace s 64, m 0.5 (configs/base.py L10,
            train_v2.py L107-113); SGD momentum 0.9 (train_v2.py L121-123), weight decay 5e-4 (base.py L29;
            1e-4 in configs/ms1mv3_mbf.py L16), lr 0.02 at batch 128 on one GPU
            (configs/ms1mv3_r50_onegpu.py L18), linear decay to 0 without warm-up (PolynomialLRWarmup,
            power 1, warmup_epoch 0), 20 epochs (40 for mobilefacenet, ms1mv3_mbf.py L25), embedding 512,
            gradient norm clipped at 5 (train_v2.py L189).
  quantface fdbtrs/QuantFace @ a603c267: W8A8 and W6A6 (README L14-35, config_Quantization.py L18-19), weights
            per output channel, activations per tensor (quant_modules.py), real and synthetic data;
            distillation: MSE between L2-normalized embeddings of the quantized student and the fp32 teacher,
            SGD Nesterov momentum 0.9, weight decay 5e-4, lr 0.1 x batch / 512, clip 5
            (train_quantization.py L89-124); activation ranges observed during the first 299 steps (L114-115).
"""
from racecomp.errors import InputError

# Per study: recipe name -> function(parsed args) -> flags, in the order shown by --help.


def _racecomp(args):
    if args.arch == "bicubic":  # the floor trains nothing: a sweep may give it the same --recipe
        return []
    stages = {2: ("3", "0,2"), 4: ("4", "0,2")}  # scale -> (epochs, --unfreeze)
    epochs, unfreeze = stages.get(args.scale, stages[2])
    return ["--pretrained", "--optimizer", "adamw", "--lr", "3e-4", "--encoder-lr", "7.5e-5",
            "--weight-decay", "1e-4", "--warmup-steps", "0", "--schedule", "cosine-stages",
            "--batch-size", "32", "--accum-steps", "4", "--clip-grad", "1.0",
            "--epochs", epochs, "--unfreeze", unfreeze,
            "--pixel-loss", "l1", "--pixel-weight", "0.1", "--perceptual-weight", "1.0",
            "--vgg-layer-weights", "1,1,1,1", "--ssim-weight", "0"]


def _arcface(args):
    mobile = args.arch == "mobilefacenet"
    return ["--margin", "arcface", "--embedding-size", "512", "--optimizer", "sgd", "--lr", "0.02",
            "--weight-decay", "1e-4" if mobile else "5e-4", "--warmup-steps", "0", "--schedule", "linear",
            "--batch-size", "128", "--accum-steps", "1", "--clip-grad", "5", "--epochs", "40" if mobile else "20"]


def _quantface(args):
    return ["--bits", "w8a8", "w6a6", "--quant-convention", "quantface", "--calib", "real", "synthetic",
            "--calib-size", "4096", "--qat-steps", "1000", "--qat-calibrate-steps", "299",
            "--qat-lr", "0.00625", "--qat-weight-decay", "5e-4"]


RECIPES = {"upscale": {"racecomp": _racecomp}, "verify": {"arcface": _arcface},
           "quantize": {"quantface": _quantface}}
# What a recipe sets depends on these flags (read from the first parse).
DEPENDS_ON = {"racecomp": "--scale (x2: 3 epochs, --unfreeze 0,2; x4: 4 epochs, --unfreeze 0,2) and --arch "
                          "(bicubic: nothing)",
              "arcface": "--arch (mobilefacenet: weight decay 1e-4, 40 epochs; others 5e-4, 20)",
              "quantface": None}
# Where the recipe differs from its source, and why.
DEPARTURES = {
    "racecomp": (
        "staged unfreezing freezes the stages not yet opened, as the report intends; the source's code "
        "re-enabled every encoder parameter, so its runs fine-tuned the whole encoder",
        "stages are counted from the deepest stage the model uses: at x4 our UNet uses all four encoder "
        "stages, so the last one then the last two open (the source opens its third then third and second, "
        "its fourth being unused at 56 px)",
        "AdamW keeps its moments across stages (the source built a new optimizer per stage)",
        "encoders are timm's (resnet50: the same layers and key names as torchvision's; the source used "
        "torchvision IMAGENET1K_V2 and Apple's fastvit_ma36 checkpoint: pass those files with "
        "--pretrained-path); the decoder, output range [0, 1] and seeded data are this project's",
        "training augmentation is the horizontal flip only (the source added vertical flips, rotations, "
        "perspective and affine copies, 6 per image)",
        "mixed precision is --amp's (the source always used fp16 autocast on the GPU); --weight stays the "
        "experiment's (the report: 0.2; the code at that commit: 0.05)"),
    "arcface": (
        "gradient clipping covers the margin head too (arcface_torch clips the backbone only)",
        "no Partial FC sampling (sample_rate 1, as arcface_torch's default); the lr is the one-GPU config's "
        "0.02 for every backbone, epochs are arcface_torch's for MS1MV3 whatever the training set's size"),
    "quantface": (
        "distillation cycles the calibration pool (--calib-size 4096 images) for 1000 steps of 32 images; "
        "QuantFace streams its whole training set (5.8M faces, about 11,400 steps of 512)",
        "the lr follows QuantFace's rule 0.1 x batch / 512 at our batch of 32"),
}


def names(study):
    return tuple(RECIPES[study])


def help_text(study):
    """--recipe's help: each recipe's flags (as for the defaults of what it depends on) and what they depend on."""
    import argparse
    parts = []
    for name, expand in RECIPES[study].items():
        shown = " ".join(expand(argparse.Namespace(scale=2, arch="resnet50")))
        depends = f"; depends on {DEPENDS_ON[name]}" if DEPENDS_ON[name] else ""
        parts.append(f"{name}: {shown}{depends}")
    return ("a study's own settings, expanded into flags before the run (flags given explicitly override "
            "them; see README 'Recipes'): " + " | ".join(parts))


def expand(study, name, args):
    """The flags recipe `name` of `study` sets, for the first parse `args`."""
    if name not in RECIPES[study]:
        raise InputError(f"--recipe {name}: {study} has {', '.join(RECIPES[study])}")
    return RECIPES[study][name](args)
