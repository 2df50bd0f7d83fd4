"""Race vocabularies of FairFace and RFW, command-line slugs, and strict label checks.

Labels are kept exactly as each dataset spells them on disk. Anything read from a data file goes
through `check_label`, so a misspelled label (``Latino Hispanic`` for ``Latino_Hispanic``) is an
error naming the file and line, never a group that silently matches nothing.
"""

FAIRFACE_RACES = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern")
RFW_RACES = ("African", "Asian", "Caucasian", "Indian")

# Approximate correspondence for cross-dataset work only. The two datasets annotate differently
# (FairFace: human annotators, 7 groups; RFW/BUPT: 4 groups from an automatic race classifier), so
# a FairFace group maps to the RFW group it is usually counted under, and groups with no RFW
# counterpart (Latino_Hispanic, Middle Eastern) map to None rather than being forced into one.

from racecomp.errors import InputError
FAIRFACE_TO_RFW = {
    "White": "Caucasian",
    "Black": "African",
    "Latino_Hispanic": None,
    "East Asian": "Asian",
    "Southeast Asian": "Asian",
    "Indian": "Indian",
    "Middle Eastern": None,
}


def slug(label):
    """Command-line name of a label: lower case, spaces to underscores (``East Asian`` -> ``east_asian``)."""
    return label.lower().replace(" ", "_")


def parse_race(name, vocabulary, allow_none=False):
    """Label of `vocabulary` whose slug equals `name` (case-insensitive); 'none' -> None if allowed.

    Raises ValueError listing the valid names, so a typo never becomes a run that under-samples nobody.
    """
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    if allow_none and key == "none":
        return None
    for label in vocabulary:
        if slug(label) == key:
            return label
    valid = [slug(label) for label in vocabulary] + (["none"] if allow_none else [])
    raise InputError(f"unknown race {name!r}; valid names: {', '.join(valid)}")


def check_label(label, vocabulary, where):
    """Return `label` if it is spelled exactly as in `vocabulary`, else raise naming `where` (file:line)."""
    if label not in vocabulary:
        raise InputError(f"{where}: unknown race label {label!r}; expected one of {list(vocabulary)}")
    return label
