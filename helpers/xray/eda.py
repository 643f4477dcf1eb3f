"""Tables for exploring the RSNA data before training: DICOM headers, labels, metadata, splits, resizing.

Taught in ``notebooks/01_data_preparation.ipynb``. Everything here returns numbers or tables (pandas,
NumPy); the figures that go with them are in :mod:`helpers.xray.plots`. The REAL RSNA tables come from the
``torchxrayvision`` package (see :func:`helpers.data.real_tables.real_rsna_tables`), so the exploratory analysis
is of the real patients whichever data mode is active.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from pydicom.dataset import Dataset

from helpers.data import real_tables
from helpers.xray import rsna

#: The header elements a learner should know, in the order the notebook explains them.
HEADER_KEYWORDS = (
    "SOPClassUID",
    "Modality",
    "ConversionType",
    "PatientID",
    "PatientSex",
    "PatientAge",
    "BodyPartExamined",
    "ViewPosition",
    "SeriesDescription",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "PixelSpacing",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "WindowCenter",
    "WindowWidth",
    "LossyImageCompression",
    "PixelData",
)
#: Ages above this are impossible (the oldest verified human reached 122); RSNA has five, 148 to 155.
MAX_PLAUSIBLE_AGE = 100


def _short(value: Any, limit: int = 48) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def header_table(ds: Dataset, keywords: Sequence[str] | None = HEADER_KEYWORDS) -> pd.DataFrame:
    """The header of a DICOM dataset as a table: ``group`` (file meta / dataset), ``tag``, ``keyword``,
    ``VR`` (value representation) and ``value`` (shortened; pixel data shown as its size in bytes).

    ``keywords``: the dataset elements to list, in that order (missing ones are skipped); ``None`` lists
    every element. The file meta group (transfer syntax, ...) is always listed first. Taught in
    ``notebooks/01_data_preparation.ipynb``.
    """
    rows = []
    meta = getattr(ds, "file_meta", None)
    for elem in meta or []:
        rows.append(("file meta", str(elem.tag), elem.keyword, elem.VR, _short(elem.repval)))
    elements = list(ds) if keywords is None else [ds[k] for k in keywords if k in ds]
    for elem in elements:
        if elem.keyword == "PixelData":
            value = f"<{len(elem.value):,} bytes>"
        else:
            value = _short(elem.repval)
        rows.append(("dataset", str(elem.tag), elem.keyword, elem.VR, value))
    return pd.DataFrame(rows, columns=["group", "tag", "keyword", "VR", "value"])


def toy_xray_dataset(
    *,
    bits_stored: int = 12,
    photometric: str = "MONOCHROME2",
    rescale_slope: float | None = None,
    rescale_intercept: float | None = None,
    window_center: float | None = None,
    window_width: float | None = None,
    signed: bool = False,
) -> Dataset:
    """A header-only grayscale dataset with just the pixel-handling elements, to feed
    :func:`helpers.xray.dicom.pixels_to_unit` hand-made stored values (no file, no pixel data).

    ``bits_stored`` 1-16 (8 or 16 bits allocated); the rescale and window elements are written only when
    given. Taught in ``notebooks/01_data_preparation.ipynb`` (pixel handling, on a small constructed example).
    """
    if not 1 <= bits_stored <= 16:
        raise ValueError(f"bits_stored must be 1..16, got {bits_stored}")
    ds = Dataset()
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    if rescale_slope is not None or rescale_intercept is not None:
        ds.RescaleSlope = 1.0 if rescale_slope is None else rescale_slope
        ds.RescaleIntercept = 0.0 if rescale_intercept is None else rescale_intercept
    if window_center is not None and window_width is not None:
        ds.WindowCenter, ds.WindowWidth = window_center, window_width
    return ds


def clean_ages(ages: Any, max_age: float = MAX_PLAUSIBLE_AGE) -> pd.Series:
    """Ages in years as floats with the impossible ones (``> max_age``, negative, unparseable) set to NaN.

    Missing, not clipped: 148 is a typing error whose true value we don't know (48? 14?), and clipping to
    100 would invent a very old patient. Downstream code then skips NaN (pandas does by default) or fills
    in a value on purpose. ``ages``: N values; returns a float Series of N. Taught in
    ``notebooks/01_data_preparation.ipynb``.
    """
    values = pd.to_numeric(pd.Series(ages), errors="coerce").astype(float)
    return values.where((values >= 0) & (values <= max_age))


def real_rsna_metadata() -> pd.DataFrame:
    """The REAL RSNA training set, one row per patient (26,684): labels joined with the DICOM headers.

    Columns: ``patientId``, ``Target`` (0/1), ``n_boxes``, ``age`` (years, as written; five are above 100),
    ``age_clean`` (:func:`clean_ages`), ``sex`` (F/M), ``view_position`` (AP/PA), ``pixel_spacing`` (mm).
    Read from the tables that ship inside ``torchxrayvision`` (no download). Taught in
    ``notebooks/01_data_preparation.ipynb``.
    """

    labels = rsna.load_labels(real_tables.torchxrayvision_data_file(real_tables.XRV_LABELS))
    _, headers = real_tables.real_rsna_tables()
    head = headers.rename(
        columns={
            "PatientID": "patientId",
            "PatientAge": "age",
            "PatientSex": "sex",
            "ViewPosition": "view_position",
            "PixelSpacing": "pixel_spacing",
        }
    )[["patientId", "age", "sex", "view_position", "pixel_spacing"]]
    table = labels.assign(n_boxes=labels["boxes"].map(len)).drop(columns="boxes")
    table = table.merge(head, on="patientId", how="left", validate="one_to_one")
    table["age"] = pd.to_numeric(table["age"], errors="coerce").astype(float)
    table.insert(table.columns.get_loc("age") + 1, "age_clean", clean_ages(table["age"]).to_numpy())
    return table


def positive_rate(df: pd.DataFrame, by: str | Sequence[str], label_col: str = "Target") -> pd.DataFrame:
    """Patients, positives and the positive rate (with a 95 % Wilson interval) per group of ``by``.

    Returns one row per group: ``patients``, ``positives``, ``rate``, ``ci_low``, ``ci_high``. Taught in
    ``notebooks/01_data_preparation.ipynb`` (the AP view / pneumonia link).
    """
    grouped = df.groupby(by, observed=True)[label_col]
    table = grouped.agg(patients="size", positives="sum")
    n, k = table["patients"].to_numpy(float), table["positives"].to_numpy(float)
    rate = k / n
    z = 1.959963984540054
    centre = (rate + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(rate * (1 - rate) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return table.assign(rate=rate, ci_low=centre - half, ci_high=centre + half)


def rows_per_patient(raw_labels: pd.DataFrame, id_col: str = "patientId") -> pd.Series:
    """How many patients have 1, 2, 3, ... rows in a raw label file (one row per box): a Series
    ``rows -> patients``. Taught in ``notebooks/01_data_preparation.ipynb`` (the label structure)."""
    counts = raw_labels[id_col].value_counts().value_counts().sort_index()
    counts.index.name, counts.name = "rows", "patients"
    return counts


def split_table(
    df: pd.DataFrame,
    split_col: str = "split",
    label_col: str = "label",
    group_col: str = "patientId",
    order: Sequence[str] = ("train", "val", "test"),
) -> pd.DataFrame:
    """Images, patients, positives and prevalence per split (rows in ``order``, absent splits skipped).

    Taught in ``notebooks/01_data_preparation.ipynb`` (the patient-level split).
    """
    grouped = df.groupby(split_col)
    table = pd.DataFrame(
        {
            "images": grouped.size(),
            "patients": grouped[group_col].nunique(),
            "positive_images": grouped[label_col].sum(),
        }
    )
    table["prevalence"] = (table["positive_images"] / table["images"]).round(3)
    return table.loc[[s for s in order if s in table.index]]


def patients_in_several_splits(
    df: pd.DataFrame, split_col: str = "split", group_col: str = "patientId"
) -> int:
    """The number of patients with images in more than one split (0 for a patient-level split)."""
    return int((df.groupby(group_col)[split_col].nunique() > 1).sum())


def leaked_fraction(
    df: pd.DataFrame,
    split_col: str = "split",
    group_col: str = "patientId",
    train: str = "train",
    val: str = "val",
) -> float:
    """The fraction of the ``val`` images whose patient also has an image in ``train``.

    0 for a patient-level split; an image-level random split of a set with several images per patient
    leaks. Taught in ``notebooks/01_data_preparation.ipynb`` (Kermany).
    """
    in_train = set(df.loc[df[split_col] == train, group_col])
    val_ids = df.loc[df[split_col] == val, group_col]
    if len(val_ids) == 0:
        raise ValueError(f"no rows with {split_col} == {val!r}")
    return float(val_ids.isin(in_train).mean())


def image_level_split(n: int, val_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """The WRONG split, for comparison: each of ``n`` images independently to 'val' with probability
    ``val_fraction`` (seeded), ignoring patients. Returns an array of N 'train'/'val' strings."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < val_fraction, "val", "train")


def zone_plate(size: int = 1024, max_frequency: float = 0.35) -> np.ndarray:
    """A zone plate: rings whose spatial frequency grows linearly from 0 at the centre to
    ``max_frequency`` cycles/pixel at the middle of each edge (``sqrt(2)`` times that in the corners, so
    keep it below 0.35 for a chart that is itself free of aliasing). float32 ``size x size`` in [0, 1].

    The test chart for resampling: a downscale without antialiasing turns the fine outer rings into
    false coarse rings (aliasing, moire). Taught in ``notebooks/01_data_preparation.ipynb``.
    """
    r = (np.arange(size) - (size - 1) / 2) / (size / 2)  # -1 .. 1 across the image
    rr = r[None, :] ** 2 + r[:, None] ** 2
    # phase = pi * f_max * size/2 * rr: d(phase)/dx = 2 pi f_max at the edge (r = 1)
    phase = np.pi * max_frequency * (size / 2) * rr
    return (0.5 + 0.5 * np.cos(phase)).astype(np.float32)


def subsample(image: np.ndarray, size: int) -> np.ndarray:
    """Resize ``image`` (H x W) to ``size x size`` by picking the nearest pixel, WITHOUT antialiasing.

    What a naive resize does (e.g. ``PIL`` ``NEAREST``, or ``torch`` ``interpolate(mode="nearest")``):
    every output pixel is one input pixel, so detail finer than the new pixel spacing folds into false
    patterns. For comparison with :func:`helpers.xray.preprocess.load_and_resize`. Taught in
    ``notebooks/01_data_preparation.ipynb``.
    """
    h, w = image.shape
    rows = ((np.arange(size) + 0.5) * h / size).astype(int)
    cols = ((np.arange(size) + 0.5) * w / size).astype(int)
    return image[rows[:, None], cols[None, :]]


def nyquist_limit(original: int, size: int) -> float:
    """The highest spatial frequency, in cycles per ORIGINAL pixel, that survives resizing ``original``
    pixels to ``size`` pixels: half the new sampling rate, ``size / original / 2``. Anything finer
    aliases unless it is removed first (antialiasing). Taught in ``notebooks/01_data_preparation.ipynb``.
    """
    return size / original / 2


def running_sums(
    images: np.ndarray, indices: np.ndarray | None = None, batch: int = 256
) -> tuple[int, float, float]:
    """``(n, sum of x, sum of x**2)`` over every pixel of uint8 ``images`` (N x H x W), x = pixel / 255.

    The sums that :func:`helpers.xray.preprocess.running_mean_std` accumulates, exposed so that the mean and
    standard deviation can be computed from them by hand. Exact: integer sums, divided once at the end.
    ``indices`` picks rows (e.g. the train split of a memmap), one batch in memory at a time. Taught in
    ``notebooks/01_data_preparation.ipynb``.
    """
    rows = np.arange(len(images)) if indices is None else np.sort(np.asarray(indices))
    total = total_sq = 0
    count = 0
    for start in range(0, len(rows), batch):
        block = np.asarray(images[rows[start : start + batch]])
        total += int(block.sum(dtype=np.uint64))
        total_sq += int(np.square(block, dtype=np.uint32).sum(dtype=np.uint64))
        count += block.size
    return count, total / 255.0, total_sq / 255.0**2
