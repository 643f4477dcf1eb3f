"""The preprocessed store: one uint8 memmap + index.csv + stats.json, built resumably and atomically.

Taught in ``notebooks/01_data_preparation.ipynb``.

A store is a folder with ``images.npy`` (uint8 N x S x S, memory-mappable), ``index.csv`` (one row per
image: patientId, label, split, original size, metadata, boxes as JSON in original pixels, ``ok``) and
``stats.json`` (mean and std of the train split in [0, 1] units, failures, size). :func:`build_store` works
in ``<dest>.partial/`` and saves its progress every few hundred images, so an interrupted build resumes;
the finished folder appears only by ``os.replace``. Robust against what happens in a classroom:

- a full disk: the space is checked before the build and the images file gets its disk blocks up front, so a
  full disk is a :class:`helpers.files.DiskFullError` naming the file (progress kept), never a "Bus error";
- two builds at once (two notebooks on "Run all"): :func:`helpers.files.build_lock` lets one build while
  the other waits and then reuses the result;
- a damaged store (a copy of ``cache/`` cut short): :func:`load_store` checks that the files agree and
  names the one that does not (:class:`DamagedStoreError`); :func:`build_store` builds such a store again.

Reading and resizing one image, the patient split and the running mean/std live in
:mod:`helpers.xray.preprocess`.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers.config import display_path, usable_cpus
from helpers.files import build_lock, disk_full_guard, process_pool, require_free_space, write_atomic
from helpers.progress import progress_bar
from helpers.xray.preprocess import _read_resized, running_mean_std, split_patients

SPLITS = ("train", "val", "test")
STORE_FILES = ("images.npy", "index.csv", "stats.json")
#: The files of a build in progress; never left in a finished store.
BUILD_FILES = ("progress.npz", "manifest.json")
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


class DamagedStoreError(ValueError):
    """A finished store whose files disagree (e.g. a copy of ``cache/`` cut short): names the file and problem."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(
            f"damaged store: {path} {problem}; delete the folder {path.parent} and build the store again "
            "(build_store replaces a damaged store by itself)"
        )

    def __reduce__(self) -> tuple:  # pickled with its own arguments (e.g. from a worker process)
        return type(self), (self.path, self.problem)


def _read_stats(folder: Path) -> dict | None:
    """The content of ``folder/stats.json`` if it is a complete stats record, else None (build not finished)."""
    stats = _read_json(folder / "stats.json")
    if not isinstance(stats, dict) or not {"mean", "std", "n", "size", "fingerprint"} <= stats.keys():
        return None
    return stats


def _npy_shape(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype that the ``.npy`` header of ``path`` promises, checked against the file's size."""
    try:
        fmt = np.lib.format
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(f)
            offset = f.tell()
    except FileNotFoundError:
        raise DamagedStoreError(path, "is missing") from None
    except (OSError, ValueError) as err:
        raise DamagedStoreError(path, f"has no valid .npy header ({err})") from err
    expected, actual = offset + math.prod(shape) * dtype.itemsize, path.stat().st_size
    if actual != expected:
        raise DamagedStoreError(
            path, f"has {actual:,} bytes but its header promises {expected:,} ({dtype} {shape}): cut short?"
        )
    return shape, dtype


def _ends_in_newline(path: Path) -> bool:
    """Whether ``path`` ends with a line break, as every CSV file that ``to_csv`` finished does."""
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _check_store(folder: Path) -> tuple[dict, pd.DataFrame]:
    """(stats, index as read) of the finished store in ``folder``, after checking that its files agree.

    ``ValueError`` if there is no finished store (no valid stats.json), :class:`DamagedStoreError` if the
    images file's size, its shape, the rows of index.csv and stats.json do not all agree.
    """
    stats = _read_stats(folder)
    if stats is None:
        raise ValueError(
            f"{folder}: not a finished store (needs {', '.join(STORE_FILES)} with a valid stats.json)"
        )
    n, size, csv = int(stats["n"]), int(stats["size"]), folder / "index.csv"
    shape, dtype = _npy_shape(folder / "images.npy")
    if shape != (n, size, size) or dtype != np.uint8:
        problem = f"holds {dtype} {shape}, but stats.json says uint8 {(n, size, size)}"
        raise DamagedStoreError(folder / "images.npy", problem)
    try:
        index, complete = pd.read_csv(csv, dtype={"patientId": str}), _ends_in_newline(csv)
    except FileNotFoundError:
        raise DamagedStoreError(csv, "is missing") from None
    except (OSError, ValueError) as err:  # pandas' parser errors are ValueErrors
        raise DamagedStoreError(csv, f"cannot be read ({err})") from err
    if len(index) != n:
        raise DamagedStoreError(csv, f"has {len(index)} rows for the {n} images of images.npy and stats.json")
    if not complete:
        raise DamagedStoreError(csv, "does not end with a line break: its last row is cut short")
    return stats, index


def load_store(path: str | Path) -> PreparedStore:
    """Open a finished store: images memory-mapped (nothing loaded), index with ``boxes`` as lists of
    ``(x, y, w, h)`` tuples in original pixels. Raises ``ValueError`` if ``path`` is not a finished store,
    and :class:`DamagedStoreError` (a ``ValueError``) naming the file if its files disagree.
    Taught in ``notebooks/01_data_preparation.ipynb``.
    """
    folder = Path(path)
    stats, index = _check_store(folder)
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


def _preallocate(path: Path, start: int, fresh: bool) -> None:
    """Give every byte of ``path`` from ``start`` on a real disk block, before a memory map writes there.

    A file that ``open_memmap`` makes is sparse: its blocks are found only when a page is written, and if the
    disk is full by then the kernel kills the process with SIGBUS ("Bus error", exit 135, a dead Jupyter
    kernel), which no ``try`` can catch. ``os.posix_fallocate`` (Linux, BSD) reserves the blocks now and
    raises ENOSPC instead; where it is missing, a ``fresh`` (all-zero) file is written with zeros.
    """
    with disk_full_guard(path, "the store's images"), open(path, "r+b") as f:
        end = os.fstat(f.fileno()).st_size
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(f.fileno(), start, end - start)
                return
            except OSError as err:
                if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):  # ENOSPC and others
                    raise
        if fresh:
            f.seek(start)
            for at in range(start, end, 1 << 22):
                f.write(bytes(min(1 << 22, end - at)))


def _open_images(path: Path, n: int, size: int) -> tuple[np.memmap, bool]:
    """``images.npy`` of a partial build as a writable memmap: -> (images, whether an earlier one was reopened).

    A new one is made only when the disk has room for it (``n * size * size`` bytes, plus 1 kB per image
    and 1 MiB for index.csv, stats and progress), and with its blocks allocated (:func:`_preallocate`).
    """
    try:
        images = np.lib.format.open_memmap(path, mode="r+")
        if images.shape == (n, size, size) and images.dtype == np.uint8:
            _preallocate(path, images.offset, fresh=False)
            return images, True
        del images
    except (OSError, ValueError):
        pass
    path.unlink(missing_ok=True)
    needed = n * (size * size + 1024) + (1 << 20)
    require_free_space(path.parent, needed, f"the store's {n} images of {size}x{size} px")
    with disk_full_guard(path, "the store's images"):
        images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size))
    _preallocate(path, images.offset, fresh=True)
    return images, False


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
    with disk_full_guard(partial, "the store's build folder"):
        partial.mkdir(parents=True, exist_ok=True)
        write_atomic(manifest, json.dumps({"fingerprint": fingerprint}).encode())
    state_path = partial / "progress.npz"
    done, orig, failures = _load_progress(state_path, n)
    images, reopened = _open_images(partial / "images.npy", n, size)
    if not reopened:
        done, orig, failures = np.zeros(n, bool), np.zeros((n, 2), np.int64), {}

    def save() -> None:
        images.flush()  # pixels reach the file before the done-mask says so
        buf = io.BytesIO()
        np.savez(buf, done=done, orig=orig, failures=np.array(json.dumps(failures)))
        with disk_full_guard(state_path, "the build's progress"):
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
                pending = 0  # not saved again on the way out if this save fails (a full disk)
                save()
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
    with disk_full_guard(partial, "the store's index and stats"):
        write_atomic(partial / "index.csv", index.to_csv(index=False).encode())
        write_atomic(partial / "stats.json", json.dumps(stats, indent=1).encode())
    return stats


def _reusable(dest: Path, fingerprint: str) -> bool:
    """True if ``dest`` holds this very store, finished and checked; ``ValueError`` if it holds another one."""
    try:
        stats = _check_store(dest)[0]
    except ValueError:  # missing, unfinished or damaged: built (again) under the lock
        return False
    if stats["fingerprint"] != fingerprint:
        raise ValueError(
            f"{dest}: holds a store of other items or size ({stats['size']}px); delete it or pick another folder"
        )
    return True


def _clear_unfinished(dest: Path) -> None:
    """Remove an unfinished or damaged store at ``dest`` (saying why); refuse a folder with other files.

    A damaged store is removed, not moved aside: it holds nothing that the build does not make again, and a
    copy cut short often means a full disk, where a kept copy would take the room the new build needs.
    """
    if not dest.exists():
        return
    if any(p.name not in STORE_FILES + BUILD_FILES for p in dest.iterdir()):
        raise ValueError(f"{dest}: exists and is not an unfinished store; refusing to replace it")
    try:
        _check_store(dest)
    except DamagedStoreError as err:
        print(f"{display_path(dest)}: damaged, {err.path.name} {err.problem}; building the store again")
    except ValueError:
        pass  # not finished (no valid stats.json)
    shutil.rmtree(dest)


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
    same items and size (checked by :func:`load_store`'s checks) is returned untouched; one of other items or
    size raises ``ValueError``; a damaged one is built again. One process at a time builds ``dest``
    (:func:`helpers.files.build_lock`): another one waits, then reuses the store. A full disk raises
    :class:`helpers.files.DiskFullError` (progress kept). Taught in ``notebooks/01_data_preparation.ipynb``.
    """
    items = _prepare_items(items, val_fraction, seed)
    encoded, json_cols = _json_encoded(items)
    dest = Path(dest)
    fingerprint = hashlib.sha256(f"{size}\n{encoded.to_csv(index=False)}".encode()).hexdigest()[:16]
    if _reusable(dest, fingerprint):
        return dest
    with build_lock(dest, "preprocessed store") as waited_for:
        if _reusable(dest, fingerprint):  # finished by the process this one waited for
            who = waited_for or "another process"
            print(f"{display_path(dest)}: reusing the store that {who} built meanwhile")
            return dest
        _clear_unfinished(dest)
        partial = dest.with_name(dest.name + ".partial")
        try:
            stats = _check_store(partial)[0]  # finished, but the process was killed before moving it
        except ValueError:
            stats = None
        if stats is None or stats["fingerprint"] != fingerprint:
            _fill(items, partial, size, fingerprint, workers, progress, checkpoint_every)
            stats = _finish(encoded, json_cols, partial, size, fingerprint)
        for leftover in partial.iterdir():  # progress, manifest, temporaries of killed runs
            if leftover.name not in STORE_FILES:
                leftover.unlink()
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
