"""Face-recognition backbones (racecomp.facenets): arcface_torch compatibility, shapes, weight loading."""
import hashlib
import math

import pytest
import torch
from torch import nn

from racecomp import facenets
from racecomp.encoders import create_encoder

# Measured on the public definitions: insightface recognition/arcface_torch at commit
# 7fadd420c2351d0ffa8cac403421c1a3ed733365, backbones/iresnet.py iresnet18/34/50/100() and
# backbones/mobilefacenet.py get_mbf(fp16=False, num_features=512), instantiated on CPU.
# name: (parameters, of which frozen, state-dict entries, sha256 of the sorted "key:shape" lines)
ARCFACE_TORCH_ARCHITECTURES = {
    "iresnet18": (24025600, 512, 187, "31bf675e59f4fda4ec4517e3cefb0e231b37133e893e4c4eb6c0de0e9f738713"),
    "iresnet34": (34139328, 512, 331, "840640ff0e76e0c9c8efd969fbf003268fd85f7a594fa2e43d53a2c2eaa0de5a"),
    "iresnet50": (43590848, 512, 475, "2771a5e3db26a3fe81a653a9341d5fa2a02aeaa50769b8b454285b4ea8c8f4c1"),
    "iresnet100": (65156160, 512, 925, "957bd9830adf8fc85ebd911bd7fdc1c08b6e84c25395359de60f2c72e867dc5c"),
    "mobilefacenet": (2059520, 0, 333, "f6216ed5847ad7fb9fc3523a08da02d819ab1da35df71b3a6fe6dbfea091ad43"),
}
# Outputs of the same public modules in float64, eval mode, weights set by fill_deterministic and input by
# known_face(): (sum, sum of |.|, out[0, :4], out[0, -2:]). Checked here in float32, to float32 accuracy.
ARCFACE_TORCH_OUTPUTS = {
    "iresnet18": (-210.9442019859633, 3163.6315574257683,
                  [-5.443389525835849, -12.368790941702372, -12.528277416982831, -0.3788605571655467],
                  [12.129889525106988, -5.0853154349673435]),
    "mobilefacenet": (-58.36833160625404, 778.0952898910093,
                      [-0.09900232481642555, 0.0652633555508982, 0.4276477251789385, 0.44547122002037515],
                      [0.6831800874155858, -0.5896225126601354]),
}


def state_digest(model):
    lines = "\n".join(f"{key}:{tuple(value.shape)}" for key, value in sorted(model.state_dict().items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def fill_deterministic(model):
    """Seeded, well-scaled values for every state-dict tensor of `model`, drawn in float64 in sorted key order
    (the same function filled the public modules): conv/linear weights normal with variance 1/fan_in, BN scales
    and running variances U(0.5, 1.5), PReLU slopes U(0, 0.5), biases and running means normal with std 0.1."""
    modules = dict(model.named_modules())
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            owner_name, _, kind = name.rpartition(".")
            if kind == "num_batches_tracked":
                continue
            owner = modules[owner_name]
            uniform = torch.rand(tensor.shape, generator=generator, dtype=torch.float64)
            normal = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
            if isinstance(owner, nn.PReLU):
                tensor.copy_(0.5 * uniform)
            elif kind == "running_var" or (kind == "weight" and isinstance(owner, nn.modules.batchnorm._BatchNorm)):
                tensor.copy_(0.5 + uniform)
            elif kind == "weight":
                tensor.copy_(normal / math.sqrt(tensor[0].numel()))
            else:
                tensor.copy_(0.1 * normal)


def known_face():
    return torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1


@pytest.mark.parametrize("name", list(ARCFACE_TORCH_ARCHITECTURES))
def test_architecture_matches_arcface_torch(name):
    parameters, frozen, entries, digest = ARCFACE_TORCH_ARCHITECTURES[name]
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = facenets.get_model(name)
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert sum(p.numel() for p in model.parameters() if not p.requires_grad) == frozen
    assert len(model.state_dict()) == entries
    assert state_digest(model) == digest


def test_key_names_follow_arcface_torch():
    with torch.device("meta"):
        iresnet, mbf = facenets.iresnet50(), facenets.mobilefacenet()
    keys = list(iresnet.state_dict())
    assert keys[:4] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean"]
    assert "layer1.0.bn1.weight" in keys and "layer3.13.prelu.weight" in keys and "layer4.0.downsample.0.weight" in keys
    assert keys[-8:] == ["bn2.num_batches_tracked", "fc.weight", "fc.bias", "features.weight", "features.bias",
                         "features.running_mean", "features.running_var", "features.num_batches_tracked"]
    keys = list(mbf.state_dict())
    assert keys[0] == "layers.0.layers.0.weight" and "conv_sep.layers.2.weight" in keys
    assert "features.layers.2.weight" in keys and "features.layers.3.running_var" in keys


@pytest.mark.parametrize("name", list(ARCFACE_TORCH_OUTPUTS))
def test_forward_matches_arcface_torch(name):
    total, absolute_total, first, last = ARCFACE_TORCH_OUTPUTS[name]
    model = facenets.get_model(name).eval()
    fill_deterministic(model)
    with torch.no_grad():
        out = model(known_face().float()).double()
    assert out.shape == (1, 512)
    # float32 rounding (measured: at most 1.2e-5 of the mean |output|), with a 10x margin
    tolerance = 1e-4 * absolute_total / out.numel()
    assert out.sum().item() == pytest.approx(total, abs=out.numel() * tolerance)
    assert out.abs().sum().item() == pytest.approx(absolute_total, rel=1e-4)
    assert out[0, :4].tolist() == pytest.approx(first, abs=tolerance)
    assert out[0, -2:].tolist() == pytest.approx(last, abs=tolerance)


@pytest.mark.parametrize("name", ["iresnet34", "iresnet50", "iresnet100"])
def test_iresnet_embedding_shape_at_112(name):
    # Shapes only, on the meta device: these share IResNet.forward with iresnet18, whose values are checked above.
    with torch.device("meta"):
        out = facenets.get_model(name)(torch.zeros(2, 3, 112, 112))
    assert out.shape == (2, 512)


@pytest.mark.parametrize("name", ["resnet50", "fastvit_t8"])
def test_embedding_net_shape_at_112(name):
    torch.manual_seed(0)
    model = facenets.get_model(name).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 112, 112) * 2 - 1)
    assert out.shape == (1, 512) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_embedding_net_any_size_and_embedding_size():
    model = facenets.get_model("fastvit_t8", embedding_size=128).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 97, 61) * 2 - 1)
    assert out.shape == (2, 128)


def test_arcface_torch_models_reject_other_sizes():
    model = facenets.mobilefacenet().eval()
    with pytest.raises(ValueError, match="112x112"):
        model(torch.zeros(1, 3, 64, 64))


def test_embedding_net_feeds_encoder_imagenet_normalized_input():
    model = facenets.EmbeddingNet("fastvit_t8").eval()
    seen = []
    model.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))  # mid-grey: 0 in [-1, 1] is 0.5 in [0, 1]
    expected = [(0.5 - mean) / std for mean, std in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    assert seen[0][0, :, 0, 0].tolist() == pytest.approx(expected, rel=1e-6)
    # Mean/std are not checkpoint entries; the head is exactly bn1, fc, features.
    head_keys = {key for key in model.state_dict() if not key.startswith("encoder.")}
    assert head_keys == {"bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked",
                         "fc.weight", "features.weight", "features.bias", "features.running_mean",
                         "features.running_var", "features.num_batches_tracked"}
    assert not model.features.weight.requires_grad


def test_load_backbone_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    trained = facenets.mobilefacenet().eval()
    for module in trained.modules():  # non-default running statistics, so they must be loaded too
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    raw_path, checkpoint_path = tmp_path / "backbone.pth", tmp_path / "checkpoint.pth"
    torch.save(trained.state_dict(), raw_path)  # arcface_torch's backbone.pth layout
    torch.save({"model": trained.state_dict(), "epoch": 3, "args": {"lr": 0.1}}, checkpoint_path)  # ours
    x = torch.rand(1, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        expected = trained(x)
        for path, seed in ((raw_path, 1), (checkpoint_path, 2)):
            torch.manual_seed(seed)
            loaded = facenets.mobilefacenet().eval()
            facenets.load_backbone_weights(loaded, str(path))
            assert torch.equal(loaded(x), expected)
        assert not torch.equal(facenets.mobilefacenet().eval()(x), expected)  # a fresh model differs


def test_get_model_pretrained_path_loads(tmp_path):
    torch.manual_seed(0)
    source = facenets.iresnet18()
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    model = facenets.get_model("iresnet18", pretrained=True, pretrained_path=str(path))
    assert torch.equal(model.fc.weight, source.fc.weight)
    with pytest.raises(ValueError, match="never downloaded"):
        facenets.get_model("iresnet18", pretrained=True)
    with pytest.raises(ValueError, match="without --pretrained"):
        facenets.get_model("iresnet18", pretrained_path=str(path))
    with pytest.raises(ValueError, match="unknown face model"):
        facenets.get_model("r50")


def test_load_backbone_weights_lists_key_problems(tmp_path):
    state = facenets.mobilefacenet().state_dict()
    del state["conv_sep.layers.2.weight"]
    state["head.weight"] = torch.zeros(3)
    state["features.layers.2.weight"] = torch.zeros(128, 512)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as error:
        facenets.load_backbone_weights(facenets.mobilefacenet(), str(path))
    message = str(error.value)
    assert "bad.pth" in message and "1 missing keys: conv_sep.layers.2.weight" in message
    assert "1 unexpected keys: head.weight" in message
    assert "features.layers.2.weight (128, 512) vs model (512, 512)" in message
    with pytest.raises(FileNotFoundError):
        facenets.load_backbone_weights(facenets.mobilefacenet(), str(tmp_path / "absent.pth"))


def upscaler_like_state_dict(encoder_name):
    """What a UNet upscaler's state_dict looks like to the transfer: `encoder.*` plus decoder entries."""
    torch.manual_seed(2)
    encoder = create_encoder(encoder_name)
    for module in encoder.modules():  # BN statistics are copied too: make them differ from a fresh model's
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1.0, 1.0)
    state = {f"encoder.{key}": value for key, value in encoder.state_dict().items()}
    state["decoder.0.conv.weight"] = torch.zeros(8, 8, 3, 3)
    return state


def test_load_encoder_from_upscaler_copies_every_encoder_tensor():
    upscaler_state = upscaler_like_state_dict("fastvit_t8")
    torch.manual_seed(3)
    model = facenets.EmbeddingNet("fastvit_t8")
    copied = facenets.load_encoder_from_upscaler(model, upscaler_state)
    encoder_state = model.encoder.state_dict()
    assert copied == len(encoder_state) == len(upscaler_state) - 1
    assert all(torch.equal(value, upscaler_state[f"encoder.{key}"]) for key, value in encoder_state.items())


def test_load_encoder_from_real_upscaler():
    from racecomp.upscalers import build_upscaler

    upscaler = build_upscaler("fastvit_t8", 2)
    model = facenets.EmbeddingNet("fastvit_t8")
    assert facenets.load_encoder_from_upscaler(model, upscaler.state_dict()) == len(model.encoder.state_dict())
    upscaler_state = upscaler.state_dict()
    encoder_state = model.encoder.state_dict()
    assert all(torch.equal(value, upscaler_state[f"encoder.{key}"]) for key, value in encoder_state.items())
    # both models feed the encoder the same statistics
    assert torch.equal(model.mean, upscaler.mean) and torch.equal(model.std, upscaler.std)


def test_load_encoder_from_upscaler_rejects_other_architectures():
    model = facenets.EmbeddingNet("fastvit_t8")
    with pytest.raises(ValueError, match="missing"):
        facenets.load_encoder_from_upscaler(model, upscaler_like_state_dict("resnet50"))
    with pytest.raises(ValueError, match="no 'encoder"):
        facenets.load_encoder_from_upscaler(model, {"decoder.0.weight": torch.zeros(1)})
