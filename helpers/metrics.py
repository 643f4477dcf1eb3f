"""Evaluation of a binary classifier: predictions, metrics, thresholds, bootstrap CIs, calibration, subgroups.

Taught in ``notebooks/03_evaluation.ipynb``. Conventions used throughout:

- ``y_true`` holds 0/1 labels (1 = pneumonia), ``prob`` the predicted probability of class 1 in [0, 1].
- A case is called positive when ``prob >= threshold`` (the same rule as ``sklearn.metrics.roc_curve``).
- A ratio whose denominator is zero (e.g. sensitivity when there are no positive cases, precision when
  nothing is called positive) is undefined: it is returned as NaN with a
  ``sklearn.exceptions.UndefinedMetricWarning``, never as 0 and never as a crash.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
from tqdm.auto import tqdm

if TYPE_CHECKING:
    import torch

THRESHOLD_METRICS = ("accuracy", "sensitivity", "specificity", "precision", "npv", "f1")
SUMMARY_METRICS = ("prevalence", "roc_auc", "pr_auc", *THRESHOLD_METRICS, "brier")
# bootstrap_ci warns when more than this fraction of the resamples left the metric undefined.
UNDEFINED_WARN_FRACTION = 0.05
_BOOT_CHUNK = 64  # resamples per block (fixed, so that the draws depend on the seed alone)


def predict(
    model: torch.nn.Module,
    images: Any,
    *,
    mean: float,
    std: float,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Probabilities for a whole split in one call.

    ``images``: uint8 N x H x W (or N x 1 x H x W) as a numpy array, memmap or tensor, normalised batch by
    batch on the device as ``(x / 255 - mean) / std`` into float32 B x 1 x H x W; float inputs are taken as
    already normalised and used as they are. Runs under ``torch.no_grad`` in eval mode on ``device``
    (default: the GPU when there is one, see ``helpers.config.pick_device``); afterwards every submodule's
    train/eval flag and the model's device are restored. Returns float32 (N,) = sigmoid of a 1-logit output,
    or (N, K) = softmax of a K-logit output. Taught in ``notebooks/03_evaluation.ipynb``.
    """
    import torch

    from helpers.config import pick_device

    if not std > 0:
        raise ValueError(f"predict: std must be > 0, got {std}")
    if batch_size < 1:
        raise ValueError(f"predict: batch_size must be >= 1, got {batch_size}")
    ndim = len(images.shape)
    if ndim not in (3, 4):
        raise ValueError(
            f"predict: images must be N x H x W or N x C x H x W, got shape {tuple(images.shape)}"
        )
    if isinstance(images, torch.Tensor):
        is_uint8, is_float = images.dtype == torch.uint8, images.dtype.is_floating_point
    else:
        is_uint8, is_float = images.dtype == np.uint8, np.issubdtype(images.dtype, np.floating)
    if not (is_uint8 or is_float):
        raise ValueError(
            f"predict: images must be uint8 (raw) or float (normalised), got dtype {images.dtype}"
        )
    device = pick_device() if device is None else torch.device(device)
    modes = {module: module.training for module in model.modules()}
    home = next(model.parameters(), None)
    home_device = home.device if home is not None else None
    chunks = []
    try:
        model.to(device).eval()
        with torch.no_grad():
            for start in tqdm(
                range(0, len(images), batch_size), desc="predict", disable=not progress, leave=False
            ):
                batch = images[start : start + batch_size]
                if not isinstance(batch, torch.Tensor):
                    batch = torch.from_numpy(np.ascontiguousarray(batch))
                x = batch.to(device, non_blocking=True)
                x = (x.float() / 255.0 - mean) / std if is_uint8 else x.float()
                logits = model(x.unsqueeze(1) if ndim == 3 else x)
                if logits.ndim == 1 or (logits.ndim == 2 and logits.shape[1] == 1):
                    chunks.append(torch.sigmoid(logits.reshape(-1)).cpu())
                elif logits.ndim == 2:
                    chunks.append(torch.softmax(logits, dim=1).cpu())
                else:
                    raise ValueError(
                        f"predict: model output must be B, B x 1 or B x K, got {tuple(logits.shape)}"
                    )
    finally:
        for module, training in modes.items():
            module.training = training
        if home_device is not None:
            model.to(home_device)
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return torch.cat(chunks).float().numpy()


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


@dataclass(frozen=True)
class Metric:
    """One of ``SUMMARY_METRICS`` as ``metric(y_true, prob) -> float`` that also scores many resamples at once.

    Calling it gives the scikit-learn value (:func:`threshold_metrics`, :func:`ranking_metrics`,
    :func:`brier_score`). :meth:`batched` gives the same quantity for B weighted copies of the data in a few
    array operations, which makes the bootstrap about 100x faster than calling scikit-learn per resample (the
    tests check both against scikit-learn with ``sample_weight``). Build it with :func:`metric_function`.
    """

    name: str
    threshold: float = 0.5

    def __call__(self, y_true: Any, prob: Any) -> float:
        if self.name in THRESHOLD_METRICS:
            return threshold_metrics(y_true, prob, self.threshold)[self.name]
        if self.name in ("roc_auc", "pr_auc"):
            return ranking_metrics(y_true, prob)[self.name]
        y, p = _check_binary(y_true, prob)
        return brier_score(y, p) if self.name == "brier" else float(y.mean())

    def batched(self, y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The metric on B weighted copies of (y, p): ``weights`` B x n (how often each row was drawn) -> (B,)."""
        w = weights.astype(np.float64)
        n, positive = w.sum(axis=1), y.astype(bool)
        if self.name == "prevalence":
            return w @ positive / n
        if self.name == "brier":
            return w @ (p - y) ** 2 / n
        if self.name in THRESHOLD_METRICS:
            called = p >= self.threshold
            tp, fp, fn = w @ (positive & called), w @ (~positive & called), w @ (positive & ~called)
            return _div(*_RATIOS[self.name](tp, fp, n - tp - fp - fn, fn))
        # Ranking metrics: the weight of positives and of negatives at each distinct score, ascending.
        order = np.argsort(p, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(p[order]) > 0])
        pos = np.add.reduceat(w[:, order] * positive[order], starts, axis=1)
        neg = np.add.reduceat(w[:, order] * ~positive[order], starts, axis=1)
        n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
        # ROC-AUC as Mann-Whitney: P(score of a positive > score of a negative), ties counting 1/2.
        if self.name == "roc_auc":
            below = np.cumsum(neg, axis=1) - neg
            return _div((pos * (below + 0.5 * neg)).sum(axis=1), n_pos * n_neg)
        # Average precision: the sum over thresholds (descending) of the recall step times the precision.
        tp, fp = np.cumsum(pos[:, ::-1], axis=1), np.cumsum(neg[:, ::-1], axis=1)
        precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp > 0)
        return _div((pos[:, ::-1] * precision).sum(axis=1), n_pos * (n_neg > 0))


def metric_function(name: str, threshold: float = 0.5) -> Metric:
    """The metric ``name`` (one of ``SUMMARY_METRICS``) at ``threshold``, ready for :func:`bootstrap_ci`."""
    if name not in SUMMARY_METRICS:
        raise ValueError(f"unknown metric {name!r}; expected one of {', '.join(SUMMARY_METRICS)}")
    return Metric(name, float(threshold))


def _resample_weights(unit_of_row: np.ndarray, n_boot: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Blocks of resamples as weights (block x n rows): units drawn with replacement, each row of a unit
    weighted by how often its unit was drawn. Drawn in fixed-size blocks, so the result depends only on rng."""
    n_units = int(unit_of_row.max()) + 1
    for first in range(0, n_boot, _BOOT_CHUNK):
        size = min(_BOOT_CHUNK, n_boot - first)
        draws = rng.integers(0, n_units, size=(size, n_units)) + n_units * np.arange(size)[:, None]
        counts = np.bincount(draws.ravel(), minlength=size * n_units).reshape(size, n_units)
        yield counts[:, unit_of_row]


def bootstrap_samples(
    y_true: Any,
    prob: Any,
    metric_fns: Mapping[str, Callable[[np.ndarray, np.ndarray], float]],
    *,
    groups: Any = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Each metric on the same ``n_boot`` resamples: ``{name: float array (n_boot,)}``, NaN where undefined.

    A resample draws units with replacement: the rows, or whole PATIENTS when ``groups`` (one id per row) is
    given, so that the correlated rows of one patient stay together. :class:`Metric` objects are scored in
    blocks of resamples at once; any other ``f(y, p) -> float`` is called per resample with its
    ``UndefinedMetricWarning`` silenced. Deterministic given ``seed``. Taught in ``notebooks/03_evaluation.ipynb``.
    """
    y, p = _check_binary(y_true, prob)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if groups is None:
        unit_of_row = np.arange(len(y))
    else:
        groups = np.asarray(groups)
        if groups.shape != y.shape:
            raise ValueError(f"groups must hold one id per row: got shape {groups.shape} for {len(y)} rows")
        unit_of_row = np.unique(groups, return_inverse=True)[1].reshape(-1)
    values = {name: np.empty(n_boot) for name in metric_fns}
    rows, first = np.arange(len(y)), 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for weights in _resample_weights(unit_of_row, n_boot, np.random.default_rng(seed)):
            block = slice(first, first + len(weights))
            for name, fn in metric_fns.items():
                if isinstance(fn, Metric):
                    values[name][block] = fn.batched(y, p, weights)
                else:
                    values[name][block] = [
                        fn(y[idx], p[idx]) for idx in (np.repeat(rows, w) for w in weights)
                    ]
            first += len(weights)
    return values


def _percentile_ci(
    point: float, samples: np.ndarray, ci: float, name: str, stacklevel: int = 3
) -> tuple[float, float, float]:
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    valid = samples[~np.isnan(samples)]
    undefined = 1 - len(valid) / len(samples)
    if undefined > UNDEFINED_WARN_FRACTION and not np.isnan(point):  # a NaN point was reported already
        warnings.warn(
            f"{name}: undefined in {undefined:.0%} of the bootstrap resamples; the interval uses the others",
            UndefinedMetricWarning,
            stacklevel=stacklevel,
        )
    if len(valid) == 0:
        return point, float("nan"), float("nan")
    low, high = np.percentile(valid, [50 * (1 - ci), 50 * (1 + ci)])
    return point, float(low), float(high)


def bootstrap_ci(
    y_true: Any,
    prob: Any,
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    *,
    groups: Any = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(point, low, high)``: the metric on all data and its percentile bootstrap interval.

    ``metric_fn(y_true, prob) -> float`` (see :func:`metric_function`); ``groups`` resamples patients as units
    (see :func:`bootstrap_samples`). Resamples where the metric is NaN are left out of the percentiles, with a
    warning when they exceed ``UNDEFINED_WARN_FRACTION``. Taught in ``notebooks/03_evaluation.ipynb``.
    """
    y, p = _check_binary(y_true, prob)
    name = getattr(metric_fn, "name", getattr(metric_fn, "__name__", "metric"))
    samples = bootstrap_samples(y, p, {name: metric_fn}, groups=groups, n_boot=n_boot, seed=seed)[name]
    return _percentile_ci(float(metric_fn(y, p)), samples, ci, name)


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


def _table_row(
    stats: Mapping[str, np.ndarray], points: Mapping[str, float], ci: float, where: str = ""
) -> dict[str, float]:
    row = {}
    for name, samples in stats.items():
        estimate = _percentile_ci(points[name], samples, ci, where + name, stacklevel=4)  # the user's caller
        row[name], row[f"{name}_low"], row[f"{name}_high"] = estimate
    return row


def subgroup_table(
    df: pd.DataFrame,
    group_col: str,
    *,
    y_col: str = "label",
    prob_col: str = "prob",
    threshold: float,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    patient_col: str | None = None,
) -> pd.DataFrame:
    """Per subgroup of ``df[group_col]`` (sex, age band, view): n, positives, prevalence, and AUC, sensitivity
    and specificity with bootstrap CIs (columns ``auc``, ``auc_low``, ``auc_high``, ...).

    ``patient_col`` resamples patients instead of rows. Columns ``variable`` (= ``group_col``) and ``subgroup``
    make tables of several variables easy to concatenate. Taught in ``notebooks/03_evaluation.ipynb``.
    """
    missing = [c for c in (group_col, y_col, prob_col, patient_col) if c is not None and c not in df.columns]
    if missing:
        raise ValueError(
            f"subgroup_table: columns {missing} not in the DataFrame (it has {list(df.columns)})"
        )
    fns = {
        "auc": metric_function("roc_auc"),
        "sensitivity": metric_function("sensitivity", threshold),
        "specificity": metric_function("specificity", threshold),
    }
    rows = []
    for name, sub in df.groupby(group_col, observed=True, sort=True, dropna=False):
        y, p = _check_binary(sub[y_col].to_numpy(), sub[prob_col].to_numpy())
        groups = None if patient_col is None else sub[patient_col].to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)  # reported once below, per subgroup
            points = {metric: fn(y, p) for metric, fn in fns.items()}
        stats = bootstrap_samples(y, p, fns, groups=groups, n_boot=n_boot, seed=seed)
        head = {"variable": group_col, "subgroup": name, "n": len(y), "n_positive": int(y.sum())}
        where = f"{group_col}={name!r}: "
        rows.append({**head, "prevalence": float(y.mean()), **_table_row(stats, points, ci, where)})
        undefined = [metric for metric, value in points.items() if np.isnan(value)]
        if undefined:
            warnings.warn(
                f"{where}{', '.join(undefined)} undefined -> NaN",
                UndefinedMetricWarning,
                stacklevel=2,
            )
    table = pd.DataFrame(rows)
    table.attrs.update(threshold=float(threshold), n_boot=n_boot, ci=ci)
    return table


def summary_table(
    y_true: Any,
    prob: Any,
    threshold: float,
    groups: Any = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One tidy table: a row per metric in ``SUMMARY_METRICS`` with ``estimate``, ``ci_low``, ``ci_high``.

    All metrics share the same resamples (patients when ``groups`` is given); the table is deterministic
    given ``seed``, so a notebook can print it rounded and nbval can compare it. ``attrs`` hold n, threshold,
    n_boot and ci. Taught in ``notebooks/03_evaluation.ipynb``.
    """
    y, p = _check_binary(y_true, prob)
    fns = {name: metric_function(name, threshold) for name in SUMMARY_METRICS}
    points = {**ranking_metrics(y, p), **threshold_metrics(y, p, threshold), "brier": brier_score(y, p)}
    stats = bootstrap_samples(y, p, fns, groups=groups, n_boot=n_boot, seed=seed)
    row = _table_row(stats, points, ci)
    table = pd.DataFrame(
        {
            "metric": list(SUMMARY_METRICS),
            "estimate": [row[m] for m in SUMMARY_METRICS],
            "ci_low": [row[f"{m}_low"] for m in SUMMARY_METRICS],
            "ci_high": [row[f"{m}_high"] for m in SUMMARY_METRICS],
        }
    )
    table.attrs.update(n=len(y), threshold=float(threshold), n_boot=n_boot, ci=ci)
    return table


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
