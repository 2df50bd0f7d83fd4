"""The sections of tables.md, each with its CSV, figures (and LaTeX table) for one block of experiments; a table
is named after what it holds and its block, and names the paragraphs of report.METHODS it follows."""
import math

from racecomp.schema import RECIPE_COLUMN, RESTORE_COLUMNS
from racecomp.tables.comparisons import fairness_interval_rows, race_columns_row, seed_spread_rows
from racecomp.tables.run_files import ITEM_METRICS, item_metrics, usable_for_items
from racecomp.tables.experiments import canonical, differing_settings, races_of
from racecomp.tables.formatting import (format_number, interval_text, latex_cell, latex_escape, markdown_table,
                                        markdown_text, p_text, shared_decimals)
from racecomp.tables.probes import probe_rows

MAX_COLUMNS = 10  # the widest markdown table: what a paper's page holds
# Display order and names; id_cos sits next to PSNR-Y and SSIM-Y.
METRIC_NAMES = {"psnr_y": "PSNR-Y (dB)", "ssim_y": "SSIM-Y", "id_cos": "id_cos", "psnr_rgb": "PSNR-RGB (dB)",
                "ssim_rgb": "SSIM-RGB", "accuracy": "accuracy (%)"}
SUMMARY_NAMES = {"mean": "Avg", "gap": "Gap", "std": "STD", "ser": "SER"}
SEED_PLOT_METRICS = ("psnr_y", "ssim_y", "id_cos")
# relation -> (title, file stem, CSV column of the difference, what the reference is)
RELATIONS = {
    "balanced": ("Minority penalty (under-sampled - balanced)", "minority_penalty", "under_minus_balanced",
                 "the same settings with minority none"),
    "bicubic": ("Gain over bicubic (model - bicubic)", "gain_over_bicubic", "model_minus_bicubic",
                "the bicubic run of the same scale (for id_cos: with the same --identity-model)"),
    "fp32": ("Quantized - fp32", "quantized_minus_fp32", "quantized_minus_fp32",
             "the same task and model at wbits=abits=32, calib=none"),
    "hr": ("Restored - original faces (restored - HR)", "restored_minus_hr", "restored_minus_hr",
           "the same recognition model on the original RFW faces (no --restore)"),
}
PAIRED_COLUMNS = ("lo", "hi", "p_value", "p_holm", "n", "level", "scope", "df", "image_lo", "image_hi",
                  "image_p_value")  # paired_test entry keys copied as they are into the relation CSVs
SER_TEXT = ", SER = (100 - worst) / (100 - best)"
SUMMARY_NOTE = ("Avg = mean over races, STD = sample std over races (ddof=1){ser}, all computed from the per-race "
                "means shown (as in the papers: the STD holds the means' sampling noise; the Fairness table's STD "
                "removes it); n = items summed over seeds.")
METHODS_NOTE = "Methods: {} (see the Methods section)."  # the paragraphs of report.METHODS a table follows
LATEX_HEAD = (r"\providecommand{\raceci}[3]{\begin{tabular}[t]{@{}r@{}}$#1$\\ {\scriptsize[$#2$, $#3$]}"
              r"\end{tabular}}", r"\begin{table}[t]", r"\centering", r"\small", r"\setlength{\tabcolsep}{4pt}")


def varying_columns(experiments, exclude=()):
    """(columns whose values differ between the experiments, 'column=value' text of the constant ones)."""
    columns = list(dict.fromkeys(c for e in experiments for c in e.columns if c != "study" and c not in exclude))
    varying = [c for c in columns if len({canonical(e.columns.get(c, "")) for e in experiments}) > 1]
    return varying, ", ".join(f"{c}={experiments[0].columns.get(c, '')}" for c in columns if c not in varying)


def label_layout(experiments, other_columns, exclude=()):
    """(header, experiment -> cells, constant text) of the columns that tell the experiments apart: one each
    when they fit in MAX_COLUMNS beside `other_columns`, else one joined "experiment" column; then `warnings`
    when any experiment failed a sanity check (a broken model's rows are marked in every table)."""
    varying, constant = varying_columns(experiments, exclude)
    warned = any(e.warnings for e in experiments)
    joined = len(varying) + other_columns + warned > MAX_COLUMNS
    header = (["experiment"] if joined else varying) if varying else []

    def cells(e):
        shown = [", ".join(f"{c}={e.columns.get(c, '-')}" for c in varying)] if joined else \
            [e.columns.get(c, "-") for c in varying]
        return (shown if varying else []) + ([", ".join(e.warnings)] if warned else [])
    return header + (["warnings"] if warned else []), cells, constant


def _table(output, title, note, header, rows, exclude=()):
    """A tables.md section: the settings common to all rows, `note`, then the table of rows [(experiment,
    cells)], each row led by the columns that tell its experiment apart."""
    label_header, label_cells, constant = label_layout(list(dict.fromkeys(e for e, _ in rows)), len(header), exclude)
    intro = " ".join(filter(None, [f"Common to all rows: {markdown_text(constant)}." if constant else "", note]))
    output.section(title, intro + "\n\n" + markdown_table(label_header + header,
                                                          [label_cells(e) + cells for e, cells in rows]))


def _plot(output, name, title, value_label, races, values, zero_line=False):
    """The interval plot of values {experiment: {race: (value, lo, hi)}}, experiments labelled as in the table."""
    shown = varying_columns(list(values))[0] or None
    output.plot(name, title, value_label, races, [(e.label(shown), v) for e, v in values.items()], zero_line=zero_line)


def _seed_spread_plot(output, name, metric, block, spreads):
    """Per race the mean over seeds with min-max whiskers; spreads: {experiment: seed_spread_rows}."""
    def spread(r):  # one seed: no whisker
        return (r[f"{metric}_min"], r[f"{metric}_max"]) if r["n_seeds"] > 1 else (math.nan, math.nan)
    values = {e: {r["race"]: (r[f"{metric}_mean"], *spread(r)) for r in rows if f"{metric}_mean" in r}
              for e, rows in spreads.items()}
    _plot(output, name, f"{METRIC_NAMES[metric]} per race, mean over seeds (whiskers: min-max over seeds), "
          f"{block.title}", METRIC_NAMES[metric], races_of(block.experiments), values)


def _metrics_of(experiments, metrics_of):
    """The metrics any experiment has (metrics_of(e)), in display order."""
    present = {metric for e in experiments for metric in metrics_of(e)}
    return [metric for metric in METRIC_NAMES if metric in present]


def seeds_table(output, block):
    """Per-race mean [min, max] over seeds of every metric (upscaling kinds), races as rows."""
    spreads = {e: seed_spread_rows(e) for e in block.experiments}
    output.csv(f"seeds_{block.name}.csv", [row for rows in spreads.values() for row in rows])
    metrics = _metrics_of(block.experiments, lambda e: e.race_metrics())

    def cell(row, m):
        return interval_text(row[f"{m}_mean"], row[f"{m}_min"], row[f"{m}_max"], row["n_seeds"], "no seed range") \
            if f"{m}_mean" in row else ""
    _table(output, f"Per-race quality over seeds, {block.title}", "Each cell: mean [min, max] over seeds of each "
           "seed's per-race mean; images sums the race's images over seeds; a metric some runs lack is blank.",
           ["race", "seeds", "images"] + [METRIC_NAMES[m] for m in metrics],
           [(e, [row["race"], row["n_seeds"], row["n_images"]] + [cell(row, m) for m in metrics])
            for e, rows in spreads.items() for row in rows])
    for metric in [m for m in SEED_PLOT_METRICS if m in metrics]:
        _seed_spread_plot(output, f"seeds_{block.name}_{metric}.png", metric, block, spreads)


def _summaries(metric, *keys):
    """`keys` of the across-race summaries, and the SER for accuracy (a ratio of error rates)."""
    return list(keys) + (["ser"] if metric == "accuracy" else [])


def _means_cells(row, races, metric):
    """Per race 'mean (n=...)', then Avg, STD (and SER) of a comparisons.race_columns_row."""
    return ([f"{format_number(row[r])} (n={row[f'{r}_n']})" if row[r] != "" else "" for r in races]
            + [format_number(row[SUMMARY_NAMES[k]]) for k in _summaries(metric, "mean", "std")])


def means_tables(output, block, problems):
    """Per metric with per-item values (the RGB ones are in the seeds table): one row per experiment, per race
    the mean over seeds, then Avg, STD (and SER)."""
    races = races_of(block.experiments)
    for metric in _metrics_of(block.experiments, lambda e: [m for m in e.race_metrics() if m in ITEM_METRICS[e.kind]]):
        rows = {e: race_columns_row(e, metric, races, problems) for e in block.experiments
                if metric in e.race_metrics()}
        output.csv(f"means_{block.name}_{metric}.csv", list(rows.values()))
        _table(output, f"Per-race {METRIC_NAMES[metric]}, mean over seeds, {block.title}",
               SUMMARY_NOTE.format(ser=SER_TEXT if metric == "accuracy" else ""),
               races + [SUMMARY_NAMES[k] for k in _summaries(metric, "mean", "std")],
               [(e, _means_cells(row, races, metric)) for e, row in rows.items()])
        if metric == "accuracy":
            _seed_spread_plot(output, f"means_{block.name}_{metric}.png", metric, block,
                              {e: seed_spread_rows(e) for e in rows})


def _faces_text(experiment):
    """What the faces of a verification run were: HR (original) or LR + the restoration."""
    restore, model = experiment.columns.get("restore"), experiment.columns.get("restore_model", "none")
    return "HR" if restore is None else f"LR + {restore}" + ("" if model == "none" else f" (upscaler {model})")


def restored_table(output, block, problems):
    """Per recognition model, accuracy per race on the original faces and on each restoration, side by side."""
    by_model = {}
    for e in block.experiments:
        by_model.setdefault(tuple((c, canonical(v)) for c, v in e.columns.items() if c not in RESTORE_COLUMNS),
                            []).append(e)
    members = [e for group in by_model.values() if any("restore" in e.columns for e in group) for e in
               sorted(group, key=lambda e: ("restore" in e.columns, not _faces_text(e).startswith("LR + bicubic"),
                                            _faces_text(e)))]
    if not members:
        return
    races = races_of(block.experiments)
    rows = {e: race_columns_row(e, "accuracy", races, problems) for e in members}
    output.csv(f"restored_{block.name}.csv", [{"faces": _faces_text(e), **row} for e, row in rows.items()])
    _table(output, f"Verification on restored faces, {METRIC_NAMES['accuracy']} per race, {block.title}",
           "One recognition model scored on the original RFW faces (HR) and on the same faces degraded to 1/N of "
           "their size and restored (LR + bicubic-xN, LR + an upscaler run: run_verify.py --restore; upscaler ids "
           "in the legend). " + SUMMARY_NOTE.format(ser=SER_TEXT) + " Paired differences: the 'Restored - original "
           "faces' tables.", ["faces"] + races + ["Avg", "STD", "SER"],
           [(e, [_faces_text(e)] + _means_cells(row, races, "accuracy")) for e, row in rows.items()],
           exclude=RESTORE_COLUMNS)


def interval_tables(output, block, n_boot, seed, ci, problems):
    """Per metric: per-race intervals, and the across-race summary with simultaneous intervals (plus its LaTeX
    table); every row in ci_<block>.csv."""
    usable = [e for e in block.experiments if usable_for_items(e, problems, "CI tables")]
    races, level, csv_rows = races_of(block.experiments), f"{100 * ci:g}%", []
    for metric in _metrics_of(usable, item_metrics):
        results = {}  # experiment -> {quantity: row}
        for e in [e for e in usable if metric in item_metrics(e)]:
            rows = fairness_interval_rows(e, metric, n_boot, seed, ci, problems)
            csv_rows += rows
            if rows:
                results[e] = {row["quantity"]: row for row in rows}
        if not results:
            continue
        name = METRIC_NAMES[metric]
        summaries = _summaries(metric, "mean", "gap", "std")

        def lead(e):
            return [e.pooled_columns()["n_seeds"], results[e]["mean"]["level"]]

        def race_cell(row):
            spread = f"; seed sd {format_number(row['seed_sd'])}" if row["level"] == "recipe" else ""
            return interval_text(row["value"], row["lo"], row["hi"], row["n_items"], note=f"n={row['n']}{spread}")
        _table(output, f"Per-race {name} with {level} CIs, {block.title}", f"Items evaluated by every seed; value "
               f"[lo, hi]. {METHODS_NOTE.format('levels, per-race')} Pairwise race differences: ci_{block.name}.csv.",
               ["seeds", "level"] + races,
               [(e, lead(e) + [race_cell(by[r]) if r in by else "" for r in races]) for e, by in results.items()])
        _plot(output, f"ci_{block.name}_{metric}.png", f"{name} per race, {level} CI, {block.title}", name, races,
              {e: {r: (by[r]["value"], by[r]["lo"], by[r]["hi"]) for r in races if r in by}
               for e, by in results.items()})
        _table(output, f"Fairness of {name} across races with {level} CIs, {block.title}",
               METHODS_NOTE.format("fairness, levels"),
               ["seeds", "level"] + [SUMMARY_NAMES[k] for k in summaries] + ["equal-means p"],
               [(e, lead(e) + [interval_text(by[k]["value"], by[k]["lo"], by[k]["hi"], by[k]["n_items"])
                               for k in summaries] + [p_text(by["equal_means_p"]["value"])])
                for e, by in results.items()])
        _latex_table(output, block, metric, results, races, level)
    output.csv(f"ci_{block.name}.csv", csv_rows)


def _latex_table(output, block, metric, results, races, level):
    r"""table_<block>_<metric>.tex, the layout of the quantization paper's Table I: one row per experiment, per race
    then Avg, STD (and SER) the value over its interval (\raceci, defined on top) of ci_<block>.csv. The file needs
    \usepackage{booktabs} and nothing else."""
    summaries = _summaries(metric, "mean", "std")
    label_header, label_cells, constant = label_layout(list(results), 1 + len(races) + len(summaries))
    caption = (f"{METRIC_NAMES[metric]} per race with {level} intervals, {block.title}"
               + (f" ({constant})" if constant else "") + ". Rows with two or more seeds: recipe level (seed-to-seed "
               "variance included); one seed: the trained model only. Avg = mean over races, STD = std over races"
               + (SER_TEXT if metric == "accuracy" else "") + "; simultaneous intervals.")
    header = [latex_escape(h) for h in label_header + ["Seeds"] + races] + [SUMMARY_NAMES[s] for s in summaries]
    lines = [f"% RaceComp (summarize.py): {len(results)} experiments. Needs \\usepackage{{booktabs}}; wider than a "
             "column of a two-column paper: \\begin{table*} or \\resizebox (graphicx).", *LATEX_HEAD,
             rf"\caption{{{latex_escape(caption)}}}", rf"\label{{tab:racecomp-{block.name}-{metric}}}",
             rf"\begin{{tabular}}{{{'l' * len(label_header) + 'r' * (len(header) - len(label_header))}}}",
             r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    for e, by in results.items():
        numbers = [latex_cell(q["value"], q["lo"], q["hi"], q["n_items"]) if q else ""
                   for q in (by.get(key) for key in races + summaries)]
        lines.append(" & ".join([latex_escape(c) for c in label_cells(e)] + [str(e.pooled_columns()["n_seeds"])]
                                + numbers) + r" \\")
    output.text(f"table_{block.name}_{metric}.tex", "\n".join(lines + [r"\bottomrule", r"\end{tabular}",
                                                                       r"\end{table}"]) + "\n")


def scope_text(entry):
    """What a paired_test entry's headline interval is about, with its seeds."""
    if entry["level"] != "recipe":
        return entry["scope"]
    if entry["reference_exact"]:
        return f"{entry['scope']}: {entry['n_seeds_a']} seeds vs an untrained reference (known exactly)"
    return f"{entry['scope']}: {entry['n_seeds_a']} vs {entry['n_seeds_b']} seeds" + \
        (", seeds paired" if entry["seeds_paired"] else "")


def seed_sd_text(entry):
    """Seed-to-seed sd of each side's per-seed mean (and of the per-seed difference when seeds are paired)."""
    if entry["level"] != "recipe":
        return "(1 seed)"
    reference = "exact" if entry["reference_exact"] else format_number(entry["seed_sd_b"])
    return f"{format_number(entry['seed_sd_a'])} / {reference}" + \
        (f" (difference {format_number(entry['seed_sd_difference'])})" if entry["seeds_paired"] else "")


def relation_tables(output, block, comparisons, ci):
    """Per relation and metric: experiment - reference per race (the under-sampled race first), paired per
    item; one CSV per relation."""
    races, level = races_of(block.experiments), f"{100 * ci:g}%"
    for relation, (title, stem, column, reference_text) in RELATIONS.items():
        compared = [e for e in block.experiments if relation in comparisons.get(e, {})]
        csv_rows = []
        for metric in _metrics_of(compared, lambda e: comparisons[e][relation]["results"]):
            members = [e for e in compared if comparisons[e][relation]["results"].get(metric)]
            if not members:
                continue
            rows, values = [], {}
            for e in members:
                groups = comparisons[e][relation]["results"][metric]["groups"]
                minority = e.columns.get("minority", "none")
                headline = minority if relation == "balanced" and minority in groups else None
                for race in ([headline] if headline else []) + [r for r in races if r in groups and r != headline]:
                    entry = groups[race]
                    csv_rows.append({
                        **e.columns, **e.pooled_columns(), "reference": comparisons[e][relation]["experiment"].label(),
                        "metric": metric, "race": race, "headline": int(race == headline), column: entry["mean_diff"],
                        **{k: entry[k] for k in PAIRED_COLUMNS}, "n_seeds": entry["n_seeds_a"],
                        "n_seeds_reference": entry["n_seeds_b"], "seeds_paired": int(entry["seeds_paired"]),
                        "seed_sd": entry["seed_sd_a"], "seed_sd_reference": entry["seed_sd_b"],
                        "seed_sd_difference": entry["seed_sd_difference"]})
                    rows.append((e, [f"**{race} (under-sampled)**" if race == headline else race,
                                     interval_text(entry["mean_diff"], entry["lo"], entry["hi"], entry["n"]),
                                     p_text(entry["p_value"]), p_text(entry["p_holm"]), scope_text(entry),
                                     "[{}, {}]".format(*shared_decimals(entry["image_lo"], entry["image_hi"])),
                                     seed_sd_text(entry), entry["n"]]))
                values[e] = {r: (g["mean_diff"], g["lo"], g["hi"]) for r, g in groups.items()}
            name = METRIC_NAMES[metric]
            _table(output, f"{title}, {name}, {block.title}", f"Reference: {reference_text} ({stem}_{block.name}.csv "
                   f"names it). " + METHODS_NOTE.format("paired, levels"),
                   ["race", f"difference [{level} CI]", "p", "p (Holm, races)", "scope", f"item-level {level} CI",
                    "seed sd (experiment / reference)", "n"], rows)
            _plot(output, f"{stem}_{block.name}_{metric}.png", f"{title}, {name}, {level} CI, {block.title}",
                  f"difference, {name}", races, values, zero_line=True)
        output.csv(f"{stem}_{block.name}.csv", csv_rows)


def _setting_text(value):
    return "unset" if value is None else " ".join(map(str, value)) if isinstance(value, list) else str(value)


def legend(output, blocks, problems):
    """What each recipe hash shown stands for (the settings that differ between the recipes of a block, from
    args.json), and which upscaler run each restore_model id is."""
    csv_rows, body = [], []
    for block in blocks:
        by_recipe = {}
        for e in [e for e in block.experiments if RECIPE_COLUMN in e.columns]:
            by_recipe.setdefault(e.columns[RECIPE_COLUMN], []).extend(e.runs)
        settings, unknown = differing_settings(by_recipe, skip={c for e in block.experiments for c in e.columns})
        for recipe, runs in by_recipe.items():
            if recipe in unknown:
                problems.add(runs[0].path, f"recipe {recipe}: no args.json in its runs; its settings are not in "
                                           f"the recipe legend")
            text = "(no args.json)" if recipe in unknown else \
                ", ".join(f"{k}={_setting_text(v)}" for k, v in settings[recipe].items()) or \
                ("(the only recipe)" if len(by_recipe) == 1 else "(no recorded difference)")
            csv_rows.append({"block": block.name, "recipe": recipe, "runs": len(runs),
                             **{k: _setting_text(v) for k, v in settings.get(recipe, {}).items()}})
            body.append([block.title, recipe, len(runs), text])
    upscalers = {}  # restore_model -> the upscaler run's columns (args.json "restore" of run_verify --restore)
    for e in [e for block in blocks for e in block.experiments if e.columns.get("restore_model", "none") != "none"]:
        if not upscalers.get(e.columns["restore_model"]):
            upscalers[e.columns["restore_model"]] = next(filter(None, [(run.record or {}).get("restore", {}).get(
                "upscaler") for run in e.runs]), None)
    parts = []
    if body:
        output.csv("recipes.csv", csv_rows)
        parts.append("recipe: a hash of every result-changing argument that is not an identifying column (racecomp."
                     "schema.recipe_id). Shown: the arguments (args.json) that differ between the recipes of a block; "
                     "arguments that never change a result, and those that differ between runs of one recipe, are "
                     "left out.\n\n" + markdown_table(["block", "recipe", "runs", "settings that differ"], body))
    if upscalers:
        output.csv("restore_models.csv", [{"restore_model": model, **(upscaler or {})}
                                          for model, upscaler in upscalers.items()])
        parts.append("restore_model: the upscaler run that restored the faces (its identifying columns and seed).\n\n"
                     + markdown_table(["restore_model", "upscaler run"], [
                         [model, ", ".join(f"{k}={v}" for k, v in upscaler.items() if k != "study") if upscaler
                          else "(no args.json)"] for model, upscaler in upscalers.items()]))
    if parts:
        output.section("Legend: recipe hashes and upscaler ids", "\n\n".join(parts))


def probe_table(output, block, ci, problems):
    """Per experiment with probe results (tables.probes): each quantity's mean over seeds with a t interval over
    the seeds."""
    rows = {e: probe_rows(e, ci, problems) for e in block.experiments}
    rows = {e: r for e, r in rows.items() if r}
    if not rows:
        return
    output.csv(f"probes_{block.name}.csv", [row for r in rows.values() for row in r])
    level = f"{100 * ci:g}%"
    _table(output, f"Gender probe and Bias Transfer Score over seeds, {block.title}",
           f"Probes of each trained backbone on FairFace val: the gender probe (run_verify.py --probe gender; "
           f"F1 of Female as a fraction, on each race's images; worst race = the lowest per-race F1 and gap = "
           f"highest - lowest, both computed per seed) and the Bias Transfer Score (--bias-probe; Spearman "
           f"correlation in [-1, 1] of the association scores before vs after training, from each run's "
           f"args.json). Each cell: mean over seeds [{level} t interval over the seed values, t with k - 1 df "
           f"for k seeds, clipped to the value's range]. The interval covers the seed-to-seed variation of the "
           f"probe result, i.e. the recipe (another training run), not the probe's sampling error on these "
           f"images; with one seed no interval is given. seed sd = sample sd over seeds. Per-seed values: "
           f"racecomp.tables.probes.probe_seed_values.",
           ["quantity", "seeds", f"mean [{level} CI over seeds]", "seed sd"],
           [(e, [row["quantity"], row["n_seeds"], interval_text(
               row["mean"], math.nan if row["lo"] == "" else row["lo"], math.nan if row["hi"] == "" else row["hi"],
               row["n_seeds"], "no interval"), format_number(row["seed_sd"])]) for e, r in rows.items() for row in r])
