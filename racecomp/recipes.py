"""Named recipes: the training settings of the studies this project reproduces, one flag away (--recipe NAME).

A recipe is a list of ordinary flags. It is expanded before anything runs: the command line is parsed once
to read --recipe (and what the recipe depends on, e.g. --scale), the recipe's flags are put in front of the
command line, and it is parsed again, so a flag given explicitly overrides the recipe's. args.json records
`recipe` (the name) and every expanded flag; `recipe` itself is not hashed into the run's recipe id (the
flags it set are), so the same settings reached with or without --recipe are one experiment.

Sources (read for facts; every departure is named in DEPARTURES and the README; tests/test_recipes.py holds
each flag's value against the line it comes from):
  racecomp  Maltomatic/RaceComp general_trainer.py @ 4ef6709334cf: AdamW(weight_decay=1e-4) on every parameter,
            lr 3e-4 with the encoder's groups at 0.25x (L185, L105-120; lr=3e-4 in its train(...) call);
            CosineAnnealingLR made anew per unfreezing stage over ceil(len(loader) / 4) steps per epoch, no
            warm-up, stepped per optimizer step (L186, L272, L280); batch 32 x 4 micro-batches (L43, L65);
            clip_grad_norm_ 1.0 (L274); fp16 autocast with a GradScaler (L143, L237); loss = perceptual + 0.1 x
            L1 pixel (L255, L63, L145) on ImageNet-normalized tensors (loaders/load_redux.py @ 0cfdbee0 L57);
            VGG19 conv2_2/conv3_4/conv4_4/conv5_4 (conv count 4/8/12/16) before ReLU, weights 1.0 each, L1
            between features (L146-147; toolkit/VGGExtractor.py, VGGPerceptionLoss.py); stages (L67, L89-90):
            at 112 px (x2) the last encoder stage for 2 epochs then the last two for 1; at 56 px (x4) the third
            stage for 2 then the third and second for 2 (the fourth is unused at 56 px). The commit trains at
            56 px, x4 (sz = 56, L66). Its unfreezing loop (L168-183) re-enables every parameter of the child
            `encoder` (models/vit_56.py @ 01f97095 L37; `resnet`, cnn_56_bridged_unet.py L29) with the decoder
            (L179-183), so its runs trained the whole encoder at 0.25x lr from the first epoch (recipe
            racecomp-as-run).
            Data (load_redux.py): LR by Resize(lr_size), antialiased bilinear on uint8 (L62); an epoch is 6
            copies of each train image (the image, horizontal and vertical flips, a rotation, a perspective, an
            affine shift: L65-72, __len__ L74-75), a subsampled minority shortening it (L35); ViT side:
            fastvit_ma36 (L78), its last stage's blocks and final conv (`out`, vit_56.py L72-76) outside the
            enc* groups: the decoder's lr, trainable from the start; ImageNet-pretrained encoders (models/*.py).
  arcface   insightface recognition/arcface_torch @ 7fadd420: ArcFace s 64, m 0.5 (configs/base.py L10,
            train_v2.py L107-113), the margin applied under no_grad (losses.py L42-48); SGD momentum 0.9 on
            every parameter (train_v2.py L121-123), weight decay 5e-4 (ms1mv3_r50_onegpu.py L16; 1e-4 in
            configs/ms1mv3_mbf.py L16), lr 0.02 at batch 128 on one GPU (configs/ms1mv3_r50_onegpu.py L17-18),
            fp16 (L14), linear decay to 0 without warm-up (PolynomialLRWarmup, power 1, warmup_epoch 0), 20 epochs
            (40 for mobilefacenet, ms1mv3_mbf.py L25), embedding 512, gradient norm clipped at 5 (train_v2.py L189).
  quantface fdbtrs/QuantFace @ a603c267: W8A8 and W6A6 (README L14-35, config_Quantization.py L18-19), weights
            per output channel, activations per tensor (quant_modules.py), real and synthetic data;
            distillation: MSE between L2-normalized embeddings of the quantized student and the fp32 teacher,
            SGD Nesterov momentum 0.9, weight decay 5e-4, lr 0.1 x batch / 512, clip 5
            (train_quantization.py L89-124); activation ranges observed during the first 299 steps (L114-115),
            none before (L106-111); training images flipped at random (utils/dataset.py L79).
"""
from racecomp.errors import InputError

# Per study: recipe name -> function(parsed args) -> flags, in the order shown by --help.


# Epochs at each --scale (x2: the source's 112-px stages (2, 1); x4: its 56-px stages (2, 2)); in both the
# second stage starts at epoch 2 (general_trainer.py L67).
RACECOMP_EPOCHS = {2: "3", 4: "4"}
RACECOMP_SECOND_STAGE = "2"


def _racecomp_common(args):
    """The flags both RaceComp recipes set (the trained model's; the bicubic floor's are its LR images only)."""
    if args.arch == "bicubic":  # the floor trains nothing, its LR images are the source's
        return ["--lr-kernel", "bilinear"]
    fastvit = ["--last-blocks", "decoder"] if args.arch.startswith("fastvit") else []
    return ["--pretrained", "--optimizer", "adamw", "--lr", "3e-4", "--encoder-lr", "7.5e-5",
            "--weight-decay", "1e-4", "--decay-all", "--warmup-steps", "0", "--schedule", "cosine-stages",
            "--batch-size", "32", "--accum-steps", "4", "--clip-grad", "1.0",
            "--epochs", RACECOMP_EPOCHS.get(args.scale, RACECOMP_EPOCHS[2]), "--epoch-copies", "6",
            "--lr-kernel", "bilinear", "--pixel-loss", "l1", "--pixel-weight", "0.1", "--pixel-space", "imagenet",
            "--perceptual-weight", "1.0", "--vgg-layer-weights", "1,1,1,1", "--ssim-weight", "0", *fastvit]


def _racecomp(args):
    """As the source meant it: the encoder opened by stage (the last, then the last two)."""
    return _racecomp_common(args) + ([] if args.arch == "bicubic" else ["--unfreeze", f"0,{RACECOMP_SECOND_STAGE}"])


def _racecomp_as_run(args):
    """As the source ran it: the whole encoder trains from the start, the cosine restarts at each stage."""
    restarts = [] if args.arch == "bicubic" else ["--cosine-restarts", RACECOMP_SECOND_STAGE]
    return _racecomp_common(args) + restarts


def _arcface(args):
    mobile = args.arch == "mobilefacenet"
    # arcface_torch's margin gradient is ArcFace's: a --margin cosface given over the recipe keeps its exact one.
    gradient = ["--margin-grad", "arcface_torch"] if args.margin == "arcface" else []
    return ["--margin", "arcface", *gradient, "--embedding-size", "512", "--optimizer", "sgd", "--lr", "0.02",
            "--weight-decay", "1e-4" if mobile else "5e-4", "--decay-all", "--warmup-steps", "0",
            "--schedule", "linear", "--batch-size", "128", "--accum-steps", "1", "--clip-grad", "5",
            "--epochs", "40" if mobile else "20"]


def _quantface(args):
    return ["--bits", "w8a8", "w6a6", "--quant-convention", "quantface", "--calib", "real", "synthetic",
            "--calib-size", "4096", "--qat-steps", "1000", "--qat-calibrate-steps", "299",
            "--qat-lr", "0.00625", "--qat-weight-decay", "5e-4"]


RECIPES = {"upscale": {"racecomp": _racecomp, "racecomp-as-run": _racecomp_as_run}, "verify": {"arcface": _arcface},
           "quantize": {"quantface": _quantface}}
_RACECOMP_DEPENDS = ("--scale (x2: 3 epochs; x4: 4 epochs; the source's commit trained x4, 56 -> 224 px: give "
                     "--scale 4 for it) and --arch (FastViT: --last-blocks decoder; bicubic: --lr-kernel bilinear "
                     "only)")
# What a recipe sets depends on these flags (read from the first parse).
DEPENDS_ON = {"racecomp": _RACECOMP_DEPENDS, "racecomp-as-run": _RACECOMP_DEPENDS,
              "arcface": "--arch (mobilefacenet: weight decay 1e-4, 40 epochs; others 5e-4, 20) and --margin "
                         "(cosface: no --margin-grad)",
              "quantface": None}
# Where a recipe differs from its source, and why.
_RACECOMP_SHARED = (
    "AdamW keeps its moments across stages (the source built a new optimizer per stage)",
    "encoders are timm's (resnet50: the same layers and key names as torchvision's; the source used "
    "torchvision IMAGENET1K_V2 and Apple's fastvit_ma36 checkpoint: pass those files with --pretrained-path); "
    "the decoder, output range [0, 1] and seeded data are this project's; FastViT's final conv (the end of the "
    "source's `out`) is not part of our encoder",
    "an epoch is the source's number of optimizer steps (--epoch-copies 6: 6 draws per FairFace train image), "
    "but its draws are the original images, horizontally flipped at random (the source's 6 copies are the "
    "image, horizontal and vertical flips, a rotation up to 179 degrees, a perspective and an affine shift); "
    "they come from the 90% of train left after the dev split, each image about 6.7 times",
    "the checkpoint is chosen by PSNR-Y on dev (a seeded 10% of train, --dev-fraction) and val is only "
    "reported; the source kept the lowest loss on val (itself 6 augmented copies) and reported val, the split "
    "it had selected on",
    "equal compute: under-sampling a race leaves the epoch's length as it is; the source's epoch shrank with "
    "the subsampled race (6 copies of the images kept)",
    "LR images are torch's antialiased bilinear of the float image, rounded to 8 bits (the source: "
    "torchvision's Resize on the uint8 image, which rounds in its own way: single pixels may differ by one grey "
    "level)",
    "mixed precision is --amp's (auto: bf16 on GPUs of compute capability >= 8.0, which needs no loss scaling, "
    "fp16 below; the source always ran fp16 autocast with a GradScaler: pass --amp fp16 for it); a non-finite "
    "loss stops the run (the source skipped the micro-batch)",
    "--weight stays the experiment's (the report: 0.2; the code at that commit: 0.05); --scale too (the commit "
    "trained x4, 56 px; x2 is its 112-px configuration)",
)
DEPARTURES = {
    "racecomp": (
        "staged unfreezing freezes the stages not yet opened, as the report intends; the source's code "
        "re-enabled every encoder parameter, so its runs fine-tuned the whole encoder (that run: recipe "
        "racecomp-as-run)",
        "stages are counted from the deepest stage the model uses: at x4 our UNet uses all four encoder "
        "stages, so the last one then the last two open (the source opens its third then third and second, "
        "its fourth being unused at 56 px)",
        *_RACECOMP_SHARED),
    "racecomp-as-run": (
        "at x4 our UNet uses the encoder's fourth stage, which the source's 56-px forward skipped",
        *_RACECOMP_SHARED),
    "arcface": (
        "gradient clipping covers the margin head too (arcface_torch clips the backbone only)",
        "no Partial FC sampling (sample_rate 1, as arcface_torch's default); the lr is the one-GPU config's "
        "0.02 for every backbone (ms1mv3_mbf.py: 0.1), epochs are arcface_torch's for MS1MV3 whatever the "
        "training set's size",
        "mixed precision is --amp's (auto: bf16 on GPUs of compute capability >= 8.0, fp16 below; arcface_torch's "
        "configs train in fp16: pass --amp fp16 for it)"),
    "quantface": (
        "distillation cycles the calibration pool (--calib-size 4096 images) for 1000 steps of 32 images; "
        "QuantFace streams its whole training set (5.8M faces, about 11,400 steps of 512)",
        "the lr follows QuantFace's rule 0.1 x batch / 512 at our batch of 32",
        "activation ranges are calibrated on the pool before distillation, then observed during its first 299 "
        "steps (QuantFace has no calibration pass: its ranges come from those steps alone); one path serves "
        "every setting: distillation refines the calibrated post-training model",
        "distillation cycles the fixed calibration batches, unflipped (QuantFace flips its training images at "
        "random): the batches are made once per calibration source"),
}


def names(study):
    return tuple(RECIPES[study])


def help_text(study):
    """--recipe's help: each recipe's flags (as for the defaults of what it depends on) and what they depend on."""
    import argparse
    parts = []
    for name, expand in RECIPES[study].items():
        shown = " ".join(expand(argparse.Namespace(scale=2, arch="resnet50", margin="arcface")))
        depends = f"; depends on {DEPENDS_ON[name]}" if DEPENDS_ON[name] else ""
        parts.append(f"{name}: {shown}{depends}")
    return ("a study's own settings, expanded into flags before the run (flags given explicitly override "
            "them; see README 'Recipes'): " + " | ".join(parts))


def expand(study, name, args):
    """The flags recipe `name` of `study` sets, for the first parse `args`."""
    if name not in RECIPES[study]:
        raise InputError(f"--recipe {name}: {study} has {', '.join(RECIPES[study])}")
    return RECIPES[study][name](args)
