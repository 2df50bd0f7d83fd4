"""Flags shared by the scripts (one parent parser each for training, data and output) and their wiring."""
import argparse

import torch

from racecomp import engine


def output_parser():
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("output")
    group.add_argument("--out", default=None, help="run folder (default: runs/<study>/<settings>-seed<seed>)")
    group.add_argument("--overwrite", action="store_true", help="replace finished results in --out")
    group.add_argument("--seed", type=int, default=0, help="seed of sampling, splits, initialisation")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda when available)")
    group.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    return parser


def training_parser():
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=2, help="passes over an epoch of --epoch-size draws")
    group.add_argument("--batch-size", type=int, default=16, help="images per micro-batch")
    group.add_argument("--accum-steps", type=int, default=1, help="micro-batches per optimizer step")
    group.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate of new layers")
    group.add_argument("--encoder-lr", type=float, default=None, help="peak learning rate of the encoder "
                       "(default: --lr)")
    group.add_argument("--weight-decay", type=float, default=0.05, help="AdamW decoupled weight decay")
    group.add_argument("--warmup-steps", type=int, default=10, help="optimizer steps of linear warm-up")
    group.add_argument("--clip-grad", type=float, default=1.0, help="max gradient L2 norm (0: no clipping)")
    group.add_argument("--amp", choices=tuple(engine.AMP_DTYPES), default="off",
                       help="mixed precision: bf16, fp16 (with loss scaling) or off (fp32)")
    group.add_argument("--finetune", choices=engine.FINETUNE_STRATEGIES, default="full",
                       help="what of the encoder trains: full, frozen, bn_stats (BatchNorm statistics only), "
                            "bn_affine, bn_skip (BN + residual shortcuts)")
    group.add_argument("--unfreeze", default="", help="staged unfreezing: epochs at which the last 1, 2, ... "
                       "encoder stages start training, e.g. 1,3 (before: decoder/head only)")
    group.add_argument("--log-every", type=int, default=10, help="optimizer steps between progress lines")
    return parser


def minority_parser(default_data_help):
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("data")
    group.add_argument("--data", default=None, help=default_data_help)
    group.add_argument("--minority", default="none", help="race to under-represent in training (slug, e.g. "
                       "black, east_asian) or none for the balanced run")
    group.add_argument("--weight", type=float, default=1.0, help="under-representation weight W in (0, 1]")
    group.add_argument("--minority-mode", choices=("subsample", "reweight"), default="subsample",
                       help="subsample: keep a seeded fraction W of that race's images; reweight: draw that race "
                            "W times as often (same epoch length either way)")
    group.add_argument("--skip-bad", action="store_true", help="drop unreadable images (counted) instead of "
                       "stopping at the first one")
    return parser


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def check_weight(weight):
    if not 0.0 < weight <= 1.0:
        raise ValueError(f"--weight {weight}: must be in (0, 1]")
    return weight
