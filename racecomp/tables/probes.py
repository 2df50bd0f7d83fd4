"""The probe studies in the tables (run_verify --probe gender, --bias-probe): per-seed values of each probe
result, and their mean and seed-level interval per experiment.

A probe result is one number per trained model (seed). Its interval is over the seeds: Student t with k - 1 df
on the k per-seed values, so it covers the seed-to-seed variation of the result (the recipe: another training
run with another seed), not the probe's own sampling error on the evaluation images; one seed gives no interval.
"""
import math

from racecomp.races import FAIRFACE_RACES
from racecomp import estimates

PROBE_F1 = "probe_f1:"  # + race: the gender probe's F1 on that race's FairFace val images (f1_in)
# metric -> (name in tables, range of the value: an interval is clipped to it)
PROBE_METRICS = {"probe_f1_worst": ("gender-probe F1, worst race", (0.0, 1.0)),
                 "probe_f1_gap": ("gender-probe F1 gap (best - worst race)", (0.0, 1.0)),
                 "bias_transfer_score": ("Bias Transfer Score", (-1.0, 1.0))}


def probe_seed_values(experiment, by_seed=False):
    """Per metric, the per-seed values of the experiment's probe results, in seed order; only the seeds whose
    run has that probe. Metrics: "probe_f1:<race>" (F1 of the gender probe, positive class Female, on the
    race's images; a fraction in [0, 1]), "probe_f1_worst" and "probe_f1_gap" (min and max - min of a seed's
    per-race F1), "bias_transfer_score" (in [-1, 1]). by_seed=True: {metric: {seed label: value}}, so that the
    seeds of two experiments can be paired."""
    values = {}
    for run in experiment.runs:
        seed = run.columns["seed"]
        if run.gender_probe:
            f1 = {row["race"]: row["f1_in"] for row in run.gender_probe}
            for race, value in f1.items():
                values.setdefault(PROBE_F1 + race, {})[seed] = value
            values.setdefault("probe_f1_worst", {})[seed] = min(f1.values())
            values.setdefault("probe_f1_gap", {})[seed] = max(f1.values()) - min(f1.values())
        if run.bias_transfer_score is not None:
            values.setdefault("bias_transfer_score", {})[seed] = run.bias_transfer_score
    order = [PROBE_F1 + race for race in FAIRFACE_RACES] + list(PROBE_METRICS)
    values = {metric: values[metric] for metric in order if metric in values}
    return values if by_seed else {metric: list(by_seed.values()) for metric, by_seed in values.items()}


def seed_interval(values, ci, bounds=(-math.inf, math.inf)):
    """(mean, lo, hi, sd) of per-seed values: mean over the k seeds, sd with ddof 1, and the Student t interval
    mean +- t(1 - (1 - ci) / 2, k - 1) * sd / sqrt(k) clipped to `bounds` (estimates.interval: seeds that
    agree exactly get its exact sign-test claim); lo, hi and sd NaN for one seed."""
    k = len(values)
    mean = math.fsum(values) / k
    if k < 2:
        return mean, math.nan, math.nan, math.nan
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (k - 1))
    lo, hi = estimates.interval({"value": mean, "var": sd * sd / k, "df": k - 1.0, "kind": "t", "bounds": bounds,
                                 "units": (float(k),)}, ci)
    return mean, lo, hi, sd


def metric_name(metric):
    """A probe metric's name in the tables."""
    if metric.startswith(PROBE_F1):
        return f"gender-probe F1, {metric[len(PROBE_F1):]}"
    return PROBE_METRICS[metric][0]


def probe_rows(experiment, ci, problems):
    """CSV rows of the experiment's probe results ([] without any): per metric (probe_seed_values) the mean
    over seeds, the t interval over seeds (seed_interval; blank lo/hi with one seed) and the seeds behind it.
    A run of the experiment without a probe its other seeds have, and seeds whose gender probes cover
    different races (their worst race and gap are not comparable), are reported."""
    values = probe_seed_values(experiment, by_seed=True)
    for name, has in (("gender probe", lambda run: run.gender_probe),
                      ("Bias Transfer Score", lambda run: run.bias_transfer_score is not None)):
        having = [run for run in experiment.runs if has(run)]
        for run in [run for run in experiment.runs if not has(run)] if having else []:
            problems.add(run.path, f"no {name} while {len(having)} other seed(s) of its experiment have one: "
                                   f"the experiment's probe rows use those seed(s) only")
    race_sets = {tuple(sorted(row["race"] for row in run.gender_probe)) for run in experiment.runs
                 if run.gender_probe}
    if len(race_sets) > 1:
        problems.add(experiment.runs[0].path, f"the seeds' gender probes cover different races {sorted(race_sets)}: "
                                              f"worst race and gap are over different races")
    code_versions = {run.columns["seed"]: run.columns["code_version"] for run in experiment.runs}
    rows = []
    for metric, by_seed in values.items():
        bounds = (0.0, 1.0) if metric.startswith(PROBE_F1) else PROBE_METRICS[metric][1]
        mean, lo, hi, sd = seed_interval(list(by_seed.values()), ci, bounds)
        race = metric[len(PROBE_F1):] if metric.startswith(PROBE_F1) else ""
        rows.append({**experiment.columns, "metric": metric, "race": race, "quantity": metric_name(metric),
                     "mean": mean, "lo": "" if math.isnan(lo) else lo, "hi": "" if math.isnan(hi) else hi,
                     "seed_sd": "" if math.isnan(sd) else sd, "n_seeds": len(by_seed), "seeds": ";".join(by_seed),
                     "code_version": ";".join(sorted({code_versions[seed] for seed in by_seed})),
                     "level": "recipe" if len(by_seed) > 1 else "one seed, no interval"})
    return rows
