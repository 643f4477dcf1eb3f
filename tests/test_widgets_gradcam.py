"""helpers.widgets.gradcam: the explorer builds, its controls recompute the map and redraw the figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

pytest.importorskip("ipywidgets")  # before helpers.widgets, which imports it

from helpers.training.models import resnet18_xray  # noqa: E402
from helpers.widgets import gradcam  # noqa: E402


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """The course's model, random weights, with its own input standardisation (not the identity)."""
    torch.manual_seed(0)
    return resnet18_xray(mean=0.5, std=0.25).eval()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(3, 64, 64), dtype=np.uint8)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def overlay_pixels(fig) -> np.ndarray:
    return np.asarray(fig.axes[1].images[0].get_array()).copy()


def test_explain_gives_normalised_maps_for_every_method(model):
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))  # images in [0, 1]
    for method in gradcam.METHODS:
        maps = gradcam.explain(model, x, method, "layer3", 1)
        assert maps.shape == (2, 64, 64) and maps.min() >= 0 and maps.max() <= 1
    with pytest.raises(ValueError, match="method: expected one of"):
        gradcam.explain(model, x, "LIME")


def test_static_figure_has_titles_labels_and_a_colour_bar(images):
    heat = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    fig = gradcam.draw_explanation(images[0], heat, boxes=[(8, 8, 16, 16)], title="static", caption="p = 0.5")
    assert fig._suptitle.get_text() == "static"
    assert len(fig.axes) == 3  # two panels and the colour bar
    assert fig.axes[2].get_ylabel() == "relevance (normalised)"
    assert fig.axes[0].get_xlabel() == "x (pixels)" and fig.axes[1].get_ylabel() == "y (pixels)"


def test_explorer_controls_change_the_text_and_the_figure(model, images):
    boxes = [[(8, 8, 20, 20)], [], None]
    box = gradcam.gradcam_explorer(model, images, boxes_list=boxes, titles=["a", "b", "c"], layer="layer4")
    controls, state = box.controls, box.state
    assert set(controls) == {"image", "method", "layer", "target", "alpha"}
    assert gradcam.EXPLORER_CLASS in box._dom_classes  # the browser test finds the explorer by it
    first_text, first_pixels = box.info.value, overlay_pixels(state["figure"])
    assert "<b>a</b>" in first_text and "layer4 (2x2 map)" in first_text and "heat in boxes" in first_text

    controls["layer"].value = "layer2"
    assert "layer2 (8x8 map)" in box.info.value
    assert not np.array_equal(overlay_pixels(state["figure"]), first_pixels)

    heat_before = state["heatmap"]
    controls["alpha"].value = 0.9
    assert state["heatmap"] is heat_before  # cached: the opacity only redraws
    assert "opacity 0.90" in state["figure"].axes[1].get_title()

    controls["target"].value = 0
    assert "normal class" in box.info.value

    controls["method"].value = "Guided backprop"
    assert controls["layer"].disabled and "input gradient" in box.info.value

    controls["image"].value = 2  # no boxes: no localisation scores
    assert "<b>c</b>" in box.info.value and "pointing game" not in box.info.value


def test_explorer_feeds_the_model_the_images_scaled_to_unit_range(model, images):
    """No mean/std in the explorer: uint8 images / 255 go in, and the model standardises them itself."""
    box = gradcam.gradcam_explorer(model, images, layer="layer3")
    box.controls["image"].value = 1
    x = torch.from_numpy(images[1:2]).float()[:, None] / 255
    assert box.state["heatmap"].max() == 1.0  # a map, not all zeros: the comparisons below mean something
    np.testing.assert_allclose(
        box.state["heatmap"], gradcam.explain(model, x, "Grad-CAM", "layer3")[0], atol=1e-6
    )
    with torch.no_grad():
        probability = float(torch.sigmoid(model(x))[0, 0])
    assert box.state["text"].startswith(f"P(pneumonia) = {probability:.3f} |")
    box.controls["method"].value = "Guided backprop"  # an input gradient: in [0, 1] image space
    np.testing.assert_allclose(
        box.state["heatmap"], gradcam.explain(model, x, "Guided backprop")[0], atol=1e-6
    )
    floats = gradcam.gradcam_explorer(model, images.astype(np.float32) / 255, layer="layer3")
    floats.controls["image"].value = 1  # float images are taken as already in [0, 1]
    np.testing.assert_allclose(
        floats.state["heatmap"], gradcam.explain(model, x, "Grad-CAM", "layer3")[0], atol=1e-6
    )
    assert floats.state["text"].startswith(f"P(pneumonia) = {probability:.3f} |")


def test_explorer_leaves_the_model_as_it_was(model, images):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    model.layer2.eval()  # a mix of modes must come back as it was, module by module
    modes = [m.training for m in model.modules()]
    try:
        box = gradcam.gradcam_explorer(model, images)
        box.controls["method"].value = "Guided Grad-CAM"
        box.controls["image"].value = 2  # a new probability too
        assert [m.training for m in model.modules()] == modes
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()


def test_explorer_checks_its_inputs(model, images):
    with pytest.raises(ValueError, match="N x H x W"):
        gradcam.gradcam_explorer(model, images[0])
    with pytest.raises(ValueError, match="boxes_list: 1 entries for 3 images"):
        gradcam.gradcam_explorer(model, images, boxes_list=[None])
    with pytest.raises(TypeError, match="mean"):  # the model standardises its input: no mean/std here
        gradcam.gradcam_explorer(model, images, mean=0.5, std=0.25)
