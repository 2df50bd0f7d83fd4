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

# Verification: a model at chance scores ~50% with the best threshold of each fold; by noise alone it lands
# within about 2 binomial standard errors (100 / sqrt(n) points at n pairs), never closer than 5 points.
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
    """Warnings of a verification result: accuracy at chance on every race (per_race_table rows), embeddings
    collapsed (median cosine of the different-identity pairs, label 0, in per_pair rows)."""
    found = []
    at_chance = [row for row in table if row["accuracy"] < 50.0 + chance_margin(row["n_pairs"])]
    if table and len(at_chance) == len(table):
        worst = max(row["accuracy"] for row in table)
        found.append(warning("chance accuracy", f"verification accuracy is at chance on every race (best race "
                             f"{worst:.1f}%, within {chance_margin(min(r['n_pairs'] for r in table)):.1f} points of "
                             f"50%)", worst))
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
