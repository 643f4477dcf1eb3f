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
import hashlib
import os
import pickle
import re
import threading
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


def _plain(value: Any, where: str = "meta", copy: bool = False) -> Any:
    """``value`` as tensors and plain Python types, the only things ``torch.load(weights_only=True)`` reads.

    DataFrames become lists of records, NumPy scalars and arrays Python numbers and lists, paths strings.
    Containers are always new; with ``copy`` every tensor is a new host copy too (nothing shared with the
    caller, as a background write needs), otherwise host tensors are kept as they are.
    """
    if isinstance(value, pd.DataFrame):
        return [_plain(r, where, copy) for r in value.to_dict("records")]
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}[{k!r}]", copy) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, where, copy) for v in value)
    if isinstance(value, torch.Tensor):
        return _host_copy(value) if copy else value.detach().cpu()
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
    return _write_payload(Path(path), _payload(model, meta))


def _host_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous host copy of ``tensor`` that shares no memory with it (one copy, also from the GPU)."""
    tensor = tensor.detach()
    return torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu").copy_(tensor)


def _host_weights(model: nn.Module, copy: bool = False) -> dict[str, torch.Tensor]:
    """The state dict of ``model`` as contiguous host tensors; ``copy``: sharing no memory with ``model``
    (its weights may change while a background thread writes them)."""
    state = model.state_dict()
    if copy:
        return {k: _host_copy(v) for k, v in state.items()}
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _payload(model: nn.Module, meta: dict, copy: bool = False, weights: dict | None = None) -> dict:
    """``{"format", "state_dict", "meta"}`` of ``model`` on the host (``weights``: its
    :func:`_host_weights`, when already made); ``copy``: nothing shared with the model or ``meta``."""
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper shares the original's weights
    meta = {
        "architecture": getattr(model, "architecture_name", type(model).__name__),
        "architecture_kwargs": getattr(model, "architecture_kwargs", {}),
        **meta,
    }
    weights = _host_weights(model, copy) if weights is None else weights
    return {"format": CHECKPOINT_FORMAT, "state_dict": weights, "meta": _plain(meta, copy=copy)}


def _write_payload(path: Path, payload: dict) -> Path:
    """Write a checkpoint payload to ``path`` atomically, after a free-space check (see :func:`save_checkpoint`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tensors = [*payload["state_dict"].values()]
    tensors += [v for v in _leaves(payload["meta"]) if isinstance(v, torch.Tensor)]
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


#: Settings that may differ when a run resumes: where and how fast it computes, not what it learns. A resumed
#: run with other values continues with a printed note (its remaining epochs differ slightly from an
#: uninterrupted run's): a run saved on a GPU continues on a CPU runtime, a run that ran out of GPU memory
#: continues with a smaller batch. Any other change is refused.
MAY_CHANGE_ON_RESUME = ("batch_size", "device", "order_on", "amp")


def derived_seed(seed: int, name: str, epochs_done: int) -> int:
    """A 63-bit seed for generator ``name`` after ``epochs_done`` epochs of a run seeded with ``seed``: the same
    numbers give the same seed, on every machine (used where a saved generator state cannot be restored)."""
    digest = hashlib.sha256(f"{seed}:{name}:{epochs_done}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _set_state(generator: torch.Generator, state: torch.Tensor, saved_on: str | None) -> bool:
    """Restore ``state`` into ``generator`` when it was saved by a generator of the same kind; False if not.

    A CPU generator's state is 5,056 bytes (Mersenne Twister), a CUDA one's 16 (seed and offset of Philox):
    a state saved on one device type cannot be set on the other.
    """
    if saved_on not in (None, generator.device.type) or state.numel() != generator.get_state().numel():
        return False
    try:
        generator.set_state(state)
    except RuntimeError:  # e.g. a state of another PyTorch version
        return False
    return True


def _load_optimizer(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Load ``saved`` into ``optimizer`` but keep its implementation (``fused``, ``foreach``, ``capturable``):
    the saved run's choice was for its device (fused Adam on a GPU). Step counters move to the parameters'
    device where the fused or capturable implementation expects them there."""
    kept = [{k: g[k] for k in ("fused", "foreach", "capturable") if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, implementation in zip(optimizer.param_groups, kept, strict=True):
        group.update(implementation)
        if not (group.get("fused") or group.get("capturable")):
            continue
        for param in group["params"]:
            step = optimizer.state.get(param, {}).get("step")
            if isinstance(step, torch.Tensor):
                optimizer.state[param]["step"] = step.to(param.device, torch.float32)


class RunCheckpoints:
    """Where a training run keeps its best epoch (``checkpoint_path``) and its resumable state (beside it,
    :func:`resume_path`), and how it reads them back; with no path, the best weights are kept in memory.

    ``settings``: what a resumed run must share with the saved one (batch size, learning rate, seed, data
    sizes, augmentation ...; those in ``MAY_CHANGE_ON_RESUME`` may change, with a note); ``meta``: what the
    best checkpoint records besides the weights. The state holds the weights, the optimizer and loss-scaler
    state, the global torch RNG (CPU and CUDA) and the run's named generators, so a resumed run continues
    exactly where the interrupted one stopped (on another kind of device, generators are re-seeded
    deterministically instead, with a note). With ``background=True`` :meth:`end_epoch` copies what it saves
    to host memory and writes the files in a background thread while the next epoch trains; use the object
    as a context manager (or call :meth:`wait`) so the last files are complete. Opening one removes the
    temporaries that killed saves of both files left (:func:`remove_stale_temporaries`). ``writes=False`` (the
    ranks of a distributed run other than 0) resumes from the files but never writes them; it keeps the best
    weights in memory instead.
    Used by :func:`helpers.training.loop.fit`; taught in ``notebooks/02_training_resnet18.ipynb``.
    """

    def __init__(
        self,
        checkpoint_path: str | os.PathLike | None,
        settings: dict,
        meta: dict,
        *,
        background: bool = False,
        writes: bool = True,
    ):
        self.best_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.state_path = None if checkpoint_path is None else resume_path(checkpoint_path)
        self.settings, self.meta, self.best_weights = settings, meta, None
        self.background, self._writer, self._write_error = background, None, None
        self.writes = writes  # False on the ranks of a distributed run other than 0: they read, never write
        for path in (self.best_path, self.state_path) if writes else ():
            if path is not None and path.parent.is_dir():
                remove_stale_temporaries(path)

    def __enter__(self) -> RunCheckpoints:
        return self

    def __exit__(self, error_type, *_) -> None:
        self.wait(raise_error=error_type is None)  # never hide the error that is on its way out

    def wait(self, raise_error: bool = True) -> None:
        """Wait until the files of the last :meth:`end_epoch` are written; raise the writer's error if any
        (e.g. :class:`helpers.files.DiskFullError`)."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        error, self._write_error = self._write_error, None
        if error is not None and raise_error:
            raise error

    def resume(
        self, model: nn.Module, opt: Any, epochs: int | None = None
    ) -> tuple[list[dict], float | None]:
        """Restore the saved state into ``model`` and ``opt`` (a ``helpers.training.loop.Optimisation``);
        returns ``(history, best score)``, or ``([], None)`` when nothing was saved yet. Raises ``ValueError``
        when the saved run used other settings (continuing it would silently make a different run), except
        those in ``MAY_CHANGE_ON_RESUME``, which are printed as a note (unless the run has its ``epochs``
        already: then nothing is left to run differently)."""
        if self.state_path is None:
            raise ValueError("resume=True needs a checkpoint_path to resume from")
        if not self.state_path.is_file():
            return [], None
        payload = _read_checkpoint(self.state_path)  # load nothing until the settings match
        meta = payload["meta"]
        notes = self._compare_settings(meta.get("config", {}))
        _load_weights(self.state_path, model, payload["state_dict"])
        _load_optimizer(opt.optimizer, meta["optimizer"])
        if meta["scaler"]:  # a disabled scaler (bf16, fp32) ignores it
            opt.scaler.load_state_dict(meta["scaler"])
        notes += self._restore_generators(opt.generators, meta["rng"], len(meta["history"]))
        for note in notes if epochs is None or len(meta["history"]) < epochs else ():
            print(f"note: {self.state_path.name}: {note}", flush=True)
        return list(meta["history"]), meta["best_score"]

    def _compare_settings(self, saved: dict) -> list[str]:
        """Raise ``ValueError`` naming the settings that differ from ``saved``; return notes for those that
        may (``MAY_CHANGE_ON_RESUME``)."""
        keys = list(self.settings) + [k for k in saved if k not in self.settings]  # a dropped one is a change
        changed = {
            k: {"saved": saved.get(k), "now": self.settings.get(k)}
            for k in keys
            if saved.get(k) != self.settings.get(k)
        }
        refused = {k: v for k, v in changed.items() if k not in MAY_CHANGE_ON_RESUME}
        if refused:
            raise ValueError(
                f"{self.state_path}: cannot resume, the saved run used other settings {refused}; "
                "use resume=False or delete the file"
            )
        if not changed:
            return []
        was = ", ".join(f"{k}={v['saved']!r}" for k, v in changed.items())
        now = ", ".join(f"{k}={v['now']!r}" for k, v in changed.items())
        return [
            f"saved with {was}, continuing with {now}: the finished epochs are kept, the remaining ones run "
            "with the new settings (so the result differs slightly from an uninterrupted run)"
        ]

    def _restore_generators(
        self, generators: dict[str, torch.Generator], rng: dict, epochs_done: int
    ) -> list[str]:
        """Restore the named generators and the global RNGs; a state saved on another kind of device is
        replaced by a deterministic seed (:func:`derived_seed`). Returns a note per re-seeded generator."""
        seed, saved_on, notes = int(self.settings.get("seed", 0)), rng.get("devices", {}), []
        for name, generator in generators.items():
            if not _set_state(generator, rng[name], saved_on.get(name)):
                new_seed = derived_seed(seed, name, epochs_done)
                generator.manual_seed(new_seed)
                notes.append(
                    f"the {name!r} generator was saved on {saved_on.get(name, 'another device')} "
                    f"({rng[name].numel()}-byte state) and runs on {generator.device.type} here "
                    f"({generator.get_state().numel()}-byte state): re-seeded deterministically with "
                    f"derived_seed({seed}, {name!r}, {epochs_done}) = {new_seed}"
                )
        torch.set_rng_state(rng["torch"])
        if torch.cuda.is_available():
            saved = rng.get("cuda")
            if saved is None or saved.numel() != torch.cuda.get_rng_state().numel():
                torch.cuda.manual_seed_all(derived_seed(seed, "cuda", epochs_done))
            else:
                torch.cuda.set_rng_state(saved)
        return notes

    def end_epoch(
        self,
        model: nn.Module,
        opt: Any,
        history: list[dict],
        best_score: float | None,
        improved: bool,
        epoch_start: float | None = None,
    ) -> None:
        """After an epoch: save (or keep) the weights when it ``improved``, then the resumable state.

        With ``background=True`` only the copy to host memory happens here (after waiting for the previous
        epoch's files); the files are written by a background thread, atomically as always. With
        ``epoch_start`` (a ``time.perf_counter()`` value) the last history row gets ``"seconds"``: the epoch
        up to the point where the history is saved, so the checkpoint's share of the epoch included."""
        self.wait()
        if not self.writes:  # another process writes the files; keep the best weights for restore_best
            if improved:
                self.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if epoch_start is not None:
                history[-1]["seconds"] = time.perf_counter() - epoch_start
            return
        weights = None
        if self.best_path is not None:  # both files hold the same weights: copy them once
            weights = _host_weights(getattr(model, "_orig_mod", model), copy=self.background)
        elif improved:
            self.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        state = self._state_payload(model, opt, best_score, weights) if self.state_path else None
        if epoch_start is not None:
            history[-1]["seconds"] = time.perf_counter() - epoch_start
        files = []
        if improved and self.best_path is not None:
            meta = {**self.meta, "epoch": len(history), "metrics": history[-1], "history": history}
            files.append((self.best_path, _payload(model, meta, self.background, weights)))
        if state is not None:
            state["meta"]["history"] = _plain(history, "meta['history']", copy=True)
            files.append((self.state_path, state))
        if not self.background:
            for path, payload in files:
                _write_payload(path, payload)
        elif files:
            self._writer = threading.Thread(target=self._write, args=(files,), name="checkpoint-writer")
            self._writer.start()

    def _state_payload(self, model: nn.Module, opt: Any, best_score: float | None, weights: dict) -> dict:
        """The resumable state as a checkpoint payload (weights, optimizer, scaler, generators), without the
        history, which :meth:`end_epoch` adds."""
        rng = {name: g.get_state() for name, g in opt.generators.items()}
        rng["devices"] = {name: g.device.type for name, g in opt.generators.items()}
        rng["torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state()
        meta = {
            "optimizer": opt.optimizer.state_dict(),
            "scaler": opt.scaler.state_dict(),
            "rng": rng,
            "best_score": best_score,
            "config": self.settings,
        }
        return _payload(model, meta, self.background, weights)

    def _write(self, files: list[tuple[Path, dict]]) -> None:
        """The background writer: write ``files`` in order; keep the first error for :meth:`wait`."""
        try:
            for path, payload in files:
                _write_payload(path, payload)
        except BaseException as error:  # re-raised in the training thread by wait()
            self._write_error = error

    def restore_best(self, model: nn.Module) -> None:
        """Load the best epoch's weights into ``model`` (from the file, or from memory; a run that does not
        write prefers its memory, since the file may still be being written by another process)."""
        self.wait()
        if not self.writes and self.best_weights is not None:
            model.load_state_dict(self.best_weights)
        elif self.best_path is not None and self.best_path.is_file():
            load_checkpoint(self.best_path, model)
        elif self.best_weights is not None:
            model.load_state_dict(self.best_weights)
