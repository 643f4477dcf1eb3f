"""Reference answers for the exercises of notebooks/03_evaluation.ipynb."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from helpers.evaluate import metrics
from helpers.exercises.checks import Exercise


def _ppv(sensitivity: float, specificity: float, prevalence: float) -> float:
    true_pos = sensitivity * prevalence
    return true_pos / (true_pos + (1 - specificity) * (1 - prevalence))


def _view_only_auc(y: Any, view: Any) -> float:
    score = (np.asarray(view) == "AP").astype(float)
    return metrics.ranking_metrics(np.asarray(y), score)["roc_auc"]


EXERCISES = {
    "ppv_at_prevalence": Exercise(
        question=(
            "A model has sensitivity 0.9 and specificity 0.8. What is its PPV (precision) among PA films of the "
            "real RSNA set, where the prevalence is 1,348 / 14,511?"
        ),
        reference=_ppv,
        hint=(
            "Bayes: PPV = sens * prev / (sens * prev + (1 - spec) * (1 - prev)). Think of 1,000 films: how many "
            "true positives, how many false positives?"
        ),
    ),
    "youden_threshold": Exercise(
        question="Which threshold maximises Youden's J = sensitivity + specificity - 1 on the VALIDATION split?",
        reference=lambda y, prob: metrics.choose_threshold(y, prob, "youden"),
        hint="helpers.evaluate.metrics.choose_threshold(y, prob, 'youden') with the validation labels and probabilities.",
    ),
    "positives_needed": Exercise(
        question=(
            "How many pneumonia patients must a test set hold so that the 95 % interval of a sensitivity near "
            "0.9 is about +-0.05 wide (normal approximation)? Give a whole number."
        ),
        reference=lambda sensitivity, half_width: math.ceil(
            1.96**2 * sensitivity * (1 - sensitivity) / half_width**2
        ),
        hint=(
            "The half-width is 1.96 * sqrt(s (1 - s) / n_positive): solve for n_positive and round UP. Only the "
            "positive patients count, because sensitivity is a fraction of them."
        ),
        compare=lambda answer, expected: float(answer) == float(expected),
    ),
    "view_only_auc": Exercise(
        question=(
            "On the real RSNA tables, what ROC-AUC does a 'model' reach that only reads the header and scores "
            "AP films 1 and PA films 0?"
        ),
        reference=_view_only_auc,
        hint=(
            "A score with two values gives a ROC curve with one corner: AUC = (sensitivity + specificity) / 2, "
            "or use helpers.evaluate.metrics.ranking_metrics(y, (view == 'AP').astype(float))."
        ),
    ),
    "brier_of_constant": Exercise(
        question=(
            "What Brier score does a 'model' get that predicts the prevalence p for everybody? (A Brier score "
            "above it means the probabilities are worse than knowing only the prevalence.)"
        ),
        reference=lambda prevalence: prevalence * (1 - prevalence),
        hint=(
            "A fraction p of the cases are positive: each costs (1 - p)^2. The others cost p^2. Average them; "
            "helpers.evaluate.metrics.brier_score on a constant prediction checks your algebra."
        ),
    ),
}
