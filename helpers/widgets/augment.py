"""The augmentation explorer of notebook 01: sliders for rotation, shift and zoom that redraw a radiograph
through :class:`helpers.xray.augment.GpuAugment` (the same ``apply`` the training loop uses).

Taught in ``notebooks/01_data_preparation.ipynb``. :func:`plot_augmentations` draws the static figure that
the notebook shows first; :func:`augment_explorer` is the interactive version. Works with ipywidgets 7.7
and 8.x (see ``helpers.widgets``). The read-out is an ``ipywidgets.HTML`` with the CSS class
``xai-augment-readout`` and one ``<span data-param="...">`` per number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np
import torch

from helpers.widgets.figures import figure_output
from helpers.xray.augment import AffineParams, GpuAugment
from helpers.xray.plots import plot_image_row

READOUT_CLASS = "xai-augment-readout"
EXPLORER_CLASS = "xai-augment-explorer"  # on the returned box, for browser tests
#: Slider limits: wider than the training ranges, so that a learner can see what too much looks like.
LIMITS = {"angle_deg": (-30.0, 30.0, 1.0), "shift_x": (-0.25, 0.25, 0.01), "shift_y": (-0.25, 0.25, 0.01),
          "scale": (0.7, 1.3, 0.01)}  # fmt: skip
PARAM_NAMES = ("angle_deg", "shift_x", "shift_y", "scale")


def single_params(
    angle_deg: float = 0.0, shift_x: float = 0.0, shift_y: float = 0.0, scale: float = 1.0, flip: bool = False
) -> AffineParams:
    """:class:`helpers.xray.augment.AffineParams` for ONE image (tensors of shape (1,)); see its docstring for
    the meaning and units (degrees counter-clockwise; shifts as fractions of the size; zoom > 1 enlarges)."""

    def t(value: float) -> torch.Tensor:
        return torch.tensor([float(value)])

    return AffineParams(t(angle_deg), t(shift_x), t(shift_y), t(scale), t(float(flip)))


def augment_image(image: Any, params: AffineParams, augment: GpuAugment | None = None) -> np.ndarray:
    """One H x W image (uint8 0-255 or float 0-1) through ``augment.apply`` -> float32 H x W in [0, 1].

    ``params``: parameters for one image (:func:`single_params`). Border filled as ``augment`` says
    (default :class:`GpuAugment`: zeros, i.e. black). Taught in ``notebooks/01_data_preparation.ipynb``.
    """
    values = np.asarray(image)
    if values.ndim != 2:
        raise ValueError(f"augment_image expects one H x W image, got shape {values.shape}")
    x = torch.from_numpy(values.astype(np.float32) / (255.0 if values.dtype == np.uint8 else 1.0))
    out = (augment or GpuAugment()).apply(x[None, None], params)
    return out[0, 0].clamp(0, 1).numpy()


def plot_augmentations(
    image: Any,
    variants: Mapping[str, Mapping[str, float] | str],
    *,
    augment: GpuAugment | None = None,
    title: str = "The same radiograph, augmented",
):
    """Static figure: ``image`` under each of ``variants`` (title -> keyword arguments of
    :func:`single_params`, or the string ``"vertical flip"`` for an upside-down copy, which
    :class:`GpuAugment` never makes). Returns the matplotlib Figure. Taught in
    ``notebooks/01_data_preparation.ipynb``.
    """

    shown = {}
    for name, spec in variants.items():
        if spec == "vertical flip":
            values = np.asarray(image, dtype=np.float32)
            shown[name] = np.flipud(values / 255.0 if np.asarray(image).dtype == np.uint8 else values)
        elif isinstance(spec, Mapping):
            shown[name] = augment_image(image, single_params(**spec), augment)
        else:
            raise ValueError(f"variant {name!r}: expected parameters or 'vertical flip', got {spec!r}")
    return plot_image_row(shown, title=title)


def _describe(values: dict[str, float], augment: GpuAugment, size: tuple[int, int]) -> str:
    """The read-out: each parameter (with pixels for the shifts) and whether it is inside training range."""
    h, w = size
    inside = {
        "angle_deg": abs(values["angle_deg"]) <= augment.rotation + 1e-9,
        "shift_x": abs(values["shift_x"]) <= augment.translate + 1e-9,
        "shift_y": abs(values["shift_y"]) <= augment.translate + 1e-9,
        "scale": augment.scale[0] - 1e-9 <= values["scale"] <= augment.scale[1] + 1e-9,
    }
    text = {
        "angle_deg": f"{values['angle_deg']:+.0f}&deg;",
        "shift_x": f"{values['shift_x']:+.2f} ({values['shift_x'] * w:+.1f} px)",
        "shift_y": f"{values['shift_y']:+.2f} ({values['shift_y'] * h:+.1f} px)",
        "scale": f"{values['scale']:.2f}",
    }
    labels = {"angle_deg": "rotation", "shift_x": "shift x", "shift_y": "shift y", "scale": "zoom"}
    parts = []
    for name in PARAM_NAMES:
        style = "" if inside[name] else ' style="color:#c0392b"'
        parts.append(f'{labels[name]} <b{style}><span data-param="{name}">{text[name]}</span></b>')
    verdict = "inside" if all(inside.values()) else "OUTSIDE"
    ranges = (
        f"&plusmn;{augment.rotation:g}&deg;, shifts &plusmn;{augment.translate:g}, "
        f"zoom {augment.scale[0]:g}-{augment.scale[1]:g}"
    )
    return (
        f'<div class="{READOUT_CLASS}">{" &middot; ".join(parts)}<br>'
        f'<span data-param="verdict">{verdict}</span> the training ranges ({ranges})</div>'
    )


def augment_explorer(image: Any, *, augment: GpuAugment | None = None, title: str = ""):
    """An ``ipywidgets.VBox``: sliders for rotation (degrees), shift x and y (fractions of the size) and
    zoom, a read-out that flags values outside ``augment``'s training ranges, and a figure (original,
    augmented, difference) redrawn when a slider moves.

    ``image``: H x W, uint8 or float in [0, 1]. The box carries ``.sliders`` (dict by parameter name:
    ``angle_deg``, ``shift_x``, ``shift_y``, ``scale``), ``.readout``, ``.figure`` (the Output),
    ``.values()`` (the current parameters), ``.augmented()`` (the current image, float32 H x W) and
    ``.last_figure`` (the matplotlib Figure last drawn). Taught in ``notebooks/01_data_preparation.ipynb``.
    """

    augment = augment or GpuAugment()
    values = np.asarray(image)
    if values.ndim != 2:
        raise ValueError(f"augment_explorer expects one H x W image, got shape {values.shape}")
    original = values.astype(np.float32) / (255.0 if values.dtype == np.uint8 else 1.0)
    descriptions = {"angle_deg": "rotation (°)", "shift_x": "shift x", "shift_y": "shift y", "scale": "zoom"}
    sliders = {}
    for name in PARAM_NAMES:
        low, high, step = LIMITS[name]
        sliders[name] = w.FloatSlider(
            value=1.0 if name == "scale" else 0.0,
            min=low,
            max=high,
            step=step,
            description=descriptions[name],
            continuous_update=False,
            readout_format=".0f" if name == "angle_deg" else ".2f",
            style={"description_width": "80px"},
            layout=w.Layout(width="360px"),
        )
    readout = w.HTML()
    readout.add_class(READOUT_CLASS)
    box = w.VBox()
    box.add_class(EXPLORER_CLASS)

    def current_values() -> dict[str, float]:
        return {name: float(slider.value) for name, slider in sliders.items()}

    def augmented() -> np.ndarray:
        return augment_image(original, single_params(**current_values()), augment)

    def draw():
        out = augmented()
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.9))
        for ax, shown, name in zip(axes[:2], (original, out), ("original", "augmented"), strict=True):
            im = ax.imshow(shown, cmap="gray", vmin=0, vmax=1)
            ax.set(title=name, xlabel="x (pixels)", ylabel="y (pixels)")
        fig.colorbar(im, ax=list(axes[:2]), label="intensity (0-1)", shrink=0.85)
        diff = axes[2].imshow(out - original, cmap="coolwarm", vmin=-1, vmax=1)
        axes[2].set(title="augmented - original", xlabel="x (pixels)", ylabel="y (pixels)")
        fig.colorbar(diff, ax=axes[2], label="intensity change", shrink=0.85)
        v = current_values()
        fig.suptitle(
            f"{title} rotation {v['angle_deg']:+.0f}°, shift ({v['shift_x']:+.2f}, {v['shift_y']:+.2f}), "
            f"zoom {v['scale']:.2f}".strip()
        )
        box.last_figure = fig
        return fig

    figure = figure_output(draw)

    def update(change: Any = None) -> None:
        readout.value = _describe(current_values(), augment, original.shape)
        figure.refresh()

    for slider in sliders.values():
        slider.observe(update, names="value")
    note = w.HTML(
        "<small>No vertical flip: an upside-down chest film never occurs (see the static figure).</small>"
    )
    box.children = [w.HBox([sliders["angle_deg"], sliders["scale"]]),
                    w.HBox([sliders["shift_x"], sliders["shift_y"]]), readout, note, figure]  # fmt: skip
    box.sliders, box.readout, box.figure = sliders, readout, figure
    box.values, box.augmented = current_values, augmented
    update()
    return box
