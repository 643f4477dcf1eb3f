"""helpers.explain.localisation: hand-made maps and boxes with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from helpers.explain import localisation as loc


def peak_map(height: int, width: int, *peaks: tuple[int, int]) -> np.ndarray:
    """A 1 x H x W map of zeros with 1.0 at each (row, col) peak."""
    heat = np.zeros((1, height, width))
    for row, col in peaks:
        heat[0, row, col] = 1.0
    return heat


# --- boxes ------------------------------------------------------------------------------------------


def test_boxes_to_mask_covers_integer_box_pixels_exactly():
    mask = loc.boxes_to_mask([(1, 2, 3, 2)], 5, 6)
    expected = np.zeros((5, 6), dtype=bool)
    expected[2:4, 1:4] = True
    assert mask.dtype == bool and mask.shape == (5, 6)
    np.testing.assert_array_equal(mask, expected)


def test_boxes_to_mask_uses_pixel_centres_unions_and_clips():
    # x in [0.6, 2.4): centres 0.5 (out), 1.5 (in), 2.5 (out) -> only column 1; rows centres 0.5, 1.5 in [0, 2)
    mask = loc.boxes_to_mask([(0.6, 0, 1.8, 2), (3, 3, 10, 10)], 4, 4)
    expected = np.zeros((4, 4), dtype=bool)
    expected[0:2, 1] = True
    expected[3, 3] = True
    np.testing.assert_array_equal(mask, expected)
    assert not loc.boxes_to_mask([], 3, 3).any()
    assert not loc.boxes_to_mask(None, 3, 3).any()


def test_bad_boxes_raise_clear_errors():
    with pytest.raises(ValueError, match=r"width and height must be >= 0"):
        loc.boxes_to_mask([(0, 0, -1, 2)], 4, 4)
    with pytest.raises(ValueError, match=r"expected a list of \(x, y, w, h\) boxes, got shape \(1, 3\)"):
        loc.boxes_to_mask([(0, 0, 1)], 4, 4)
    with pytest.raises(ValueError, match="NaN"):
        loc.boxes_to_mask([(np.nan, 0, 1, 1)], 4, 4)


def test_scale_boxes_from_dicom_to_map_pixels():
    assert loc.scale_boxes([(100, 200, 300, 400)], 1024, 256) == [(25.0, 50.0, 75.0, 100.0)]
    # (H, W) sizes: x and w follow the widths, y and h the heights
    assert loc.scale_boxes([(10, 10, 20, 20)], (100, 200), (50, 50)) == [(2.5, 5.0, 5.0, 10.0)]
    assert loc.scale_boxes([], 1024, 224) == []
    # the DICOM -> 224-pixel Grad-CAM overlay of notebook 05 (factor 7 / 32)
    assert loc.scale_boxes([(100, 200, 50, 40)], 1024, 224) == [(21.875, 43.75, 10.9375, 8.75)]
    # one box on its own (not in a list), a wide image made square
    assert loc.scale_boxes((40, 20, 8, 10), (200, 400), (100, 100)) == [(10.0, 10.0, 2.0, 5.0)]
    with pytest.raises(ValueError, match="from_size: expected a positive size"):
        loc.scale_boxes([(0, 0, 1, 1)], 0, 224)


def test_box_area_share_is_exact_and_counts_overlaps_once():
    boxes = [[(0, 0, 2, 2)], [(0, 0, 2, 2), (1, 1, 2, 2)], []]
    share = loc.box_area_share(boxes, 4, 4)
    np.testing.assert_allclose(share[:2], [4 / 16, 7 / 16])
    assert np.isnan(share[2])


# --- pointing game ----------------------------------------------------------------------------------


def test_pointing_game_hit_miss_and_no_box():
    maps = np.concatenate([peak_map(8, 8, (2, 3)), peak_map(8, 8, (7, 7)), peak_map(8, 8, (0, 0))])
    boxes = [[(2, 1, 3, 3)], [(0, 0, 2, 2), (5, 5, 2, 2)], []]  # hit; miss (7,7) is outside both; no box
    hits = loc.pointing_game(maps, boxes)
    np.testing.assert_array_equal(hits[:2], [1.0, 0.0])
    assert np.isnan(hits[2])


def test_pointing_game_accepts_torch_and_matches_numpy():
    maps = np.concatenate([peak_map(8, 8, (2, 3)), peak_map(8, 8, (7, 7))]).astype(np.float32)
    boxes = [[(2, 1, 3, 3)], [(0, 0, 2, 2)]]
    np.testing.assert_array_equal(
        loc.pointing_game(torch.from_numpy(maps), boxes), loc.pointing_game(maps, boxes)
    )


def test_pointing_game_ties():
    heat = peak_map(8, 8, (1, 1), (6, 6), (6, 7), (7, 7))  # four maxima, one inside the box
    boxes = [[(0, 0, 3, 3)]]
    assert loc.pointing_game(heat, boxes)[0] == 0.25
    assert loc.pointing_game(heat, boxes, ties="any")[0] == 1.0
    assert loc.pointing_game(heat, boxes, ties="all")[0] == 0.0
    # a constant map (all pixels tie) scores the box area: the "no information" value
    assert loc.pointing_game(np.ones((1, 8, 8)), boxes)[0] == 9 / 64
    with pytest.raises(ValueError, match="ties: expected one of"):
        loc.pointing_game(heat, boxes, ties="first")


def test_pointing_game_tolerance_in_pixels():
    heat = peak_map(10, 10, (2, 7))  # box covers columns 0..4: the peak is 3 pixels right of column 4
    boxes = [[(0, 0, 5, 5)]]
    assert loc.pointing_game(heat, boxes)[0] == 0.0
    assert loc.pointing_game(heat, boxes, tolerance=2.9)[0] == 0.0
    assert loc.pointing_game(heat, boxes, tolerance=3)[0] == 1.0


def test_maps_and_boxes_are_checked():
    with pytest.raises(ValueError, match=r"maps: expected a B x H x W batch of maps, got shape \(8, 8\)"):
        loc.pointing_game(np.zeros((8, 8)), [[(0, 0, 1, 1)]])
    with pytest.raises(ValueError, match=r"boxes_list: expected one list of boxes per map \(2\), got 1"):
        loc.heat_share(np.zeros((2, 8, 8)), [[(0, 0, 1, 1)]])
    with pytest.raises(ValueError, match="maps: contains NaN"):
        loc.heat_share(np.full((1, 4, 4), np.nan), [[(0, 0, 1, 1)]])


# --- heat share -------------------------------------------------------------------------------------


def test_heat_share_exact_on_a_constructed_map():
    heat = np.ones((1, 4, 4))
    heat[0, 1:3, 1:3] = 3.0  # 4 pixels of 3 inside the box, 12 pixels of 1 outside: 12 / 24
    boxes = [[(1, 1, 2, 2)]]
    assert loc.heat_share(heat, boxes)[0] == 0.5
    # an all-zero map has no information: it scores the box area
    assert loc.heat_share(np.zeros((1, 4, 4)), boxes)[0] == 0.25
    with pytest.raises(ValueError, match="non-negative maps"):
        loc.heat_share(-heat, boxes)


# --- IoU / IoBB -------------------------------------------------------------------------------------


def test_iou_and_iobb_of_a_thresholded_square_against_a_known_box():
    heat = np.zeros((1, 10, 10))
    heat[0, 2:6, 2:6] = 1.0  # 16 pixels, rows/cols 2..5
    heat[0, 3, 3] = 0.8  # still above the 0.5 threshold
    boxes = [[(4, 4, 4, 4)]]  # rows/cols 4..7: 16 pixels, overlap rows/cols 4..5 = 4 pixels
    for region in ("box", "mask"):
        table = loc.overlap_scores(heat, boxes, region=region, thresholds=(0.1, 0.2, 0.5))
        assert table.loc[0, "iou"] == pytest.approx(4 / 28)
        assert table.loc[0, "iobb"] == pytest.approx(4 / 16)
        assert table.loc[0, "hit_iou@0.1"] == 1.0 and table.loc[0, "hit_iou@0.2"] == 0.0
        assert table.loc[0, "hit_iobb@0.2"] == 1.0 and table.loc[0, "hit_iobb@0.5"] == 0.0


def test_box_region_takes_the_bounding_box_of_the_largest_blob_and_the_best_box():
    heat = np.zeros((2, 10, 10))
    heat[0, 0:4, 0] = 1.0  # an L-shaped blob of 7 pixels: bounding box rows 0..3, cols 0..3
    heat[0, 3, 0:4] = 1.0
    heat[0, 8, 8] = 1.0  # a small blob, dropped
    heat[1] = heat[0]
    boxes = [[(0, 0, 4, 4)], [(8, 8, 2, 2), (0, 0, 2, 4)]]  # image 1: best box is rows 0..3, cols 0..1
    box = loc.overlap_scores(heat, boxes, region="box")
    np.testing.assert_allclose(box["iou"], [1.0, 8 / 16])
    np.testing.assert_allclose(box["iobb"], [1.0, 8 / 16])
    mask = loc.overlap_scores(heat, boxes, region="mask")  # 8 mask pixels vs the union of boxes
    np.testing.assert_allclose(mask["iou"], [7 / (8 + 16 - 7), 6 / (8 + 12 - 6)])
    np.testing.assert_allclose(mask["iobb"], [7 / 8, 6 / 8])


def test_overlap_scores_without_boxes_and_bad_options():
    table = loc.overlap_scores(np.ones((1, 4, 4)), [[]])
    assert table.isna().all(axis=None)
    with pytest.raises(ValueError, match="region: expected one of"):
        loc.overlap_scores(np.ones((1, 4, 4)), [[(0, 0, 1, 1)]], region="blob")
    with pytest.raises(ValueError, match="frac: expected"):
        loc.overlap_scores(np.ones((1, 4, 4)), [[(0, 0, 1, 1)]], frac=1.5)


# --- baselines and report ---------------------------------------------------------------------------


def test_random_maps_are_seeded_normalised_and_cam_like():
    a = loc.random_maps(3, 32, 32, seed=5)
    assert a.shape == (3, 32, 32)
    np.testing.assert_array_equal(a, loc.random_maps(3, 32, 32, seed=5))
    assert not np.array_equal(a, loc.random_maps(3, 32, 32, seed=6))
    np.testing.assert_allclose(a.min(axis=(1, 2)), 0.0)
    np.testing.assert_allclose(a.max(axis=(1, 2)), 1.0)
    # smooth: neighbouring pixels differ far less than independent uniform noise (mean |diff| = 1/3)
    assert np.abs(np.diff(a, axis=2)).mean() < 0.1


def test_random_baseline_is_near_the_box_area():
    boxes = [[(4, 8, 12, 16)]] * 200  # 12 * 16 / (32 * 32) = 0.1875
    area = loc.box_area_share(boxes, 32, 32)[0]
    assert area == 0.1875
    assert loc.heat_share(loc.random_maps(200, 32, 32, seed=0), boxes).mean() == pytest.approx(area, abs=0.02)
    # pixel-level noise (grid = map size): every pixel is equally likely to hold the maximum
    pointing = loc.pointing_game(loc.random_maps(200, 32, 32, grid=32, seed=0), boxes).mean()
    assert pointing == pytest.approx(area, abs=0.06)


def test_localisation_report_rows_and_exact_baselines():
    maps = np.concatenate([peak_map(16, 16, (3, 3)), peak_map(16, 16, (12, 12)), peak_map(16, 16, (0, 0))])
    boxes = [[(2, 2, 4, 4)], [(0, 0, 8, 8)], []]
    report = loc.localisation_report(maps, boxes, seed=3, draws=4, grid=4, name="Grad-CAM")
    assert list(report.index) == ["Grad-CAM", "random", "box area"]
    assert report.index.name == "maps"
    assert list(report.columns[:4]) == ["pointing_game", "heat_share", "iou", "iobb"]
    assert {"hit_iou@0.5", "hit_iobb@0.1", "n_images"} <= set(report.columns)
    assert (report["n_images"] == 2).all()
    assert report.loc["Grad-CAM", "pointing_game"] == 0.5
    assert report.loc["Grad-CAM", "heat_share"] == 0.5
    box_area = np.mean([16 / 256, 64 / 256])
    assert report.loc["box area", "pointing_game"] == pytest.approx(box_area)
    assert report.loc["box area", "heat_share"] == pytest.approx(box_area)
    again = loc.localisation_report(maps, boxes, seed=3, draws=4, grid=4, name="Grad-CAM")
    pd.testing.assert_frame_equal(report, again)
    other = loc.localisation_report(maps, boxes, seed=4, draws=4, grid=4, name="Grad-CAM")
    assert not report.loc["random"].equals(other.loc["random"])


def test_localisation_scores_match_the_single_scores():
    maps = loc.random_maps(4, 16, 16, seed=1)
    boxes = [[(2, 2, 6, 6)], [(8, 0, 8, 8)], [(0, 8, 4, 8)], [(4, 4, 8, 8), (0, 0, 2, 2)]]
    table = loc.localisation_scores(maps, boxes, tolerance=1.5)
    np.testing.assert_array_equal(table["pointing_game"], loc.pointing_game(maps, boxes, tolerance=1.5))
    np.testing.assert_array_equal(table["heat_share"], loc.heat_share(maps, boxes))
    pd.testing.assert_series_equal(table["iou"], loc.overlap_scores(maps, boxes)["iou"])


def test_to_heatmaps_reduces_channels_by_abs_max_and_normalises():
    gradients = np.zeros((2, 3, 2, 2))
    gradients[0, 1, 0, 0] = -4.0  # a strong negative gradient counts as much as a positive one
    gradients[0, 2, 1, 1] = 2.0
    heat = loc.to_heatmaps(torch.from_numpy(gradients))
    assert heat.shape == (2, 2, 2)
    np.testing.assert_allclose(heat[0], [[1.0, 0.0], [0.0, 0.5]])
    np.testing.assert_array_equal(heat[1], np.zeros((2, 2)))  # a constant map becomes zeros, not NaN
    maps = np.array([[[1.0, 3.0], [2.0, 5.0]]])
    np.testing.assert_allclose(loc.to_heatmaps(maps)[0], [[0.0, 0.5], [0.25, 1.0]])
    with pytest.raises(ValueError, match="B x H x W"):
        loc.to_heatmaps(np.zeros((2, 2)))
