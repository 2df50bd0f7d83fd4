"""Per-group aggregation: every item counted under its own label."""
from racecomp import evaluation
from racecomp.races import FAIRFACE_RACES


def test_mean_by_group_counts_each_row_under_its_own_label():
    rows = [{"race": "Black", "v": 1.0}, {"race": "White", "v": 3.0}, {"race": "Black", "v": 2.0}]
    table = evaluation.mean_by_group(rows, ["v"], order=FAIRFACE_RACES)
    assert table == [{"race": "White", "n": 1, "v": 3.0}, {"race": "Black", "n": 2, "v": 1.5}]

