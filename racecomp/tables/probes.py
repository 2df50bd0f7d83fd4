"""The probe results of an experiment (run_verify --probe gender, --bias-probe): one number per seed, their mean
and a t interval over the seeds (it covers another training run, not the probe's sampling error on its images)."""
import math

from racecomp import estimates
from racecomp.races import FAIRFACE_RACES

PROBE_F1 = "probe_f1:"  # + race: the gender probe's F1 on that race's FairFace val images (f1_in)
# metric -> (name in tables, range of the value: an interval is clipped to it)
PROBE_METRICS = {"probe_f1_worst": ("gender-probe F1, worst race", (0.0, 1.0)),
                 "probe_f1_gap": ("gender-probe F1 gap (best - worst race)", (0.0, 1.0)),
                 "bias_transfer_score": ("Bias Transfer Score", (-1.0, 1.0))}


def probe_seed_values(experiment):
    """{metric: {seed label: value}} over the seeds whose run has that probe, metrics in table order:
    "probe_f1:<race>" (the gender probe's F1 on the race's images, in [0, 1]), "probe_f1_worst" and
    "probe_f1_gap" (min and max - min of a seed's per-race F1), "bias_transfer_score" (in [-1, 1])."""
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
    return {metric: values[metric] for metric in order if metric in values}


def seed_interval(values, ci, bounds=(-math.inf, math.inf)):
    """(mean, lo, hi, sd) of per-seed values: sd with ddof 1, the Student t interval (k - 1 df) of the mean
    clipped to `bounds` (estimates.interval); lo, hi and sd NaN for one seed."""
    k = len(values)
    mean = math.fsum(values) / k
    if k < 2:
        return mean, math.nan, math.nan, math.nan
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (k - 1))
    lo, hi = estimates.interval({"value": mean, "var": sd * sd / k, "df": k - 1.0, "kind": "t", "bounds": bounds,
                                 "units": (float(k),)}, ci)
    return mean, lo, hi, sd


def probe_rows(experiment, ci, problems):
    """probes_<block>.csv rows of the experiment ([] without probes): per metric the mean over seeds, its
    seed_interval (blank lo/hi/seed_sd with one seed) and the seeds behind it. Reported: a seed without a probe
    its other seeds have, and seeds whose gender probes cover different races."""
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
    for metric, by_seed in probe_seed_values(experiment).items():
        race = metric[len(PROBE_F1):] if metric.startswith(PROBE_F1) else ""
        name, bounds = (f"gender-probe F1, {race}", (0.0, 1.0)) if race else PROBE_METRICS[metric]
        mean, lo, hi, sd = seed_interval(list(by_seed.values()), ci, bounds)
        blank = {key: "" if math.isnan(value) else value for key, value in (("lo", lo), ("hi", hi), ("seed_sd", sd))}
        rows.append({**experiment.columns, "metric": metric, "race": race, "quantity": name, "mean": mean, **blank,
                     "n_seeds": len(by_seed), "seeds": ";".join(by_seed),
                     "code_version": ";".join(sorted({code_versions[seed] for seed in by_seed})),
                     "level": "recipe" if len(by_seed) > 1 else "one seed, no interval"})
    return rows
