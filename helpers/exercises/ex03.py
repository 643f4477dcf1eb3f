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


def _threshold_for_sensitivity(y: Any, prob: Any, target: float) -> float:
    return metrics.choose_threshold(np.asarray(y), np.asarray(prob), "sensitivity", target)


def _sensitivity_inputs(y: Any, prob: Any) -> list[dict]:
    """The notebook's own validation predictions at 90 %, then other sizes, ties and targets, 100 % included."""
    rng = np.random.default_rng(3)
    labels = (rng.random(200) < 0.225).astype(int)
    scores = np.clip(0.35 * labels + rng.normal(0.35, 0.2, size=200), 0, 1).round(2)  # rounded: many ties
    return [
        {"y": np.asarray(y), "prob": np.asarray(prob, dtype=float), "target": 0.9},
        {"y": labels, "prob": scores, "target": 0.8},
        {"y": labels, "prob": scores, "target": 1.0},
        {"y": np.array([0, 1, 0, 1, 1, 0]), "prob": np.array([0.2, 0.3, 0.4, 0.6, 0.9, 0.7]), "target": 0.5},
        {"y": np.array([1, 0, 1, 0]), "prob": np.array([0.5, 0.5, 0.5, 0.1]), "target": 0.9},
    ]


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
        question="Which threshold maximises Youden's J = sensitivity + specificity - 1 on these validation films?",
        reference=lambda y, prob: metrics.choose_threshold(y, prob, "youden"),
        hint=(
            "helpers.evaluate.metrics.choose_threshold(y, prob, 'youden') with the labels and probabilities of "
            "the AP films of the validation split: val[val['view_position'] == 'AP']."
        ),
    ),
    "threshold_for_sensitivity": Exercise(
        question=(
            "Write threshold_for_sensitivity(y, prob, target): the HIGHEST threshold t such that calling "
            "prob >= t positive finds at least the share target of the positives (y == 1)."
        ),
        reference=_threshold_for_sensitivity,
        inputs=_sensitivity_inputs,
        hint=(
            "The candidates are the predicted probabilities themselves. Go through them from the highest down "
            "and return the first t with np.mean(prob[y == 1] >= t) >= target; or sort the positives' "
            "probabilities in descending order and take the k-th with k = the number of positives needed."
        ),
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
            "On the real RSNA tables, what ROC-AUC does a 'model' reach among the WOMEN that only reads the "
            "header and scores AP films 1 and PA films 0?"
        ),
        reference=_view_only_auc,
        hint=(
            "A score with two values gives a ROC curve with one corner: AUC = (sensitivity + specificity) / 2, "
            "with both taken among the women only (real['PatientSex'] == 'F')."
        ),
    ),
    "brier_of_constant": Exercise(
        question=(
            "What Brier score does a 'model' get that predicts the prevalence p for everybody, at the prevalence "
            "of the real AP films? (A Brier score above it: probabilities worse than knowing only the prevalence.)"
        ),
        reference=lambda prevalence: prevalence * (1 - prevalence),
        hint=(
            "A fraction p of the cases are positive: each costs (1 - p)^2. The others cost p^2. Average them; "
            "helpers.evaluate.metrics.brier_score on a constant prediction checks your algebra."
        ),
    ),
}
