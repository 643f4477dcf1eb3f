"""The RSNA Pneumonia Detection Challenge label files, checked, one row per patient.

Taught in ``notebooks/01_data_preparation.ipynb`` (RSNA labels: several rows per patient, boxes).

``stage_2_train_labels.csv`` has one row per box (``patientId,x,y,width,height,Target``; x, y = top-left
corner in original pixels) and one row with empty box fields per negative patient.
``stage_2_detailed_class_info.csv`` repeats each patient's class once per label row.
"""

from __future__ import annotations

import csv
import io
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers.progress import progress_bar
from helpers.xray.dicom import DicomReadError, read_metadata

LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
BOX_COLUMNS = ("x", "y", "width", "height")
CLASS_COLUMNS = ("patientId", "class")
CLASSES = ("Lung Opacity", "No Lung Opacity / Not Normal", "Normal")
#: The file names of the Kaggle layout inside an RSNA folder (real download or the synthetic set).
LABELS_FILE = "stage_2_train_labels.csv"
CLASS_INFO_FILE = "stage_2_detailed_class_info.csv"
IMAGES_DIR = "stage_2_train_images"
#: The item columns that :func:`rsna_items` takes from each DICOM header (item column: metadata key).
HEADER_COLUMNS = {
    "age": "age",
    "sex": "sex",
    "view_position": "view_position",
    "orig_height": "rows",
    "orig_width": "columns",
    "pixel_spacing": "pixel_spacing",
}
#: Field values read as missing (as pandas does), except in ``patientId``.
MISSING_VALUES = frozenset({"nan", "-nan", "na", "n/a", "#n/a", "<na>", "null", "none"})
#: The side of every RSNA training image, in pixels: boxes must lie inside it.
RSNA_IMAGE_SIZE = 1024


def _lines(mask: pd.Series, limit: int = 10) -> str:
    """File line numbers of the rows where ``mask`` is true (the tables are indexed by line), the first
    ``limit`` of them."""
    rows = mask.index[np.asarray(mask, dtype=bool)]
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (f", ... ({len(rows)} lines in all)" if len(rows) > limit else "")


def _zipped_csv(path: Path) -> bytes:
    """The bytes of the one CSV file inside the zip file ``path``; ValueError naming the file otherwise."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"{path}: is not a zip file, though its name ends in .zip ({err})") from err
    with archive:
        names = [n for n in archive.namelist() if not n.endswith("/") and not n.startswith("__MACOSX/")]
        csvs = [n for n in names if n.lower().endswith(".csv")]
        if len(csvs) != 1:
            found = ": " + ", ".join(csvs) if csvs else f" (it holds: {', '.join(names) or 'nothing'})"
            raise ValueError(f"{path}: holds {len(csvs)} CSV files{found}; expected one")
        try:
            return archive.read(csvs[0])
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as err:
            raise ValueError(f"{path}: damaged zip file, can't read {csvs[0]} ({err})") from err


def _csv_rows(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """The header, the non-empty rows (fields stripped, trailing empty fields dropped) and their line numbers.

    A CSV file or a zip file holding one. Blank lines and lines of commas only are skipped; a row with more
    non-empty fields than the header raises ``ValueError`` naming the file and the line.
    """
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        text = (_zipped_csv(path) if path.suffix.lower() == ".zip" else path.read_bytes()).decode("utf-8-sig")
        reader = csv.reader(io.StringIO(text, newline=""))
        header = [f.strip() for f in next(reader, [])]
        if not any(header):
            raise ValueError(f"{path}: empty file (no header line)")
        while header and not header[-1]:
            header.pop()  # a trailing comma on the header line
        rows, lines = [], []
        for row in reader:
            fields = list(map(str.strip, row))
            if any(fields[len(header) :]):
                raise ValueError(
                    f"{path}: line {reader.line_num} has {len(fields)} fields; the header names {len(header)}"
                )
            if any(fields):
                rows.append((fields + [""] * len(header))[: len(header)])
                lines.append(reader.line_num)
    except (UnicodeDecodeError, csv.Error, OSError) as err:
        raise ValueError(f"{path}: not a readable CSV file ({err})") from err
    return header, rows, lines


def _read_table(path: Path, expected: Sequence[str]) -> pd.DataFrame:
    """Read a CSV (zipped is fine) as text indexed by file line number and check its columns exactly.

    Fields are stripped of spaces; empty ones and ``MISSING_VALUES`` are NaN. A file without rows or with
    an empty patientId raises ``ValueError`` naming the file.
    """
    header, rows, lines = _csv_rows(path)
    names = [c or f"(unnamed column {i + 1})" for i, c in enumerate(header)]
    missing = [c for c in expected if c not in names]
    extra = [c for i, c in enumerate(names) if c not in expected or c in names[:i]]
    if missing or extra:
        raise ValueError(
            f"{path}: expected columns {', '.join(expected)}; missing: {', '.join(missing) or 'none'}; "
            f"extra: {', '.join(map(str, extra)) or 'none'}"
        )
    if not rows:
        raise ValueError(f"{path}: no rows (only a header line)")
    df = pd.DataFrame(rows, columns=names, index=pd.Index(lines, name="line"), dtype=object)
    missing_value = df.apply(lambda col: col.str.lower().isin(MISSING_VALUES) & (col.name != "patientId"))
    df = df.where((df != "") & ~missing_value)
    empty_id = df["patientId"].isna()
    if empty_id.any():
        raise ValueError(f"{path}: empty patientId on lines {_lines(empty_id)}")
    return df


def _drop_duplicate_rows(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``df`` without rows that repeat an earlier row exactly, with a warning saying how many."""
    repeated = df.duplicated()
    if repeated.any():
        warnings.warn(
            f"{path}: dropped {int(repeated.sum())} exact duplicate rows (lines {_lines(repeated)})",
            stacklevel=3,
        )
    return df[~repeated]


def _box_problems(box: pd.DataFrame, complete: pd.Series, image_size: tuple[int, int] | None) -> list[str]:
    """What is wrong with the complete boxes of positive rows: not finite, sizes, outside the image."""
    problems = []
    infinite = complete & np.isinf(box).any(axis=1)
    if infinite.any():
        problems.append(f"box values must be finite (lines {_lines(infinite)})")
    x, y, w, h = (box[c] for c in BOX_COLUMNS)
    bad_size = complete & ~infinite & ~((w > 0) & (h > 0) & (x >= 0) & (y >= 0))
    if bad_size.any():
        problems.append(f"boxes need x, y >= 0 and width, height > 0 (lines {_lines(bad_size)})")
    if image_size is not None:
        height, width = image_size
        outside = complete & ~infinite & ~bad_size & ((x + w > width) | (y + h > height))
        if outside.any():
            problems.append(
                f"boxes must lie inside the {height} x {width} image: x + width <= {width}, "
                f"y + height <= {height} (lines {_lines(outside)})"
            )
    return problems


def _label_problems(df: pd.DataFrame, image_size: tuple[int, int] | None) -> list[str]:
    """Every problem of a label table (indexed by line), each with its lines."""
    target = pd.to_numeric(df["Target"], errors="coerce")
    raw_box = df[list(BOX_COLUMNS)]
    box = raw_box.apply(pd.to_numeric, errors="coerce")
    positive, negative = target == 1, target == 0
    problems = []
    bad_target = ~target.isin([0, 1])
    if bad_target.any():
        problems.append(f"Target must be 0 or 1 (lines {_lines(bad_target)})")
    not_numeric = (box.isna() & raw_box.notna()).any(axis=1)
    if not_numeric.any():
        problems.append(f"box values must be numbers (lines {_lines(not_numeric)})")
    complete = positive & box.notna().all(axis=1)
    if (positive & ~complete).any():
        problems.append(
            f"positive rows (Target=1) without a complete box (lines {_lines(positive & ~complete)})"
        )
    has_any = raw_box.notna().any(axis=1)
    if (negative & has_any).any():
        problems.append(f"negative rows (Target=0) with box values (lines {_lines(negative & has_any)})")
    problems += _box_problems(box, complete, image_size)
    mixed = target.groupby(df["patientId"], sort=False).transform("nunique") > 1
    if mixed.any():
        ids = pd.unique(df.loc[mixed, "patientId"])
        shown = ", ".join(ids[:5]) + (f", ... ({len(ids)} in all)" if len(ids) > 5 else "")
        problems.append(f"patients with both Target 0 and 1 rows: {shown} (lines {_lines(mixed)})")
    return problems


def load_labels(
    csv_path: str | Path, image_size: int | tuple[int, int] | None = RSNA_IMAGE_SIZE
) -> pd.DataFrame:
    """``stage_2_train_labels.csv`` -> one row per patient, in order of first appearance.

    Columns: ``patientId`` (str), ``Target`` (int64, 0/1), ``boxes`` (list of ``(x, y, width, height)``
    float tuples in original pixels; empty for negatives). A zipped CSV is read as well; spaces around
    fields, blank lines and trailing commas are ignored; rows repeated exactly are dropped with a warning.
    ``image_size``: the side (or ``(height, width)``) of the images the boxes must lie in (RSNA: 1024);
    None skips that check. Raises ``ValueError`` naming the file and every problem with line numbers:
    missing/extra columns, no rows, Target not 0/1, a positive row without a complete box, a negative row
    with box values, box values that are not finite numbers, box sizes that are not positive, boxes
    outside the image, a patient with both 0 and 1 rows. Taught in ``notebooks/01_data_preparation.ipynb``.
    """
    path = Path(csv_path)
    df = _drop_duplicate_rows(_read_table(path, LABEL_COLUMNS), path)
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    problems = _label_problems(df, size)
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    target = pd.to_numeric(df["Target"]).astype(np.int64)
    boxes: dict[str, list[tuple[float, float, float, float]]] = {
        pid: [] for pid in pd.unique(df["patientId"])
    }
    for pid, x, y, w, h in df.loc[target == 1, ["patientId", *BOX_COLUMNS]].itertuples(index=False):
        boxes[pid].append((float(x), float(y), float(w), float(h)))
    first = target.groupby(df["patientId"], sort=False).first()
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


def read_headers(
    paths: Sequence[Path], progress: bool = True
) -> tuple[list[dict[str, Any] | None], list[dict[str, str]]]:
    """:func:`read_metadata` of each file, None for a file whose header can't be read, as ``build_store`` does.

    Returns ``(metadata, skipped)``: ``skipped`` holds ``{'path', 'reason'}`` for each unreadable file (not
    DICOM, truncated, no image size, ...). Never stops on a bad file. Used by :func:`rsna_items`.
    """
    meta: list[dict[str, Any] | None] = []
    skipped = []
    for path in progress_bar(paths, desc="DICOM headers", enabled=progress):
        try:
            m = read_metadata(path)
            if m["rows"] <= 0 or m["columns"] <= 0:
                raise DicomReadError(
                    f"{path}: no image size in the DICOM header (Rows={m['rows']}, Columns={m['columns']})"
                )
        except Exception as err:  # any unreadable header is reported and skipped; the scan goes on
            reason = str(err) if str(err).startswith(str(path)) else f"{path}: {type(err).__name__}: {err}"
            m = None
            skipped.append({"path": str(path), "reason": reason})
        meta.append(m)
    return meta, skipped


def _report_skipped(folder: Path, skipped: list[dict[str, str]], total: int, limit: int = 10) -> None:
    """One warning with the count and the first ``limit`` reasons; ``ValueError`` if no file was readable."""
    if skipped and len(skipped) == total:
        raise ValueError(
            f"{folder}: none of the {total} DICOM headers can be read; first: {skipped[0]['reason']}"
        )
    if skipped:
        shown = "".join(f"\n  skipped: {s['reason']}" for s in skipped[:limit])
        more = f"\n  ... ({len(skipped)} in all)" if len(skipped) > limit else ""
        warnings.warn(
            f"{folder}: skipped {len(skipped)} of {total} images whose DICOM header can't be read "
            f"(all in items.attrs['skipped']):{shown}{more}",
            stacklevel=3,
        )


def _check_boxes_fit(items: pd.DataFrame, labels_path: Path) -> None:
    """Refuse boxes that reach outside their own image (size from its DICOM header), naming the patients."""
    sized = items[["patientId", "boxes", "orig_height", "orig_width"]]
    outside = [
        f"{pid} {box} in a {h} x {w} image"
        for pid, boxes, h, w in sized.itertuples(index=False)
        for box in boxes
        if box[0] + box[2] > w or box[1] + box[3] > h
    ]
    if outside:
        more = f", ... ({len(outside)} boxes in all)" if len(outside) > 5 else ""
        raise ValueError(f"{labels_path}: boxes outside their image: {'; '.join(outside[:5])}{more}")


def rsna_items(rsna_dir: str | Path, progress: bool = True) -> pd.DataFrame:
    """The RSNA training images of a folder in the Kaggle layout, as items for ``store.build_store``.

    One row per patient, in label-file order: ``path`` (str), ``patientId``, ``label`` (int64, the
    Target), ``boxes`` (original pixels), ``class`` (when the class file is there) and from each DICOM
    header (pixels not decoded): ``age`` (years), ``sex``, ``view_position``, ``orig_height``,
    ``orig_width``, ``pixel_spacing`` (mm). An image whose header can't be read is left out and reported
    (one warning: the count and the first reasons); ``items.attrs['skipped']`` lists each as
    ``{'path', 'reason'}``. Raises ``ValueError`` if label-file patients have no image, if no header at all
    can be read, or if a box reaches outside its image. Taught in ``notebooks/01_data_preparation.ipynb``.
    """
    root = Path(rsna_dir)
    labels = load_labels(root / LABELS_FILE, image_size=None)  # each image's own size is checked below
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
    meta, skipped = read_headers(paths, progress)
    _report_skipped(root / IMAGES_DIR, skipped, len(paths))
    readable = [m is not None for m in meta]
    items, meta = items[readable].reset_index(drop=True), [m for m in meta if m is not None]
    for column, key in HEADER_COLUMNS.items():
        items[column] = [m[key] for m in meta]
    _check_boxes_fit(items, root / LABELS_FILE)
    columns = ["path", "patientId", "label", "boxes", *[c for c in items.columns if c == "class"]]
    items = items[columns + list(HEADER_COLUMNS)].copy()
    items.attrs["skipped"] = skipped
    return items
