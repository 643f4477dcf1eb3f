"""Tests of helpers.training.plots: learning curves of a training history (axes, labels, best epoch)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers.training import plots as training_plots  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_plt_show")  # tests/conftest.py: no plt.show(), figures closed


HISTORY = pd.DataFrame(
    {
        "epoch": [1, 2, 3, 4],
        "train_loss": [0.7, 0.5, 0.4, 0.3],
        "val_loss": [0.69, 0.48, 0.5, 0.52],  # lowest at epoch 2
        "train_acc": [0.5, 0.7, 0.8, 0.85],
        "val_acc": [0.55, 0.7, 0.78, 0.76],  # highest at epoch 3
        "lr": [1e-4] * 4,
    }
)


def test_learning_curves_mark_the_best_epoch():
    fig = training_plots.plot_learning_curves(HISTORY)
    loss_ax, metric_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines[:2]] == ["train_loss", "val_loss"]
    assert [line.get_label() for line in metric_ax.lines[:2]] == [
        "train_acc",
        "val_acc",
    ]  # lr is not a metric
    for ax in (loss_ax, metric_ax):
        assert len(ax.lines) == 3 and list(ax.lines[2].get_xdata()) == [3, 3]
        assert ax.get_xlabel() == "epoch"
    assert metric_ax.lines[2].get_label() == "best epoch 3 (val_acc = 0.780)"
    assert loss_ax.get_ylabel() == "loss (mean per image)" and metric_ax.get_ylabel() == "metric (fraction)"
    assert fig.get_suptitle() == "Learning curves"
    by_loss = training_plots.plot_learning_curves(HISTORY, monitor="val_loss", mode="min")
    assert list(by_loss.axes[0].lines[2].get_xdata()) == [2, 2]
    only_losses = training_plots.plot_learning_curves(HISTORY[["train_loss", "val_loss"]])
    assert list(only_losses.axes[0].lines[2].get_xdata()) == [2, 2]  # epochs from the index, val_loss min
    with pytest.raises(ValueError, match="monitor column 'val_auc' not in history"):
        training_plots.plot_learning_curves(HISTORY, monitor="val_auc")


def test_learning_curves_default_to_the_saved_checkpoint_of_helpers_train():
    # helpers.training.loop.fit flags each epoch that improved its monitor; the checkpoint is the last flagged.
    history = HISTORY.assign(val_auc=[0.6, 0.7, 0.72, 0.8], best=[True, True, True, True])
    history.loc[3, "best"] = False
    fig = training_plots.plot_learning_curves(history)
    assert list(fig.axes[1].lines[-1].get_xdata()) == [3, 3]
    assert fig.axes[1].lines[-1].get_label() == "best epoch 3 (saved checkpoint)"
    assert [line.get_label() for line in fig.axes[1].lines[:3]] == ["train_acc", "val_acc", "val_auc"]


def test_learning_curves_draw_on_given_axes_and_check_their_input():
    fig, given = plt.subplots(1, 2)
    assert training_plots.plot_learning_curves(HISTORY, ax=given, title="run 1") is fig
    assert [len(ax.lines) for ax in given] == [3, 3] and fig.get_suptitle() == "run 1"
    assert [ax.get_title() for ax in given] == ["Loss", "Metrics"]
    with pytest.raises(ValueError, match="mode must be 'max' or 'min', got 'best'"):
        training_plots.plot_learning_curves(HISTORY, mode="best")
    with pytest.raises(
        ValueError, match=r"history has no loss or metric columns \(columns: \['epoch', 'lr'\]\)"
    ):
        training_plots.plot_learning_curves(HISTORY[["epoch", "lr"]])
