"""The answers of findings.md as data: one Finding per contrast row, the dose-response curves, the summary changes
that have no value, and Answers holding them (computed by racecomp.tables.questions, written by
racecomp.tables.findings; findings.csv's columns are Finding's fields)."""
import math
from dataclasses import dataclass, field


@dataclass
class Finding:
    """One contrast: a row of findings.csv and, rendered, a sentence of findings.md."""
    question: str  # the question it answers, e.g. "Does the under-sampling penalty depend on arch?"
    study: str  # the family
    kind: str  # "difference in differences", "main effect", "summary change", "vs fp32", "probe"
    metric: str
    race: str  # "" for a summary of all races
    quantity: str  # the race, or the summary ("std", "worst", "worst, relative", ...)
    contrast: str  # "arch=fastvit_sa24 - arch=resnet50"
    setting: str  # what the experiments share (e.g. "minority=black@0.2, scale=2")
    estimate: float
    lo: float
    hi: float
    p_value: float
    p_holm: float  # Holm over the races (or summaries) of one contrast
    scope: str  # "recipe" or "model"
    n_seeds: str  # seeds per experiment, "3/3/3/3"
    df: float
    units: str
    min_effect: float = math.nan
    seeds_needed: object = None  # int, math.inf (more than 100), or None (one seed: cannot be planned)
    primary: bool = False  # the pre-specified row: the under-sampled race, the STD, the probe result (main
    # effects have none: every race is on equal footing, and only Holm-adjusted claims are made)
    note: str = ""  # e.g. questions.TIES_NOTE_BOUNDS: the worst race is not separated from the runner-up
    a_value: float = math.nan  # the summary of each side (summary changes)
    b_value: float = math.nan
    p_family: float = math.nan  # Holm over the family of its question (see in_family); NaN outside it
    family_size: int = 1  # rows in that family; 0 outside it (a claim there is exploratory)
    ci: float = 0.95  # the level of lo, hi; claims are made at 1 - ci
    spread_seeds: int = 0  # seeds_needed's seed spread was estimated from this many seeds per experiment (the
    # fewest of the trained experiments; 0 when nothing was planned), planned from its planner.SPREAD_BOUND bound


def in_family(finding):
    """Whether a row belongs to the family of its question (study, question, metric), over which claims are
    Holm-adjusted: the pre-specified rows (the under-sampled race, the STD, the probe result), or for main effects,
    which have none, every race of every contrast. Any other row is exploratory."""
    return finding.primary or finding.kind == "main effect"


@dataclass
class DosePoint:
    weight: float
    penalty: float
    lo: float
    hi: float
    scope: str


@dataclass
class DoseCurve:
    """Minority penalty on one race against the under-sampling weight, for one set of other settings."""
    study: str
    metric: str
    race: str
    line: str  # what the curve is (e.g. "arch=resnet50, scale=2")
    points: list  # DosePoint, by weight descending
    onset: object  # the largest weight from which every smaller weight run has a penalty interval below 0, or None

    @property
    def below_zero(self):
        """The weights whose own penalty interval lies below 0, by weight descending."""
        return [point.weight for point in self.points if point.hi < 0]

    @property
    def scope(self):
        """'recipe' when every point is a recipe difference, else 'model'."""
        return "recipe" if all(point.scope == "recipe" for point in self.points) else "model"


@dataclass
class Unanswerable:
    """A summary change of a formed contrast that has no value (an SER with a race at 100% accuracy)."""
    study: str
    question: str
    metric: str
    contrast: str
    setting: str
    quantity: str
    why: str


@dataclass
class Answers:
    findings: list = field(default_factory=list)
    unformed: list = field(default_factory=list)  # (study, what, why)
    doses: list = field(default_factory=list)
    unanswerable: list = field(default_factory=list)  # Unanswerable
    ci: float = 0.95  # the level of every interval; claims at 1 - ci
