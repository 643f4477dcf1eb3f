"""Figures for exploring the data before training: metadata (seaborn), pixel values, resizing.

Taught in ``notebooks/01_data_preparation.ipynb``; the tables come from :mod:`helpers.xray.eda`. Every function
draws on ``ax`` when one is given (a new figure otherwise), titles the figure, labels the axes with their
units, adds a colour bar where colour carries meaning and returns the Axes (the Figure for multi-panel
plots). Nothing here calls ``plt.show()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from helpers.explain.overlays import draw_boxes
from helpers.xray.eda import MAX_PLAUSIBLE_AGE

TARGET_NAMES = {0: "0: no opacity", 1: "1: lung opacity"}
TARGET_PALETTE = {TARGET_NAMES[0]: "#4C72B0", TARGET_NAMES[1]: "#DD8452"}


def _new_axes(ax: Axes | None, figsize: tuple[float, float] = (5.0, 4.0)) -> Axes:
    return ax if ax is not None else plt.subplots(figsize=figsize)[1]


def _named_target(meta: pd.DataFrame, label_col: str) -> pd.DataFrame:
    return meta.assign(label=meta[label_col].map(TARGET_NAMES))


def plot_metadata(
    meta: pd.DataFrame,
    *,
    label_col: str = "Target",
    max_age: float = MAX_PLAUSIBLE_AGE,
    title: str = "RSNA training set: patient metadata",
) -> Figure:
    """Four panels from a one-row-per-patient table (see :func:`helpers.xray.eda.real_rsna_metadata`):
    the ages as written (box plot, the impossible ones above ``max_age`` labelled), the plausible ages by
    label (stacked histogram), and patients by sex and by view position, split by label.

    ``meta`` needs ``age``, ``sex``, ``view_position`` and ``label_col`` (0/1). Taught in
    ``notebooks/01_data_preparation.ipynb``.
    """
    data = _named_target(meta, label_col)
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2), gridspec_kw={"width_ratios": [0.8, 1.6, 1, 1]})
    raw_ax, age_ax, sex_ax, view_ax = axes
    sns.boxplot(y=data["age"], ax=raw_ax, color="0.8", fliersize=2)
    raw_ax.axhline(max_age, color="crimson", linestyle="--", linewidth=1)
    impossible = data.loc[data["age"] > max_age, "age"].sort_values()
    if len(impossible):
        listed = ", ".join(f"{a:g}" for a in impossible)
        raw_ax.annotate(listed, (0, impossible.max()), xytext=(0, 8), textcoords="offset points",
                        ha="center", fontsize="small", color="crimson")  # fmt: skip
        raw_ax.set_ylim(top=impossible.max() + 15)
    raw_ax.set(ylabel="age as written (years)", title=f"Ages as written: {len(impossible)} above {max_age:g}")
    plausible = data[data["age"] <= max_age]
    sns.histplot(
        plausible, x="age", hue="label", multiple="stack", binwidth=5, binrange=(0, 100),
        palette=TARGET_PALETTE, ax=age_ax,
    )  # fmt: skip
    age_ax.set(xlabel="age (years)", ylabel="patients", title=f"Plausible ages (<= {max_age:g}) by label")
    for ax, col, name in ((sex_ax, "sex", "sex"), (view_ax, "view_position", "view position")):
        order = sorted(data[col].dropna().unique())
        sns.countplot(data, x=col, hue="label", order=order, palette=TARGET_PALETTE, ax=ax, legend=False)
        ax.set(xlabel=name, ylabel="patients", title=f"Patients by {name} and label")
    if age_ax.get_legend() is not None:
        sns.move_legend(age_ax, "upper left", title="Target (colours of every panel)", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_positive_rate(
    table: pd.DataFrame,
    *,
    prevalence: float | None = None,
    xlabel: str = "view position",
    title: str = "Share of patients with lung opacity",
    ax: Axes | None = None,
) -> Axes:
    """Bars of the positive rate per group with 95 % intervals, from :func:`helpers.xray.eda.positive_rate`;
    each bar labelled with ``positives / patients``; ``prevalence``: the overall rate as a dashed line.
    Taught in ``notebooks/01_data_preparation.ipynb``."""
    ax = _new_axes(ax, (5.0, 4.0))
    names = [str(i) for i in table.index]
    rate = table["rate"].to_numpy(float)
    err = np.vstack([rate - table["ci_low"].to_numpy(float), table["ci_high"].to_numpy(float) - rate])
    bars = ax.bar(names, rate, yerr=err, capsize=6, color=sns.color_palette("muted", len(names)))
    for bar, k, n in zip(bars, table["positives"], table["patients"], strict=True):
        ax.annotate(
            f"{k:,} / {n:,}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            xytext=(0, 12), textcoords="offset points", ha="center", fontsize="small",
        )  # fmt: skip
    if prevalence is not None:
        ax.axhline(
            prevalence, color="0.3", linestyle="--", linewidth=1, label=f"all patients: {prevalence:.3f}"
        )
        ax.legend(loc="upper right", fontsize="small")
    ax.set(xlabel=xlabel, ylabel="positive rate (share of patients)", title=title, ylim=(0, max(rate) * 1.35))
    return ax


def plot_image_histogram(
    image: Any,
    *,
    boxes: Any = None,
    title: str = "A radiograph and its pixel values",
    value_label: str = "intensity (0 = black, 1 = white)",
) -> Figure:
    """The image (grey, pixel axes, intensity colour bar, optional ``(x, y, w, h)`` boxes in its pixels)
    next to the histogram of its values. ``image``: H x W. Taught in ``notebooks/01_data_preparation.ipynb``.
    """

    values = np.asarray(image, dtype=np.float32)
    fig, (img_ax, hist_ax) = plt.subplots(1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [1, 1.1]})
    shown = img_ax.imshow(values, cmap="gray", vmin=0, vmax=1 if values.max() <= 1 else None)
    fig.colorbar(shown, ax=img_ax, label=value_label, shrink=0.85)
    if boxes is not None:
        draw_boxes(img_ax, boxes)
    img_ax.set(
        xlabel="x (pixels)", ylabel="y (pixels)", title=f"{values.shape[0]} x {values.shape[1]} pixels"
    )
    hist_ax.hist(values.ravel(), bins=64, color="0.4")
    hist_ax.set(xlabel=value_label, ylabel="pixels", title="Histogram of the pixel values")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_image_row(
    images: Mapping[str, Any],
    *,
    title: str,
    value_label: str = "intensity (0 = black, 1 = white)",
    boxes: Mapping[str, Any] | None = None,
) -> Figure:
    """Images side by side, each titled with its key and labelled in its own pixels, sharing one grey
    scale (0-1) and one colour bar; ``boxes``: optional ``(x, y, w, h)`` per key, in that image's pixels.
    Pixels are drawn as squares (no display smoothing), so what you see is what the array holds.
    Used to compare resizings and augmentations. Taught in ``notebooks/01_data_preparation.ipynb``.
    """

    fig, axes = plt.subplots(1, len(images), figsize=(3.6 * len(images) + 1, 3.9), squeeze=False)
    shown = None
    for k, (ax, (name, image)) in enumerate(zip(axes[0], images.items(), strict=True)):
        shown = ax.imshow(
            np.asarray(image, dtype=np.float32), cmap="gray", vmin=0, vmax=1, interpolation="nearest"
        )
        if boxes is not None and boxes.get(name) is not None:
            draw_boxes(ax, boxes[name])
        ax.set(title=name, xlabel="x (pixels)", ylabel="y (pixels)" if k == 0 else "")
        ax.title.set_fontsize("medium")
    fig.colorbar(shown, ax=list(axes[0]), label=value_label, shrink=0.85)
    fig.suptitle(title)
    return fig
