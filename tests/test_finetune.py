"""racecomp.finetune: parsing the unfreezing schedule, refusing what a strategy cannot do (in training: test_engine)."""
import pytest
from torch import nn

from racecomp import finetune


def test_unfreeze_text_is_parsed_or_refused():
    assert finetune.parse_unfreeze("0,2,4") == (0, 2, 4) and finetune.parse_unfreeze("") == ()
    with pytest.raises(ValueError, match="comma-separated"):
        finetune.parse_unfreeze("1;3")
    with pytest.raises(ValueError, match="increasing"):
        finetune.parse_unfreeze("3,1")


def test_bn_skip_refuses_model_without_shortcuts():
    model = nn.Module()
    model.encoder = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
    with pytest.raises(ValueError, match="shortcuts"):
        finetune.configure_finetune(model, "bn_skip")
