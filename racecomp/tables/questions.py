"""The questions the studies ask, answered from the runs found: contrasts between experiments (racecomp.contrasts
linear_contrast and summary_change), the dose-response of under-sampling, and how many seeds would detect an
effect of a given size. Compute only: racecomp.tables.findings writes them.

Which contrasts are formed follows from the runs: two experiments of one family that differ in exactly one
axis (every identifying column but study, seed and the under-sampling columns; wbits and abits together as
`bits`; `recipe` is an axis too, so experiments differing in hidden settings are not taken for a one-axis
pair) give
  - difference in differences (both under-sampled the same race at the same weight, each with its balanced
    run): (A under - A balanced) - (B under - B balanced) per race, the under-sampled race first;
  - a main effect (both balanced): A - B per race;
  - the change of each fairness summary (Avg, worst, gap, STD; SER for accuracy; worst also relative): f(A)
    - f(B), and for quantization every quantized experiment against its fp32 reference.
Every contrast is paired per item (image, or RFW pair clustered by both identities) over the items all its
experiments evaluated; with >= 2 seeds in every trained experiment it is about the recipes (seed-to-seed
variance of each included; seeds paired when all have the same seed labels), with one seed about the trained
models only. Contrasts that could not be formed are listed with the reason.
"""
import math
from dataclasses import dataclass

import numpy as np

from racecomp import estimates
from racecomp.contrasts import SUMMARY_CHANGE_KEYS, linear_contrast, summary_change
from racecomp.planner import planning_seeds, seeds_for_power
from racecomp.schema import RACES
from racecomp.tables.answers import Answers, DoseCurve, DosePoint, Finding, Unanswerable, in_family
from racecomp.tables.comparisons import (ITEM_METRICS, PSNR_CAP_DB, items_of, find_reference, item_metrics,
                                         known_exactly, untrained)
from racecomp.tables.probes import probe_seed_values
from racecomp.tables.experiments import canonical, sort_key
from racecomp.tables.runs import Problems

DATA_COLUMNS = ("minority", "weight", "minority_mode")  # what was under-sampled, and how much
NOT_AXES = ("study",) + DATA_COLUMNS + ("wbits", "abits")
# Default --min-effect: the smallest effect worth detecting, per metric, in its reported units.
MIN_EFFECT = {"psnr_y": 0.1, "ssim_y": 0.002, "id_cos": 0.01, "accuracy": 1.0}
UNITS = {"psnr_y": "dB", "ssim_y": "", "id_cos": "", "accuracy": "pp"}
# Axis values that are the natural reference of a contrast (written second: "bn_stats - full").
BASELINES = ("none", "full", "frozen", "scratch", "real", "32", "W32A32", "pixelshuffle", "2")
POWER = 0.8  # the seed planner's target power, at the level claims are made (1 - ci)


# The note of a summary change whose worst (or best) race is not separated from the runner-up.
TIES_NOTE_BOUNDS = ("the worst/best race is not separated from the runner-up: the interval holds whichever race is "
                    "the extreme (bounds over every race), so it is wide")
TIES_NOTE_SER = ("the worst/best race is not separated from the runner-up: the SER interval treats it as known "
                 "(linearized), so it is optimistic")

# ---------------------------------------------------------------------------------------------------------
# Experiments as axes


def axes(experiment):
    """{axis: value}: the identifying columns a contrast may vary (bits = W<wbits>A<abits>)."""
    values = {c: str(v) for c, v in experiment.columns.items() if c not in NOT_AXES}
    if "wbits" in experiment.columns:
        values["bits"] = f"W{experiment.columns['wbits']}A{experiment.columns['abits']}"
    return values


def data_setting(experiment):
    """'balanced' or '<minority>@<weight>' (with the mode when not subsample)."""
    minority = experiment.columns.get("minority", "none")
    if canonical(minority) == "none":
        return "balanced"
    mode = experiment.columns.get("minority_mode", "")
    return f"{minority}@{experiment.columns.get('weight', '')}" + (f" ({mode})" if mode and mode != "subsample" else "")


def _differing_axes(a, b):
    """The axes in which two experiments of the same data setting differ (None for different data settings)."""
    if data_setting(a) != data_setting(b):
        return None
    mine, theirs = axes(a), axes(b)
    return [c for c in sorted(set(mine) | set(theirs)) if canonical(mine.get(c, "")) != canonical(theirs.get(c, ""))]


def _ordered(a, b, axis):
    """(A, B) with B the baseline value of the axis when one is (bn_stats - full), else in sort order."""
    value_a, value_b = axes(a)[axis], axes(b)[axis]
    if value_a in BASELINES and value_b not in BASELINES:
        return b, a
    if value_b in BASELINES and value_a not in BASELINES:
        return a, b
    return (a, b) if sort_key(value_a) <= sort_key(value_b) else (b, a)


def _shared_text(experiment, axis):
    shown = {c: v for c, v in axes(experiment).items() if c not in (axis, "recipe")}
    return ", ".join([f"data={data_setting(experiment)}"] + [f"{c}={v}" for c, v in shown.items()])


# ---------------------------------------------------------------------------------------------------------
# Cells: the experiments of one contrast on their shared items


@dataclass
class Cells:
    runs: list  # (k_j, N) per experiment
    races: np.ndarray
    clusters: object
    clusters2: object
    exact: list
    paired_seeds: bool
    statistic: str


def _cells(experiments, metric, problems):
    """The experiments' item matrices on the items all of them evaluated, or (None, reason)."""
    matrices = []
    for experiment in experiments:
        matrix = items_of(experiment, metric, problems, "contrasts")
        if matrix is None:
            return None, f"[{experiment.label()}] has no usable per-item {metric}"
        matrices.append(matrix)
    shared = set(matrices[0]["keys"]).intersection(*(m["keys"] for m in matrices[1:]))
    keys = [key for key in matrices[0]["keys"] if key in shared]
    if not keys:
        return None, "no item evaluated by all of them"
    runs, races = [], None
    for matrix in matrices:
        position = {key: i for i, key in enumerate(matrix["keys"])}
        index = [position[key] for key in keys]
        these = [matrix["races"][i] for i in index]
        if races is not None and these != races:
            return None, "items labelled with different races in different runs"
        races = these
        runs.append(np.minimum(matrix["values"][:, index], PSNR_CAP_DB))
    first = matrices[0]
    position = {key: i for i, key in enumerate(first["keys"])}
    index = [position[key] for key in keys]
    kind = experiments[0].kind
    clusters = np.array([first["clusters"][i] for i in index]) if kind == "verify" else None
    clusters2 = np.array([first["clusters2"][i] for i in index]) if kind == "verify" else None
    exact = [known_exactly(e, r) for e, r in zip(experiments, runs)]
    seeds = [[canonical(run.columns["seed"]) for run in e.runs] for e, flag in zip(experiments, exact) if not flag]
    paired = bool(seeds) and len(seeds[0]) >= 2 and all(s == seeds[0] for s in seeds)
    return Cells(runs, np.array(races), clusters, clusters2, exact, paired, ITEM_METRICS[kind][metric][1]), None


def _seeds_text(experiments, exact):
    """Seeds per experiment, 'exact' for one known exactly (no training, seeds identical)."""
    return "/".join("exact" if flag else str(len(e.runs)) for e, flag in zip(experiments, exact))


def _metrics(experiments):
    common = set(item_metrics(experiments[0])).intersection(*(item_metrics(e) for e in experiments[1:]))
    return [m for m in ITEM_METRICS[experiments[0].kind] if m in common]


def _planned(result, metric, min_effect, ci):
    """(seeds_needed, spread_seeds) of a recipe-level result: seeds per experiment for POWER against
    --min-effect at the level claims are made (1 - ci), and from how many seeds the spread was estimated;
    (None, 0) with one seed."""
    if result["level"] != "recipe":
        return None, 0
    return (seeds_for_power(result["planning"], min_effect[metric], POWER, 1.0 - ci),
            planning_seeds(result["planning"]))


# ---------------------------------------------------------------------------------------------------------
# The contrasts


def _race_contrasts(question, study, kind, metric, experiments, weights_of, label, setting, primary_race,
                    min_effect, problems, ci):
    """One finding per race of a linear contrast of per-race means (weights_of(column of race) -> weights)."""
    cells, reason = _cells(experiments, metric, problems)
    if cells is None:
        return [], reason
    labels = [race for race in RACES[experiments[0].kind] if race in set(cells.races)]
    rows = []
    for race in labels:
        members = cells.races == race
        weight = np.where(members, 1.0 / members.sum(), 0.0)
        result = linear_contrast(cells.runs, [c * weight for c in weights_of], cells.races, cells.clusters,
                                          cells.clusters2, cells.exact, cells.paired_seeds, cells.statistic, ci)
        seeds_needed, spread_seeds = _planned(result, metric, min_effect, ci)
        rows.append(Finding(question, study, kind, metric, race, race, label, setting, result["value"], result["lo"],
                            result["hi"], result["p_value"], math.nan, result["level"], _seeds_text(experiments, cells.exact),
                            result["df"], UNITS[metric], min_effect[metric], seeds_needed,
                            primary=race == primary_race, ci=ci, spread_seeds=spread_seeds))
    for row, p in zip(rows, estimates.holm([row.p_value for row in rows])):
        row.p_holm = float(p)
    rows.sort(key=lambda row: not row.primary)  # the under-sampled race first
    return rows, None


def _summary_contrasts(question, study, kind, metric, a, b, label, setting, min_effect, problems, ci, unanswerable):
    """One finding per fairness summary of f(A) - f(B); a summary with no value goes to `unanswerable`."""
    cells, reason = _cells([a, b], metric, problems)
    if cells is None:
        return [], reason
    if len(set(cells.races)) < 2:
        return [], "fewer than two races"
    keys = [k for k in SUMMARY_CHANGE_KEYS if k != "ser" or cells.statistic == "percent"]
    rows = []
    for key, relative in [(k, False) for k in keys] + [("worst", True)]:
        quantity = f"{key}, relative" if relative else key
        try:
            result = summary_change(cells.runs[0], cells.runs[1], cells.races, key, cells.clusters,
                                             cells.clusters2, cells.exact, cells.paired_seeds, cells.statistic,
                                             relative, ci)
        except ValueError as error:
            problems.add(a.runs[0].path, f"[{a.label()}] vs [{b.label()}] {metric}: no {key} change ({error})")
            unanswerable.append(Unanswerable(study, question, metric, label, setting, quantity,
                                             _why_undefined(key, label, cells, error)))
            continue
        ratio = key == "ser" or relative
        note = "" if not result["ties"] else TIES_NOTE_SER if key == "ser" else TIES_NOTE_BOUNDS
        # No seed plan for a summary change: its test (bounds over every race, the noise-corrected spread) is
        # not the linear contrast whose power seeds_for_power computes, so a plan would promise power it lacks.
        seeds_needed, spread_seeds = None, 0
        rows.append(Finding(question, study, kind, metric, "", quantity, label, setting, result["value"],
                            result["lo"], result["hi"], result["p_value"], math.nan, result["level"],
                            _seeds_text([a, b], cells.exact), result["df"], "" if ratio else UNITS[metric],
                            math.nan if ratio else min_effect[metric], seeds_needed, primary=key == "std",
                            note=note, a_value=result["a"], b_value=result["b"], ci=ci, spread_seeds=spread_seeds))
    for row, p in zip(rows, estimates.holm([row.p_value for row in rows])):
        row.p_holm = float(p)
    return rows, None


def _why_undefined(key, label, cells, error):
    """Why a summary change has no value, in words for findings.md."""
    if key != "ser":
        return str(error)
    perfect = [side for side, runs in zip(label.split(" - ", 1), cells.runs)
               if any(runs[:, cells.races == race].mean() == 1.0 for race in set(cells.races))]
    return (f"a race is at 100% accuracy with {' and with '.join(perfect)} (no errors to divide by), so the SER is "
            f"undefined there and its change cannot be estimated")


def answer(experiments, comparisons, problems=None, ci=0.95, min_effect=None):
    """Answers (findings, contrasts not formed, dose-response curves) of the experiments of one or more
    families. comparisons: reference_comparisons' results by experiment (the dose-response reuses the
    minority-penalty tests, so that its numbers are those of the Minority penalty table)."""
    problems = problems or Problems()
    min_effect = {**MIN_EFFECT, **(min_effect or {})}
    answers = Answers(ci=ci)
    families = {}
    for experiment in experiments:
        families.setdefault(experiment.family, []).append(experiment)
    for family, members in families.items():
        trained = [e for e in members if not untrained(e)]
        _pairs(family, trained, members, answers, problems, ci, min_effect)
        if family.startswith("quantize"):
            _versus_fp32(family, trained, members, answers, problems, ci, min_effect)
        answers.doses += dose_response(family, trained, comparisons)
    _family_holm(answers.findings)
    return answers


def _family_holm(findings):
    """Holm over the family of each question (per study and metric; see in_family): a sweep asks it of many pairs
    of experiments, and one row in twenty clears 5% by chance. Rows outside a family get family_size 0."""
    families = {}
    for finding in findings:
        if in_family(finding):
            families.setdefault((finding.study, finding.question, finding.metric), []).append(finding)
        else:
            finding.p_family, finding.family_size = math.nan, 0
    for members in families.values():
        for finding, p in zip(members, estimates.holm([m.p_value for m in members])):
            finding.p_family, finding.family_size = float(p), len(members)


def _pairs(family, trained, members, answers, problems, ci, min_effect):
    for i, first in enumerate(trained):
        for second in trained[i + 1:]:
            differing = _differing_axes(first, second)
            if differing and len(differing) == 2 and "recipe" in differing:
                other = [c for c in differing if c != "recipe"][0]
                answers.unformed.append((family, f"[{first.label()}] vs [{second.label()}]",
                                         f"they differ in {other} and also in other settings (recipe hash "
                                         f"{first.columns.get('recipe')} vs {second.columns.get('recipe')}: "
                                         f"tables.md's recipe legend lists them), so a difference could not be "
                                         f"put on {other}"))
            if not differing or len(differing) != 1:
                continue
            axis = differing[0]
            a, b = _ordered(first, second, axis)
            label = f"{axis}={axes(a)[axis]} - {axis}={axes(b)[axis]}"
            setting = _shared_text(a, axis)
            data = data_setting(a)
            metrics = _metrics([a, b])
            if data == "balanced":
                question = f"Does {axis} change the per-race values on balanced data?"
                for metric in metrics:
                    rows, reason = _race_contrasts(question, family, "main effect", metric, [a, b], (1.0, -1.0),
                                                   label, setting, None, min_effect, problems, ci)
                    _keep(answers, rows, reason, family, f"{label} ({setting}), {metric}")
            else:
                _did(family, axis, a, b, label, setting, members, answers, problems, ci, min_effect)
            _probe_contrasts(family, axis, a, b, label, setting, answers, ci)
            question = f"Does {axis} change the fairness across races?"
            for metric in metrics:
                rows, reason = _summary_contrasts(question, family, "summary change", metric, a, b, label, setting,
                                                  min_effect, problems, ci, answers.unanswerable)
                _keep(answers, rows, reason, family, f"{label} ({setting}), {metric}: summaries")


PROBE_CONTRASTS = ("probe_f1_worst", "probe_f1_gap", "bias_transfer_score")


def _probe_contrasts(family, axis, a, b, label, setting, answers, ci):
    """Probe results (one number per trained model) of A - B, over seeds: Welch t on the per-seed values (paired
    by seed label when both have the same seeds). The interval covers the seed-to-seed variation of the probe
    result (another training run), not the probe's sampling error on its evaluation images."""
    mine, theirs = probe_seed_values(a, by_seed=True), probe_seed_values(b, by_seed=True)
    question = f"Does {axis} change what the probes measure?"
    for metric in [m for m in PROBE_CONTRASTS if m in mine and m in theirs]:
        values_a, values_b = mine[metric], theirs[metric]
        if len(values_a) < 2 or len(values_b) < 2:
            answers.unformed.append((family, f"{label} ({setting}), {metric}",
                                     "a probe result varies with the training run: >= 2 seeds of each needed"))
            continue
        paired = sorted(values_a) == sorted(values_b)
        if paired:
            differences = np.array([values_a[s] - values_b[s] for s in values_a])
            var, df, units = float(np.var(differences, ddof=1)) / len(differences), len(differences) - 1.0, \
                (float(len(differences)),)
        else:
            arrays = [np.array(list(v.values())) for v in (values_a, values_b)]
            var, df = estimates.combine([(float(np.var(x, ddof=1)) / len(x), len(x) - 1.0) for x in arrays])
            units = tuple(float(len(x)) for x in arrays)
        value = float(np.mean(list(values_a.values())) - np.mean(list(values_b.values())))
        estimate = {"value": value, "var": var, "df": df if math.isfinite(df) else min(u - 1 for u in units),
                    "kind": "t", "bounds": None, "units": units}
        lo, hi = estimates.interval(estimate, ci)
        answers.findings.append(Finding(
            question, family, "probe", metric, "", metric, label, setting, value, lo, hi, estimates.p_value(estimate),
            math.nan, "recipe", f"{len(values_a)}/{len(values_b)}", estimate["df"], "", primary=True,
            note="interval over seeds: the probe's own sampling error on its images is not in it", ci=ci))


def _keep(answers, rows, reason, family, what):
    answers.findings += rows
    if reason:
        answers.unformed.append((family, what, reason))


def _did(family, axis, a, b, label, setting, members, answers, problems, ci, min_effect):
    quiet = Problems.quiet()
    balanced = [find_reference(e, members, "balanced", quiet) for e in (a, b)]
    what = f"penalty of {data_setting(a)}: {label} ({setting})"
    missing = [e for e, ref in zip((a, b), balanced) if ref is None]
    if missing:
        answers.unformed.append((family, what, "no balanced run (same settings, minority none) for "
                                               + "; ".join(f"[{e.label()}]" for e in missing)))
        return
    cells = [a, balanced[0], b, balanced[1]]
    question = f"Does the under-sampling penalty depend on {axis}?"
    for metric in _metrics(cells):
        rows, reason = _race_contrasts(question, family, "difference in differences", metric, cells,
                                       (1.0, -1.0, -1.0, 1.0), label, setting, _under_race(a), min_effect,
                                       problems, ci)
        _keep(answers, rows, reason, family, f"{what}, {metric}")
    if any(len(e.runs) < 2 for e in cells):
        answers.unformed.append((family, what, "recipe level needs >= 2 seeds in all four experiments: "
                                               "reported as a model difference"))


def _under_race(experiment):
    """The RACES label of the under-sampled race (minority is written as a slug)."""
    minority = str(experiment.columns.get("minority", "")).lower().replace("_", " ").replace("-", " ")
    for race in RACES[experiment.kind]:
        if race.lower().replace("_", " ").replace("-", " ") == minority:
            return race
    return None


def _versus_fp32(family, trained, members, answers, problems, ci, min_effect):
    quiet = Problems.quiet()
    for experiment in trained:
        if axes(experiment).get("bits") == "W32A32":
            continue
        reference = find_reference(experiment, members, "fp32", quiet)
        if reference is None:
            answers.unformed.append((family, f"[{experiment.label()}] vs fp32", "no fp32 run of the same model"))
            continue
        label = f"bits={axes(experiment)['bits']}, calib={experiment.columns.get('calib')} - fp32"
        setting = _shared_text(experiment, "bits")
        for metric in _metrics([experiment, reference]):
            rows, reason = _summary_contrasts("Does quantization change the fairness across races?", family,
                                              "vs fp32", metric, experiment, reference, label, setting, min_effect,
                                              problems, ci, answers.unanswerable)
            _keep(answers, rows, reason, family, f"{label} ({setting}), {metric}")


def dose_response(family, trained, comparisons):
    """Penalty on the under-sampled race against the weight, per line of other settings (balanced tests)."""
    lines = {}
    for experiment in trained:
        if data_setting(experiment) == "balanced":
            continue
        key = (tuple(sorted(axes(experiment).items())), experiment.columns.get("minority"),
               experiment.columns.get("minority_mode", ""))
        lines.setdefault(key, []).append(experiment)
    curves = []
    for (settings, minority, _), members in lines.items():
        race = _under_race(members[0])
        by_metric = {}
        for experiment in members:
            relation = comparisons.get(experiment, {}).get("balanced")
            if relation is None:
                continue
            for metric, result in relation["results"].items():
                entry = (result or {}).get("groups", {}).get(race)
                if entry is not None:
                    by_metric.setdefault(metric, []).append(DosePoint(
                        float(canonical(experiment.columns.get("weight", "nan"))), entry["mean_diff"], entry["lo"],
                        entry["hi"], entry["level"]))
        line = ", ".join(f"{c}={v}" for c, v in settings if c != "recipe")
        for metric, points in by_metric.items():
            points.sort(key=lambda point: -point.weight)
            curves.append(DoseCurve(family, metric, race, line, points, _onset(points)))
    return curves


def _onset(points):
    """The largest weight from which every smaller weight run has a penalty interval below 0 (hurt)."""
    onset = None
    for point in reversed(points):  # from the smallest weight up
        if point.hi < 0:
            onset = point.weight
        else:
            break
    return onset
