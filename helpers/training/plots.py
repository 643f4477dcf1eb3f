"""Figures of a training run: learning curves.

Taught in ``notebooks/02_training_resnet18.ipynb`` (and ``06_breath_sounds``). Draws on ``ax`` when given, titles
the figure and labels the axes; nothing in the training code imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

METRIC_WORDS = ("acc", "auc", "f1", "sens", "spec", "prec", "recall")  # learning-curve metric columns


def _best_epoch(history: pd.DataFrame, monitor: str | None, mode: str, metrics: list[str], losses: list[str]):
    """Row of the best epoch and its legend text, or (None, "") when nothing says which epoch was best."""
    if monitor is None and "best" in history and history["best"].astype(bool).any():
        return int(
            np.flatnonzero(history["best"].astype(bool))[-1]
        ), "saved checkpoint"  # helpers.training.loop
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

    ``history``: one row per epoch (e.g. from ``helpers.training.loop.fit``), an ``epoch`` column (else the index,
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
