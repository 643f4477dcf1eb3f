"""Bootstrap confidence intervals for the metrics of :mod:`helpers.evaluate.metrics`: by patient, seeded, vectorised.

Taught in ``notebooks/03_evaluation.ipynb``.

The percentile bootstrap: draw the evaluation set again with replacement ``n_boot`` times, compute the metric
on each resample, and report the 2.5th and 97.5th percentiles as a 95 % interval. Two choices matter:

- the UNIT that is drawn: whole patients when a patient has several images (their images are correlated, so
  drawing images as if independent makes the interval too narrow);
- the SEED: the draws depend on the seed and the number of units alone, so the same seed gives the same
  resamples for every metric and every model. That makes tables reproducible and comparisons paired
  (:func:`compare_models`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning

from helpers.evaluate.metrics import (
    _RATIOS,
    SUMMARY_METRICS,
    THRESHOLD_METRICS,
    _check_binary,
    _div,
    brier_score,
    ranking_metrics,
    threshold_metrics,
)

__all__ = [
    "UNDEFINED_WARN_FRACTION",
    "Metric",
    "bootstrap_ci",
    "mean_ci",
    "bootstrap_samples",
    "compare_models",
    "format_intervals",
    "metric_function",
    "subgroup_table",
    "summary_table",
]

# bootstrap_ci warns when more than this fraction of the resamples left the metric undefined.
UNDEFINED_WARN_FRACTION = 0.05
_BOOT_CHUNK = 64  # resamples per block (fixed, so that the draws depend on the seed alone)


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


def mean_ci(
    values: Any, *, groups: Any = None, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of per-image ``values`` (e.g. pointing-game hits) and its percentile
    bootstrap interval, drawing whole patients when ``groups`` (one id per value) is given. NaN values (images
    without a score) are left out first. Taught in ``notebooks/05b_which_explanation.ipynb``.
    """
    values = np.asarray(values, dtype=float).reshape(-1)
    keep = ~np.isnan(values)
    if not keep.any():
        return float("nan"), float("nan"), float("nan")
    units = np.arange(len(values)) if groups is None else np.asarray(groups).reshape(-1)
    if units.shape != values.shape:
        raise ValueError(
            f"groups must hold one id per value: got shape {units.shape} for {len(values)} values"
        )
    values, unit_of_row = values[keep], np.unique(units[keep], return_inverse=True)[1].reshape(-1)
    means = np.concatenate(
        [
            w @ values / w.sum(axis=1)
            for w in _resample_weights(unit_of_row, n_boot, np.random.default_rng(seed))
        ]
    )
    return _percentile_ci(float(values.mean()), means, ci, "mean")


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


def compare_models(
    y_true: Any,
    probs: Mapping[str, Any],
    metric: str = "roc_auc",
    *,
    threshold: float = 0.5,
    groups: Any = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Several models' scores for the same cases, compared on ``metric`` with PAIRED bootstrap intervals.

    ``probs``: ``{model name: prob (N,)}``; the first model is the reference. Every model is scored on the
    same resamples (same ``seed`` and ``groups``), so the difference from the reference is computed resample
    by resample: a paired interval, much narrower than comparing two separate intervals when the models
    agree on which cases are hard. Returns one row per model: ``model``, ``estimate``, ``ci_low``,
    ``ci_high``, ``difference`` (model - reference), ``difference_low``, ``difference_high``. An interval of
    the difference that excludes 0 says the gap is unlikely to be resampling noise alone.
    Taught in ``notebooks/03_evaluation.ipynb``.
    """
    if not probs:
        raise ValueError("compare_models: probs is empty; give {model name: probabilities}")
    fn = metric_function(metric, threshold)
    samples, points = {}, {}
    for name, prob in probs.items():
        y, p = _check_binary(y_true, prob)
        points[name] = fn(y, p)
        samples[name] = bootstrap_samples(y, p, {metric: fn}, groups=groups, n_boot=n_boot, seed=seed)[metric]
    reference = next(iter(probs))
    rows = []
    for name in probs:
        estimate = _percentile_ci(points[name], samples[name], ci, f"{name}: {metric}")
        difference = _percentile_ci(
            points[name] - points[reference], samples[name] - samples[reference], ci, f"{name} - {reference}"
        )
        rows.append(
            dict(zip(("estimate", "ci_low", "ci_high"), estimate, strict=True))
            | dict(zip(("difference", "difference_low", "difference_high"), difference, strict=True))
            | {"model": name}
        )
    table = pd.DataFrame(rows)[
        ["model", "estimate", "ci_low", "ci_high", "difference", "difference_low", "difference_high"]
    ]
    table.attrs.update(metric=metric, reference=reference, threshold=float(threshold), n_boot=n_boot, ci=ci)
    return table


def format_intervals(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A table for reading: each estimate with its interval as one text column, ``'0.812 [0.744, 0.871]'``.

    Works on the tables of this module: a column ``x`` with ``x_low`` and ``x_high`` (``subgroup_table``,
    ``compare_models``' ``difference``) or ``estimate`` with ``ci_low`` and ``ci_high`` (``summary_table``,
    ``compare_models``). The bounds are dropped, other columns kept; NaN reads ``undefined``.
    Taught in ``notebooks/03_evaluation.ipynb``.
    """

    def text(value: float) -> str:
        return "undefined" if np.isnan(value) else f"{value:.{digits}f}"

    out = table.copy()
    triples = [(c, f"{c}_low", f"{c}_high") for c in table.columns if {f"{c}_low", f"{c}_high"} <= set(table)]
    if {"estimate", "ci_low", "ci_high"} <= set(table):
        triples.append(("estimate", "ci_low", "ci_high"))
    for column, low, high in triples:
        out[column] = [
            f"{text(v)} [{text(lo)}, {text(hi)}]" if not np.isnan(v) else "undefined"
            for v, lo, hi in zip(table[column], table[low], table[high], strict=True)
        ]
        out = out.drop(columns=[low, high])
    if "prevalence" in out and out["prevalence"].dtype.kind == "f":
        out["prevalence"] = out["prevalence"].round(digits)
    return out
