"""helpers.explain.cam_family and helpers.explain.gradients against two independent implementations:
pytorch-grad-cam 1.5 (GradCAMPlusPlus, HiResCAM, ScoreCAM, EigenCAM) and Captum 0.9 (Saliency, NoiseTunnel
smoothgrad, IntegratedGradients, Occlusion), both test-only dependencies.

Two architectures, more than one layer each: the course's ``resnet18_xray`` (its input standardisation,
mean 0.4 and std 0.2, inside the model; BasicBlocks with inplace ReLUs; images in [0, 1]) and a tiny plain
CNN (conv, ReLU, max-pool; conv, inplace ReLU; GAP; linear) with one logit and with two. Targets per image:
``[1, 0]`` on the single-logit ResNet (pytorch-grad-cam's ``BinaryClassifierOutputTarget``; Captum, which
cannot negate an output, gets the negated model for ``target=0``) and ``[1, 0]`` on the two-logit CNN.
Random weights, seeded, eval mode.

Conventions made equal, each stated where it is used: pytorch-grad-cam's Score-CAM upsamples its masks with
``align_corners=True`` (ours and the authors' code: ``False``); its Eigen-CAM takes the SVD's arbitrary
sign (ours: its own sign correction, ``get_2d_projection_with_sign_correction``); Captum's
``riemann_trapezoid`` weighs the steps by 1/m instead of 1/(m - 1).

Tolerances are relative to the reference's largest absolute value (for maps in [0, 1]: absolute) and sit
about ten times above the differences seen; each is justified where it is defined.
"""

from __future__ import annotations

import pytest
import torch
from model_checks import Negated
from torch import nn

from helpers.explain.cam_family import eigen_cam, grad_cam_plus_plus, hires_cam, score_cam
from helpers.explain.gradients import completeness, integrated_gradients, occlusion, saliency, smooth_grad
from helpers.training.models import resnet18_xray

captum_attr = pytest.importorskip("captum.attr")
pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils import svd_on_activations  # noqa: E402
from pytorch_grad_cam.utils.model_targets import (  # noqa: E402
    BinaryClassifierOutputTarget,
    ClassifierOutputTarget,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Captum warns about hooks and gradients

# CAM maps in [0, 1]. The two sides run the same float32 network; pytorch-grad-cam then works in numpy
# (weights, sum, its 1e-7 epsilon when scaling) and resizes with cv2 (bilinear, half-pixel centres, float
# weights), we in torch with F.interpolate(align_corners=False): rounding of float32, ~1e-7 per operation.
# Score-CAM adds logits of masked images batched differently (rounding ~1e-7 of a logit, which the softmax
# passes on as relative error); Eigen-CAM a float32 numpy SVD against our float64 one, well conditioned on
# these random networks. Seen: Grad-CAM++ / HiResCAM 9.5e-7, Score-CAM 7.7e-7, Eigen-CAM 2.4e-7.
CAM_TOLERANCE = 1e-5
# Saliency: the same graph, the same single backward pass. Seen: exactly 0; 1e-6 leaves room for another
# BLAS or thread count.
SALIENCY_TOLERANCE = 1e-6
# SmoothGrad, IG, occlusion: the same numbers summed in another order (over noise samples, path nodes,
# patches), forward passes batched differently, Captum's path nodes as Python floats against ours as
# float32 (each ~1e-7 relative). Seen: SmoothGrad 7e-8, IG 1.5e-7, occlusion 5.2e-7.
SUM_TOLERANCE = 1e-5


class TinyCNN(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True))
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block2(self.block1(x)).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(2)  # random weights whose maps are not all zero for these images
    return resnet18_xray(mean=0.4, std=0.2).eval()


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return TinyCNN(classes=2).eval()


def unit_images(size: int, seed: int = 1) -> torch.Tensor:
    """Two images in [0, 1], each with a pixel at exactly 0 and one at exactly 1 (range 1: SmoothGrad's
    noise level is then the same absolute number as Captum's ``stdevs``)."""
    x = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(seed))
    x[:, :, 0, 0], x[:, :, 0, 1] = 0.0, 1.0
    return x


def close(ours: torch.Tensor, reference, tolerance: float) -> bool:
    reference = torch.as_tensor(reference).detach()
    scale = float(reference.abs().max())
    assert scale > 0, "the reference is all zero: the comparison would prove nothing"
    return torch.allclose(ours, reference, rtol=0, atol=tolerance * scale)


# ------------------------------------------------------------------------------- the CAM family


def grad_cam_targets(model_name: str) -> list:
    """Per-image targets [1, 0] as pytorch-grad-cam takes them."""
    if model_name == "resnet":
        return [BinaryClassifierOutputTarget(1), BinaryClassifierOutputTarget(0)]
    return [ClassifierOutputTarget(1), ClassifierOutputTarget(0)]


def library_cam(cls: type, model: nn.Module, layer: str, x: torch.Tensor, targets: list) -> torch.Tensor:
    with cls(model, [model.get_submodule(layer)]) as cam:
        return torch.from_numpy(cam(x, targets=targets))


CAM_CASES = [
    ("resnet", "layer4", 64),
    ("resnet", "layer3", 64),
    ("tiny", "block1", 32),
    ("tiny", "block2", 32),
]
GRADIENT_CAMS = [(grad_cam_plus_plus, "GradCAMPlusPlus"), (hires_cam, "HiResCAM")]


@pytest.mark.parametrize(("method", "library"), GRADIENT_CAMS, ids=["grad_cam_plus_plus", "hires_cam"])
@pytest.mark.parametrize(("model_name", "layer", "size"), CAM_CASES)
def test_gradient_cams_match_pytorch_grad_cam(request, method, library, model_name, layer, size):
    model, x = request.getfixturevalue(model_name), unit_images(size)
    reference = library_cam(getattr(pytorch_grad_cam, library), model, layer, x, grad_cam_targets(model_name))
    ours = method(model, x, layer, [1, 0])
    assert (ours.amax(dim=(1, 2)) == 1).all()  # a real map for each image, not two zero maps
    assert close(ours, reference, CAM_TOLERANCE)


@pytest.fixture
def sign_corrected_eigen_cam(monkeypatch):
    """pytorch-grad-cam's EigenCAM with the library's own sign correction (|max| >= |min|) in place of the
    SVD's arbitrary sign, which is ours."""
    from pytorch_grad_cam import eigen_cam as module

    monkeypatch.setattr(
        module, "get_2d_projection", svd_on_activations.get_2d_projection_with_sign_correction
    )


@pytest.mark.parametrize(("model_name", "layer", "size"), CAM_CASES)
def test_eigen_cam_matches_pytorch_grad_cam_with_its_sign_correction(
    request, sign_corrected_eigen_cam, model_name, layer, size
):
    model, x = request.getfixturevalue(model_name), unit_images(size)
    reference = library_cam(pytorch_grad_cam.EigenCAM, model, layer, x, grad_cam_targets(model_name))
    ours = eigen_cam(model, x, layer, [1, 0])
    assert (ours.amax(dim=(1, 2)) == 1).all()
    assert close(ours, reference, CAM_TOLERANCE)


@pytest.fixture
def score_cam_masks_without_corner_alignment(monkeypatch):
    """pytorch-grad-cam's ScoreCAM builds its masks with ``torch.nn.UpsamplingBilinear2d``, which aligns
    corners; swap in bilinear upsampling with ``align_corners=False`` for the call, as ours does."""
    monkeypatch.setattr(
        torch.nn,
        "UpsamplingBilinear2d",
        lambda size: nn.Upsample(size=size, mode="bilinear", align_corners=False),
    )


@pytest.mark.parametrize(
    ("model_name", "layer", "size"),
    [("resnet", "layer3", 32), ("tiny", "block1", 32), ("tiny", "block2", 32)],
)
def test_score_cam_matches_pytorch_grad_cam(
    request, score_cam_masks_without_corner_alignment, model_name, layer, size
):
    """The scores: the raw target logit of each masked image (ClassifierOutputTarget picks the logit;
    BinaryClassifierOutputTarget(0) its negative), softmax over the channels. ResNet18 at 32 pixels keeps
    the cost at 2 x 256 masked forward passes per side."""
    model, x = request.getfixturevalue(model_name), unit_images(size)
    reference = library_cam(pytorch_grad_cam.ScoreCAM, model, layer, x, grad_cam_targets(model_name))
    ours = score_cam(model, x, layer, [1, 0], batch_size=48)
    assert (ours.amax(dim=(1, 2)) == 1).all()
    assert close(ours, reference, CAM_TOLERANCE)


def test_score_cam_mask_alignment_matters(tiny):
    """Without the swap the library's masks differ, and the maps fail the comparison (by 4e-4 on this 8 x 8
    layer, 6e-2 on ResNet18's 4 x 4 layer3 at 64 pixels): the fixture above is not idle."""
    x = unit_images(32)
    reference = library_cam(pytorch_grad_cam.ScoreCAM, tiny, "block2", x, grad_cam_targets("tiny"))
    assert not close(score_cam(tiny, x, "block2", [1, 0]), reference, 10 * CAM_TOLERANCE)


# ------------------------------------------------------------------------------ pixel attributions


def captum_cases(resnet: nn.Module, tiny: nn.Module) -> list[tuple[nn.Module, nn.Module, object, object]]:
    """(model for us, model for Captum, our target, Captum's target): both single-logit targets of the
    course model, and per-image targets on the two-logit CNN."""
    return [(resnet, resnet, 1, 0), (resnet, Negated(resnet), 0, 0), (tiny, tiny, [1, 0], [1, 0])]


@pytest.mark.parametrize("absolute", [True, False])
def test_saliency_matches_captum(resnet, tiny, absolute):
    x = unit_images(32)
    for model, theirs, target, their_target in captum_cases(resnet, tiny):
        reference = captum_attr.Saliency(theirs).attribute(x.clone(), target=their_target, abs=absolute)
        assert close(saliency(model, x, target, absolute=absolute), reference, SALIENCY_TOLERANCE)


def test_one_draw_of_noise_equals_consecutive_draws_of_one_image_each():
    """The premise of the next test: Captum draws all its noise at once from the global generator
    (``torch.normal(0, stdevs)`` on ``B * n`` images, image-major), we draw one ``C x H x W`` image at a
    time from our own generator. For C * H * W a multiple of 16, torch's CPU sampler (uniforms first, then
    Box-Muller 16 at a time) gives the same numbers, so a shared seed means shared noise."""
    torch.manual_seed(11)
    at_once = torch.normal(0, torch.tensor(1.0).repeat(6, 1, 32, 32))
    generator = torch.Generator().manual_seed(11)
    one_by_one = torch.stack([torch.randn(1, 32, 32, generator=generator) for _ in range(6)])
    assert torch.equal(at_once, one_by_one)


@pytest.mark.parametrize("absolute", [False, True])
def test_smooth_grad_matches_captum_noise_tunnel_with_the_same_seed(resnet, tiny, absolute):
    """NoiseTunnel(Saliency), nt_type="smoothgrad", stdevs = sigma x (the image range, 1 here); our chunks of
    3 split the 2 x 4 noisy images differently from Captum's single pass."""
    x = unit_images(32)
    for model, theirs, target, their_target in captum_cases(resnet, tiny):
        torch.manual_seed(5)
        reference = captum_attr.NoiseTunnel(captum_attr.Saliency(theirs)).attribute(
            x.clone(), nt_type="smoothgrad", nt_samples=4, stdevs=0.2, target=their_target, abs=absolute
        )
        ours = smooth_grad(model, x, target, samples=4, sigma=0.2, seed=5, absolute=absolute, batch_size=3)
        assert close(ours, reference, SUM_TOLERANCE)


def ig_baselines(x: torch.Tensor) -> list[torch.Tensor | float | None]:
    """Zeros (the default), a grey image, and one baseline per image (the image upside down)."""
    return [None, 0.5, x.flip(-2)]


def test_integrated_gradients_matches_captum_gauss_legendre_with_its_convergence_delta(resnet, tiny):
    x = unit_images(32)
    ig_cases = captum_cases(resnet, tiny)
    for (model, theirs, target, their_target), baseline in zip(ig_cases, ig_baselines(x), strict=True):
        captum_baseline = 0.0 if baseline is None else baseline
        reference, delta = captum_attr.IntegratedGradients(theirs).attribute(
            x.clone(),
            baselines=captum_baseline,
            target=their_target,
            n_steps=12,
            return_convergence_delta=True,
        )
        ours = integrated_gradients(model, x, target, baseline=baseline, steps=12, batch_size=5)
        assert close(ours, reference, SUM_TOLERANCE)
        gap = completeness(model, x, ours, target, baseline=baseline).gap
        # The gap is a difference of nearly equal sums: compare it on the scale of the attributions' sums.
        assert torch.allclose(gap, delta.float(), rtol=0, atol=SUM_TOLERANCE * float(reference.abs().sum()))


def test_integrated_gradients_trapezoid_is_captums_times_m_over_m_minus_1(resnet, tiny):
    """Captum's riemann_trapezoid puts 1/m on each of the m nodes (halved at the ends), so its weights sum to
    (m - 1) / m; the trapezoid rule on m evenly spaced nodes from 0 to 1 uses 1/(m - 1), which sums to 1."""
    x, steps = unit_images(32), 6
    for model, theirs, target, their_target in captum_cases(resnet, tiny):
        reference = captum_attr.IntegratedGradients(theirs).attribute(
            x.clone(), target=their_target, n_steps=steps, method="riemann_trapezoid"
        )
        ours = integrated_gradients(model, x, target, steps=steps, method="riemann_trapezoid")
        assert close(ours, reference * steps / (steps - 1), SUM_TOLERANCE)


@pytest.mark.parametrize(
    ("window", "stride", "baseline"),
    [((8, 8), (4, 4), 0.0), ((8, 6), (5, 4), 0.5)],  # the second: the last patches are cut by the border
)
def test_occlusion_matches_captum(resnet, tiny, window, stride, baseline):
    x = unit_images(32)
    for model, theirs, target, their_target in captum_cases(resnet, tiny):
        reference = captum_attr.Occlusion(theirs).attribute(
            x.clone(),
            sliding_window_shapes=(1, *window),
            strides=(1, *stride),
            baselines=baseline,
            target=their_target,
            perturbations_per_eval=16,
        )
        ours = occlusion(model, x, target, window=window, stride=stride, baseline=baseline, batch_size=20)
        assert close(ours, reference, SUM_TOLERANCE)
