"""Faithfulness of explanation maps: deletion and insertion curves (Petsiuk et al. 2018, RISE).

Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``. If a map really shows what the model uses, then
removing the pixels it ranks highest should make the model's probability for the target fall fast
(deletion: LOW area under the curve is good), and revealing them first on a blank canvas should make it
rise fast (insertion: HIGH area is good). A random ordering of the pixels is the reference every map must
beat.

A "pixel" is one spatial position, all channels at once. ``K`` steps remove or reveal ``round(k N / K)``
pixels at step ``k = 0 .. K`` (``N = H * W``), so curves have ``K + 1`` points on ``x = k / K`` in [0, 1]
and their area is the trapezoid rule. All (image, step) pairs are scored in chunks of ``batch_size``
perturbed images, so images AND steps share forward passes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torchvision.transforms.functional as TF
from scipy.integrate import trapezoid
from torch import nn

from helpers.model_state import eval_mode
from helpers.progress import progress_bar

MODES = ("deletion", "insertion")
BASELINES = ("mean", "blur", "zero")


def _as_maps(maps: Any, x: torch.Tensor) -> torch.Tensor:
    maps = torch.as_tensor(maps.detach() if isinstance(maps, torch.Tensor) else np.asarray(maps))
    expected = (x.shape[0], *x.shape[2:])
    if tuple(maps.shape) != expected:
        raise ValueError(
            f"maps: expected B x H x W = {expected} to match x {tuple(x.shape)}, got {tuple(maps.shape)} "
            "(upsample maps to the input size; reduce channels first, e.g. maps.abs().amax(1))"
        )
    if not torch.isfinite(maps).all():
        raise ValueError("maps: contains NaN or infinite values")
    return maps.to("cpu", torch.float64)


def relevance_order(maps: Any, *, seed: int = 0) -> torch.Tensor:
    """Pixel indices of each map (``B x H x W``), most relevant first: ``B x (H*W)`` long tensor.

    Equal values are ordered at random (seeded), so a flat map does not delete the image top row first.
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    flat = torch.as_tensor(maps.detach() if isinstance(maps, torch.Tensor) else np.asarray(maps))
    flat = flat.to("cpu", torch.float64).reshape(len(flat), -1)
    shuffle = random_order(flat.shape[0], flat.shape[1], seed=seed)
    ranked = torch.argsort(-flat.gather(1, shuffle), dim=1, stable=True)
    return shuffle.gather(1, ranked)


def random_order(n_images: int, n_pixels: int, *, seed: int = 0) -> torch.Tensor:
    """A seeded random pixel order per image: ``n_images x n_pixels`` long tensor.

    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.argsort(torch.rand(n_images, n_pixels, generator=generator), dim=1)


def make_baseline(
    x: torch.Tensor, kind: str | torch.Tensor = "mean", *, sigma: float | None = None
) -> torch.Tensor:
    """What deleted pixels become: a ``B x C x H x W`` tensor like ``x``.

    ``"mean"``: each image's per-channel mean; ``"blur"``: a Gaussian-blurred copy (``sigma`` in pixels,
    default ``max(H, W) / 45``, about Petsiuk's 5 pixels at 224); ``"zero"``: zeros (black, for the
    course's models, whose input is the image in [0, 1]); or a tensor broadcastable to ``x``.
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    if isinstance(kind, torch.Tensor):
        return kind.to(x.device, x.dtype).expand_as(x)
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "blur":
        height, width = x.shape[2:]
        sigma = max(height, width) / 45 if sigma is None else sigma
        size = min(2 * math.ceil(3 * sigma) + 1, 2 * min(height, width) - 1)
        return TF.gaussian_blur(x, [size, size], [sigma, sigma])
    raise ValueError(f"baseline: expected one of {BASELINES} or a tensor, got {kind!r}")


def target_probability(logits: torch.Tensor, target: int | torch.Tensor) -> torch.Tensor:
    """The model's probability of ``target`` per image: ``(B,)``.

    A single logit (``B`` or ``B x 1``): ``sigmoid`` for target 1, ``1 - sigmoid`` for target 0 (the
    "normal" class). Several logits (``B x K``): softmax probability of class ``target``. ``target`` is an
    int or a ``(B,)`` tensor of ints. Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    target = torch.as_tensor(target, device=logits.device).expand(logits.shape[0])
    if logits.ndim == 1 or logits.shape[1] == 1:
        if not ((target == 0) | (target == 1)).all():
            raise ValueError(
                f"target: a single-logit model has targets 0 and 1, got {target.unique().tolist()}"
            )
        p = torch.sigmoid(logits.reshape(-1))
        return torch.where(target == 1, p, 1 - p)
    if ((target < 0) | (target >= logits.shape[1])).any():
        raise ValueError(
            f"target: expected classes in 0..{logits.shape[1] - 1}, got {target.unique().tolist()}"
        )
    return torch.softmax(logits, dim=1).gather(1, target[:, None].long())[:, 0]


def perturbation_curves(
    model: nn.Module,
    x: torch.Tensor,
    order: torch.Tensor,
    *,
    mode: str,
    steps: int = 20,
    baseline: str | torch.Tensor = "mean",
    target: int | Sequence[int] | torch.Tensor = 1,
    batch_size: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """Deletion or insertion curve of each image of ``x`` (``B x C x H x W``): ``B x (steps + 1)``.

    ``order`` (``B x H*W``, from :func:`relevance_order` or :func:`random_order`) says which pixels go
    first. Deletion replaces them with ``baseline`` (see :func:`make_baseline`) in ``x``; insertion copies
    them from ``x`` into the baseline. Point ``k`` is :func:`target_probability` after ``round(k N / K)``
    pixels. ``model`` runs in eval mode (batch norm would otherwise mix the perturbed images) and must be on
    ``x``'s device; every submodule's train/eval flag is restored afterwards.
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size: expected >= 1, got {steps} and {batch_size}")
    n_images, channels, height, width = x.shape
    if tuple(order.shape) != (n_images, height * width):
        raise ValueError(f"order: expected B x H*W = {(n_images, height * width)}, got {tuple(order.shape)}")
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
    ranks = ranks.to(x.device)
    counts = torch.round(torch.arange(steps + 1, dtype=torch.float64) * (height * width) / steps).long()
    counts = counts.to(x.device)
    targets = torch.as_tensor(target, device=x.device).expand(n_images)
    base = make_baseline(x, baseline)
    first, second = (base, x) if mode == "deletion" else (x, base)  # pixels in the prefix come from `first`
    pairs = torch.cartesian_prod(torch.arange(n_images), torch.arange(steps + 1)).to(x.device)
    scores = torch.empty(len(pairs), dtype=torch.float64)
    with eval_mode(model), torch.no_grad():
        for start in progress_bar(range(0, len(pairs), batch_size), enabled=progress, desc=mode):
            img, step = pairs[start : start + batch_size].unbind(1)
            prefix = (ranks[img] < counts[step, None]).reshape(-1, 1, height, width)
            perturbed = torch.where(prefix, first[img], second[img])
            probs = target_probability(model(perturbed), targets[img])
            scores[start : start + len(img)] = probs.double().cpu()
    return scores.reshape(n_images, steps + 1).numpy()


def curve_auc(curves: np.ndarray) -> np.ndarray:
    """Area under each curve (``B x (K+1)``) on ``x = k / K`` in [0, 1], trapezoid rule: ``(B,)``.

    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    curves = np.asarray(curves, dtype=np.float64)
    return trapezoid(curves, np.linspace(0.0, 1.0, curves.shape[-1]), axis=-1)


@dataclass(frozen=True)
class FaithfulnessResult:
    """Curves (``B x (K+1)`` each) of the maps and of random orderings, on ``fractions`` (``K+1``)."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    random_deletion: np.ndarray
    random_insertion: np.ndarray

    def per_image(self) -> pd.DataFrame:
        """One row per image: the four areas under the curves."""
        return pd.DataFrame(
            {
                "deletion_auc": curve_auc(self.deletion),
                "insertion_auc": curve_auc(self.insertion),
                "random_deletion_auc": curve_auc(self.random_deletion),
                "random_insertion_auc": curve_auc(self.random_insertion),
            }
        )

    def summary(self, name: str = "map") -> pd.DataFrame:
        """Rows ``name`` and ``"random"``; mean deletion AUC (lower is better), insertion AUC (higher)."""
        aucs = self.per_image().mean()
        return pd.DataFrame(
            {
                "deletion_auc": [aucs["deletion_auc"], aucs["random_deletion_auc"]],
                "insertion_auc": [aucs["insertion_auc"], aucs["random_insertion_auc"]],
            },
            index=pd.Index([name, "random"], name="ordering"),
        )


def deletion_insertion(
    model: nn.Module,
    x: torch.Tensor,
    maps: Any,
    *,
    steps: int = 20,
    target: int | Sequence[int] | torch.Tensor = 1,
    seed: int = 0,
    random_draws: int = 1,
    deletion_baseline: str | torch.Tensor = "mean",
    insertion_baseline: str | torch.Tensor = "blur",
    batch_size: int = 64,
    progress: bool = False,
) -> FaithfulnessResult:
    """Deletion and insertion curves of ``maps`` (``B x H x W``) for ``x`` (``B x C x H x W``), with the
    same curves for seeded random pixel orderings (averaged over ``random_draws``) as the reference.

    Petsiuk et al. delete to a flat image and insert into a blurred one: the defaults are the image mean
    and a blur. Good maps: deletion AUC below random, insertion AUC above. The model runs in eval mode and is left as it was.
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    if random_draws < 1:
        raise ValueError(f"random_draws: expected at least 1, got {random_draws}")
    maps = _as_maps(maps, x)
    options = dict(steps=steps, target=target, batch_size=batch_size, progress=progress)
    order = relevance_order(maps, seed=seed)
    curves = {}
    for mode, baseline in (("deletion", deletion_baseline), ("insertion", insertion_baseline)):
        curves[mode] = perturbation_curves(model, x, order, mode=mode, baseline=baseline, **options)
        draws = [
            perturbation_curves(
                model,
                x,
                random_order(*order.shape, seed=seed + 1 + d),
                mode=mode,
                baseline=baseline,
                **options,
            )
            for d in range(random_draws)
        ]
        curves[f"random_{mode}"] = np.mean(draws, axis=0)
    return FaithfulnessResult(fractions=np.linspace(0.0, 1.0, steps + 1), **curves)
