"""A plain-PyTorch training loop that keeps the GPU busy, with checkpoints that survive interruptions.

Taught in ``notebooks/02_training_resnet18.ipynb`` (and reused for the breath-sound CNN in
``notebooks/06_breath_sounds.ipynb``). Read it in this order: :func:`train_step` (one batch),
:func:`train_one_epoch` (one pass over the shuffled training set), :func:`evaluate` (validation loss,
accuracy, ROC-AUC), then :func:`fit`, which repeats the two, keeps the best epoch and saves what a resumed
run needs (:class:`helpers.training.checkpoints.RunCheckpoints`).

The speed tricks, each explained where it is used:

1. Data on the device (:class:`helpers.training.device_data.DeviceData`): the uint8 images are copied to GPU
   memory once; a batch is then an ``index_select``, no DataLoader, no workers.
2. Scaling to [0, 1] and augmentation (:class:`helpers.xray.augment.GpuAugment`) run on the device, on the
   whole batch at once; the model standardises its own input (:mod:`helpers.training.models`).
3. Mixed precision for training: bf16 autocast on Ampere and newer GPUs; fp16 + ``GradScaler`` on older ones
   (T4). Validation always runs in fp32, so the score that picks the best epoch does not depend on the GPU.
4. ``channels_last`` memory layout on CUDA, which the tensor cores' convolution kernels prefer.
5. No host synchronisation per step: the loss is summed on the device and read once per epoch; the
   shuffling permutation is drawn on the device. (A ``loss.item()`` per step makes the CPU wait for
   the GPU every step, so the GPU then waits for the CPU to queue the next step.)
6. Fused Adam on CUDA (one kernel updates all parameters), ``cudnn.benchmark`` (fixed batch shapes, so
   the fastest convolution algorithm is measured once) and, off by default, ``torch.compile`` (with
   ``compile="reduce-overhead"``: CUDA graphs), which pays for its compilation only on long runs.
7. Checkpoints written by a background thread while the next epoch trains; only the copy of the state to
   host memory holds the epoch up (:class:`helpers.training.checkpoints.RunCheckpoints`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import math
import os
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm.auto import tqdm

from helpers.config import pick_device
from helpers.model_state import eval_mode
from helpers.progress import progress_bar
from helpers.training import distributed
from helpers.training.checkpoints import RunCheckpoints
from helpers.training.device_data import DeviceData, prepare_batch
from helpers.training.inference import logits_for
from helpers.xray.augment import GpuAugment

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


def precision_name(amp_dtype: torch.dtype | None) -> str:
    """'bf16', 'fp16' or 'fp32' (no autocast): how a run computed, as its checkpoint records it."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[amp_dtype]


#: A CUDA GPU with at least this much memory (A100, H100, H200 ...) counts as large: see :func:`is_large_gpu`.
LARGE_GPU_BYTES = 40 * 2**30


def is_large_gpu(device: Any = None) -> bool:
    """True on a CUDA GPU of compute capability >= 8 with at least 40 GiB (A100, H100, H200; not a T4, L4 or
    a 24 GB consumer card), where a batch of 64 films is too small to keep the GPU busy; see
    :func:`helpers.course.pipeline.xray_training_config`. Asks the GPU only when CUDA is available."""
    if not torch.cuda.is_available():
        return False
    props = torch.cuda.get_device_properties(torch.device("cuda") if device is None else device)
    return props.major >= 8 and props.total_memory >= LARGE_GPU_BYTES


def scaled_lr(lr: float, batch_size: int, base_batch_size: int) -> float:
    """Adam's learning rate for ``batch_size`` when ``lr`` was chosen for ``base_batch_size``: the square-root
    rule, ``lr * sqrt(batch_size / base_batch_size)`` (for adaptive optimisers such as Adam; the linear rule is
    SGD's). Taught in ``notebooks/02_training_resnet18.ipynb``."""
    return lr * math.sqrt(batch_size / base_batch_size)


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

    With fp16 the ``scaler`` multiplies the loss before ``backward`` (fp16 gradients would underflow) and
    divides the gradients before the step; a disabled scaler (bf16, fp32) passes everything through.

    Taught in ``notebooks/02_training_resnet18.ipynb``.
    """
    with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits = model(x)
    loss = loss_fn(logits, y)
    scaler = scaler or torch.amp.GradScaler(x.device.type, enabled=False)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
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


def make_loss(n_out: int, labels: np.ndarray, pos_weight: Any, class_weights: Any, device) -> _Loss:
    """The loss with its class balancing: BCE ``pos_weight`` (1 logit: 'auto' = n_neg / n_pos, a number or
    None) or CE ``class_weights`` (K logits: 'auto' = balanced, K numbers or None)."""
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


def _output_size(model: nn.Module, image_shape: tuple[int, ...], device: torch.device) -> int:
    """Number of logits K, found by a forward pass of one blank image in eval mode."""
    with eval_mode(model), torch.no_grad():
        out = model(torch.zeros((1, *image_shape), device=device))
    if out.ndim != 2:
        raise ValueError(f"the model should return B x K logits, it returned shape {tuple(out.shape)}")
    return int(out.shape[1])


@dataclasses.dataclass
class Optimisation:
    """How every step of a run is taken: the optimizer, mixed precision (the autocast dtype and the loss
    scaler), the memory layout, and the run's seeded generators (``"order"`` for shuffling, drawn where the
    batch indices live; ``"augment"`` on the device). Made by :func:`make_optimisation`."""

    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    channels_last: bool
    generators: dict[str, torch.Generator]


def make_optimisation(
    model: nn.Module,
    data: DeviceData,
    *,
    lr: float,
    weight_decay: float,
    amp: Any,
    channels_last: bool,
    seed: int,
) -> Optimisation:
    """Adam (fused on CUDA), the autocast dtype of :func:`resolve_amp` with a ``GradScaler`` that is enabled
    for fp16 only (a disabled scaler is a no-op), ``channels_last`` on CUDA only, and seeded generators.
    Puts ``model`` in the chosen memory layout. Taught in ``notebooks/02_training_resnet18.ipynb``."""
    device = data.device
    amp_dtype = resolve_amp(amp, device)
    channels_last = channels_last and device.type == "cuda"
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    fused = True if device.type == "cuda" else None
    return Optimisation(
        optimizer=torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused),
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        amp_dtype=amp_dtype,
        channels_last=channels_last,
        generators={
            "order": torch.Generator(device=data.index_device).manual_seed(seed),
            "augment": torch.Generator(device=device).manual_seed(seed + 1),
        },
    )


def train_one_epoch(
    model: nn.Module,
    data: DeviceData,
    loss_fn: nn.Module,
    opt: Optimisation,
    batch_size: int,
    augment: GpuAugment | None = None,
    bar: tqdm | None = None,
) -> tuple[float, float]:
    """One pass over ``data`` in a shuffled order, in fixed-size batches; returns (mean loss, images per s).

    The last incomplete batch is dropped (BatchNorm cannot train on a single image). The loss is summed on
    the device and read once at the end: the epoch's one host sync. Taught in
    ``notebooks/02_training_resnet18.ipynb``.
    """
    start = time.perf_counter()
    model.train()
    order = torch.randperm(data.n, generator=opt.generators["order"], device=data.index_device)
    loss_sum, seen = torch.zeros((), device=data.device), 0
    for raw, y in data.batches(batch_size, order, drop_last=True):
        x = prepare_batch(raw, data.scale, augment, opt.generators["augment"], opt.channels_last)
        loss_sum += train_step(model, x, y, loss_fn, opt.optimizer, opt.scaler, opt.amp_dtype) * len(raw)
        seen += len(raw)
        if bar is not None:
            bar.update()
    return loss_sum.item() / seen, seen / (time.perf_counter() - start)


def evaluate(
    model: nn.Module,
    data: DeviceData,
    loss_fn: nn.Module,
    batch_size: int,
    channels_last: bool = False,
    ranks: distributed.Ranks | None = None,
) -> dict[str, float]:
    """``{"val_loss", "val_acc", "val_auc"}`` on labelled ``data``: logits and loss on the device (eval mode,
    no gradients), one copy of the logits to the host for accuracy (threshold 0.5 / argmax) and ROC-AUC
    (macro one-vs-rest for K > 1; NaN when a class is missing).

    Always in fp32, whatever precision the training used: bf16 logits keep 8 significant bits, so thousands of
    validation scores would tie and the ROC-AUC that picks the best epoch would depend on the GPU generation
    and differ from notebook 03's evaluation. With ``ranks`` (a distributed run) each rank scores its slice of
    the validation set and the logits of all ranks are gathered, so every rank computes the same metrics.
    Taught in ``notebooks/02_training_resnet18.ipynb``.
    """
    logits = logits_for(model, data, batch_size, amp_dtype=None, channels_last=channels_last)
    labels = data.labels
    if ranks is not None:
        logits, labels = distributed.gather_rows(logits, ranks), distributed.gather_rows(labels, ranks)
    val_loss = loss_fn(logits, labels).item()
    accuracy, auc = _accuracy_auc(logits.cpu().numpy(), labels.cpu().numpy())
    return {"val_loss": val_loss, "val_acc": accuracy, "val_auc": auc}


def _oom_phase(traceback: types.TracebackType | None) -> str:
    """Where in ``fit`` an out-of-memory error happened: 'data', 'validation' or 'training'."""
    names = set()
    while traceback is not None:
        names.add(traceback.tb_frame.f_code.co_name)
        traceback = traceback.tb_next
    if "_device_data" in names:
        return "data"
    return "validation" if names & {"evaluate", "recalibrate_batchnorm", "logits_for"} else "training"


def out_of_memory_advice(phase: str, batch_size: int, checkpoint_path: Any) -> str:
    """What to do after CUDA ran out of memory in ``phase`` ('data', 'validation' or 'training') of a
    :func:`fit` with ``batch_size``; finished epochs are kept when there is a ``checkpoint_path``."""
    restart = (
        "Free the GPU memory that other runs hold (a model or tensors of an earlier cell, another notebook; "
        "torch.cuda.memory_allocated() shows what this process holds; Colab: Runtime > Restart session)"
    )
    if phase == "data":
        return (
            f"The GPU ran out of memory while copying the films to it. {restart}, then run again. A smaller "
            "batch_size does not help here: the films are copied only when they fit with memory to spare "
            "(otherwise they stay in host memory), so another process took the memory meanwhile."
        )
    what = "training"
    if phase == "validation":
        what = f"validating (batches of 2 x batch_size = {2 * batch_size})"
    if checkpoint_path is None:
        kept = "No checkpoint_path was given, so a new run starts again from the first epoch."
    else:
        kept = (
            f"The finished epochs are saved beside {os.fspath(checkpoint_path)}: with resume=True the run "
            "continues from them at the smaller batch size (the remaining epochs then differ slightly from a "
            f"run at batch_size={batch_size})."
        )
    return (
        f"The GPU ran out of memory while {what} with batch_size={batch_size}. {restart}, or train with a "
        f"smaller batch: fit(..., batch_size={max(1, batch_size // 2)}) (notebook 02: "
        f'cfg["batch_size"] = {max(1, batch_size // 2)} before the training cell). {kept}'
    )


@contextlib.contextmanager
def _gpu_run(device: torch.device, batch_size: int, checkpoint_path: Any) -> Iterator[None]:
    """``cudnn.benchmark`` on CUDA for the run (restored after), and a CUDA out-of-memory error, from the
    data copy to the last validation, that says what to do (:func:`out_of_memory_advice`)."""
    benchmark_before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device.type == "cuda"
    try:
        yield
    except torch.cuda.OutOfMemoryError as error:  # the most common failure on a shared or free GPU
        advice = out_of_memory_advice(_oom_phase(error.__traceback__), batch_size, checkpoint_path)
        raise torch.cuda.OutOfMemoryError(f"{error}\n\n{advice}") from error
    finally:
        torch.backends.cudnn.benchmark = benchmark_before


def _frees_memory_after_oom(function: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate ``fit``: after a CUDA out-of-memory error, re-raise its message without its traceback.

    The traceback of an error references every frame it passed through, and with them the films, the
    optimizer state and the activations on the GPU; Jupyter keeps the last error (``sys.last_traceback``), so
    that memory would stay taken until the next error. Here the error is dropped, its memory collected and
    returned to the driver, and a new error with the same message is raised from this frame, which holds none
    of it. Nothing changes for any other error.
    """

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except torch.cuda.OutOfMemoryError as error:
            message = str(error)
        gc.collect()  # frames and tensors of the dropped traceback
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        raise torch.cuda.OutOfMemoryError(message)

    return wrapper


def _settings(augment: GpuAugment | None, **settings: Any) -> dict[str, Any]:
    """What a resumed run must share with the saved one (see :meth:`RunCheckpoints.resume`)."""
    if dataclasses.is_dataclass(augment):
        settings["augment"] = dataclasses.asdict(augment)
    else:
        settings["augment"] = None if augment is None else repr(augment)
    return settings


def _compiled(model: nn.Module, compile: bool | str) -> nn.Module:
    """``model``, or ``torch.compile(model)`` sharing its weights: ``True`` for the default mode, or a mode
    such as ``"reduce-overhead"`` (CUDA graphs: one launch replays a whole step) or ``"max-autotune"``."""
    if not compile:
        return model
    return torch.compile(model, mode=None if compile is True else compile)


@_frees_memory_after_oom
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
    class_weights: Any = None,
    augment: GpuAugment | None = None,
    recalibrate_bn: bool = False,
    monitor: str = "val_auc",
    seed: int = 0,
    device: Any = None,
    amp: Any = "auto",
    channels_last: bool = True,
    compile: bool | str = False,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_meta: dict | None = None,
    resume: bool = False,
    restore_best: bool = True,
    progress: bool = True,
    ranks: distributed.Ranks | None = None,
    sync_bn: bool = False,
) -> pd.DataFrame:
    """Train ``model`` with Adam; returns the history, one row per epoch (columns ``HISTORY_COLUMNS``).

    Images: N x H x W or N x C x H x W, uint8 (fed to the model as x / 255) or float (as is, e.g. log-mel
    patches). Labels: 0/1 for a 1-logit model (BCEWithLogits, ``pos_weight``), 0..K-1 for K logits
    (CrossEntropy, ``class_weights``), see :func:`make_loss`. ``augment`` applies to training batches only;
    ``recalibrate_bn`` re-estimates the BatchNorm statistics before each validation
    (:func:`recalibrate_batchnorm`). ``monitor`` picks the best epoch; validation runs in fp32.
    ``amp``: see :func:`resolve_amp`. ``compile``: ``True`` or a ``torch.compile`` mode for the training
    steps (``"reduce-overhead"``: CUDA graphs); off by default, because compiling takes longer than it saves
    on a short run or a 2-vCPU Colab. Deterministic on the CPU for a given ``seed`` (it also seeds torch's
    global RNG, for dropout).

    With ``checkpoint_path`` the best epoch is saved there (weights + ``checkpoint_meta`` + the device and the
    precision) and the full state after every epoch beside it, written in the background while the next
    epoch trains. ``resume=True`` continues from that state with the same history as an uninterrupted run
    (and returns at once when the run is complete); it may continue on another device or with another
    ``batch_size``, saying so. ``seconds`` in the history is the whole epoch: training, validation and what
    the checkpoint holds up (the copy of the state to host memory). ``restore_best`` leaves the best epoch's
    weights in ``model``, in the default memory layout like a reloaded checkpoint. After a CUDA
    out-of-memory error the memory of the run is freed and the message says what to do.

    ``ranks`` (from :func:`helpers.training.distributed.process_group`, under ``torchrun``) runs the same loop
    as one of several processes with DistributedDataParallel: each rank trains on its shard of the training
    set with ``batch_size / world_size`` images per step (``batch_size`` stays the global batch), validates its
    slice of the validation set, and only rank 0 writes the checkpoints; ``sync_bn`` uses SyncBatchNorm (CUDA
    only). See :mod:`helpers.training.distributed`. Taught in ``notebooks/02_training_resnet18.ipynb``,
    ``06_breath_sounds`` and ``08_scaling_up``.
    """
    if monitor not in MONITORS:
        raise ValueError(f"monitor must be one of {sorted(MONITORS)}, got {monitor!r}")
    device = (
        ranks.device if ranks is not None else torch.device(device) if device is not None else pick_device()
    )
    torch.manual_seed(seed)
    settings = _settings(augment, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed)
    settings.update(monitor=monitor, recalibrate_bn=recalibrate_bn, n_train=len(train_y), n_val=len(val_y))
    all_train_y, step_batch = train_y, distributed.rank_batch(batch_size, ranks)
    main = ranks is None or ranks.is_main
    if ranks is not None:  # this rank's shard of the training set and slice of the validation set
        train_x, train_y, val_x, val_y = distributed.shard_arrays(train_x, train_y, val_x, val_y, ranks, seed)
    with _gpu_run(device, batch_size, checkpoint_path):
        train, val, n_out = _device_data(model, train_x, train_y, val_x, val_y, device)
        labels = _labels_for(all_train_y, n_out, "train_y")  # the class balance of the whole training set
        loss_fn = make_loss(n_out, labels, pos_weight, class_weights, device)
        opt = make_optimisation(
            model, train, lr=lr, weight_decay=weight_decay, amp=amp, channels_last=channels_last, seed=seed
        )
        run = _run_checkpoints(checkpoint_path, checkpoint_meta, settings, train, loss_fn, opt, writes=main)
        history, best = run.resume(model, opt, epochs) if resume else ([], None)
        step_model = _compiled(model if ranks is None else distributed.wrap(model, ranks, sync_bn), compile)
        epoch_args = (model, step_model, train, val, loss_fn, opt, step_batch, augment, recalibrate_bn, ranks)
        with run:  # waits for the last checkpoint files, also when the run is interrupted
            for epoch in range(len(history), epochs):
                start = time.perf_counter()
                distributed.reseed(opt.generators, seed, epoch, ranks)  # several ranks: per rank and epoch
                total, desc = max(1, train.n // step_batch), f"epoch {epoch + 1}/{epochs}"
                bar = progress_bar(total=total, desc=desc, enabled=progress and main)
                train_loss, images_per_s, scores = _train_and_validate(*epoch_args, bar)
                improved = _is_better(scores[monitor], best, MONITORS[monitor])
                best = scores[monitor] if improved else best
                row = {"epoch": epoch + 1, "train_loss": train_loss, **scores, "lr": lr}
                history.append({**row, "images_per_s": images_per_s, "best": improved})
                # Copies what to save to host memory, adds "seconds" (the whole epoch, checkpoint included)
                # and leaves the writing of the files to a background thread.
                run.end_epoch(model, opt, history, best, improved, epoch_start=start)
                bar.set_postfix({"train_loss": f"{train_loss:.4f}", monitor: f"{scores[monitor]:.4f}"})
                bar.close()
        distributed.barrier(ranks)  # rank 0's files are complete before any rank reads them
    if restore_best:
        run.restore_best(model)
    model.to(memory_format=torch.contiguous_format)  # as a reloaded checkpoint: the same kernels, outputs
    return pd.DataFrame(history, columns=HISTORY_COLUMNS)


def _train_and_validate(
    model: nn.Module,
    step_model: nn.Module,
    train: DeviceData,
    val: DeviceData,
    loss_fn: _Loss,
    opt: Optimisation,
    step_batch: int,
    augment: GpuAugment | None,
    recalibrate_bn: bool,
    ranks: distributed.Ranks | None,
    bar: tqdm | None,
) -> tuple[float, float, dict[str, float]]:
    """One epoch of :func:`fit`: train (through ``step_model``: compiled, or DDP on several ranks), then
    validate ``model`` in fp32; returns (mean training loss, images per second, validation scores), each the
    same on every rank of a distributed run (losses averaged, images per second summed, logits gathered)."""
    train_loss, images_per_s = train_one_epoch(step_model, train, loss_fn, opt, step_batch, augment, bar)
    if ranks is not None:
        train_loss = distributed.mean_over_ranks(train_loss, ranks)
        images_per_s = distributed.sum_over_ranks(images_per_s, ranks)
    if recalibrate_bn:
        recalibrate_batchnorm(model, train, 2 * step_batch, channels_last=opt.channels_last)
    if ranks is not None:  # every rank validates and saves rank 0's BatchNorm statistics
        distributed.broadcast_buffers(model, ranks)
    return train_loss, images_per_s, evaluate(model, val, loss_fn, 2 * step_batch, opt.channels_last, ranks)


def _run_checkpoints(
    checkpoint_path: Any,
    checkpoint_meta: dict | None,
    settings: dict[str, Any],
    train: DeviceData,
    loss_fn: _Loss,
    opt: Optimisation,
    writes: bool = True,
) -> RunCheckpoints:
    """The run's :class:`RunCheckpoints` (background writes; ``writes=False`` on ranks other than 0): the
    resumable ``settings`` (with the data sizes) completed with the class balancing, the device and the precision; the best checkpoint's meta with the image
    size, the number of classes, ``pos_weight``, the device, the precision and ``checkpoint_meta``."""
    reserved = {"epoch", "metrics", "history", "device", "precision"} & set(checkpoint_meta or {})
    if reserved:
        raise ValueError(f"checkpoint_meta may not set {sorted(reserved)}: fit records them itself")
    n_out, device, precision = loss_fn.n_out, train.device, precision_name(opt.amp_dtype)
    settings = {**settings, "num_classes": n_out}
    settings.update(
        _loss_settings(loss_fn), amp=precision, device=device.type, order_on=train.index_device.type
    )
    meta = {"image_size": list(train.image_shape[1:]), "num_classes": n_out, "monitor": settings["monitor"]}
    meta.update(pos_weight=_loss_pos_weight(loss_fn), device=device.type, precision=precision)
    return RunCheckpoints(
        checkpoint_path, settings, {**meta, **(checkpoint_meta or {})}, background=True, writes=writes
    )


def _device_data(
    model: nn.Module, train_x: Any, train_y: Any, val_x: Any, val_y: Any, device: torch.device
) -> tuple[DeviceData, DeviceData, int]:
    """The training and validation sets on ``device`` with checked labels, and the model's number of logits."""
    image_shape = tuple(train_x.shape[1:]) if len(train_x.shape) == 4 else (1, *train_x.shape[1:])
    n_out = _output_size(model.to(device), image_shape, device)
    train = DeviceData(train_x, _labels_for(train_y, n_out, "train_y"), device)
    val = DeviceData(val_x, _labels_for(val_y, n_out, "val_y"), device)
    if train.n < 2 or val.n < 1:
        raise ValueError(
            f"fit needs 2 or more training images and 1 or more for validation, got {train.n} and {val.n}"
        )
    return train, val, n_out


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    data: DeviceData,
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
    Weights are untouched; the train/eval flags and momenta are restored. :func:`fit` recalibrates in fp32
    (``amp_dtype=None``), the precision of the validation that uses the statistics. Taught in
    ``notebooks/02_training_resnet18.ipynb``.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    drop_last = data.n > batch_size and data.n % batch_size == 1  # a batch of one has no variance
    with eval_mode(model):
        try:
            for norm in norms:
                norm.reset_running_stats()
                norm.momentum = None  # cumulative average over the batches of this pass
                norm.train()
            for raw, _ in data.batches(batch_size, drop_last=drop_last) if norms else ():
                x = prepare_batch(raw, data.scale, channels_last=channels_last)
                with torch.autocast(
                    x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
                ):
                    model(x)
        finally:
            for norm, momentum in zip(norms, momenta, strict=True):
                norm.momentum = momentum
    return len(norms)


def _loss_settings(loss_fn: _Loss) -> dict[str, Any]:
    """The class balancing a loss uses, as plain values: part of a run's resumable settings."""
    weight = getattr(loss_fn.loss, "weight", None)
    return {
        "pos_weight": _loss_pos_weight(loss_fn),
        "class_weights": None if weight is None else weight.tolist(),
    }


def _loss_pos_weight(loss_fn: _Loss) -> float | None:
    """The ``pos_weight`` a BCE loss uses (for the checkpoint's meta), else None."""
    weight = getattr(loss_fn.loss, "pos_weight", None)
    return None if weight is None else float(weight)
