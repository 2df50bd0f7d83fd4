"""The answers of findings.md as data (computed by tables.questions, written by tables.findings): a Finding per
contrast row (findings.csv's columns are its fields), dose-response curves, summary changes without a value."""
import math
from dataclasses import dataclass, field


@dataclass
class Finding:
    """One contrast: a row of findings.csv and, rendered, a sentence of findings.md."""
    question: str  # e.g. "Does the under-sampling penalty depend on arch?"
    study: str  # the family
    kind: str  # "difference in differences", "main effect", "summary change", "vs fp32", "probe"
    metric: str
    race: str  # "" for a summary of all races
    quantity: str  # the race, or the summary ("std", "worst", "worst, relative", ...)
    contrast: str  # "arch=fastvit_sa24 - arch=resnet50"
    setting: str  # what the experiments share (e.g. "data=black@0.2, scale=2")
    estimate: float
    lo: float
    hi: float
    p_value: float
    p_holm: float  # Holm over the races (or summaries) of one contrast
    scope: str  # "recipe" or "model"
    n_seeds: str  # seeds per experiment, "3/3/3/3" ("exact" for one known exactly)
    df: float
    units: str
    min_effect: float = math.nan
    seeds_needed: object = None  # int, math.inf (more than 100), or None (not planned)
    primary: bool = False  # pre-specified: the under-sampled race, the STD, the probe result (main effects have none)
    note: str = ""  # e.g. questions.TIES_NOTE_BOUNDS
    a_value: float = math.nan  # the summary of each side (summary changes)
    b_value: float = math.nan
    p_family: float = math.nan  # Holm over the family of its question; NaN outside it
    family_size: int = 1  # rows in that family; 0 outside it (a claim there is exploratory)
    ci: float = 0.95  # the level of lo, hi; claims are made at 1 - ci
    spread_seeds: int = 0  # seeds per experiment behind seeds_needed's spread (0: nothing planned)


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

    @property
    def below_zero(self):
        """The weights whose own penalty interval lies below 0, by weight descending."""
        return [point.weight for point in self.points if point.hi < 0]

    @property
    def onset(self):
        """The largest weight from which every smaller weight's penalty interval lies below 0, or None."""
        onset = None
        for point in reversed(self.points):  # from the smallest weight up
            if not point.hi < 0:
                break
            onset = point.weight
        return onset

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
    findings: list = field(default_factory=list)  # Finding
    unformed: list = field(default_factory=list)  # (study, what, why) of each contrast not formed
    doses: list = field(default_factory=list)  # DoseCurve
    unanswerable: list = field(default_factory=list)  # Unanswerable
    ci: float = 0.95  # the level of every interval; claims at 1 - ci
