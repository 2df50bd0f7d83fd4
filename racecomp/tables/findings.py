"""findings.md, findings.csv and their figures: each contrast of racecomp.tables.questions said in one sentence
that does not claim more than its scope (recipe or model difference, seeds per experiment), its interval and its
question's multiplicity family allow; when nothing is detected, whether the interval excludes the smallest effect
worth knowing (--min-effect) and how many seeds would detect it.
"""
import math
import os
from dataclasses import asdict

from racecomp.planner import SPREAD_BOUND
from racecomp.tables.answers import Unanswerable
from racecomp.tables.questions import POWER, UNITS
from racecomp.tables.formatting import cell_magnitude, format_number, markdown_text, p_text
from racecomp.tables.plots import dose_response_figures, forest_figures

CSV_NAME, MARKDOWN_NAME = "findings.csv", "findings.md"
METRIC_TEXT = {"psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y", "id_cos": "id_cos", "accuracy": "accuracy",
               "probe_f1_worst": "the gender probe's worst-race F1", "probe_f1_gap": "the gender probe's F1 gap",
               "bias_transfer_score": "the Bias Transfer Score"}
SUMMARY_TEXT = {"mean": "the average over races", "worst": "the worst race's value", "gap": "the gap between races",
                "std": "the STD across races", "ser": "the SER (error-rate ratio, worst / best)",
                "worst, relative": "the worst race's value (relative change, A / B - 1)"}


def _unit(finding):
    return f" {finding.units}" if finding.units else ""


def _numbers(finding):
    magnitude = cell_magnitude(finding.estimate, finding.lo, finding.hi)
    return tuple(format_number(v, magnitude) for v in (finding.estimate, finding.lo, finding.hi))


def _scope(finding):
    if finding.scope == "recipe":
        return f"recipe difference, {finding.n_seeds} seeds per experiment"
    return f"model difference ({finding.n_seeds} seeds per experiment): these trained models, not the recipes"


def _level(ci):
    return f"{100 * ci:g}%"


def _alpha(ci):
    return f"{round(100 * (1.0 - ci), 6):g}%"


def _excludes(finding):
    """Whether the interval lies within +-min_effect: effects worth knowing are excluded."""
    return -finding.min_effect <= finding.lo and finding.hi <= finding.min_effect


def _equivalence(finding):
    """What a null interval says against --min-effect: whether it excludes effects that large (no post-hoc power)."""
    whose = "effects" if finding.scope == "recipe" else "differences between these models"
    m = finding.min_effect
    if _excludes(finding):
        return f"the interval excludes {whose} larger than ±{m:g}{_unit(finding)} (--min-effect)"
    sides = [f"{sign}{m:g}" for sign, out in (("-", finding.lo < -m), ("+", finding.hi > m)) if out]
    return f"the interval does not exclude {whose} of {' or '.join(sides)}{_unit(finding)} (--min-effect)"


def _planning(finding):
    """How many seeds the planner would run, and from how many seeds it estimated the spread; "" when the seeds
    run already reach the plan (the interval then says what the data show)."""
    if finding.scope != "recipe":
        return "a second seed of every trained experiment is needed to estimate the seed-to-seed spread"
    if finding.seeds_needed is None:
        return ""
    counts = [n for n in finding.n_seeds.split("/") if n.isdigit()]
    trained = "trained " if len(counts) < len(finding.n_seeds.split("/")) else ""
    source = (f"planned from a {100 * SPREAD_BOUND:g}% upper confidence bound of the seed-to-seed spread, estimated "
              f"from {'/'.join(counts)} seeds per {trained}experiment")
    effect = f"{finding.min_effect:g}{_unit(finding)} with {100 * POWER:g}% power at the {_alpha(finding.ci)} level"
    if finding.seeds_needed == math.inf:
        return f"more than 100 seeds per experiment would be needed to detect {effect} ({source})"
    if finding.seeds_needed <= min(int(n) for n in counts):
        return ""
    return f"about {finding.seeds_needed} seeds per experiment would detect {effect} ({source})"


def _null_tail(finding):
    """The clauses after a null result: equivalence against --min-effect, then the seed plan (at the recipe level
    none when the interval already excludes effects that large: the question is answered)."""
    parts = [_equivalence(finding)] if math.isfinite(finding.min_effect) else []
    if finding.scope != "recipe" or (parts and not _excludes(finding)):
        parts.append(_planning(finding))
    return [part for part in parts if part]


def _sides(finding):
    a, b = (side.strip() for side in finding.contrast.split(" - ", 1))
    return a, b


def _amount(finding, value):
    """A value in the finding's units: relative changes in percent."""
    if finding.quantity.endswith("relative"):
        return f"{100 * value:.3g}%"
    return f"{format_number(value)}{_unit(finding)}"


def _interval(finding):
    if finding.quantity.endswith("relative"):
        return f"[{100 * finding.lo:.3g}%, {100 * finding.hi:.3g}%]"
    _, lo, hi = _numbers(finding)
    return f"[{lo}, {hi}]"


def _multiplicity(finding):
    """The one rule for a claimed row: Holm over its question's family, or exploratory outside it."""
    if finding.family_size == 0:
        return (f"; exploratory: not a pre-specified row of this question (Holm-adjusted p "
                f"{p_text(finding.p_holm)} over this contrast's {'races' if finding.race else 'summaries'} only)")
    if finding.family_size == 1:
        return ""
    rows = "contrasts" if finding.primary else "race contrasts"
    if finding.p_family < 1.0 - finding.ci:
        return (f"; Holm-adjusted p {p_text(finding.p_family)} over the {finding.family_size} {rows} that ask this "
                f"question")
    return (f"; not after Holm's adjustment over the {finding.family_size} {rows} that ask this question "
            f"(p {p_text(finding.p_family)}): exploratory")


def sentence(finding):
    """The finding in words: what is claimed (or that nothing is), the estimate, interval, p and scope. One-seed
    (model) rows speak of the trained models first; only recipe rows speak of what a recipe does."""
    a, b = _sides(finding)
    metric = METRIC_TEXT.get(finding.metric, finding.metric)
    detected = finding.lo > 0 or finding.hi < 0
    numbers = (f"{_amount(finding, finding.estimate)}, {_level(finding.ci)} interval {_interval(finding)}, "
               f"p {p_text(finding.p_value)}")
    models = finding.scope != "recipe"  # one seed: words about the trained models, never about the recipes
    did = finding.kind == "difference in differences"
    what = f"the under-sampled - balanced difference in {metric} on {finding.race}" if did else _what(finding)
    if not detected:
        subject = (f"under-sampling costs {finding.race} a different amount of {metric} with {a} than with {b}"
                   if did and not models else f"{what} differs between {a} and {b}")
        opening = "No evidence that, with these trained models," if models else "No evidence that"
        tail = "".join(f"; {part}" for part in _null_tail(finding))
        text = f"{opening} {subject} ({_scope(finding)}): {a} - {b} = {numbers}{tail}"
    else:
        amount, higher = _amount(finding, abs(finding.estimate)), "higher" if finding.estimate > 0 else "lower"
        if did and not models:  # under - balanced: higher = less harm
            claim = (f"Under-sampling costs {finding.race} {amount} {'less' if finding.estimate > 0 else 'more'} "
                     f"{metric} with {a} than with {b}")
        elif did:
            claim = f"{what} is {amount} {higher} with {a} than with {b}"
        else:
            claim = f"{what} is {higher} with {a} than with {b} by {amount}"
        claim = f"With these trained models, {claim}" if models else claim[0].upper() + claim[1:]
        text = f"{claim}: {a} - {b} = {numbers} ({_scope(finding)})"
        if models:
            text += "; another training run of either could differ as much"
        text += _multiplicity(finding)
    return text + (f". Note: {finding.note}." if finding.note else ".")


def _what(finding):
    metric = METRIC_TEXT.get(finding.metric, finding.metric)
    if finding.kind == "probe":
        return metric
    if finding.kind == "main effect":
        return f"{metric} on {finding.race}"
    return f"{SUMMARY_TEXT[finding.quantity]} of {metric}"


def _dose_sentence(curve):
    """The onset (an intersection-union test: valid without adjustment), and every weight whose own interval is below
    0 even when the smallest weight's is not; with one seed, words about the trained models only."""
    models = curve.scope != "recipe"
    later = [w for w in curve.below_zero if curve.onset is None or w > curve.onset]
    listed = " and ".join(f"{w:g}" for w in later)
    own = f"each weight's own interval, not adjusted over the {len(curve.points)} weights run"
    if curve.onset is not None:
        who = (f"the one-seed under-sampled models score lower on {curve.race} than the balanced model"
               if models else "noticeably hurt")
        text = (f"{who} from weight {curve.onset:g} down (the penalty interval is below 0 there and at every smaller "
                f"weight run)")
        if later:
            text += f"; the interval is also below 0 at weight {listed} ({own})"
    elif later:
        smallest = curve.points[-1]
        text = (f"the penalty interval is below 0 at weight {listed} ({own}), but not at the smallest weight run, "
                f"{smallest.weight:g} [{format_number(smallest.lo)}, {format_number(smallest.hi)}]: no weight from "
                f"which every smaller one is hurt")
    else:
        text = "no evidence of harm at the weights run (no penalty interval is below 0)"
    if models:
        text += (f"; one seed in some experiment: model differences, not evidence that under-sampling hurts "
                 f"{curve.race} (another training run could differ as much)")
    return text


def csv_rows(answers):
    rows = []
    for finding in answers.findings:
        row = asdict(finding)
        row["seeds_needed"] = "" if finding.seeds_needed is None else finding.seeds_needed
        row["answer"] = sentence(finding)
        rows.append(row)
    return rows


def _group(findings):
    groups = {}
    for finding in findings:
        groups.setdefault((finding.study, finding.question, finding.metric), []).append(finding)
    return groups


def _header(ci):
    return ["# RaceComp findings", "",
            "Each question the runs can answer, in one sentence per contrast. A *recipe difference* (>= 2 seeds in "
            "every trained experiment) is about the training recipes, seed-to-seed variance included; a *model "
            "difference* (one seed) is only about the trained models at hand, and its sentence speaks of those "
            f"models. Intervals are {_level(ci)} per row and claims are made at the {_alpha(ci)} level. One "
            "multiplicity rule: each question has one family over all contrasts asking it, its pre-specified rows "
            "(the under-sampled race, the STD, the probe result; for main effects, which have none, every race of "
            "every contrast), and `p_family` in findings.csv is Holm's adjustment over it; a detected row that does "
            "not survive it, and every detected row outside it, is called exploratory (`p_holm` adjusts over the "
            "races or summaries of one contrast only). When nothing is detected, the sentence says whether the "
            "interval excludes the smallest effect worth knowing (--min-effect), and how many seeds per experiment "
            f"would detect it with {100 * POWER:g}% power, planned from the seed-to-seed spread estimated from the "
            "seeds run (itself uncertain with 2-3 seeds). Methods: tables.md.", ""]


def _contrast_lines(members, unanswerable, ci):
    """The sentences of one contrast: its pre-specified rows, the other detected rows, what is quiet and what
    could not be answered."""
    lines = []
    primary = [m for m in members if m.primary]
    lines += [f"  - {markdown_text(sentence(finding))}" for finding in primary]
    others = [m for m in members if not m.primary and (m.lo > 0 or m.hi < 0) and m.p_holm < 1.0 - ci]
    lines += [f"  - {'Also: ' if primary else ''}{markdown_text(sentence(finding))}" for finding in others]
    quiet = [m for m in members if m not in primary and m not in others]
    if quiet and not primary and not others:  # nothing pre-specified, nothing survives Holm
        closest = min(quiet, key=lambda m: m.p_holm)
        parts = _null_tail(closest)
        tail = f"; for {closest.quantity}, {'; '.join(parts)}" if parts else ""
        lines.append(f"  - No {'race' if closest.race else 'summary'} differs after Holm's adjustment over "
                     f"{len(members)} ({_scope(closest)}; smallest adjusted p {p_text(closest.p_holm)}, "
                     f"{closest.quantity}); findings.csv has each{tail}.{_notes(quiet)}")
    elif quiet:
        lines.append(f"  - No other {'race' if members[0].race else 'summary'} differs after Holm's "
                     f"adjustment ({', '.join(m.quantity for m in quiet)}; findings.csv has each).{_notes(quiet)}")
    for missing in unanswerable:
        lines.append(f"  - The change of {SUMMARY_TEXT[missing.quantity]} of "
                     f"{METRIC_TEXT.get(missing.metric, missing.metric)} cannot be answered for this pair: "
                     f"{markdown_text(missing.why)}.")
    return lines


def _notes(findings):
    """' Note for worst; gap: ...' for the rows of one line that carry a note (the ties note, null rows too)."""
    by_note = {}
    for finding in findings:
        if finding.note:
            by_note.setdefault(finding.note, []).append(finding.quantity)
    return "".join(f" Note for {'; '.join(quantities)}: {note}." for note, quantities in by_note.items())


def markdown(answers, figures):
    """findings.md: one section per question found in the runs, then the dose-response and what was not formed."""
    ci = answers.ci
    lines = _header(ci)
    sections = {}
    for item in answers.findings + answers.unanswerable:
        pair = sections.setdefault((item.study, item.question, item.metric), {}).setdefault(
            (item.contrast, item.setting), {"findings": [], "unanswerable": []})
        pair["unanswerable" if isinstance(item, Unanswerable) else "findings"].append(item)
    for (study, question, metric), contrasts in sections.items():
        lines += [f"## {question} ({study}, {METRIC_TEXT.get(metric, metric)})", ""]
        for (contrast, setting), pair in contrasts.items():
            lines.append(f"- **{markdown_text(contrast)}** ({markdown_text(setting)}):")
            lines += _contrast_lines(pair["findings"], pair["unanswerable"], ci)
        for path in figures.get((study, question, metric), []):
            lines.append(f"\n![{question}]({path})")
        lines.append("")
    if answers.doses:
        lines += ["## How little data before a race is noticeably hurt? (dose-response)", ""]
        for curve in answers.doses:
            points = "; ".join(f"{p.weight:g}: {format_number(p.penalty)} "
                               f"[{format_number(p.lo)}, {format_number(p.hi)}]" for p in curve.points)
            scopes = "/".join(sorted({p.scope for p in curve.points}))
            lines.append(f"- {METRIC_TEXT.get(curve.metric, curve.metric)} penalty on {curve.race}, {curve.line}: "
                         f"{_dose_sentence(curve)}. Penalty by weight ({_level(ci)} intervals): {points} "
                         f"({scopes} level).")
        for path in figures.get("dose", []):
            lines.append(f"\n![dose-response]({path})")
        lines.append("")
    lines += ["## Contrasts not formed", ""]
    lines += [f"- {study}: {markdown_text(what)}: {markdown_text(why)}." for study, what, why in answers.unformed] or \
        ["None."]
    return "\n".join(lines) + "\n"


def _pngs(paths):
    """The names of the PNGs among the written `paths` (findings.md shows those; the PDFs are for print)."""
    return [os.path.basename(p) for p in paths if p.endswith(".png")]


def write(output, answers):
    """findings.csv, the figures and findings.md into the summarize Output."""
    output.csv(CSV_NAME, csv_rows(answers))
    figures = {}
    for number, ((study, question, metric), rows) in enumerate(_group(answers.findings).items(), 1):
        plotted = [r for r in rows if r.kind != "summary change" and r.kind != "vs fp32" or r.quantity == "std"]
        plotted = [r for r in plotted if r.primary or r.kind == "main effect"]
        if not plotted:
            continue
        title = f"{question} ({study}, {METRIC_TEXT.get(metric, metric)})"
        units = plotted[0].units
        x_label = ("STD change" if plotted[0].quantity == "std" else "difference") + (f" ({units})" if units else "")
        figures[(study, question, metric)] = _pngs(output.figures(
            f"findings_forest_{number:02d}.png", forest_figures, title, x_label,
            [(f"{r.contrast} | {r.setting} | {r.quantity}", r.estimate, r.lo, r.hi) for r in plotted]))
    doses = {}
    for curve in answers.doses:
        doses.setdefault((curve.study, curve.metric, curve.race), []).append(curve)
    for number, ((study, metric, race), curves) in enumerate(doses.items(), 1):
        weights = sorted({p.weight for c in curves for p in c.points}, reverse=True)
        series = {c.line: [next(((p.penalty, p.lo, p.hi) for p in c.points if p.weight == w),
                                (math.nan, math.nan, math.nan)) for w in weights] for c in curves}
        figures.setdefault("dose", []).extend(_pngs(output.figures(
            f"findings_dose_{number:02d}.png", dose_response_figures,
            f"Penalty on {race} vs under-sampling weight ({study}, {METRIC_TEXT.get(metric, metric)}) by weight",
            "under-sampled - balanced" + (f" ({UNITS[metric]})" if UNITS.get(metric) else ""),
            [f"{w:g}" for w in weights], series)))
    output.text(MARKDOWN_NAME, markdown(answers, figures))
