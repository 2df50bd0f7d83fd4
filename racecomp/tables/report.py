"""The pipeline: `summarize` and `answers`. Run folders are read (tables.runs) and pooled into experiments
(tables.experiments), compared with their references (tables.comparisons) and with each other (tables.questions),
then rendered into one --out folder (tables.output): tables.md with its CSVs, figures and LaTeX tables by blocks
(tables.sections), findings.md / findings.csv (tables.findings). METHODS is the one statement of the methods.
"""
from dataclasses import dataclass

from racecomp import cpus
from racecomp.schema import FAMILIES
from racecomp.tables import findings, questions, sections
from racecomp.tables.comparisons import reference_comparisons
from racecomp.tables.experiments import canonical, group_experiments, sort_key
from racecomp.tables.formatting import code_span, markdown_text
from racecomp.tables.output import Output
from racecomp.tables.runs import Problems, find_run_folders, load_runs

FAMILY_TITLES = {"upscale": "upscaling", "verify": "verification", "quantize-upscale": "quantized upscaling",
                 "quantize-verify": "quantized verification"}


# The methods, said once (tables.md's Methods section); each table names the paragraphs it follows.
METHODS = {
    "levels": "Level recipe (>= 2 seeds): the interval adds the seed-to-seed variance of the per-seed means to the "
              "item-level variance (crossed form: the item-by-seed noise counted once; t with the seeds' df, k - 1 "
              "even when seed means tie; normal seed variation assumed): it is about the recipe, over training runs "
              "and items. Level model (1 seed): item-level interval only: it is about the trained model at hand, "
              "over items like these, and says nothing about another training run.",
    "per-race": "Per race, level model: images: Student t on the standard error of the mean joined with a "
                "bootstrap-t interval (>= 15 images; --n-boot replicates, seeded with --seed); RFW pairs: Wilson "
                "interval with the effective size from the variance with pairs clustered by both identities (two-way "
                "CR1, df = effective identities - 1). n = items x seeds; seed sd = sd over seeds of the race mean.",
    "fairness": "Avg = mean over races, Gap = best - worst, STD = spread of the population race means (the sample "
                "std over races, ddof 1, less the sampling noise of the race means: sqrt(max(0, s^2 - mean variance "
                "of a race mean)); the per-race table's STD keeps the noise), SER = (100 - worst) / (100 - best) of "
                "accuracy (ratio <= 1 and SER >= 1 by definition). Gap, STD and SER intervals are "
                "simultaneous over races (Bonferroni: at least the nominal coverage, conservative, valid near ties); "
                "Gap's lower end is 0 unless two races differ. equal-means p: Bonferroni over pairwise Welch t tests "
                "of 'no race differs from another' (unequal variances allowed); it is below 1 - ci exactly when Gap's "
                "interval excludes 0.",
    "paired": "Experiment - reference, paired per item (file for images; (race, line) for pairs, clustered by both "
              "identities), averaged over seeds; negative = the experiment is worse on that race; n = paired items. "
              "A row is a recipe effect (e.g. a minority penalty) only when its scope is a recipe difference (>= 2 "
              "seeds on both sides, or against an untrained reference known exactly, the bicubic floor or fp32 in "
              "the quantization study: seed-to-seed variance included); with 1 seed on a trained side it is a model "
              "difference: another training run of the same recipe could differ as much. The item-level CI leaves "
              "the seed variance out. p (Holm, races) adjusts over the races of one experiment; the under-sampled "
              "race's p is the pre-specified one.",
    "contrasts": "findings.md / findings.csv: contrasts between experiments that differ in one axis, paired per "
                 "item over the items all of them evaluated: difference in differences (A under - A balanced) - "
                 "(B under - B balanced), main effects A - B on balanced data, and changes of a fairness summary "
                 "f(A) - f(B) by the delta method (worst, gap and SER linearized at the observed worst and best "
                 "races; flagged when those are not separated). Each experiment's seed variance is added at the "
                 "recipe level (Welch-Satterthwaite df; seeds paired when all experiments share their seed labels), "
                 "t intervals (no bootstrap). Holm over the races (or summaries) of one contrast (p_holm), and over "
                 "the family of each question (p_family): its pre-specified rows in all contrasts asking it (the "
                 "under-sampled race, the STD, the probe result), or for main effects every race of every contrast; "
                 "a detected row that does not survive it, or lies outside it, is called exploratory. A null result "
                 "says whether its interval excludes --min-effect; the seed planner finds the seeds per experiment at "
                 "which the same test has 80% power against --min-effect at level 1 - ci, from the seed-to-seed "
                 "spread estimated from the seeds run (uncertain with 2-3 seeds). One-seed contrasts are worded as "
                 "differences between the trained models. Dose-response: the minority penalties of the table above "
                 "by weight; the onset is the largest weight whose penalty interval, and every smaller weight's, lies "
                 "below 0, and every weight whose own interval lies below 0 is named.",
}


@dataclass
class Block:
    """Experiments reported together: one family, and for upscaling one scale."""
    name: str  # in file names: "upscale-x2"
    title: str  # in table names: "upscaling x2"
    experiments: list


def blocks_of(experiments):
    """Blocks of the experiments in family order, then by scale (compared by value: '2' is '2.0')."""
    grouped = {}
    for e in experiments:
        scale = e.columns.get("scale")
        grouped.setdefault((e.family, None if scale is None else canonical(scale)), []).append(e)
    blocks = []
    for (family, scale), members in sorted(grouped.items(), key=lambda item: (FAMILIES.index(item[0][0]),
                                                                               sort_key(str(item[0][1])))):
        factor = None if scale is None else f"x{scale:g}" if isinstance(scale, float) else f"x{scale}"
        blocks.append(Block(f"{family}-{factor}" if factor else family,
                            f"{FAMILY_TITLES[family]} {factor}" if factor else FAMILY_TITLES[family], members))
    return blocks


def _load(patterns, problems):
    runs = load_runs(find_run_folders(patterns, problems), problems)
    return runs, group_experiments(runs, problems)


def answers(patterns, n_boot=1000, seed=0, ci=0.95, workers=1, min_effect=None):
    """(tables.answers.Answers of findings.md, problems [(path, message)]), nothing written. For a notebook
    cell: `for f in answers(["runs/"])[0].findings: print(sentence(f))`."""
    problems = Problems()
    _, experiments = _load(patterns, problems)
    comparisons = {}
    for block in blocks_of(experiments):
        comparisons.update(reference_comparisons(block.experiments, n_boot, seed, ci, problems, workers))
    return questions.answer(experiments, comparisons, problems, ci, min_effect), problems.entries


def summarize(patterns, out_dir, n_boot=1000, seed=0, ci=0.95, workers=None, min_effect=None, figures=True):
    """Write every table (CSV, tables.md, LaTeX), findings.md / findings.csv and (unless `figures` is False)
    every figure (PNG and PDF) of the runs under `patterns` into `out_dir`, which then holds exactly this run's
    files (tables.output; a folder with other files is refused with ValueError before any work).

    `workers`: processes for the paired tests and figures (default: the available cores; the numbers do not
    depend on it); `min_effect`: {metric: smallest effect worth detecting} (questions.MIN_EFFECT). Returns
    {"written": [paths], "problems": [(path, message)], "experiments": count}; with no usable run nothing is
    written and the folder is left as it was.
    """
    workers = workers or cpus.available_cores()
    output = Output(out_dir, draw_figures=figures, workers=workers)
    try:
        result = _summarize(output, patterns, n_boot, seed, ci, workers, min_effect)
    except BaseException:
        output.close(complete=False)  # the figures still rendering; INCOMPLETE.txt stays
        raise
    output.close()
    return result


def _summarize(output, patterns, n_boot, seed, ci, workers, min_effect):
    problems = Problems()
    runs, experiments = _load(patterns, problems)
    if not experiments:
        return {"written": [], "problems": problems.entries, "experiments": 0}
    blocks, every_comparison = blocks_of(experiments), {}
    for block in blocks:  # each block's tests, then its tables: the problems listed in that order
        comparisons = reference_comparisons(block.experiments, n_boot, seed, ci, problems, workers)
        every_comparison.update(comparisons)
        if block.experiments[0].kind == "upscale":
            sections.seeds_table(output, block)
        sections.means_tables(output, block, problems)
        if block.experiments[0].family == "verify":
            sections.restored_table(output, block, problems)
        sections.interval_tables(output, block, n_boot, seed, ci, problems)
        sections.relation_tables(output, block, comparisons, ci)
        sections.probe_table(output, block, ci, problems)
    sections.legend(output, blocks, problems)
    findings.write(output, questions.answer(experiments, every_comparison, problems, ci, min_effect))
    listed = "\n".join(f"- `{code_span(path)}`: {markdown_text(message)}" for path, message in problems.entries)
    contents = "\n".join(f"- {title}" for title, _ in output.sections)
    output.text("tables.md", "# RaceComp per-race tables\n\n"
                f"{len(runs)} runs, {len(experiments)} experiments (seeds pooled). {100 * ci:g}% intervals "
                f"(racecomp.fairness): Student t on cluster-robust standard errors, with a bootstrap-t ({n_boot} "
                f"replicates, seed {seed}) for image means, Wilson for per-race accuracy; recipe level (seed-to-seed "
                f"variance included) with >= 2 seeds, model level with 1. Numbers have 3 significant digits (of the "
                f"largest number of a cell); 'n=1, no CI' marks a value with no interval to show. Full precision: "
                f"the CSVs. Answers to the studies' questions: findings.md.\n\n## Contents\n\n{contents}\n- Methods\n\n"
                + "\n".join(text for _, text in output.sections) + "\n## Methods\n\n"
                + "\n\n".join(f"**{name}**: {text}" for name, text in METHODS.items())
                + f"\n\n## Problems\n\n{listed or 'None.'}\n")
    return {"written": output.written, "problems": problems.entries, "experiments": len(experiments)}
