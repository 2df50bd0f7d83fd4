"""Verification study: train (optionally) a face-recognition model with a margin loss, score it per race on RFW.

    python run_verify.py                                     # demo identities -> demo RFW
    python run_verify.py --arch iresnet50 --weights backbone.pth --epochs 0 --rfw /data/RFW
    python run_verify.py --arch resnet50 --init-from runs/upscale/resnet50-x2-... --finetune bn_affine
    python run_verify.py --probe gender --bias-probe --probe-data /data/FairFace

The study lives in racecomp/studies/verify.py (outputs, protocol, probes); this script is its command line.
"""
from racecomp.cli import run_script, script_arguments
from racecomp.studies.verify import get_args_parser, main

# Pasted into a notebook cell (Colab, Jupyter): this run's arguments, as on a command line. Elsewhere keep it
# empty and give them after the script's name.
ARGS = ""

if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args(script_arguments(ARGS)))
