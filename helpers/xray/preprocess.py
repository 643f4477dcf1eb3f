"""Reading radiographs for training: one DICOM or picture file -> uint8 S x S, the patient split, mean/std.

Taught in ``notebooks/01_data_preparation.ipynb`` (resizing, patient-level split, running mean/std, the
preprocessed store).

:func:`load_and_resize` reads one DICOM, JPEG or PNG file and downscales it to uint8 size x size,
:func:`split_patients` gives a patient-level stratified split and :func:`running_mean_std` the mean and std
of uint8 images one batch at a time. The store built from them (``images.npy`` + ``index.csv`` +
``stats.json``: :func:`build_store`, :func:`load_store`, :class:`PreparedStore`,
:func:`export_paper_layout`) lives in :mod:`helpers.xray.store`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from pydicom import uid
from pydicom.encaps import generate_frames

from helpers.xray.dicom import check_pixels_readable, decode_unit, read_dataset

PICTURE_SUFFIXES = {".jpeg", ".jpg", ".png", ".tif", ".tiff", ".bmp"}
#: Pillow first shrinks by a whole factor (box filter) until within this factor of the target, then
#: resamples: 3.0 is indistinguishable from a full antialiased resample and several times faster.
REDUCING_GAP = 3.0
RESAMPLE = Image.Resampling.BILINEAR  # antialiased in Pillow (the kernel widens when shrinking)


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
