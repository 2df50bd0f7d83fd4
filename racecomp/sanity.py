"""Checks that a model's results are worth reporting, run after every evaluation (every study, every setting).

A failed check is a warning, not an error: the run's files are still written, so the failure can be looked
at. Each warning is a dict {"check", "message", "value"}: the study prints it as a `[warning]` line and
records it in args.json ("warnings"); summarize.py marks the experiment's rows (column `warnings`, a note
under each table) and refuses id_cos measured with a recognizer that failed COLLAPSE checks
(racecomp.runs.COLLAPSE_WARNINGS). A metric that is NaN (or infinite where it cannot be) is an error:
nothing computed from it means anything (NonFiniteMetricError, naming the step).
"""
import math
import statistics

# Verification: the mean over races of the per-race accuracies of a model at chance lands, by noise and the best
# threshold of each fold, within about 2 binomial standard errors of 50% (100 / sqrt(n) points at n pairs in all),
# never closer than 5 points. Measured by simulation (tests/test_sanity.py, 4 races): a model at chance is flagged
# in >= 96% of draws at 20, 100 and 600 pairs a race; a model of true accuracy 75% in 3.5% at 20 pairs a race,
# 0% from 100; 65% in 0% from 100 pairs a race.
CHANCE_MARGIN_POINTS = 5.0
# Embeddings collapsed onto about one direction: different people's faces as similar as one person's.
COLLAPSED_MEDIAN_COSINE = 0.95
# Upscaling: mean PSNR-Y of the model this far below bicubic's on the same images (dB) is a broken model, not
# an upscaler that has barely moved from its bicubic start (demo runs are within a few hundredths of a dB).
BELOW_FLOOR_DB = 0.1


class NonFiniteMetricError(RuntimeError):
    pass


def warning(check, message, value):
    return {"check": check, "message": message, "value": value}


def check_finite(rows, keys, step, infinite_allowed=()):
    """NonFiniteMetricError naming `step` when any row's value of `keys` is NaN, or infinite outside
    `infinite_allowed` (PSNR of an image reproduced exactly is +inf, legitimately)."""
    for key in keys:
        bad = [row for row in rows if math.isnan(row[key]) or (math.isinf(row[key]) and key not in infinite_allowed)]
        if bad:
            raise NonFiniteMetricError(f"{step}: {key} is {bad[0][key]} for {len(bad)} of {len(rows)} item(s) "
                                       f"(first: {bad[0].get('file', bad[0].get('line', '?'))}); the model's "
                                       f"outputs are not finite numbers")


def chance_margin(n_pairs):
    return max(CHANCE_MARGIN_POINTS, 100.0 / math.sqrt(n_pairs))


def verification_warnings(table, pair_rows):
    """Warnings of a verification result: accuracy near chance (the mean over races of per_race_table's
    accuracies within chance_margin of 50%, n = all pairs), embeddings collapsed (median cosine of the
    different-identity pairs, label 0, in per_pair rows)."""
    found = []
    if table:
        mean = statistics.fmean(row["accuracy"] for row in table)
        margin = chance_margin(sum(row["n_pairs"] for row in table))
        if mean < 50.0 + margin:
            found.append(warning("chance accuracy", f"verification accuracy is near chance: {mean:.1f}% on average "
                                 f"over races, within {margin:.1f} points of 50%", mean))
    negatives = [row["score"] for row in pair_rows if row["label"] == 0]
    if negatives:
        median = statistics.median(negatives)
        if median > COLLAPSED_MEDIAN_COSINE:
            found.append(warning("collapsed embeddings", f"embeddings collapsed: the median cosine between "
                                 f"different identities is {median:.4f} (> {COLLAPSED_MEDIAN_COSINE})", median))
    return found


def upscaling_warnings(rows):
    """Warnings of an upscaler's evaluation rows (with `psnr_y` and `floor_psnr_y`, bicubic's on the same
    image): mean PSNR-Y more than BELOW_FLOOR_DB below bicubic's (PSNR capped at 100 dB as in selection)."""
    model = math.fsum(min(100.0, row["psnr_y"]) for row in rows) / len(rows)
    floor = math.fsum(min(100.0, row["floor_psnr_y"]) for row in rows) / len(rows)
    if model < floor - BELOW_FLOOR_DB:
        return [warning("below bicubic", f"the upscaler is below its bicubic floor: mean PSNR-Y {model:.3f} dB vs "
                        f"bicubic {floor:.3f} dB on the same images", model - floor)]
    return []


def show(warnings):
    for found in warnings:
        print(f"[warning] {found['check']}: {found['message']}")
