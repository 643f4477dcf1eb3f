"""Tests of helpers.training.models: ResNet18 surgery, ImageNet adaptation (offline), the breath-sound CNN, the
input standardisation both carry, and the side of ResNet18's layer4 maps."""

from __future__ import annotations

import math
import os
import urllib.error

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet18

from helpers.training.models import (
    ARCHITECTURES,
    InputStandardisation,
    adapt_conv1_to_grayscale,
    breath_cnn,
    count_parameters,
    layer4_side,
    layer_output_shapes,
    resnet18_xray,
)


def test_resnet18_xray_has_one_input_channel_and_one_logit():
    torch.manual_seed(0)
    model = resnet18_xray().eval()
    conv1 = model.conv1
    assert (conv1.in_channels, conv1.out_channels) == (1, 64)
    assert conv1.kernel_size == (7, 7) and conv1.stride == (2, 2) and conv1.padding == (3, 3)
    assert conv1.bias is None
    assert (model.fc.in_features, model.fc.out_features) == (512, 1)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 224, 224)).shape == (2, 1)
        assert model(torch.randn(3, 1, 32, 32)).shape == (3, 1)  # global pooling: any size >= 32
    assert count_parameters(model) == 11_170_753  # the standardisation adds buffers, no parameters
    assert model.architecture_name == "resnet18_xray"
    assert list(dict(model.named_children()))[0] == "normalise"  # listed first, where it runs


def test_the_model_standardises_its_input_with_buffers_that_travel_with_the_weights():
    torch.manual_seed(0)
    model = resnet18_xray(mean=0.4, std=0.2).eval()
    assert isinstance(model.normalise, InputStandardisation)
    assert (float(model.normalise.mean), float(model.normalise.std)) == pytest.approx((0.4, 0.2))
    state = model.state_dict()
    assert float(state["normalise.mean"]) == pytest.approx(0.4) and float(
        state["normalise.std"]
    ) == pytest.approx(0.2)
    assert not any(name.startswith("normalise") for name, _ in model.named_parameters())  # never trained
    x = torch.rand(2, 1, 32, 32)  # the image in [0, 1]
    torch.manual_seed(0)
    plain = resnet18(num_classes=1)  # torchvision's forward, fed the standardised image by hand
    plain.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    plain.load_state_dict({k: v for k, v in state.items() if not k.startswith("normalise.")})
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain.eval()((x - 0.4) / 0.2))
    assert resnet18_xray().normalise.extra_repr() == "mean=0.5000, std=0.2500"  # the defaults
    moved = model.to("meta")  # buffers move with the model (to any device)
    assert moved.normalise.mean.device.type == "meta" and moved.normalise.std.device.type == "meta"


def test_input_standardisation_by_hand_and_its_errors():
    layer = InputStandardisation(0.25, 0.5)
    x = torch.tensor([[[[0.0, 0.25, 1.0]]]])
    torch.testing.assert_close(layer(x), torch.tensor([[[[-0.5, 0.0, 1.5]]]]))
    assert layer(x).shape == x.shape and list(layer.parameters()) == []
    assert set(layer.state_dict()) == {"mean", "std"}
    for std in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="std must be > 0"):
            InputStandardisation(0.5, std)
    with pytest.raises(ValueError, match="std must be > 0, got 0"):
        resnet18_xray(std=0)
    with pytest.raises(ValueError, match="std must be > 0"):
        breath_cnn(std=0.0)


def test_count_parameters_can_skip_frozen_ones():
    model = breath_cnn(n_classes=2, width=4)
    total = count_parameters(model, trainable_only=False)
    model.fc.weight.requires_grad_(False)
    assert count_parameters(model) == total - model.fc.weight.numel()
    assert count_parameters(model, trainable_only=False) == total


def test_adapt_conv1_sums_the_rgb_filters_and_drops_fc():
    torch.manual_seed(0)
    rgb = resnet18(weights=None).state_dict()
    adapted = adapt_conv1_to_grayscale(rgb)
    assert adapted["conv1.weight"].shape == (64, 1, 7, 7)
    torch.testing.assert_close(adapted["conv1.weight"][:, 0], rgb["conv1.weight"].sum(dim=1))
    assert not any(k.startswith("fc.") for k in adapted)
    assert torch.equal(adapted["layer1.0.conv1.weight"], rgb["layer1.0.conv1.weight"])
    # The point of summing: a grey image (R = G = B) gives the RGB network's exact response.
    grey = torch.rand(1, 1, 20, 20)
    rgb_response = F.conv2d(grey.expand(1, 3, 20, 20), rgb["conv1.weight"], stride=2, padding=3)
    grey_response = F.conv2d(grey, adapted["conv1.weight"], stride=2, padding=3)
    torch.testing.assert_close(grey_response, rgb_response, rtol=1e-5, atol=1e-5)


def test_adapt_conv1_rejects_a_non_rgb_state_dict():
    with pytest.raises(
        ValueError, match=r"conv1.weight should be out x 3 x k x k \(RGB\), got \(64, 1, 7, 7\)"
    ):
        adapt_conv1_to_grayscale({"conv1.weight": torch.zeros(64, 1, 7, 7)})
    with pytest.raises(ValueError, match="has no 'conv1.weight'"):
        adapt_conv1_to_grayscale({"fc.weight": torch.zeros(1, 512)})


def test_pretrained_loads_imagenet_weights_with_summed_conv1(monkeypatch):
    torch.manual_seed(1)
    fake_imagenet = resnet18(weights=None).state_dict()
    urls = []

    def fake_download(url, progress=True, check_hash=False):
        urls.append(url)
        return {k: v.clone() for k, v in fake_imagenet.items()}

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    model = resnet18_xray(pretrained=True, mean=0.3, std=0.2)
    assert urls == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    assert (float(model.normalise.mean), float(model.normalise.std)) == pytest.approx((0.3, 0.2))
    torch.testing.assert_close(model.conv1.weight.data[:, 0], fake_imagenet["conv1.weight"].sum(dim=1))
    assert torch.equal(model.layer4[1].conv2.weight.data, fake_imagenet["layer4.1.conv2.weight"])
    assert model.fc.weight.shape == (1, 512)


def test_pretrained_offline_raises_a_clear_runtime_error(monkeypatch):
    def offline(url, progress=True, check_hash=False):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError) as info:
        resnet18_xray(pretrained=True)
    message = str(info.value)
    assert message.startswith("Could not download the ImageNet weights for ResNet18 (URLError:")
    assert "connect to the internet" in message
    hub = torch.hub.get_dir().replace(os.path.expanduser("~"), "~", 1)  # the home folder written as ~
    assert hub in message and "resnet18-f37072fd.pth" in message
    assert "resnet18_xray(pretrained=False)" in message
    assert isinstance(info.value.__cause__, urllib.error.URLError)


def test_breath_cnn_shapes_and_gap_linear_head():
    torch.manual_seed(0)
    model = breath_cnn(mean=-2.0, std=4.0).eval()
    x = torch.randn(3, 1, 96, 64)
    with torch.no_grad():
        logits = model(x)
        maps = model.features(model.block3(model.block2(model.block1((x + 2.0) / 4.0))))
    assert logits.shape == (3, 4)
    assert maps.shape == (3, 128, 12, 8)
    # GAP + linear: the logits are the fc layer applied to the spatial means of `features`,
    # which is what makes CAM exact for this network.
    torch.testing.assert_close(logits, model.fc(maps.mean(dim=(2, 3))))
    assert 200_000 < count_parameters(model) < 300_000
    assert model.architecture_name == "breath_cnn"
    assert model.architecture_kwargs == {"n_classes": 4, "in_channels": 1, "width": 32, "dropout": 0.2}
    assert list(dict(model.named_children()))[0] == "normalise"
    assert (float(model.normalise.mean), float(model.normalise.std)) == (-2.0, 4.0)
    default = breath_cnn().normalise
    assert (float(default.mean), float(default.std)) == (0.0, 1.0)  # patches used as they are


def test_breath_cnn_options_and_registry():
    model = breath_cnn(n_classes=2, in_channels=3, width=8).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 96, 48)).shape == (2, 2)
    assert model.block1[0].in_channels == 3
    assert set(ARCHITECTURES) == {"resnet18_xray", "breath_cnn"}
    rebuilt = ARCHITECTURES["breath_cnn"](**model.architecture_kwargs)
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]


def test_layer_output_shapes_of_resnet18_halve_five_times_and_leave_the_model_as_it_was():
    model = resnet18_xray().train()
    shapes = layer_output_shapes(model, (1, 1, 224, 224))
    assert list(shapes) == [
        "normalise",
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "avgpool",
        "fc",
    ]
    assert shapes["normalise"] == (1, 1, 224, 224)
    assert shapes["conv1"] == (1, 64, 112, 112) and shapes["maxpool"] == (1, 64, 56, 56)
    assert (
        shapes["layer4"] == (1, 512, 7, 7) and shapes["avgpool"] == (1, 512, 1, 1) and shapes["fc"] == (1, 1)
    )
    assert layer_output_shapes(model, (1, 1, 100, 100), ["layer4"]) == {
        "layer4": (1, 512, 4, 4)
    }  # ceil(100/32)
    assert model.training and not model.conv1._forward_hooks and not model.layer4._forward_hooks
    with pytest.raises(ValueError, match="no top-level module"):
        layer_output_shapes(model, (1, 1, 64, 64), ["layer5"])


@pytest.mark.parametrize(
    ("size", "side"), [(224, 7), (225, 8), (160, 5), (100, 4), (64, 2), (33, 2), (32, 1)]
)
def test_layer4_side_is_the_side_of_the_real_layer4_maps(size, side):
    model = resnet18_xray()
    assert layer4_side(size) == side
    assert layer_output_shapes(model, (1, 1, size, size), ["layer4"]) == {"layer4": (1, 512, side, side)}


def test_layer4_side_rounds_up_five_times_not_down_once():
    assert layer4_side(100) == 4 and 100 // 32 == 3  # the mistake the course's exercise solution once made
    assert [layer4_side(s) for s in (1, 2, 31, 32, 33, 64, 65, 96, 97)] == [1, 1, 1, 1, 2, 2, 3, 3, 4]
    assert all(layer4_side(s) == math.ceil(s / 32) for s in range(1, 1025))
