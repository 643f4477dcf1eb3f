"""Figures for evaluating and explaining the X-ray model.

Taught in ``notebooks/03_evaluation.ipynb`` (the learning curves in ``02_training_resnet18``, the overlays and
galleries in ``04_cam_math`` and ``05_gradcam_guided_backprop``). Every function draws on ``ax`` when one is
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
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import precision_recall_curve, roc_curve

# Re-exported for the galleries: RSNA boxes in DICOM pixels -> the displayed image's pixels.
from helpers.localisation import scale_boxes as scale_boxes
from helpers.metrics import calibration_table, expected_calibration_error, ranking_metrics, threshold_metrics

CLASS_NAMES = ("Normal", "Pneumonia")
RELEVANCE_LABEL = "relevance (normalised)"
METRIC_WORDS = ("acc", "auc", "f1", "sens", "spec", "prec", "recall")  # learning-curve metric columns


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
    """Point estimate and CI error bar per subgroup, from :func:`helpers.metrics.subgroup_table` (several
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


def _best_epoch(history: pd.DataFrame, monitor: str | None, mode: str, metrics: list[str], losses: list[str]):
    """Row of the best epoch and its legend text, or (None, "") when nothing says which epoch was best."""
    if monitor is None and "best" in history and history["best"].astype(bool).any():
        return int(np.flatnonzero(history["best"].astype(bool))[-1]), "saved checkpoint"  # helpers.train
    if monitor is None:  # the first validation metric (higher is better), else the validation loss
        monitor = next((c for c in metrics if c.lower().startswith("val")), None)
        if monitor is None:
            monitor, mode = next((c for c in losses if c.lower().startswith("val")), None), "min"
    if monitor is None:
        return None, ""
    if monitor not in history:
        raise ValueError(f"monitor column {monitor!r} not in history (columns: {list(history.columns)})")
    values = history[monitor].to_numpy(float)
    best = int(np.nanargmax(values) if mode == "max" else np.nanargmin(values))
    return best, f"{monitor} = {values[best]:.3f}"


def plot_learning_curves(
    history: pd.DataFrame,
    *,
    monitor: str | None = None,
    mode: str = "max",
    ax: Sequence[Axes] | None = None,
    title: str = "Learning curves",
) -> Figure:
    """Loss (left) and metrics (right) per epoch from a training history, the best epoch marked on both.

    ``history``: one row per epoch (e.g. from ``helpers.train.fit``), an ``epoch`` column (else the index,
    counted from 1), loss columns (names containing ``loss``) and metric columns (names containing acc, auc,
    f1, ...). The best epoch: the best of ``monitor`` by ``mode``; by default the last row flagged in a
    boolean ``best`` column (the saved checkpoint), else the first validation metric (max), else the
    validation loss (min). ``ax``: two Axes. Taught in ``notebooks/02_training_resnet18.ipynb``.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    epochs = history["epoch"].to_numpy() if "epoch" in history else np.arange(1, len(history) + 1)
    losses = [c for c in history.columns if "loss" in c.lower()]
    metrics = [
        c for c in history.columns if "loss" not in c.lower() and any(w in c.lower() for w in METRIC_WORDS)
    ]
    if not losses and not metrics:
        raise ValueError(f"history has no loss or metric columns (columns: {list(history.columns)})")
    best, best_text = _best_epoch(history, monitor, mode, metrics, losses)
    if ax is None:
        fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(10.0, 4.0))
    else:
        loss_ax, metric_ax = ax
        fig = loss_ax.figure
    for axes, columns, ylabel in (
        (loss_ax, losses, "loss (mean per image)"),
        (metric_ax, metrics, "metric (fraction)"),
    ):
        for column in columns:
            axes.plot(epochs, history[column], "o-", label=column)
        if best is not None:
            axes.axvline(
                epochs[best], ls="--", color="grey", label=f"best epoch {epochs[best]} ({best_text})"
            )
        axes.set(xlabel="epoch", ylabel=ylabel, title="Loss" if axes is loss_ax else "Metrics")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if axes.lines:
            axes.legend(fontsize="small")
    fig.suptitle(title)
    return fig


def draw_boxes(ax: Axes, boxes: Any, *, color: str = "lime", linewidth: float = 1.5) -> list[Rectangle]:
    """Draw boxes ``(x, y, w, h)`` given in the displayed image's pixels (x, y = top-left corner).

    A box covers pixels x .. x + w - 1 (the convention of :mod:`helpers.localisation`), so its rectangle
    runs along the pixel edges: ``imshow`` centres pixel i on coordinate i. Returns the Rectangle patches.
    """
    arr = np.asarray([] if boxes is None else boxes, dtype=float)
    if arr.size == 0:
        return []
    arr = np.atleast_2d(arr)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes: expected (x, y, w, h) boxes, got shape {np.shape(boxes)}")
    return [
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor=color, linewidth=linewidth))
        for x, y, w, h in arr
    ]


def _unit_range(values: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1]; a constant array becomes all zeros."""
    span = np.ptp(values)
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def _as_2d(array: Any, what: str) -> np.ndarray:
    values = np.asarray(array, dtype=np.float64).squeeze()
    if values.ndim != 2:
        raise ValueError(f"{what} must be H x W (a single channel), got shape {np.shape(array)}")
    return values


def overlay(image: Any, heatmap: Any, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
    """Blend a heatmap over a grey image: float32 RGB H x W x 3 in [0, 1].

    ``image`` H x W (any range, min-max scaled); ``heatmap`` h x w (min-max scaled to [0, 1] and resized
    bilinearly to H x W when its size differs, e.g. a 7 x 7 Grad-CAM). Result = (1 - alpha) * grey + alpha *
    cmap(heat). Taught in ``notebooks/04_cam_math.ipynb``.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    grey, heat = _unit_range(_as_2d(image, "image")), _as_2d(heatmap, "heatmap")
    if heat.shape != grey.shape:
        import torch
        import torch.nn.functional as F

        resized = F.interpolate(
            torch.from_numpy(heat)[None, None], size=grey.shape, mode="bilinear", align_corners=False
        )
        heat = resized[0, 0].numpy()
    colours = colormaps[cmap](_unit_range(heat))[..., :3]
    return ((1 - alpha) * grey[..., None] + alpha * colours).astype(np.float32)


def _relevance_colorbar(fig: Figure, ax: Axes | Sequence[Axes], cmap: str) -> None:
    fig.colorbar(ScalarMappable(Normalize(0, 1), cmap=cmap), ax=ax, label=RELEVANCE_LABEL, shrink=0.85)


def show_overlay(
    ax: Axes | None,
    image: Any,
    heatmap: Any,
    *,
    alpha: float = 0.4,
    cmap: str = "jet",
    boxes: Any = None,
    title: str = "Heatmap overlay",
    colorbar: bool = True,
) -> Axes:
    """Draw :func:`overlay` on ``ax`` with pixel axes, optional boxes (displayed pixels) and a colour bar
    labelled 'relevance (normalised)'. Taught in ``notebooks/04_cam_math.ipynb``."""
    ax = _new_axes(ax)
    ax.imshow(overlay(image, heatmap, alpha, cmap))
    if boxes is not None:
        draw_boxes(ax, boxes)
    if colorbar:
        _relevance_colorbar(ax.figure, ax, cmap)
    ax.set(xlabel="x (pixels)", ylabel="y (pixels)", title=title)
    return ax


def plot_gallery(
    images: Sequence[Any],
    *,
    titles: Sequence[str] | None = None,
    boxes: Sequence[Any] | None = None,
    heatmaps: Sequence[Any] | None = None,
    ncols: int = 4,
    alpha: float = 0.4,
    cmap: str = "jet",
    title: str = "Images",
    ax: Sequence[Axes] | None = None,
) -> Figure:
    """A grid of images (N x H x W array or list of H x W) with a title each, optional boxes per image
    (``(x, y, w, h)`` in the displayed pixels, see :func:`scale_boxes`) and optional heatmaps blended with
    :func:`overlay` (one shared 'relevance (normalised)' colour bar). Pixel ticks are hidden to keep the
    tiles large. ``ax``: at least N Axes to draw on. Taught in ``notebooks/03_evaluation.ipynb``.
    """
    n = len(images)
    for name, per_image in (("titles", titles), ("boxes", boxes), ("heatmaps", heatmaps)):
        if per_image is not None and len(per_image) != n:
            raise ValueError(f"plot_gallery: {len(per_image)} {name} for {n} images")
    if ax is None:
        nrows = max(1, -(-n // ncols))
        fig, grid = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.8 * nrows), squeeze=False)
        tiles = list(grid.ravel())
    else:
        tiles = list(np.ravel(ax))
        if len(tiles) < n:
            raise ValueError(f"plot_gallery: {len(tiles)} Axes given for {n} images")
        fig = tiles[0].figure
    for i, tile in enumerate(tiles):
        if i >= n:
            tile.axis("off")
            continue
        if heatmaps is not None and heatmaps[i] is not None:
            tile.imshow(overlay(images[i], heatmaps[i], alpha, cmap))
        else:
            tile.imshow(_as_2d(images[i], "image"), cmap="gray")
        if boxes is not None and boxes[i] is not None:
            draw_boxes(tile, boxes[i])
        tile.set_title(titles[i] if titles is not None else f"image {i}", fontsize="small")
        tile.set_xticks([])
        tile.set_yticks([])
    if heatmaps is not None and any(h is not None for h in heatmaps):
        _relevance_colorbar(fig, tiles[:n], cmap)
    fig.suptitle(title)
    return fig


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
    """One row per kind of case from :func:`helpers.metrics.find_errors` (false positives, false negatives,
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
