"""The Kermany et al. (2018) pediatric chest X-ray set in its Kaggle layout, as items for the store.

Taught in ``notebooks/01_data_preparation.ipynb`` (patient-level splits; why the official 16-image
validation folder is not a validation set).

Layout: ``<dir>/chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``. The file name carries the patient:
``person1_bacteria_1.jpeg`` -> ``person1``, ``IM-0115-0001.jpeg`` -> ``IM-0115``,
``NORMAL2-IM-0372-0001.jpeg`` -> ``NORMAL2-IM-0372``. A patient can have several images, so a split that
ignores patients leaks the same child into train and validation.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from helpers.xray.preprocess import split_patients

LABELS = {"NORMAL": 0, "PNEUMONIA": 1}
OFFICIAL_SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
_PERSON = re.compile(r"^(person\d+)_(bacteria|virus)?", re.IGNORECASE)
_IM = re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+", re.IGNORECASE)


def patient_id(filename: str | Path) -> str:
    """The patient of a Kermany file name (see the module docstring); the bare stem if no pattern fits.

    Taught in ``notebooks/01_data_preparation.ipynb``.
    """
    stem = Path(filename).stem
    match = _PERSON.match(stem) or _IM.match(stem)
    return match.group(1) if match else stem


def find_root(kermany_dir: str | Path) -> Path:
    """The folder that holds ``train/`` and ``test/``: ``<dir>/chest_xray`` or ``<dir>`` itself.

    Raises ``ValueError`` naming ``kermany_dir`` if neither has them. Taught in
    ``notebooks/01_data_preparation.ipynb``.
    """
    base = Path(kermany_dir)
    for candidate in (base / "chest_xray", base):
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    raise ValueError(
        f"{base}: no Kermany layout here (expected chest_xray/{{train,test}}/{{NORMAL,PNEUMONIA}}/)"
    )


def list_images(kermany_dir: str | Path) -> pd.DataFrame:
    """Every image of the official folders: ``path``, ``patientId``, ``label`` (0/1), ``kind``
    (normal/bacteria/virus), ``official_split``; sorted by split and path, so the order is reproducible.
    Raises ``ValueError`` for a class folder other than NORMAL/PNEUMONIA or a set with no images.
    Taught in ``notebooks/01_data_preparation.ipynb``.
    """
    root = find_root(kermany_dir)
    rows = []
    for split in OFFICIAL_SPLITS:
        if not (root / split).is_dir():
            continue
        for folder in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            if folder.name not in LABELS:
                raise ValueError(f"{folder}: unexpected class folder; expected {', '.join(LABELS)}")
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
                    continue
                kind = _PERSON.match(path.stem)
                rows.append(
                    {
                        "path": str(path),
                        "patientId": patient_id(path.name),
                        "label": LABELS[folder.name],
                        "kind": (kind.group(2) or "pneumonia").lower() if kind else folder.name.lower(),
                        "official_split": split,
                    }
                )
    if not rows:
        raise ValueError(f"{root}: no .jpeg/.png images under train/, val/ or test/")
    return pd.DataFrame(rows)


def kermany_items(kermany_dir: str | Path, val_fraction: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """Items for ``store.build_store`` with a real, patient-level validation split.

    The official test folder stays ``'test'``. The official val folder holds only 16 images, so it is pooled
    with train and ``val_fraction`` of the pooled PATIENTS (stratified by label, seeded) become ``'val'``;
    no patient is on both sides. Columns: ``path``, ``patientId``, ``label`` (int64), ``kind``,
    ``official_split``, ``split``. Taught in ``notebooks/01_data_preparation.ipynb``.
    """
    items = list_images(kermany_dir)
    items["split"] = "test"
    pool = items["official_split"] != "test"
    if pool.any():
        items.loc[pool, "split"] = split_patients(items[pool], val_fraction=val_fraction, seed=seed)
    items["label"] = items["label"].astype("int64")
    return items
