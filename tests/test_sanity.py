"""helpers.explain.sanity: cascading randomisation with a small CNN and an input-gradient explainer.

Cascading randomisation is two calls, :func:`sanity.randomisation_maps` then
:func:`sanity.randomisation_table` (``cascade`` below); there is no one-call version."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from scipy.stats import spearmanr
from torch import nn

from helpers.explain import cam, sanity
from helpers.training.models import resnet18_xray


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 1),
    ).eval()


def input_gradient(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """d(logit)/d(input): B x H x W."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[:, 0].sum(), x)
    return grad[:, 0]


def cascade(model: nn.Module, x: torch.Tensor, explain, *, layers=None, seed: int = 0) -> pd.DataFrame:
    """Cascading randomisation as the notebook runs it: the maps of each step, then their correlations."""
    maps = sanity.randomisation_maps(model, x, explain, layers=layers, seed=seed, progress=False)
    return sanity.randomisation_table(maps)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def test_randomising_every_layer_destroys_the_input_gradient(images):
    table = cascade(small_cnn(), images, input_gradient, seed=0)
    assert list(table["randomised"]) == ["original", "6", "2", "0"]  # generic order: children, top first
    assert list(table["step"]) == [0, 1, 2, 3]
    first = table.iloc[0]
    assert (
        first["spearman_mean"] == 1.0 and first["abs_spearman_mean"] == 1.0 and first["spearman_std"] == 0.0
    )
    np.testing.assert_array_equal(first["spearman"], np.ones(4))
    last = table.iloc[-1]
    assert abs(last["spearman_mean"]) < 0.4 and abs(last["abs_spearman_mean"]) < 0.4
    assert last["spearman"].shape == (4,)
    assert last["spearman_mean"] == pytest.approx(last["spearman"].mean())
    assert last["spearman_std"] == pytest.approx(last["spearman"].std())


def test_callers_model_and_global_rng_are_untouched(images):
    model = small_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    table = cascade(model, images, input_gradient, seed=0)
    assert torch.equal(torch.get_rng_state(), rng)
    assert table["spearman_mean"].iloc[-1] < 0.4  # the copy was randomised ...
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # ... the caller's model was not
    np.testing.assert_array_equal(cascade(model, images, input_gradient, seed=0)["spearman"][0], np.ones(4))


def test_seeded_and_deterministic(images):
    a = cascade(small_cnn(), images, input_gradient, seed=7)
    b = cascade(small_cnn(), images, input_gradient, seed=7)
    c = cascade(small_cnn(), images, input_gradient, seed=8)
    columns = ["spearman_mean", "abs_spearman_mean"]
    pd.testing.assert_frame_equal(a[columns], b[columns])
    assert all(np.array_equal(x, y) for x, y in zip(a["spearman"], b["spearman"], strict=True))
    assert not np.allclose(a[columns].to_numpy()[1:], c[columns].to_numpy()[1:])


def test_constant_maps_are_counted_and_score_zero(images):
    def dead_after_fc(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # a Grad-CAM-like explainer whose map is all zero once the top layer is randomised
        grad = input_gradient(model, x)
        return grad if torch.equal(model[6].weight, small_cnn()[6].weight) else torch.zeros_like(grad)

    table = cascade(small_cnn(), images, dead_after_fc, layers=["6", "2"])
    assert list(table["n_constant"]) == [0, 4, 4]
    assert list(table["spearman_mean"]) == [1.0, 0.0, 0.0]
    assert list(table["abs_spearman_std"]) == [0.0, 0.0, 0.0]


def test_randomisation_maps_are_cumulative_with_named_groups(images):
    model = small_cnn()
    maps = sanity.randomisation_maps(model, images, input_gradient, layers=["6", ("2", "0")])
    assert list(maps) == ["original", "6", "2+0"]
    assert all(m.shape == (4, 16, 16) and m.dtype == np.float64 for m in maps.values())
    np.testing.assert_allclose(maps["original"], input_gradient(model, images).numpy(), rtol=1e-6)


def test_default_layer_order_for_a_resnet():
    model = torchvision.models.resnet18(num_classes=1)
    expected = [("fc",), ("layer4",), ("layer3",), ("layer2",), ("layer1",), ("conv1", "bn1")]
    assert sanity.default_layer_order(model) == expected
    assert sanity.default_layer_order(small_cnn()) == [("6",), ("2",), ("0",)]


def test_the_course_model_keeps_its_input_standardisation_through_the_cascade():
    """resnet18_xray has ``normalise`` (buffers, no parameters) in front: it is never randomised, so every
    step explains the same standardised input; the caller's model, buffers included, is left as it was."""
    torch.manual_seed(1)  # random weights whose Grad-CAM at layer4 is not all zero for these images
    model = resnet18_xray(mean=0.4, std=0.2).eval()
    expected = [("fc",), ("layer4",), ("layer3",), ("layer2",), ("layer1",), ("conv1", "bn1")]
    assert sanity.default_layer_order(model) == expected
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def grad_cam_layer4(work: nn.Module, x: torch.Tensor) -> torch.Tensor:
        seen.append((float(work.normalise.mean), float(work.normalise.std)))
        return cam.grad_cam(work, x, "layer4")

    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    table = cascade(model, x, grad_cam_layer4, layers=["fc", "layer4"])
    assert list(table["randomised"]) == ["original", "fc", "layer4"]
    assert table["n_constant"][0] == 0 and table["spearman_mean"][0] == 1.0
    assert seen == [(pytest.approx(0.4), pytest.approx(0.2))] * 3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training and all(not m.training for m in model.modules())


def test_reinitialise_is_seeded_resets_batch_norm_and_rejects_unknown_parameters():
    block = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    block[1].running_mean.fill_(5.0)
    nn.init.constant_(block[0].weight, 3.0)
    sanity.reinitialise(block, seed=1)
    first = block[0].weight.clone()
    assert not torch.equal(first, torch.full_like(first, 3.0))
    assert torch.equal(block[1].running_mean, torch.zeros(2))
    sanity.reinitialise(block, seed=1)
    assert torch.equal(block[0].weight, first)

    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.ones(1))

    with pytest.raises(ValueError, match=r"cannot re-initialise parameters \['gain'\]"):
        sanity.reinitialise(Scale(), seed=0)


def test_unknown_layer_name_suggests_close_matches(images):
    model = torchvision.models.resnet18(num_classes=1)
    with pytest.raises(ValueError, match=r"ResNet has no layer named 'layer5'; did you mean 'layer\d'"):
        sanity.randomisation_maps(model, images, input_gradient, layers=["layer5"])


def test_rank_correlation_matches_scipy_and_handles_constant_maps():
    gen = np.random.default_rng(0)
    a, b = gen.random((3, 5, 5)), gen.random((3, 5, 5))
    b[1] = a[1] ** 3  # same ranking: exactly 1
    b[2] = np.round(b[2], 1)  # ties
    rho = sanity.rank_correlation(a, b)
    expected = [spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(3)]
    np.testing.assert_allclose(rho, expected, rtol=1e-12)
    assert rho[1] == 1.0
    # a constant map has no ranking: 0 by default (expected value under random tie-breaking), or as asked
    assert sanity.rank_correlation(a[:1], np.zeros((1, 5, 5)))[0] == 0.0
    assert np.isnan(sanity.rank_correlation(np.zeros((1, 5, 5)), a[:1], constant=np.nan)[0])
    with pytest.raises(ValueError, match="expected the shape of the reference maps"):
        sanity.rank_correlation(a, b[:2])


def test_an_empty_layer_list_is_refused_not_replaced_by_the_default():
    with pytest.raises(ValueError, match="nothing to randomise"):
        sanity.randomisation_maps(small_cnn(), torch.rand(2, 1, 16, 16), input_gradient, layers=[])
