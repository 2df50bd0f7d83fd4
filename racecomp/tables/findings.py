"""findings.md, findings.csv and their figures: each contrast of racecomp.tables.contrasts said in one sentence
that does not claim more than its scope (recipe or model difference, seeds per experiment) and its interval
allow, with how many seeds would detect the smallest effect worth knowing when nothing is detected.
"""
import math
from dataclasses import asdict

from racecomp.tables.contrasts import UNITS
from racecomp.tables.formatting import cell_magnitude, format_number, markdown_text, p_text
from racecomp.tables.plots import dose_response_images, forest_images

CSV_NAME, MARKDOWN_NAME = "findings.csv", "findings.md"
METRIC_TEXT = {"psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y", "id_cos": "id_cos", "accuracy": "accuracy",
               "probe_f1_worst": "the gender probe's worst-race F1", "probe_f1_gap": "the gender probe's F1 gap",
               "bias_transfer_score": "the Bias Transfer Score"}


def _unit(finding):
    return f" {finding.units}" if finding.units else ""


def _numbers(finding):
    magnitude = cell_magnitude(finding.estimate, finding.lo, finding.hi)
    return tuple(format_number(v, magnitude) for v in (finding.estimate, finding.lo, finding.hi))


def _scope(finding):
    if finding.scope == "recipe":
        return f"recipe difference, {finding.n_seeds} seeds per experiment"
    return f"model difference ({finding.n_seeds} seeds per experiment): these trained models, not the recipes"


def _planning(finding):
    effect = f"{finding.min_effect:g}{_unit(finding)}"
    if finding.scope != "recipe" or finding.seeds_needed is None:
        return "a second seed of every trained experiment is needed to estimate the seed-to-seed spread"
    if finding.seeds_needed == math.inf:
        return f"more than 100 seeds per experiment would be needed to detect {effect}"
    run = min(int(n) for n in finding.n_seeds.split("/") if n.isdigit())
    if finding.seeds_needed <= run:
        return (f"the {run} seeds per experiment run here already give 80% power against {effect}, so an effect "
                f"that large would likely have been detected")
    return f"about {finding.seeds_needed} seeds per experiment would detect {effect} with 80% power"


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


def sentence(finding):
    """The finding in words: what is claimed (or that nothing is), the estimate, interval, p and scope."""
    a, b = _sides(finding)
    metric = METRIC_TEXT.get(finding.metric, finding.metric)
    detected = finding.lo > 0 or finding.hi < 0
    numbers = f"{_amount(finding, finding.estimate)} {_interval(finding)}, p {p_text(finding.p_value)}"
    if not detected:
        if finding.kind == "difference in differences":
            what = f"under-sampling costs {finding.race} a different amount of {metric} with {a} than with {b}"
        else:
            what = f"{_what(finding)} differs between {a} and {b}"
        tail = f"; {_planning(finding)}" if math.isfinite(finding.min_effect) or finding.scope != "recipe" else ""
        return f"No evidence that {what} ({_scope(finding)}): {a} - {b} = {numbers}{tail}."
    if finding.kind == "difference in differences":  # penalties are under - balanced: higher = less harm
        claim = (f"Under-sampling costs {finding.race} {_amount(finding, abs(finding.estimate))} "
                 f"{'less' if finding.estimate > 0 else 'more'} {metric} with {a} than with {b}")
    else:
        what = _what(finding)
        claim = (f"{what[0].upper() + what[1:]} is {'higher' if finding.estimate > 0 else 'lower'} with {a} than "
                 f"with {b} by {_amount(finding, abs(finding.estimate))}")
    claim += f": {a} - {b} = {numbers} ({_scope(finding)})"
    if finding.scope != "recipe":
        claim += "; another training run of either could differ as much"
    if finding.family_size > 1 and not finding.p_family < 0.05:
        claim += (f"; not after Holm's adjustment over the {finding.family_size} contrasts that ask this question "
                  f"(p {p_text(finding.p_family)}): exploratory")
    return claim + (f". Note: {finding.note}." if finding.note else ".")


def _what(finding):
    metric = METRIC_TEXT.get(finding.metric, finding.metric)
    if finding.kind == "probe":
        return metric
    if finding.kind == "main effect":
        return f"{metric} on {finding.race}"
    quantity = {"mean": "the average over races", "worst": "the worst race's value", "gap": "the gap between races",
                "std": "the STD across races", "ser": "the SER (error-rate ratio, worst / best)",
                "worst, relative": "the worst race's value (relative change, A / B - 1)"}[finding.quantity]
    return f"{quantity} of {metric}"


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


def markdown(answers, figures):
    """findings.md: one section per question found in the runs, then the dose-response and what was not formed."""
    lines = ["# RaceComp findings", "",
             "Each question the runs can answer, in one sentence per contrast. A *recipe difference* (>= 2 seeds in "
             "every trained experiment) is about the training recipes, seed-to-seed variance included; a *model "
             "difference* (one seed) is only about the trained models at hand. Intervals are 95% per row; "
             "`p_holm` in findings.csv adjusts over the races (or summaries) of one contrast, whose pre-specified "
             "row is the under-sampled race (or the STD); `p_family` adjusts those rows over all contrasts asking the "
             "same question, and a detected row that does not survive it is called exploratory. When nothing is detected, the seed planner says how many "
             "seeds per experiment would detect the smallest effect worth knowing (--min-effect) with 80% power, "
             "from the seed-to-seed spread measured here (itself uncertain with 2-3 seeds). Methods: tables.md.", ""]
    for (study, question, metric), rows in _group(answers.findings).items():
        lines += [f"## {question} ({study}, {METRIC_TEXT.get(metric, metric)})", ""]
        by_contrast = {}
        for row in rows:
            by_contrast.setdefault((row.contrast, row.setting), []).append(row)
        for (contrast, setting), members in by_contrast.items():
            lines.append(f"- **{markdown_text(contrast)}** ({markdown_text(setting)}):")
            primary = [m for m in members if m.primary]
            for finding in primary:
                lines.append(f"  - {markdown_text(sentence(finding))}")
            others = [m for m in members if m not in primary and (m.lo > 0 or m.hi < 0) and m.p_holm < 0.05]
            for finding in others:
                lines.append(f"  - {'Also ' if primary else ''}(Holm-adjusted p {p_text(finding.p_holm)} over "
                             f"{len(members)}): {markdown_text(sentence(finding))}")
            quiet = [m for m in members if m not in primary and m not in others]
            if quiet and not primary and not others:  # nothing pre-specified, nothing survives Holm
                closest = min(quiet, key=lambda m: m.p_holm)
                lines.append(f"  - No {'race' if closest.race else 'summary'} differs after Holm's adjustment over "
                             f"{len(members)} ({_scope(closest)}; smallest adjusted p {p_text(closest.p_holm)}, "
                             f"{closest.quantity}); findings.csv has each"
                             + (f"; for {closest.quantity}, {_planning(closest)}." if math.isfinite(closest.min_effect)
                                else "."))
            elif quiet:
                lines.append(f"  - No other {'race' if members[0].race else 'summary'} differs after Holm's "
                             f"adjustment ({', '.join(m.quantity for m in quiet)}; findings.csv has each).")
        for path in figures.get((study, question, metric), []):
            lines.append(f"\n![{question}]({path})")
        lines.append("")
    if answers.doses:
        lines += ["## How little data before a race is noticeably hurt? (dose-response)", ""]
        for curve in answers.doses:
            points = "; ".join(f"{p.weight:g}: {format_number(p.penalty)} "
                               f"[{format_number(p.lo)}, {format_number(p.hi)}]" for p in curve.points)
            scopes = {p.scope for p in curve.points}
            who = "" if scopes == {"recipe"} else " (one-seed models: model differences, another training run " \
                "could differ as much)"
            onset = (f"noticeably hurt from weight {curve.onset:g} down (the penalty interval is below 0 there and "
                     f"at every smaller weight run){who}" if curve.onset is not None else
                     "no evidence of harm at the weights run (the penalty interval at the smallest weight includes 0 "
                     "or lies above it)")
            lines.append(f"- {METRIC_TEXT.get(curve.metric, curve.metric)} penalty on {curve.race}, {curve.line}: "
                         f"{onset}. Penalty by weight: {points} ({'/'.join(sorted(scopes))} level).")
        for path in figures.get("dose", []):
            lines.append(f"\n![dose-response]({path})")
        lines.append("")
    lines += ["## Contrasts not formed", ""]
    lines += [f"- {study}: {markdown_text(what)}: {markdown_text(why)}." for study, what, why in answers.unformed] or \
        ["None."]
    return "\n".join(lines) + "\n"


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
        images = forest_images(title, f"{'STD change' if plotted[0].quantity == 'std' else 'difference'}"
                                      f"{' (' + units + ')' if units else ''}",
                               [(f"{r.contrast} | {r.setting} | {r.quantity}", r.estimate, r.lo, r.hi)
                                for r in plotted])
        figures[(study, question, metric)] = [p.rsplit("/", 1)[-1] for p in
                                              output.pngs(f"findings_forest_{number:02d}.png", images)]
    doses = {}
    for curve in answers.doses:
        doses.setdefault((curve.study, curve.metric, curve.race), []).append(curve)
    for number, ((study, metric, race), curves) in enumerate(doses.items(), 1):
        weights = sorted({p.weight for c in curves for p in c.points}, reverse=True)
        series = {c.line: [next(((p.penalty, p.lo, p.hi) for p in c.points if p.weight == w),
                                (math.nan, math.nan, math.nan)) for w in weights] for c in curves}
        images = dose_response_images(f"Penalty on {race} vs under-sampling weight ({study}, "
                                      f"{METRIC_TEXT.get(metric, metric)}) by weight",
                                      "under-sampled - balanced" + (f" ({UNITS[metric]})" if UNITS.get(metric) else ""),
                                      [f"{w:g}" for w in weights], series)
        figures.setdefault("dose", []).extend(p.rsplit("/", 1)[-1] for p in
                                              output.pngs(f"findings_dose_{number:02d}.png", images))
    output.text(MARKDOWN_NAME, markdown(answers, figures))
