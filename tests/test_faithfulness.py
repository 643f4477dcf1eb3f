"""helpers.explain.faithfulness: deletion / insertion curves on models whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.integrate import trapezoid
from torch import nn

from helpers.explain import faithfulness as faith

SIZE = 12


class RegionMean(nn.Module):
    """One logit: 10 * (mean of channel 0 over a fixed region - 0.5)."""

    def __init__(self, region: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("region", region)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = (x[:, 0] * self.region).sum(dim=(1, 2)) / self.region.sum()
        return (10 * (mean - 0.5))[:, None]


class ShareKept(nn.Module):
    """One logit whose sigmoid is the share of pixels that are non-zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit((x != 0).double().mean(dim=(1, 2, 3)))[:, None]


@pytest.fixture(scope="module")
def region() -> torch.Tensor:
    mask = torch.zeros(SIZE, SIZE)
    mask[2:6, 3:9] = 1.0
    return mask


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return 0.5 + 0.5 * torch.rand(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def test_region_indicator_beats_a_random_map(region, images):
    model = RegionMean(region).eval()
    maps = region.expand(3, SIZE, SIZE)
    zero = dict(deletion_baseline="zero", insertion_baseline="zero", steps=12)
    good = faith.deletion_insertion(model, images, maps, **zero)
    noise = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    bad = faith.deletion_insertion(model, images, noise, **zero)
    good_auc, bad_auc = good.per_image(), bad.per_image()
    assert (good_auc["deletion_auc"] < bad_auc["deletion_auc"] - 0.1).all()
    assert (good_auc["insertion_auc"] > bad_auc["insertion_auc"] + 0.1).all()
    assert (good_auc["deletion_auc"] < good_auc["random_deletion_auc"]).all()
    assert (good_auc["insertion_auc"] > good_auc["random_insertion_auc"]).all()
    summary = good.summary("indicator")
    assert list(summary.index) == ["indicator", "random"] and list(summary.columns) == [
        "deletion_auc",
        "insertion_auc",
    ]
    assert summary.loc["indicator", "deletion_auc"] == pytest.approx(good_auc["deletion_auc"].mean())


def test_curves_are_monotone_with_known_endpoints(region, images):
    model = RegionMean(region).eval()
    result = faith.deletion_insertion(
        model,
        images,
        region.expand(3, SIZE, SIZE),
        steps=6,
        deletion_baseline="zero",
        insertion_baseline="zero",
    )
    full = torch.sigmoid(model(images)[:, 0]).double().numpy()
    empty = torch.sigmoid(torch.tensor(-5.0)).item()  # region mean 0 -> logit -5
    for curve in (result.deletion, result.random_deletion):
        np.testing.assert_allclose(curve[:, 0], full, rtol=1e-6)
        np.testing.assert_allclose(curve[:, -1], empty, rtol=1e-6)
    np.testing.assert_allclose(result.insertion[:, 0], empty, rtol=1e-6)
    np.testing.assert_allclose(result.insertion[:, -1], full, rtol=1e-6)
    assert (np.diff(result.deletion, axis=1) <= 1e-12).all()  # pixels are positive: deleting only lowers
    assert (np.diff(result.insertion, axis=1) >= -1e-12).all()
    np.testing.assert_array_equal(result.fractions, np.linspace(0, 1, 7))
    assert result.deletion.shape == (3, 7)


def test_each_step_perturbs_round_k_n_over_k_pixels():
    x = torch.ones(2, 1, 16, 16)
    order = faith.random_order(2, 256, seed=0)
    steps = 10
    kept = 1 - np.round(np.arange(steps + 1) * 256 / steps) / 256
    deletion = faith.perturbation_curves(
        ShareKept().eval(), x, order, mode="deletion", steps=steps, baseline="zero"
    )
    insertion = faith.perturbation_curves(
        ShareKept().eval(), x, order, mode="insertion", steps=steps, baseline="zero"
    )
    np.testing.assert_allclose(deletion, np.tile(kept, (2, 1)), atol=1e-12)
    np.testing.assert_allclose(insertion, np.tile(1 - kept, (2, 1)), atol=1e-12)
    np.testing.assert_allclose(faith.curve_auc(deletion), trapezoid(kept, dx=0.1), atol=1e-12)


def test_batching_does_not_change_the_curves(region, images):
    model = RegionMean(region).eval()
    order = faith.relevance_order(torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(2)))
    one = faith.perturbation_curves(
        model, images, order, mode="insertion", steps=5, baseline="blur", batch_size=1
    )
    all_at_once = faith.perturbation_curves(
        model, images, order, mode="insertion", steps=5, baseline="blur", batch_size=999
    )
    np.testing.assert_allclose(one, all_at_once, rtol=1e-6)


def test_curve_auc_known_values():
    curves = np.array([[1.0, 0.5, 0.0], [0.3, 0.3, 0.3], [0.0, 1.0, 1.0]])
    np.testing.assert_allclose(faith.curve_auc(curves), [0.5, 0.3, 0.75])


def test_relevance_order_sorts_descending_and_breaks_ties_at_random():
    maps = torch.tensor([[[0.1, 0.9], [0.5, 0.3]]])
    assert faith.relevance_order(maps).tolist() == [[1, 2, 3, 0]]
    flat = torch.zeros(2, 4, 4)
    order = faith.relevance_order(flat, seed=3)
    assert torch.equal(order, faith.random_order(2, 16, seed=3))
    assert not torch.equal(order[0], torch.arange(16))
    assert sorted(order[1].tolist()) == list(range(16))


def test_target_probability_single_and_multi_logit():
    logits = torch.tensor([[0.0], [2.0]])
    p = torch.sigmoid(torch.tensor(2.0))
    torch.testing.assert_close(faith.target_probability(logits, 1), torch.tensor([0.5, p]))
    torch.testing.assert_close(faith.target_probability(logits, 0), torch.tensor([0.5, 1 - p]))
    torch.testing.assert_close(faith.target_probability(logits, torch.tensor([0, 1])), torch.tensor([0.5, p]))
    multi = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    torch.testing.assert_close(faith.target_probability(multi, 2), torch.softmax(multi, 1)[:, 2])
    with pytest.raises(ValueError, match="single-logit model has targets 0 and 1"):
        faith.target_probability(logits, 2)
    with pytest.raises(ValueError, match=r"expected classes in 0..2"):
        faith.target_probability(multi, 3)


def test_baselines():
    x = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    mean = faith.make_baseline(x, "mean")
    torch.testing.assert_close(mean[:, :, 7, 11], x.mean(dim=(2, 3)))
    assert torch.equal(faith.make_baseline(x, "zero"), torch.zeros_like(x))
    assert faith.make_baseline(x, "blur").shape == x.shape
    blur = faith.make_baseline(x, "blur", sigma=3.0)
    assert blur.std() < x.std() / 2
    torch.testing.assert_close(blur.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.03, rtol=0)
    assert faith.make_baseline(torch.rand(1, 1, 3, 3), "blur", sigma=10.0).shape == (1, 1, 3, 3)
    assert torch.equal(faith.make_baseline(x, torch.tensor(0.25)), torch.full_like(x, 0.25))
    with pytest.raises(ValueError, match="baseline: expected one of"):
        faith.make_baseline(x, "noise")


def test_bad_inputs_raise_clear_errors(region, images):
    model = RegionMean(region).eval()
    with pytest.raises(ValueError, match=r"maps: expected B x H x W = \(3, 12, 12\)"):
        faith.deletion_insertion(model, images, torch.zeros(3, 1, SIZE, SIZE))
    with pytest.raises(ValueError, match="mode: expected one of"):
        faith.perturbation_curves(model, images, faith.random_order(3, SIZE * SIZE), mode="erase")


def test_a_model_in_training_mode_is_run_in_eval_mode_and_left_as_it_was(images):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 1),
    )  # fmt: skip
    net.train()
    net[1].eval()  # mixed flags: one module frozen in eval mode inside a training model
    stats = net[1].running_mean.clone()
    order = faith.random_order(3, SIZE * SIZE, seed=1)
    in_training = faith.perturbation_curves(net, images, order, mode="deletion", steps=4, batch_size=5)
    assert [m.training for m in net] == [True, False, True, True, True, True]
    assert torch.equal(net[1].running_mean, stats)  # batch norm statistics untouched
    net.eval()
    in_eval = faith.perturbation_curves(net, images, order, mode="deletion", steps=4, batch_size=5)
    np.testing.assert_allclose(in_training, in_eval, rtol=1e-6)  # batch composition no longer matters


def test_random_reference_is_seeded(region, images):
    model = RegionMean(region).eval()
    maps = region.expand(3, SIZE, SIZE)
    a = faith.deletion_insertion(model, images, maps, steps=4, seed=1, random_draws=2).per_image()
    b = faith.deletion_insertion(model, images, maps, steps=4, seed=1, random_draws=2).per_image()
    c = faith.deletion_insertion(model, images, maps, steps=4, seed=2, random_draws=2).per_image()
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["random_deletion_auc"], c["random_deletion_auc"])
