"""The shared timm encoder factory: local ImageNet weights load, and nothing falls back to random weights;
the stages staged unfreezing opens, in upscalers and face-recognition backbones alike."""
import pytest
import timm
import torch

from racecomp.errors import InputError
from racecomp import encoders, facenets, upscalers


def test_pretrained_path_loads_full_model_weights_into_the_feature_encoder(tmp_path):
    full = timm.create_model("fastvit_t8", pretrained=False)
    torch.save(full.state_dict(), tmp_path / "fastvit_t8.pth")
    encoder = encoders.create_encoder("fastvit_t8", pretrained=True, pretrained_path=str(tmp_path / "fastvit_t8.pth"))
    # FastViT's features_only module flattens names (stem.0 -> stem_0): timm's loader maps them.
    assert torch.equal(encoder.state_dict()["stem_0.conv_kxk.0.conv.weight"],
                       full.state_dict()["stem.0.conv_kxk.0.conv.weight"])


def test_missing_weights_are_an_error_never_random_weights(tmp_path, offline_hub):
    with pytest.raises(FileNotFoundError, match="no such file"):
        encoders.create_encoder("resnet50", pretrained=True, pretrained_path=str(tmp_path / "absent.pth"))
    with pytest.raises(ValueError, match="without --pretrained"):
        encoders.create_encoder("resnet50", pretrained=False, pretrained_path=str(tmp_path / "absent.pth"))
    with pytest.raises(InputError, match="--pretrained-path resnet50.pth"):
        encoders.create_encoder("resnet50", pretrained=True)


def test_unknown_encoder_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: resnet50, fastvit_t8"):
        encoders.create_encoder("resnet18")


@pytest.mark.parametrize("build", [lambda arch: upscalers.UNetUpscaler(arch, 2), facenets.EmbeddingNet],
                         ids=["upscaler", "embedding_net"])
@pytest.mark.parametrize("arch, first, last", [
    ("resnet50", ("encoder.conv1.", "encoder.bn1."), ("encoder.layer4.",)),
    ("fastvit_t8", ("encoder.stem_0.", "encoder.stem_1.", "encoder.stem_2.", "encoder.stages_0."),
     ("encoder.stages_3.",)),
])
def test_encoder_stage_prefixes_cover_every_encoder_parameter_once(build, arch, first, last):
    model = build(arch)
    stages = encoders.encoder_stage_prefixes(model)
    assert len(stages) == len(model.encoder.feature_info.channels())
    assert stages[0] == first and stages[-1] == last
    prefixes = [prefix for stage in stages for prefix in stage]
    for name, _ in model.named_parameters():
        matches = sum(name.startswith(prefix) for prefix in prefixes)
        assert matches == (1 if name.startswith("encoder.") else 0), name


@pytest.mark.parametrize("name", ["iresnet18", "mobilefacenet"])
def test_models_without_a_timm_encoder_have_no_stages_to_unfreeze(name):
    with torch.device("meta"):
        model = facenets.get_model(name)
    with pytest.raises(ValueError, match=f"{type(model).__name__} has no timm encoder.*--unfreeze"):
        encoders.encoder_stage_prefixes(model)
