"""Reference answers for the exercises of notebooks/04_cam_math.ipynb."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from helpers.exercises.checks import Exercise
from helpers.training.models import layer4_side


def _cam(features: Any, weights: Any) -> np.ndarray:
    """CAM of a K x h x w feature map and K weights: M(i, j) = sum_k w_k A_k(i, j) -> h x w."""
    maps = np.asarray(features, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if maps.ndim != 3 or w.shape != (maps.shape[0],):
        raise ValueError(f"expected K x h x w features and K weights, got {maps.shape} and {w.shape}")
    return np.einsum("k,kij->ij", w, maps)


def _negative_region(features: Any, weights: Any) -> tuple[int, int]:
    """(row, column) where Grad-CAM for target=0, ReLU(-M) / (h w), is largest: the most negative cell of M."""
    m = _cam(features, weights)
    return tuple(int(v) for v in np.unravel_index(np.argmin(m), m.shape))


def _grad_cam_raw(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Raw Grad-CAM: B x K x h x w activations and gradients -> ReLU(sum_k alpha_k A_k), B x h x w."""
    alpha = gradients.double().mean(dim=(2, 3), keepdim=True)
    return torch.relu((alpha * activations.double()).sum(dim=1))


def _grad_cam_batches() -> list[dict[str, torch.Tensor]]:
    """Batches of other sizes, with mixed-sign gradients, so that a wrong axis or a missing ReLU shows."""
    generator = torch.Generator().manual_seed(4)
    shapes = [(1, 2, 3, 3), (3, 5, 4, 6), (2, 8, 7, 7)]
    return [
        {"activations": torch.rand(s, generator=generator), "gradients": torch.randn(s, generator=generator)}
        for s in shapes
    ]


def _upsampled(values: Any, size: int) -> list[float]:
    row = torch.as_tensor(values, dtype=torch.float64)[None, None]
    return F.interpolate(row, size=size, mode="linear", align_corners=False)[0, 0].tolist()


EXERCISES = {
    "cam_value": Exercise(
        question="With the toy feature maps and head weights w = (1, 1), what is the CAM value M(1, 1)?",
        reference=lambda features, weights, row, col: float(_cam(features, weights)[row, col]),
        hint="M(i, j) = sum_k w_k A_k(i, j): take each channel's value at (row 1, column 1), weigh it, add.",
    ),
    "logit_from_cam": Exercise(
        question="With the toy feature maps, weights w = (1, 1) and bias b = -2, what is the logit?",
        reference=lambda features, weights, bias: float(_cam(features, weights).mean() + bias),
        hint="The logit is the mean of the CAM over all h x w positions plus the bias "
        "(the same as w . GAP(A) + b: average each channel first).",
    ),
    "hw_factor": Exercise(
        question="How many positions h x w does layer4 of ResNet18 have for 224 x 224 input images?",
        reference=lambda image_size=224: layer4_side(image_size) ** 2,
        hint="ResNet18 halves the resolution five times (conv1, maxpool, layer2, layer3, layer4): a stride "
        "of 32. h = w = image size / 32; the factor is h times w.",
    ),
    "negative_region": Exercise(
        question="In the toy example, at which cell (row, column) is Grad-CAM for target=0 largest?",
        reference=_negative_region,
        hint="target=0 explains -logit, so its Grad-CAM is ReLU(-M) / (h w): find the most NEGATIVE value of "
        "the CAM M and give its (row, column), counted from 0.",
    ),
    "upsample_values": Exercise(
        question="Two cells (0, 4) upsampled to 8 pixels, linear with align_corners=False: which 8 values?",
        reference=_upsampled,
        hint="Output pixel X reads the input at u = (X + 1/2) * 2 / 8 - 1/2; u below 0 takes the first value, "
        "above 1 the last; in between interpolate linearly: 0 + 4 u.",
    ),
    "grad_cam_raw": Exercise(
        question="Write grad_cam_raw(activations, gradients): B x K x h x w tensors -> the raw Grad-CAM maps, "
        "B x h x w.",
        reference=_grad_cam_raw,
        hint="alpha = gradients.mean(dim=(2, 3), keepdim=True) (B x K x 1 x 1: one weight per image and "
        "channel), then (alpha * activations).sum(dim=1) over the channels, then torch.relu.",
        inputs=_grad_cam_batches,
    ),
}
