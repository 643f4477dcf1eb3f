"""Reference answers for the exercises of notebooks/05_gradcam_guided_backprop.ipynb."""

from __future__ import annotations

import numpy as np

from helpers import faithfulness, localisation, shortcut
from helpers.exercises import Exercise


def _resnet_side(image_size: int) -> int:
    """Side of ResNet18's layer4 output: conv1 (stride 2), max-pool (stride 2), layer2..4 (stride 2 each)."""
    side = (image_size + 2 * 3 - 7) // 2 + 1  # conv1: kernel 7, padding 3
    side = (side + 2 * 1 - 3) // 2 + 1  # max-pool: kernel 3, padding 1
    for _ in range(3):  # first 3x3 convolution of layer2, layer3, layer4: padding 1
        side = (side + 2 * 1 - 3) // 2 + 1
    return side


def _box_area_baseline(boxes_list, height: int, width: int) -> float:
    return float(np.nanmean(localisation.box_area_share(boxes_list, height, width)))


def _ap_pa_ratio(labels, headers) -> float:
    table = shortcut.positive_share_by_view(labels, headers)
    return float(table.loc["AP", "share_positive"] / table.loc["PA", "share_positive"])


def _deletion_gap(result: faithfulness.FaithfulnessResult) -> float:
    return float(
        np.mean(faithfulness.curve_auc(result.random_deletion) - faithfulness.curve_auc(result.deletion))
    )


EXERCISES = {
    "layer4_cells": Exercise(
        question="How many cells wide is ResNet18's layer4 Grad-CAM map for an image of `image_size` pixels?",
        reference=lambda image_size: _resnet_side(image_size),
        hint="Five stride-2 steps (conv1, the max-pool, and the start of layer2, layer3, layer4): divide by 2**5.",
    ),
    "box_area_baseline": Exercise(
        question="What pointing-game score does a map with no information expect on these images?",
        reference=_box_area_baseline,
        hint="Per image: boxes_to_mask(boxes, height, width).mean(); then the mean over the images.",
    ),
    "ap_pa_ratio": Exercise(
        question="How many times more common is a positive label among AP films than among PA films (real RSNA)?",
        reference=_ap_pa_ratio,
        hint="One row per box: take the max Target per patientId first, join ViewPosition from the headers "
        "(PatientID), then share positive for AP divided by share positive for PA.",
    ),
    "deletion_gap": Exercise(
        question="Mean over images of (random deletion AUC - Grad-CAM deletion AUC)?",
        reference=_deletion_gap,
        hint="faithfulness.curve_auc(result.random_deletion) - faithfulness.curve_auc(result.deletion), then the "
        "mean over images.",
    ),
}
