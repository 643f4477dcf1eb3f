"""Unit tests of the explanation methods beyond Grad-CAM: helpers.explain.cam_family (Grad-CAM++, HiResCAM,
Score-CAM, Eigen-CAM) and helpers.explain.gradients (saliency, SmoothGrad, Integrated Gradients, occlusion).

Shapes, the model and the input left exactly as they were, determinism, named errors, and known answers
where the answer is analytic: a linear model (saliency = |w|, SmoothGrad = w, IG = (x - baseline) * w,
occlusion with a 1-pixel window = w * (x - baseline)), a network whose layer output is the image itself
(Eigen-CAM of a rank-one activation, Score-CAM written out by hand), and Grad-CAM++ / HiResCAM written out
on a small GAP network. Tiny models and 16-32 pixel images; the course's ResNet18 only where it matters
(inplace ReLUs, BatchNorm buffers, its ``normalise`` module).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_checks import Negated, assert_unchanged, hooks_of, snapshot
from torch import nn

from helpers.explain.cam import grad_cam, min_max_normalize
from helpers.explain.cam_family import eigen_cam, grad_cam_plus_plus, hires_cam, score_cam
from helpers.explain.gradients import (
    completeness,
    integrated_gradients,
    occlusion,
    saliency,
    smooth_grad,
)
from helpers.explain.localisation import to_heatmaps
from helpers.training.models import resnet18_xray


class TinyCNN(nn.Module):
    """conv -> ReLU -> max-pool (``block1``), conv -> inplace ReLU (``block2``), global average pool, linear."""

    def __init__(self, classes: int = 1, channels: int = 1) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(channels, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True))
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block2(self.block1(x)).mean(dim=(2, 3)))


class LinearModel(nn.Module):
    """y = w . x + b on the flattened image: every gradient is ``w``."""

    def __init__(self, shape: tuple[int, int, int], classes: int = 1) -> None:
        super().__init__()
        self.linear = nn.Linear(shape[0] * shape[1] * shape[2], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class GapHead(nn.Module):
    """The image itself is the layer (``probe``): identity -> global average pool -> linear."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.probe = nn.Identity()
        self.head = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.probe(x).mean(dim=(2, 3)))


def tiny(classes: int = 1, seed: int = 0, channels: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return TinyCNN(classes, channels).eval()


def images(batch: int = 2, channels: int = 1, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


CAMS = {
    "eigen_cam": eigen_cam,
    "grad_cam_plus_plus": grad_cam_plus_plus,
    "hires_cam": hires_cam,
    "score_cam": score_cam,
}
PIXELS = {
    "saliency": lambda m, x, **k: saliency(m, x, **k),
    "smooth_grad": lambda m, x, **k: smooth_grad(m, x, samples=3, **k),
    "integrated_gradients": lambda m, x, **k: integrated_gradients(m, x, steps=4, **k),
    "occlusion": lambda m, x, **k: occlusion(m, x, window=4, stride=4, **k),
}


# ------------------------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("name", sorted(CAMS))
def test_cam_shapes_and_range(name):
    model, x = tiny(), images(3, size=16)
    maps = CAMS[name](model, x, "block1")
    assert maps.shape == (3, 16, 16) and maps.dtype == torch.float32
    assert maps.min() >= 0 and torch.allclose(maps.amax(dim=(1, 2)), torch.ones(3))
    assert CAMS[name](model, x, "block2", normalize=False, upsample=False).shape == (3, 8, 8)
    raw = CAMS[name](model, x, model.block1, normalize=False)
    assert raw.shape == (3, 16, 16) and torch.allclose(min_max_normalize(raw), maps, atol=1e-6)


@pytest.mark.parametrize("name", sorted(PIXELS))
def test_pixel_shapes_and_heatmaps(name):
    model, x = tiny(channels=2), images(3, channels=2, size=16)
    attributions = PIXELS[name](model, x)
    assert attributions.shape == (3, 2, 16, 16) and attributions.dtype == torch.float32
    maps = PIXELS[name](model, x, heatmap=True)
    assert maps.shape == (3, 16, 16) and maps.dtype == torch.float32
    assert torch.allclose(maps, torch.from_numpy(to_heatmaps(attributions)).float(), atol=1e-6)
    assert torch.allclose(maps.amax(dim=(1, 2)), torch.ones(3)) and maps.min() == 0


# ----------------------------------------------------------------------------- the model left as it was


def explain(name: str, model: nn.Module, x: torch.Tensor, target=1, layer: str = "block2") -> torch.Tensor:
    """Any method by name: a CAM at ``layer`` or pixel attributions, for ``target``."""
    if name in CAMS:
        return CAMS[name](model, x, layer, target)
    return PIXELS[name](model, x, target=target)


EVERY_METHOD = sorted(CAMS) + sorted(PIXELS)


def course_model() -> nn.Module:
    """The course's ResNet18 with its input standardisation in front, random weights (seeded)."""
    torch.manual_seed(2)
    return resnet18_xray(mean=0.4, std=0.2)


class Raiser(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


@pytest.mark.parametrize("name", EVERY_METHOD)
def test_the_course_model_and_the_input_are_left_as_they_were(name):
    """Mixed train/eval modes, frozen parameters, a non-inplace ReLU, BatchNorm running statistics and the
    ``normalise`` buffers: all come back as they were, also when the forward pass raises."""
    model = course_model().train()
    model.layer2.eval()
    model.layer1.requires_grad_(False)
    model.layer3[0].relu.inplace = False
    before = snapshot(model)
    assert {"normalise.mean", "layer1.0.bn1.running_mean"} <= before["state"].keys()
    x = images(2, size=32).requires_grad_(True)
    x_before = x.detach().clone()
    result = explain(name, model, x, target=0, layer="layer3")
    assert_unchanged(model, before)
    assert x.grad is None and torch.equal(x.detach(), x_before)
    assert not result.requires_grad and result.grad_fn is None
    assert torch.isfinite(result).all() and result.abs().max() > 0
    model.avgpool = Raiser()  # raises after the hook on layer3 has run
    with pytest.raises(RuntimeError, match="boom"):
        explain(name, model, x, target=0, layer="layer3")
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", EVERY_METHOD)
def test_methods_work_under_no_grad_and_with_frozen_parameters(name):
    model, x = tiny(), images(2)
    expected = explain(name, model, x)
    with torch.no_grad():
        result = explain(name, model.requires_grad_(False), x)
    assert torch.is_grad_enabled() and all(not p.requires_grad for p in model.parameters())
    assert torch.equal(result, expected)


# -------------------------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", EVERY_METHOD)
def test_two_calls_give_identical_independent_results(name):
    model, x = tiny(classes=2), images(2)
    first, second = explain(name, model, x, [1, 0]), explain(name, model, x, [1, 0])
    assert torch.equal(first, second) and first.data_ptr() != second.data_ptr()


def test_batch_size_changes_nothing_but_rounding():
    model, x = tiny(), images(3)
    for method in (
        lambda bs: score_cam(model, x, "block1", batch_size=bs),
        lambda bs: smooth_grad(model, x, samples=5, batch_size=bs),
        lambda bs: integrated_gradients(model, x, steps=5, batch_size=bs),
        lambda bs: occlusion(model, x, window=5, stride=3, batch_size=bs),
    ):
        assert torch.allclose(method(1), method(64), rtol=1e-5, atol=1e-7)


def test_smooth_grad_is_seeded():
    model, x = tiny(), images(2)
    assert torch.equal(smooth_grad(model, x, seed=3), smooth_grad(model, x, seed=3))
    assert not torch.allclose(smooth_grad(model, x, seed=3), smooth_grad(model, x, seed=4))
    assert torch.allclose(smooth_grad(model, x, sigma=0.0, samples=2), saliency(model, x, absolute=False))


@pytest.mark.parametrize("name", EVERY_METHOD)
def test_per_image_targets(name):
    """Each image gets its own class: as a call with that class for the whole batch, and (except SmoothGrad,
    whose noise for an image depends on its place in the batch) as a call with that image alone."""
    model, x = tiny(classes=3), images(2)
    both = explain(name, model, x, [2, 0], layer="block1")
    same = [explain(name, model, x, 2, layer="block1")[0], explain(name, model, x, 0, layer="block1")[1]]
    assert torch.allclose(both, torch.stack(same), rtol=1e-5, atol=1e-7)
    assert torch.equal(both, explain(name, model, x, torch.tensor([2, 0]), layer="block1"))
    if name != "smooth_grad":
        alone = [
            explain(name, model, x[:1], 2, layer="block1"),
            explain(name, model, x[1:], 0, layer="block1"),
        ]
        assert torch.allclose(both, torch.cat(alone), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", EVERY_METHOD)
def test_target_zero_explains_the_negative_logit(name):
    model, x = tiny(), images(2)
    negative = explain(name, model, x, target=0)
    assert torch.allclose(negative, explain(name, Negated(model), x, layer="model.block2"), atol=1e-6)
    if name not in ("eigen_cam", "saliency"):  # class-agnostic, and |gradient|: the others see the sign
        assert not torch.allclose(explain(name, model, x, target=1), negative, atol=1e-3)


# ------------------------------------------------------------------------------------------ named errors


@pytest.mark.parametrize("name", sorted(CAMS))
def test_cam_errors_are_named(name):
    model, x = tiny(), images(2)
    with pytest.raises(ValueError, match=r"no layer named 'blok1'; did you mean 'block1'"):
        CAMS[name](model, x, "blok1")
    with pytest.raises(ValueError, match=r"single-logit model takes target 1 \(the logit\) or 0"):
        CAMS[name](model, x, "block1", target=2)
    with pytest.raises(ValueError, match="target has 3 entries for a batch of 2 images"):
        CAMS[name](model, x, "block1", target=[1, 0, 1])
    with pytest.raises(ValueError, match="must output a B x K x h x w feature map"):
        CAMS[name](model, x, "head")
    with pytest.raises(ValueError, match="expected images as a float tensor B x C x H x W"):
        CAMS[name](model, x[0], "block1")
    resnet = resnet18_xray().eval()
    with pytest.raises(ValueError, match=r"'layer4\.1\.relu' runs more than once"):
        CAMS[name](resnet, images(1, size=32), "layer4.1.relu")
    assert hooks_of(model) == 0 and hooks_of(resnet) == 0


@pytest.mark.parametrize("name", sorted(PIXELS))
def test_pixel_errors_are_named(name):
    model, x = tiny(classes=3), images(2)
    with pytest.raises(ValueError, match="the model has 3 classes"):
        PIXELS[name](model, x, target=[0, 3])
    with pytest.raises(ValueError, match="target must be a class index or one index per image"):
        PIXELS[name](model, x, target=1.0)
    with pytest.raises(ValueError, match=r"dtype torch.uint8"):
        PIXELS[name](model, x.to(torch.uint8))


def test_argument_errors_are_named():
    model, x = tiny(), images(2)
    with pytest.raises(ValueError, match="method: expected one of .*'riemann_left'"):
        integrated_gradients(model, x, method="riemann_left")
    with pytest.raises(ValueError, match="trapezoid rule needs at least 2 steps"):
        integrated_gradients(model, x, steps=1, method="riemann_trapezoid")
    with pytest.raises(ValueError, match="steps: expected a whole number >= 1"):
        integrated_gradients(model, x, steps=0)
    with pytest.raises(ValueError, match=r"baseline of shape \(3,\) does not broadcast"):
        integrated_gradients(model, x, baseline=torch.zeros(3))
    with pytest.raises(ValueError, match="samples: expected a whole number >= 1"):
        smooth_grad(model, x, samples=0)
    with pytest.raises(ValueError, match="sigma: expected a noise level >= 0"):
        smooth_grad(model, x, sigma=-0.1)
    with pytest.raises(ValueError, match="batch_size: expected a whole number >= 1"):
        score_cam(model, x, "block1", batch_size=0)
    with pytest.raises(ValueError, match=r"1 <= stride <= window <= image size \(16, 16\)"):
        occlusion(model, x, window=4, stride=5)
    with pytest.raises(ValueError, match="1 <= stride <= window"):
        occlusion(model, x, window=(4, 17), stride=2)
    with pytest.raises(ValueError, match=r"attributions: expected the B x C x H x W shape"):
        completeness(model, x, torch.zeros(2, 16, 16))


# ------------------------------------------------------------------------------------------ known answers


@pytest.fixture(scope="module")
def linear() -> nn.Module:
    torch.manual_seed(4)
    return LinearModel((2, 6, 5)).eval()


def weights_of(model: LinearModel, row: int = 0) -> torch.Tensor:
    return model.linear.weight[row].detach().reshape(2, 6, 5)


def test_saliency_and_smooth_grad_of_a_linear_model_are_its_weights(linear):
    x, w = torch.randn(3, 2, 6, 5), weights_of(linear)
    assert torch.equal(saliency(linear, x), w.abs().expand(3, -1, -1, -1))
    assert torch.equal(saliency(linear, x, target=0, absolute=False), -w.expand(3, -1, -1, -1))
    assert torch.allclose(smooth_grad(linear, x, samples=4), w.expand(3, -1, -1, -1), atol=1e-6)
    assert torch.allclose(smooth_grad(linear, x, absolute=True), w.abs().expand(3, -1, -1, -1), atol=1e-6)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients_of_a_linear_model_is_x_minus_baseline_times_w(linear, method):
    x, w = torch.randn(3, 2, 6, 5), weights_of(linear)
    for baseline, start in ((None, torch.zeros_like(x)), (0.5, torch.full_like(x, 0.5)), (x[:1], x[:1])):
        ours = integrated_gradients(linear, x, baseline=baseline, steps=3, method=method, batch_size=2)
        assert torch.allclose(ours, (x - start) * w, rtol=1e-5, atol=1e-6)
        check = completeness(linear, x, ours, baseline=baseline)
        assert torch.allclose(check.score_difference, ((x - start) * w).flatten(1).sum(1), atol=1e-5)
        assert check.gap.abs().max() < 1e-5
    assert torch.allclose(integrated_gradients(linear, x, target=0), -x * w, rtol=1e-5, atol=1e-6)


def test_integrated_gradients_completeness_gap_shrinks_with_steps():
    """ReLU networks are only piecewise smooth along the path, so the gap shrinks unevenly; 2 -> 64 nodes
    takes it from about a third of y(x) - y(0) to well under 1 % on this network."""
    model, x = tiny(seed=3), images(2)
    checks = [completeness(model, x, integrated_gradients(model, x, steps=n)) for n in (2, 64)]
    gaps = [check.gap.abs().max() for check in checks]
    assert gaps[1] < gaps[0] / 10 and gaps[1] < 0.01 * checks[1].score_difference.abs().min()


def test_occlusion_with_one_pixel_windows_of_a_linear_model(linear):
    """Occluding pixel (i, j) in every channel drops the score by sum_c w_c,ij (x_c,ij - baseline)."""
    x, w = torch.randn(2, 2, 6, 5), weights_of(linear)
    ours = occlusion(linear, x, window=1, stride=1, baseline=0.25, batch_size=7)
    drop = (w * (x - 0.25)).sum(dim=1, keepdim=True).expand(-1, 2, -1, -1)
    assert torch.allclose(ours, drop, atol=1e-5)


def test_occlusion_averages_the_patches_that_cover_a_pixel_and_cuts_the_last_one_at_the_border(linear):
    """Patches of 3 x 2 every 2 x 2 pixels on 6 x 5: tops 0, 2, 4 (the last one cut to 2 rows), lefts 0, 2, 4
    (cut to 1 column), so every pixel is covered: brute force, one patch at a time."""
    x = torch.randn(1, 2, 6, 5)
    total, count = torch.zeros(6, 5), torch.zeros(6, 5)
    with torch.no_grad():
        for top in (0, 2, 4):
            for left in (0, 2, 4):
                occluded = x.clone()
                occluded[..., top : top + 3, left : left + 2] = 0
                total[top : top + 3, left : left + 2] += (linear(x) - linear(occluded))[0, 0]
                count[top : top + 3, left : left + 2] += 1
    ours = occlusion(linear, x, window=(3, 2), stride=2)
    assert count.min() == 1 and torch.allclose(ours[0], (total / count).expand(2, -1, -1), atol=1e-5)


def rank_one_activations() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Activations A_k(i, j) = u_k p(i, j) + c_k (``2 x 5 x 4 x 6``): their first principal component is
    p, up to sign, and the projection on it is (p - mean p) |u|."""
    generator = torch.Generator().manual_seed(7)
    u, c = torch.randn(5, generator=generator), torch.randn(5, generator=generator)
    p = torch.randn(2, 4, 6, generator=generator)
    p[:, 0, 0] = 10.0  # a large positive peak fixes the sign: |max| > |min| after centring
    return u[None, :, None, None] * p[:, None] + c[None, :, None, None], p, u


def test_eigen_cam_of_a_rank_one_activation_is_the_component():
    activations, p, u = rank_one_activations()
    maps = eigen_cam(GapHead(5).eval(), activations, "probe", normalize=False, upsample=False)
    expected = F.relu(p - p.mean(dim=(1, 2), keepdim=True)) * torch.linalg.norm(u)
    assert torch.allclose(maps, expected, atol=1e-5)
    flipped = eigen_cam(GapHead(5).eval(), -activations, "probe", normalize=False, upsample=False)
    assert torch.allclose(flipped, maps, atol=1e-5)  # the sign follows the map, not the SVD


def test_score_cam_written_out_by_hand():
    """The layer is the image (3 channels, 6 x 6): mask k is channel k scaled to [0, 1], its score the
    logit of the masked image, the weights a softmax over the 3 scores."""
    torch.manual_seed(8)
    model, x = GapHead(3).eval(), torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        masks = min_max_normalize(x)  # B x 3 x 6 x 6, each channel to [0, 1]
        scores = torch.stack([model(x * masks[:, k : k + 1])[:, 0] for k in range(3)], dim=1)
        expected = F.relu((torch.softmax(scores, dim=1)[:, :, None, None] * x).sum(dim=1))
    ours = score_cam(model, x, "probe", normalize=False, upsample=False, batch_size=4)
    assert torch.allclose(ours, expected, atol=1e-6)


def manual_activations_and_gradients(model: TinyCNN, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    activations = model.block2(model.block1(x)).detach().requires_grad_(True)
    (gradients,) = torch.autograd.grad(model.head(activations.mean(dim=(2, 3))).sum(), activations)
    return activations.detach(), gradients


def test_grad_cam_plus_plus_written_out_by_hand():
    model, x = tiny(seed=5), images(2)
    a, g = manual_activations_and_gradients(model, x)
    alphas = g**2 / (2 * g**2 + a.sum(dim=(2, 3), keepdim=True) * g**3 + 1e-6)
    weights = (torch.where(g != 0, alphas, 0.0) * F.relu(g)).sum(dim=(2, 3))
    expected = F.relu((weights[:, :, None, None] * a).sum(dim=1))
    ours = grad_cam_plus_plus(model, x, "block2", normalize=False, upsample=False)
    assert ours.max() > 0 and torch.allclose(ours, expected, rtol=1e-5, atol=1e-8)


def test_hires_cam_equals_grad_cam_under_a_gap_head_and_is_gradient_times_activation():
    model, x = tiny(seed=5), images(2)
    a, g = manual_activations_and_gradients(model, x)
    raw = hires_cam(model, x, "block2", normalize=False, upsample=False)
    assert raw.max() > 0 and torch.allclose(raw, F.relu((g * a).sum(dim=1)), atol=1e-7)
    # Under global average pooling the gradient is the same in every cell: HiResCAM = Grad-CAM.
    assert torch.allclose(hires_cam(model, x, "block2"), grad_cam(model, x, "block2"), atol=1e-6)
    # Above a max-pool it is not, and the two maps differ.
    assert not torch.allclose(hires_cam(model, x, "block1.0"), grad_cam(model, x, "block1.0"), atol=1e-3)
