"""Reference answers for the exercises of notebooks/05_gradcam_guided_backprop.ipynb."""

from __future__ import annotations

import numpy as np

from helpers.course import shortcut
from helpers.exercises.checks import Exercise
from helpers.explain import faithfulness, localisation
from helpers.training.models import layer4_side


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
        reference=layer4_side,
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
