import math
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision

from racecomp.errors import InputError
from racecomp import losses, metrics

# torchvision vgg19 `features` indices, read off its layer list: conv, ReLU pairs with max-pools at 4, 9, 18, 27, 36.
KNOWN_CONV_INDICES = {"conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10, "conv3_4": 16,
                      "conv4_1": 19, "conv4_4": 25, "conv5_1": 28, "conv5_4": 34}


@pytest.fixture(scope="module")
def vgg_weights_file(tmp_path_factory):
    """TEST ONLY: a random-init vgg19 `features.*` state dict (He-normal convs) standing in for the ImageNet
    weights, which cannot be downloaded here. Never use such a file for a real perceptual loss."""
    generator = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        features = torchvision.models.vgg19(weights=None).features
    shapes = {key: value.shape for key, value in features.state_dict().items()}
    state = {}
    for key, shape in shapes.items():
        fan_in = math.prod(shape[1:]) if key.endswith("weight") else 1
        state[f"features.{key}"] = torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in) * 0.5
    path = tmp_path_factory.mktemp("vgg") / "vgg19_random_TEST_ONLY.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def vgg_loss(vgg_weights_file):
    return losses.VGGPerceptualLoss(weights_path=str(vgg_weights_file[0]))


def images(seed, shape=(2, 3, 16, 16)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------- pixel losses

def test_l1_hand_computed():
    hr = torch.zeros(1, 3, 4, 4)
    sr = hr.clone()
    sr[0, 0] = 0.8  # one channel of three off by 0.8 -> mean 0.8 / 3
    assert losses.l1_loss(hr, hr) == 0
    torch.testing.assert_close(losses.l1_loss(sr, hr), torch.tensor(0.8 / 3))


def test_charbonnier_is_eps_at_zero_and_close_to_l1_for_large_errors():
    hr = images(0)
    assert losses.CHARBONNIER_EPS == 1e-3
    torch.testing.assert_close(losses.charbonnier_loss(hr, hr), torch.tensor(1e-3))
    torch.testing.assert_close(losses.charbonnier_loss(hr + 1e-3, hr), torch.tensor(math.sqrt(2) * 1e-3))
    sr = hr + 0.5 * torch.sign(torch.randn(hr.shape, generator=torch.Generator().manual_seed(1)))
    charbonnier = losses.charbonnier_loss(sr, hr)
    assert torch.isfinite(charbonnier) and charbonnier > 0
    assert abs(charbonnier - losses.l1_loss(sr, hr)) < 2e-6  # sqrt(0.25 + 1e-6) - 0.5 = 1e-6


def test_pixel_losses_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        losses.l1_loss(torch.zeros(2, 3, 8, 8), torch.zeros(1, 3, 8, 8))  # would silently broadcast
    with pytest.raises(ValueError, match="same shape"):
        losses.charbonnier_loss(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 9))


# ----------------------------------------------------------------------------------------------- SSIM

def test_ssim_loss_zero_on_equal_and_one_minus_metric_otherwise():
    hr, sr = images(0), images(1)
    loss = losses.SSIMLoss()
    assert abs(loss(hr, hr).item()) < 1e-6
    expected = 1 - metrics.ssim(sr, hr, data_range=1.0).mean()
    torch.testing.assert_close(loss(sr, hr), expected)
    assert 0 < loss(sr, hr).item() <= 2


def test_ssim_loss_gradient_is_finite_and_fp32_under_autocast():
    hr = images(0)
    sr = (hr + 0.1 * images(1)).requires_grad_(True)
    reference = losses.SSIMLoss()(sr, hr)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = losses.SSIMLoss()(sr, hr)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, reference, rtol=0, atol=0)
    value.backward()
    assert torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------- VGG perceptual

def test_vgg19_conv_indices_match_torchvision_layer_list():
    indices = losses.vgg19_conv_indices()
    assert len(indices) == 16
    assert {name: indices[name] for name in KNOWN_CONV_INDICES} == KNOWN_CONV_INDICES


def test_vgg_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        losses.VGGPerceptualLoss(weights_path=str(tmp_path / "absent.pth"))


def test_vgg_offline_download_fails_loudly_and_says_how_to_pass_a_file(monkeypatch):
    real_vgg19 = torchvision.models.vgg19

    def offline_vgg19(weights=None, **kwargs):
        if weights is not None:
            raise urllib.error.URLError("no network")
        return real_vgg19(weights=None, **kwargs)

    monkeypatch.setattr(torchvision.models, "vgg19", offline_vgg19)
    with pytest.raises(InputError, match="weights_path"):
        losses.VGGPerceptualLoss()


def test_vgg_weights_file_of_another_shape_is_rejected_with_its_name(tmp_path, vgg_weights_file):
    _, state = vgg_weights_file
    missing = {key: value for key, value in state.items() if not key.startswith("features.34.")}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="missing.pth.*features.34.weight"):
        losses.VGGPerceptualLoss(weights_path=str(tmp_path / "missing.pth"))
    resized = dict(state, **{"features.34.weight": torch.zeros(3, 3, 3, 3)})
    torch.save(resized, tmp_path / "resized.pth")
    with pytest.raises(ValueError, match="resized.pth"):
        losses.VGGPerceptualLoss(weights_path=str(tmp_path / "resized.pth"))


def test_vgg_bad_layer_options_raise(vgg_weights_file):
    path = str(vgg_weights_file[0])
    with pytest.raises(ValueError, match="conv6_1"):
        losses.VGGPerceptualLoss(path, layers=("conv6_1",), layer_weights=(1.0,))
    with pytest.raises(ValueError, match="2 layer weights for 1"):
        losses.VGGPerceptualLoss(path, layers=("conv2_2",), layer_weights=(1.0, 1.0))


def test_vgg_loads_the_file_and_is_frozen(vgg_loss, vgg_weights_file):
    _, state = vgg_weights_file
    assert torch.equal(vgg_loss.features[0].weight, state["features.0.weight"])
    assert torch.equal(vgg_loss.features[34].weight, state["features.34.weight"])
    assert len(vgg_loss.features) == 35  # truncated right after conv5_4: no ReLU/pool beyond it
    assert not any(p.requires_grad for p in vgg_loss.parameters())
    vgg_loss.train()
    assert not vgg_loss.features.training


def test_vgg_loss_matches_an_independent_pre_activation_computation(vgg_loss, vgg_weights_file):
    _, state = vgg_weights_file
    # torchvision's own builder of the vgg19 ("E") layer list, without the 120M-parameter classifier
    reference_net = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])
    reference_net.load_state_dict({key[len("features."):]: value for key, value in state.items()})
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    sr, hr = images(0), images(1)
    expected = 0.0
    for index, weight in zip((7, 16, 25, 34), (0.1, 1.0, 1.0, 1.0)):
        head = reference_net[:index + 1]  # ends on the conv: the feature before its ReLU
        expected += weight * F.l1_loss(head((sr - mean) / std), head((hr - mean) / std))
    torch.testing.assert_close(vgg_loss(sr, hr), expected, rtol=1e-5, atol=0)
    assert vgg_loss(hr, hr) == 0


def test_vgg_runs_under_autocast_and_compares_features_in_fp32(vgg_loss):
    hr = images(1)
    sr = images(0).requires_grad_(True)
    reference = vgg_loss(sr, hr)
    conv_dtypes = []
    hook = vgg_loss.features[34].register_forward_hook(lambda module, inputs, output: conv_dtypes.append(output.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = vgg_loss(sr, hr)
    hook.remove()
    assert conv_dtypes == [torch.bfloat16, torch.bfloat16]  # the network in the autocast precision (sr, hr)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, reference, rtol=0.1, atol=0)  # bf16 keeps 8 significant bits
    assert all(layer.inplace for layer in vgg_loss.features if isinstance(layer, torch.nn.ReLU))
    value.backward()
    assert torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------- SRLoss

def test_srloss_pixel_only():
    sr, hr = images(0), images(1)
    total, parts = losses.SRLoss("l1")(sr, hr)
    torch.testing.assert_close(total, losses.l1_loss(sr, hr))
    assert parts.keys() == {"pixel"} and parts["pixel"].item() == pytest.approx(losses.l1_loss(sr, hr).item())
    total, parts = losses.SRLoss("charbonnier")(sr, hr)
    torch.testing.assert_close(total, losses.charbonnier_loss(sr, hr))
    assert losses.SRLoss("l1")(hr, hr)[0] == 0


def test_srloss_pixel_loss_in_the_imagenet_normalized_space():
    # The RaceComp source's L1 compares ImageNet-normalized tensors (load_redux.py: Normalize before the loss).
    sr, hr = images(0), images(1)
    mean = torch.tensor(losses.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(losses.IMAGENET_STD).view(1, 3, 1, 1)
    total, _ = losses.SRLoss("l1", pixel_space="imagenet")(sr, hr)
    torch.testing.assert_close(total, losses.l1_loss((sr - mean) / std, (hr - mean) / std), rtol=1e-6, atol=0)
    ratio = total / losses.l1_loss(sr, hr)
    assert 4.3 < ratio < 4.5  # 1 / std, about 4.4: the source's weight 0.1 is about 0.44 in [0, 1] units
    with pytest.raises(ValueError, match="--pixel-space 'lab'"):
        losses.SRLoss("l1", pixel_space="lab")


def test_srloss_weighted_sum_of_all_terms(vgg_weights_file):
    sr, hr = images(0), images(1)
    loss = losses.SRLoss("charbonnier", perceptual_weight=0.01, ssim_weight=0.5,
                         vgg_weights_path=str(vgg_weights_file[0]))
    total, parts = loss(sr, hr)
    assert set(parts) == {"pixel", "perceptual", "ssim_loss"}
    # Detached scalar tensors: reading them (a wait for the device) is left to the caller's log steps.
    assert all(value.dim() == 0 and not value.requires_grad for value in parts.values())
    torch.testing.assert_close(parts["ssim_loss"], losses.SSIMLoss()(sr, hr))
    torch.testing.assert_close(total, parts["pixel"] + 0.01 * parts["perceptual"] + 0.5 * parts["ssim_loss"],
                               rtol=1e-6, atol=0)
    assert torch.isfinite(total) and total > 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(pixel="l2"), "pixel loss 'l2'"),
    (dict(perceptual_weight=-1.0), "non-negative"),
    (dict(vgg_weights_path="vgg19.pth"), "perceptual weight is 0"),
])
def test_srloss_bad_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        losses.SRLoss(**kwargs)
