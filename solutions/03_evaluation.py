"""Solutions to the exercises of notebooks/03_evaluation.ipynb (each function returns the answer)."""

import math

import numpy as np

from helpers.evaluate import metrics


def ppv_at_prevalence(sensitivity, specificity, prevalence):
    # Of 1,000 PA films about 93 have pneumonia: 0.9 * 93 = 84 are found, but 0.2 * 907 = 181 normals are
    # called positive too, so only about a third of the positive calls are right (PPV ~ 0.32).
    true_pos = sensitivity * prevalence
    false_pos = (1 - specificity) * (1 - prevalence)
    return true_pos / (true_pos + false_pos)


def youden_threshold(y, prob):
    # Chosen on the validation split (here its AP films): the test split is looked at once, with the threshold
    # fixed beforehand. A threshold per view is a choice a deployment could make; it must be made on validation.
    return metrics.choose_threshold(y, prob, "youden")


def threshold_for_sensitivity(y, prob, target):
    # The highest threshold that still finds the share `target` of the positives. Candidates: the predicted
    # probabilities, from the highest down; the first that reaches the target is the answer. (The same as
    # metrics.choose_threshold(y, prob, "sensitivity", target).)
    y, prob = np.asarray(y), np.asarray(prob)
    positives = prob[y == 1]
    for t in np.unique(prob)[::-1]:
        if np.mean(positives >= t) >= target:
            return float(t)
    return float(prob.min())  # not reached for a target in (0, 1]: the lowest threshold finds everybody


def positives_needed(sensitivity, half_width):
    # 1.96 * sqrt(0.9 * 0.1 / n) <= 0.05  ->  n >= 138.3, so 139 pneumonia patients; at RSNA's 22.5 %
    # prevalence that is a test set of about 620 patients.
    return math.ceil(1.96**2 * sensitivity * (1 - sensitivity) / half_width**2)


def view_only_auc(y, view):
    # Among the women: the share of the pneumonias on AP films (sensitivity) and of the others on PA films
    # (specificity), averaged: 0.714 without looking at a single pixel (all patients: 0.706; men: 0.700).
    y, is_ap = np.asarray(y), np.asarray(view) == "AP"
    sensitivity = is_ap[y == 1].mean()
    specificity = (~is_ap[y == 0]).mean()
    return (sensitivity + specificity) / 2


def brier_of_constant(prevalence):
    # p * (1 - p)^2 + (1 - p) * p^2 = p (1 - p): 0.236 at the AP films' 38.3 % (0.175 at RSNA's 22.5 %).
    return prevalence * (1 - prevalence)


def example_context(name):
    """Small, fast contexts for tests/test_exercises.py."""
    y = np.array([0, 0, 0, 0, 1, 1, 1, 0])
    prob = np.array([0.1, 0.6, 0.3, 0.95, 0.9, 0.4, 0.8, 0.2])
    return {
        "ppv_at_prevalence": {"sensitivity": 0.9, "specificity": 0.8, "prevalence": 1348 / 14511},
        "youden_threshold": {"y": y, "prob": prob},
        "threshold_for_sensitivity": {"y": y, "prob": prob},
        "positives_needed": {"sensitivity": 0.9, "half_width": 0.05},
        "view_only_auc": {"y": y, "view": np.array(["PA", "AP", "PA", "AP", "AP", "PA", "AP", "PA"])},
        "brier_of_constant": {"prevalence": 4664 / 12173},
    }[name]
