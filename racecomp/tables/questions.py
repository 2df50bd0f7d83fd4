"""The studies' questions answered from the experiments found (answer -> tables.answers.Answers): contrasts of
two experiments of a family that differ in one axis (racecomp.contrasts; difference in differences of their
under-sampling penalties, main effects on balanced data, changes of each fairness summary, probe results over
seeds), each quantized experiment against fp32, and the dose-response of under-sampling. Methods:
tables.report.METHODS["contrasts"]; tables.findings writes the answers."""
import collections
import math
from dataclasses import dataclass

import numpy as np

from racecomp import estimates
from racecomp.contrasts import SUMMARY_CHANGE_KEYS, linear_contrast, summary_change
from racecomp.planner import planning_seeds, seeds_for_power
from racecomp.schema import RACES
from racecomp.tables.answers import Answers, DoseCurve, DosePoint, Finding, Unanswerable
from racecomp.tables.comparisons import find_reference
from racecomp.tables.experiments import canonical, seeds_paired, sort_key, untrained
from racecomp.tables.run_files import ITEM_METRICS, cells_of, item_metrics, items_of
from racecomp.tables.probes import probe_seed_values
from racecomp.tables.runs import Problems

DATA_COLUMNS = ("minority", "weight", "minority_mode")  # what was under-sampled, and how much
NOT_AXES = ("study",) + DATA_COLUMNS + ("wbits", "abits")
# Default --min-effect: the smallest effect worth detecting, per metric, in its reported units.
MIN_EFFECT = {"psnr_y": 0.1, "ssim_y": 0.002, "id_cos": 0.01, "accuracy": 1.0}
UNITS = {"psnr_y": "dB", "ssim_y": "", "id_cos": "", "accuracy": "pp"}
# Axis values that are the natural reference of a contrast (written second: "bn_stats - full").
BASELINES = ("none", "full", "frozen", "scratch", "real", "32", "W32A32", "pixelshuffle", "2")
POWER = 0.8  # the seed planner's target power, at the level claims are made (1 - ci)
PROBE_CONTRASTS = ("probe_f1_worst", "probe_f1_gap", "bias_transfer_score")
# The note of a summary change whose worst (or best) race is not separated from the runner-up.
TIES_NOTE_BOUNDS = ("the worst/best race is not separated from the runner-up: the interval holds whichever race is "
                    "the extreme (bounds over every race), so it is wide")
TIES_NOTE_SER = ("the worst/best race is not separated from the runner-up: the SER interval treats it as known "
                 "(linearized), so it is optimistic")


def axes(experiment):
    """{axis: value}: the identifying columns a contrast may vary (recipe too: hidden settings), all but study and
    the under-sampling ones; wbits and abits as one, bits = W<wbits>A<abits>."""
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
    if (value_a in BASELINES) != (value_b in BASELINES):
        return (b, a) if value_a in BASELINES else (a, b)
    return (a, b) if sort_key(value_a) <= sort_key(value_b) else (b, a)


def _shared_text(experiment, axis):
    """What the experiments of a contrast along `axis` share: "data=..., <axis>=<value>, ..."."""
    shown = [f"{c}={v}" for c, v in axes(experiment).items() if c not in (axis, "recipe")]
    return ", ".join([f"data={data_setting(experiment)}"] + shown)


def _under_race(experiment):
    """The RACES label of the under-sampled race (minority is written as a slug)."""
    minority = str(experiment.columns.get("minority", "")).lower().replace("_", " ").replace("-", " ")
    return next((race for race in RACES[experiment.kind]
                 if race.lower().replace("_", " ").replace("-", " ") == minority), None)


def _metrics(experiments):
    """The item metrics every experiment has, in ITEM_METRICS order."""
    common = set(item_metrics(experiments[0])).intersection(*(item_metrics(e) for e in experiments[1:]))
    return [m for m in ITEM_METRICS[experiments[0].kind] if m in common]


class _NotFormed(Exception):
    """A contrast that cannot be formed; its message says why (Answers.unformed)."""


@dataclass
class _Asking:
    """What the contrasts of one answer() call add to, and the smallest effects worth detecting."""
    answers: Answers
    problems: Problems
    min_effect: dict

    def add(self, what, contrasts, about, *args):
        """The Findings of contrasts(self, about, *args), or why they could not be formed. about: the Finding
        fields that name the contrast (question, study, kind, contrast, setting)."""
        try:
            self.answers.findings += contrasts(self, about, *args)
        except _NotFormed as why:
            self.unformed(about["study"], what, str(why))

    def unformed(self, study, what, why):
        self.answers.unformed.append((study, what, why))


def _cells(experiments, metric, problems):
    """(cells_of the experiments, the options of racecomp.contrasts for them); _NotFormed when they have none."""
    matrices = []
    for experiment in experiments:
        matrices.append(items_of(experiment, metric, problems, "contrasts"))
        if matrices[-1] is None:
            raise _NotFormed(f"[{experiment.label()}] has no usable per-item {metric}")
    cells = cells_of(experiments, matrices, metric)
    if cells is None:
        raise _NotFormed("no item evaluated by all of them")
    if cells.clashing:
        raise _NotFormed("items labelled with different races in different runs")
    trained = [e for e, exact in zip(experiments, cells.exact) if not exact]
    return cells, {"clusters": cells.clusters, "clusters2": cells.clusters2, "exact": cells.exact,
                   "paired_seeds": seeds_paired(trained), "statistic": cells.statistic}


def _estimate(result):
    """The Finding fields of a racecomp.contrasts result."""
    return {"estimate": result["value"], "lo": result["lo"], "hi": result["hi"], "p_value": result["p_value"],
            "p_holm": math.nan, "scope": result["level"], "df": result["df"]}


def _seeds_text(experiments, exact):
    return "/".join("exact" if flag else str(len(e.runs)) for e, flag in zip(experiments, exact))


def _holm(rows):
    for row, p in zip(rows, estimates.holm([row.p_value for row in rows])):
        row.p_holm = float(p)


def _race_contrasts(asking, about, metric, experiments, weights, primary_race=None):
    """A Finding per race of sum_j weights[j] x (race mean of experiment j), the primary race first, each with
    the seeds per experiment that would detect --min-effect (recipe level only)."""
    cells, options = _cells(experiments, metric, asking.problems)
    ci, min_effect = asking.answers.ci, asking.min_effect[metric]
    rows = []
    for race in [race for race in RACES[experiments[0].kind] if race in set(cells.races)]:
        members = cells.races == race
        in_race = np.where(members, 1.0 / members.sum(), 0.0)
        result = linear_contrast(cells.runs, [w * in_race for w in weights], cells.races, **options, ci=ci)
        recipe = result["level"] == "recipe"
        rows.append(Finding(
            **about, metric=metric, race=race, quantity=race, **_estimate(result),
            n_seeds=_seeds_text(experiments, cells.exact), units=UNITS[metric], min_effect=min_effect,
            seeds_needed=seeds_for_power(result["planning"], min_effect, POWER, 1.0 - ci) if recipe else None,
            primary=race == primary_race, ci=ci, spread_seeds=planning_seeds(result["planning"]) if recipe else 0))
    _holm(rows)
    return sorted(rows, key=lambda row: not row.primary)


def _summary_contrasts(asking, about, metric, a, b):
    """A Finding per fairness summary of f(A) - f(B) (worst also relative); one with no value is Unanswerable."""
    cells, options = _cells([a, b], metric, asking.problems)
    if len(set(cells.races)) < 2:
        raise _NotFormed("fewer than two races")
    keys = [k for k in SUMMARY_CHANGE_KEYS if k != "ser" or cells.statistic == "percent"]
    rows = []
    for key, relative in [(k, False) for k in keys] + [("worst", True)]:
        quantity = f"{key}, relative" if relative else key
        try:
            result = summary_change(cells.runs[0], cells.runs[1], cells.races, key, **options, relative=relative,
                                    ci=asking.answers.ci)
        except ValueError as error:
            asking.problems.add(a.runs[0].path, f"[{a.label()}] vs [{b.label()}] {metric}: no {key} change ({error})")
            asking.answers.unanswerable.append(Unanswerable(
                about["study"], about["question"], metric, about["contrast"], about["setting"], quantity,
                _why_undefined(key, about["contrast"], cells, error)))
            continue
        ratio = key == "ser" or relative
        # No seed plan: a summary change's test (bounds over every race, the noise-corrected spread) is not the
        # linear contrast whose power seeds_for_power computes, so a plan would promise power it lacks.
        rows.append(Finding(
            **about, metric=metric, race="", quantity=quantity, **_estimate(result),
            n_seeds=_seeds_text([a, b], cells.exact), units="" if ratio else UNITS[metric],
            min_effect=math.nan if ratio else asking.min_effect[metric], primary=key == "std",
            note=(TIES_NOTE_SER if key == "ser" else TIES_NOTE_BOUNDS) if result["ties"] else "",
            a_value=result["a"], b_value=result["b"], ci=asking.answers.ci))
    _holm(rows)
    return rows


def _why_undefined(key, label, cells, error):
    """Why a summary change has no value, in words for findings.md."""
    if key != "ser":
        return str(error)
    perfect = [side for side, runs in zip(label.split(" - ", 1), cells.runs)
               if any(runs[:, cells.races == race].mean() == 1.0 for race in set(cells.races))]
    return (f"a race is at 100% accuracy with {' and with '.join(perfect)} (no errors to divide by), so the SER is "
            f"undefined there and its change cannot be estimated")


def _probe_contrasts(asking, about, metric, values_a, values_b):
    """A - B of a probe result from its {seed: value} on each side (one number per trained model): t on the
    per-seed differences when both have the same seed labels, else Welch."""
    if len(values_a) < 2 or len(values_b) < 2:
        raise _NotFormed("a probe result varies with the training run: >= 2 seeds of each needed")
    if sorted(values_a) == sorted(values_b):
        differences = np.array([values_a[s] - values_b[s] for s in values_a])
        var, df = float(np.var(differences, ddof=1)) / len(differences), len(differences) - 1.0
        units = (float(len(differences)),)
    else:
        arrays = [np.array(list(v.values())) for v in (values_a, values_b)]
        var, df = estimates.combine([(float(np.var(x, ddof=1)) / len(x), len(x) - 1.0) for x in arrays])
        units = tuple(float(len(x)) for x in arrays)
    value = float(np.mean(list(values_a.values())) - np.mean(list(values_b.values())))
    estimate = {"value": value, "var": var, "df": df if math.isfinite(df) else min(u - 1 for u in units),
                "kind": "t", "bounds": None, "units": units}
    lo, hi = estimates.interval(estimate, asking.answers.ci)
    return [Finding(**about, metric=metric, race="", quantity=metric, estimate=value, lo=lo, hi=hi,
                    p_value=estimates.p_value(estimate), p_holm=math.nan, scope="recipe",
                    n_seeds=f"{len(values_a)}/{len(values_b)}", df=estimate["df"], units="", primary=True,
                    note="interval over seeds: the probe's own sampling error on its images is not in it",
                    ci=asking.answers.ci)]


def answer(experiments, comparisons, problems=None, ci=0.95, min_effect=None):
    """Answers of the experiments of one or more families, at level ci; min_effect: {metric: value} over
    MIN_EFFECT. comparisons: reference_comparisons' results, whose minority-penalty tests the dose-response
    reuses (its numbers are the Minority penalty table's)."""
    asking = _Asking(Answers(ci=ci), problems or Problems(), {**MIN_EFFECT, **(min_effect or {})})
    families = {}
    for experiment in experiments:
        families.setdefault(experiment.family, []).append(experiment)
    for family, members in families.items():
        trained = [e for e in members if not untrained(e)]
        _pairs(asking, family, trained, members)
        if family.startswith("quantize"):
            _versus_fp32(asking, family, trained, members)
        asking.answers.doses += dose_response(family, trained, comparisons)
    family_holm(asking.answers.findings)
    return asking.answers


def family_holm(findings):
    """p_family and family_size: Holm over the family of each question (study, question, metric), its
    pre-specified rows or, for main effects (none pre-specified), every race of every contrast; NaN and 0 for
    rows outside it. A sweep asks a question of many pairs: one row in twenty clears 5% by chance."""
    families = {}
    for finding in findings:
        if finding.primary or finding.kind == "main effect":
            families.setdefault((finding.study, finding.question, finding.metric), []).append(finding)
        else:
            finding.p_family, finding.family_size = math.nan, 0
    for members in families.values():
        for finding, p in zip(members, estimates.holm([m.p_value for m in members])):
            finding.p_family, finding.family_size = float(p), len(members)


def _pairs(asking, family, trained, members):
    """The contrasts of every two trained experiments of the family that differ in one axis."""
    for i, first in enumerate(trained):
        for second in trained[i + 1:]:
            differing = _differing_axes(first, second)
            if differing and len(differing) == 2 and "recipe" in differing:
                other = [c for c in differing if c != "recipe"][0]
                asking.unformed(family, f"[{first.label()}] vs [{second.label()}]",
                                f"they differ in {other} and also in other settings (recipe hash "
                                f"{first.columns.get('recipe')} vs {second.columns.get('recipe')}: tables.md's "
                                f"recipe legend lists them), so a difference could not be put on {other}")
            if not differing or len(differing) != 1:
                continue
            axis = differing[0]
            a, b = _ordered(first, second, axis)
            pair = {"study": family, "contrast": f"{axis}={axes(a)[axis]} - {axis}={axes(b)[axis]}",
                    "setting": _shared_text(a, axis)}
            named = f"{pair['contrast']} ({pair['setting']})"
            if data_setting(a) == "balanced":
                about = {**pair, "question": f"Does {axis} change the per-race values on balanced data?",
                         "kind": "main effect"}
                for metric in _metrics([a, b]):
                    asking.add(f"{named}, {metric}", _race_contrasts, about, metric, [a, b], (1.0, -1.0))
            else:
                _did(asking, pair, axis, a, b, members)
            mine, theirs = probe_seed_values(a), probe_seed_values(b)
            about = {**pair, "question": f"Does {axis} change what the probes measure?", "kind": "probe"}
            for metric in [m for m in PROBE_CONTRASTS if m in mine and m in theirs]:
                asking.add(f"{named}, {metric}", _probe_contrasts, about, metric, mine[metric], theirs[metric])
            about = {**pair, "question": f"Does {axis} change the fairness across races?", "kind": "summary change"}
            for metric in _metrics([a, b]):
                asking.add(f"{named}, {metric}: summaries", _summary_contrasts, about, metric, a, b)


def _did(asking, pair, axis, a, b, members):
    """The difference in differences (A under - A balanced) - (B under - B balanced) per race."""
    quiet = Problems.quiet()
    balanced = [find_reference(e, members, "balanced", quiet) for e in (a, b)]
    what = f"penalty of {data_setting(a)}: {pair['contrast']} ({pair['setting']})"
    missing = [e for e, reference in zip((a, b), balanced) if reference is None]
    if missing:
        asking.unformed(pair["study"], what, "no balanced run (same settings, minority none) for "
                        + "; ".join(f"[{e.label()}]" for e in missing))
        return
    cells = [a, balanced[0], b, balanced[1]]
    about = {**pair, "question": f"Does the under-sampling penalty depend on {axis}?",
             "kind": "difference in differences"}
    for metric in _metrics(cells):
        asking.add(f"{what}, {metric}", _race_contrasts, about, metric, cells, (1.0, -1.0, -1.0, 1.0), _under_race(a))
    if any(len(e.runs) < 2 for e in cells):
        asking.unformed(pair["study"], what, "recipe level needs >= 2 seeds in all four experiments: reported as a "
                                             "model difference")


def _versus_fp32(asking, family, trained, members):
    """The change of every fairness summary of each quantized experiment against its fp32 reference."""
    quiet = Problems.quiet()
    for experiment in [e for e in trained if axes(e).get("bits") != "W32A32"]:
        reference = find_reference(experiment, members, "fp32", quiet)
        if reference is None:
            asking.unformed(family, f"[{experiment.label()}] vs fp32", "no fp32 run of the same model")
            continue
        about = {"question": "Does quantization change the fairness across races?", "study": family, "kind": "vs fp32",
                 "contrast": f"bits={axes(experiment)['bits']}, calib={experiment.columns.get('calib')} - fp32",
                 "setting": _shared_text(experiment, "bits")}
        for metric in _metrics([experiment, reference]):
            asking.add(f"{about['contrast']} ({about['setting']}), {metric}", _summary_contrasts, about, metric,
                       experiment, reference)


def dose_response(family, trained, comparisons):
    """DoseCurves: the penalty on the under-sampled race (the balanced comparisons) against the weight, per line
    of other settings."""
    lines = {}
    for experiment in [e for e in trained if data_setting(e) != "balanced"]:
        key = (tuple(sorted(axes(experiment).items())), experiment.columns.get("minority"),
               experiment.columns.get("minority_mode", ""))
        lines.setdefault(key, []).append(experiment)
    base = {key: ", ".join(f"{c}={v}" for c, v in key[0] if c != "recipe") for key in lines}
    clashing = collections.Counter((key[1], label) for key, label in base.items())
    curves = []
    for (settings, minority, mode), members in lines.items():
        race = _under_race(members[0])
        by_metric = {}
        for experiment in members:
            relation = comparisons.get(experiment, {}).get("balanced")
            for metric, result in (relation["results"] if relation else {}).items():
                entry = (result or {}).get("groups", {}).get(race)
                if entry is not None:
                    by_metric.setdefault(metric, []).append(DosePoint(
                        float(canonical(experiment.columns.get("weight", "nan"))), entry["mean_diff"], entry["lo"],
                        entry["hi"], entry["level"]))
        line = base[(settings, minority, mode)]
        if clashing[(minority, line)] > 1:  # curves of one race that differ only in these: one label each
            line = ", ".join([line] + ([f"minority_mode={mode}"] if mode else [])
                             + [f"{c}={v}" for c, v in settings if c == "recipe"])
        for metric, points in by_metric.items():
            curves.append(DoseCurve(family, metric, race, line, sorted(points, key=lambda point: -point.weight)))
    return curves
