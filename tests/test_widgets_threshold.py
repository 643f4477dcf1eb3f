"""Tests of helpers.widgets.threshold: moving the slider changes the read-out and the figure."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import ipywidgets as w  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers.evaluate import metrics  # noqa: E402
from helpers.widgets import threshold as T  # noqa: E402

# The worked example of tests/test_metrics.py: at 0.5 tp 2, fp 2, tn 3, fn 1; at 0.85 tp 1, fp 1, tn 4, fn 2.
Y = np.array([0, 0, 0, 0, 1, 1, 1, 0])
P = np.array([0.1, 0.6, 0.3, 0.95, 0.9, 0.4, 0.8, 0.2])


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def readout_numbers(html: str) -> dict[str, str]:
    return dict(re.findall(r'<span data-metric="(\w+)">([^<]*)</span>', html))


def heatmap_texts(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].texts]


def test_explorer_shows_the_default_threshold():
    box = T.threshold_explorer(Y, P)
    assert isinstance(box, w.VBox) and box.slider in box.children and box.readout in box.children
    assert isinstance(box.readout, w.HTML) and T.READOUT_CLASS in box.readout._dom_classes
    assert T.EXPLORER_CLASS in box._dom_classes  # the browser test finds the explorer by it
    numbers = readout_numbers(box.readout.value)
    assert numbers["threshold"] == "0.50"
    assert (numbers["tp"], numbers["fp"], numbers["tn"], numbers["fn"]) == ("2", "2", "3", "1")
    assert numbers["sensitivity"] == "0.667" and numbers["specificity"] == "0.600"
    assert numbers["precision"] == "0.500" and numbers["npv"] == "0.750"
    assert heatmap_texts(box.last_figure) == ["3\n(60%)", "2\n(40%)", "1\n(33%)", "2\n(67%)"]
    assert "threshold 0.50" in box.last_figure.axes[0].get_title()


def test_moving_the_slider_updates_readout_figure_and_metrics():
    box = T.threshold_explorer(Y, P, title="worked example")
    first_figure = box.last_figure
    box.slider.value = 0.85  # 0.95 and 0.9 are called positive
    numbers = readout_numbers(box.readout.value)
    assert numbers["threshold"] == "0.85"
    assert (numbers["tp"], numbers["fp"], numbers["tn"], numbers["fn"]) == ("1", "1", "4", "2")
    assert numbers["sensitivity"] == "0.333" and numbers["specificity"] == "0.800"
    assert box.last_figure is not first_figure
    assert heatmap_texts(box.last_figure) == ["4\n(80%)", "1\n(20%)", "2\n(67%)", "1\n(33%)"]
    assert box.last_figure._suptitle.get_text() == "worked example threshold 0.85"
    assert box.metrics() == metrics.threshold_metrics(Y, P, 0.85)


def test_undefined_rates_read_as_undefined_without_warnings(recwarn):
    box = T.threshold_explorer(Y, P)
    box.slider.value = 1.0  # nothing called positive: PPV undefined
    numbers = readout_numbers(box.readout.value)
    assert numbers["precision"] == "undefined" and numbers["sensitivity"] == "0.000"
    assert not [r for r in recwarn if "undefined" in str(r.message)]


def test_marks_are_listed_and_bad_inputs_rejected():
    box = T.threshold_explorer(Y, P, threshold=0.4, marks={"Youden (val)": 0.4, "90 % sensitivity": 0.35})
    listed = [c.value for c in box.children if isinstance(c, w.HTML) and c is not box.readout]
    assert listed == ["<small>Thresholds to try: Youden (val): 0.40, 90 % sensitivity: 0.35</small>"]
    assert readout_numbers(box.readout.value)["threshold"] == "0.40"
    with pytest.raises(ValueError, match="only 0 and 1"):
        T.threshold_explorer([0, 2], [0.1, 0.2])


def test_readout_html_names_every_number():
    html = T.readout_html(metrics.threshold_metrics(Y, P, 0.5))
    assert html.startswith(f'<div class="{T.READOUT_CLASS}">')
    assert set(readout_numbers(html)) == {"threshold", "tp", "fp", "tn", "fn", *T.READOUT_METRICS}
