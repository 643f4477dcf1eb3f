"""Tests of helpers.explain.overlays: blended values, the colour bar, boxes on pixel edges, galleries."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from helpers.explain import overlays  # noqa: E402
from helpers.explain.localisation import scale_boxes  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_plt_show")  # tests/conftest.py: no plt.show(), figures closed


def test_overlay_shape_range_and_blend():
    image = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    heat = np.linspace(0, 5, 12).reshape(3, 4)
    rgb = overlays.overlay(image, heat, alpha=0.4)
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.float32
    assert rgb.min() >= 0 and rgb.max() <= 1
    grey = (image - image.min()) / np.ptp(image)
    np.testing.assert_allclose(
        overlays.overlay(image, heat, alpha=0.0), np.repeat(grey[..., None], 3, -1), atol=1e-6
    )
    jet = colormaps["jet"](heat / 5)[..., :3]
    np.testing.assert_allclose(overlays.overlay(image, heat, alpha=1.0), jet, atol=1e-6)
    np.testing.assert_allclose(rgb, 0.6 * grey[..., None] + 0.4 * jet, atol=1e-6)


def test_overlay_resizes_small_heatmaps_and_rejects_bad_input():
    rgb = overlays.overlay(np.zeros((32, 48)), np.arange(4.0).reshape(2, 2), alpha=1.0)
    assert rgb.shape == (32, 48, 3)
    np.testing.assert_allclose(
        rgb[0, 0], colormaps["jet"](0.0)[:3], atol=1e-6
    )  # corners keep the corner value
    np.testing.assert_allclose(rgb[-1, -1], colormaps["jet"](1.0)[:3], atol=1e-6)
    assert (
        overlays.overlay(np.ones((4, 4)), np.ones((4, 4))).max() <= 1
    )  # constant inputs do not divide by zero
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        overlays.overlay(np.zeros((4, 4)), np.zeros((4, 4)), alpha=1.5)
    with pytest.raises(ValueError, match=r"heatmap must be H x W .* got shape \(2, 4, 4\)"):
        overlays.overlay(np.zeros((4, 4)), np.zeros((2, 4, 4)))


def test_show_overlay_colour_bar_boxes_and_labels():
    ax = overlays.show_overlay(
        None, np.zeros((16, 16)), np.eye(16), boxes=[(2, 3, 4, 5), (8, 8, 2, 2)], title="Grad-CAM"
    )
    (colour_bar_ax,) = [a for a in ax.figure.axes if a is not ax]
    assert colour_bar_ax.get_ylabel() == overlays.RELEVANCE_LABEL == "relevance (normalised)"
    assert len(ax.images) == 1 and len(ax.patches) == 2
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("Grad-CAM", "x (pixels)", "y (pixels)")


def test_draw_boxes_along_pixel_edges():
    _, ax = plt.subplots()
    (rect,) = overlays.draw_boxes(ax, [(10, 20, 5, 6)])
    assert isinstance(rect, Rectangle)
    assert rect.get_xy() == (9.5, 19.5) and (rect.get_width(), rect.get_height()) == (5, 6)
    assert overlays.draw_boxes(ax, []) == [] and len(ax.patches) == 1  # a negative patient: no boxes
    with pytest.raises(ValueError, match=r"expected \(x, y, w, h\) boxes, got shape \(1, 3\)"):
        overlays.draw_boxes(ax, [(1, 2, 3)])


def test_a_dicom_box_scaled_to_the_overlay_is_drawn_on_its_pixels():
    # An RSNA box in the 1024-pixel DICOM, shown on a 224-pixel Grad-CAM overlay (the notebook's recipe).
    boxes = scale_boxes([(100, 200, 50, 40)], 1024, 224)
    ax = overlays.show_overlay(None, np.zeros((224, 224)), np.eye(7), boxes=boxes, colorbar=False)
    (rect,) = ax.patches
    assert rect.get_xy() == (21.875 - 0.5, 43.75 - 0.5)
    assert (rect.get_width(), rect.get_height()) == (10.9375, 8.75)
    assert len(ax.figure.axes) == 1  # colorbar=False: no colour bar
    assert ax.images[0].get_array().shape == (224, 224, 3)  # the 7 x 7 map resized to the image


def test_gallery_grid_titles_boxes_and_colour_bar():
    images = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8), dtype=np.uint8)
    heat = [np.eye(8)] * 4 + [None]
    fig = overlays.plot_gallery(
        images, titles=list("abcde"), boxes=[[(1, 1, 3, 3)]] * 5, heatmaps=heat, ncols=3
    )
    tiles, colour_bars = fig.axes[:6], fig.axes[6:]
    assert [t.get_title() for t in tiles[:5]] == list("abcde")
    assert [len(t.patches) for t in tiles[:5]] == [1] * 5
    assert not tiles[5].axison  # the spare tile is blank
    assert len(colour_bars) == 1 and colour_bars[0].get_ylabel() == overlays.RELEVANCE_LABEL
    assert tiles[4].images[0].get_array().ndim == 2  # no heatmap: the grey image itself
    assert fig.get_suptitle() == "Images"
    _, given = plt.subplots(1, 2)
    plain = overlays.plot_gallery(images[:2], ax=given, title="Two")
    assert plain is given[0].figure and len(plain.axes) == 2  # no heatmaps, no colour bar
    with pytest.raises(ValueError, match="3 titles for 5 images"):
        overlays.plot_gallery(images, titles=["a", "b", "c"])
