"""Tests of helpers.widgets.augment: moving a slider changes the read-out, the image and the figure."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import ipywidgets as w  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers.widgets import augment as A  # noqa: E402
from helpers.xray.augment import GpuAugment  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def bar_image(size: int = 32) -> np.ndarray:
    """A uint8 image with a bright vertical bar left of centre: any rotation or shift moves it."""
    image = np.zeros((size, size), np.uint8)
    image[4:-4, size // 4 : size // 4 + 4] = 255
    return image


def readout_values(html: str) -> dict[str, str]:
    return dict(re.findall(r'<span data-param="(\w+)">([^<]*)</span>', html))


def test_augment_image_identity_and_shift():
    image = bar_image()
    same = A.augment_image(image, A.single_params())
    assert same.dtype == np.float32 and same.shape == image.shape
    np.testing.assert_allclose(same, image / 255.0, atol=1e-5)
    shifted = A.augment_image(image, A.single_params(shift_x=0.25))  # 8 pixels to the right
    np.testing.assert_allclose(shifted[4:-4, 8 + 8 : 12 + 8], 1.0, atol=1e-5, err_msg="bar moved 8 px right")
    assert shifted[:, :8].max() == 0.0  # uncovered border is black (zeros)
    with pytest.raises(ValueError, match="one H x W image"):
        A.augment_image(np.zeros((2, 4, 4)), A.single_params())


def test_explorer_starts_at_identity_inside_training_ranges():
    image = bar_image()
    box = A.augment_explorer(image, title="bar")
    assert isinstance(box, w.VBox) and box.readout in box.children and box.figure in box.children
    assert set(box.sliders) == {"angle_deg", "shift_x", "shift_y", "scale"}
    assert A.READOUT_CLASS in box.readout._dom_classes
    assert A.EXPLORER_CLASS in box._dom_classes  # the browser test finds the explorer by it
    values = readout_values(box.readout.value)
    assert values["angle_deg"] == "+0&deg;" and values["scale"] == "1.00" and values["verdict"] == "inside"
    np.testing.assert_allclose(box.augmented(), image / 255.0, atol=1e-5)
    assert box.last_figure._suptitle.get_text() == "bar rotation +0°, shift (+0.00, +0.00), zoom 1.00"
    assert [ax.get_title() for ax in box.last_figure.axes[:3]] == [
        "original",
        "augmented",
        "augmented - original",
    ]


def test_moving_sliders_updates_readout_image_and_figure():
    image = bar_image()
    box = A.augment_explorer(image)
    before, first_figure = box.augmented(), box.last_figure
    box.sliders["angle_deg"].value = 20.0  # beyond the default +-10 degrees
    values = readout_values(box.readout.value)
    assert values["angle_deg"] == "+20&deg;" and values["verdict"] == "OUTSIDE"
    assert 'color:#c0392b"><span data-param="angle_deg"' in box.readout.value  # flagged in red
    assert box.last_figure is not first_figure
    assert "rotation +20°" in box.last_figure._suptitle.get_text()
    rotated = box.augmented()
    assert np.abs(rotated - before).max() > 0.5
    expected = A.augment_image(image, A.single_params(angle_deg=20.0))
    np.testing.assert_allclose(rotated, expected, atol=1e-6)
    # the augmented panel shows the new image
    np.testing.assert_allclose(box.last_figure.axes[1].images[0].get_array(), expected, atol=1e-6)

    box.sliders["angle_deg"].value = 5.0
    box.sliders["shift_y"].value = -0.25  # -8 px for 32 px
    values = readout_values(box.readout.value)
    assert values["shift_y"] == "-0.25 (-8.0 px)" and values["verdict"] == "OUTSIDE"
    box.sliders["shift_y"].value = 0.1
    box.sliders["scale"].value = 1.05
    assert readout_values(box.readout.value)["verdict"] == "inside"
    assert box.values() == pytest.approx({"angle_deg": 5.0, "shift_x": 0.0, "shift_y": 0.1, "scale": 1.05})


def test_training_ranges_come_from_the_augment_given():
    box = A.augment_explorer(bar_image(), augment=GpuAugment(rotation=30.0))
    box.sliders["angle_deg"].value = 20.0
    assert readout_values(box.readout.value)["verdict"] == "inside"
    assert "&plusmn;30&deg;" in box.readout.value


def test_static_figure_shows_each_variant_and_an_upside_down_copy():
    image = bar_image()
    fig = A.plot_augmentations(
        image, {"original": {}, "rotated 10°": {"angle_deg": 10}, "upside down": "vertical flip"}, title="t"
    )
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == ["original", "rotated 10°", "upside down"]
    flipped = fig.axes[2].images[0].get_array()
    np.testing.assert_allclose(flipped, np.flipud(image / 255.0), atol=1e-6)
    assert fig._suptitle.get_text() == "t"
    with pytest.raises(ValueError, match="expected parameters"):
        A.plot_augmentations(image, {"bad": "mirror"})
