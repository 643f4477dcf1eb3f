"""The threshold explorer of notebook 03: a slider over the decision threshold that redraws the confusion
matrix and the score histograms and updates a read-out of sensitivity, specificity, PPV and NPV.

Taught in ``notebooks/03_evaluation.ipynb``. Works with ipywidgets 7.7 and 8.x (see ``helpers.widgets``).
The read-out is an ``ipywidgets.HTML`` with the CSS class ``xai-threshold-readout`` and one element per
number (``data-metric="sensitivity"``...), so a browser test can find it and read it.
"""

from __future__ import annotations

import html
import math
import warnings
from typing import Any

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import UndefinedMetricWarning

from helpers.evaluate import metrics, plots
from helpers.widgets.figures import figure_output

READOUT_CLASS = "xai-threshold-readout"
EXPLORER_CLASS = "xai-threshold-explorer"  # on the returned box, for browser tests
READOUT_METRICS = ("sensitivity", "specificity", "precision", "npv", "accuracy")
_NAMES = {"precision": "PPV", "npv": "NPV"}


def _number(value: float) -> str:
    return "undefined" if math.isnan(value) else f"{value:.3f}"


def readout_html(m: dict[str, float]) -> str:
    """The read-out for one operating point (a :func:`helpers.evaluate.metrics.threshold_metrics` result) as HTML:
    the threshold, the counts and the rates, each number in a ``<span data-metric="...">``."""

    def span(name: str, text: str) -> str:
        return f'<span data-metric="{name}">{text}</span>'

    counts = ", ".join(f"{name.upper()} {span(name, str(m[name]))}" for name in ("tp", "fp", "tn", "fn"))
    rates = " &middot; ".join(
        f"{_NAMES.get(name, name)} <b>{span(name, _number(m[name]))}</b>" for name in READOUT_METRICS
    )
    threshold = span("threshold", f"{m['threshold']:.2f}")
    return f'<div class="{READOUT_CLASS}">threshold <b>{threshold}</b> &middot; {counts}<br>{rates}</div>'


def threshold_explorer(
    y_true: Any,
    prob: Any,
    *,
    threshold: float = 0.5,
    step: float = 0.01,
    marks: dict[str, float] | None = None,
    title: str = "",
):
    """An ``ipywidgets.VBox``: a threshold slider, the read-out (HTML) and a figure (confusion matrix and
    score histograms at the current threshold) that is redrawn when the slider moves.

    ``y_true`` (N,) 0/1 labels and ``prob`` (N,) probabilities, e.g. the test split; ``marks``: named
    thresholds listed under the slider (``{"Youden (val)": 0.41}``), to compare with by hand. The box carries
    ``.slider``, ``.readout`` (the HTML widget), ``.figure`` (the Output), ``.metrics()`` (the current
    :func:`helpers.evaluate.metrics.threshold_metrics`) and ``.last_figure`` (the matplotlib figure last drawn).
    """

    y, p = np.asarray(y_true), np.asarray(prob, dtype=float)
    with warnings.catch_warnings():  # validates the inputs once, up front
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        metrics.threshold_metrics(y, p, threshold)
    slider = w.FloatSlider(
        value=threshold,
        min=0.0,
        max=1.0,
        step=step,
        description="threshold",
        continuous_update=False,
        readout_format=".2f",
        layout=w.Layout(width="420px"),
    )
    readout = w.HTML()
    readout.add_class(READOUT_CLASS)
    box = w.VBox()
    box.add_class(EXPLORER_CLASS)

    def current() -> dict[str, float]:
        with warnings.catch_warnings():  # an empty row or column is shown as 'undefined' in the read-out
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            return metrics.threshold_metrics(y, p, float(slider.value))

    def draw():
        t = float(slider.value)
        fig, (cm_ax, hist_ax) = plt.subplots(1, 2, figsize=(10.5, 4.2))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            plots.plot_confusion_matrix(y, p, t, ax=cm_ax)
        plots.plot_score_histogram(y, p, t, ax=hist_ax)
        fig.suptitle(f"{title} threshold {t:.2f}".strip())
        fig.tight_layout()
        box.last_figure = fig
        return fig

    figure = figure_output(draw)

    def update(change: Any = None) -> None:
        readout.value = readout_html(current())
        figure.refresh()

    slider.observe(update, names="value")
    children = [slider, readout]
    if marks:
        listed = ", ".join(f"{html.escape(name)}: {value:.2f}" for name, value in marks.items())
        children.append(w.HTML(f"<small>Thresholds to try: {listed}</small>"))
    box.children = [*children, figure]
    box.slider, box.readout, box.figure, box.metrics = slider, readout, figure, current
    update()
    return box
