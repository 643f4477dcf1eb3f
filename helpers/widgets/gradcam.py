"""The Grad-CAM explorer of notebook 05: pick an image, a method, a layer, a class and the overlay opacity.

Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``. :func:`explain` computes one method's heatmaps and
:func:`draw_explanation` draws one image with its heatmap; the notebook's static figure calls the same two
functions, so what the widget shows and what a notebook read without a kernel shows never differ.
:func:`gradcam_explorer` wires them to ipywidgets controls (APIs common to ipywidgets 7.7 and 8.x).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from helpers.explain import cam, localisation
from helpers.explain.overlays import draw_boxes, show_overlay
from helpers.model_state import eval_mode
from helpers.widgets.figures import figure_output

METHODS = ("Grad-CAM", "Guided backprop", "Guided Grad-CAM")
TARGETS = (("pneumonia (target=1)", 1), ("normal (target=0)", 0))
EXPLORER_CLASS = "xai-gradcam-explorer"  # on the returned box, for browser tests


def explain(
    model: torch.nn.Module, x: torch.Tensor, method: str, layer: str = "layer4", target: int = 1
) -> np.ndarray:
    """Heatmaps of ``method`` (one of :data:`METHODS`) for images ``x`` (``B x C x H x W`` in [0, 1]; the
    model standardises them itself): ``B x H x W`` in [0, 1] (input gradients become ``|g|`` max over
    channels, see :func:`helpers.explain.localisation.to_heatmaps`). ``layer`` is ignored by guided
    backpropagation. Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    if method == "Grad-CAM":
        maps = cam.grad_cam(model, x, layer, target)
    elif method == "Guided backprop":
        maps = cam.guided_backprop(model, x, target)
    elif method == "Guided Grad-CAM":
        maps = cam.guided_grad_cam(model, x, layer, target)
    else:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    return localisation.to_heatmaps(maps)


def draw_explanation(
    image: Any,
    heatmap: Any,
    *,
    boxes: Any = None,
    alpha: float = 0.4,
    title: str = "Explanation",
    caption: str = "",
) -> Figure:
    """Two panels: the image with its boxes (left) and the heatmap blended over it with a colour bar (right).

    ``image`` and ``heatmap``: ``H x W``; ``boxes``: ``(x, y, w, h)`` in the image's pixels. ``caption`` goes
    under the panels (e.g. the predicted probability). Returns the Figure (not shown, not closed).
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 4.2), layout="constrained")
    left.imshow(np.asarray(image, dtype=float), cmap="gray")
    if boxes is not None:
        draw_boxes(left, boxes)
    left.set(xlabel="x (pixels)", ylabel="y (pixels)", title="image (green: annotated opacity)")
    show_overlay(right, image, heatmap, alpha=alpha, boxes=boxes, title=f"heatmap, opacity {alpha:.2f}")
    fig.suptitle(title)
    if caption:
        fig.supxlabel(caption, fontsize="small")
    return fig


def _describe(
    probability: float, method: str, layer: str, target: int, heatmap: np.ndarray, boxes: Any, map_side: str
) -> str:
    """The explorer's one-line summary (HTML)."""
    parts = [
        f"P(pneumonia) = {probability:.3f}",
        f"{method} of the {'pneumonia' if target == 1 else 'normal'} class",
        "all layers (input gradient)" if method == "Guided backprop" else f"{layer} ({map_side} map)",
    ]
    if boxes is not None and len(boxes):
        hit = localisation.pointing_game(heatmap[None], [boxes])[0]
        share = localisation.heat_share(heatmap[None], [boxes])[0]
        area = localisation.box_area_share([boxes], *heatmap.shape)[0]
        parts.append(f"pointing game {'hit' if hit >= 0.5 else 'miss'}")
        parts.append(f"heat in boxes {share:.0%} (box area {area:.0%})")
    return " | ".join(parts)


def gradcam_explorer(
    model: torch.nn.Module,
    images: Any,
    *,
    boxes_list: Sequence[Any] | None = None,
    titles: Sequence[str] | None = None,
    layers: Sequence[str] = ("layer1", "layer2", "layer3", "layer4"),
    layer: str = "layer4",
    method: str = "Grad-CAM",
    target: int = 1,
    alpha: float = 0.4,
):
    """An ``ipywidgets.VBox`` to explore the explanations of ``model`` on ``images``.

    ``images``: ``N x H x W`` uint8 (as in the store; the model gets them scaled to [0, 1]);
    ``boxes_list``: per image, ``(x, y, w, h)`` boxes in the images' pixels (or None). Controls: image,
    method (:data:`METHODS`), layer, target class, overlay opacity. Maps are computed once per choice and
    cached, so moving the opacity slider is instant. The returned box has ``controls`` (dict of the control
    widgets), ``info`` (the summary ``HTML``), ``output`` and ``state`` (the last heatmap and figure), for
    tests and for curious learners. Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """

    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images: expected N x H x W, got shape {images.shape}")
    n = len(images)
    titles = list(titles) if titles is not None else [f"image {i}" for i in range(n)]
    if boxes_list is not None and len(boxes_list) != n:
        raise ValueError(f"boxes_list: {len(boxes_list)} entries for {n} images")
    if layer not in layers or method not in METHODS:
        raise ValueError(
            f"layer {layer!r} must be one of {list(layers)} and method {method!r} one of {METHODS}"
        )
    device = next(model.parameters()).device
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    cache: dict[tuple, np.ndarray] = {}
    sides: dict[str, str] = {}
    state: dict[str, Any] = {}

    def tensor(i: int) -> torch.Tensor:
        x = torch.as_tensor(images[i : i + 1], dtype=torch.float32, device=device)[:, None]
        return x / scale

    def heatmap(i: int, meth: str, lay: str, tgt: int) -> np.ndarray:
        key = (i, meth, "-" if meth == "Guided backprop" else lay, tgt)
        if key not in cache:
            cache[key] = explain(model, tensor(i), meth, lay, tgt)[0]
        return cache[key]

    def map_side(lay: str) -> str:
        if lay not in sides:
            raw = cam.grad_cam(model, tensor(0), lay, upsample=False, normalize=False)
            sides[lay] = f"{raw.shape[-2]}x{raw.shape[-1]}"
        return sides[lay]

    probabilities: dict[int, float] = {}

    def probability(i: int) -> float:
        if i not in probabilities:
            with eval_mode(model), torch.no_grad():
                probabilities[i] = float(torch.sigmoid(model(tensor(i)).reshape(-1)[0]))
        return probabilities[i]

    image_dd = w.Dropdown(options=[(t, i) for i, t in enumerate(titles)], value=0, description="image")
    method_tb = w.ToggleButtons(options=list(METHODS), value=method, description="method")
    layer_dd = w.Dropdown(options=list(layers), value=layer, description="layer")
    target_tb = w.ToggleButtons(options=list(TARGETS), value=target, description="class")
    alpha_sl = w.FloatSlider(value=alpha, min=0.0, max=1.0, step=0.05, description="opacity")
    info = w.HTML()

    def draw() -> Figure:
        i, meth, lay, tgt = image_dd.value, method_tb.value, layer_dd.value, target_tb.value
        layer_dd.disabled = meth == "Guided backprop"
        heat = heatmap(i, meth, lay, tgt)
        boxes = boxes_list[i] if boxes_list is not None else None
        text = _describe(probability(i), meth, lay, tgt, heat, boxes, map_side(lay))
        info.value = f"<b>{titles[i]}</b>: {text}"
        where = "" if meth == "Guided backprop" else f" at {lay}"
        fig = draw_explanation(
            images[i], heat, boxes=boxes, alpha=alpha_sl.value, title=f"{meth}{where}: {titles[i]}"
        )
        state.update(heatmap=heat, figure=fig, text=text)
        return fig

    output = figure_output(draw)
    controls = {
        "image": image_dd,
        "method": method_tb,
        "layer": layer_dd,
        "target": target_tb,
        "alpha": alpha_sl,
    }
    for control in controls.values():
        control.observe(lambda change: output.refresh(), names="value")
    box = w.VBox([w.HBox([image_dd, layer_dd]), method_tb, target_tb, alpha_sl, info, output])
    box.add_class(EXPLORER_CLASS)
    box.controls, box.info, box.output, box.state = controls, info, output, state
    output.refresh()
    return box
