"""The sections of tables.md, each with its CSVs and figures, for one block of experiments:
  - Per-race quality over seeds (upscaling kinds): mean [min, max] over seeds of every metric, races as rows.
  - Per-race <metric>, mean over seeds: races as columns, Avg, STD (and SER for accuracy).
  - Verification on restored faces: HR, LR + bicubic and LR + model side by side per recognition model.
  - Per-race <metric> with CIs, and Fairness of <metric> across races (Avg, Gap, STD, SER, equal-means p).
  - One table per comparison with a reference: minority penalty, gain over bicubic, quantized - fp32,
    restored - HR faces, races as rows.
  - The probes over seeds (run_verify --probe gender, --bias-probe).
And, over every block, the recipe legend: what each recipe hash (and restore_model id) stands for.
Each table is named after what it holds and its block, never numbered.
"""
import math

from racecomp.schema import RECIPE_COLUMN, RESTORE_COLUMNS
from racecomp.tables import latex
from racecomp.tables.comparisons import (ITEM_METRICS, fairness_interval_rows, item_metrics, race_columns_row,
                                         seed_spread_rows, usable_for_items)
from racecomp.tables.experiments import canonical, differing_settings, races_of
from racecomp.tables.formatting import format_number, interval_text, p_text
from racecomp.tables.markdown import (bounds_text, intro, label_layout, markdown_table, methods_note, scope_text,
                                      seed_sd_text, varying_columns)
from racecomp.tables.probes import probe_rows


# Display order and names; id_cos sits next to PSNR-Y and SSIM-Y.
METRIC_NAMES = {"psnr_y": "PSNR-Y (dB)", "ssim_y": "SSIM-Y", "id_cos": "id_cos", "psnr_rgb": "PSNR-RGB (dB)",
                "ssim_rgb": "SSIM-RGB", "accuracy": "accuracy (%)"}


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


SUMMARY_NOTE = ("Avg = mean over races, STD = sample std over races (ddof=1){ser}, all computed from the per-race "
                "means shown (as in the papers: the STD holds the means' sampling noise; the Fairness table's STD "
                "removes it); n = items summed over seeds.")


def _metrics_of(experiments, metrics_of):
    """The metrics any experiment has (metrics_of(e)), in display order."""
    present = {metric for e in experiments for metric in metrics_of(e)}
    return [metric for metric in METRIC_NAMES if metric in present]


def seeds_table(output, block):
    """Per-race mean [min, max] over seeds of every metric (upscaling kinds), races as rows."""
    experiments = block.experiments
    rows = {e: seed_spread_rows(e) for e in experiments}
    output.csv(f"seeds_{block.name}.csv", [row for e in experiments for row in rows[e]])
    metrics = _metrics_of(experiments, lambda e: e.race_metrics())
    label_header, label_cells, constant = label_layout(experiments, 3 + len(metrics))
    body = [label_cells(e) + [row["race"], row["n_seeds"], row["n_images"]]
            + [interval_text(row[f"{m}_mean"], row[f"{m}_min"], row[f"{m}_max"], row["n_seeds"], "no seed range")
               if f"{m}_mean" in row else "" for m in metrics]
            for e in experiments for row in rows[e]]
    title = f"Per-race quality over seeds, {block.title}"
    output.section(title, intro(constant, "Each cell: mean [min, max] over seeds of each seed's per-race mean; "
                                           "images sums the race's images over seeds; a metric some runs lack is "
                                           "blank.") + "\n\n"
                   + markdown_table(label_header + ["race", "seeds", "images"] + [METRIC_NAMES[m] for m in metrics],
                                     body))
    races = races_of(experiments)
    for metric in [m for m in SEED_PLOT_METRICS if m in metrics]:
        series = [(e.label(varying_columns(experiments)[0] or None),
                   {r["race"]: (r[f"{metric}_mean"],) + ((r[f"{metric}_min"], r[f"{metric}_max"]) if r["n_seeds"] > 1
                                                         else (math.nan, math.nan))
                    for r in rows[e] if f"{metric}_mean" in r}) for e in experiments]
        output.plot(f"seeds_{block.name}_{metric}.png", f"{METRIC_NAMES[metric]} per race, mean over seeds "
                    f"(whiskers: min-max over seeds), {block.title}", METRIC_NAMES[metric], races, series)


def _means_row_cells(row, races, summary_names):
    return ([f"{format_number(row[r])} (n={row[f'{r}_n']})" if row[r] != "" else "" for r in races]
            + [format_number(row[name]) for name in summary_names])


def _summary_names(metric):
    return ["Avg", "STD", "SER"] if metric == "accuracy" else ["Avg", "STD"]


def means_tables(output, block, problems):
    """Per metric with per-item values (the RGB ones are in the seeds table): one row per experiment, per race
    the mean over seeds, then Avg, STD (and SER)."""
    races = races_of(block.experiments)
    for metric in _metrics_of(block.experiments, lambda e: [m for m in e.race_metrics() if m in ITEM_METRICS[e.kind]]):
        members = [e for e in block.experiments if metric in e.race_metrics()]
        rows = [race_columns_row(e, metric, races, problems) for e in members]
        output.csv(f"means_{block.name}_{metric}.csv", rows)
        names = _summary_names(metric)
        label_header, label_cells, constant = label_layout(members, len(races) + len(names))
        body = [label_cells(e) + _means_row_cells(row, races, names) for e, row in zip(members, rows)]
        ser = ", SER = (100 - worst) / (100 - best)" if metric == "accuracy" else ""
        output.section(f"Per-race {METRIC_NAMES[metric]}, mean over seeds, {block.title}",
                       intro(constant, SUMMARY_NOTE.format(ser=ser)) + "\n\n"
                       + markdown_table(label_header + races + names, body))
        if metric == "accuracy":
            series = []
            for e in members:
                spread = {}
                for race in races:
                    values = [run.per_race[race][metric] for run in e.runs if race in run.per_race]
                    if values:
                        bounds = (min(values), max(values)) if len(values) > 1 else (math.nan, math.nan)
                        spread[race] = (math.fsum(values) / len(values),) + bounds
                series.append((e.label(varying_columns(members)[0] or None), spread))
            output.plot(f"means_{block.name}_{metric}.png", f"{METRIC_NAMES[metric]} per race, mean over seeds "
                        f"(whiskers: min-max over seeds), {block.title}", METRIC_NAMES[metric], races, series)


def _faces_text(experiment):
    """What the faces of a verification run were: HR (original) or LR + the restoration."""
    restore = experiment.columns.get("restore")
    if restore is None:
        return "HR"
    model = experiment.columns.get("restore_model", "none")
    return f"LR + {restore}" + ("" if model == "none" else f" (upscaler {model})")


def restored_table(output, block, problems):
    """Per recognition model, accuracy per race on the original faces and on each restoration, side by side."""
    by_model = {}
    for e in block.experiments:
        key = tuple((c, canonical(v)) for c, v in e.columns.items() if c not in RESTORE_COLUMNS)
        by_model.setdefault(key, []).append(e)
    groups = [sorted(members, key=lambda e: ("restore" in e.columns, not _faces_text(e).startswith("LR + bicubic"),
                                             _faces_text(e)))
              for members in by_model.values() if any("restore" in e.columns for e in members)]
    if not groups:
        return
    races = races_of(block.experiments)
    names = _summary_names("accuracy")
    label_header, label_cells, constant = label_layout([g[0] for g in groups], 1 + len(races) + len(names),
                                                        exclude=RESTORE_COLUMNS)
    rows, body = [], []
    for group in groups:
        for e in group:
            row = race_columns_row(e, "accuracy", races, problems)
            rows.append({"faces": _faces_text(e), **row})
            body.append(label_cells(e) + [_faces_text(e)] + _means_row_cells(row, races, names))
    output.csv(f"restored_{block.name}.csv", rows)
    output.section(f"Verification on restored faces, {METRIC_NAMES['accuracy']} per race, {block.title}",
                   intro(constant, "One recognition model scored on the original RFW faces (HR) and on the same "
                                    "faces degraded to 1/N of their size and restored (LR + bicubic-xN, LR + an "
                                    "upscaler run: run_verify.py --restore; upscaler ids in the legend). "
                                    + SUMMARY_NOTE.format(ser=", SER = (100 - worst) / (100 - best)")
                                    + " Paired differences: the 'Restored - original faces' tables.") + "\n\n"
                   + markdown_table(label_header + ["faces"] + races + names, body))


def interval_tables(output, block, n_boot, seed, ci, problems):
    """Per metric: per-race intervals, and the across-race summary with simultaneous intervals."""
    usable = [e for e in block.experiments if usable_for_items(e, problems, "CI tables")]
    races = races_of(block.experiments)
    level = f"{100 * ci:g}%"
    csv_rows = []
    for metric in _metrics_of(usable, item_metrics):
        results = {}
        for e in [e for e in usable if metric in item_metrics(e)]:
            rows = fairness_interval_rows(e, metric, n_boot, seed, ci, problems)
            csv_rows += rows
            if rows:
                results[e] = {row["quantity"]: row for row in rows}
        members = [e for e in usable if e in results]
        if not members:
            continue

        def race_cell(row):
            spread = f"; seed sd {format_number(row['seed_sd'])}" if row["level"] == "recipe" else ""
            return interval_text(row["value"], row["lo"], row["hi"], row["n_items"], note=f"n={row['n']}{spread}")

        label_header, label_cells, constant = label_layout(members, 2 + len(races))
        body = [label_cells(e) + [e.pooled_columns()["n_seeds"], results[e]["mean"]["level"]]
                + [race_cell(results[e][r]) if r in results[e] else "" for r in races] for e in members]
        output.section(f"Per-race {METRIC_NAMES[metric]} with {level} CIs, {block.title}",
                       intro(constant, f"Items evaluated by every seed; value [lo, hi]. {methods_note('levels', 'per-race')} "
                                        f"Pairwise race differences: ci_{block.name}.csv.") + "\n\n"
                       + markdown_table(label_header + ["seeds", "level"] + races, body))
        output.plot(f"ci_{block.name}_{metric}.png", f"{METRIC_NAMES[metric]} per race, {level} CI, {block.title}",
                    METRIC_NAMES[metric], races,
                    [(e.label(varying_columns(members)[0] or None),
                      {r: (results[e][r]["value"], results[e][r]["lo"], results[e][r]["hi"])
                       for r in races if r in results[e]}) for e in members])
        keys = ["mean", "gap", "std"] + (["ser"] if metric == "accuracy" else [])
        label_header, label_cells, constant = label_layout(members, 3 + len(keys))
        body = [label_cells(e) + [e.pooled_columns()["n_seeds"], results[e]["mean"]["level"]]
                + [interval_text(results[e][k]["value"], results[e][k]["lo"], results[e][k]["hi"],
                                 results[e][k]["n_items"]) for k in keys]
                + [p_text(results[e]["equal_means_p"]["value"])] for e in members]
        ser = " SER = (100 - worst) / (100 - best) of accuracy;" if metric == "accuracy" else ""
        output.section(f"Fairness of {METRIC_NAMES[metric]} across races with {level} CIs, {block.title}",
                       intro(constant, methods_note("fairness", "levels")) + "\n\n"
                       + markdown_table(label_header + ["seeds", "level", "Avg", "Gap", "STD"]
                                         + (["SER"] if ser else []) + ["equal-means p"], body))
        _latex_table(output, block, metric, members, results, races, level)
    output.csv(f"ci_{block.name}.csv", csv_rows)


def _latex_table(output, block, metric, members, results, races, level):
    """table_<block>_<metric>.tex: the per-race values, Avg, STD and SER (accuracy) of ci_<block>.csv with their
    intervals, one row per experiment (tables.latex)."""
    summaries = ["mean", "std"] + (["ser"] if metric == "accuracy" else [])
    label_header, label_cells, constant = label_layout(members, 1 + len(races) + len(summaries))
    caption = (f"{METRIC_NAMES[metric]} per race with {level} intervals, {block.title}"
               + (f" ({constant})" if constant else "") + ". Rows with two or more seeds: recipe level "
               "(seed-to-seed variance included); one seed: the trained model only. Avg = mean over races, STD = std over races"
               + (", SER = (100 - worst) / (100 - best)" if metric == "accuracy" else "") + "; simultaneous intervals.")
    output.text(f"table_{block.name}_{metric}.tex", latex.fairness_table(
        caption, f"tab:racecomp-{block.name}-{metric}", label_header,
        [(label_cells(e), e.pooled_columns()["n_seeds"], results[e]) for e in members], races, summaries))


def relation_tables(output, block, comparisons, ci):
    """Per relation and metric: experiment - reference per race (the under-sampled race first), paired per
    item; one CSV per relation."""
    races = races_of(block.experiments)
    level = f"{100 * ci:g}%"
    for relation, (title, stem, column, reference_text) in RELATIONS.items():
        compared = [e for e in block.experiments if relation in comparisons.get(e, {})]
        rows = []
        for metric in _metrics_of(compared, lambda e: comparisons[e][relation]["results"]):
            members = [e for e in compared if comparisons[e][relation]["results"].get(metric)]
            if not members:
                continue
            label_header, label_cells, constant = label_layout(members, 8)
            body, series = [], []
            for e in members:
                comparison = comparisons[e][relation]
                groups = comparison["results"][metric]["groups"]
                minority = e.columns.get("minority", "none")
                headline = minority if relation == "balanced" and minority in groups else None
                for race in ([headline] if headline else []) + [r for r in races if r in groups and r != headline]:
                    entry = groups[race]
                    rows.append({**e.columns, **e.pooled_columns(), "reference": comparison["experiment"].label(),
                                 "metric": metric, "race": race, "headline": int(race == headline),
                                 column: entry["mean_diff"], "lo": entry["lo"], "hi": entry["hi"],
                                 "p_value": entry["p_value"], "p_holm": entry["p_holm"], "n": entry["n"],
                                 "level": entry["level"], "scope": entry["scope"], "df": entry["df"],
                                 "image_lo": entry["image_lo"], "image_hi": entry["image_hi"],
                                 "image_p_value": entry["image_p_value"], "n_seeds": entry["n_seeds_a"],
                                 "n_seeds_reference": entry["n_seeds_b"], "seeds_paired": int(entry["seeds_paired"]),
                                 "seed_sd": entry["seed_sd_a"], "seed_sd_reference": entry["seed_sd_b"],
                                 "seed_sd_difference": entry["seed_sd_difference"]})
                    name = f"**{race} (under-sampled)**" if race == headline else race
                    body.append(label_cells(e) + [
                        name, interval_text(entry["mean_diff"], entry["lo"], entry["hi"], entry["n"]),
                        p_text(entry["p_value"]), p_text(entry["p_holm"]), scope_text(entry),
                        bounds_text(entry["image_lo"], entry["image_hi"]), seed_sd_text(entry), entry["n"]])
                series.append((e.label(varying_columns(members)[0] or None),
                               {r: (g["mean_diff"], g["lo"], g["hi"]) for r, g in groups.items()}))
            header = label_header + ["race", f"difference [{level} CI]", "p", "p (Holm, races)", "scope",
                                     f"item-level {level} CI", "seed sd (experiment / reference)", "n"]
            output.section(f"{title}, {METRIC_NAMES[metric]}, {block.title}",
                           intro(constant, f"Reference: {reference_text} ({stem}_{block.name}.csv names it). "
                                            + methods_note("paired", "levels"))
                           + "\n\n" + markdown_table(header, body))
            output.plot(f"{stem}_{block.name}_{metric}.png", f"{title}, {METRIC_NAMES[metric]}, {level} CI, "
                        f"{block.title}", f"difference, {METRIC_NAMES[metric]}", races, series, zero_line=True)
        output.csv(f"{stem}_{block.name}.csv", rows)


def _setting_text(value):
    if value is None:
        return "unset"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def legend(output, blocks, problems):
    """What each recipe hash shown stands for (the settings that differ between the recipes of a block, from
    args.json), and which upscaler run each restore_model id is."""
    csv_rows, body = [], []
    for block in blocks:
        by_recipe = {}
        for e in block.experiments:
            if RECIPE_COLUMN in e.columns:
                by_recipe.setdefault(e.columns[RECIPE_COLUMN], []).extend(e.runs)
        shown = {c for e in block.experiments for c in e.columns}
        settings, unknown = differing_settings(by_recipe, skip=shown)
        for recipe, runs in by_recipe.items():
            if recipe in unknown:
                problems.add(runs[0].path, f"recipe {recipe}: no args.json in its runs; its settings are not in "
                                           f"the recipe legend")
                text = "(no args.json)"
            else:
                text = ", ".join(f"{k}={_setting_text(v)}" for k, v in settings[recipe].items()) or \
                    ("(the only recipe)" if len(by_recipe) == 1 else "(no recorded difference)")
            csv_rows.append({"block": block.name, "recipe": recipe, "runs": len(runs),
                             **{k: _setting_text(v) for k, v in settings.get(recipe, {}).items()}})
            body.append([block.title, recipe, len(runs), text])
    upscalers = {}  # restore_model -> the upscaler run's columns (args.json "restore" of run_verify --restore)
    for e in [e for block in blocks for e in block.experiments if e.columns.get("restore_model", "none") != "none"]:
        recorded = [(run.record or {}).get("restore", {}).get("upscaler") for run in e.runs]
        if not upscalers.get(e.columns["restore_model"]):
            upscalers[e.columns["restore_model"]] = next((upscaler for upscaler in recorded if upscaler), None)
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
    """Per experiment with probe results: the gender probe's F1 per FairFace race, worst race and gap, and the
    Bias Transfer Score, each the mean over seeds with a t interval over the seeds (tables.probes)."""
    rows = {e: probe_rows(e, ci, problems) for e in block.experiments}
    members = [e for e in block.experiments if rows[e]]
    if not members:
        return
    output.csv(f"probes_{block.name}.csv", [row for e in members for row in rows[e]])
    level = f"{100 * ci:g}%"
    label_header, label_cells, constant = label_layout(members, 4)
    body = [label_cells(e) + [row["quantity"], row["n_seeds"],
                              interval_text(row["mean"], math.nan if row["lo"] == "" else row["lo"],
                                            math.nan if row["hi"] == "" else row["hi"], row["n_seeds"],
                                            "no interval"), format_number(row["seed_sd"])]
            for e in members for row in rows[e]]
    note = (f"Probes of each trained backbone on FairFace val: the gender probe (run_verify.py --probe gender; "
            f"F1 of Female as a fraction, on each race's images; worst race = the lowest per-race F1 and gap = "
            f"highest - lowest, both computed per seed) and the Bias Transfer Score (--bias-probe; Spearman "
            f"correlation in [-1, 1] of the association scores before vs after training, from each run's "
            f"args.json). Each cell: mean over seeds [{level} t interval over the seed values, t with k - 1 df "
            f"for k seeds, clipped to the value's range]. The interval covers the seed-to-seed variation of the "
            f"probe result, i.e. the recipe (another training run), not the probe's sampling error on these "
            f"images; with one seed no interval is given. seed sd = sample sd over seeds. Per-seed values: "
            f"racecomp.tables.probes.probe_seed_values.")
    output.section(f"Gender probe and Bias Transfer Score over seeds, {block.title}",
                   intro(constant, note) + "\n\n"
                   + markdown_table(label_header + ["quantity", "seeds", f"mean [{level} CI over seeds]",
                                                     "seed sd"], body))
