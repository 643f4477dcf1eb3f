"""Reference answers for the exercises of notebooks/02_training_resnet18.ipynb."""

from __future__ import annotations

import math

import numpy as np

from helpers.exercises.checks import Exercise
from helpers.training.models import layer4_side


def _best_epoch(history) -> int:
    best = np.asarray(history["best"], dtype=bool)
    return int(np.asarray(history["epoch"])[np.flatnonzero(best)[-1]])


EXERCISES = {
    "layer4_cells": Exercise(
        question="How many cells (height x width) does one layer4 map of ResNet18 have for a film of image_size pixels?",
        reference=lambda image_size: layer4_side(image_size) ** 2,
        hint="Five stride-2 steps each map n pixels to ceil(n / 2): the side becomes ceil(S / 32). Then square it.",
    ),
    "fc_parameters": Exercise(
        question="How many parameters does ResNet18's fc layer have with one logit per class (n_classes classes)?",
        reference=lambda n_classes: 512 * n_classes + n_classes,
        hint="A linear layer has n_in x n_out weights plus n_out biases; ResNet18's fc reads 512 features.",
    ),
    "pos_weight": Exercise(
        question="What pos_weight does fit compute for n_positive positives among n_total training labels?",
        reference=lambda n_positive, n_total: (n_total - n_positive) / n_positive,
        hint="pos_weight = number of negatives / number of positives (loop.compute_pos_weight).",
    ),
    "weighted_loss": Exercise(
        question="What is the BCE loss with pos_weight of one film with this logit and label (natural log)?",
        reference=lambda logit, label, pos_weight: float(
            -(pos_weight * label * -math.log1p(math.exp(-logit)) + (1 - label) * -math.log1p(math.exp(logit)))
        ),
        hint="l = -[p y log(sigma(z)) + (1 - y) log(1 - sigma(z))] with sigma(z) = 1 / (1 + exp(-z)); "
        "for y = 1 it is p * log(1 + exp(-z)).",
    ),
    "best_epoch": Exercise(
        question="Which epoch's weights are in the saved checkpoint?",
        reference=lambda history: _best_epoch(history),
        hint="The checkpoint is rewritten at every epoch flagged best=True; the last such epoch is the one kept "
        "(the dashed line of the learning curves).",
    ),
}
