"""Per-race tables a paper can print, from finished run folders (summarize.py; conventions: racecomp.fairness,
methods: report.METHODS).

    load     runs (find run folders, read each once into a Run), run_files (their CSV files parsed and checked),
             experiments (Experiment: runs pooled over seeds; results are keyed by it)
    analyse  comparisons (per-race rows, intervals, paired tests against references), questions (contrasts,
             dose-response, seed planning), probes (probe results over seeds), answers (their typed results)
    render   sections (tables.md's sections, their CSVs, figures and LaTeX tables), findings (findings.md / .csv),
             formatting (numbers, markdown and LaTeX cells), plots (interval figures), output (the --out folder)
    report   the pipeline: summarize(paths, out_dir) and answers(paths)
"""
from racecomp.tables.findings import sentence
from racecomp.tables.report import answers, summarize

__all__ = ["answers", "sentence", "summarize"]
