"""The RSNA Pneumonia Detection Challenge label files, checked, one row per patient.

Taught in ``notebooks/01_data_preparation.ipynb`` (RSNA labels: several rows per patient, boxes).

``stage_2_train_labels.csv`` has one row per box (``patientId,x,y,width,height,Target``; x, y = top-left
corner in original pixels) and one row with empty box fields per negative patient.
``stage_2_detailed_class_info.csv`` repeats each patient's class once per label row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.progress import progress_bar
from helpers.xray.dicom import read_metadata

LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
BOX_COLUMNS = ("x", "y", "width", "height")
CLASS_COLUMNS = ("patientId", "class")
CLASSES = ("Lung Opacity", "No Lung Opacity / Not Normal", "Normal")
#: The file names of the Kaggle layout inside an RSNA folder (real download or the synthetic set).
LABELS_FILE = "stage_2_train_labels.csv"
CLASS_INFO_FILE = "stage_2_detailed_class_info.csv"
IMAGES_DIR = "stage_2_train_images"


def _lines(mask: pd.Series | np.ndarray, limit: int = 10) -> str:
    """File line numbers (header = line 1) of the rows where ``mask`` is true, the first ``limit`` of them."""
    rows = np.flatnonzero(np.asarray(mask)) + 2
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (f", ... ({len(rows)} lines in all)" if len(rows) > limit else "")


def _read_table(path: Path, expected: Sequence[str]) -> pd.DataFrame:
    """Read a CSV (zipped is fine) with ``patientId`` as text and check its columns exactly."""
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, dtype={"patientId": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable CSV file ({err})") from err
    missing = [c for c in expected if c not in df.columns]
    extra = [c for c in df.columns if c not in expected]
    if missing or extra:
        raise ValueError(
            f"{path}: expected columns {', '.join(expected)}; missing: {', '.join(missing) or 'none'}; "
            f"extra: {', '.join(map(str, extra)) or 'none'}"
        )
    empty_id = df["patientId"].isna() | (df["patientId"].str.strip() == "")
    if empty_id.any():
        raise ValueError(f"{path}: empty patientId on lines {_lines(empty_id)}")
    return df.reset_index(drop=True)


def load_labels(csv_path: str | Path) -> pd.DataFrame:
    """``stage_2_train_labels.csv`` -> one row per patient, in order of first appearance.

    Columns: ``patientId`` (str), ``Target`` (int64, 0/1), ``boxes`` (list of ``(x, y, width, height)``
    float tuples in original pixels; empty for negatives). A zipped CSV is read as well. Raises
    ``ValueError`` naming the file and every problem with line numbers: missing/extra columns, Target not
    0/1, a positive row without a complete box, a negative row with box values, box sizes that are not
    positive, non-numeric box values, a patient with both 0 and 1 rows. Taught in
    ``notebooks/01_data_preparation.ipynb``.
    """
    path = Path(csv_path)
    df = _read_table(path, LABEL_COLUMNS)
    target = pd.to_numeric(df["Target"], errors="coerce")
    raw_box = df[list(BOX_COLUMNS)]
    box = raw_box.apply(pd.to_numeric, errors="coerce")
    problems = []
    bad_target = ~target.isin([0, 1])
    if bad_target.any():
        problems.append(f"Target must be 0 or 1 (lines {_lines(bad_target)})")
    not_numeric = (box.isna() & raw_box.notna()).any(axis=1)
    if not_numeric.any():
        problems.append(f"box values must be numbers (lines {_lines(not_numeric)})")
    has_any, has_all = raw_box.notna().any(axis=1), box.notna().all(axis=1)
    positive, negative = target == 1, target == 0
    lacking = positive & ~has_all
    if lacking.any():
        problems.append(f"positive rows (Target=1) without a complete box (lines {_lines(lacking)})")
    if (negative & has_any).any():
        problems.append(f"negative rows (Target=0) with box values (lines {_lines(negative & has_any)})")
    bad_size = (
        positive & has_all & ~((box["width"] > 0) & (box["height"] > 0) & (box["x"] >= 0) & (box["y"] >= 0))
    )
    if bad_size.any():
        problems.append(f"boxes need x, y >= 0 and width, height > 0 (lines {_lines(bad_size)})")
    mixed = target.groupby(df["patientId"], sort=False).transform("nunique") > 1
    if mixed.any():
        ids = pd.unique(df.loc[mixed, "patientId"])
        shown = ", ".join(ids[:5]) + (f", ... ({len(ids)} in all)" if len(ids) > 5 else "")
        problems.append(f"patients with both Target 0 and 1 rows: {shown} (lines {_lines(mixed)})")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))

    boxes: dict[str, list[tuple[float, float, float, float]]] = {
        pid: [] for pid in pd.unique(df["patientId"])
    }
    for pid, x, y, w, h in df.loc[positive, ["patientId", *BOX_COLUMNS]].itertuples(index=False):
        boxes[pid].append((float(x), float(y), float(w), float(h)))
    first = target.astype(np.int64).groupby(df["patientId"], sort=False).first()
    return pd.DataFrame(
        {"patientId": list(boxes), "Target": first.loc[list(boxes)].to_numpy(), "boxes": list(boxes.values())}
    )


def load_class_info(csv_path: str | Path) -> pd.DataFrame:
    """``stage_2_detailed_class_info.csv`` -> one row per patient: ``patientId``, ``class``.

    The file repeats a patient's class once per label row; duplicates are dropped (order of first
    appearance kept). Raises ``ValueError`` naming the file for wrong columns, an unknown class (lines) or
    a patient given two different classes. Taught in ``notebooks/01_data_preparation.ipynb``.
    """
    path = Path(csv_path)
    df = _read_table(path, CLASS_COLUMNS)
    unknown = ~df["class"].isin(CLASSES)
    if unknown.any():
        found = ", ".join(repr(c) for c in pd.unique(df.loc[unknown, "class"])[:5])
        raise ValueError(
            f"{path}: unknown class {found} (lines {_lines(unknown)}); expected one of {CLASSES}"
        )
    unique = df.drop_duplicates().reset_index(drop=True)
    clash = unique["patientId"].duplicated(keep=False)
    if clash.any():
        ids = pd.unique(unique.loc[clash, "patientId"])
        raise ValueError(
            f"{path}: patients with more than one class: {', '.join(ids[:5])} ({len(ids)} in all)"
        )
    return unique


def rsna_items(rsna_dir: str | Path, progress: bool = True) -> pd.DataFrame:
    """The RSNA training images of a folder in the Kaggle layout, as items for ``store.build_store``.

    One row per patient, in label-file order: ``path`` (str), ``patientId``, ``label`` (int64, the
    Target), ``boxes`` (original pixels), ``class`` (when the class file is there) and from each DICOM
    header (pixels not decoded): ``age`` (years), ``sex``, ``view_position``, ``orig_height``,
    ``orig_width``, ``pixel_spacing`` (mm). Raises ``ValueError`` if label-file patients have no image.
    Taught in ``notebooks/01_data_preparation.ipynb``.
    """
    root = Path(rsna_dir)
    labels = load_labels(root / LABELS_FILE)
    paths = [root / IMAGES_DIR / f"{pid}.dcm" for pid in labels["patientId"]]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(p.name for p in missing[:5])
        raise ValueError(
            f"{root / IMAGES_DIR}: {len(missing)} of {len(paths)} labelled patients have no image ({shown})"
        )
    items = labels.rename(columns={"Target": "label"}).assign(path=[str(p) for p in paths])
    if (root / CLASS_INFO_FILE).is_file():
        items = items.merge(load_class_info(root / CLASS_INFO_FILE), on="patientId", how="left")
    meta = [read_metadata(p) for p in progress_bar(paths, desc="DICOM headers", enabled=progress)]
    items["age"] = [m["age"] for m in meta]
    items["sex"] = [m["sex"] for m in meta]
    items["view_position"] = [m["view_position"] for m in meta]
    items["orig_height"] = [m["rows"] for m in meta]
    items["orig_width"] = [m["columns"] for m in meta]
    items["pixel_spacing"] = [m["pixel_spacing"] for m in meta]
    return items[
        [
            "path",
            "patientId",
            "label",
            "boxes",
            *[c for c in items.columns if c == "class"],
            "age",
            "sex",
            "view_position",
            "orig_height",
            "orig_width",
            "pixel_spacing",
        ]
    ]
