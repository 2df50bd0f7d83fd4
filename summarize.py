"""Per-race fairness tables from finished runs: seeds pooled, bootstrap CIs, paired tests, minority penalties.

    python summarize.py runs/ --out tables/
    python summarize.py 'runs/upscale/resnet50-*' runs/verify --out tables/ --n-boot 2000

Finds every folder holding per_race.csv under the given folders or globs (recursively) and writes to --out:
tables.md (every table, and a Problems section naming each file left out and why), one CSV per table, a LaTeX
table per study and metric, and figures with CI whiskers as PNG and PDF (--no-figures: none). See racecomp/tables/__init__.py for the conventions (n, pairing, references,
signs); this script is the command line of racecomp/tables/command.py.
"""
from racecomp.cli import run_script, script_arguments
from racecomp.tables.command import get_args_parser, main

# Pasted into a notebook cell (Colab, Jupyter): this run's arguments, as on a command line. Elsewhere keep it
# empty and give them after the script's name.
ARGS = ""

if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args(script_arguments(ARGS)))
