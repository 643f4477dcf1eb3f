"""Evaluation of a binary classifier: predictions, metrics, thresholds, calibration, subgroups, errors.

Taught in ``notebooks/03_evaluation.ipynb``. Conventions used throughout:

- ``y_true`` holds 0/1 labels (1 = pneumonia), ``prob`` the predicted probability of class 1 in [0, 1].
- A case is called positive when ``prob >= threshold`` (the same rule as ``sklearn.metrics.roc_curve``).
- A ratio whose denominator is zero (e.g. sensitivity when there are no positive cases, precision when
  nothing is called positive) is undefined: it is returned as NaN with a
  ``sklearn.exceptions.UndefinedMetricWarning``, never as 0 and never as a crash.

NumPy, pandas and scikit-learn only: predictions come from :mod:`helpers.training.inference`; confidence
intervals, summary and subgroup tables and model comparison from :mod:`helpers.evaluate.bootstrap`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    roc_auc_score,
    roc_curve,
)

THRESHOLD_METRICS = ("accuracy", "sensitivity", "specificity", "precision", "npv", "f1")
SUMMARY_METRICS = ("prevalence", "roc_auc", "pr_auc", *THRESHOLD_METRICS, "brier")


def _check_binary(y_true: Any, prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert: 1-D 0/1 labels (int64) and finite probabilities in [0, 1] (float64)."""
    y = np.asarray(y_true)
    p = np.asarray(prob, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1 or len(y) != len(p):
        raise ValueError(
            f"y_true and prob must be 1-D of the same length, got shapes {y.shape} and {p.shape}"
        )
    if len(y) == 0:
        raise ValueError("y_true and prob are empty")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_true must hold only 0 and 1, found {np.unique(y)[:5].tolist()}")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError(f"prob must be finite and in [0, 1], found range [{np.nanmin(p)}, {np.nanmax(p)}]")
    return y.astype(np.int64), p


# Each thresholded metric as (numerator, denominator) of the confusion counts: one definition for the
# point estimate (scalars) and for the vectorised bootstrap (one value per resample).
_RATIOS: dict[str, Callable[..., tuple[Any, Any]]] = {
    "accuracy": lambda tp, fp, tn, fn: (tp + tn, tp + fp + tn + fn),
    "sensitivity": lambda tp, fp, tn, fn: (tp, tp + fn),
    "specificity": lambda tp, fp, tn, fn: (tn, tn + fp),
    "precision": lambda tp, fp, tn, fn: (tp, tp + fp),
    "npv": lambda tp, fp, tn, fn: (tn, tn + fn),
    "f1": lambda tp, fp, tn, fn: (2 * tp, 2 * tp + fp + fn),
}


def _div(numerator: Any, denominator: Any) -> np.ndarray:
    """Elementwise ratio, NaN where the denominator is 0."""
    num, den = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def threshold_metrics(y_true: Any, prob: Any, threshold: float = 0.5) -> dict[str, float]:
    """Metrics at one operating point: ``prob >= threshold`` is called pneumonia.

    Returns accuracy, sensitivity (recall, TPR), specificity (TNR), precision (PPV), npv, f1, the counts tp, fp,
    tn, fn, n, prevalence and the threshold. Undefined ratios are NaN with a warning (see the module docstring);
    F1 = 2tp / (2tp + fp + fn) is 0 when precision alone is undefined. Taught in ``notebooks/03_evaluation.ipynb``.
    """
    y, p = _check_binary(y_true, prob)
    tn, fp, fn, tp = confusion_matrix(y, (p >= threshold).astype(np.int64), labels=[0, 1]).ravel().tolist()
    result = {name: float(_div(*ratio(tp, fp, tn, fn))) for name, ratio in _RATIOS.items()}
    undefined = [name for name, value in result.items() if np.isnan(value)]
    if undefined:
        warnings.warn(
            f"{', '.join(undefined)} undefined (zero denominator: tp={tp}, fp={fp}, tn={tn}, fn={fn}) -> NaN",
            UndefinedMetricWarning,
            stacklevel=2,
        )
    counts = {"tp": tp, "fp": fp, "tn": tn, "fn": fn, "n": len(y)}
    return {**result, **counts, "prevalence": (tp + fn) / len(y), "threshold": float(threshold)}


def ranking_metrics(y_true: Any, prob: Any) -> dict[str, float]:
    """Threshold-free metrics: ``roc_auc``, ``pr_auc`` (average precision) and ``pr_auc_baseline``.

    The baseline is the prevalence: the PR-AUC of a classifier that ranks at random. With one class only,
    both AUCs are NaN with a warning. Taught in ``notebooks/03_evaluation.ipynb``.
    """
    y, p = _check_binary(y_true, prob)
    prevalence = float(y.mean())
    if prevalence in (0.0, 1.0):
        warnings.warn(
            f"only one class in y_true ({int(y[0])}): ROC-AUC and PR-AUC undefined -> NaN",
            UndefinedMetricWarning,
            stacklevel=2,
        )
        return {"roc_auc": float("nan"), "pr_auc": float("nan"), "pr_auc_baseline": prevalence}
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "pr_auc_baseline": prevalence,
    }


def choose_threshold(y_true: Any, prob: Any, rule: str = "youden", value: float | None = None) -> float:
    """A decision threshold by a named rule (usually chosen on the validation split, never on the test split).

    - ``'fixed'``: ``value`` (default 0.5).
    - ``'youden'``: the threshold maximising Youden's J = sensitivity + specificity - 1 over sklearn's
      ``roc_curve``; among ties the highest threshold.
    - ``'sensitivity'``: the highest threshold whose sensitivity reaches ``value`` (e.g. 0.9).
    The two data-driven rules need both classes (``ValueError`` otherwise). Taught in ``notebooks/03_evaluation.ipynb``.
    """
    if rule == "fixed":
        return 0.5 if value is None else float(value)
    if rule not in ("youden", "sensitivity"):
        raise ValueError(f"rule must be 'youden', 'fixed' or 'sensitivity', got {rule!r}")
    y, p = _check_binary(y_true, prob)
    if len(np.unique(y)) < 2:
        raise ValueError(f"cannot choose a threshold by {rule!r}: y_true holds only class {int(y[0])}")
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]  # drop sklearn's leading +inf threshold
    if rule == "youden":
        return float(thresholds[np.argmax(tpr - fpr)])
    if value is None or not 0 < value <= 1:
        raise ValueError(f"rule 'sensitivity' needs a target value in (0, 1], got {value!r}")
    return float(thresholds[np.argmax(tpr >= value)])


def brier_score(y_true: Any, prob: Any) -> float:
    """Mean squared error of the probabilities, ``mean((prob - y)^2)`` (sklearn's ``brier_score_loss``)."""
    y, p = _check_binary(y_true, prob)
    return float(brier_score_loss(y, p, pos_label=1))


def calibration_table(y_true: Any, prob: Any, n_bins: int = 10, strategy: str = "uniform") -> pd.DataFrame:
    """One row per bin: ``bin_low``, ``bin_high``, ``count``, ``mean_predicted``, ``fraction_positive``.

    Values come from ``sklearn.calibration.calibration_curve`` (bins closed on the right, the first also on
    the left); empty bins keep their row with count 0 and NaN means. ``strategy``: ``'uniform'`` (equal
    widths) or ``'quantile'`` (equal counts). Taught in ``notebooks/03_evaluation.ipynb``.
    """
    y, p = _check_binary(y_true, prob)
    fraction_positive, mean_predicted = calibration_curve(y, p, n_bins=n_bins, strategy=strategy, pos_label=1)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        edges = np.percentile(p, np.linspace(0, 100, n_bins + 1))
    counts = np.bincount(np.searchsorted(edges[1:-1], p), minlength=n_bins)  # calibration_curve's own binning
    table = pd.DataFrame({"bin_low": edges[:-1], "bin_high": edges[1:], "count": counts})
    table["mean_predicted"] = np.nan
    table["fraction_positive"] = np.nan
    table.loc[counts > 0, "mean_predicted"] = mean_predicted
    table.loc[counts > 0, "fraction_positive"] = fraction_positive
    return table


def expected_calibration_error(y_true: Any, prob: Any, n_bins: int = 10, strategy: str = "uniform") -> float:
    """ECE = sum over bins of (count / n) * |fraction_positive - mean_predicted| (see :func:`calibration_table`)."""
    table = calibration_table(y_true, prob, n_bins, strategy).query("count > 0")
    gaps = (table["fraction_positive"] - table["mean_predicted"]).abs()
    return float((table["count"] * gaps).sum() / table["count"].sum())


def age_bands(
    ages: Any, edges: tuple[int, ...] = (0, 20, 40, 60, 80, 200), max_plausible: int = 100
) -> pd.Series:
    """Ordered categorical age bands such as ``'20-39'`` and ``'80+'``.

    Ages may be numbers or DICOM strings (``'51'``, ``'051Y'``). Ages above ``max_plausible`` (the real RSNA
    headers hold a few, e.g. 148) are labelled ``'implausible (>100)'``; missing, unparsable or out-of-range
    ages ``'unknown'``. Keeps the index of a Series input. Taught in ``notebooks/03_evaluation.ipynb``.
    """
    series = ages if isinstance(ages, pd.Series) else pd.Series(ages)
    years = pd.to_numeric(series.astype(str).str.strip().str.rstrip("Yy"), errors="coerce")
    labels = [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-2], edges[1:-1], strict=True)] + [f"{edges[-2]}+"]
    implausible, unknown = f"implausible (>{max_plausible})", "unknown"
    banded = pd.cut(years, bins=list(edges), labels=labels, right=False).astype(object)
    banded[years > max_plausible] = implausible
    banded = banded.fillna(unknown)
    return pd.Series(
        pd.Categorical(banded, categories=[*labels, implausible, unknown], ordered=True), index=series.index
    )


def find_errors(
    df: pd.DataFrame, prob_col: str = "prob", y_col: str = "label", threshold: float = 0.5, k: int = 8
) -> dict[str, pd.DataFrame]:
    """The cases to look at first, ``k`` rows each (all columns kept, ties in the original order):

    ``false_positives`` (label 0, called positive) most confident first, ``false_negatives`` (label 1, called
    negative) most confident first, ``least_certain`` (any label) closest to the threshold first.
    Taught in ``notebooks/03_evaluation.ipynb``.
    """
    missing = [c for c in (prob_col, y_col) if c not in df.columns]
    if missing:
        raise ValueError(f"find_errors: columns {missing} not in the DataFrame (it has {list(df.columns)})")
    _check_binary(df[y_col].to_numpy(), df[prob_col].to_numpy())
    called = df[prob_col] >= threshold
    false_pos = df[(df[y_col] == 0) & called].sort_values(prob_col, ascending=False, kind="stable")
    false_neg = df[(df[y_col] == 1) & ~called].sort_values(prob_col, ascending=True, kind="stable")
    uncertain = df.iloc[np.argsort(np.abs(df[prob_col].to_numpy() - threshold), kind="stable")]
    return {
        "false_positives": false_pos.head(k),
        "false_negatives": false_neg.head(k),
        "least_certain": uncertain.head(k),
    }
