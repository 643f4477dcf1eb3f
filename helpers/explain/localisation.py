"""Scoring where an explanation map puts its heat against annotated boxes (the RSNA opacities).

Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``. Every score is batched: ``maps`` is a
``B x H x W`` torch tensor or numpy array (any real dtype; Grad-CAM output fits as is), and
``boxes_list`` holds, for each of the ``B`` images, a list of ``(x, y, w, h)`` boxes in the MAP's pixel
coordinates (convert RSNA boxes, given in original DICOM pixels, with :func:`scale_boxes`).

Pixel convention: pixel ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``; it belongs to a box when
its centre ``(col + 0.5, row + 0.5)`` lies in ``[x, x + w) x [y, y + h)``. An integer box therefore covers
columns ``x .. x + w - 1`` and rows ``y .. y + h - 1``. An image whose boxes cover no pixel (a negative
patient) scores ``NaN``; averages in :func:`localisation_report` skip those images.

Scores:

- :func:`pointing_game` (Zhang et al. 2016): is the map's maximum inside a box (optionally within
  ``tolerance`` pixels of one)?
- :func:`overlap_scores`: threshold the map, compare the region with the boxes by IoU and IoBB, count hits.
- :func:`heat_share`: the share of the map's total heat that falls inside the boxes ("energy").
- Baselines that give those numbers a meaning: :func:`box_area_share` (what a map with no information
  scores) and :func:`random_maps` (smooth random maps that look like CAMs but know nothing).
- :func:`to_heatmaps`: input gradients (``B x C x H x W``) or maps as non-negative ``B x H x W`` in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage

Box = tuple[float, float, float, float]
TIE_RULES = ("fraction", "any", "all")
REGIONS = ("box", "mask")


def _as_maps(maps: Any) -> np.ndarray:
    """``B x H x W`` tensor or array -> float64 numpy array, checked."""
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().to("cpu", torch.float64).numpy()
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(
            f"maps: expected a B x H x W batch of maps, got shape {tuple(maps.shape)} "
            "(add a batch axis with maps[None], or reduce channels first, e.g. maps.abs().amax(1))"
        )
    if not np.isfinite(maps).all():
        raise ValueError("maps: contains NaN or infinite values")
    return maps


def _as_boxes(boxes: Any) -> np.ndarray:
    """One image's boxes (a list of ``(x, y, w, h)``, an ``n x 4`` array or None) -> ``n x 4`` float array."""
    if boxes is None:
        return np.zeros((0, 4))
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4))
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes: expected a list of (x, y, w, h) boxes, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"boxes: contain NaN or infinite values: {arr.tolist()}")
    if (arr[:, 2:] < 0).any():
        raise ValueError(f"boxes: width and height must be >= 0, got {arr.tolist()}")
    return arr


def _check_boxes_list(boxes_list: Sequence[Any], n: int) -> list[np.ndarray]:
    if len(boxes_list) != n:
        raise ValueError(f"boxes_list: expected one list of boxes per map ({n}), got {len(boxes_list)}")
    return [_as_boxes(b) for b in boxes_list]


def _size(size: int | Sequence[int], name: str) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if h <= 0 or w <= 0:
        raise ValueError(f"{name}: expected a positive size (H, W), got {size}")
    return int(h), int(w)


def scale_boxes(boxes: Any, from_size: int | Sequence[int], to_size: int | Sequence[int]) -> list[Box]:
    """Rescale one image's ``(x, y, w, h)`` boxes from an image of ``from_size`` to ``to_size`` pixels.

    Sizes are ``S`` (square) or ``(H, W)``. Example: an RSNA box in the 1024-pixel DICOM, for a 224-pixel
    Grad-CAM map: ``scale_boxes([(264, 152, 213, 379)], 1024, 224)``. Returns a list of float tuples.
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    (h0, w0), (h1, w1) = _size(from_size, "from_size"), _size(to_size, "to_size")
    factors = np.array([w1 / w0, h1 / h0, w1 / w0, h1 / h0])
    return [tuple(float(v) for v in box * factors) for box in _as_boxes(boxes)]


def boxes_to_mask(boxes: Any, height: int, width: int) -> np.ndarray:
    """Union of ``(x, y, w, h)`` boxes as a bool ``height x width`` mask (pixel-centre rule, clipped).

    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    centres_x = np.arange(width) + 0.5
    centres_y = np.arange(height) + 0.5
    mask = np.zeros((height, width), dtype=bool)
    for x, y, w, h in _as_boxes(boxes):
        cols = (centres_x >= x) & (centres_x < x + w)
        rows = (centres_y >= y) & (centres_y < y + h)
        mask |= rows[:, None] & cols[None, :]
    return mask


def _masks(boxes_list: list[np.ndarray], height: int, width: int) -> np.ndarray:
    return (
        np.stack([boxes_to_mask(b, height, width) for b in boxes_list]) if boxes_list else np.zeros((0, 1, 1))
    )


def box_area_share(boxes_list: Sequence[Any], height: int, width: int) -> np.ndarray:
    """Per image, the share of the ``height x width`` map covered by the union of its boxes: ``(B,)``.

    This is what a map with no information scores: the expected pointing-game hit of a uniformly placed
    maximum and the heat share of a constant map. ``NaN`` for an image without boxes.
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    masks = _masks([_as_boxes(b) for b in boxes_list], height, width)
    share = masks.reshape(len(masks), -1).mean(axis=1)
    return np.where(share > 0, share, np.nan)


def pointing_game(
    maps: Any, boxes_list: Sequence[Any], *, tolerance: float = 0.0, ties: str = "fraction"
) -> np.ndarray:
    """Pointing game (Zhang et al. 2016): per image, is the map's maximum inside a box? ``(B,)`` floats.

    ``tolerance`` (in map pixels, Euclidean) counts a maximum within that distance of a box pixel as a hit
    (Zhang et al. use 15 pixels at 224). Ties (several pixels exactly equal to the maximum, e.g. a plateau
    or a constant map) follow ``ties``: ``"fraction"`` (default) scores the share of the maxima that hit,
    i.e. the expected hit when the tie is broken at random, so a constant map scores the box area;
    ``"any"`` scores 1 when one maximum hits; ``"all"`` scores 1 only when every maximum hits. Only exact
    ties count; round the maps first to treat near-ties as ties. ``NaN`` for an image without boxes.
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    if ties not in TIE_RULES:
        raise ValueError(f"ties: expected one of {TIE_RULES}, got {ties!r}")
    if tolerance < 0:
        raise ValueError(f"tolerance: expected >= 0 pixels, got {tolerance}")
    maps = _as_maps(maps)
    masks = _masks(_check_boxes_list(boxes_list, len(maps)), *maps.shape[1:])
    hits = np.full(len(maps), np.nan)
    for i, (heat, mask) in enumerate(zip(maps, masks, strict=True)):
        if not mask.any():
            continue
        if tolerance > 0:
            mask = ndimage.distance_transform_edt(~mask) <= tolerance
        inside = mask[heat == heat.max()]
        hits[i] = {"fraction": inside.mean(), "any": float(inside.any()), "all": float(inside.all())}[ties]
    return hits


def heat_share(maps: Any, boxes_list: Sequence[Any]) -> np.ndarray:
    """Share of each map's heat inside the union of its boxes: ``sum(map * mask) / sum(map)``, ``(B,)``.

    Maps must be non-negative (Grad-CAM after ReLU; take ``abs()`` of gradients first). An all-zero map
    carries no information and scores like a constant map: the box area share. ``NaN`` without boxes.
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    maps = _as_maps(maps)
    if (maps < 0).any():
        raise ValueError("maps: heat share needs non-negative maps (apply ReLU or abs() first)")
    masks = _masks(_check_boxes_list(boxes_list, len(maps)), *maps.shape[1:])
    flat, flat_masks = maps.reshape(len(maps), -1), masks.reshape(len(masks), -1)
    total = flat.sum(axis=1)
    inside = (flat * flat_masks).sum(axis=1)
    area = flat_masks.mean(axis=1)
    share = np.divide(inside, total, out=area.copy(), where=total > 0)
    return np.where(area > 0, share, np.nan)


def _predicted_region(heat: np.ndarray, frac: float, region: str) -> np.ndarray:
    """Threshold one map at ``min + frac * (max - min)``; optionally keep the bbox of its largest blob."""
    low, high = heat.min(), heat.max()
    mask = heat >= low + frac * (high - low)
    if region == "mask":
        return mask
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count > 1:
        sizes = np.bincount(labels.ravel())[1:]
        mask = labels == 1 + int(np.argmax(sizes))
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = np.zeros_like(mask)
    box[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
    return box


def overlap_scores(
    maps: Any,
    boxes_list: Sequence[Any],
    *,
    frac: float = 0.5,
    region: str = "box",
    thresholds: Sequence[float] = (0.1, 0.3, 0.5),
) -> pd.DataFrame:
    """IoU and IoBB of each thresholded map against its boxes, and hits at ``thresholds``.

    Each map is thresholded at ``min + frac * (max - min)`` (= ``frac * max`` for maps min-max normalised
    to [0, 1], as Grad-CAM returns). ``region="box"`` (default) takes the bounding box of the largest
    8-connected component of that mask and matches it to the best ground-truth box, as in weakly
    supervised detection (a hit if it overlaps ANY box well); ``region="mask"`` compares the whole
    thresholded mask with the union of the boxes. IoU = |P n G| / |P u G|; IoBB = |P n G| / |P|, the
    share of the predicted region inside the box (Wang et al. 2017, ChestX-ray8). Counted in pixels.

    Returns a DataFrame with ``B`` rows and columns ``iou``, ``iobb``, ``hit_iou@t`` and ``hit_iobb@t``
    (1.0 when the score is >= t) for each ``t``; ``NaN`` rows for images without boxes.
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    if region not in REGIONS:
        raise ValueError(f"region: expected one of {REGIONS}, got {region!r}")
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"frac: expected a fraction of the map's range in [0, 1], got {frac}")
    maps = _as_maps(maps)
    height, width = maps.shape[1:]
    boxes_list = _check_boxes_list(boxes_list, len(maps))
    iou, iobb = np.full(len(maps), np.nan), np.full(len(maps), np.nan)
    for i, (heat, boxes) in enumerate(zip(maps, boxes_list, strict=True)):
        truths = [boxes_to_mask(b, height, width) for b in boxes] if region == "box" else []
        truths = [t for t in truths if t.any()] or [boxes_to_mask(boxes, height, width)]
        if not truths[0].any():
            continue
        pred = _predicted_region(heat, frac, region)
        inter = np.array([(pred & t).sum() for t in truths])
        union = np.array([(pred | t).sum() for t in truths])
        iou[i], iobb[i] = (inter / union).max(), inter.max() / pred.sum()
    table = pd.DataFrame({"iou": iou, "iobb": iobb})
    for name, values in (("iou", iou), ("iobb", iobb)):
        for t in thresholds:
            table[f"hit_{name}@{t:g}"] = np.where(np.isnan(values), np.nan, (values >= t).astype(float))
    return table


def localisation_scores(
    maps: Any,
    boxes_list: Sequence[Any],
    *,
    tolerance: float = 0.0,
    frac: float = 0.5,
    region: str = "box",
    thresholds: Sequence[float] = (0.1, 0.3, 0.5),
) -> pd.DataFrame:
    """Every score per image: ``pointing_game``, ``heat_share``, then the columns of :func:`overlap_scores`.

    ``maps`` is ``B x H x W`` and non-negative; returns ``B`` rows (pointing game with ``ties="fraction"``).
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    table = pd.DataFrame(
        {
            "pointing_game": pointing_game(maps, boxes_list, tolerance=tolerance),
            "heat_share": heat_share(maps, boxes_list),
        }
    )
    overlap = overlap_scores(maps, boxes_list, frac=frac, region=region, thresholds=thresholds)
    return pd.concat([table, overlap], axis=1)


def to_heatmaps(maps: Any) -> np.ndarray:
    """Any explanation as non-negative ``B x H x W`` heatmaps in [0, 1], ready to score and to overlay.

    ``B x C x H x W`` input gradients (guided backpropagation, Guided Grad-CAM) become the largest absolute
    value over the channels, ``|g|.amax(1)`` (the sign says which way the pixel pushes, not how much it
    matters); ``B x H x W`` maps keep their values. Each map is then min-max scaled to [0, 1] (a constant map
    becomes all zeros). Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().to("cpu", torch.float64).numpy()
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim == 4:
        maps = np.abs(maps).max(axis=1)
    maps = _as_maps(maps)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.divide(maps - low, span, out=np.zeros_like(maps), where=span > 0)


def _random_maps(n: int, height: int, width: int, grid: int, generator: torch.Generator) -> np.ndarray:
    coarse = torch.rand(n, 1, grid, grid, generator=generator, dtype=torch.float64)
    maps = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    return ((maps - low) / (high - low).clamp_min(1e-12)).numpy()


def random_maps(n: int, height: int, width: int, *, grid: int = 7, seed: int = 0) -> np.ndarray:
    """``n x height x width`` random maps that look like CAMs but carry no information.

    Uniform noise on a ``grid x grid`` lattice (ResNet18's ``layer4`` at 224 pixels is 7 x 7), upsampled
    bilinearly as Grad-CAM is and min-max normalised to [0, 1]. Deterministic given ``seed``.
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    if grid < 1:
        raise ValueError(f"grid: expected a lattice of at least 1 x 1 cells, got {grid}")
    return _random_maps(n, height, width, grid, torch.Generator().manual_seed(seed))


def localisation_report(
    maps: Any,
    boxes_list: Sequence[Any],
    *,
    seed: int = 0,
    draws: int = 10,
    grid: int = 7,
    name: str = "method",
    tolerance: float = 0.0,
    frac: float = 0.5,
    region: str = "box",
    thresholds: Sequence[float] = (0.1, 0.3, 0.5),
) -> pd.DataFrame:
    """Mean scores of ``maps`` (``B x H x W``) next to two baselines, one row each.

    Rows: ``name`` (the maps given), ``"random"`` (:func:`random_maps` with ``grid``, averaged over
    ``draws`` draws of ``B`` maps from ``seed``), ``"box area"`` (a constant map, i.e. no information: its
    pointing game and heat share equal the box area share exactly). Columns: the means over images with
    boxes of :func:`localisation_scores`, and ``n_images`` (images with boxes).
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    if draws < 1:
        raise ValueError(f"draws: expected at least 1 random draw, got {draws}")
    maps = _as_maps(maps)
    n, height, width = maps.shape
    options = dict(tolerance=tolerance, frac=frac, region=region, thresholds=thresholds)
    method = localisation_scores(maps, boxes_list, **options)
    generator = torch.Generator().manual_seed(seed)
    random_means = [
        localisation_scores(_random_maps(n, height, width, grid, generator), boxes_list, **options).mean()
        for _ in range(draws)
    ]
    constant = localisation_scores(np.zeros_like(maps), boxes_list, **options)
    report = pd.DataFrame(
        [method.mean(), pd.concat(random_means, axis=1).mean(axis=1), constant.mean()],
        index=pd.Index([name, "random", "box area"], name="maps"),
    )
    report["n_images"] = int(method["pointing_game"].notna().sum())
    return report
