"""The real tables that ship inside the ``torchxrayvision`` package, read without importing it.

The real RSNA label table and the real DICOM headers of the 26,684 RSNA training images: metadata EDA in
``notebooks/01_data_preparation.ipynb``, and the patients, boxes and metadata of the synthetic RSNA-like set
(:mod:`helpers.data.synthetic`), so that only its pixels are drawn. And the label table of NIH ChestX-ray14,
where the RSNA images come from, with its real patient numbers: the patient-level split of notebook 01.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

XRV_LABELS = "kaggle_stage_2_train_labels.csv.zip"
XRV_HEADERS = "kaggle_stage_2_train_images_dicom_headers.csv.gz"
XRV_NIH = "Data_Entry_2017_v2020.csv.gz"
#: The NIH file writes two header fields as ``OriginalImage[Width,Height]`` and
#: ``OriginalImagePixelSpacing[x,y]``, which a CSV reader splits into four oddly named columns.
_NIH_RENAME = {
    "OriginalImage[Width": "OriginalImageWidth",
    "Height]": "OriginalImageHeight",
    "OriginalImagePixelSpacing[x": "OriginalImagePixelSpacingX",
    "y]": "OriginalImagePixelSpacingY",
}


def torchxrayvision_data_file(name: str) -> Path:
    """The path of a data file shipped in the installed ``torchxrayvision`` package (without importing it)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{name}: the package torchxrayvision is not installed (pip install torchxrayvision)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; this torchxrayvision version does not ship {name}")
    return path


def real_rsna_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The REAL RSNA tables: ``(labels, headers)``.

    ``labels``: ``patientId, x, y, width, height, Target``, one row per box (30,227 rows, NaN boxes for
    negatives). ``headers``: one row per training image (26,684) with ``PatientID, PatientAge, PatientSex,
    ViewPosition, PixelSpacing`` and the other header fields. Taught in ``notebooks/01_data_preparation.ipynb``.
    """
    labels = pd.read_csv(torchxrayvision_data_file(XRV_LABELS))
    headers = pd.read_csv(torchxrayvision_data_file(XRV_HEADERS)).drop(columns="Unnamed: 0", errors="ignore")
    return labels, headers


def nih_entries() -> pd.DataFrame:
    """The REAL label table of NIH ChestX-ray14 (``Data_Entry_2017_v2020.csv``): one row per film, 112,120 rows.

    Columns ``Image Index`` (the file name, e.g. ``00000001_000.png``), ``Finding Labels`` (``|``-separated),
    ``Follow-up #`` (0 for a patient's first film), ``Patient ID`` (an integer: 30,805 patients, many with
    several films), ``Patient Age``, ``Patient Gender``, ``View Position`` and ``OriginalImageWidth``,
    ``OriginalImageHeight``, ``OriginalImagePixelSpacingX``, ``OriginalImagePixelSpacingY``. The RSNA
    challenge images are a subset of these films, relabelled, with a new random ``patientId`` per image.
    Taught in ``notebooks/01_data_preparation.ipynb`` (the patient-level split).
    """
    return pd.read_csv(torchxrayvision_data_file(XRV_NIH)).rename(columns=_NIH_RENAME)
