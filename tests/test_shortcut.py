"""helpers.course.shortcut: the marker's place, pasting it, heat by region, the real-data view table, evaluation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from helpers.course import shortcut
from helpers.data.synthetic_xray import burn_marker
from helpers.explain import localisation
from helpers.training.models import InputStandardisation


def test_marker_boxes_in_store_pixels_and_margin():
    # marker_geometry(256) = offset 8, size 15, stroke 3; at 64 pixels everything is divided by 4
    assert shortcut.marker_boxes(256, 64) == [(2.0, 2.0, 0.75, 3.75), (2.0, 5.0, 2.75, 0.75)]
    grown = shortcut.marker_boxes(256, 64, margin=1)
    assert grown[0] == (1.0, 1.0, 2.75, 5.75)


def test_add_marker_matches_a_burned_and_shrunk_marker():
    images = np.full((2, 64, 64), 10, dtype=np.uint8)
    before = images.copy()
    marked = shortcut.add_marker(images, 256)
    np.testing.assert_array_equal(images, before)  # a copy, the input is untouched
    assert marked.dtype == np.uint8 and marked.shape == images.shape
    mask = localisation.boxes_to_mask(shortcut.marker_boxes(256, 64), 64, 64)
    assert (marked[0][mask] > 100).all() and (marked[0][~mask] == 10).all()
    # the same as burning the marker into a 256-pixel image and shrinking it with an area filter
    big = np.full((256, 256), 10, dtype=np.uint8)
    burn_marker(big)
    shrunk = np.asarray(Image.fromarray(big.astype(np.float32)).resize((64, 64), Image.BOX))
    assert np.abs(marked[1].astype(float) - shrunk).max() <= 1.0
    with pytest.raises(ValueError, match="uint8 N x S x S"):
        shortcut.add_marker(images[0], 256)


def test_heat_by_region_on_hand_made_maps():
    maps = np.zeros((2, 8, 8))
    maps[:, 0, 0] = 1.0  # all heat in the top-left pixel
    regions = {"corner": [[(0, 0, 2, 2)]] * 2, "box": [[(4, 4, 4, 4)], [(4, 4, 2, 2)]]}
    table = shortcut.heat_by_region(maps, regions)
    assert list(table.index) == ["corner", "box"]
    assert table.loc["corner", "heat_share"] == 1.0 and table.loc["corner", "pointing_game"] == 1.0
    assert table.loc["corner", "area_share"] == pytest.approx(4 / 64)
    assert table.loc["corner", "enrichment"] == pytest.approx(16.0)
    assert table.loc["box", "heat_share"] == 0.0 and table.loc["box", "pointing_game"] == 0.0
    assert table.loc["box", "area_share"] == pytest.approx((16 / 64 + 4 / 64) / 2)


def test_positive_share_by_view_counts_patients_not_boxes():
    labels = pd.DataFrame({"patientId": ["a", "a", "b", "c", "d"], "Target": [1, 1, 0, 0, 1]})
    headers = pd.DataFrame({"PatientID": ["a", "b", "c", "d"], "ViewPosition": ["AP", "AP", "PA", "PA"]})
    table = shortcut.positive_share_by_view(labels, headers)
    assert table.loc["AP"].tolist() == [2, 1, 0.5] and table.loc["PA"].tolist() == [2, 1, 0.5]
    with pytest.raises(ValueError, match="1 patients of the label table have no header row"):
        shortcut.positive_share_by_view(labels, headers.iloc[:3])


def test_evaluation_table_on_a_model_that_reads_brightness():
    # logit = 10 * (mean brightness in [0, 1] - 0.5) / 0.25: the model standardises its own input, so the
    # table must feed it x / 255 and nothing else (230 -> logit 16.1, 20 -> logit -16.9).
    model = nn.Sequential(
        InputStandardisation(0.5, 0.25), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 1)
    )
    with torch.no_grad():
        model[3].weight.fill_(10.0)
        model[3].bias.zero_()
    bright, dark = np.full((3, 8, 8), 230, np.uint8), np.full((3, 8, 8), 20, np.uint8)
    images, labels = np.concatenate([bright, dark]), np.array([1, 1, 1, 0, 0, 0])
    sets = {"both": (images, labels), "dark only": (dark, np.zeros(3, int))}
    table = shortcut.evaluation_table(model, sets, 0.5)
    assert list(table.index) == ["both", "dark only"] and table.index.name == "images"
    assert table.loc["both", ["roc_auc", "accuracy", "sensitivity", "specificity"]].tolist() == [1, 1, 1, 1]
    assert table.loc["both", "n"] == 6 and table.loc["both", "mean_p_positive"] > 0.99
    assert table.loc["both", "mean_p_negative"] < 0.01
    assert np.isnan(table.loc["dark only", "roc_auc"]) and np.isnan(table.loc["dark only", "mean_p_positive"])
    assert table.loc["dark only", "specificity"] == 1.0
    # The threshold is the one given: at 0 every image is called positive.
    lenient = shortcut.evaluation_table(model, sets, threshold=0.0)
    assert lenient.loc["both", ["sensitivity", "specificity", "accuracy"]].tolist() == [1.0, 0.0, 0.5]
    assert lenient.loc["both", "roc_auc"] == 1.0
