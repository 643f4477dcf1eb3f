"""Checkpoints that are safe to load and safe to write, and the state that lets a training run resume.

Taught in ``notebooks/02_training_resnet18.ipynb``; used by :func:`helpers.train.fit` (which re-exports
:func:`save_checkpoint` and :func:`load_checkpoint`).

A checkpoint is a dict ``{"format", "state_dict", "meta"}`` holding only tensors and plain Python types,
so it loads with ``torch.load(weights_only=True)``: unlike a full pickle, such a file cannot run code
when opened. Writes go to a temporary name in the same folder and are renamed with ``os.replace``
(atomic on POSIX and Windows), so a crash mid-save never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "resume_path", "save_checkpoint"]

CHECKPOINT_FORMAT = "xai-course-checkpoint/1"


def _plain(value: Any, where: str = "meta") -> Any:
    """``value`` as tensors and plain Python types, the only things ``torch.load(weights_only=True)`` reads.

    DataFrames become lists of records, NumPy scalars and arrays Python numbers and lists, paths strings.
    """
    if isinstance(value, pd.DataFrame):
        return [_plain(r, where) for r in value.to_dict("records")]
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, where) for v in value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    raise ValueError(
        f"checkpoint {where} is a {type(value).__name__}; store only tensors and plain Python types"
    )


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **meta: Any) -> Path:
    """Save the weights of ``model`` and ``meta`` to ``path`` atomically; returns the path.

    ``meta`` holds tensors and plain Python types (DataFrames are stored as records); ``architecture``
    and ``architecture_kwargs`` are taken from the model (set by :mod:`helpers.models`) when not given.
    A failing save leaves the previous file intact and no temporary file.
    Taught in ``notebooks/02_training_resnet18.ipynb``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper shares the original's weights
    meta.setdefault("architecture", getattr(model, "architecture_name", type(model).__name__))
    meta.setdefault("architecture_kwargs", getattr(model, "architecture_kwargs", {}))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = {"format": CHECKPOINT_FORMAT, "state_dict": state, "meta": _plain(meta)}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module | None = None, map_location: Any = "cpu"
) -> tuple[nn.Module, dict]:
    """Load a checkpoint written by :func:`save_checkpoint` -> ``(model, meta)``.

    Uses ``torch.load(weights_only=True)``. Without ``model`` the architecture named in the meta is
    rebuilt (``resnet18_xray`` or ``breath_cnn``, see ``helpers.models.ARCHITECTURES``); the weights are
    loaded into it and it is returned in train mode, on the CPU unless ``model`` lived elsewhere.
    Taught in ``notebooks/02_training_resnet18.ipynb``.
    """
    from helpers.models import ARCHITECTURES

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there (train first, or check the path)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path}: not a readable checkpoint (torch.load with weights_only=True: {err})"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a course checkpoint (no format {CHECKPOINT_FORMAT!r})")
    meta = payload["meta"]
    if model is None:
        name = meta.get("architecture")
        if name not in ARCHITECTURES:
            raise ValueError(f"{path}: unknown architecture {name!r}; pass the model to load into")
        model = ARCHITECTURES[name](**meta.get("architecture_kwargs", {}))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"{path}: the weights do not fit the model: {err}") from err
    return model, meta


def resume_path(checkpoint_path: str | os.PathLike) -> Path:
    """Where :func:`helpers.train.fit` keeps the resumable state of a run: ``best.pt`` -> ``best.last.pt``."""
    path = Path(checkpoint_path)
    return path.with_name(path.stem + ".last" + path.suffix)


def save_training_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    generators: dict[str, torch.Generator],
    **meta: Any,
) -> None:
    """Everything needed to continue after the last complete epoch: weights, optimizer and scaler state,
    the global torch RNG (CPU and CUDA) and the named ``generators`` (shuffling, augmentation)."""
    rng = {name: g.get_state() for name, g in generators.items()}
    rng["torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_checkpoint(
        path, model, optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), rng=rng, **meta
    )


def load_training_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    generators: dict[str, torch.Generator],
    config: dict,
) -> dict:
    """Restore what :func:`save_training_state` wrote, in place; returns its meta.

    ``config`` (batch size, learning rate, seed, data sizes ...) must equal the saved ``meta["config"]``:
    continuing a run with other settings would silently produce a different run.
    """
    _, meta = load_checkpoint(path, model)
    saved = meta.get("config", {})
    keys = list(config) + [k for k in saved if k not in config]  # a setting dropped is a change too
    changed = {
        k: {"saved": saved.get(k), "now": config.get(k)} for k in keys if saved.get(k) != config.get(k)
    }
    if changed:
        raise ValueError(
            f"{path}: cannot resume, the saved run used other settings {changed}; "
            "use resume=False or delete the file"
        )
    optimizer.load_state_dict(meta["optimizer"])
    if meta["scaler"]:
        scaler.load_state_dict(meta["scaler"])
    for name, generator in generators.items():
        generator.set_state(meta["rng"][name])
    torch.set_rng_state(meta["rng"]["torch"])
    if "cuda" in meta["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(meta["rng"]["cuda"])
    return meta
