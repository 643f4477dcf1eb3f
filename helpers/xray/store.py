"""The preprocessed store: one uint8 memmap + index.csv + stats.json, built resumably and atomically.

Taught in ``notebooks/01_data_preparation.ipynb``.

A store is a folder with ``images.npy`` (uint8 N x S x S, memory-mappable), ``index.csv`` (one row per
image: patientId, label, split, original size, metadata, boxes as JSON in original pixels, ``ok``) and
``stats.json`` (mean and std of the train split in [0, 1] units, failures, size). :func:`build_store` works
in ``<dest>.partial/`` and saves its progress every few hundred images, so an interrupted build resumes;
the finished folder appears only by ``os.replace``, and a folder without a valid ``stats.json`` is never
taken as a finished store. Reading and resizing one image, the patient split and the running mean/std
live in :mod:`helpers.xray.preprocess`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers.config import display_path, usable_cpus
from helpers.files import process_pool, write_atomic
from helpers.progress import progress_bar
from helpers.xray.preprocess import _read_resized, running_mean_std, split_patients

SPLITS = ("train", "val", "test")
STORE_FILES = ("images.npy", "index.csv", "stats.json")
#: With ``workers=None`` each process must get at least this many images: starting the pool (spawn) costs
#: about a second, the time to resize ~250 full-size radiographs, so small sets are done in-process.
MIN_IMAGES_PER_WORKER = 500


@dataclass
class PreparedStore:
    """A finished store opened by :func:`load_store`; ``images`` is a read-only memmap (uint8 N x S x S).

    Taught in ``notebooks/01_data_preparation.ipynb`` (the preprocessed store).
    """

    path: Path
    images: np.ndarray
    index: pd.DataFrame
    mean: float
    std: float
    size: int
    stats: dict

    def split_arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The readable (``ok``) images of one split, in memory: -> (uint8 N x S x S, int64 labels N)."""
        present = sorted(set(self.index["split"]))
        if split not in present:
            raise ValueError(f"{self.path}: no {split!r} split; the splits here are {present}")
        rows = np.flatnonzero((self.index["split"] == split).to_numpy() & self.index["ok"].to_numpy(bool))
        return np.asarray(self.images[rows]), self.index["label"].to_numpy(np.int64)[rows]


def _read_json(path: Path) -> Any:
    """The content of a JSON file, or None if it is missing or not valid JSON (e.g. cut short)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_stats(folder: Path) -> dict | None:
    """The stats of a finished store in ``folder``, or None if any file is missing or stats.json is invalid."""
    stats = _read_json(folder / "stats.json")
    if not isinstance(stats, dict) or not {"mean", "std", "n", "size", "fingerprint"} <= stats.keys():
        return None
    return stats if all((folder / name).is_file() for name in STORE_FILES) else None


def load_store(path: str | Path) -> PreparedStore:
    """Open a finished store: images memory-mapped (nothing loaded), index with ``boxes`` as lists of
    ``(x, y, w, h)`` tuples in original pixels. Raises ``ValueError`` if ``path`` is not a finished store.
    Taught in ``notebooks/01_data_preparation.ipynb``.
    """
    folder = Path(path)
    stats = _read_stats(folder)
    if stats is None:
        raise ValueError(
            f"{folder}: not a finished store (needs {', '.join(STORE_FILES)} with a valid stats.json)"
        )
    index = pd.read_csv(folder / "index.csv", dtype={"patientId": str})
    for col in stats.get("json_columns", []):
        decoded = index[col].map(json.loads)
        index[col] = (
            decoded.map(lambda v: [tuple(b) for b in v])
            if col == "boxes"
            else decoded.map(lambda v: tuple(v) if isinstance(v, list) else v)
        )
    images = np.load(folder / "images.npy", mmap_mode="r")
    return PreparedStore(
        folder, images, index, float(stats["mean"]), float(stats["std"]), int(stats["size"]), stats
    )


def _prepare_items(items: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
    """Check the items table, give it a 0..N-1 index and a ``split`` column if it has none."""
    missing = [c for c in ("path", "patientId", "label") if c not in items.columns]
    if missing or len(items) == 0:
        raise ValueError(
            f"items need rows and the columns path, patientId, label; missing: {missing or 'rows'}"
        )
    items = items.reset_index(drop=True).copy()
    items["path"], items["patientId"] = items["path"].map(str), items["patientId"].map(str)
    labels = pd.to_numeric(items["label"], errors="coerce")
    if not labels.isin([0, 1]).all():
        raise ValueError(
            f"items: labels must be 0 or 1; rows {np.flatnonzero(~labels.isin([0, 1]))[:10].tolist()}"
        )
    items["label"] = labels.astype("int64")
    if "split" not in items.columns:
        items["split"] = split_patients(items, val_fraction=val_fraction, seed=seed)
    if not items["split"].isin(SPLITS).all():
        raise ValueError(
            f"items: split must be one of {SPLITS}; found {sorted(set(items['split']) - set(SPLITS))}"
        )
    return items


def _json_encoded(items: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Columns holding lists/tuples (boxes, pixel spacing) as JSON text, and their names."""
    out, cols = items.copy(), []
    for col in out.columns:
        if out[col].dtype == "object" and out[col].map(lambda v: isinstance(v, (list, tuple, dict))).any():
            out[col] = out[col].map(lambda v: json.dumps(v.tolist() if isinstance(v, np.ndarray) else v))
            cols.append(col)
    return out, cols


def _process(job: tuple[int, str, int]) -> tuple[int, np.ndarray | None, tuple[int, int] | None, str | None]:
    """Pool worker: (row, path, size) -> (row, uint8 image or None, original shape, failure reason)."""
    i, path, size = job
    try:
        image, shape = _read_resized(path, size)
        return i, image, shape, None
    except Exception as err:  # any unreadable file is reported and counted; the build goes on
        reason = str(err) if str(err).startswith(str(path)) else f"{path}: {type(err).__name__}: {err}"
        return i, None, None, reason


def _load_progress(state_path: Path, n: int) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    try:
        with np.load(state_path) as state:
            if state["done"].shape == (n,):
                return state["done"].copy(), state["orig"].copy(), json.loads(str(state["failures"]))
    except (OSError, ValueError, KeyError):
        pass
    return np.zeros(n, bool), np.zeros((n, 2), np.int64), {}


def _fill(
    items: pd.DataFrame,
    partial: Path,
    size: int,
    fingerprint: str,
    workers: int | None,
    progress: bool,
    checkpoint_every: int,
) -> None:
    """Decode and resize every image not yet done into ``partial/images.npy``, saving progress as it goes."""
    n, manifest = len(items), partial / "manifest.json"
    if partial.exists() and _read_json(manifest) != {"fingerprint": fingerprint}:
        shutil.rmtree(partial)  # a partial build of other items: start again
    partial.mkdir(parents=True, exist_ok=True)
    write_atomic(manifest, json.dumps({"fingerprint": fingerprint}).encode())
    state_path, images_path = partial / "progress.npz", partial / "images.npy"
    done, orig, failures = _load_progress(state_path, n)
    try:
        images = np.lib.format.open_memmap(images_path, mode="r+")
    except (OSError, ValueError):
        images = None
    if images is None or images.shape != (n, size, size) or images.dtype != np.uint8:
        done, orig, failures = np.zeros(n, bool), np.zeros((n, 2), np.int64), {}
        images = np.lib.format.open_memmap(images_path, mode="w+", dtype=np.uint8, shape=(n, size, size))

    def save() -> None:
        images.flush()  # pixels reach the file before the done-mask says so
        buf = io.BytesIO()
        np.savez(buf, done=done, orig=orig, failures=np.array(json.dumps(failures)))
        write_atomic(state_path, buf.getvalue())

    todo = np.flatnonzero(~done)
    jobs = [(int(i), items.at[i, "path"], size) for i in todo]
    if workers is None:
        workers = min(usable_cpus(), len(jobs) // MIN_IMAGES_PER_WORKER)
    workers = max(1, min(workers, len(jobs)))
    pool = process_pool(workers) if workers > 1 else None
    bar = progress_bar(
        total=n, initial=n - len(todo), desc=f"preprocess {size}px", unit="img", enabled=progress
    )
    pending = 0
    try:
        chunk = max(1, min(32, len(jobs) // (workers * 4)))
        results = pool.imap_unordered(_process, jobs, chunksize=chunk) if pool else map(_process, jobs)
        for i, image, shape, reason in results:
            if reason is None:
                images[i], orig[i] = image, shape
            else:
                failures[str(i)] = reason
            done[i], pending = True, pending + 1
            bar.update()
            if pending >= checkpoint_every:
                save()
                pending = 0
    finally:
        if pool is not None:
            pool.terminate()
        if pending:
            save()
        bar.close()


def _finish(index: pd.DataFrame, json_cols: list[str], partial: Path, size: int, fingerprint: str) -> dict:
    """Write index.csv and, last, stats.json (train-split mean/std) into the completed partial folder.

    ``index``: the checked items with list columns already JSON-encoded (named in ``json_cols``).
    """
    n = len(index)
    done, orig, failures = _load_progress(partial / "progress.npz", n)
    if not done.all():
        raise RuntimeError(f"{partial}: {int((~done).sum())} images not processed yet")
    ok = np.ones(n, bool)
    ok[[int(i) for i in failures]] = False
    index = index.copy()
    for k, col in enumerate(("orig_height", "orig_width")):
        fallback = pd.to_numeric(index[col], errors="coerce").fillna(0) if col in index else 0
        index[col] = np.where(ok, orig[:, k], fallback).astype(np.int64)
    index["ok"] = ok
    first = ["patientId", "label", "split", "orig_height", "orig_width", "ok"]
    index = index[first + [c for c in index.columns if c not in first]]
    rows, source = np.flatnonzero(ok & (index["split"] == "train").to_numpy()), "train"
    if len(rows) == 0:
        rows, source = np.flatnonzero(ok), "all"
    if len(rows) == 0:
        raise ValueError(f"all {n} files failed to load; first: {failures[min(failures, key=int)]}")
    mean, std = running_mean_std(np.load(partial / "images.npy", mmap_mode="r"), indices=rows)
    stats = {
        "mean": mean,
        "std": std,
        "mean_std_from": source,
        "n": n,
        "n_ok": int(ok.sum()),
        "n_failed": len(failures),
        "failed": [{"path": index.at[int(i), "path"], "reason": r} for i, r in failures.items()],
        "size": size,
        "splits": {s: int((index["split"] == s).sum()) for s in SPLITS},
        "json_columns": json_cols,
        "fingerprint": fingerprint,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_atomic(partial / "index.csv", index.to_csv(index=False).encode())
    write_atomic(partial / "stats.json", json.dumps(stats, indent=1).encode())
    return stats


def build_store(
    items: pd.DataFrame,
    dest: str | Path,
    size: int = 224,
    workers: int | None = None,
    progress: bool = True,
    val_fraction: float = 0.2,
    seed: int = 0,
    checkpoint_every: int = 256,
) -> Path:
    """Build (or resume, or reuse) the store of ``items`` at ``dest``; returns ``dest``.

    ``items``: a DataFrame with ``path``, ``patientId``, ``label`` (0/1) and any metadata (``boxes`` in
    original pixels, age, ...); without a ``split`` column it gets a patient-level stratified split
    (``val_fraction``, ``seed``). Every image goes through :func:`load_and_resize` on ``workers``
    processes (default: all cores, each with at least ``MIN_IMAGES_PER_WORKER`` images). A file that fails
    is reported by name, counted, and kept as a zero image with ``ok=False``. Progress is saved every
    ``checkpoint_every`` images in ``<dest>.partial/``; rerunning continues there. A finished store of the
    same items and size is returned untouched; one of other items or size raises ``ValueError``.
    Taught in ``notebooks/01_data_preparation.ipynb``.
    """
    items = _prepare_items(items, val_fraction, seed)
    encoded, json_cols = _json_encoded(items)
    dest = Path(dest)
    fingerprint = hashlib.sha256(f"{size}\n{encoded.to_csv(index=False)}".encode()).hexdigest()[:16]
    stats = _read_stats(dest)
    if stats is not None:
        if stats["fingerprint"] != fingerprint:
            raise ValueError(
                f"{dest}: holds a store of other items or size ({stats['size']}px); delete it or pick another folder"
            )
        return dest
    if dest.exists() and any(p.name not in STORE_FILES for p in dest.iterdir()):
        raise ValueError(f"{dest}: exists and is not an unfinished store; refusing to replace it")
    partial = dest.with_name(dest.name + ".partial")
    stats = _read_stats(partial)
    if stats is None or stats["fingerprint"] != fingerprint:
        _fill(items, partial, size, fingerprint, workers, progress, checkpoint_every)
        stats = _finish(encoded, json_cols, partial, size, fingerprint)
    for leftover in partial.iterdir():
        if leftover.name not in STORE_FILES:
            leftover.unlink()
    if dest.exists():
        shutil.rmtree(dest)  # an unfinished store (checked above): replaced by the finished one
    os.replace(partial, dest)
    if progress or stats["n_failed"]:
        print(
            f"{display_path(dest)}: {stats['n']} images at {size}x{size}, {stats['n_ok']} ok, {stats['n_failed']} failed"
        )
        for failure in stats["failed"][:10]:
            print(f"  failed: {failure['reason']}")
    return dest


def export_paper_layout(store_path: str | Path, dest: str | Path, dtype: str = "float16") -> Path:
    """Write a store in the paper's ``<split>/<label>/<patientId>.npy`` layout (torchvision DatasetFolder).

    ``dtype='float16'`` saves ``pixels / 255`` as the paper does; ``'uint8'`` saves the stored bytes.
    A patient with several images gets ``<patientId>_<k>.npy``. Only ``ok`` rows are written; the folder
    appears atomically. Returns ``dest``. Taught in ``notebooks/01_data_preparation.ipynb``.
    """
    if dtype not in ("float16", "uint8"):
        raise ValueError(f"dtype must be 'float16' or 'uint8', got {dtype!r}")
    store, dest = load_store(store_path), Path(dest)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    index = store.index[store.index["ok"].astype(bool)]
    repeats = index.groupby(["split", "patientId"])["patientId"].transform("size")
    nth = index.groupby(["split", "patientId"]).cumcount()
    for row, n_same, k in zip(index.itertuples(), repeats, nth, strict=True):
        folder = tmp / row.split / str(row.label)
        folder.mkdir(parents=True, exist_ok=True)
        image = store.images[row.Index]
        name = row.patientId if n_same == 1 else f"{row.patientId}_{k}"
        np.save(folder / f"{name}.npy", (image / 255.0).astype(np.float16) if dtype == "float16" else image)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest
