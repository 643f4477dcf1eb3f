"""Reference answers for the exercises of notebooks/02_training_resnet18.ipynb."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from helpers.exercises.checks import Exercise
from helpers.training.models import layer4_side


def _epoch_by_accuracy(history) -> int:
    """The paper's rule: the first epoch with the highest validation accuracy (a later tie does not replace it)."""
    accuracy = np.asarray(history["val_acc"], dtype=float)
    return int(np.asarray(history["epoch"])[int(np.nanargmax(accuracy))])


def _weighted_bce(logits, labels, pos_weight) -> float:
    """BCEWithLogitsLoss(pos_weight=...) averaged over the films, as a Python float."""
    z = torch.as_tensor(logits, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.float32)
    return F.binary_cross_entropy_with_logits(z, y, pos_weight=torch.tensor(float(pos_weight))).item()


def _bce_inputs() -> list[dict]:
    """Logits and labels of several sizes and balances, a pos_weight of 1, and logits large enough that
    log(sigmoid(z)) computed naively in float32 gives -inf."""
    g = torch.Generator().manual_seed(2)
    return [
        {
            "logits": torch.tensor([2.0, -1.0, 0.5]),
            "labels": torch.tensor([1.0, 0.0, 1.0]),
            "pos_weight": 3.0,
        },
        {
            "logits": torch.randn(64, generator=g),
            "labels": (torch.rand(64, generator=g) < 0.25).float(),
            "pos_weight": 85 / 27,
        },  # fmt: skip
        {"logits": torch.randn(10, generator=g), "labels": torch.zeros(10), "pos_weight": 5.0},  # no positive
        {"logits": torch.randn(7, generator=g), "labels": torch.ones(7), "pos_weight": 1.0},
        {
            "logits": torch.tensor([30.0, -30.0, 120.0, -120.0]),
            "labels": torch.tensor([0.0, 1.0, 1.0, 0.0]),
            "pos_weight": 2.0,
        },  # fmt: skip
    ]


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
    "weighted_bce": Exercise(
        question=(
            "Write weighted_bce(logits, labels, pos_weight): the mean over the films of the BCE loss with "
            "pos_weight (what nn.BCEWithLogitsLoss(pos_weight=...) returns), from 1-D float tensors."
        ),
        reference=_weighted_bce,
        inputs=_bce_inputs,
        hint=(
            "l = -[p y log sigma(z) + (1 - y) log(1 - sigma(z))], averaged. Use log sigma(z) = F.logsigmoid(z) "
            "and log(1 - sigma(z)) = F.logsigmoid(-z): torch.log(torch.sigmoid(z)) gives -inf for large |z|."
        ),
    ),
    "epoch_by_accuracy": Exercise(
        question=(
            "The paper keeps the epoch with the best validation ACCURACY. Which epoch would that rule have "
            "kept in our run (history)?"
        ),
        reference=_epoch_by_accuracy,
        hint=(
            "Look at history['val_acc'] (the full values, not a rounded table) and take the epoch of its "
            "maximum; with a tie, the first such epoch, because a checkpoint is replaced only by a strictly "
            "better score: history.loc[history['val_acc'].idxmax(), 'epoch']."
        ),
    ),
}
