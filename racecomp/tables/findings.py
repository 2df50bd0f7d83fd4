"""findings.md, findings.csv and their figures: each Finding of tables.questions in one sentence that claims no more
than its scope (recipe or model difference), interval and question family allow (report.METHODS: contrasts)."""
import math
import os
from dataclasses import asdict

from racecomp.planner import SPREAD_BOUND
from racecomp.tables.answers import Unanswerable
from racecomp.tables.formatting import format_number, markdown_text, p_text, shared_decimals
from racecomp.tables.plots import dose_response_figures, forest_figures
from racecomp.tables.questions import POWER, UNITS

METRIC_TEXT = {"psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y", "id_cos": "id_cos", "accuracy": "accuracy",
               "probe_f1_worst": "the gender probe's worst-race F1", "probe_f1_gap": "the gender probe's F1 gap",
               "bias_transfer_score": "the Bias Transfer Score"}
SUMMARY_TEXT = {"mean": "the average over races", "worst": "the worst race's value", "gap": "the gap between races",
                "std": "the STD across races", "ser": "the SER (error-rate ratio, worst / best)",
                "worst, relative": "the worst race's value (relative change, A / B - 1)"}


def _metric(name):
    return METRIC_TEXT.get(name, name)


def _unit(finding):
    return f" {finding.units}" if finding.units else ""


def _scope(finding):
    if finding.scope == "recipe":
        return f"recipe difference, {finding.n_seeds} seeds per experiment"
    return f"model difference ({finding.n_seeds} seeds per experiment): these trained models, not the recipes"


def _alpha(ci):
    return f"{round(100 * (1.0 - ci), 6):g}%"


def _null_tail(finding):
    """The clauses after a null result: what the interval says against --min-effect (no post-hoc power), then
    the seed plan, which a recipe row whose interval excludes --min-effect does not need."""
    whose = "effects" if finding.scope == "recipe" else "differences between these models"
    m, unit = finding.min_effect, _unit(finding)
    excluded = -m <= finding.lo and finding.hi <= m  # the interval within +-min_effect
    sides = " or ".join(f"{sign}{m:g}" for sign, out in (("-", finding.lo < -m), ("+", finding.hi > m)) if out)
    parts = [] if not math.isfinite(m) else [f"the interval excludes {whose} larger than ±{m:g}{unit} (--min-effect)"
                                             if excluded else f"the interval does not exclude {whose} of {sides}{unit} "
                                             f"(--min-effect)"]
    if finding.scope != "recipe" or (parts and not excluded):
        parts.append(_planning(finding))
    return [part for part in parts if part]


def _planning(finding):
    """How many seeds the planner would run ("" when the seeds run already reach the plan)."""
    if finding.scope != "recipe":
        return "a second seed of every trained experiment is needed to estimate the seed-to-seed spread"
    counts = [n for n in finding.n_seeds.split("/") if n.isdigit()]
    if finding.seeds_needed is None or finding.seeds_needed <= min([int(n) for n in counts], default=0):
        return ""
    trained = "trained " if len(counts) < len(finding.n_seeds.split("/")) else ""
    source = (f"planned from a {100 * SPREAD_BOUND:g}% upper confidence bound of the seed-to-seed spread, estimated "
              f"from {'/'.join(counts)} seeds per {trained}experiment")
    effect = f"{finding.min_effect:g}{_unit(finding)} with {100 * POWER:g}% power at the {_alpha(finding.ci)} level"
    if finding.seeds_needed == math.inf:
        return f"more than 100 seeds per experiment would be needed to detect {effect} ({source})"
    return f"about {finding.seeds_needed} seeds per experiment would detect {effect} ({source})"


def _multiplicity(finding):
    """The one rule for a claimed row: Holm over its question's family, or exploratory outside it."""
    if finding.family_size == 0:
        return (f"; exploratory: not a pre-specified row of this question (Holm-adjusted p "
                f"{p_text(finding.p_holm)} over this contrast's {'races' if finding.race else 'summaries'} only)")
    rows = f"{finding.family_size} {'contrasts' if finding.primary else 'race contrasts'} that ask this question"
    if finding.family_size == 1:
        return ""
    if finding.p_family < 1.0 - finding.ci:
        return f"; Holm-adjusted p {p_text(finding.p_family)} over the {rows}"
    return f"; not after Holm's adjustment over the {rows} (p {p_text(finding.p_family)}): exploratory"


def _amount(finding, value):
    """A value in the finding's units: relative changes in percent."""
    return f"{100 * value:.3g}%" if finding.quantity.endswith("relative") else f"{format_number(value)}{_unit(finding)}"


def sentence(finding):
    """The finding in words: what is claimed (or that nothing is), the estimate, interval, p and scope. One-seed
    (model) rows speak of the trained models only; only recipe rows speak of what a recipe does."""
    a, b = (side.strip() for side in finding.contrast.split(" - ", 1))
    metric, models = _metric(finding.metric), finding.scope != "recipe"
    did = finding.kind == "difference in differences"
    if finding.quantity.endswith("relative"):
        interval = f"[{100 * finding.lo:.3g}%, {100 * finding.hi:.3g}%]"
    else:
        interval = "[{}, {}]".format(*shared_decimals(finding.estimate, finding.lo, finding.hi)[1:])
    numbers = (f"{_amount(finding, finding.estimate)}, {100 * finding.ci:g}% interval {interval}, "
               f"p {p_text(finding.p_value)}")
    what = (f"the under-sampled - balanced difference in {metric} on {finding.race}" if did else metric
            if finding.kind == "probe" else f"{metric} on {finding.race}" if finding.kind == "main effect"
            else f"{SUMMARY_TEXT[finding.quantity]} of {metric}")
    if not (finding.lo > 0 or finding.hi < 0):
        subject = (f"under-sampling costs {finding.race} a different amount of {metric} with {a} than with {b}"
                   if did and not models else f"{what} differs between {a} and {b}")
        opening = "No evidence that, with these trained models," if models else "No evidence that"
        text = f"{opening} {subject} ({_scope(finding)}): {a} - {b} = {numbers}" + \
            "".join(f"; {part}" for part in _null_tail(finding))
    else:
        amount, higher = _amount(finding, abs(finding.estimate)), "higher" if finding.estimate > 0 else "lower"
        if did and not models:  # under - balanced: higher = less harm
            claim = (f"Under-sampling costs {finding.race} {amount} {'less' if finding.estimate > 0 else 'more'} "
                     f"{metric} with {a} than with {b}")
        else:
            claim = f"{what} is {amount} {higher} with {a} than with {b}" if did else \
                f"{what} is {higher} with {a} than with {b} by {amount}"
        claim = f"With these trained models, {claim}" if models else claim[0].upper() + claim[1:]
        text = f"{claim}: {a} - {b} = {numbers} ({_scope(finding)})" + \
            ("; another training run of either could differ as much" if models else "") + _multiplicity(finding)
    return text + (f". Note: {finding.note}." if finding.note else ".")


def _dose_sentence(curve):
    """The onset (an intersection-union test: valid without adjustment), and every other weight whose own interval
    is below 0; with one seed, words about the trained models only."""
    models = curve.scope != "recipe"
    later = [w for w in curve.below_zero if curve.onset is None or w > curve.onset]
    listed = " and ".join(f"{w:g}" for w in later)
    own = f"each weight's own interval, not adjusted over the {len(curve.points)} weights run"
    if curve.onset is not None:
        who = (f"the one-seed under-sampled models score lower on {curve.race} than the balanced model"
               if models else "noticeably hurt")
        text = (f"{who} from weight {curve.onset:g} down (the penalty interval is below 0 there and at every smaller "
                f"weight run)") + (f"; the interval is also below 0 at weight {listed} ({own})" if later else "")
    elif later:
        smallest = curve.points[-1]
        text = (f"the penalty interval is below 0 at weight {listed} ({own}), but not at the smallest weight run, "
                f"{smallest.weight:g} [{format_number(smallest.lo)}, {format_number(smallest.hi)}]: no weight from "
                f"which every smaller one is hurt")
    else:
        text = "no evidence of harm at the weights run (no penalty interval is below 0)"
    return text + (f"; one seed in some experiment: model differences, not evidence that under-sampling hurts "
                   f"{curve.race} (another training run could differ as much)" if models else "")


def _notes(findings):
    """' Note for worst; gap: ...' for the rows of one line that carry a note (the ties note, null rows too)."""
    by_note = {}
    for finding in [f for f in findings if f.note]:
        by_note.setdefault(finding.note, []).append(finding.quantity)
    return "".join(f" Note for {'; '.join(quantities)}: {note}." for note, quantities in by_note.items())


def _contrast_lines(members, unanswerable, ci):
    """The lines of one contrast: its pre-specified rows, the other detected rows, what is quiet and what could
    not be answered."""
    primary = [m for m in members if m.primary]
    others = [m for m in members if not m.primary and (m.lo > 0 or m.hi < 0) and m.p_holm < 1.0 - ci]
    quiet = [m for m in members if m not in primary and m not in others]
    lines = [f"  - {'Also: ' if primary and m in others else ''}{markdown_text(sentence(m))}" for m in primary + others]
    if quiet and not lines:  # nothing pre-specified, nothing survives Holm
        closest = min(quiet, key=lambda m: m.p_holm)
        parts = _null_tail(closest)
        tail = f"; for {closest.quantity}, {'; '.join(parts)}" if parts else ""
        lines.append(f"  - No {'race' if closest.race else 'summary'} differs after Holm's adjustment over "
                     f"{len(members)} ({_scope(closest)}; smallest adjusted p {p_text(closest.p_holm)}, "
                     f"{closest.quantity}); findings.csv has each{tail}.{_notes(quiet)}")
    elif quiet:
        lines.append(f"  - No other {'race' if members[0].race else 'summary'} differs after Holm's "
                     f"adjustment ({', '.join(m.quantity for m in quiet)}; findings.csv has each).{_notes(quiet)}")
    return lines + [f"  - The change of {SUMMARY_TEXT[m.quantity]} of {_metric(m.metric)} cannot be answered for this "
                    f"pair: {markdown_text(m.why)}." for m in unanswerable]


def markdown(answers, figures):
    """findings.md: one section per question (its contrasts, then its figures), the dose-response, and the
    contrasts not formed. figures: {(study, question, metric) or "dose": [PNG names]}."""
    ci = answers.ci
    lines = ["# RaceComp findings", "",
             "Each question the runs can answer, in one sentence per contrast. A *recipe difference* (>= 2 seeds in "
             "every trained experiment) is about the training recipes, seed-to-seed variance included; a *model "
             "difference* (one seed) is only about the trained models at hand, and its sentence speaks of those "
             f"models. Intervals are {100 * ci:g}% per row and claims are made at the {_alpha(ci)} level. One "
             "multiplicity rule: each question has one family over all contrasts asking it, its pre-specified rows "
             "(the under-sampled race, the STD, the probe result; for main effects, which have none, every race of "
             "every contrast), and `p_family` in findings.csv is Holm's adjustment over it; a detected row that does "
             "not survive it, and every detected row outside it, is called exploratory (`p_holm` adjusts over the "
             "races or summaries of one contrast only). When nothing is detected, the sentence says whether the "
             "interval excludes the smallest effect worth knowing (--min-effect), and how many seeds per experiment "
             f"would detect it with {100 * POWER:g}% power, planned from the seed-to-seed spread estimated from the "
             "seeds run (itself uncertain with 2-3 seeds). Methods: tables.md.", ""]
    questions = {}  # (study, question, metric) -> (contrast, setting) -> ([Finding], [Unanswerable])
    for item in answers.findings + answers.unanswerable:
        pair = questions.setdefault((item.study, item.question, item.metric), {}).setdefault(
            (item.contrast, item.setting), ([], []))
        pair[isinstance(item, Unanswerable)].append(item)
    for (study, question, metric), contrasts in questions.items():
        lines += [f"## {question} ({study}, {_metric(metric)})", ""]
        for (contrast, setting), (members, unanswerable) in contrasts.items():
            lines.append(f"- **{markdown_text(contrast)}** ({markdown_text(setting)}):")
            lines += _contrast_lines(members, unanswerable, ci)
        lines += [f"\n![{question}]({path})" for path in figures.get((study, question, metric), [])] + [""]
    if answers.doses:
        lines += ["## How little data before a race is noticeably hurt? (dose-response)", ""]
        for curve in answers.doses:
            points = "; ".join(f"{p.weight:g}: {format_number(p.penalty)} [{format_number(p.lo)}, "
                               f"{format_number(p.hi)}]" for p in curve.points)
            lines.append(f"- {_metric(curve.metric)} penalty on {curve.race}, {curve.line}: {_dose_sentence(curve)}. "
                         f"Penalty by weight ({100 * ci:g}% intervals): {points} "
                         f"({'/'.join(sorted({p.scope for p in curve.points}))} level).")
        lines += [f"\n![dose-response]({path})" for path in figures.get("dose", [])] + [""]
    lines += ["## Contrasts not formed", ""]
    lines += [f"- {study}: {markdown_text(what)}: {markdown_text(why)}." for study, what, why in answers.unformed] or \
        ["None."]
    return "\n".join(lines) + "\n"


def write(output, answers):
    """findings.csv (Finding's fields, then `answer`: its sentence), the figures and findings.md into the Output."""
    output.csv("findings.csv", [{**asdict(f), "seeds_needed": "" if f.seeds_needed is None else f.seeds_needed,
                                 "answer": sentence(f)} for f in answers.findings])
    figures, by_question, by_race = {}, {}, {}
    for finding in answers.findings:
        by_question.setdefault((finding.study, finding.question, finding.metric), []).append(finding)
    for number, (key, rows) in enumerate(by_question.items(), 1):  # the pre-specified rows (of summaries the
        # STD) and main effects
        rows = [r for r in rows if (r.kind not in ("summary change", "vs fp32") or r.quantity == "std")
                and (r.primary or r.kind == "main effect")]
        if rows:
            x_label = ("STD change" if rows[0].quantity == "std" else "difference") + \
                (f" ({rows[0].units})" if rows[0].units else "")
            figures[key] = output.figures(f"findings_forest_{number:02d}.png", forest_figures,
                                          f"{key[1]} ({key[0]}, {_metric(key[2])})", x_label,
                                          [(f"{r.contrast} | {r.setting} | {r.quantity}", r.estimate, r.lo, r.hi)
                                           for r in rows])
    for curve in answers.doses:
        by_race.setdefault((curve.study, curve.metric, curve.race), []).append(curve)
    for number, ((study, metric, race), curves) in enumerate(by_race.items(), 1):
        weights = sorted({p.weight for c in curves for p in c.points}, reverse=True)
        series = {c.line: [next(((p.penalty, p.lo, p.hi) for p in c.points if p.weight == w), None) for w in weights]
                  for c in curves}  # None: that weight was not run for this line
        figures.setdefault("dose", []).extend(output.figures(
            f"findings_dose_{number:02d}.png", dose_response_figures,
            f"Penalty on {race} by under-sampling weight ({study}, {_metric(metric)})",
            "under-sampled - balanced" + (f" ({UNITS[metric]})" if UNITS.get(metric) else ""),
            [f"{w:g}" for w in weights], series, x_label="under-sampling weight"))
    pngs = {key: [os.path.basename(p) for p in paths if p.endswith(".png")] for key, paths in figures.items()}
    output.text("findings.md", markdown(answers, pngs))
