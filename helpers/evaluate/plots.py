"""Figures for evaluating the X-ray model: confusion matrix, ROC and PR curves, calibration, subgroups, errors.

Taught in ``notebooks/03_evaluation.ipynb`` (learning curves: :mod:`helpers.training.plots`; heatmap overlays
and galleries: :mod:`helpers.explain.overlays`). Every function draws on ``ax`` when one is
given (a new figure otherwise), titles the figure, labels the axes with their units, adds a colour bar where
colour carries meaning and returns the Axes (the Figure for multi-panel plots). Nothing here calls
``plt.show()``: a notebook shows a figure at the end of its cell. Nothing in the data, training, metrics or
explanation code imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import precision_recall_curve, roc_curve

from helpers.evaluate.metrics import (
    calibration_table,
    expected_calibration_error,
    ranking_metrics,
    threshold_metrics,
)
from helpers.explain.localisation import scale_boxes
from helpers.explain.overlays import plot_gallery

CLASS_NAMES = ("Normal", "Pneumonia")


def prob_text(value: float) -> str:
    """A probability or threshold for a label: two decimals (``0.50``), or two significant digits when it is
    below 0.01 (``1.6e-09``: a badly calibrated model's threshold is not ``0.00``)."""
    return f"{value:.2g}" if 0 < abs(value) < 0.01 else f"{value:.2f}"


def _new_axes(ax: Axes | None, figsize: tuple[float, float] = (5.0, 4.5)) -> Axes:
    return plt.subplots(figsize=figsize)[1] if ax is None else ax


def plot_confusion_matrix(
    y_true: Any,
    prob: Any,
    threshold: float = 0.5,
    *,
    class_names: Sequence[str] = CLASS_NAMES,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Confusion-matrix heatmap: each cell shows its count and its row rate (the share of that true class).

    Colour = row rate, so the diagonal reads as specificity (top) and sensitivity (bottom) whatever the class
    balance. ``prob >= threshold`` is called positive. Taught in ``notebooks/03_evaluation.ipynb``.
    """
    m = threshold_metrics(y_true, prob, threshold)
    counts = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.full(counts.shape, np.nan), where=totals > 0)
    annot = [
        [f"{c}\n({r:.0%})" for c, r in zip(crow, rrow, strict=True)]
        for crow, rrow in zip(counts, rates, strict=True)
    ]
    ax = _new_axes(ax)
    sns.heatmap(
        rates,
        annot=np.array(annot),
        fmt="",
        cmap="Blues",
        vmin=0,
        vmax=1,
        square=True,
        xticklabels=list(class_names),
        yticklabels=list(class_names),
        cbar_kws={"label": "row rate (fraction of the true class)"},
        ax=ax,
    )
    ax.set(
        xlabel=f"Predicted class (prob >= {prob_text(threshold)})",
        ylabel="True class",
        title=title or f"Confusion matrix (n = {m['n']}, threshold {prob_text(threshold)})",
    )
    return ax


def _mark_operating_point(ax: Axes, x: float, y: float, threshold: float, text: str) -> None:
    ax.plot([x], [y], "o", color="C3", markersize=8, label=f"threshold {prob_text(threshold)}: {text}")


def plot_roc(
    y_true: Any,
    prob: Any,
    *,
    threshold: float | None = None,
    label: str = "model",
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """ROC curve (sklearn's ``roc_curve``) with the AUC in the legend, the chance diagonal and, when
    ``threshold`` is given, the operating point. Taught in ``notebooks/03_evaluation.ipynb``."""
    fpr, tpr, _ = roc_curve(np.asarray(y_true), np.asarray(prob, dtype=float))
    auc = ranking_metrics(y_true, prob)["roc_auc"]
    ax = _new_axes(ax)
    ax.plot(fpr, tpr, color="C0", label=f"{label} (AUC = {auc:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance (AUC = 0.5)")
    if threshold is not None:
        m = threshold_metrics(y_true, prob, threshold)
        text = f"sens {m['sensitivity']:.2f}, spec {m['specificity']:.2f}"
        _mark_operating_point(ax, 1 - m["specificity"], m["sensitivity"], threshold, text)
    ax.set(
        xlabel="False positive rate (1 - specificity, fraction)",
        ylabel="True positive rate (sensitivity, fraction)",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=title or "ROC curve",
    )
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize="small")
    return ax


def plot_pr(
    y_true: Any,
    prob: Any,
    *,
    threshold: float | None = None,
    label: str = "model",
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Precision-recall curve with the average precision in the legend, the prevalence baseline (what a
    random ranking scores) and, when ``threshold`` is given, the operating point. Taught in
    ``notebooks/03_evaluation.ipynb``."""
    precision, recall, _ = precision_recall_curve(np.asarray(y_true), np.asarray(prob, dtype=float))
    ranking = ranking_metrics(y_true, prob)
    ax = _new_axes(ax)
    ax.plot(
        recall, precision, drawstyle="steps-post", color="C0", label=f"{label} (AP = {ranking['pr_auc']:.3f})"
    )
    baseline = ranking["pr_auc_baseline"]
    ax.axhline(baseline, ls="--", color="grey", label=f"prevalence baseline ({baseline:.3f})")
    if threshold is not None:
        m = threshold_metrics(y_true, prob, threshold)
        text = f"recall {m['sensitivity']:.2f}, precision {m['precision']:.2f}"
        _mark_operating_point(ax, m["sensitivity"], m["precision"], threshold, text)
    ax.set(
        xlabel="Recall (sensitivity, fraction)",
        ylabel="Precision (PPV, fraction)",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=title or "Precision-recall curve",
    )
    ax.legend(loc="lower left", fontsize="small")
    return ax


def plot_reliability(
    y_true: Any,
    prob: Any,
    *,
    n_bins: int = 10,
    strategy: str = "uniform",
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Reliability diagram: observed fraction of pneumonia against mean predicted probability per bin, the
    diagonal of perfect calibration, the ECE in the legend, and the number of images per bin as grey bars
    on a second y axis. Returns the main Axes. Taught in ``notebooks/03_evaluation.ipynb``."""
    table = calibration_table(y_true, prob, n_bins, strategy)
    ece = expected_calibration_error(y_true, prob, n_bins, strategy)
    ax = _new_axes(ax)
    counts_ax = ax.twinx()
    centres = (table["bin_low"] + table["bin_high"]) / 2
    widths = 0.9 * (table["bin_high"] - table["bin_low"])
    counts_ax.bar(centres, table["count"], width=widths, color="grey", alpha=0.25)
    counts_ax.set_ylabel("images per bin (count)")
    ax.set_zorder(counts_ax.get_zorder() + 1)  # the curve above the bars
    ax.patch.set_visible(False)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.plot(
        table["mean_predicted"],
        table["fraction_positive"],
        "o-",
        color="C0",
        label=f"model (ECE = {ece:.3f})",
    )
    ax.set(
        xlabel="Mean predicted probability (fraction)",
        ylabel="Observed fraction with pneumonia",
        xlim=(0, 1),
        ylim=(0, 1),
        title=title or f"Reliability diagram ({n_bins} {strategy} bins)",
    )
    ax.legend(loc="upper left", fontsize="small")
    return ax


def plot_score_histogram(
    y_true: Any,
    prob: Any,
    threshold: float | None = 0.5,
    *,
    bins: int = 20,
    class_names: Sequence[str] = CLASS_NAMES,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Histograms of the predicted probability for each true class, with the threshold as a vertical line.

    Everything right of the line is called pneumonia: the normal cases there are the false positives, the
    pneumonia cases left of it the false negatives. Moving the threshold trades one for the other.
    Taught in ``notebooks/03_evaluation.ipynb``.
    """
    y, p = np.asarray(y_true), np.asarray(prob, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ax = _new_axes(ax, figsize=(5.5, 4.0))
    for label, name, colour in ((0, class_names[0], "C0"), (1, class_names[1], "C3")):
        ax.hist(
            p[y == label],
            bins=edges,
            alpha=0.55,
            color=colour,
            label=f"true {name} (n = {(y == label).sum()})",
        )
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", label=f"threshold {prob_text(threshold)}")
    ax.set(
        xlabel="Predicted probability of pneumonia (fraction)",
        ylabel="images (count)",
        xlim=(0, 1),
        title=title or "Predicted probabilities by true class",
    )
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize="small")
    return ax


def plot_subgroups(
    table: pd.DataFrame,
    metric: str = "auc",
    *,
    reference: float | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Point estimate and CI error bar per subgroup, from :func:`helpers.evaluate.bootstrap.subgroup_table` (several
    tables may be concatenated). ``reference``: a vertical line, e.g. the overall value. Taught in
    ``notebooks/03_evaluation.ipynb``."""
    needed = ["subgroup", "n", metric, f"{metric}_low", f"{metric}_high"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"plot_subgroups: columns {missing} missing; expected a subgroup_table() result")
    estimate = table[metric].to_numpy(float)
    errors = np.vstack([estimate - table[f"{metric}_low"], table[f"{metric}_high"] - estimate])
    prefix = table["variable"].astype(str) + " = " if "variable" in table else ""
    labels = prefix + table["subgroup"].astype(str) + " (n = " + table["n"].astype(str) + ")"
    rows = np.arange(len(table))
    ax = _new_axes(ax, figsize=(6.0, 0.5 * len(table) + 1.5))
    ax.errorbar(estimate, rows, xerr=errors, fmt="o", color="C0", capsize=4, label="estimate with CI")
    if reference is not None:
        ax.axvline(reference, ls="--", color="grey", label=f"reference ({reference:.3f})")
    ax.set_yticks(rows, list(labels))
    ax.invert_yaxis()
    ci = table.attrs.get("ci")
    ci_text = f"{ci:.0%} bootstrap CI" if ci else "bootstrap CI"
    ax.set(
        xlabel=f"{metric} (fraction, {ci_text})", ylabel="subgroup", title=title or f"{metric} by subgroup"
    )
    ax.legend(loc="best", fontsize="small")
    return ax


ERROR_KINDS = {
    "false_positives": "False positive",
    "false_negatives": "False negative",
    "least_certain": "Least certain",
}


def plot_error_gallery(
    cases: dict[str, pd.DataFrame],
    images: Any,
    *,
    k: int = 4,
    prob_col: str = "prob",
    y_col: str = "label",
    title: str = "Error analysis",
) -> Figure:
    """One row per kind of case from :func:`helpers.evaluate.metrics.find_errors` (false positives, false negatives,
    least certain), ``k`` images each, titled with the true label and the predicted probability, boxes drawn.

    Each frame's INDEX is the row of its image in ``images`` (N x S x S, e.g. a store's memmap). Optional
    columns: ``boxes`` (``(x, y, w, h)`` in the original DICOM pixels) with ``orig_height`` and
    ``orig_width``, which are scaled to the displayed size by :func:`scale_boxes`; ``patientId`` (first 8
    characters shown). A kind with no case shows 'none'. Taught in ``notebooks/03_evaluation.ipynb``.
    """
    fig, grid = plt.subplots(len(cases), k, figsize=(2.5 * k, 2.8 * len(cases)), squeeze=False)
    for row, (kind, frame) in zip(grid, cases.items(), strict=True):
        frame = frame.head(k)
        tiles, boxes, titles = [], [], []
        has_boxes = {"boxes", "orig_height", "orig_width"} <= set(frame.columns)
        for index, case in frame.iterrows():
            image = np.asarray(images[index])
            tiles.append(image)
            shape = (case["orig_height"], case["orig_width"]) if has_boxes else None
            boxes.append(
                scale_boxes(case["boxes"], shape, image.shape) if has_boxes and case["boxes"] else None
            )
            who = f"{case['patientId'][:8]}\n" if "patientId" in frame else ""
            truth = CLASS_NAMES[int(case[y_col])]
            titles.append(f"{who}true {truth}, p = {prob_text(case[prob_col])}")
        plot_gallery(tiles, titles=titles, boxes=boxes, ncols=k, ax=row)
        if not tiles:  # keep the row's label visible and say that there is nothing to show
            row[0].axis("on")
            row[0].set(xticks=[], yticks=[])
            row[0].text(0.5, 0.5, "none", ha="center", va="center", transform=row[0].transAxes)
        row[0].set_ylabel(ERROR_KINDS.get(kind, kind), fontsize="medium")
    fig.suptitle(f"{title} (boxes: the radiologists' opacity boxes)")
    return fig
