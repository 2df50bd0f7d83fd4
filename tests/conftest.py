"""Fixtures shared by test modules."""
import pytest
import timm

from racecomp import toyfairface, toyrfw


@pytest.fixture
def offline_hub(monkeypatch):
    """timm as on a machine without network: pretrained weights load only from a local file."""
    original = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained and "pretrained_cfg_overlay" not in kwargs:
            raise OSError("hub unreachable")
        return original(name, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)


@pytest.fixture(scope="session")
def small_study_data(tmp_path_factory):
    """Read-only demo data at 32 px for end-to-end study runs: FairFace (14 train, 14 val) and RFW (20 identities
    a race, 2 images each, 2 pairs a fold)."""
    root = tmp_path_factory.mktemp("small_study_data")
    return {"fairface": toyfairface.make_fairface(str(root / "ff"), n_train=14, n_val=14, size=32, seed=3),
            "rfw": toyrfw.make_rfw(root / "rfw", n_ids=20, images_per_id=2, pairs_per_fold=2, size=32, seed=1)}
