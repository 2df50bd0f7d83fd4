"""Quantization study: simulated W/A-bit quantization of a face model or an upscaler, scored per race.

    python run_quantize.py                         # demo: trains a small face model, then W8A8 and W6A6 x
                                                   # real / synthetic / data-free calibration, scored on demo RFW
    python run_quantize.py --task verify --arch iresnet50 --weights backbone.pth --rfw /data/RFW \\
        --calib-data /data/BUPT --synthetic-folder stylegan_faces/ --bits w8a8 w6a6 w4a8
    python run_quantize.py --task upscale --model-run runs/upscale/resnet50-x2-...

The study lives in racecomp/studies/quantize.py (settings, calibration, evaluation through the model's
own study); this script is its command line.
"""
from racecomp.cli import run_script, script_arguments
from racecomp.studies.quantize import get_args_parser, main

# Pasted into a notebook cell (Colab, Jupyter): this run's arguments, as on a command line. Elsewhere keep it
# empty and give them after the script's name.
ARGS = ""

if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args(script_arguments(ARGS)))
