"""Upscaling study: train a super-resolution model on FairFace with one race under-represented, score it per race.

    python run_upscale.py --arch resnet50 --minority black --weight 0.2
    python run_upscale.py --arch bicubic                 # the floor that needs no learning
    torchrun --standalone --nproc_per_node 4 run_upscale.py --arch resnet50 --batch-size 4

Without --data it runs on the built-in synthetic demo FairFace. The study lives in
racecomp/studies/upscale.py (outputs, selection, torchrun); this script is its command line.
"""
from racecomp.cli import run_script, script_arguments
from racecomp.studies.upscale import get_args_parser, main

# Pasted into a notebook cell (Colab, Jupyter): this run's arguments, as on a command line. Elsewhere keep it
# empty and give them after the script's name.
ARGS = ""

if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args(script_arguments(ARGS)))
