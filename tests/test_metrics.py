"""Tests of helpers.evaluate.metrics: every metric against numbers computed by hand on a small fixed example;
and of helpers.training.inference (predict, predict_split), which makes the probabilities they are computed on.

The bootstrap half (intervals, summary and subgroup tables) is tested in tests/test_bootstrap.py.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
)
from torch import nn

from helpers.evaluate import metrics as M
from helpers.training import inference
from helpers.training.models import InputStandardisation

# The worked example. Positives (y=1): 0.9, 0.4, 0.8. Negatives: 0.1, 0.6, 0.3, 0.95, 0.2.
Y = np.array([0, 0, 0, 0, 1, 1, 1, 0])
P = np.array([0.1, 0.6, 0.3, 0.95, 0.9, 0.4, 0.8, 0.2])
# At threshold 0.5: called positive 0.6, 0.95, 0.9, 0.8 -> tp = 2 (0.9, 0.8), fp = 2 (0.6, 0.95),
# fn = 1 (0.4), tn = 3 (0.1, 0.3, 0.2).
HAND_AT_HALF = {
    "tp": 2,
    "fp": 2,
    "tn": 3,
    "fn": 1,
    "n": 8,
    "accuracy": 5 / 8,
    "sensitivity": 2 / 3,
    "specificity": 3 / 5,
    "precision": 2 / 4,
    "npv": 3 / 4,
    "f1": 4 / 7,  # 2tp / (2tp + fp + fn) = 4 / 7
    "prevalence": 3 / 8,
    "threshold": 0.5,
}
# ROC-AUC: pairs (positive > negative) out of 3 x 5 = 15: 0.9 beats 4 (not 0.95), 0.8 beats 4, 0.4 beats 3.
HAND_ROC_AUC = 11 / 15
# Ranked descending: 0.95 N, 0.9 P, 0.8 P, 0.6 N, 0.4 P -> AP = (1/2 + 2/3 + 3/5) / 3 = 53 / 90.
HAND_PR_AUC = 53 / 90
# Brier: (0.01 + 0.36 + 0.09 + 0.9025 + 0.01 + 0.36 + 0.04 + 0.04) / 8 = 1.8125 / 8.
HAND_BRIER = 1.8125 / 8


def test_threshold_metrics_match_hand_computed_values():
    assert M.threshold_metrics(Y, P, 0.5) == pytest.approx(HAND_AT_HALF)


@pytest.mark.parametrize("threshold", [0.25, 0.5, 0.85])
def test_threshold_metrics_agree_with_sklearn(threshold):
    m = M.threshold_metrics(Y, P, threshold)
    pred = (P >= threshold).astype(int)
    assert [m["tn"], m["fp"], m["fn"], m["tp"]] == confusion_matrix(Y, pred).ravel().tolist()
    assert m["sensitivity"] == pytest.approx(recall_score(Y, pred))
    assert m["specificity"] == pytest.approx(recall_score(Y, pred, pos_label=0))
    assert m["precision"] == pytest.approx(precision_score(Y, pred))
    assert m["npv"] == pytest.approx(precision_score(Y, pred, pos_label=0))
    assert m["f1"] == pytest.approx(f1_score(Y, pred))


def test_threshold_is_inclusive():
    assert M.threshold_metrics(Y, P, 0.6)["fp"] == 2  # 0.6 itself is called positive
    assert M.threshold_metrics(Y, P, 0.61)["fp"] == 1


def test_ranking_metrics_match_hand_computed_values():
    assert M.ranking_metrics(Y, P) == pytest.approx(
        {"roc_auc": HAND_ROC_AUC, "pr_auc": HAND_PR_AUC, "pr_auc_baseline": 3 / 8}
    )


def test_one_class_gives_nan_with_a_warning_not_a_crash():
    negatives = np.zeros(8, dtype=int)
    with pytest.warns(UndefinedMetricWarning, match="sensitivity undefined"):
        m = M.threshold_metrics(negatives, P, 0.5)
    # 4 called positive, all false: fp = 4, tn = 4, no positives at all.
    assert np.isnan(m["sensitivity"])
    assert (m["specificity"], m["precision"], m["npv"], m["f1"]) == (0.5, 0.0, 1.0, 0.0)
    with pytest.warns(UndefinedMetricWarning, match="only one class"):
        r = M.ranking_metrics(negatives, P)
    assert np.isnan(r["roc_auc"]) and np.isnan(r["pr_auc"]) and r["pr_auc_baseline"] == 0.0


def test_nothing_called_positive_leaves_precision_undefined_and_f1_zero():
    with pytest.warns(UndefinedMetricWarning, match="precision undefined"):
        m = M.threshold_metrics(Y, P, 0.99)
    assert np.isnan(m["precision"])
    assert m["f1"] == 0.0  # 2*0 / (0 + 0 + 3)
    assert m["specificity"] == 1.0 and m["npv"] == 5 / 8


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 2, 1], [0.1, 0.2, 0.3], "only 0 and 1"),
        ([0, 1, 1], [0.1, 1.2, 0.3], r"in \[0, 1\]"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "finite"),
        ([0, 1], [0.1, 0.2, 0.3], "same length"),
        ([], [], "empty"),
    ],
)
def test_bad_inputs_raise_clear_errors(y, p, message):
    with pytest.raises(ValueError, match=message):
        M.threshold_metrics(y, p)


def test_choose_threshold_rules_on_the_worked_example():
    # Youden's J per threshold (tpr - fpr): 0.95: -0.2, 0.9: 0.13, 0.8: 0.47, 0.6: 0.27, 0.4: 0.6, 0.3: 0.4 ...
    assert M.choose_threshold(Y, P, "youden") == 0.4
    # Highest threshold reaching the sensitivity: 0.9 -> 1/3, 0.8 -> 2/3, 0.4 -> 3/3.
    assert M.choose_threshold(Y, P, "sensitivity", 0.2) == 0.9
    assert M.choose_threshold(Y, P, "sensitivity", 0.6) == 0.8
    assert M.choose_threshold(Y, P, "sensitivity", 0.9) == 0.4
    assert M.choose_threshold(Y, P, "sensitivity", 1.0) == 0.4
    assert M.choose_threshold(Y, P, "fixed") == 0.5
    assert M.choose_threshold(Y, P, "fixed", 0.3) == 0.3


def test_youden_ties_take_the_highest_threshold():
    # J = 0.5 at 0.4 (tpr 1/2, fpr 0) and at 0.2 (tpr 1, fpr 1/2).
    assert M.choose_threshold([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], "youden") == 0.4


def test_choose_threshold_errors():
    with pytest.raises(ValueError, match="only class 0"):
        M.choose_threshold([0, 0, 0], [0.1, 0.2, 0.3], "youden")
    with pytest.raises(ValueError, match="rule must be"):
        M.choose_threshold(Y, P, "best")
    with pytest.raises(ValueError, match=r"target value in \(0, 1\]"):
        M.choose_threshold(Y, P, "sensitivity")


def test_brier_score_by_hand_and_sklearn():
    assert M.brier_score(Y, P) == pytest.approx(HAND_BRIER)
    assert M.brier_score(Y, P) == pytest.approx(brier_score_loss(Y, P))


def test_calibration_table_four_bins_by_hand():
    table = M.calibration_table(Y, P, n_bins=4)
    # Bins (0, .25], (.25, .5], (.5, .75], (.75, 1]: {0.1, 0.2}, {0.3, 0.4}, {0.6}, {0.95, 0.9, 0.8}.
    assert table["count"].tolist() == [2, 2, 1, 3]
    assert table["bin_low"].tolist() == [0.0, 0.25, 0.5, 0.75]
    assert table["mean_predicted"].tolist() == pytest.approx([0.15, 0.35, 0.6, 2.65 / 3])
    assert table["fraction_positive"].tolist() == pytest.approx([0.0, 0.5, 0.0, 2 / 3])


def test_calibration_table_keeps_empty_bins_and_quantile_bins_count_everything():
    table = M.calibration_table([0, 1, 0, 1], [0.05, 0.15, 0.17, 0.95], n_bins=10)
    assert table["count"].tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 1]
    assert table.loc[table["count"] == 0, ["mean_predicted", "fraction_positive"]].isna().all().all()
    assert table.loc[1, "mean_predicted"] == pytest.approx(0.16) and table.loc[1, "fraction_positive"] == 0.5
    assert M.calibration_table(Y, P, n_bins=4, strategy="quantile")["count"].sum() == 8


def test_expected_calibration_error_by_hand():
    # 2 bins: (0, .5] mean .25, fraction .25; (.5, 1] mean .8125, fraction .5 -> (4*0 + 4*.3125) / 8.
    assert M.expected_calibration_error(Y, P, n_bins=2) == pytest.approx(0.15625)
    # 4 bins: (2*.15 + 2*.15 + 1*.6 + 3*(2.65/3 - 2/3)) / 8 = 1.85 / 8.
    assert M.expected_calibration_error(Y, P, n_bins=4) == pytest.approx(1.85 / 8)


def test_age_bands_labels_and_implausible_ages():
    ages = pd.Series([5, "51", "051Y", 85, 148, None, -3, 19.5, 20], index=list("abcdefghi"))
    bands = M.age_bands(ages)
    assert bands.tolist() == [
        "0-19", "40-59", "40-59", "80+", "implausible (>100)", "unknown", "unknown", "0-19", "20-39",
    ]  # fmt: skip
    assert list(bands.index) == list("abcdefghi")
    assert list(bands.cat.categories) == [
        "0-19", "20-39", "40-59", "60-79", "80+", "implausible (>100)", "unknown",
    ]  # fmt: skip
    assert bands.cat.ordered


def test_find_errors_ranks_the_cases():
    df = pd.DataFrame({"label": Y, "prob": P})
    errors = M.find_errors(df, "prob", "label", threshold=0.5, k=3)
    assert errors["false_positives"].index.tolist() == [3, 1]  # 0.95 then 0.6
    assert errors["false_negatives"].index.tolist() == [5]  # 0.4
    # |p - 0.5|: 0.6 -> 0.1, 0.4 -> 0.1 (tie kept in row order), 0.3 -> 0.2.
    assert errors["least_certain"].index.tolist() == [1, 5, 2]
    with pytest.raises(ValueError, match=r"columns \['p'\] not in the DataFrame"):
        M.find_errors(df, "p", "label")


# helpers.training.inference: predict (the course's one prediction function) and predict_split, whose
# probabilities the metrics above are computed on.


class MeanLogit(nn.Module):
    """Logit k = k * (mean of the standardised input): known outputs; records how it was called.

    Like the course's models it standardises its own input (``normalise``, buffers ``mean`` and ``std``).
    """

    def __init__(self, n_logits: int = 1, mean: float = 0.5, std: float = 0.25):
        super().__init__()
        self.normalise = InputStandardisation(mean, std)
        self.scale = nn.Parameter(
            torch.arange(n_logits, dtype=torch.float32) if n_logits > 1 else torch.ones(1)
        )
        self.dropout = nn.Dropout(0.5)
        self.calls: list[tuple] = []
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((tuple(x.shape), x.dtype, self.training, torch.is_grad_enabled()))
        self.inputs.append(x.detach().clone())
        return self.dropout(self.normalise(x).mean(dim=(1, 2, 3))[:, None] * self.scale)


def _images() -> np.ndarray:
    images = np.full((5, 4, 4), 255, dtype=np.uint8)
    images[1] = 0
    images[3] = 51  # 0.2 -> (0.2 - 0.5) / 0.25 = -1.2
    return images


def test_predict_feeds_the_image_in_0_1_in_batches_and_restores_the_model(tmp_path):
    model = MeanLogit()
    model.train()
    model.dropout.eval()  # a mixed state that must come back exactly
    probs = inference.predict(model, _images(), batch_size=2, device="cpu", progress=False)
    expected = torch.sigmoid(torch.tensor([2.0, -2.0, 2.0, -1.2, 2.0])).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-6)
    assert probs.dtype == np.float32 and probs.shape == (5,)
    assert [c[0] for c in model.calls] == [(2, 1, 4, 4), (2, 1, 4, 4), (1, 1, 4, 4)]
    assert all(c[1] == torch.float32 and c[2] is False and c[3] is False for c in model.calls)
    # The model gets x / 255 and nothing else: the standardisation is its own (its buffers).
    fed = torch.cat(model.inputs)
    torch.testing.assert_close(fed, torch.from_numpy(_images()).float()[:, None] / 255)
    assert model.training and not model.dropout.training and model.normalise.training
    assert model.scale.grad is None
    stored = np.memmap(tmp_path / "images.u8", dtype=np.uint8, mode="w+", shape=(5, 4, 4))
    stored[:] = _images()
    for source in (stored, torch.from_numpy(_images())):
        got = inference.predict(model, source, batch_size=256, device="cpu", progress=False)
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    other = MeanLogit(mean=0.2, std=0.5)  # other statistics in the buffers, other probabilities
    got = inference.predict(other, _images(), device="cpu", progress=False)
    np.testing.assert_allclose(
        got, torch.sigmoid(torch.tensor([1.6, -0.4, 1.6, 0.0, 1.6])).numpy(), rtol=1e-6
    )


def test_predict_uses_float_inputs_as_they_are_and_softmax_for_several_logits():
    x = np.full((3, 1, 2, 2), 0.3, dtype=np.float32)  # e.g. log-mel patches: no 1/255; the model standardises
    model = MeanLogit()
    probs = inference.predict(model, x, device="cpu", progress=False)
    np.testing.assert_allclose(probs, torch.sigmoid(torch.tensor([-0.8] * 3)).numpy(), rtol=1e-6)
    torch.testing.assert_close(model.inputs[0], torch.from_numpy(x), rtol=0, atol=0)
    probs3 = inference.predict(MeanLogit(3), _images(), device="cpu", progress=False)
    assert probs3.shape == (5, 3)
    np.testing.assert_allclose(probs3.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs3[0], torch.softmax(torch.tensor([0.0, 2.0, 4.0]), 0).numpy(), rtol=1e-6)


def test_predict_is_the_one_prediction_function_and_matches_the_training_logits():
    from helpers.training import device_data, loop
    from helpers.training.device_data import DeviceData

    assert not hasattr(M, "predict") and not hasattr(loop, "predict_proba")
    assert not hasattr(inference, "predict_proba") and not hasattr(inference, "predict_logits")
    assert not hasattr(device_data, "predict_logits")
    model = MeanLogit().eval()
    logits = inference.logits_for(
        model, DeviceData(_images(), device="cpu"), batch_size=2
    )  # as in validation
    assert logits.shape == (5, 1) and logits.dtype == torch.float32
    probs = inference.predict(model, _images(), 2, "cpu", progress=False)  # batch_size, device positional
    np.testing.assert_allclose(probs, torch.sigmoid(logits[:, 0]).numpy(), rtol=1e-6)
    empty = np.zeros((0, 4, 4), dtype=np.uint8)
    assert inference.predict(model, empty, device="cpu", progress=False).shape == (0,)
    assert inference.logits_for(model, DeviceData(empty, device="cpu"), batch_size=2).shape == (0, 0)


def test_predict_rejects_bad_images_and_batch_sizes():
    with pytest.raises(ValueError, match="must be uint8 .0-255. or float, got dtype int16"):
        inference.predict(MeanLogit(), np.zeros((2, 4, 4), dtype=np.int16), device="cpu")
    with pytest.raises(ValueError, match=r"N x H x W or N x C x H x W, got shape \(4, 4\)"):
        inference.predict(MeanLogit(), np.zeros((4, 4), dtype=np.uint8), device="cpu")
    with pytest.raises(ValueError, match="predict: batch_size must be >= 1, got 0"):
        inference.predict(MeanLogit(), _images(), batch_size=0, device="cpu")
    with pytest.raises(ValueError, match="std must be > 0"):  # the model refuses a zero std when it is built
        MeanLogit(std=0.0)


def test_predict_split_returns_the_split_rows_with_probabilities_and_age_bands():
    from types import SimpleNamespace

    index = pd.DataFrame(
        {
            "patientId": list("abcde"),
            "label": [1, 0, 0, 1, 0],
            "split": ["test", "train", "test", "test", "test"],
            "ok": [True, True, True, True, False],  # an unreadable file is left out
            "age": [5, 30, "51", 148, 70],
        }
    )
    store = SimpleNamespace(index=index, images=_images(), path="store")
    frame = inference.predict_split(MeanLogit(), store, "test", device="cpu", progress=False)
    assert frame.index.tolist() == [0, 2, 3]  # rows of store.images
    expected = torch.sigmoid(torch.tensor([2.0, 2.0, -1.2])).numpy()
    np.testing.assert_allclose(frame["prob"], expected, rtol=1e-6)
    assert frame["prob"].dtype == np.float64
    assert frame["age_band"].astype(str).tolist() == ["0-19", "40-59", "implausible (>100)"]
    with pytest.raises(ValueError, match="no 'val' split; the splits here are \\['test', 'train'\\]"):
        inference.predict_split(MeanLogit(), store, "val", device="cpu")
    with pytest.raises(ValueError, match="expected a 1-logit model"):
        inference.predict_split(MeanLogit(3), store, "test", device="cpu", progress=False)
    with pytest.raises(TypeError):  # no mean/std any more: the model carries them
        inference.predict_split(MeanLogit(), store, "test", 0.5, 0.25, device="cpu", progress=False)


def test_a_failing_predict_leaves_gradients_on_and_the_model_as_it_was():
    """Regression: the eval-mode and no_grad contexts were held in a generator, which an error left paused
    while the traceback was kept alive (as a notebook keeps ``sys.last_traceback``), so gradients stayed off for
    the rest of the session. Run in a fresh interpreter, as a notebook kernel would."""
    import subprocess

    code = """
import sys, numpy as np, torch
from helpers.training.inference import predict
class ThreeD(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)
    def forward(self, x):
        return self.conv(x)[:, :, 0]  # B x 2 x W: not a classifier's output
model = ThreeD().train()
try:
    predict(model, np.zeros((3, 8, 8), np.uint8), batch_size=2, device="cpu", progress=True)
except ValueError as error:
    kept = sys.exc_info()
    print("error:", error)
print("grad enabled:", torch.is_grad_enabled(), "| training:", model.training)
"""
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}  # the progress bar a learner sees
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    out = run.stdout
    assert "error: predict: model output must be B, B x 1 or B x K" in out
    assert out.strip().endswith("grad enabled: True | training: True"), out
