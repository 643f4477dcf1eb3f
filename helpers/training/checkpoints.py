"""Checkpoints that are safe to load and safe to write, and the state that lets a training run resume.

Taught in ``notebooks/02_training_resnet18.ipynb``; used by :func:`helpers.training.loop.fit` through
:class:`RunCheckpoints` (the best epoch, and the state that lets a run resume).

A checkpoint is a dict ``{"format", "state_dict", "meta"}`` holding only tensors and plain Python types,
so it loads with ``torch.load(weights_only=True)``: unlike a full pickle, such a file cannot run code
when opened. Writes are atomic (:func:`helpers.files.atomic_path`), so a crash mid-save never leaves a
half-written checkpoint behind; a full disk raises :class:`helpers.files.DiskFullError` naming the file, and
the temporary file of a killed save (``kill -9``, a dead kernel) is removed by the next save of that checkpoint
(:func:`remove_stale_temporaries`). An empty or truncated checkpoint is reported as such, with what to do.
"""

from __future__ import annotations

import glob
import os
import pickle
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from helpers.files import STALE_TMP_S, atomic_path, disk_full_guard, require_free_space
from helpers.training.models import ARCHITECTURES

CHECKPOINT_FORMAT = "xai-course-checkpoint/1"
#: What to do about a damaged checkpoint, the end of every such error message.
_REDO = "delete it and run again: the training that wrote it resumes from its last good state or retrains"


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
    and ``architecture_kwargs`` are taken from the model (set by :mod:`helpers.training.models`) when not given.
    A failing save leaves the previous file intact and no temporary file; a full disk raises
    :class:`helpers.files.DiskFullError` naming the file. Temporaries of killed saves of this checkpoint are
    removed first (:func:`remove_stale_temporaries`). Taught in ``notebooks/02_training_resnet18.ipynb``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper shares the original's weights
    meta.setdefault("architecture", getattr(model, "architecture_name", type(model).__name__))
    meta.setdefault("architecture_kwargs", getattr(model, "architecture_kwargs", {}))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = {"format": CHECKPOINT_FORMAT, "state_dict": state, "meta": _plain(meta)}
    tensors = [*state.values(), *(v for v in _leaves(payload["meta"]) if isinstance(v, torch.Tensor))]
    require_free_space(path.parent, sum(t.nbytes for t in tensors), f"the checkpoint {path.name}")
    with disk_full_guard(path, "the checkpoint"), atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _leaves(value: Any) -> list[Any]:
    """The non-container values inside nested dicts, lists and tuples."""
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (always True on Windows, where ``os.kill`` would end it)."""
    if os.name == "nt" or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that killed saves of ``path`` left beside it; returns the removed files.

    :func:`helpers.files.atomic_path` names them ``.<name>.<pid>.<random>.tmp``; one is stale when its
    process no longer runs on this host, or when it is older than ``helpers.files.STALE_TMP_S`` seconds.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[0-9a-f]+\.tmp")
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = pattern.fullmatch(tmp.name)
        try:
            if match and (not _pid_alive(int(match[1])) or time.time() - tmp.stat().st_mtime > STALE_TMP_S):
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:  # removed meanwhile by another process
            pass
    return removed


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module | None = None, map_location: Any = "cpu"
) -> tuple[nn.Module, dict]:
    """Load a checkpoint written by :func:`save_checkpoint` -> ``(model, meta)``.

    Uses ``torch.load(weights_only=True)``. Without ``model`` the architecture named in the meta is
    rebuilt (``resnet18_xray`` or ``breath_cnn``, see ``helpers.training.models.ARCHITECTURES``); the weights are
    loaded into it and it is returned in train mode, on the CPU unless ``model`` lived elsewhere.
    Taught in ``notebooks/02_training_resnet18.ipynb``.
    """
    path = Path(path)
    payload = _read_checkpoint(path, map_location)
    meta = payload["meta"]
    if model is None:
        name = meta.get("architecture")
        if name not in ARCHITECTURES:
            raise ValueError(f"{path}: unknown architecture {name!r}; pass the model to load into")
        model = ARCHITECTURES[name](**meta.get("architecture_kwargs", {}))
    _load_weights(path, model, payload["state_dict"])
    return model, meta


def _read_checkpoint(path: Path, map_location: Any = "cpu") -> dict:
    """The checked ``{"format", "state_dict", "meta"}`` payload of the course checkpoint at ``path``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there (train first, or check the path)")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(
            f"{path}: the checkpoint is empty (0 bytes), left by a save that did not finish; {_REDO}"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # a whole file holding more than tensors and plain types
        raise ValueError(
            f"{path}: not a readable checkpoint (torch.load with weights_only=True: {err})"
        ) from err
    except Exception as err:
        raise ValueError(
            f"{path}: the checkpoint is truncated or corrupt ({size} bytes; torch.load: {_first_sentence(err)}); "
            f"{_REDO}"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a course checkpoint (no format {CHECKPOINT_FORMAT!r})")
    return payload


def _first_sentence(err: BaseException) -> str:
    """The first sentence of an error's message (torch's go on for lines), or its type when it has none."""
    text = str(err).strip()
    return text.split(". ")[0].splitlines()[0][:200] if text else type(err).__name__


def _load_weights(path: Path, model: nn.Module, state_dict: dict) -> None:
    """Load ``state_dict`` (read from ``path``) into ``model``; a ValueError naming the file if it misfits."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        raise ValueError(f"{path}: the weights do not fit the model: {err}") from err


def resume_path(checkpoint_path: str | os.PathLike) -> Path:
    """Where :func:`helpers.training.loop.fit` keeps the resumable state of a run: ``best.pt`` -> ``best.last.pt``."""
    path = Path(checkpoint_path)
    return path.with_name(path.stem + ".last" + path.suffix)


def epochs_done(checkpoint_path: str | os.PathLike) -> int | None:
    """How many epochs the run saving to ``checkpoint_path`` has finished (from its resumable state, read
    lazily: no weights are loaded), or None when there is no readable state. Lets a caller tell a finished run
    from an interrupted one, whose best checkpoint already exists after its first epoch."""
    state = resume_path(checkpoint_path)
    try:
        payload = torch.load(state, map_location="cpu", weights_only=True, mmap=True)
        return len(payload["meta"]["history"])
    except (OSError, RuntimeError, ValueError, KeyError, TypeError):
        return None


class RunCheckpoints:
    """Where a training run keeps its best epoch (``checkpoint_path``) and its resumable state (beside it,
    :func:`resume_path`), and how it reads them back; with no path, the best weights are kept in memory.

    ``settings``: what a resumed run must share with the saved one (batch size, learning rate, seed, data
    sizes, augmentation ...); ``meta``: what the best checkpoint records besides the weights. The state
    holds the weights, the optimizer and loss-scaler state, the global torch RNG (CPU and CUDA) and the
    run's named generators, so a resumed run continues exactly where the interrupted one stopped. Opening
    one removes the temporaries that killed saves of both files left (:func:`remove_stale_temporaries`).
    Used by :func:`helpers.training.loop.fit`; taught in ``notebooks/02_training_resnet18.ipynb``.
    """

    def __init__(self, checkpoint_path: str | os.PathLike | None, settings: dict, meta: dict):
        self.best_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.state_path = None if checkpoint_path is None else resume_path(checkpoint_path)
        self.settings, self.meta, self.best_weights = settings, meta, None
        for path in (self.best_path, self.state_path):
            if path is not None and path.parent.is_dir():
                remove_stale_temporaries(path)

    def resume(self, model: nn.Module, opt: Any) -> tuple[list[dict], float | None]:
        """Restore the saved state into ``model`` and ``opt`` (a ``helpers.training.loop.Optimisation``);
        returns ``(history, best score)``, or ``([], None)`` when nothing was saved yet. Raises ``ValueError``
        when the saved run used other settings: continuing it would silently make a different run."""
        if self.state_path is None:
            raise ValueError("resume=True needs a checkpoint_path to resume from")
        if not self.state_path.is_file():
            return [], None
        payload = _read_checkpoint(self.state_path)  # load nothing until the settings match
        meta = payload["meta"]
        saved = meta.get("config", {})
        keys = list(self.settings) + [k for k in saved if k not in self.settings]  # a dropped one is a change
        changed = {
            k: {"saved": saved.get(k), "now": self.settings.get(k)}
            for k in keys
            if saved.get(k) != self.settings.get(k)
        }
        if changed:
            raise ValueError(
                f"{self.state_path}: cannot resume, the saved run used other settings {changed}; "
                "use resume=False or delete the file"
            )
        _load_weights(self.state_path, model, payload["state_dict"])
        opt.optimizer.load_state_dict(meta["optimizer"])
        if meta["scaler"]:
            opt.scaler.load_state_dict(meta["scaler"])
        for name, generator in opt.generators.items():
            generator.set_state(meta["rng"][name])
        torch.set_rng_state(meta["rng"]["torch"])
        if "cuda" in meta["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state(meta["rng"]["cuda"])
        return list(meta["history"]), meta["best_score"]

    def end_epoch(
        self, model: nn.Module, opt: Any, history: list[dict], best_score: float | None, improved: bool
    ) -> None:
        """After an epoch: save (or keep) the weights when it ``improved``, then the resumable state."""
        if improved and self.best_path is not None:
            save_checkpoint(
                self.best_path, model, **self.meta, epoch=len(history), metrics=history[-1], history=history
            )
        elif improved:
            self.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if self.state_path is None:
            return
        rng = {name: g.get_state() for name, g in opt.generators.items()}
        rng["torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state()
        save_checkpoint(
            self.state_path,
            model,
            optimizer=opt.optimizer.state_dict(),
            scaler=opt.scaler.state_dict(),
            rng=rng,
            history=history,
            best_score=best_score,
            config=self.settings,
        )

    def restore_best(self, model: nn.Module) -> None:
        """Load the best epoch's weights into ``model`` (from the file, or from memory)."""
        if self.best_path is not None and self.best_path.is_file():
            load_checkpoint(self.best_path, model)
        elif self.best_weights is not None:
            model.load_state_dict(self.best_weights)
