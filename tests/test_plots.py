"""Tests of helpers.evaluate.plots: titles, labels, artists and data of each figure.

Learning curves (helpers.training.plots) are tested in tests/test_training_plots.py, heatmap overlays, boxes
and galleries (helpers.explain.overlays) in tests/test_overlays.py, box scaling in tests/test_localisation.py.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers.evaluate import bootstrap, metrics, plots  # noqa: E402

# The worked example of tests/test_metrics.py: at 0.5, tn = 3, fp = 2, fn = 1, tp = 2; AUC 11/15, AP 53/90.
Y = np.array([0, 0, 0, 0, 1, 1, 1, 0])
P = np.array([0.1, 0.6, 0.3, 0.95, 0.9, 0.4, 0.8, 0.2])


pytestmark = pytest.mark.usefixtures("no_plt_show")  # tests/conftest.py: no plt.show(), figures closed


def _legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_confusion_matrix_counts_rates_labels_and_colour_bar():
    ax = plots.plot_confusion_matrix(Y, P, 0.5)
    assert [t.get_text() for t in ax.texts] == ["3\n(60%)", "2\n(40%)", "1\n(33%)", "2\n(67%)"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Normal", "Pneumonia"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Normal", "Pneumonia"]
    assert ax.get_title() == "Confusion matrix (n = 8, threshold 0.50)"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("Predicted class (prob >= 0.50)", "True class")
    colour_bar_axes = [a for a in ax.figure.axes if a is not ax]
    assert len(colour_bar_axes) == 1
    assert colour_bar_axes[0].get_ylabel() == "row rate (fraction of the true class)"
    custom = plots.plot_confusion_matrix(Y, P, 0.5, class_names=("no", "yes"))
    assert [t.get_text() for t in custom.get_xticklabels()] == ["no", "yes"]


def test_roc_curve_with_auc_in_legend_and_operating_point():
    fig, ax = plt.subplots()
    assert plots.plot_roc(Y, P, threshold=0.5, label="ResNet18", ax=ax) is ax
    assert len(ax.lines) == 3  # curve, chance diagonal, operating point
    legend = _legend_texts(ax)
    assert legend[0] == "ResNet18 (AUC = 0.733)"
    assert legend[2] == "threshold 0.50: sens 0.67, spec 0.60"
    point = ax.lines[2]
    assert point.get_xdata()[0] == pytest.approx(0.4) and point.get_ydata()[0] == pytest.approx(2 / 3)
    assert ax.get_title() == "ROC curve"
    assert ax.get_xlabel() == "False positive rate (1 - specificity, fraction)"
    assert ax.get_ylabel() == "True positive rate (sensitivity, fraction)"
    assert len(plots.plot_roc(Y, P).lines) == 2  # no threshold, no point


def test_pr_curve_with_prevalence_baseline_and_operating_point():
    ax = plots.plot_pr(Y, P, threshold=0.5)
    assert len(ax.lines) == 3
    assert _legend_texts(ax)[:2] == ["model (AP = 0.589)", "prevalence baseline (0.375)"]
    assert list(ax.lines[1].get_ydata()) == [0.375, 0.375]
    assert ax.lines[2].get_xdata()[0] == pytest.approx(2 / 3) and ax.lines[2].get_ydata()[0] == 0.5
    assert (ax.get_xlabel(), ax.get_ylabel()) == (
        "Recall (sensitivity, fraction)",
        "Precision (PPV, fraction)",
    )
    assert ax.get_title() == "Precision-recall curve"


def test_reliability_diagram_points_and_bin_counts():
    ax = plots.plot_reliability(Y, P, n_bins=4)
    curve = ax.lines[1]
    np.testing.assert_allclose(curve.get_xdata(), [0.15, 0.35, 0.6, 2.65 / 3])
    np.testing.assert_allclose(curve.get_ydata(), [0.0, 0.5, 0.0, 2 / 3])
    assert _legend_texts(ax) == ["perfect calibration", "model (ECE = 0.231)"]
    (counts_ax,) = [a for a in ax.figure.axes if a is not ax]
    assert [bar.get_height() for bar in counts_ax.patches] == [2, 2, 1, 3]
    assert counts_ax.get_ylabel() == "images per bin (count)"
    assert ax.get_xlabel() == "Mean predicted probability (fraction)"
    assert ax.get_title() == "Reliability diagram (4 uniform bins)"


def test_subgroup_chart_error_bars_from_a_subgroup_table():
    df = pd.DataFrame({"label": Y, "prob": P, "sex": ["F", "M"] * 4})
    with pytest.warns(Warning):  # four rows per subgroup: many undefined resamples
        table = bootstrap.subgroup_table(df, "sex", threshold=0.5, n_boot=100)
    ax = plots.plot_subgroups(table, "sensitivity", reference=0.5)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["sex = F (n = 4)", "sex = M (n = 4)"]
    points = ax.lines[0]
    np.testing.assert_allclose(points.get_xdata(), table["sensitivity"])
    assert len(ax.collections) == 1  # the horizontal error bars
    assert ax.get_xlabel() == "sensitivity (fraction, 95% bootstrap CI)"
    assert ax.get_title() == "sensitivity by subgroup"
    with pytest.raises(ValueError, match=r"columns \['auc_low', 'auc_high'\] missing"):
        plots.plot_subgroups(table[["subgroup", "n", "auc"]], "auc")


def test_score_histogram_counts_each_class_and_marks_the_threshold():
    ax = plots.plot_score_histogram(Y, P, 0.5, bins=4)
    # Bins of width 0.25: normals {0.1, 0.2 | 0.3 | 0.6 | 0.95}, pneumonia {0.4 | 0.8, 0.9}.
    normal, pneumonia = ax.containers
    assert [b.get_height() for b in normal] == [2, 1, 1, 1]
    assert [b.get_height() for b in pneumonia] == [0, 1, 0, 2]
    assert ax.lines[0].get_xdata()[0] == 0.5
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["true Normal (n = 5)", "true Pneumonia (n = 3)", "threshold 0.50"]
    assert ax.get_xlabel() == "Predicted probability of pneumonia (fraction)" and ax.get_title()


def test_error_gallery_rows_titles_and_scaled_boxes():
    images = np.zeros((8, 16, 16), dtype=np.uint8)
    frame = pd.DataFrame(
        {
            "label": Y,
            "prob": P,
            "patientId": [f"patient{i}xyz" for i in range(8)],
            "boxes": [[]] * 4 + [[(32, 64, 64, 32)], [], [(0, 0, 128, 128)], []],
            "orig_height": 128,
            "orig_width": 128,
        }
    )
    cases = metrics.find_errors(frame, threshold=0.5, k=3)
    cases["false_negatives"] = cases["false_negatives"].iloc[:0]  # a kind with no case
    fig = plots.plot_error_gallery(cases, images, k=3)
    grid = np.array(fig.axes).reshape(3, 3)
    assert [row[0].get_ylabel() for row in grid] == ["False positive", "False negative", "Least certain"]
    assert grid[0][0].get_title() == "patient3\ntrue Normal, p = 0.95"
    assert grid[2][1].get_title() == "patient5\ntrue Pneumonia, p = 0.40"
    assert grid[1][0].texts[0].get_text() == "none"
    # Least certain: 0.6 (row 1), 0.4 (row 5), 0.3 (row 2): boxes only where the patient has some.
    assert [len(t.patches) for t in grid[2]] == [0, 0, 0]
    cases["least_certain"] = frame.loc[[4, 6]]
    box = plots.plot_error_gallery(cases, images, k=3).axes[6].patches[0]
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (3.5, 7.5, 8.0, 4.0)  # / 8
