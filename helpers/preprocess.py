"""From a folder of radiographs to one training-ready store: uint8 N x S x S images, an index and stats.

Taught in ``notebooks/01_data_preparation.ipynb`` (resizing, patient-level split, running mean/std, the
preprocessed store).

A store is a folder with ``images.npy`` (uint8 N x S x S, memory-mappable), ``index.csv`` (one row per
image: patientId, label, split, original size, metadata, boxes as JSON in original pixels, ``ok``) and
``stats.json`` (mean and std of the train split in [0, 1] units, failures, size). :func:`build_store` works
in ``<dest>.partial/`` and saves its progress every few hundred images, so an interrupted build resumes;
the finished folder appears only by ``os.replace``, and a folder without a valid ``stats.json`` is never
taken as a finished store.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from pydicom import uid
from pydicom.encaps import generate_frames
from tqdm.auto import tqdm

from helpers.dicom import check_pixels_readable, decode_unit, read_dataset
from helpers.rsna import rsna_items  # noqa: F401  (part of this module's API: folder -> items)

SPLITS = ("train", "val", "test")
STORE_FILES = ("images.npy", "index.csv", "stats.json")
PICTURE_SUFFIXES = {".jpeg", ".jpg", ".png", ".tif", ".tiff", ".bmp"}
#: Pillow first shrinks by a whole factor (box filter) until within this factor of the target, then
#: resamples: 3.0 is indistinguishable from a full antialiased resample and several times faster.
REDUCING_GAP = 3.0
RESAMPLE = Image.Resampling.BILINEAR  # antialiased in Pillow (the kernel widens when shrinking)
#: With ``workers=None`` each process must get at least this many images: starting the pool (spawn) costs
#: about a second, the time to resize ~250 full-size radiographs, so small sets are done in-process.
MIN_IMAGES_PER_WORKER = 500


def _resize_to_uint8(img: Image.Image, size: int) -> np.ndarray:
    """A Pillow image (mode L or F in [0, 1]) -> uint8 size x size."""
    out = np.asarray(img.resize((size, size), RESAMPLE, reducing_gap=REDUCING_GAP))
    if out.dtype != np.uint8:
        out = np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
    return out


def _plain_jpeg_frame(ds: Any, ts: str) -> bool:
    """True when the file is what RSNA ships: 8-bit JPEG Baseline with no rescale and no window, so the
    JPEG's own pixels ARE the image and Pillow's DCT-domain downscale (``draft``) can be used."""
    return (
        ts == uid.JPEGBaseline8Bit
        and int(ds.BitsStored) == 8
        and int(ds.get("PixelRepresentation", 0)) == 0
        and float(ds.get("RescaleSlope", 1) or 1) == 1
        and float(ds.get("RescaleIntercept", 0) or 0) == 0
        and not any(k in ds for k in ("ModalityLUTSequence", "VOILUTSequence", "WindowCenter"))
    )


def _dicom_resized(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    ds = read_dataset(path)
    ts = check_pixels_readable(ds, path)
    orig = (int(ds.Rows), int(ds.Columns))
    if _plain_jpeg_frame(ds, ts):
        try:
            with Image.open(io.BytesIO(next(generate_frames(ds.PixelData, number_of_frames=1)))) as img:
                if img.mode == "L" and (img.height, img.width) == orig:
                    img.draft("L", (size, size))  # decode at 1/2, 1/4 or 1/8 scale, never below size
                    out = _resize_to_uint8(img, size)
                    return (255 - out if ds.PhotometricInterpretation == "MONOCHROME1" else out), orig
        except (OSError, SyntaxError, ValueError, StopIteration):
            pass  # a damaged frame: the full decoder below raises the error that names the problem
    return _resize_to_uint8(Image.fromarray(decode_unit(ds, path)), size), orig


def _picture_resized(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    try:
        with Image.open(path) as img:
            orig = (img.height, img.width)
            if img.format == "JPEG":
                img.draft("L", (size, size))
            if img.mode in ("I", "I;16", "I;16L", "I;16B"):  # 16-bit PNG: scale by the bit range
                img = Image.fromarray(np.asarray(img, dtype=np.float32) / 65535.0)
            elif img.mode != "L":
                img = img.convert("L")
            return _resize_to_uint8(img, size), orig
    except (OSError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from err


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in PICTURE_SUFFIXES:
        return False
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with open(path, "rb") as fh:
        return fh.read(132)[128:] == b"DICM"


def _read_resized(path: str | Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`load_and_resize` plus the original (height, width)."""
    path = Path(path)
    if _is_dicom(path):
        return _dicom_resized(path, size)
    return _picture_resized(path, size)


def load_and_resize(path: str | Path, size: int) -> np.ndarray:
    """A DICOM (via the ``read_xray`` pixel pipeline) or JPEG/PNG file -> uint8 size x size, bright = dense.

    Antialiased downscale: Pillow ``reduce`` by a whole factor, then bilinear (``reducing_gap=3``). For
    8-bit JPEG Baseline DICOM (RSNA) and JPEG files (Kermany) the JPEG is decoded at 1/2, 1/4 or 1/8 scale
    in the DCT domain (``Image.draft``): about 2x faster than a full decode + float resize for
    1024 -> 224, within half a grey level of it on average (``benchmarks/bench_preprocess.py``). Non-square images are squashed to size x size, which distorts the
    aspect ratio as the paper does (no padding). Raises ``ValueError`` naming the file if it can't be read.
    """
    return _read_resized(path, size)[0]


def split_patients(
    df: pd.DataFrame,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    group_col: str = "patientId",
    label_col: str = "label",
) -> pd.Series:
    """Patient-level split stratified by label: -> Series of 'train'/'val'/'test' aligned with ``df``.

    Each patient goes wholly to one side; a patient is positive if any of their images is. sklearn's
    ``train_test_split`` on the table of patients (stratified, seeded) gives exact fractions, which
    ``StratifiedGroupKFold`` can't (only 1/k). Falls back to an unstratified split when a class has fewer
    than two patients. The paper uses 4/5 train, 1/5 val. Taught in ``notebooks/01_data_preparation.ipynb``.
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"need 0 <= fractions and val + test < 1; got val={val_fraction}, test={test_fraction}"
        )
    from sklearn.model_selection import train_test_split  # here: pool workers need not import sklearn

    patients = df.groupby(group_col, sort=False)[label_col].max()
    assign = pd.Series("train", index=patients.index, dtype=object)
    ids, labels = patients.index.to_numpy(), patients.to_numpy()

    def take(
        ids: np.ndarray, labels: np.ndarray, fraction: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        stratify = labels if np.unique(labels, return_counts=True)[1].min() >= 2 else None
        keep, taken, keep_labels, _ = train_test_split(
            ids, labels, test_size=fraction, stratify=stratify, random_state=seed
        )
        return keep, keep_labels, taken

    if test_fraction > 0:
        ids, labels, taken = take(ids, labels, test_fraction)
        assign[taken] = "test"
    if val_fraction > 0:
        _, _, taken = take(ids, labels, val_fraction / (1 - test_fraction))
        assign[taken] = "val"
    return df[group_col].map(assign).rename("split")


def running_mean_std(
    images: np.ndarray, batch: int = 256, indices: np.ndarray | None = None
) -> tuple[float, float]:
    """Mean and std in [0, 1] units of uint8 images (N x H x W), one batch in memory at a time.

    The paper's trick: running sums of x and x^2 (float64, x = pixel / 255), then
    ``mean = sum / n`` and ``std = sqrt(sum_sq / n - mean^2)``. Each batch's sums are exact integers
    before the division, so the result matches ``(images / 255).std()`` to ~1e-12. ``indices`` picks rows
    (e.g. the train split) from a memmap without loading the rest. Taught in
    ``notebooks/01_data_preparation.ipynb``.
    """
    rows = np.arange(len(images)) if indices is None else np.sort(np.asarray(indices))
    if len(rows) == 0:
        raise ValueError("running_mean_std needs at least one image")
    total = total_sq = 0.0
    count = 0
    for start in range(0, len(rows), batch):
        block = np.asarray(images[rows[start : start + batch]])
        total += int(block.sum(dtype=np.uint64)) / 255.0
        total_sq += int(np.square(block, dtype=np.uint32).sum(dtype=np.uint64)) / 255.0**2
        count += block.size
    mean = total / count
    return mean, float(np.sqrt(max(total_sq / count - mean**2, 0.0)))


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


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


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
    _write_atomic(manifest, json.dumps({"fingerprint": fingerprint}).encode())
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
        _write_atomic(state_path, buf.getvalue())

    todo = np.flatnonzero(~done)
    jobs = [(int(i), items.at[i, "path"], size) for i in todo]
    if workers is None:
        workers = min(os.cpu_count() or 1, len(jobs) // MIN_IMAGES_PER_WORKER)
    workers = max(1, min(workers, len(jobs)))
    # spawn, not fork: forking a notebook kernel's threads (zmq, torch) can deadlock the children
    pool = get_context("spawn").Pool(workers) if workers > 1 else None
    bar = tqdm(total=n, initial=n - len(todo), desc=f"preprocess {size}px", unit="img", disable=not progress)
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
    _write_atomic(partial / "index.csv", index.to_csv(index=False).encode())
    _write_atomic(partial / "stats.json", json.dumps(stats, indent=1).encode())
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
        print(f"{dest}: {stats['n']} images at {size}x{size}, {stats['n_ok']} ok, {stats['n_failed']} failed")
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
