"""Running a trained model over many images: logits on the device, probabilities for a whole split.

Taught in ``notebooks/03_evaluation.ipynb`` (and used by the training loop's validation, the shortcut lesson
and notebook 06). The images are served by :class:`helpers.training.device_data.DeviceData` and prepared by
:func:`helpers.training.device_data.prepare_batch`, the same code as in training; the model standardises its
own input (:mod:`helpers.training.models`), so no ``mean``/``std`` travels with the images.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from helpers.config import pick_device
from helpers.evaluate.metrics import age_bands
from helpers.model_state import eval_mode
from helpers.progress import progress_bar
from helpers.training.device_data import DeviceData, prepare_batch


def _batch_logits(
    model: nn.Module, raw: torch.Tensor, scale: float, amp_dtype: torch.dtype | None, channels_last: bool
) -> torch.Tensor:
    """B x K float32 logits of one raw batch (the caller holds eval mode and ``no_grad``)."""
    x = prepare_batch(raw, scale, channels_last=channels_last)
    with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        return model(x).float()


def logits_for(
    model: nn.Module,
    data: DeviceData,
    batch_size: int,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """N x K float32 logits, on the device, for all images of ``data`` in order (eval mode, no grad).

    Used for validation inside :func:`helpers.training.loop.fit`; an empty ``data`` gives a 0 x 0 tensor.
    """
    with eval_mode(model), torch.no_grad():
        chunks = [
            _batch_logits(model, raw, data.scale, amp_dtype, channels_last)
            for raw, _ in data.batches(batch_size)
        ]
    return torch.cat(chunks) if chunks else torch.zeros((0, 0), device=data.device)


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid of a B or B x 1 output (-> B), softmax of a B x K output (-> B x K)."""
    if logits.ndim == 1 or (logits.ndim == 2 and logits.shape[1] == 1):
        return torch.sigmoid(logits.reshape(-1))
    if logits.ndim == 2:
        return torch.softmax(logits, dim=1)
    raise ValueError(f"predict: model output must be B, B x 1 or B x K, got {tuple(logits.shape)}")


def predict(
    model: nn.Module,
    images: Any,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    *,
    progress: bool = True,
) -> np.ndarray:
    """Probabilities for a whole split in one call (the course's one prediction function).

    ``images``: N x H x W or N x C x H x W as a numpy array, memmap or tensor; uint8 (0-255, scaled to
    [0, 1]) or float (used as is, e.g. log-mel patches). Runs in fp32 under ``torch.no_grad`` in eval mode
    on ``device`` (default: the GPU when there is one, see :func:`helpers.config.pick_device`); afterwards
    every submodule's train/eval flag and the model's device are restored. Returns float32 (N,) = sigmoid of
    a 1-logit output, or (N, K) = softmax of a K-logit output. Taught in ``notebooks/03_evaluation.ipynb``.
    """
    if batch_size < 1:
        raise ValueError(f"predict: batch_size must be >= 1, got {batch_size}")
    device = pick_device() if device is None else torch.device(device)
    data = DeviceData(images, device=device)  # checks the shape and the dtype
    home = next(model.parameters(), None)
    chunks = []
    batches = progress_bar(
        data.batches(batch_size),
        total=math.ceil(len(data) / batch_size),
        desc="predict",
        leave=False,
        enabled=progress,
    )
    try:  # the contexts are held here, not in a generator: an error cannot leave them open
        with eval_mode(model.to(device)), torch.no_grad():
            for raw, _ in batches:
                chunks.append(_probabilities(_batch_logits(model, raw, data.scale, None, False)).cpu())
    finally:
        if home is not None:
            model.to(home.device)
    return torch.cat(chunks).numpy() if chunks else np.zeros(0, dtype=np.float32)


def predict_split(
    model: nn.Module,
    store: Any,
    split: str,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """The readable rows of one split of a store (``helpers.xray.store.PreparedStore``) with its predictions.

    Returns the store's index rows (label, patientId, boxes, age, sex, view_position, ...) whose INDEX is
    the row of the image in ``store.images``, plus ``prob`` (from :func:`predict`, a 1-logit model) and
    ``age_band`` (:func:`helpers.evaluate.metrics.age_bands`). Taught in ``notebooks/03_evaluation.ipynb``.
    """
    index = store.index
    if split not in set(index["split"]):
        raise ValueError(
            f"{store.path}: no {split!r} split; the splits here are {sorted(set(index['split']))}"
        )
    rows = np.flatnonzero((index["split"] == split).to_numpy() & index["ok"].to_numpy(bool))
    frame = index.iloc[rows].copy()
    prob = predict(model, np.asarray(store.images[rows]), batch_size, device, progress=progress)
    if prob.ndim != 1:
        raise ValueError(f"predict_split: expected a 1-logit model, got probabilities of shape {prob.shape}")
    frame["prob"] = prob.astype(np.float64)
    if "age" in frame:
        frame["age_band"] = age_bands(frame["age"])
    return frame
