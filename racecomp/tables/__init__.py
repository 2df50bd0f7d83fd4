"""Per-race tables a paper can print, from finished run folders: seeds pooled per experiment, fairness gaps
with bootstrap CIs, paired model-vs-reference tests, minority penalties; markdown, CSV and PNG dot plots.

A run folder is finished when it holds per_race.csv (the files and their columns: racecomp.schema). Its rows
start with the run's identifying columns (every column before `race`: study, the settings, seed,
code_version); an experiment is every identifying column but seed and code_version, so the seeds of one
experiment are pooled. Runs are sorted into families, each with its own columns and tables: upscale, verify,
quantize-upscale and quantize-verify (quantize runs by `task`).

Conventions used by every table:
  - n beside a value counts items pooled over seeds: an image (or pair) evaluated by two seeds counts twice.
  - Per-item statistics use per_image.csv (PSNR-Y in dB, SSIM-Y in [0, 1]) or per_pair.csv (`correct`, 0/1,
    reported as percent). An infinite per-image PSNR (an image reproduced exactly) is capped at
    comparisons.PSNR_CAP_DB for the bootstrap and paired tests only, and each capped count is reported as a problem.
  - Bootstrap resampling: images are clustered by file (the same image under two seeds is drawn together),
    pairs by their first identity `id1`; every bootstrap is seeded with the same --seed, so an experiment's
    intervals do not change when other runs are added.
  - Differences are experiment minus reference: the minority penalty is under-sampled - balanced (negative =
    the under-sampled model is worse), the gain is model - bicubic, quantization is quantized - fp32.
  - Nothing is dropped silently: every file or experiment left out is reported with its path and the reason.

Modules: runs (find, read and check run folders; group experiments), comparisons (per-race rows, bootstrap
intervals, paired tests against references), plots (PNG dot plots), report (markdown/CSV/PNG and summarize).
"""
from racecomp.tables.report import summarize

__all__ = ["summarize"]
