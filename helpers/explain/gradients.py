"""Pixel-level attributions: saliency, SmoothGrad, Integrated Gradients and occlusion, batched, pure torch.

Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``. Each method answers "which pixels of the image
move the score of ``target``?" with one value per input pixel and channel: ``x`` is ``B x C x H x W`` and
the result is ``B x C x H x W`` attributions (signed, except saliency). ``heatmap=True`` turns them into
``B x H x W`` maps in [0, 1] with :func:`helpers.explain.localisation.to_heatmaps` (the largest absolute
value over the channels, min-max scaled per image), the shape the CAM family and the localisation scores
use.

Targets as in :mod:`helpers.explain.cam`: a single-logit model takes ``target=1`` (the logit) or
``target=0`` (its negative); a multi-logit model takes a class index or one index per image.

Every function leaves the model as it found it: it runs in eval mode (:func:`helpers.model_state.eval_mode`
restores each module's flag afterwards, also on errors), adds no hooks, never changes ``requires_grad`` or
``inplace`` flags and never writes ``.grad``: gradients come from ``torch.autograd.grad`` with respect to a
private copy of the input. The methods that evaluate many perturbed images (SmoothGrad, Integrated
Gradients, occlusion) send at most ``batch_size`` of them through the model at once, a bound on memory.
Results are fresh tensors on the model's device, the same for the same arguments (SmoothGrad draws its
noise from its own generator, seeded by ``seed``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from helpers.explain.cam import Target, check_images, model_input, target_scores
from helpers.explain.localisation import to_heatmaps
from helpers.model_state import eval_mode

Baseline = float | Tensor | None
IG_METHODS = ("gausslegendre", "riemann_trapezoid")

__all__ = [
    "Completeness",
    "completeness",
    "integrated_gradients",
    "occlusion",
    "saliency",
    "smooth_grad",
]


def saliency(
    model: nn.Module, x: Tensor, target: Target = 1, *, absolute: bool = True, heatmap: bool = False
) -> Tensor:
    r"""Saliency (Simonyan et al. 2014): the input gradient of the score :math:`y` of ``target``,

    .. math:: S(x) = \left|\frac{\partial y}{\partial x}\right| ,

    one forward and one backward pass for the batch. ``x``: ``B x C x H x W`` -> ``B x C x H x W``
    (``absolute=False`` keeps the sign); ``heatmap=True`` -> ``B x H x W``, the largest value over the
    channels scaled to [0, 1]. For a linear model :math:`y = w \cdot x + b` the saliency is :math:`|w|`.
    As Captum's ``Saliency``. Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    check_images(x)
    images = model_input(model, x)
    classes = _per_image(target, len(images), images.device)
    with eval_mode(model):
        gradients = _input_gradients(model, images, classes)
    return _result(gradients.abs() if absolute else gradients, heatmap)


def smooth_grad(
    model: nn.Module,
    x: Tensor,
    target: Target = 1,
    *,
    samples: int = 25,
    sigma: float = 0.15,
    seed: int = 0,
    absolute: bool = False,
    batch_size: int = 32,
    heatmap: bool = False,
) -> Tensor:
    r"""SmoothGrad (Smilkov et al. 2017): the input gradient averaged over ``samples`` noisy copies,

    .. math:: \hat S(x) = \frac{1}{n} \sum_{i=1}^{n} \frac{\partial y}{\partial x}\Big|_{x + \varepsilon_i},
              \qquad \varepsilon_i \sim \mathcal{N}(0, \sigma_x^2), \quad
              \sigma_x = \sigma \, (\max x - \min x),

    with the noise level ``sigma`` a fraction of each image's range (the paper finds 10-20 % best).
    ``absolute=True`` averages :math:`|\partial y / \partial x|` instead (Captum's ``NoiseTunnel`` around
    ``Saliency`` with its default ``abs=True``). The noise comes from a generator seeded with ``seed``, one
    ``C x H x W`` draw per image and sample in the order image 0 sample 0, image 0 sample 1, ... (Captum's
    order), on the CPU, so a call gives the same result whatever ``batch_size`` and device (an image's
    noise depends on its place in the batch, as in Captum). ``x``:
    ``B x C x H x W`` -> ``B x C x H x W`` (``heatmap=True``: ``B x H x W``). Costs ``B * samples``
    forward and backward passes, ``batch_size`` images at a time.
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    check_images(x)
    _check_counts(samples=samples, batch_size=batch_size)
    if not sigma >= 0:
        raise ValueError(f"sigma: expected a noise level >= 0 (a fraction of the image range), got {sigma}")
    images = model_input(model, x)
    classes = _per_image(target, len(images), images.device)
    spread = sigma * (images.flatten(1).amax(1) - images.flatten(1).amin(1))
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros_like(images)
    with eval_mode(model):
        for pairs in _chunks(len(images) * samples, batch_size, images.device):
            owner = pairs // samples
            noise = torch.stack(
                [torch.randn(images.shape[1:], generator=generator, dtype=images.dtype) for _ in pairs]
            ).to(images.device)
            noisy = images[owner] + noise * spread[owner, None, None, None]
            gradients = _input_gradients(model, noisy, classes[owner])
            _accumulate(total, owner, gradients.abs() if absolute else gradients)
    return _result(total / samples, heatmap)


def integrated_gradients(
    model: nn.Module,
    x: Tensor,
    target: Target = 1,
    *,
    baseline: Baseline = None,
    steps: int = 50,
    method: str = "gausslegendre",
    batch_size: int = 32,
    heatmap: bool = False,
) -> Tensor:
    r"""Integrated Gradients (Sundararajan et al. 2017) from ``baseline`` :math:`x'` to the image :math:`x`:

    .. math:: \mathrm{IG}(x) = (x - x') \odot \int_0^1
              \frac{\partial y}{\partial x}\Big|_{x' + \alpha (x - x')} \, d\alpha
              \approx (x - x') \odot \sum_{s=1}^{m} w_s \,
              \frac{\partial y}{\partial x}\Big|_{x' + \alpha_s (x - x')} .

    Completeness: the attributions of an image sum to :math:`y(x) - y(x')` (check it with
    :func:`completeness`); for a linear model they equal :math:`(x - x') \odot w` exactly. ``baseline``:
    ``None`` (a black image, zeros), a number, or a tensor that broadcasts to ``x`` (one image for all, or
    one per image). The ``steps`` nodes :math:`\alpha_s` and weights :math:`w_s`: ``"gausslegendre"``
    (Captum's default, exact for polynomials of degree < 2 m) or ``"riemann_trapezoid"`` (:math:`\alpha_s`
    evenly spaced from 0 to 1, weights :math:`1 / (m - 1)`, halved at both ends; Captum's version of the
    rule uses :math:`1 / m`, so its sums fall short by a factor :math:`(m - 1) / m`). ``x``:
    ``B x C x H x W`` -> ``B x C x H x W`` (``heatmap=True``: ``B x H x W``); ``B * steps`` forward and
    backward passes, ``batch_size`` at a time. Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    check_images(x)
    _check_counts(steps=steps, batch_size=batch_size)
    images = model_input(model, x)
    start = _baseline(baseline, images)
    alphas, weights = (t.to(images.device, images.dtype) for t in _path_nodes(steps, method))
    classes = _per_image(target, len(images), images.device)
    total = torch.zeros_like(images)
    with eval_mode(model):
        for pairs in _chunks(len(images) * steps, batch_size, images.device):
            owner, step = pairs // steps, pairs % steps
            alpha = alphas[step, None, None, None]
            points = start[owner] + alpha * (images[owner] - start[owner])
            gradients = _input_gradients(model, points, classes[owner])
            _accumulate(total, owner, gradients * weights[step, None, None, None])
    return _result((images - start) * total, heatmap)


class Completeness(NamedTuple):
    """The completeness check of Integrated Gradients, one value per image (each a ``B`` tensor)."""

    attribution_sum: Tensor  #: the sum of an image's attributions
    score_difference: Tensor  #: y(x) - y(baseline)
    gap: Tensor  #: attribution_sum - score_difference (Captum's "convergence delta")


def completeness(
    model: nn.Module, x: Tensor, attributions: Tensor, target: Target = 1, *, baseline: Baseline = None
) -> Completeness:
    r"""How well Integrated Gradients kept its promise :math:`\sum_i \mathrm{IG}_i(x) = y(x) - y(x')`.

    ``attributions`` (``B x C x H x W``) come from :func:`integrated_gradients` with the same ``x``,
    ``target`` and ``baseline``. Returns :class:`Completeness`: the sum of the attributions of each image,
    :math:`y(x) - y(x')` (one no-grad forward pass of each), and their difference, which shrinks as
    ``steps`` grows. Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    check_images(x)
    if not isinstance(attributions, Tensor) or attributions.shape != x.shape:
        found = tuple(attributions.shape) if isinstance(attributions, Tensor) else type(attributions).__name__
        raise ValueError(f"attributions: expected the B x C x H x W shape of x {tuple(x.shape)}, got {found}")
    images = model_input(model, x)
    start = _baseline(baseline, images)
    classes = _per_image(target, len(images), images.device)
    with eval_mode(model), torch.no_grad():
        difference = target_scores(model(images), classes) - target_scores(model(start), classes)
    total = attributions.detach().to(difference.device).flatten(1).sum(1).to(difference.dtype)
    return Completeness(total, difference, total - difference)


def occlusion(
    model: nn.Module,
    x: Tensor,
    target: Target = 1,
    *,
    window: int | tuple[int, int] = 16,
    stride: int | tuple[int, int] = 8,
    baseline: float | Tensor = 0.0,
    batch_size: int = 32,
    heatmap: bool = False,
) -> Tensor:
    r"""Occlusion (Zeiler & Fergus 2014): slide a ``window`` of ``baseline`` over the image (all channels),
    ``stride`` pixels at a time, and record how much the score drops:

    .. math:: O(x)_{ij} = \frac{1}{|P_{ij}|} \sum_{p \in P_{ij}} \big(y(x) - y(x \text{ with patch } p
              \text{ replaced})\big),

    where :math:`P_{ij}` are the patches that cover pixel :math:`(i, j)`. Positions start at 0 and step by
    ``stride`` until a patch reaches the far edge (the last one may be cut by the border), so every pixel is
    covered: as Captum's ``Occlusion`` with ``sliding_window_shapes=(C, *window)``. ``window`` and
    ``stride`` are ``(height, width)`` or one number for both; ``stride`` may not exceed ``window``.
    ``baseline``: a number or a tensor broadcasting to ``x``. ``x``: ``B x C x H x W`` -> ``B x C x H x W``
    (the same map in every channel; ``heatmap=True``: ``B x H x W``). Costs one forward pass per image and
    position, no gradients, ``batch_size`` images at a time.
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    check_images(x)
    _check_counts(batch_size=batch_size)
    images = model_input(model, x)
    fill = _baseline(baseline, images)
    size = images.shape[-2:]
    (rows, cols), spans = _window_starts(size, window, stride, images.device)
    classes = _per_image(target, len(images), images.device)
    drops = torch.zeros(len(images), *size, dtype=images.dtype, device=images.device)
    with eval_mode(model), torch.no_grad():
        reference = target_scores(model(images), classes)
        for pairs in _chunks(len(images) * len(rows) * len(cols), batch_size, images.device):
            owner, position = pairs // (len(rows) * len(cols)), pairs % (len(rows) * len(cols))
            masks = _patch_masks(rows[position // len(cols)], cols[position % len(cols)], spans, size)
            occluded = torch.where(masks[:, None], fill[owner], images[owner])
            drop = reference[owner] - target_scores(model(occluded), classes[owner])
            _accumulate(drops, owner, drop[:, None, None] * masks)
    counts = _coverage(rows, spans[0], size[0])[:, None] * _coverage(cols, spans[1], size[1])[None, :]
    maps = drops / counts.to(images.dtype)
    return _result(maps[:, None].repeat(1, images.shape[1], 1, 1), heatmap)


# ------------------------------------------------------------------------------------------ shared parts


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name}: expected a whole number >= 1, got {value!r}")


def _per_image(target: Target, batch: int, device: torch.device) -> Tensor:
    """``target`` as a ``B`` long tensor, one class per image (the range is checked by ``target_scores``)."""
    classes = torch.as_tensor(target, device=device)
    if classes.is_floating_point() or classes.is_complex() or classes.ndim > 1:
        raise ValueError(f"target must be a class index or one index per image, got {target!r}")
    classes = classes.long().expand(batch) if classes.ndim == 0 else classes.long()
    if classes.shape != (batch,):
        raise ValueError(f"target has {classes.shape[0]} entries for a batch of {batch} images")
    return classes


def _input_gradients(model: nn.Module, images: Tensor, classes: Tensor) -> Tensor:
    """``d y_n / d images_n`` for ``n x C x H x W`` images (a fresh tensor) and ``n`` classes."""
    images = images.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = target_scores(model(images), classes)
        (gradients,) = torch.autograd.grad(scores.sum(), images)
    return gradients


def _chunks(total: int, size: int, device: torch.device) -> Iterator[Tensor]:
    """Indices ``0 .. total - 1`` in consecutive runs of at most ``size``."""
    for start in range(0, total, size):
        yield torch.arange(start, min(start + size, total), device=device)


def _accumulate(total: Tensor, owner: Tensor, values: Tensor) -> None:
    """``total[b] += sum of values[owner == b]``, in a fixed order (no atomic adds, so deterministic)."""
    for b in owner.unique().tolist():
        total[b] += values[owner == b].sum(0)


def _baseline(baseline: Baseline, images: Tensor) -> Tensor:
    """``None`` (zeros), a number or a tensor broadcasting to ``images``, as a ``B x C x H x W`` tensor."""
    if baseline is None:
        return torch.zeros_like(images)
    value = torch.as_tensor(baseline, dtype=images.dtype, device=images.device)
    try:
        return torch.broadcast_to(value, images.shape)
    except RuntimeError:
        raise ValueError(
            f"baseline of shape {tuple(value.shape)} does not broadcast to the images {tuple(images.shape)}"
        ) from None


def _path_nodes(steps: int, method: str) -> tuple[Tensor, Tensor]:
    """Nodes ``alpha`` in [0, 1] and weights (summing to 1) of the ``steps``-point rule ``method``."""
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return torch.from_numpy(0.5 * (1 + nodes)), torch.from_numpy(0.5 * weights)
    if method == "riemann_trapezoid":
        if steps < 2:
            raise ValueError(f"steps: the trapezoid rule needs at least 2 steps, got {steps}")
        weights = torch.full((steps,), 1 / (steps - 1), dtype=torch.float64)
        weights[[0, -1]] /= 2
        return torch.linspace(0, 1, steps, dtype=torch.float64), weights
    raise ValueError(f"method: expected one of {IG_METHODS}, got {method!r}")


def _window_starts(
    size: torch.Size, window: int | tuple[int, int], stride: int | tuple[int, int], device: torch.device
) -> tuple[tuple[Tensor, Tensor], tuple[int, int]]:
    """Top and left edges of the patches (Captum's rule: ``ceil((n - w) / s) + 1`` per axis), and the patch."""
    spans = (window, window) if isinstance(window, int) else tuple(window)
    steps = (stride, stride) if isinstance(stride, int) else tuple(stride)
    starts = []
    for n, w, s in zip(size, spans, steps, strict=True):
        if not 1 <= s <= w <= n:
            raise ValueError(
                f"window {spans} and stride {steps}: expected 1 <= stride <= window <= image size "
                f"{tuple(size)} on each axis, so that every pixel is covered"
            )
        starts.append(torch.arange(0, -(-(n - w) // s) * s + 1, s, device=device))
    return (starts[0], starts[1]), (int(spans[0]), int(spans[1]))


def _patch_masks(tops: Tensor, lefts: Tensor, spans: tuple[int, int], size: torch.Size) -> Tensor:
    """``n x H x W`` bool masks of patches ``spans`` at ``(tops, lefts)``, cut by the border."""
    rows = torch.arange(size[0], device=tops.device)
    cols = torch.arange(size[1], device=tops.device)
    inside_rows = (rows >= tops[:, None]) & (rows < tops[:, None] + spans[0])
    inside_cols = (cols >= lefts[:, None]) & (cols < lefts[:, None] + spans[1])
    return inside_rows[:, :, None] & inside_cols[:, None, :]


def _coverage(starts: Tensor, span: int, size: int) -> Tensor:
    """How many patches along one axis cover each pixel: ``size`` counts."""
    pixels = torch.arange(size, device=starts.device)
    return ((pixels >= starts[:, None]) & (pixels < starts[:, None] + span)).sum(0)


def _result(attributions: Tensor, heatmap: bool) -> Tensor:
    """The attributions as they are, or (``heatmap=True``) as ``B x H x W`` maps in [0, 1]."""
    if not heatmap:
        return attributions
    maps = torch.from_numpy(to_heatmaps(attributions)).to(attributions.dtype)
    return maps.to(attributions.device)
