"""Reference answers for the exercises of notebooks/05_gradcam_guided_backprop.ipynb."""

from __future__ import annotations

import numpy as np
import torch

from helpers.exercises.checks import Exercise
from helpers.explain import faithfulness, localisation
from helpers.training.models import layer4_side


def _guided_relu_backward(forward_input: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    """Guided backpropagation through a ReLU: 1[f > 0] * ReLU(R), any shape."""
    return (forward_input > 0).to(grad_output.dtype) * grad_output.clamp(min=0)


def _relu_tensors() -> list[dict[str, torch.Tensor]]:
    """Mixed-sign tensors of several shapes, with exact zeros in the forward input (the mask is f > 0)."""
    generator = torch.Generator().manual_seed(5)
    cases = []
    for shape in [(6,), (2, 3, 4, 4), (1, 8, 5, 7)]:
        forward_input = torch.randn(shape, generator=generator)
        forward_input[..., 0] = 0.0
        cases.append({"forward_input": forward_input, "grad_output": torch.randn(shape, generator=generator)})
    return cases


def _pointing_game(heatmap: np.ndarray, boxes: list) -> float:
    """1.0 when the map's (unique) maximum lies in a box, by the pixel-centre rule, else 0.0."""
    return float(localisation.pointing_game(np.asarray(heatmap)[None], [boxes])[0])


def _maps_and_boxes() -> list[dict]:
    """Maps with one clear maximum: hits and misses, a non-square map (rows and columns swapped show),
    several boxes, and a maximum just outside a box edge."""
    rng = np.random.default_rng(6)
    cases = []
    for shape, peak, boxes in [
        ((16, 16), (3, 12), [(10, 1, 4, 4)]),  # hit: column 12, row 3
        ((8, 12), (6, 2), [(5, 1, 3, 6)]),  # miss; the hit only if rows and columns are swapped
        ((10, 10), (7, 7), [(0, 0, 3, 3), (6.5, 6.5, 2, 2)]),  # hit in the second box
        ((10, 10), (4, 5), [(5.6, 0, 4, 10)]),  # miss: column 5's centre 5.5 is left of x = 5.6
    ]:
        heatmap = rng.uniform(0.0, 0.5, size=shape)
        heatmap[peak] = 1.0
        cases.append({"heatmap": heatmap, "boxes": boxes})
    return cases


def _deletion_wins(result: faithfulness.FaithfulnessResult) -> int:
    ours = faithfulness.curve_auc(result.deletion)
    return int(np.sum(ours < faithfulness.curve_auc(result.random_deletion)))


EXERCISES = {
    "layer4_cells": Exercise(
        question="How many cells wide is ResNet18's layer4 Grad-CAM map for an image of `image_size` pixels?",
        reference=layer4_side,
        hint="Five stride-2 steps (conv1, the max-pool, and the start of layer2, layer3, layer4), each rounding "
        "up: 100 -> 50 -> ... Rounding up five times is math.ceil(image_size / 32), not image_size // 32.",
    ),
    "guided_relu_backward": Exercise(
        question="Write guided_relu_backward(forward_input, grad_output): the gradient guided "
        "backpropagation passes down through a ReLU.",
        reference=_guided_relu_backward,
        hint="Keep the gradient only where the forward input was positive (forward_input > 0) AND the "
        "gradient is positive: (forward_input > 0) * grad_output.clamp(min=0).",
        inputs=_relu_tensors,
    ),
    "pointing_game": Exercise(
        question="Write pointing_game(heatmap, boxes): 1.0 if the map's maximum lies in a box, else 0.0.",
        reference=_pointing_game,
        hint="row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape); a box (x, y, w, h) holds it when "
        "x <= col + 0.5 < x + w and y <= row + 0.5 < y + h (x runs along the columns); any box will do.",
        inputs=_maps_and_boxes,
    ),
    "deletion_wins": Exercise(
        question="On how many images is Grad-CAM's deletion AUC lower than the random order's?",
        reference=_deletion_wins,
        hint="faithfulness.curve_auc(result.deletion) < faithfulness.curve_auc(result.random_deletion) gives "
        "one True or False per image; count the True ones.",
    ),
}
