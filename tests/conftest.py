"""Fixtures shared by test modules."""
import pytest
import timm


@pytest.fixture
def offline_hub(monkeypatch):
    """timm as on a machine without network: pretrained weights load only from a local file."""
    original = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained and "pretrained_cfg_overlay" not in kwargs:
            raise OSError("hub unreachable")
        return original(name, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
