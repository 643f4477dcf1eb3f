"""Tests for helpers.explain.cam: shapes, known answers (CAM <-> logit, CAM <-> Grad-CAM, a manual block),
targets, layer names, and that the model, its parameters and the input are left exactly as they were.

Most tests use a bare torchvision ResNet18; the course's ``resnet18_xray`` puts its input standardisation
(``normalise``) in front, and the tests at the end check that the explanations see through it: maps of an
image in [0, 1] equal those of the bare network on the standardised image, input gradients pick up 1 / std."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from model_checks import assert_unchanged, hooks_of, snapshot
from torch import nn

from helpers.explain.cam import (
    class_activation_map,
    grad_cam,
    guided_backprop,
    guided_grad_cam,
    min_max_normalize,
    resolve_layer,
    target_scores,
)
from helpers.training.models import resnet18_xray


def xray_resnet18(num_classes: int = 1) -> nn.Module:
    """The course's model shape (1-channel conv1, 1-logit fc), random weights, built here from torchvision."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model.eval()


class ToyGapNet(nn.Module):
    """conv -> ReLU (inplace, named oddly) -> conv -> global average pooling -> linear."""

    def __init__(self, classes: int = 1) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.body = nn.Conv2d(4, 6, 3, padding=1)
        self.head = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.body(self.act(self.stem(x)))
        return self.head(a.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return xray_resnet18()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 1, 96, 64, generator=torch.Generator().manual_seed(1))


def test_shapes(resnet, images):
    assert grad_cam(resnet, images, "layer4").shape == (2, 96, 64)
    assert grad_cam(resnet, images, "layer3", normalize=False, upsample=False).shape == (2, 6, 4)
    assert class_activation_map(resnet, images).shape == (2, 3, 2)
    assert class_activation_map(resnet, images, upsample=True).shape == (2, 96, 64)
    assert guided_backprop(resnet, images).shape == (2, 1, 96, 64)
    assert guided_grad_cam(resnet, images, "layer4").shape == (2, 1, 96, 64)


def test_normalised_maps_span_zero_to_one(resnet, images):
    maps = grad_cam(resnet, images, resnet.layer3)
    assert torch.equal(maps.amin(dim=(1, 2)), torch.zeros(2))
    assert torch.allclose(maps.amax(dim=(1, 2)), torch.ones(2))
    raw = grad_cam(resnet, images, "layer3", normalize=False)
    low, high = raw.amin(dim=(1, 2), keepdim=True), raw.amax(dim=(1, 2), keepdim=True)
    assert torch.allclose(maps, (raw - low) / (high - low))


def test_all_zero_map_stays_zero(images):
    model = ToyGapNet().eval()
    with torch.no_grad():
        model.head.weight.zero_()  # the score no longer depends on the features: every gradient is zero
    maps = grad_cam(model, images, "body")
    assert torch.equal(maps, torch.zeros(2, 96, 64))
    assert torch.equal(min_max_normalize(torch.full((1, 2, 2), 3.0)), torch.zeros(1, 2, 2))


def test_cam_mean_plus_bias_is_the_logit(resnet, images):
    cam = class_activation_map(resnet, images)
    with torch.no_grad():
        logits = resnet(images)[:, 0]
    assert torch.allclose(cam.mean(dim=(1, 2)) + resnet.fc.bias, logits, atol=1e-5)
    negative = class_activation_map(resnet, images, target=0)
    assert torch.allclose(negative.mean(dim=(1, 2)) - resnet.fc.bias, -logits, atol=1e-5)


def test_cam_of_a_toy_gap_linear_model_with_three_classes(images):
    torch.manual_seed(3)
    model = ToyGapNet(classes=3).eval()
    cam = class_activation_map(model, images, target=[2, 0], features="body", head=model.head)
    with torch.no_grad():
        logits = model(images)
    expected = torch.stack([logits[0, 2], logits[1, 0]])
    assert torch.allclose(cam.mean(dim=(1, 2)) + model.head.bias[[2, 0]], expected, atol=1e-5)
    with pytest.raises(ValueError, match="needs a linear head"):
        class_activation_map(model, images, features="body", head="body")


def test_grad_cam_is_relu_cam_over_h_times_w_on_layer4(resnet, images):
    raw = grad_cam(resnet, images, "layer4", normalize=False, upsample=False)
    cam = class_activation_map(resnet, images)
    h, w = cam.shape[1:]
    assert torch.allclose(raw * (h * w), F.relu(cam), atol=1e-5)
    assert raw.max() > 0  # not a vacuous match of two zero maps


def test_target_zero_explains_the_negative_logit(resnet, images):
    positive = grad_cam(resnet, images, "layer4", target=1, normalize=False, upsample=False)
    negative = grad_cam(resnet, images, "layer4", target=0, normalize=False, upsample=False)
    cam = class_activation_map(resnet, images)
    h, w = cam.shape[1:]
    # ReLU(s) - ReLU(-s) = s: the two targets split the signed map between them.
    assert torch.allclose((positive - negative) * (h * w), cam, atol=1e-5)
    assert torch.equal(positive * negative, torch.zeros_like(positive))
    assert positive.max() > 0 and negative.max() > 0


def test_per_image_targets_on_a_multi_logit_model(images):
    model = xray_resnet18(num_classes=3)
    both = grad_cam(model, images, "layer3", target=[2, 0])
    as_tensor = grad_cam(model, images, "layer3", target=torch.tensor([2, 0]))
    first = grad_cam(model, images[:1], "layer3", target=2)
    second = grad_cam(model, images[1:], "layer3", target=0)
    assert torch.allclose(both, torch.cat([first, second]), atol=1e-6)
    torch.testing.assert_close(both, as_tensor, rtol=0, atol=1e-6)  # not bit for bit: cuDNN may reorder sums
    assert not torch.allclose(both[0], grad_cam(model, images[:1], "layer3", target=0)[0], atol=1e-3)
    guided = guided_backprop(model, images, target=[2, 0])
    assert torch.allclose(guided[1:], guided_backprop(model, images[1:], target=0), atol=1e-7)


def test_bad_targets_are_refused(resnet, images):
    logits = torch.zeros(2, 1)
    with pytest.raises(ValueError, match=r"single-logit model takes target 1 \(the logit\) or 0"):
        target_scores(logits, 2)
    with pytest.raises(ValueError, match="the model has 3 classes"):
        target_scores(torch.zeros(2, 3), [0, 3])
    with pytest.raises(ValueError, match="target has 3 entries for a batch of 2 images"):
        grad_cam(resnet, images, "layer4", target=[1, 0, 1])
    assert torch.equal(target_scores(torch.tensor([[1.5], [-2.0]]), [1, 0]), torch.tensor([1.5, 2.0]))


def test_a_wrong_layer_name_suggests_the_right_one(resnet, images):
    with pytest.raises(
        ValueError, match=r"ResNet has no layer named 'layer4\.1\.bn3'; did you mean 'layer4\.1\.bn2'"
    ):
        grad_cam(resnet, images, "layer4.1.bn3")
    with pytest.raises(ValueError, match="did you mean 'layer4'"):
        resolve_layer(resnet, "layr4")
    with pytest.raises(ValueError, match="is not one of its modules"):
        resolve_layer(resnet, nn.Conv2d(1, 1, 1))
    assert resolve_layer(resnet, "layer3.1.conv2") is resnet.layer3[1].conv2


def test_a_layer_that_runs_twice_is_refused(resnet, images):
    with pytest.raises(ValueError, match=r"'layer4\.1\.relu' runs more than once"):
        grad_cam(resnet, images, "layer4.1.relu")
    assert hooks_of(resnet) == 0


def test_bn2_map_survives_the_inplace_add_and_relu(resnet, images):
    """bn2's output is changed in place (``out += identity``, inplace ReLU); the map must not see that."""
    block = resnet.layer4[1]
    with torch.no_grad():
        h = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(images))))
        h = resnet.layer4[0](resnet.layer3(resnet.layer2(resnet.layer1(h))))
        bn2 = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(h)))))
    bn2.requires_grad_(True)
    logits = resnet.fc(F.relu(bn2 + h).mean(dim=(2, 3)))
    (gradient,) = torch.autograd.grad(logits.sum(), bn2)
    expected = F.relu((gradient.mean(dim=(2, 3), keepdim=True) * bn2).sum(dim=1)).detach()
    ours = grad_cam(resnet, images, "layer4.1.bn2", normalize=False, upsample=False)
    assert torch.allclose(ours, expected, atol=1e-6)
    block_output = grad_cam(resnet, images, "layer4.1", normalize=False, upsample=False)
    assert not torch.allclose(ours, block_output, atol=1e-3)  # the check can tell the two layers apart


EXPLAINERS = {
    "cam": lambda m, x: class_activation_map(m, x, upsample=True),
    "grad_cam": lambda m, x: grad_cam(m, x, "layer3.1.bn2"),
    "guided_backprop": lambda m, x: guided_backprop(m, x, target=0),
    "guided_grad_cam": lambda m, x: guided_grad_cam(m, x, "layer4"),
}


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
def test_the_model_and_the_input_are_left_as_they_were(name, images):
    model = xray_resnet18().train()
    model.layer2.eval()  # a mix of modes must come back as it was, module by module
    model.layer1.requires_grad_(False)
    model.layer3[0].relu.inplace = False
    before = snapshot(model)
    x = images.clone().requires_grad_(True)
    x_before = x.detach().clone()
    result = EXPLAINERS[name](model, x)
    assert_unchanged(model, before)
    assert x.grad is None and torch.equal(x.detach(), x_before)
    assert not result.requires_grad and result.grad_fn is None
    assert result.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    assert torch.isfinite(result).all() and result.abs().max() > 0


class Raiser(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
def test_hooks_are_removed_and_modes_restored_when_the_forward_raises(name, images):
    model = xray_resnet18().train()
    model.layer2.eval()  # mixed modes here too: each module gets its own flag back
    model.layer4[1].bn2.eval()
    model.avgpool = Raiser()  # raises after the hooks on layer3, layer4 and the ReLUs have run
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        EXPLAINERS[name](model, images)
    assert_unchanged(model, before)


def test_grad_cam_works_under_no_grad_and_with_frozen_parameters(images):
    model = xray_resnet18().requires_grad_(False)
    expected = grad_cam(xray_resnet18(), images, "layer4")
    with torch.no_grad():
        maps = grad_cam(model, images, "layer4")
        guided = guided_backprop(model, images)
    assert torch.is_grad_enabled()
    assert torch.allclose(maps, expected, atol=1e-6)
    assert guided.abs().max() > 0
    assert all(not p.requires_grad for p in model.parameters())


def test_guided_backprop_calls_are_identical_and_independent(resnet, images):
    x = images.clone().requires_grad_(True)
    first = guided_backprop(resnet, x)
    second = guided_backprop(resnet, x)
    # Equal up to float rounding, not bit for bit: on CUDA the max-pool backward adds with atomics, in
    # whatever order the threads finish (a second call that added to the first would be 2x, far outside).
    torch.testing.assert_close(second, first, rtol=1e-5, atol=1e-6 * float(first.abs().max()))
    assert first.data_ptr() != second.data_ptr()
    assert x.grad is None


def test_guided_backprop_known_answer_on_a_toy_net(images):
    """score = head(mean(body(ReLU(stem(x))))): the guided gradient clamps the ReLU's incoming gradient."""
    torch.manual_seed(5)
    model = ToyGapNet().eval()
    x = images.clone().requires_grad_(True)
    hidden = model.stem(x)
    # dscore/d(ReLU output) = body^T(head.weight / (H W)); guided: keep its positive part where hidden > 0.
    relu_out = F.relu(hidden).detach().requires_grad_(True)
    score = model.head(model.body(relu_out).mean(dim=(2, 3))).sum()
    (into_relu,) = torch.autograd.grad(score, relu_out)
    guided_into_stem = into_relu.clamp(min=0) * (hidden > 0)
    (expected,) = torch.autograd.grad(hidden, x, grad_outputs=guided_into_stem)
    ours = guided_backprop(model, images)
    scale = expected.abs().max()
    assert torch.allclose(ours, expected, rtol=0, atol=1e-5 * scale)
    (plain,) = torch.autograd.grad(model(x).sum(), x)
    assert (ours - plain).abs().max() > 0.1 * scale  # guiding changed something
    assert model.act.inplace


def test_guided_grad_cam_is_guided_backprop_times_the_map(resnet, images):
    product = guided_backprop(resnet, images) * grad_cam(resnet, images, "layer4")[:, None]
    assert torch.allclose(guided_grad_cam(resnet, images, "layer4"), product, atol=1e-7)
    raw = guided_backprop(resnet, images) * grad_cam(resnet, images, "layer4", normalize=False)[:, None]
    assert torch.allclose(guided_grad_cam(resnet, images, "layer4", normalize=False), raw, atol=1e-7)


def test_bad_images_are_refused(resnet):
    with pytest.raises(
        ValueError, match=r"expected images as a float tensor B x C x H x W, got \(1, 64, 64\)"
    ):
        grad_cam(resnet, torch.zeros(1, 64, 64), "layer4")
    with pytest.raises(ValueError, match="dtype torch.uint8"):
        guided_backprop(resnet, torch.zeros(1, 1, 64, 64, dtype=torch.uint8))


# ------------------------------------------------------------------ the course model: normalise in front


MEAN, STD = 0.4, 0.2


@pytest.fixture(scope="module")
def course_model() -> nn.Module:
    torch.manual_seed(2)  # random weights whose layer4 Grad-CAM is not all zero for unit_images
    return resnet18_xray(mean=MEAN, std=STD).eval()


@pytest.fixture(scope="module")
def bare(course_model) -> nn.Module:
    """The same weights without ``normalise``: a torchvision ResNet18 that takes standardised images."""
    model = xray_resnet18()
    weights = {k: v for k, v in course_model.state_dict().items() if not k.startswith("normalise.")}
    model.load_state_dict(weights)
    return model.eval()


@pytest.fixture(scope="module")
def unit_images() -> torch.Tensor:
    return torch.rand(2, 1, 96, 64, generator=torch.Generator().manual_seed(1))  # images in [0, 1]


def test_the_course_model_standardises_first(course_model, bare, unit_images):
    assert next(iter(course_model.named_children()))[0] == "normalise"
    with torch.no_grad():
        assert torch.allclose(course_model(unit_images), bare((unit_images - MEAN) / STD), atol=1e-5)


def test_cam_and_grad_cam_of_the_course_model_are_those_of_the_standardised_image(
    course_model, bare, unit_images
):
    standardised = (unit_images - MEAN) / STD
    cam = class_activation_map(course_model, unit_images)
    with torch.no_grad():
        logits = course_model(unit_images)[:, 0]
    assert torch.allclose(cam.mean(dim=(1, 2)) + course_model.fc.bias, logits, atol=1e-5)
    assert torch.allclose(cam, class_activation_map(bare, standardised), atol=1e-5)
    for layer in ("layer4", "layer3"):
        raw = grad_cam(course_model, unit_images, layer, normalize=False, upsample=False)
        assert (raw.amax(dim=(1, 2)) > 0).all()  # not a vacuous match of zero maps
        expected = grad_cam(bare, standardised, layer, normalize=False, upsample=False)
        assert torch.allclose(raw, expected, rtol=1e-4, atol=1e-6)
    assert torch.allclose(
        grad_cam(course_model, unit_images, "layer4"), grad_cam(bare, standardised, "layer4"), atol=1e-5
    )


def test_input_gradients_of_the_course_model_are_in_image_space(course_model, bare, unit_images):
    """d/dx f((x - mean) / std) = f'(.) / std: guided backprop answers for the image in [0, 1]."""
    standardised = (unit_images - MEAN) / STD
    for target in (1, 0):
        ours = guided_backprop(course_model, unit_images, target=target)
        expected = guided_backprop(bare, standardised, target=target) / STD
        assert ours.shape == unit_images.shape and ours.abs().max() > 0
        assert torch.allclose(ours, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))
    ggc = guided_grad_cam(course_model, unit_images, "layer4")
    expected = guided_backprop(bare, standardised) / STD * grad_cam(bare, standardised, "layer4")[:, None]
    assert torch.allclose(ggc, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
def test_the_course_model_is_left_as_it_was_buffers_and_modes_included(name, unit_images):
    torch.manual_seed(2)
    model = resnet18_xray(mean=MEAN, std=STD).train()
    model.normalise.eval()  # mixed modes: each module gets its own flag back
    model.layer2[0].bn1.eval()
    before = snapshot(model)  # the state holds normalise.mean/std and every BatchNorm's running statistics
    assert {"normalise.mean", "normalise.std", "layer1.0.bn1.running_mean"} <= before["state"].keys()
    result = EXPLAINERS[name](model, unit_images)
    assert_unchanged(model, before)  # running statistics unchanged: the forward ran in eval mode
    assert torch.isfinite(result).all() and result.abs().max() > 0
    model.avgpool = Raiser()
    with pytest.raises(RuntimeError, match="boom"):
        EXPLAINERS[name](model, unit_images)
    assert_unchanged(model, before)
