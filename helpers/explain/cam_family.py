r"""Grad-CAM's relatives: Grad-CAM++, HiResCAM, Score-CAM and Eigen-CAM, batched, pure torch.

Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``. Every method has the calling convention of
:func:`helpers.explain.cam.grad_cam`: ``(model, x, layer, target=1, *, normalize=True, upsample=True)``;
``x`` is ``B x C x H x W`` and the result one map per image, ``B x H x W``, upsampled bilinearly to the
input size (``align_corners=False``) and min-max scaled to [0, 1] per image (a map that is zero everywhere
stays zero). ``normalize=False, upsample=False`` gives the raw ``B x h x w`` map at the layer's resolution.
Each map is :math:`\mathrm{ReLU}` of a combination of the layer's activations :math:`A_k` (``B x K x h x w``);
the methods differ in how they weigh them. ``layer`` is a dotted name (``"layer4"``) or a submodule, and
must run once per forward pass; targets as in :mod:`helpers.explain.cam`.

The formulas follow pytorch-grad-cam 1.5 (Gildenblat et al.), the implementation the course compares with;
where the papers or their code differ, the docstring says so. The model is left exactly as it was: eval
mode inside (each module's flag restored afterwards), one forward hook removed in ``finally``, no
``requires_grad``, ``inplace`` or ``.grad`` touched, the layer's output copied before the network can
change it in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers.explain.cam import (
    Layer,
    Target,
    finish_maps,
    layer_activations,
    min_max_normalize,
    model_input,
    target_scores,
    upsample_maps,
)
from helpers.explain.gradients import _check_counts, _chunks, _per_image
from helpers.model_state import eval_mode

__all__ = ["eigen_cam", "grad_cam_plus_plus", "hires_cam", "score_cam"]

GRAD_CAM_PP_EPS = 1e-6  # pytorch-grad-cam's guard in the denominator of the alphas


def grad_cam_plus_plus(
    model: nn.Module,
    x: Tensor,
    layer: Layer,
    target: Target = 1,
    *,
    normalize: bool = True,
    upsample: bool = True,
) -> Tensor:
    r"""Grad-CAM++ (Chattopadhay et al. 2018): Grad-CAM whose channel weights count only positive gradients,
    each pixel weighted by :math:`\alpha`. With :math:`g = \partial y / \partial A_k(i, j)` and the score
    passed through :math:`\exp` (so that higher derivatives have a closed form, eq. 19 of the paper):

    .. math:: \alpha_k(i, j) = \frac{g^2}{2 g^2 + \sum_{a, b} A_k(a, b) \, g^3}, \qquad
              w_k = \sum_{i, j} \alpha_k(i, j) \, \mathrm{ReLU}(g), \qquad
              L = \mathrm{ReLU}\Big(\sum_k w_k A_k\Big),

    with :math:`\alpha = 0` where :math:`g = 0`, and ``1e-6`` added to the denominator as pytorch-grad-cam
    does (so the weights are not exactly scale-free: gradients of order 1e-3 and smaller feel it). One
    forward and one backward pass for the batch. ``x``: ``B x C x H x W`` -> ``B x H x W``.
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    activations, gradients = layer_activations(model, x, layer, target)
    squared = gradients**2
    totals = activations.sum(dim=(2, 3), keepdim=True)
    alphas = squared / (2 * squared + totals * squared * gradients + GRAD_CAM_PP_EPS)
    alphas = torch.where(gradients != 0, alphas, 0.0)
    weights = (alphas * F.relu(gradients)).sum(dim=(2, 3))
    raw = F.relu(torch.einsum("bk,bkhw->bhw", weights, activations))
    return finish_maps(raw, x.shape[-2:], normalize, upsample)


def hires_cam(
    model: nn.Module,
    x: Tensor,
    layer: Layer,
    target: Target = 1,
    *,
    normalize: bool = True,
    upsample: bool = True,
) -> Tensor:
    r"""HiResCAM (Draelos & Carin 2020): gradient times activation, element by element, summed over channels,

    .. math:: L(i, j) = \mathrm{ReLU}\Big(\sum_k \frac{\partial y}{\partial A_k(i, j)} \, A_k(i, j)\Big).

    Grad-CAM averages the gradient over the map first; HiResCAM keeps it per cell, so the map shows the
    cells that actually raised the score. For a global-average-pooling + linear head on ``layer`` the two
    are equal (the gradient is the same in every cell). One forward and one backward pass for the batch.
    ``x``: ``B x C x H x W`` -> ``B x H x W``. Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    activations, gradients = layer_activations(model, x, layer, target)
    raw = F.relu((gradients * activations).sum(dim=1))
    return finish_maps(raw, x.shape[-2:], normalize, upsample)


def score_cam(
    model: nn.Module,
    x: Tensor,
    layer: Layer,
    target: Target = 1,
    *,
    normalize: bool = True,
    upsample: bool = True,
    batch_size: int = 32,
) -> Tensor:
    r"""Score-CAM (Wang et al. 2020): no gradients; each channel is used as a mask on the image and weighed
    by the score the masked image gets. With :math:`H_k` the activation map :math:`A_k` upsampled to the
    input size (bilinear, ``align_corners=False`` as in the authors' code and the rest of the course;
    pytorch-grad-cam uses ``align_corners=True`` here) and min-max scaled to [0, 1] (a constant map gives a
    zero mask):

    .. math:: s_k = y(x \odot H_k), \qquad w = \mathrm{softmax}_k(s), \qquad
              L = \mathrm{ReLU}\Big(\sum_k w_k A_k\Big).

    The score :math:`y` is the target's logit (its negative for ``target=0`` of a single-logit model), and
    the softmax runs over the ``K`` channels: pytorch-grad-cam's ``ScoreCAM`` with
    ``ClassifierOutputTarget`` (``BinaryClassifierOutputTarget`` for ``target=0``). The authors' code
    instead weighs each channel by the class probability of the masked image, without the softmax over
    channels. Costs one no-grad forward pass per image and channel (``B * K``; 512 per image on ResNet18's
    ``layer4``), ``batch_size`` masked images at a time. ``x``: ``B x C x H x W`` -> ``B x H x W``.
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    _check_counts(batch_size=batch_size)
    activations, _ = layer_activations(model, x, layer, target, gradients=False)
    images = model_input(model, x)
    classes = _per_image(target, len(images), images.device)
    channels = activations.shape[1]
    scores = torch.empty(len(images) * channels, dtype=activations.dtype, device=activations.device)
    with eval_mode(model), torch.no_grad():
        for pairs in _chunks(len(images) * channels, batch_size, images.device):
            owner = pairs // channels
            masks = activations.flatten(0, 1)[pairs]
            masks = min_max_normalize(upsample_maps(masks, images.shape[-2:]))
            scores[pairs] = target_scores(model(images[owner] * masks[:, None]), classes[owner])
    weights = torch.softmax(scores.view(len(images), channels), dim=1)
    raw = F.relu(torch.einsum("bk,bkhw->bhw", weights, activations))
    return finish_maps(raw, x.shape[-2:], normalize, upsample)


def eigen_cam(
    model: nn.Module,
    x: Tensor,
    layer: Layer,
    target: Target = 1,
    *,
    normalize: bool = True,
    upsample: bool = True,
) -> Tensor:
    r"""Eigen-CAM (Muhammad & Yeasin 2020): the first principal component of the activations, no gradients.

    Each image's activations, one row per cell and one column per channel (``hw x K``), are centred per
    channel (as pytorch-grad-cam does) and projected on their first right singular vector :math:`v_1`:

    .. math:: P = (A - \bar A) \, v_1, \qquad L = \mathrm{ReLU}(\pm P).

    A singular vector has no sign of its own; the map takes the one for which the largest value outweighs
    the most negative (:math:`|\max P| \ge |\min P|`), pytorch-grad-cam's sign correction
    (``get_2d_projection_with_sign_correction``, used by its Seg-Eigen-CAM). The SVD runs in float64 on the
    CPU, so the sign and the map are the same on any device. The map is class-agnostic: ``target`` is
    checked, so one call fits every method, but does not change the map. ``x``: ``B x C x H x W`` ->
    ``B x H x W``. Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    activations, _ = layer_activations(model, x, layer, target, gradients=False)
    batch, channels, height, width = activations.shape
    cells = activations.to("cpu", torch.float64).reshape(batch, channels, -1).transpose(1, 2)
    centred = cells - cells.mean(dim=1, keepdim=True)
    _, _, right = torch.linalg.svd(centred, full_matrices=False)
    projection = (centred @ right[:, 0, :, None])[..., 0]
    flip = projection.amin(dim=1).abs() > projection.amax(dim=1).abs()
    projection = torch.where(flip[:, None], -projection, projection)
    raw = F.relu(projection.reshape(batch, height, width)).to(activations.device, activations.dtype)
    return finish_maps(raw, x.shape[-2:], normalize, upsample)
