"""Per-race tables a paper can print, from finished run folders: seeds pooled per experiment, per-race intervals,
fairness gaps with simultaneous intervals, paired model-vs-reference tests, minority penalties; markdown, CSV, a
LaTeX table per block and metric (latex) and matplotlib figures as PNG (at most plots.MAX_WIDTH_PX wide: a
larger plot is split into parts) and PDF.

A run folder is finished when it holds per_race.csv (the files and their columns: racecomp.schema). Its rows
start with the run's identifying columns (every column before `race`: study, the settings, seed,
code_version); an experiment is every identifying column but seed and code_version, so the seeds of one
experiment are pooled. Runs are sorted into families, each with its own columns and tables: upscale, verify,
quantize-upscale and quantize-verify (quantize runs by `task`).

Conventions used by every table:
  - n beside a value counts items pooled over seeds: an image (or pair) evaluated by two seeds counts twice.
  - Per-item statistics use per_image.csv (PSNR-Y in dB, SSIM-Y in [0, 1]) or per_pair.csv (`correct`, 0/1,
    reported as percent; `id1` and `id2` needed). An infinite per-image PSNR (an image reproduced exactly) is
    capped at comparisons.PSNR_CAP_DB for the intervals and paired tests only, and each capped count is reported
    as a problem. They use the items every seed of the experiment evaluated (others are reported), laid out
    seeds x items (racecomp.fairness).
  - Level: with >= 2 seeds an interval is about the recipe (seed-to-seed variance included); with 1 seed it is
    about the trained model only, and a comparison says "model difference (1 seed; not a recipe effect)".
    Seeds of two experiments are paired when both have the same seed labels.
  - Dependence: an image is one item (its seeds averaged); a pair is dependent on every pair that shares either
    of its identities (two-way clustering by id1 and id2). The bootstrap-t part of image intervals is seeded
    with --seed, so an experiment's intervals do not change when other runs are added.
  - Differences are experiment minus reference: the minority penalty is under-sampled - balanced (negative =
    the under-sampled model is worse), the gain is model - bicubic, quantization is quantized - fp32.
  - Nothing is dropped silently: every file or experiment left out is reported with its path and the reason.

  - Optional metrics (schema.OPTIONAL_RACE_METRICS: id_cos of upscaling runs with --identity-model) are
    tabulated like the others for the experiments whose every seed has them; SER is for accuracy only (a ratio
    of error rates; 1 - id_cos is not one). id_cos is compared only between runs of the same recognition model
    (schema.IDENTITY_MODEL_ARGS in args.json): the gain over bicubic uses the bicubic run with the same
    --identity-model, which is also the preferred bicubic reference of PSNR/SSIM (the same there either way).
  - Probes (run_verify --probe gender / --bias-probe: probe_gender.csv, bias_probe.csv and the Bias Transfer
    Score in args.json) are optional: a run without them is fine, a malformed file is reported. Each probe
    result is one number per seed; its table gives the mean over seeds and a t interval over the seed values.

The studies' questions (findings.md, findings.csv): contrasts between experiments that differ in one axis
(difference in differences, main effects, changes of a fairness summary), the dose-response of under-sampling
and the seeds needed to detect --min-effect; `answers(paths)` returns them as data for a notebook cell.

Modules, load: runs (find and read run folders into Runs), run_files (their CSV files parsed and checked),
experiments (Experiment: runs pooled over seeds, built once; results are keyed by it). Analyse: comparisons
(per-race rows, intervals, paired tests against references), questions (contrasts between experiments,
dose-response, seed planning), probes (probe results per seed and over seeds). Render: sections (tables.md's
sections with their CSVs and figures), markdown (markdown tables and their label columns), findings
(findings.md / .csv and their figures), formatting (how numbers are written), latex (booktabs tables), plots
(interval, forest and dose-response figures), output (the --out folder and its manifest). report: the pipeline
(summarize, answers).
"""
from racecomp.tables.findings import sentence
from racecomp.tables.report import answers, summarize

__all__ = ["answers", "sentence", "summarize"]
