"""The shortcut lesson: a model that reads a marker instead of the lungs, and how Grad-CAM exposes it.

Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``. The synthetic "confounded" set
(:func:`helpers.course.pipeline.shortcut_stores`) has a bright 'L' burned into the top-left corner of every positive
image (:func:`helpers.data.synthetic_xray.burn_marker`), the way a hospital's portable-film marker, a ward label or
the AP projection itself can follow the label in real data. This module trains the model that learns it,
says where the marker lies in a store's pixels, pastes it onto clean images (a counterfactual test), compares
the heat inside the marker with the heat inside the opacity boxes, and tabulates the real RSNA label by view
position (AP vs PA), the real-world version of the confounder.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from helpers.config import Settings, get_settings, pick_device
from helpers.data.synthetic_xray import MARKER_VALUE, marker_strokes
from helpers.evaluate.metrics import ranking_metrics, threshold_metrics
from helpers.explain import localisation
from helpers.training.checkpoints import load_checkpoint, save_checkpoint
from helpers.training.inference import predict
from helpers.training.loop import fit
from helpers.training.models import resnet18_xray
from helpers.xray.store import PreparedStore


def marker_boxes(
    source_size: int, image_size: int, *, margin: float = 0.0
) -> list[tuple[float, float, float, float]]:
    """The 'L' marker as two ``(x, y, w, h)`` boxes (its vertical and its horizontal stroke) in the pixels of
    an ``image_size`` image made by resizing a square ``source_size`` DICOM (the marker is burned at the
    DICOM's size, see :func:`helpers.data.synthetic_xray.marker_strokes`).

    ``margin`` (in ``image_size`` pixels) grows both boxes on every side, e.g. by the stride of a coarse
    Grad-CAM layer, so that "heat near the marker" can be measured. Taught in
    ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    scaled = localisation.scale_boxes(marker_strokes(source_size), source_size, image_size)
    return [(x - margin, y - margin, w + 2 * margin, h + 2 * margin) for x, y, w, h in scaled]


def add_marker(images: np.ndarray, source_size: int) -> np.ndarray:
    """A copy of uint8 images (``N x S x S``) with the 'L' marker pasted as the preprocessing would show it.

    The marker is drawn at ``source_size`` (the DICOM's size, where the confounded set burns it), shrunk to
    ``S`` with an area filter (coverage per pixel) and blended: ``(1 - a) * image + a * MARKER_VALUE``. Used to ask
    the model a counterfactual question: does adding the marker alone change the prediction?
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"images: expected uint8 N x S x S, got {images.dtype} {images.shape}")
    mask = np.zeros((source_size, source_size), dtype=np.float32)
    for x, y, w, h in marker_strokes(source_size):
        mask[y : y + h, x : x + w] = 1.0
    height, width = images.shape[1:]
    cover = np.asarray(Image.fromarray(mask).resize((width, height), Image.BOX), dtype=np.float32)
    out = (1.0 - cover) * images.astype(np.float32) + cover * MARKER_VALUE
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def shortcut_checkpoint_path(settings: Settings | None = None) -> Path:
    """Where the model trained on the confounded set is cached (always synthetic data)."""
    settings = settings or get_settings()
    return settings.cache_dir / f"resnet18-shortcut-synthetic-{settings.sizes.image_size}px.pt"


def shortcut_training_config(settings: Settings | None = None) -> dict[str, Any]:
    """A deliberately small training budget: the marker is so easy to read that a few epochs suffice.

    Adam, no augmentation (the marker would stay in the corner anyway), best epoch by validation loss so
    that the saved model is also well calibrated. Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    settings = settings or get_settings()
    return {
        "epochs": 3,
        "batch_size": settings.sizes.batch_size,
        "lr": 1e-3 if settings.smoke else 3e-4,
        "pos_weight": "auto",
        "monitor": "val_loss",
        "seed": 0,
    }


def train_shortcut_model(
    store: PreparedStore,
    settings: Settings | None = None,
    *,
    progress: bool = True,
    retrain: bool = False,
) -> tuple[torch.nn.Module, dict]:
    """Train a ResNet18 on the ``train`` split of the confounded ``store`` (or load the cached one).

    Returns ``(model in eval mode on the best device, meta)``; ``meta["history"]`` holds the training
    history; the model carries the store's mean/std. Seconds in smoke mode.
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """

    settings = settings or get_settings()
    path = shortcut_checkpoint_path(settings)
    config = shortcut_training_config(settings)
    if not retrain and path.is_file():
        try:
            model, meta = load_checkpoint(path)
        except ValueError:  # unreadable, or saved by an older version of the course: train again
            meta = {}
        if meta.get("training_config") == config and meta.get("store") == store.path.name:
            return model.to(pick_device()).eval(), meta
    # train (again): no checkpoint yet, or one made with other settings or another store
    train_x, train_y = store.split_arrays("train")
    val_x, val_y = store.split_arrays("val")
    torch.manual_seed(0)
    model = resnet18_xray(mean=store.mean, std=store.std)
    history = fit(model, train_x, train_y, val_x, val_y, progress=progress, **config)
    # one save at the end (the best epoch is restored in memory): no per-epoch resumable state
    best = history[history["best"].astype(bool)].iloc[-1]
    save_checkpoint(
        path, model, image_size=[store.size, store.size],
        store=store.path.name, epoch=int(best["epoch"]), metrics=best.to_dict(), history=history,
        training_config=config,
    )  # fmt: skip
    model, meta = load_checkpoint(path)
    return model.to(pick_device()).eval(), meta


def evaluation_table(
    model: torch.nn.Module,
    sets: Mapping[str, tuple[Any, Any]],
    threshold: float = 0.5,
) -> pd.DataFrame:
    """How the model does on several image sets: one row per set.

    ``sets`` maps a name to ``(images, labels)`` (uint8 ``N x H x W`` and 0/1). Columns: ``n``, ``roc_auc``
    (NaN when a set has one class only), ``accuracy``, ``sensitivity``, ``specificity`` at ``threshold``,
    ``mean_p_negative`` and ``mean_p_positive`` (mean predicted probability of pneumonia per true class).
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """

    rows = {}
    for name, (images, labels) in sets.items():
        labels = np.asarray(labels)
        prob = predict(model, images, progress=False)
        with warnings.catch_warnings():  # precision is undefined when nothing is called positive: not shown
            warnings.simplefilter("ignore")
            at = threshold_metrics(labels, prob, threshold)
            auc = ranking_metrics(labels, prob)["roc_auc"] if len(np.unique(labels)) == 2 else np.nan
        rows[name] = {
            "n": len(labels),
            "roc_auc": auc,
            "accuracy": at["accuracy"],
            "sensitivity": at["sensitivity"],
            "specificity": at["specificity"],
            "mean_p_negative": float(prob[labels == 0].mean()) if (labels == 0).any() else np.nan,
            "mean_p_positive": float(prob[labels == 1].mean()) if (labels == 1).any() else np.nan,
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("images")


def heat_by_region(
    maps: Any, regions: Mapping[str, Sequence[Any]], *, tolerance: float = 0.0
) -> pd.DataFrame:
    """Where the heat of ``maps`` (``B x H x W``, non-negative) goes, region by region: one row per region.

    ``regions`` maps a name to a list of boxes per image (``B`` lists of ``(x, y, w, h)`` in map pixels).
    Columns (means over images with boxes): ``heat_share`` (share of the map's heat inside the region),
    ``area_share`` (share of the image the region covers: what a map with no information scores),
    ``enrichment`` = heat share / area share (heat per pixel relative to a flat map; 1 = no preference),
    ``pointing_game`` (the maximum inside the region, within ``tolerance`` pixels).
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    rows = {}
    height, width = np.shape(maps)[1:]
    for name, boxes_list in regions.items():
        share = localisation.heat_share(maps, boxes_list)
        area = localisation.box_area_share(boxes_list, height, width)
        hits = localisation.pointing_game(maps, boxes_list, tolerance=tolerance)
        rows[name] = {
            "heat_share": np.nanmean(share),
            "area_share": np.nanmean(area),
            "enrichment": np.nanmean(share / area),
            "pointing_game": np.nanmean(hits),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("region")


def positive_share_by_view(labels: pd.DataFrame, headers: pd.DataFrame) -> pd.DataFrame:
    """The REAL RSNA label by view position: patients, positives and the share positive, AP and PA.

    ``labels``: the RSNA label table (one row per box, ``patientId`` and ``Target``); ``headers``: the DICOM
    headers (``PatientID``, ``ViewPosition``), both from :func:`helpers.data.real_tables.real_rsna_tables`.
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    per_patient = labels.groupby("patientId", as_index=False)["Target"].max()
    views = headers[["PatientID", "ViewPosition"]].drop_duplicates("PatientID")
    merged = per_patient.merge(views, left_on="patientId", right_on="PatientID", how="inner")
    if len(merged) < len(per_patient):
        missing = len(per_patient) - len(merged)
        raise ValueError(f"{missing} patients of the label table have no header row (ViewPosition)")
    table = merged.groupby("ViewPosition")["Target"].agg(patients="size", positive="sum")
    table["share_positive"] = table["positive"] / table["patients"]
    return table.rename_axis("view")
