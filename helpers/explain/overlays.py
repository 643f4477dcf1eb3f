"""Heatmaps over images: blending, overlays with boxes and a colour bar, galleries.

Taught in ``notebooks/04_cam_math.ipynb`` and ``notebooks/05_gradcam_guided_backprop.ipynb`` (the galleries also in
01 and 03). Every function draws on ``ax`` when one is given (a new figure otherwise), labels the axes with their
units and adds a colour bar where colour carries meaning. Nothing calls ``plt.show()``. The explanation code
(:mod:`helpers.explain.cam` ...) never imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

RELEVANCE_LABEL = "relevance (normalised)"


def _new_axes(ax: Axes | None, figsize: tuple[float, float] = (5.0, 4.5)) -> Axes:
    return plt.subplots(figsize=figsize)[1] if ax is None else ax


def draw_boxes(ax: Axes, boxes: Any, *, color: str = "lime", linewidth: float = 1.5) -> list[Rectangle]:
    """Draw boxes ``(x, y, w, h)`` given in the displayed image's pixels (x, y = top-left corner).

    A box covers pixels x .. x + w - 1 (the convention of :mod:`helpers.explain.localisation`), so its rectangle
    runs along the pixel edges: ``imshow`` centres pixel i on coordinate i. Returns the Rectangle patches.
    """
    arr = np.asarray([] if boxes is None else boxes, dtype=float)
    if arr.size == 0:
        return []
    arr = np.atleast_2d(arr)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes: expected (x, y, w, h) boxes, got shape {np.shape(boxes)}")
    return [
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor=color, linewidth=linewidth))
        for x, y, w, h in arr
    ]


def _unit_range(values: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1]; a constant array becomes all zeros."""
    span = np.ptp(values)
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def _as_2d(array: Any, what: str) -> np.ndarray:
    values = np.asarray(array, dtype=np.float64).squeeze()
    if values.ndim != 2:
        raise ValueError(f"{what} must be H x W (a single channel), got shape {np.shape(array)}")
    return values


def overlay(image: Any, heatmap: Any, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
    """Blend a heatmap over a grey image: float32 RGB H x W x 3 in [0, 1].

    ``image`` H x W (any range, min-max scaled); ``heatmap`` h x w (min-max scaled to [0, 1] and resized
    bilinearly to H x W when its size differs, e.g. a 7 x 7 Grad-CAM). Result = (1 - alpha) * grey + alpha *
    cmap(heat). Taught in ``notebooks/04_cam_math.ipynb``.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    grey, heat = _unit_range(_as_2d(image, "image")), _as_2d(heatmap, "heatmap")
    if heat.shape != grey.shape:
        resized = F.interpolate(
            torch.from_numpy(heat)[None, None], size=grey.shape, mode="bilinear", align_corners=False
        )
        heat = resized[0, 0].numpy()
    colours = colormaps[cmap](_unit_range(heat))[..., :3]
    return ((1 - alpha) * grey[..., None] + alpha * colours).astype(np.float32)


def _relevance_colorbar(fig: Figure, ax: Axes | Sequence[Axes], cmap: str) -> None:
    fig.colorbar(ScalarMappable(Normalize(0, 1), cmap=cmap), ax=ax, label=RELEVANCE_LABEL, shrink=0.85)


def show_overlay(
    ax: Axes | None,
    image: Any,
    heatmap: Any,
    *,
    alpha: float = 0.4,
    cmap: str = "jet",
    boxes: Any = None,
    title: str = "Heatmap overlay",
    colorbar: bool = True,
) -> Axes:
    """Draw :func:`overlay` on ``ax`` with pixel axes, optional boxes (displayed pixels) and a colour bar
    labelled 'relevance (normalised)'. Taught in ``notebooks/04_cam_math.ipynb``."""
    ax = _new_axes(ax)
    ax.imshow(overlay(image, heatmap, alpha, cmap))
    if boxes is not None:
        draw_boxes(ax, boxes)
    if colorbar:
        _relevance_colorbar(ax.figure, ax, cmap)
    ax.set(xlabel="x (pixels)", ylabel="y (pixels)", title=title)
    return ax


def plot_gallery(
    images: Sequence[Any],
    *,
    titles: Sequence[str] | None = None,
    boxes: Sequence[Any] | None = None,
    heatmaps: Sequence[Any] | None = None,
    ncols: int = 4,
    alpha: float = 0.4,
    cmap: str = "jet",
    title: str = "Images",
    ax: Sequence[Axes] | None = None,
) -> Figure:
    """A grid of images (N x H x W array or list of H x W) with a title each, optional boxes per image
    (``(x, y, w, h)`` in the displayed pixels, see :func:`helpers.explain.localisation.scale_boxes`) and optional heatmaps blended with
    :func:`overlay` (one shared 'relevance (normalised)' colour bar). Pixel ticks are hidden to keep the
    tiles large. ``ax``: at least N Axes to draw on. Taught in ``notebooks/03_evaluation.ipynb``.
    """
    n = len(images)
    for name, per_image in (("titles", titles), ("boxes", boxes), ("heatmaps", heatmaps)):
        if per_image is not None and len(per_image) != n:
            raise ValueError(f"plot_gallery: {len(per_image)} {name} for {n} images")
    if ax is None:
        nrows = max(1, -(-n // ncols))
        fig, grid = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.8 * nrows), squeeze=False)
        tiles = list(grid.ravel())
    else:
        tiles = list(np.ravel(ax))
        if len(tiles) < n:
            raise ValueError(f"plot_gallery: {len(tiles)} Axes given for {n} images")
        fig = tiles[0].figure
    for i, tile in enumerate(tiles):
        if i >= n:
            tile.axis("off")
            continue
        if heatmaps is not None and heatmaps[i] is not None:
            tile.imshow(overlay(images[i], heatmaps[i], alpha, cmap))
        else:
            tile.imshow(_as_2d(images[i], "image"), cmap="gray")
        if boxes is not None and boxes[i] is not None:
            draw_boxes(tile, boxes[i])
        tile.set_title(titles[i] if titles is not None else f"image {i}", fontsize="small")
        tile.set_xticks([])
        tile.set_yticks([])
    if heatmaps is not None and any(h is not None for h in heatmaps):
        _relevance_colorbar(fig, tiles[:n], cmap)
    fig.suptitle(title)
    return fig
