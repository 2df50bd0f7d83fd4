"""The markdown/CSV/PNG report: formatting, the four tables of each family, and `summarize`."""
import math
import os

import numpy as np

from racecomp import files
from racecomp.schema import FAMILIES, RACE_METRICS
from racecomp.tables.comparisons import (ITEM_METRICS, fairness_interval_rows, race_columns_row,
                                         reference_comparisons, seed_spread_rows, usable_for_items)
from racecomp.tables.plots import plot_intervals
from racecomp.tables.runs import Problems, canonical, find_run_folders, group_experiments, load_run, races_of

METRIC_NAMES = {"psnr_y": "PSNR-Y (dB)", "ssim_y": "SSIM-Y", "psnr_rgb": "PSNR-RGB (dB)", "ssim_rgb": "SSIM-RGB",
                "accuracy": "accuracy (%)"}
DECIMALS = {"psnr_y": 2, "ssim_y": 4, "psnr_rgb": 2, "ssim_rgb": 4, "accuracy": 2}


def _format(value, decimals):
    if value == "" or value is None:
        return ""
    if isinstance(value, (int, np.integer)):
        return str(value)
    return f"{value:.{decimals}f}"


def _interval_text(entry, decimals, value_key="value"):
    return (f"{_format(entry[value_key], decimals)} [{_format(entry['lo'], decimals)}, "
            f"{_format(entry['hi'], decimals)}]")


def _p_text(p):
    return f"{p:.4f}"


def _difference_text(entry, decimals):
    """'mean_diff [lo, hi] p=... (n=...)' of a paired_test entry."""
    return f"{_interval_text(entry, decimals, 'mean_diff')} p={_p_text(entry['p_value'])} (n={entry['n']})"


def _scope_text(entry):
    """What a paired_test entry's headline interval is about, with its seeds."""
    if entry["level"] != "recipe":
        return entry["scope"]
    paired = ", seeds paired" if entry["seeds_paired"] else ""
    return f"{entry['scope']}: {entry['n_seeds_a']} vs {entry['n_seeds_b']} seeds{paired}"


def _seed_sd_text(entry, decimals):
    """Seed-to-seed sd of each side's per-seed mean (and of the per-seed difference when seeds are paired)."""
    if entry["level"] != "recipe":
        return "(1 seed)"
    text = f"{_format(entry['seed_sd_a'], decimals)} / {_format(entry['seed_sd_b'], decimals)}"
    return text + (f" (difference {_format(entry['seed_sd_difference'], decimals)})" if entry["seeds_paired"] else "")


LEVEL_NOTE = ("level recipe (>= 2 seeds): the interval adds the seed-to-seed variance of the per-seed means to the "
              "item-level variance (t with the seeds' df, normal seed variation assumed): it is about the recipe, "
              "over training runs and items. level model (1 seed): item-level interval only: it is about the "
              "trained model at hand, over items like these, and says nothing about another training run.")


def _markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _varying_columns(experiments):
    """(columns whose values differ between the experiments, 'column=value' text of the constant ones)."""
    columns = [c for c in experiments[0].columns if c != "study"]
    for e in experiments[1:]:
        columns += [c for c in e.columns if c not in columns and c != "study"]
    varying = [c for c in columns if len({canonical(e.columns.get(c, "")) for e in experiments}) > 1]
    constant = ", ".join(f"{c}={experiments[0].columns.get(c, '')}" for c in columns if c not in varying)
    return varying, constant


def _row_label_cells(experiment, varying):
    return [experiment.columns.get(c, "") for c in varying] if varying else [experiment.label()]


class _Output:
    """Collects what summarize writes: CSVs, PNGs and markdown sections."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.written = []
        self.sections = []

    def csv(self, name, rows):
        if rows:
            fieldnames = []
            for row in rows:
                fieldnames += [key for key in row if key not in fieldnames]
            path = os.path.join(self.out_dir, name)
            files.write_csv(path, rows, fieldnames=fieldnames)
            self.written.append(path)

    def plot(self, name, *args, **kwargs):
        path = os.path.join(self.out_dir, name)
        plot_intervals(path, *args, **kwargs)
        self.written.append(path)

    def section(self, title, text):
        self.sections.append(f"## {title}\n\n{text}\n")


def _family_intro(constant, extra=""):
    common = f"Common to all rows: {constant}." if constant else ""
    return " ".join(part for part in (common, extra) if part)


def _table1(output, family, experiments):
    rows = [row for e in experiments for row in seed_spread_rows(e)]
    output.csv(f"table1_{family}.csv", rows)
    varying, constant = _varying_columns(experiments)
    metrics = RACE_METRICS[experiments[0].kind]
    header = (varying or ["experiment"]) + ["race", "n_seeds", "n_images"] + [
        f"{METRIC_NAMES[m]} {stat}" for m in metrics for stat in ("mean", "min", "max", "delta")]
    body = []
    for e in experiments:
        for row in seed_spread_rows(e):
            body.append(_row_label_cells(e, varying) + [row["race"], row["n_seeds"], row["n_images"]] + [
                _format(row[f"{m}_{stat}"], DECIMALS[m]) for m in metrics for stat in ("mean", "min", "max", "delta")])
    output.section(f"Table 1 ({family}): per-race quality over seeds",
                   _family_intro(constant, "Mean / min / max / delta (max - min) over seeds of each seed's per-race "
                                 "mean; n_images sums the race's images over seeds.") + "\n\n"
                   + _markdown_table(header, body))
    races = races_of(experiments)
    for metric in ("ssim_y", "psnr_y"):
        series = [(e.label(varying or None), {r["race"]: (r[f"{metric}_mean"], r[f"{metric}_min"], r[f"{metric}_max"])
                                             for r in seed_spread_rows(e)}) for e in experiments]
        output.plot(f"table1_{family}_{metric}.png", f"Table 1 ({family}): {METRIC_NAMES[metric]}, mean over seeds "
                    f"(whiskers: min-max over seeds)", METRIC_NAMES[metric], races, series, DECIMALS[metric])


def _table2(output, family, experiments, problems):
    races = races_of(experiments)
    metrics = ("accuracy",) if experiments[0].kind == "verify" else ("ssim_y", "psnr_y")
    varying, constant = _varying_columns(experiments)
    for metric in metrics:
        rows = [race_columns_row(e, metric, races, problems) for e in experiments]
        output.csv(f"table2_{family}_{metric}.csv", rows)
        names = ["Avg", "STD", "SER"] if metric == "accuracy" else ["Avg", "STD"]
        header = (varying or ["experiment"]) + ["n_seeds"] + races + names
        body = [_row_label_cells(e, varying) + [row["n_seeds"]]
                + [f"{_format(row[r], DECIMALS[metric])} (n={row[f'{r}_n']})" if row[r] != "" else "" for r in races]
                + [_format(row[name], DECIMALS[metric]) for name in names] for e, row in zip(experiments, rows)]
        output.section(f"Table 2 ({family}): {METRIC_NAMES[metric]} per race, mean over seeds",
                       _family_intro(constant, "Avg = mean over races, STD = sample std over races (ddof=1)"
                                     + (", SER = (100 - worst) / (100 - best)" if metric == "accuracy" else "")
                                     + ", all computed from the per-race means shown; n = items summed over "
                                       "seeds.") + "\n\n" + _markdown_table(header, body))
        if metric == "accuracy":
            series = []
            for e in experiments:
                spread = {}
                for race in races:
                    values = [run.per_race[race][metric] for run in e.runs if race in run.per_race]
                    if values:
                        spread[race] = (math.fsum(values) / len(values), min(values), max(values))
                series.append((e.label(varying or None), spread))
            output.plot(f"table2_{family}_{metric}.png", f"Table 2 ({family}): {METRIC_NAMES[metric]}, mean over "
                        f"seeds (whiskers: min-max over seeds)", METRIC_NAMES[metric], races, series, DECIMALS[metric])


def _table3(output, family, experiments, comparisons, n_boot, seed, ci, problems):
    usable = [e for e in experiments if usable_for_items(e, problems, "CI tables")]
    if not usable:
        return
    varying, constant = _varying_columns(experiments)
    races = races_of(experiments)
    level = f"{100 * ci:g}%"
    ci_rows, paired_rows = [], []
    for metric in ITEM_METRICS[experiments[0].kind]:
        decimals = DECIMALS[metric]
        results = {id(e): fairness_interval_rows(e, metric, n_boot, seed, ci, problems) for e in usable}
        summary_names = ["mean", "gap", "std", "ser"] if metric == "accuracy" else ["mean", "gap", "std"]
        body, series = [], []
        for e in usable:
            by_quantity = {row["quantity"]: row for row in results[id(e)]}
            ci_rows += results[id(e)]
            if not by_quantity:
                continue

            def cell(race):
                row = by_quantity[race]
                spread = f"; seed sd {_format(row['seed_sd'], decimals)}" if row["level"] == "recipe" else ""
                return f"{_interval_text(row, decimals)} (n={row['n']}{spread})"

            body.append(_row_label_cells(e, varying) + [e.pooled_columns()["n_seeds"], by_quantity["mean"]["level"]]
                        + [cell(r) if r in by_quantity else "" for r in races]
                        + [_interval_text(by_quantity[k], decimals) for k in summary_names]
                        + [_p_text(by_quantity["equal_means_p"]["value"])])
            series.append((e.label(varying or None), {r: (by_quantity[r]["value"], by_quantity[r]["lo"],
                                                          by_quantity[r]["hi"]) for r in races if r in by_quantity}))
        header = (varying or ["experiment"]) + ["n_seeds", "level"] + races + [
            s.upper() if s != "mean" else "Avg" for s in summary_names] + ["equal-means p"]
        output.section(f"Table 3 ({family}): {METRIC_NAMES[metric]} per race with {level} CIs",
                       _family_intro(constant, "Items evaluated by every seed; value [lo, hi] (n = items x seeds; "
                                     "seed sd = sd over seeds of the race mean). " + LEVEL_NOTE + " Per race: "
                                     + ("Wilson interval (effective size from the variance with pairs clustered by "
                                        "both identities)" if metric == "accuracy" else
                                        f"t interval joined with a bootstrap-t interval ({n_boot} replicates, seed "
                                        f"{seed})") + " at level model. GAP, STD" + (", SER" if metric == "accuracy"
                                                                                    else "")
                                     + " intervals are simultaneous over races (Bonferroni: at least "
                                     f"{level} coverage, conservative, valid near ties); GAP's lower end is 0 unless "
                                     "two races differ. equal-means p: Bonferroni over pairwise Welch t tests of "
                                     "'no race differs from another' (unequal variances allowed); it is below "
                                     f"{1 - ci:g} exactly when GAP's interval excludes 0. Pairwise race differences: "
                                     f"table3_ci_{family}.csv.") + "\n\n" + _markdown_table(header, body))
        if series:
            output.plot(f"table3_{family}_{metric}.png", f"Table 3 ({family}): {METRIC_NAMES[metric]} per race, "
                        f"{level} CI", METRIC_NAMES[metric], races, series, decimals)
        body, series = [], []
        for e in usable:
            for relation, reference in comparisons.get(id(e), {}).items():
                result = reference["results"].get(metric)
                if result is None:
                    continue
                base = {**e.columns, **e.pooled_columns(), "relation": relation,
                        "reference": reference["experiment"].label(), "metric": metric}
                for race in races + ["all"]:
                    entry = result["overall"] if race == "all" else result["groups"].get(race)
                    if entry is not None:
                        paired_rows.append({**base, "race": race, **entry})
                cells = [_difference_text(result["groups"][r], decimals) if r in result["groups"] else ""
                         for r in races]
                body.append(_row_label_cells(e, varying) + [relation, _scope_text(result["overall"])] + cells)
                series.append((f"{e.label(varying or None)} - {relation}",
                               {r: (g["mean_diff"], g["lo"], g["hi"]) for r, g in result["groups"].items()}))
        if body:
            output.section(f"Table 3 ({family}): {METRIC_NAMES[metric]}, experiment - reference, paired per item",
                           "References: bicubic = the bicubic run of the same scale; balanced = the same settings "
                           "with minority none; fp32 = the same task/model at wbits=abits=32, calib=none. Items "
                           "paired by file (images) or (race, line) (pairs, clustered by both identities); mean "
                           f"difference [{level} CI], p-value, n = paired items. With >= 2 seeds on both sides the "
                           "interval and p are at the recipe level (seed-to-seed variance included; seeds paired "
                           "by label when both sides have the same seeds); with 1 seed on either side they are a "
                           "model difference (1 seed; not a recipe effect). Item-level intervals, seed sds and "
                           f"Holm-adjusted p over races: table3_paired_{family}.csv.\n\n"
                           + _markdown_table((varying or ["experiment"]) + ["reference", "scope"] + races, body))
            output.plot(f"table3_paired_{family}_{metric}.png", f"Table 3 ({family}): {METRIC_NAMES[metric]}, "
                        f"experiment - reference, {level} CI", f"difference, {METRIC_NAMES[metric]}", races, series,
                        decimals, zero_line=True)
    output.csv(f"table3_ci_{family}.csv", ci_rows)
    output.csv(f"table3_paired_{family}.csv", paired_rows)


def _table4(output, family, experiments, comparisons, ci):
    """Under-sampled - balanced of every under-sampled run (a minority penalty when both sides have >= 2 seeds,
    else a model difference), and the gain over bicubic (upscale)."""
    varying, constant = _varying_columns(experiments)
    races = races_of(experiments)
    level = f"{100 * ci:g}%"
    for relation, title, column in (("balanced", "under-sampled - balanced (minority penalty)", "under_minus_balanced"),
                                    ("bicubic", "gain over bicubic, model - bicubic", "model_minus_bicubic")):
        rows = []
        for metric in ITEM_METRICS[experiments[0].kind]:
            decimals = DECIMALS[metric]
            body, series = [], []
            for e in experiments:
                comparison = comparisons.get(id(e), {}).get(relation)
                if comparison is None or comparison["results"].get(metric) is None:
                    continue
                groups = comparison["results"][metric]["groups"]
                minority = e.columns.get("minority", "none")
                # The under-sampled race's row first: it is the headline of a minority penalty.
                order = ([minority] if relation == "balanced" and minority in groups else []) + \
                    [r for r in races if r in groups and (relation != "balanced" or r != minority)]
                for race in order:
                    entry = groups[race]
                    headline = relation == "balanced" and race == minority
                    rows.append({**e.columns, **e.pooled_columns(), "reference": comparison["experiment"].label(),
                                 "metric": metric, "race": race, "headline": int(headline),
                                 column: entry["mean_diff"], "lo": entry["lo"], "hi": entry["hi"],
                                 "p_value": entry["p_value"], "p_holm": entry["p_holm"], "n": entry["n"],
                                 "level": entry["level"], "scope": entry["scope"], "df": entry["df"],
                                 "image_lo": entry["image_lo"], "image_hi": entry["image_hi"],
                                 "image_p_value": entry["image_p_value"], "n_seeds": entry["n_seeds_a"],
                                 "n_seeds_reference": entry["n_seeds_b"], "seeds_paired": int(entry["seeds_paired"]),
                                 "seed_sd": entry["seed_sd_a"], "seed_sd_reference": entry["seed_sd_b"],
                                 "seed_sd_difference": entry["seed_sd_difference"]})
                    name = f"{race} (under-sampled)" if headline else race
                    body.append(_row_label_cells(e, varying) + [
                        f"**{name}**" if headline else name, _interval_text(entry, decimals, "mean_diff"),
                        _p_text(entry["p_value"]), _p_text(entry["p_holm"]), _scope_text(entry),
                        f"[{_format(entry['image_lo'], decimals)}, {_format(entry['image_hi'], decimals)}]",
                        _seed_sd_text(entry, decimals), entry["n"]])
                series.append((e.label(varying or None),
                               {r: (g["mean_diff"], g["lo"], g["hi"]) for r, g in groups.items()}))
            if not body:
                continue
            header = (varying or ["experiment"]) + ["race", f"{column.replace('_', ' ')} [{level} CI]", "p",
                                                    "p (Holm, races)", "scope", f"item-level {level} CI",
                                                    "seed sd (experiment / reference)", "n"]
            output.section(f"Table 4 ({family}): {title}, {METRIC_NAMES[metric]}",
                           _family_intro(constant, "Paired per item (averaged over seeds); negative = the first "
                                         "model is worse on that race; n = paired items. A row is a recipe "
                                         "effect (e.g. a minority penalty) only when its scope is a recipe "
                                         "difference (>= 2 seeds on both sides: seed-to-seed variance "
                                         "included); with 1 seed on either side it is a model difference: "
                                         "another training run of the same recipe could differ as much. The "
                                         "item-level CI leaves the seed variance out. p (Holm, races) adjusts "
                                         "for the races of one row group; the under-sampled race's p is the "
                                         "pre-specified one.") + "\n\n"
                           + _markdown_table(header, body))
            name = "penalty" if relation == "balanced" else "gain_over_bicubic"
            output.plot(f"table4_{name}_{family}_{metric}.png", f"Table 4 ({family}): {title}, {METRIC_NAMES[metric]}, "
                        f"{level} CI", f"difference, {METRIC_NAMES[metric]}", races, series, decimals, zero_line=True)
        name = "minority_penalty" if relation == "balanced" else "gain_over_bicubic"
        output.csv(f"table4_{name}_{family}.csv", rows)


def summarize(patterns, out_dir, n_boot=1000, seed=0, ci=0.95):
    """Find the runs under `patterns`, write every table (CSV + tables.md) and plot (PNG) into `out_dir`.

    Returns {"written": [paths], "problems": [(path, message)], "experiments": count}; nothing is written
    when no usable run is found (written is then empty).
    """
    problems = Problems()
    runs = [run for run in (load_run(folder, problems) for folder in find_run_folders(patterns, problems)) if run]
    experiments = group_experiments(runs, problems)
    output = _Output(out_dir)
    if not experiments:
        return {"written": [], "problems": problems.entries, "experiments": 0}
    for family in FAMILIES:
        members = [e for e in experiments if e.family == family]
        if not members:
            continue
        comparisons = reference_comparisons(members, n_boot, seed, ci, problems)
        if members[0].kind == "upscale":
            _table1(output, family, members)
        _table2(output, family, members, problems)
        _table3(output, family, members, comparisons, n_boot, seed, ci, problems)
        if family in ("upscale", "verify"):
            _table4(output, family, members, comparisons, ci)
    listed = "\n".join(f"- `{path}`: {message}" for path, message in problems.entries) or "None."
    text = ("# RaceComp per-race tables\n\n"
            f"{len(runs)} runs, {len(experiments)} experiments (seeds pooled). {100 * ci:g}% intervals "
            f"(racecomp.fairness): Student t on cluster-robust standard errors, with a bootstrap-t ({n_boot} "
            f"replicates, seed {seed}) for image means, Wilson for per-race accuracy; recipe level (seed-to-seed "
            f"variance included) with >= 2 seeds, model level with 1.\n\n" + "\n".join(output.sections)
            + f"\n## Problems\n\n{listed}\n")
    path = os.path.join(out_dir, "tables.md")
    files.write_bytes(path, text.encode("utf-8"))
    output.written.append(path)
    return {"written": output.written, "problems": problems.entries, "experiments": len(experiments)}
