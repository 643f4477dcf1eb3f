"""A plain-PyTorch training loop that keeps the GPU busy, with checkpoints that survive interruptions.

Taught in ``notebooks/02_training_resnet18.ipynb`` (and reused for the breath-sound CNN in
``notebooks/06_breath_sounds.ipynb``).

The speed tricks, each explained where it is used:

1. Data on the device (:class:`helpers.device_data.DeviceData`): the uint8 images are copied to GPU
   memory once; a batch is then an ``index_select``, no DataLoader, no workers.
2. Normalisation ``(x / 255 - mean) / std`` and augmentation (:class:`helpers.augment.GpuAugment`) run on
   the device, on the whole batch at once.
3. Mixed precision: bf16 autocast on Ampere and newer GPUs; fp16 + ``GradScaler`` on older ones (T4).
4. ``channels_last`` memory layout on CUDA, which the tensor cores' convolution kernels prefer.
5. No host synchronisation per step: the loss is summed on the device and read once per epoch; the
   shuffling permutation is drawn on the device. (A ``loss.item()`` per step makes the CPU wait for
   the GPU every step, so the GPU then waits for the CPU to queue the next step.)
6. Fused Adam on CUDA (one kernel updates all parameters), ``cudnn.benchmark`` (fixed batch shapes, so
   the fastest convolution algorithm is measured once) and optionally ``torch.compile``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from helpers.checkpoints import (
    load_checkpoint,
    load_training_state,
    resume_path,
    save_checkpoint,
    save_training_state,
)
from helpers.config import pick_device
from helpers.device_data import DeviceData, logits_for, predict_logits, prepare_batch
from helpers.metrics import predict as predict_proba  # the one prediction function, re-exported
from helpers.progress import progress_bar

__all__ = [
    "DeviceData",
    "compute_pos_weight",
    "fit",
    "load_checkpoint",
    "predict_logits",
    "predict_proba",
    "recalibrate_batchnorm",
    "resolve_amp",
    "save_checkpoint",
    "train_step",
]

HISTORY_COLUMNS = "epoch train_loss val_loss val_acc val_auc lr seconds images_per_s best".split()
MONITORS = {"val_auc": "max", "val_acc": "max", "val_loss": "min"}


def resolve_amp(amp: Any, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` ('auto', 'bf16', 'fp16', 'off', True, False or None) on ``device``.

    'auto' (or True): bf16 on CUDA GPUs of compute capability >= 8 (Ampere: A100, RTX 30xx, L4, H100),
    which needs no loss scaling; fp16 on older ones (T4, V100), with a ``GradScaler``; none on CPU/MPS.
    """
    if amp in (None, False, "off", "none"):
        return None
    if amp in ("auto", True):
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    if amp in ("bf16", "bfloat16"):
        return torch.bfloat16
    if amp in ("fp16", "float16"):
        return torch.float16
    raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or 'off', got {amp!r}")


def compute_pos_weight(labels: Any) -> float:
    """``n_negative / n_positive`` of 0/1 labels: BCE's weight that balances the two classes.

    Taught in ``notebooks/02_training_resnet18.ipynb``.
    """
    labels = np.asarray(labels)
    n_pos = int((labels == 1).sum())
    if n_pos == 0 or n_pos == len(labels):
        raise ValueError(
            f"pos_weight needs both classes in the training labels, got {n_pos} of {len(labels)}"
        )
    return (len(labels) - n_pos) / n_pos


class _Loss(nn.Module):
    """BCEWithLogits on the single logit (B x 1 vs (B,) labels) or CrossEntropy for K > 1 logits."""

    def __init__(self, n_out: int, weight: torch.Tensor | None):
        super().__init__()
        self.n_out = n_out
        if n_out == 1:
            self.loss = nn.BCEWithLogitsLoss(pos_weight=weight)
        else:
            self.loss = nn.CrossEntropyLoss(weight=weight)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return (
            self.loss(logits[:, 0], labels.float()) if self.n_out == 1 else self.loss(logits, labels.long())
        )


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """One optimisation step on a prepared batch; returns the (detached, device) loss. No host sync.

    Taught in ``notebooks/02_training_resnet18.ipynb``.
    """
    with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits = model(x)
    loss = loss_fn(logits, y)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()  # fp16 gradients would underflow without the scale factor
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach()


def _accuracy_auc(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Accuracy (threshold 0.5 / argmax) and ROC-AUC (macro one-vs-rest for K > 1; NaN if undefined)."""
    if logits.shape[1] == 1:
        scores, predicted = logits[:, 0], (logits[:, 0] > 0).astype(labels.dtype)
    else:
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        scores, predicted = shifted / shifted.sum(axis=1, keepdims=True), logits.argmax(axis=1)
    accuracy = float((predicted == labels).mean())
    try:
        if logits.shape[1] == 1:
            auc = roc_auc_score(labels, scores)
        else:
            auc = roc_auc_score(
                labels, scores, multi_class="ovr", average="macro", labels=range(logits.shape[1])
            )
    except ValueError:  # a class is missing from the validation labels
        auc = math.nan
    return accuracy, float(auc)


def _is_better(score: float, best: float | None, mode: str) -> bool:
    """Did the monitored ``score`` improve on ``best`` (``mode`` 'max' or 'min'; NaN never wins)?"""
    if best is None or (math.isnan(best) and not math.isnan(score)):
        return True
    return score > best if mode == "max" else score < best


def _labels_for(y: Any, n_out: int, name: str) -> np.ndarray:
    """0/1 float32 labels for a 1-logit model, int64 class indices 0..K-1 otherwise."""
    y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
    if n_out == 1:
        if not np.isin(y, (0, 1)).all():
            raise ValueError(f"{name} must hold 0/1 labels for a 1-logit model, found {np.unique(y)[:10]}")
        return y.astype(np.float32)
    if y.size and (y.min() < 0 or y.max() >= n_out or not np.all(y == np.round(y))):
        raise ValueError(f"{name} must hold class indices 0..{n_out - 1}, found {np.unique(y)[:10]}")
    return y.astype(np.int64)


def _make_loss(n_out: int, labels: np.ndarray, pos_weight: Any, class_weights: Any, device) -> _Loss:
    """The loss with its class balancing: BCE ``pos_weight`` (1 logit) or CE ``class_weights`` (K)."""
    if n_out == 1:
        if pos_weight is None:
            return _Loss(1, None)
        if isinstance(pos_weight, str) and pos_weight == "auto":
            pos_weight = compute_pos_weight(labels)
        return _Loss(1, torch.tensor([float(pos_weight)], device=device))
    if class_weights is None:
        return _Loss(n_out, None)
    if isinstance(class_weights, str) and class_weights == "auto":  # "balanced": N / (K * n_k)
        counts = np.bincount(labels, minlength=n_out)
        if (counts == 0).any():
            raise ValueError(f"class_weights='auto' needs every class in train_y, counts {counts.tolist()}")
        class_weights = len(labels) / (n_out * counts)
    weights = torch.as_tensor(np.asarray(class_weights, dtype=np.float32), device=device)
    if weights.shape != (n_out,):
        raise ValueError(f"class_weights needs {n_out} values, got shape {tuple(weights.shape)}")
    return _Loss(n_out, weights)


def _output_size(model: nn.Module, image_shape: Sequence[int], device: torch.device) -> int:
    """Number of logits K, found by a forward pass of one blank image in eval mode."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros((1, *image_shape), device=device))
    model.train(was_training)
    if out.ndim != 2:
        raise ValueError(f"the model should return B x K logits, it returned shape {tuple(out.shape)}")
    return int(out.shape[1])


def fit(
    model: nn.Module,
    train_x: Any,
    train_y: Any,
    val_x: Any,
    val_y: Any,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    pos_weight: Any = "auto",
    mean: float = 0.5,
    std: float = 0.25,
    augment: Any = None,
    device: Any = None,
    amp: Any = "auto",
    channels_last: bool = True,
    compile: bool = False,
    checkpoint_path: str | os.PathLike | None = None,
    monitor: str = "val_auc",
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
    num_classes: int | None = None,
    class_weights: Any = None,
    checkpoint_meta: dict | None = None,
    restore_best: bool = True,
    recalibrate_bn: bool = False,
    augment_options: dict | None = None,
) -> pd.DataFrame:
    """Train ``model`` with Adam; returns the history, one row per epoch (columns ``HISTORY_COLUMNS``).

    Images: N x H x W or N x C x H x W, uint8 (model input ``(x / 255 - mean) / std``) or float
    (``(x - mean) / std``, e.g. log-mel patches). 1-logit models: BCEWithLogits with ``pos_weight``
    ('auto' = n_neg / n_pos of ``train_y``, a number, or None), labels 0/1, accuracy at probability 0.5.
    K-logit models: CrossEntropy with optional ``class_weights`` ('auto' = balanced, or K numbers),
    labels 0..K-1, macro one-vs-rest ROC-AUC. ``augment`` (a ``GpuAugment``) is applied to training
    batches only. ``amp``: see :func:`resolve_amp`. Training batches have a fixed size: the last
    incomplete batch of each shuffled epoch is dropped (BatchNorm cannot train on a single image).

    With ``checkpoint_path`` the best epoch by ``monitor`` is saved there (weights + meta for
    :func:`load_checkpoint`), and the full state after every epoch to ``<stem>.last<suffix>``;
    ``resume=True`` continues from that state with the same history as an uninterrupted run (and returns
    at once when the run is already complete). ``restore_best`` leaves the best epoch's weights in
    ``model``. Deterministic on the CPU for a given ``seed`` (it seeds torch's global RNG, for dropout).
    ``recalibrate_bn``: before each validation, re-estimate the BatchNorm statistics on the (unaugmented)
    training images, see :func:`recalibrate_batchnorm`; worth it when an epoch has only a few steps.
    ``augment_options``: settings of ``augment`` (a ``GpuAugment``) to override, e.g.
    ``{"padding_mode": "border", "rotation": 5.0}`` (see :meth:`helpers.augment.GpuAugment.replace`).

    Taught in ``notebooks/02_training_resnet18.ipynb`` and ``notebooks/06_breath_sounds.ipynb``.
    """
    if monitor not in MONITORS:
        raise ValueError(f"monitor must be one of {sorted(MONITORS)}, got {monitor!r}")
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs a checkpoint_path to resume from")
    if augment_options:
        if not hasattr(augment, "replace"):
            raise ValueError(f"augment_options needs a GpuAugment as augment, got {augment!r}")
        augment = augment.replace(**augment_options)
    device = torch.device(device) if device is not None else pick_device()
    torch.manual_seed(seed)
    model.to(device)
    image_shape = tuple(train_x.shape[1:]) if len(train_x.shape) == 4 else (1, *train_x.shape[1:])
    n_out = num_classes or _output_size(model, image_shape, device)
    train = DeviceData(train_x, _labels_for(train_y, n_out, "train_y"), device)
    if train.n < 2:
        raise ValueError(f"fit needs at least 2 training images (BatchNorm), got {train.n}")
    val = DeviceData(val_x, _labels_for(val_y, n_out, "val_y"), device)
    loss_fn = _make_loss(n_out, train.labels_np, pos_weight, class_weights, device)
    amp_dtype = resolve_amp(amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    channels_last = channels_last and device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    fused = True if device.type == "cuda" else None
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused)
    # Two seeded generators: the shuffling one lives where the batch indices are used.
    rngs = {
        "order": torch.Generator(device=train.index_device).manual_seed(seed),
        "augment": torch.Generator(device=device).manual_seed(seed + 1),
    }
    config = {"batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed}
    config.update(n_train=train.n, n_val=val.n, monitor=monitor, num_classes=n_out)
    if recalibrate_bn:  # only when on, so that runs saved before these options existed still resume
        config["recalibrate_bn"] = True
    if augment_options:
        config["augment_options"] = dict(augment_options)
    meta = {"mean": mean, "std": std, "image_size": list(train.image_shape[1:]), "num_classes": n_out}
    meta.update(monitor=monitor, pos_weight=_loss_pos_weight(loss_fn), **(checkpoint_meta or {}))

    history, best_score, best_state = [], None, None
    last_path = resume_path(checkpoint_path) if checkpoint_path is not None else None
    if resume and last_path.is_file():
        saved = load_training_state(last_path, model, optimizer, scaler, rngs, config)
        history, best_score = list(saved["history"]), saved["best_score"]

    step_model = torch.compile(model) if compile else model
    benchmark_before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device.type == "cuda"
    try:
        for epoch in range(len(history), epochs):
            start = time.perf_counter()
            bar = progress_bar(
                total=max(1, train.n // batch_size), desc=f"epoch {epoch + 1}/{epochs}", enabled=progress
            )
            model.train()
            order = torch.randperm(train.n, generator=rngs["order"], device=train.index_device)
            loss_sum, seen = torch.zeros((), device=device), 0
            for raw, y in train.batches(batch_size, order, drop_last=True):
                x = prepare_batch(raw, train.scale, mean, std, augment, rngs["augment"], channels_last)
                loss_sum += train_step(step_model, x, y, loss_fn, optimizer, scaler, amp_dtype) * len(raw)
                seen += len(raw)
                bar.update()
            train_loss = loss_sum.item() / seen  # the one host sync of the training epoch
            train_seconds = time.perf_counter() - start
            if recalibrate_bn:
                recalibrate_batchnorm(model, train, mean, std, 2 * batch_size, amp_dtype, channels_last)
            val_loss, val_acc, val_auc = _validate(
                model, val, loss_fn, mean, std, 2 * batch_size, amp_dtype, channels_last
            )
            score = {"val_auc": val_auc, "val_acc": val_acc, "val_loss": val_loss}[monitor]
            improved = _is_better(score, best_score, MONITORS[monitor])
            row = dict(
                zip(HISTORY_COLUMNS[:5], (epoch + 1, train_loss, val_loss, val_acc, val_auc), strict=True)
            )
            row.update(lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - start)
            row.update(images_per_s=seen / train_seconds, best=improved)
            history.append(row)

            if improved:
                best_score = score
                if checkpoint_path is not None:
                    save_checkpoint(
                        checkpoint_path, model, **meta, epoch=epoch + 1, metrics=row, history=history
                    )
                elif restore_best:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if last_path is not None:
                save_training_state(
                    last_path,
                    model,
                    optimizer,
                    scaler,
                    rngs,
                    history=history,
                    best_score=best_score,
                    config=config,
                )
            bar.set_postfix(
                {"train_loss": f"{train_loss:.4f}", "val_loss": f"{val_loss:.4f}", monitor: f"{score:.4f}"}
            )
            bar.close()
    except torch.cuda.OutOfMemoryError as error:  # the most common failure on a shared or free GPU
        raise torch.cuda.OutOfMemoryError(
            f"{error}\n\nThe GPU ran out of memory while training with batch_size={batch_size}. Free the memory "
            "held by earlier runs (Colab: Runtime > Restart session), or train with a smaller batch_size "
            "(notebook 02: cfg['batch_size'] = 128 before calling fit). Finished epochs are saved when a "
            "checkpoint_path is given, and resume=True continues from them."
        ) from error
    finally:
        torch.backends.cudnn.benchmark = benchmark_before

    if restore_best and checkpoint_path is not None and Path(checkpoint_path).is_file():
        load_checkpoint(checkpoint_path, model)
    elif restore_best and best_state is not None:
        model.load_state_dict(best_state)
    return pd.DataFrame(history, columns=HISTORY_COLUMNS)


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    data: DeviceData,
    mean: float,
    std: float,
    batch_size: int = 128,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> int:
    """Re-estimate every BatchNorm's running mean and variance on ``data``; returns the number of layers.

    In training mode BatchNorm normalises with the statistics of the batch; in eval mode with running
    averages updated at every step with momentum 0.1, so after ``t`` steps the start values (mean 0,
    variance 1) still weigh ``0.9**t`` (0.39 after 9 steps) and the older steps, taken with other
    weights, weigh most of the rest. With only a few steps per run (smoke mode) the eval-mode network then
    sees wrongly scaled activations: huge logits and a validation loss far above the training loss.
    This recomputes the statistics with the current weights: running averages reset, then one pass over
    ``data`` (no augmentation, no gradients) with exact averaging (``momentum=None``), every other module
    in eval mode ("precise BN", Wu & Johnson 2021). Cost: one forward pass over ``data``.
    Weights are untouched; the train/eval flags and momenta are restored. Taught in
    ``notebooks/02_training_resnet18.ipynb``.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches of this pass
        norm.train()
    drop_last = data.n > batch_size and data.n % batch_size == 1  # a batch of one has no variance
    try:
        for raw, _ in data.batches(batch_size, drop_last=drop_last):
            x = prepare_batch(raw, data.scale, mean, std, channels_last=channels_last)
            with torch.autocast(
                x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
            ):
                model(x)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        for module, training in modes.items():
            module.train(training)
    return len(norms)


def _validate(
    model: nn.Module,
    val: DeviceData,
    loss_fn: _Loss,
    mean: float,
    std: float,
    batch_size: int,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
) -> tuple[float, float, float]:
    """Validation loss, accuracy and ROC-AUC: logits and loss on the device, one copy to the host."""
    logits = logits_for(model, val, mean, std, batch_size, amp_dtype, channels_last)
    val_loss = loss_fn(logits, val.labels).item()
    return (val_loss, *_accuracy_auc(logits.cpu().numpy(), val.labels_np))


def _loss_pos_weight(loss_fn: _Loss) -> float | None:
    """The ``pos_weight`` a BCE loss uses (for the checkpoint's meta), else None."""
    weight = getattr(loss_fn.loss, "pos_weight", None)
    return None if weight is None else float(weight)
