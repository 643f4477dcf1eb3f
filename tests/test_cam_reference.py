"""helpers.explain.cam against two independent implementations: Captum and pytorch-grad-cam (test-only
dependencies).

Conventions made equal: Captum's LayerGradCam with ``relu_attributions=True``, then bilinear upsampling
(``align_corners=False``) and per-image min-max; pytorch-grad-cam's GradCAM scales each map to [0, 1] at
the layer's resolution, resizes it with ``cv2.resize`` (bilinear, half-pixel centres like
``align_corners=False``) and scales again, which equals our upsample-then-scale up to its 1e-7 epsilon.
Random weights, seeded, eval mode, small inputs.

Each comparison gives the same model and the same input to both sides. Most use a bare torchvision ResNet18
(standardised inputs); the last test uses the course's ``resnet18_xray`` itself, whose ``normalise`` module
standardises an image in [0, 1] with a non-trivial mean and std inside the model, so the input gradients of
both sides are taken with respect to that image.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from model_checks import Negated
from torch import nn

from helpers.explain.cam import grad_cam, guided_backprop, guided_grad_cam, min_max_normalize, resolve_layer
from helpers.training.models import resnet18_xray

captum_attr = pytest.importorskip("captum.attr")
pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Captum warns that it sets hooks


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=1)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model.eval()


@pytest.fixture(scope="module")
def densenet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.densenet121(num_classes=3).eval()


@pytest.fixture(scope="module")
def xray() -> torch.Tensor:
    return torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def rgb() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def captum_grad_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    maps = captum_attr.LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    return min_max_normalize(
        F.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    )


def library_grad_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, targets: list) -> torch.Tensor:
    with pytorch_grad_cam.GradCAM(model, [layer]) as cam:
        return torch.from_numpy(cam(x, targets=targets))


def close(ours: torch.Tensor, reference: torch.Tensor, tolerance: float = 1e-5) -> bool:
    """Equal to ``tolerance`` relative to the reference's largest value (maps in [0, 1]: absolute)."""
    return torch.allclose(ours, reference.detach(), rtol=0, atol=tolerance * float(reference.abs().max()))


@pytest.mark.parametrize("layer", ["layer4", "layer3", "layer4.1.bn2"])
def test_grad_cam_matches_captum_on_resnet18(resnet, xray, layer):
    module = resolve_layer(resnet, layer)
    assert close(grad_cam(resnet, xray, layer, target=1), captum_grad_cam(resnet, module, xray, 0))
    assert close(grad_cam(resnet, xray, layer, target=0), captum_grad_cam(Negated(resnet), module, xray, 0))


def test_raw_grad_cam_matches_captum_at_the_layer_resolution(resnet, xray):
    raw = captum_attr.LayerGradCam(resnet, resnet.layer3).attribute(xray, target=0, relu_attributions=True)
    ours = grad_cam(resnet, xray, "layer3", normalize=False, upsample=False)
    assert ours.shape == raw.shape[:1] + raw.shape[2:] == (2, 4, 4)
    assert close(ours, raw[:, 0])


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_grad_cam_matches_pytorch_grad_cam_on_resnet18(resnet, xray, layer):
    module = resolve_layer(resnet, layer)
    positive = library_grad_cam(resnet, module, xray, [ClassifierOutputTarget(0)] * 2)
    assert close(grad_cam(resnet, xray, layer, target=1), positive)
    negative = library_grad_cam(resnet, module, xray, [lambda out: -out[0]] * 2)
    assert close(grad_cam(resnet, xray, layer, target=0), negative)


def test_grad_cam_matches_both_libraries_on_densenet121_with_per_image_targets(densenet, rgb):
    block = densenet.features.denseblock4
    ours = grad_cam(densenet, rgb, "features.denseblock4", target=[2, 0])
    assert close(ours, captum_grad_cam(densenet, block, rgb, [2, 0]))
    targets = [ClassifierOutputTarget(2), ClassifierOutputTarget(0)]
    assert close(ours, library_grad_cam(densenet, block, rgb, targets))


def test_densenet_norm5_is_modified_in_place_and_only_a_cloning_capture_gets_it_right(densenet, rgb):
    """DenseNet applies ``F.relu(features, inplace=True)`` to the output of norm5 (the pitfall in the notes).

    Captum clones what it captures and agrees with us; pytorch-grad-cam keeps the tensor that is later
    overwritten, so its map differs. The second assertion documents that, so the first one means something.
    """
    norm5 = densenet.features.norm5
    ours = grad_cam(densenet, rgb, "features.norm5", target=1)
    assert close(ours, captum_grad_cam(densenet, norm5, rgb, 1))
    stale = library_grad_cam(densenet, norm5, rgb, [ClassifierOutputTarget(1)] * 2)
    assert (ours - stale).abs().max() > 1e-2


def test_guided_backprop_matches_captum(resnet, densenet, xray, rgb):
    """ResNet18 calls each block's inplace ReLU twice; DenseNet has many ReLU modules."""
    for target, model in ((1, resnet), (0, Negated(resnet))):
        reference = captum_attr.GuidedBackprop(model).attribute(xray.clone(), target=0)
        assert close(guided_backprop(resnet, xray, target=target), reference)
    reference = captum_attr.GuidedBackprop(densenet).attribute(rgb.clone(), target=[2, 0])
    assert close(guided_backprop(densenet, rgb, target=[2, 0]), reference)


def test_guided_grad_cam_matches_captum_with_bilinear_interpolation(resnet, xray):
    guided = captum_attr.GuidedGradCam(resnet, resnet.layer4)
    reference = guided.attribute(xray.clone(), target=0, interpolate_mode="bilinear")
    ours = guided_grad_cam(resnet, xray, "layer4", target=1, normalize=False)
    assert close(ours, reference)
    # The default scales the Grad-CAM factor to [0, 1] per image before multiplying.
    cam = captum_grad_cam(resnet, resnet.layer4, xray, 0)
    gb = captum_attr.GuidedBackprop(resnet).attribute(xray.clone(), target=0)
    assert close(guided_grad_cam(resnet, xray, "layer4"), gb * cam[:, None])
    assert np.isfinite(ours.numpy()).all()


@pytest.fixture(scope="module")
def course_model() -> nn.Module:
    torch.manual_seed(2)  # random weights whose Grad-CAM is not all zero for unit_xray
    return resnet18_xray(mean=0.4, std=0.2).eval()


@pytest.fixture(scope="module")
def unit_xray() -> torch.Tensor:
    return torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))  # images in [0, 1]


def test_the_course_model_matches_both_libraries(course_model, unit_xray):
    """resnet18_xray with its input standardisation (mean 0.4, std 0.2) in front: Grad-CAM against Captum and
    pytorch-grad-cam, guided backpropagation against Captum, both targets, the same image in [0, 1]."""
    assert next(iter(course_model.named_children()))[0] == "normalise"
    for layer in ("layer4", "layer3"):
        module = resolve_layer(course_model, layer)
        ours = grad_cam(course_model, unit_xray, layer, target=1)
        assert (ours.amax(dim=(1, 2)) == 1).all()  # a real map for each image, not two zero maps
        assert close(ours, captum_grad_cam(course_model, module, unit_xray, 0))
        assert close(ours, library_grad_cam(course_model, module, unit_xray, [ClassifierOutputTarget(0)] * 2))
        negative = captum_grad_cam(Negated(course_model), module, unit_xray, 0)
        assert close(grad_cam(course_model, unit_xray, layer, target=0), negative)
    for target, model in ((1, course_model), (0, Negated(course_model))):
        reference = captum_attr.GuidedBackprop(model).attribute(unit_xray.clone(), target=0)
        ours = guided_backprop(course_model, unit_xray, target=target)
        assert ours.abs().max() > 0 and close(ours, reference)
