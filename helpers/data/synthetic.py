"""Built-in synthetic data sets in the REAL file formats: RSNA-like DICOMs, Kermany-like JPEGs, ICBHI-like WAVs.

Taught in ``notebooks/00_setup.ipynb`` and ``notebooks/01_data_preparation.ipynb``; generated on first use
by :mod:`helpers.data.datasets`. The RSNA-like set takes its patients, boxes and metadata (age, sex, view,
pixel spacing) from the real RSNA tables that ``torchxrayvision`` ships, so only the pixels are drawn
(:mod:`helpers.data.synthetic_xray`). The breath sounds: :mod:`helpers.data.synthetic_audio`.

Every generator is deterministic (same arguments => byte-identical files, whatever the number of worker
processes), writes each file atomically (temporary name, then ``os.replace``), resumes an interrupted run
(files already there are kept) and writes the files that mark a complete set last.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import pydicom.config
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid

from helpers.data.real_tables import real_rsna_tables
from helpers.data.synthetic_xray import LUNG_CENTRE_V, LUNG_CENTRES_U, Pose, draw_radiograph, random_pose
from helpers.files import atomic_path, claim_folder, run_tasks, write_atomic

RSNA_CLASSES = ("Lung Opacity", "No Lung Opacity / Not Normal", "Normal")
#: Among the real RSNA negatives: 11,821 'No Lung Opacity / Not Normal' and 8,851 'Normal'.
NOT_NORMAL_SHARE = 11821 / (11821 + 8851)
KERMANY_MARKER = "SYNTHETIC.txt"


def task_rng(*keys: int) -> np.random.Generator:
    """The random generator of one file, from the set's seed and the file's own keys."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


# ------------------------------------------------------------------------------------------------ RSNA
def sample_rsna_patients(n_patients: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sample real RSNA patients: ``(label rows, one header row per patient)``, both in the real file's order.

    The label rows keep every box of a chosen patient (unscaled, 1024-pixel coordinates) and gain a
    ``class`` column; the header rows are indexed by ``patientId`` and gain ``key`` (a stable per-patient
    seed) and ``class``. A larger set with the same seed contains the smaller one.
    """
    labels, headers = real_rsna_tables()
    ids = labels["patientId"].drop_duplicates().to_numpy()
    if not 1 <= n_patients <= len(ids):
        raise ValueError(f"n_patients must be between 1 and {len(ids)} (the real RSNA set), got {n_patients}")
    order = np.random.default_rng(seed).permutation(len(ids))[:n_patients]
    chosen = pd.Series(order, index=ids[order], name="key")
    rows = labels[labels["patientId"].isin(chosen.index)].copy()
    positive = rows.groupby("patientId", sort=False)["Target"].max()
    meta = headers.set_index("PatientID").loc[positive.index].copy()
    meta["key"] = chosen.loc[meta.index].to_numpy()
    not_normal = [task_rng(seed, key, 1).random() < NOT_NORMAL_SHARE for key in meta["key"]]
    meta["class"] = np.where(
        positive.to_numpy() == 1, RSNA_CLASSES[0], np.where(not_normal, *RSNA_CLASSES[1:])
    )
    rows["class"] = meta["class"].loc[rows["patientId"]].to_numpy()
    return rows, meta


def rsna_dicom(pixels: np.ndarray, patient_id: str, meta: dict[str, Any], seed: int) -> Dataset:
    """A DICOM dataset shaped like the RSNA files around ``pixels`` (H x W uint8), JPEG Baseline encoded.

    Taught in ``notebooks/01_data_preparation.ipynb``. Every UID comes from the seed and the patient, and
    the dates are fixed, so the same inputs give the same bytes.
    """
    rows, cols = pixels.shape
    jpeg = _jpeg_bytes(pixels, quality=95)

    def uid(kind: str) -> str:
        return generate_uid(entropy_srcs=["xai-lung-course", "rsna", str(seed), patient_id, kind])

    sop_uid = uid("instance")
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    file_meta.MediaStorageSOPInstanceUID = sop_uid
    file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    file_meta.ImplementationClassUID = generate_uid(entropy_srcs=["xai-lung-course", "implementation"])
    file_meta.ImplementationVersionName = "XAI_LUNG_0_1"
    ds = Dataset()
    ds.file_meta = file_meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate, ds.StudyTime = "19010101", "000000.00"
    ds.AccessionNumber, ds.ReferringPhysicianName = "", ""
    ds.Modality, ds.ConversionType = "CR", "WSD"
    ds.SeriesDescription = f"view: {meta['view']}"
    ds.PatientName = ds.PatientID = patient_id
    ds.PatientBirthDate, ds.PatientSex = "", meta["sex"]
    with pydicom.config.disable_value_validation():  # '51', not the standard '051Y', exactly like RSNA
        ds.PatientAge = str(meta["age"])
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", meta["view"]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("series")
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber, ds.PatientOrientation = "", 1, 1, ""
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.PixelSpacing = [f"{meta['spacing']:.6g}"] * 2
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
    ds.PixelData = encapsulate([jpeg])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def _jpeg_bytes(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _write_rsna_patient(task: dict[str, Any]) -> None:
    """Draw one patient and write its DICOM file (a worker's unit of work)."""
    rng = task_rng(task["seed"], task["key"], 2)
    pixels = draw_radiograph(
        rng,
        task["size"],
        task["boxes"],
        abnormal=task["abnormal"],
        marker=task["marker"],
        pose=random_pose(rng),
    )
    ds = rsna_dicom(pixels, task["patientId"], task["meta"], task["seed"])
    path = Path(task["path"])
    with atomic_path(path) as tmp:
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)


def make_rsna_like(
    dest: str | os.PathLike,
    n_patients: int,
    image_size: int = 1024,
    seed: int = 0,
    confounder: bool = False,
    workers: int | None = None,
) -> Path:
    """Write an RSNA-like set: ``stage_2_train_images/<patientId>.dcm`` and the two label CSVs.

    Patients, boxes (scaled by ``image_size / 1024``), classes and metadata are sampled from the real RSNA
    tables; each image is ``image_size`` x ``image_size`` uint8 with opacities drawn inside its boxes.
    ``confounder=True`` burns an 'L' marker into every positive image and no negative one (the shortcut of
    ``notebooks/05_gradcam_guided_backprop.ipynb``). Returns ``dest``. Taught in ``notebooks/00_setup.ipynb``.
    """
    dest = Path(dest)
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    params = {
        "set": "rsna",
        "n_patients": n_patients,
        "image_size": image_size,
        "seed": seed,
        "marker": confounder,
    }
    rows, meta = sample_rsna_patients(n_patients, seed)
    claim_folder(dest, params)
    images = dest / "stage_2_train_images"
    images.mkdir(exist_ok=True)
    scale = image_size / 1024
    rows[["x", "y", "width", "height"]] *= scale
    boxes = rows.dropna(subset=["x"]).groupby("patientId")[["x", "y", "width", "height"]]
    box_lists = {pid: group.to_numpy().tolist() for pid, group in boxes}
    tasks = []
    for pid, m in meta.iterrows():
        path = images / f"{pid}.dcm"
        if path.is_file():
            continue
        header = {"sex": m["PatientSex"], "age": int(m["PatientAge"]), "view": m["ViewPosition"]}
        header["spacing"] = float(m["PixelSpacing"]) / scale
        positive = m["class"] == RSNA_CLASSES[0]
        tasks.append(
            {
                "path": str(path), "patientId": pid, "seed": seed, "key": int(m["key"]), "size": image_size,
                "boxes": box_lists.get(pid, []), "meta": header, "abnormal": m["class"] == RSNA_CLASSES[1],
                "marker": bool(confounder and positive),
            }
        )  # fmt: skip
    cost = 0.015 + 0.07 * (image_size / 1024) ** 2
    run_tasks(_write_rsna_patient, tasks, workers, desc="synthetic RSNA DICOMs", seconds_each=cost)
    labels_csv = rows[["patientId", "x", "y", "width", "height", "Target"]].to_csv(index=False)
    write_atomic(dest / "stage_2_detailed_class_info.csv", rows[["patientId", "class"]].to_csv(index=False))
    write_atomic(dest / "stage_2_train_labels.csv", labels_csv)
    return dest


# --------------------------------------------------------------------------------------------- Kermany
def _kermany_boxes(rng: np.random.Generator, pose: Pose, size: int, kind: str) -> list[list[float]]:
    """Opacity boxes on the lungs: one large lobar patch (bacteria) or 2-4 smaller bilateral ones (virus)."""
    count = 1 if kind == "bacteria" else int(rng.integers(2, 5))
    boxes = []
    for i in range(count):
        side = int(rng.integers(2)) if count == 1 else i % 2
        w, h = (rng.uniform(0.16, 0.24), rng.uniform(0.22, 0.34)) if count == 1 else rng.uniform(0.12, 0.2, 2)
        x, y = pose.to_image(
            LUNG_CENTRES_U[side] + rng.uniform(-0.04, 0.04), LUNG_CENTRE_V + rng.uniform(-0.14, 0.14)
        )
        w, h = w * pose.scale * size, h * pose.scale * size
        boxes.append([x * size - w / 2, y * size - h / 2, w, h])
    return boxes


def _write_kermany_image(task: dict[str, Any]) -> None:
    """Draw one pediatric radiograph and write it as a grayscale JPEG (a worker's unit of work)."""
    rng = task_rng(*task["keys"])
    height = int(rng.integers(300, 601))
    width = min(600, int(height * rng.uniform(1.0, 1.35)))
    pose = random_pose(rng, pediatric=True)
    boxes = _kermany_boxes(rng, pose, height, task["kind"]) if task["kind"] != "normal" else []
    pixels = draw_radiograph(rng, height, boxes, pose=pose, width=width)
    with atomic_path(Path(task["path"])) as tmp:
        tmp.write_bytes(_jpeg_bytes(pixels, quality=90))


def kermany_names(
    rng: np.random.Generator, n_images: int, label: str, first_person: int
) -> list[tuple[str, str]]:
    """Kermany-style ``(file name, kind)`` pairs for ``n_images`` images of several images per person.

    NORMAL: ``IM-0115-0001.jpeg`` or ``NORMAL2-IM-0372-0001.jpeg``; PNEUMONIA: ``person12_bacteria_45.jpeg``
    or ``person3_virus_6.jpeg`` (the last number counts images per kind across persons).
    """
    names: list[tuple[str, str]] = []
    person, counters = first_person, {"bacteria": 0, "virus": 0}
    while len(names) < n_images:
        person += 1
        take = min(int(rng.integers(1, 4)), n_images - len(names))
        kind = "normal" if label == "NORMAL" else ("bacteria" if rng.random() < 0.65 else "virus")
        prefix = "NORMAL2-" if rng.random() < 0.5 else ""
        for j in range(1, take + 1):
            if label == "NORMAL":
                names.append((f"{prefix}IM-{person:04d}-{j:04d}.jpeg", kind))
            else:
                counters[kind] += 1
                names.append((f"person{person}_{kind}_{counters[kind]}.jpeg", kind))
    return names


def make_kermany_like(
    dest: str | os.PathLike, n_per_class: int = 40, seed: int = 0, workers: int | None = None
) -> Path:
    """Write a Kermany-like set: ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``.

    ``n_per_class`` training images per class, ``max(8, n_per_class // 4)`` test images per class and, like
    the real set, only 8 + 8 validation images. Grayscale JPEGs of 300-600 px a side, pediatric anatomy,
    several images per person, persons never shared between folders. Returns ``dest``.
    Taught in ``notebooks/01_data_preparation.ipynb`` (the seed paper's data).
    """
    dest = Path(dest)
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    claim_folder(dest, {"set": "kermany", "n_per_class": n_per_class, "seed": seed})
    counts = {"train": n_per_class, "val": 8, "test": max(8, n_per_class // 4)}
    tasks = []
    for s, (split, count) in enumerate(counts.items()):
        for c, label in enumerate(("NORMAL", "PNEUMONIA")):
            folder = dest / "chest_xray" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            first = 100 + 1000 * s if label == "NORMAL" else 1000 * s
            for i, (name, kind) in enumerate(kermany_names(task_rng(seed, s, c), count, label, first)):
                if not (folder / name).is_file():
                    tasks.append({"path": str(folder / name), "keys": (seed, s, c, i), "kind": kind})
    run_tasks(_write_kermany_image, tasks, workers, desc="synthetic Kermany JPEGs")
    note = (
        f"Built-in synthetic Kermany-like set (seed {seed}, counts per class {counts}); not real patients.\n"
    )
    write_atomic(dest / KERMANY_MARKER, note)
    return dest
