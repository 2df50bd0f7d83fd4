"""The shared timm encoder factory: local ImageNet weights load, and nothing falls back to random weights."""
import pytest
import timm
import torch

from racecomp import encoders


def test_pretrained_path_loads_full_model_weights_into_the_feature_encoder(tmp_path):
    full = timm.create_model("fastvit_t8", pretrained=False)
    torch.save(full.state_dict(), tmp_path / "fastvit_t8.pth")
    encoder = encoders.create_encoder("fastvit_t8", pretrained=True, pretrained_path=str(tmp_path / "fastvit_t8.pth"))
    # FastViT's features_only module flattens names (stem.0 -> stem_0): timm's loader maps them.
    assert torch.equal(encoder.state_dict()["stem_0.conv_kxk.0.conv.weight"],
                       full.state_dict()["stem.0.conv_kxk.0.conv.weight"])


def test_missing_weights_are_an_error_never_random_weights(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no such file"):
        encoders.create_encoder("resnet50", pretrained=True, pretrained_path=str(tmp_path / "absent.pth"))
    with pytest.raises(ValueError, match="without --pretrained"):
        encoders.create_encoder("resnet50", pretrained=False, pretrained_path=str(tmp_path / "absent.pth"))
    original = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained and "pretrained_cfg_overlay" not in kwargs:
            raise OSError("hub unreachable")
        return original(name, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="--pretrained-path resnet50.pth"):
        encoders.create_encoder("resnet50", pretrained=True)


def test_unknown_encoder_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: resnet50, fastvit_t8"):
        encoders.create_encoder("resnet18")
