"""python -m racecomp.tables RUN_DIR... --out DIR: the same as summarize.py."""
from racecomp.tables.command import command_line

command_line()
