"""ICBHI 2017 Respiratory Sound Database: file names, annotations, splits, patch labels and the ICBHI score.

Taught in ``notebooks/06_breath_sounds.ipynb``. The layout (identical for the real download and the built-in
synthetic set)::

    <dir>/ICBHI_final_database/<patient>_<recording>_<location>_<mode>_<device>.wav and .txt
    <dir>/ICBHI_Challenge_diagnosis.txt        101<TAB>URTI
    <dir>/ICBHI_challenge_train_test.txt       101_1b1_Al_sc_Meditron<TAB>train

An annotation ``.txt`` has one respiratory cycle per line: ``start end crackles wheezes`` (seconds, 0/1).
Classes per cycle or patch: 0 normal, 1 crackle, 2 wheeze, 3 both (``label = crackles + 2 * wheezes``).

Patch labels: a patch ``[t, t + 0.96 s)`` takes the crackle and wheeze flags of every cycle that overlaps
it by at least ``min_overlap`` seconds (OR over those cycles). The default, half a patch (0.48 s), gives each
patch the label of the cycle holding most of its audio; a patch that no cycle overlaps that much lies in
unannotated audio (before the first or after the last cycle, or in a gap) and is dropped. A smaller
``min_overlap`` keeps more abnormal patches, at the price of labels that describe audio mostly outside them.

Cycle predictions: the challenge scores one prediction per respiratory cycle, so a patch classifier's
probabilities are averaged over the patches that overlap each cycle (weighted by the overlap) and the
arg-max is the cycle's class (:func:`cycle_probabilities`).

The patch data set itself (:class:`~helpers.breath.dataset.PatchDataset`, :func:`~helpers.breath.dataset.build_patch_dataset`)
lives in :mod:`helpers.breath.dataset`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.breath import audio

CLASS_NAMES = ("normal", "crackle", "wheeze", "both")
LOCATIONS = ("Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr")
MODES = ("sc", "mc")
DEVICES = ("AKGC417L", "LittC2SE", "Litt3200", "Meditron")
AUDIO_FOLDER = "ICBHI_final_database"
DIAGNOSIS_FILE = "ICBHI_Challenge_diagnosis.txt"
SPLIT_FILE = "ICBHI_challenge_train_test.txt"
ANNOTATION_COLUMNS = ("start", "end", "crackles", "wheezes")
RECORDING_COLUMNS = ("name", "wav", "txt", "patient", "recording", "location", "mode", "device", "diagnosis")
RECORDING_COLUMNS += ("split", "sample_rate", "duration")

_NAME = re.compile(
    rf"^(?P<patient>\d+)_(?P<recording>[0-9A-Za-z]+)_(?P<location>{'|'.join(LOCATIONS)})"
    rf"_(?P<mode>{'|'.join(MODES)})_(?P<device>{'|'.join(DEVICES)})$"
)


class IcbhiFormatError(ValueError):
    """An ICBHI file name, annotation, diagnosis or split file that does not follow the format.

    Taught in ``notebooks/06_breath_sounds.ipynb``.
    """


def parse_filename(name: str | Path) -> dict:
    """``"101_1b1_Al_sc_Meditron.wav"`` -> ``{"patient": 101, "recording": "1b1", "location": "Al",
    "mode": "sc", "device": "Meditron"}``. A path or a name with or without extension is accepted.
    Taught in ``notebooks/06_breath_sounds.ipynb``."""
    path = Path(name)
    match = _NAME.match(path.stem if path.suffix in (".wav", ".txt") else path.name)
    if not match:
        raise IcbhiFormatError(
            f"{name}: not an ICBHI recording name; expected <patient>_<recording>_<location>_<mode>_<device> "
            f"with location in {LOCATIONS}, mode in {MODES}, device in {DEVICES}"
        )
    fields = match.groupdict()
    fields["patient"] = int(fields["patient"])
    return fields


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, whitespace-split fields) of the non-blank lines of a text file."""
    if not path.is_file():
        raise IcbhiFormatError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8", errors="replace")
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def read_annotation(path: str | Path) -> pd.DataFrame:
    """Read one annotation file -> DataFrame[start, end (float s), crackles, wheezes (int 0/1)], one row per cycle.

    Checked: 4 fields per line, numbers, 0 <= start < end, flags 0 or 1, cycles sorted by start. Errors name
    the file and the line. Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    path = Path(path)
    rows = []
    for n, fields in _lines(path):
        where = f"{path}, line {n}"
        if len(fields) != 4:
            raise IcbhiFormatError(
                f"{where}: expected 4 fields (start end crackles wheezes), found {len(fields)}"
            )
        try:
            start, end = float(fields[0]), float(fields[1])
            crackles, wheezes = int(fields[2]), int(fields[3])
        except ValueError as err:
            raise IcbhiFormatError(f"{where}: not numbers: {' '.join(fields)!r}") from err
        if not (0 <= start < end and np.isfinite(end)):
            raise IcbhiFormatError(f"{where}: need 0 <= start < end, got start={start}, end={end}")
        if crackles not in (0, 1) or wheezes not in (0, 1):
            raise IcbhiFormatError(
                f"{where}: crackles and wheezes must be 0 or 1, got {crackles} and {wheezes}"
            )
        if rows and start < rows[-1][0]:
            raise IcbhiFormatError(f"{where}: cycles are not sorted: start {start} comes after {rows[-1][0]}")
        rows.append((start, end, crackles, wheezes))
    frame = pd.DataFrame(rows, columns=list(ANNOTATION_COLUMNS))
    return frame.astype({"start": "float64", "end": "float64", "crackles": "int64", "wheezes": "int64"})


def read_diagnosis(path: str | Path) -> pd.DataFrame:
    """``ICBHI_Challenge_diagnosis.txt`` -> DataFrame[patient (int), diagnosis (str)], one row per patient.

    Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    path = Path(path)
    rows = []
    for n, fields in _lines(path):
        if len(fields) != 2 or not fields[0].isdigit():
            raise IcbhiFormatError(
                f"{path}, line {n}: expected '<patient number><TAB><diagnosis>', found {fields}"
            )
        rows.append((int(fields[0]), fields[1]))
    frame = pd.DataFrame(rows, columns=["patient", "diagnosis"])
    duplicated = frame["patient"][frame["patient"].duplicated()].tolist()
    if duplicated:
        raise IcbhiFormatError(f"{path}: patients listed twice: {duplicated}")
    return frame


def read_split(path: str | Path) -> pd.DataFrame:
    """``ICBHI_challenge_train_test.txt`` -> DataFrame[name (recording, no extension), split ('train'|'test')].

    Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    path = Path(path)
    rows = []
    for n, fields in _lines(path):
        if len(fields) != 2 or fields[1] not in ("train", "test"):
            raise IcbhiFormatError(
                f"{path}, line {n}: expected '<recording name><TAB>train|test', found {fields}"
            )
        try:
            parse_filename(fields[0])
        except IcbhiFormatError as err:
            raise IcbhiFormatError(f"{path}, line {n}: {err}") from None
        rows.append((fields[0], fields[1]))
    frame = pd.DataFrame(rows, columns=["name", "split"])
    duplicated = frame["name"][frame["name"].duplicated()].tolist()
    if duplicated:
        raise IcbhiFormatError(f"{path}: recordings listed twice: {duplicated[:5]}")
    return frame


def list_recordings(icbhi_dir: str | Path) -> pd.DataFrame:
    """One row per recording, sorted by name: name, wav, txt (paths), patient, recording, location, mode,
    device, diagnosis, split (official), sample_rate (Hz), duration (s). Reads only the WAV headers.

    Raises :class:`IcbhiFormatError` when the folder, a recording's annotation, the diagnosis of its patient
    or its official split is missing. Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    icbhi_dir = Path(icbhi_dir)
    audio_dir = icbhi_dir / AUDIO_FOLDER
    wavs = sorted(audio_dir.glob("*.wav"))
    if not wavs:
        raise IcbhiFormatError(f"{audio_dir}: no .wav recordings found (expected the ICBHI layout)")
    rows = []
    for wav in wavs:
        txt = wav.with_suffix(".txt")
        if not txt.is_file():
            raise IcbhiFormatError(f"{wav}: its annotation {txt.name} is missing")
        info = audio.audio_info(wav)
        rows.append(
            {"name": wav.stem, "wav": wav, "txt": txt, **parse_filename(wav.name)}
            | {"sample_rate": info["samplerate"], "duration": info["duration"]}
        )
    frame = pd.DataFrame(rows)
    diagnosis = read_diagnosis(icbhi_dir / DIAGNOSIS_FILE)
    split = read_split(icbhi_dir / SPLIT_FILE)
    frame = frame.merge(diagnosis, on="patient", how="left").merge(split, on="name", how="left")
    for column, source in (("diagnosis", DIAGNOSIS_FILE), ("split", SPLIT_FILE)):
        missing = frame.loc[frame[column].isna(), "name"].tolist()
        if missing:
            raise IcbhiFormatError(
                f"{icbhi_dir / source}: no {column} for {len(missing)} recordings, e.g. {missing[:3]}"
            )
    return frame[list(RECORDING_COLUMNS)].sort_values("name", ignore_index=True)


def cycle_labels(annotation: pd.DataFrame) -> np.ndarray:
    """(cycles,) int64 class per cycle of an annotation: 0 normal, 1 crackle, 2 wheeze, 3 both.

    Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    return (annotation["crackles"].to_numpy() + 2 * annotation["wheezes"].to_numpy()).astype(np.int64)


def patch_labels(
    starts: np.ndarray,
    annotation: pd.DataFrame,
    *,
    patch_seconds: float = audio.PATCH_SECONDS,
    min_overlap: float = 0.48,
) -> np.ndarray:
    """Class of each patch ``[start, start + patch_seconds)`` from the cycles that overlap it.

    ``starts`` (n,) seconds -> (n,) int64: OR of the crackle and wheeze flags of the cycles overlapping the
    patch by at least ``min_overlap`` seconds, as ``crackles + 2 * wheezes``; -1 where no cycle overlaps
    that much (the caller drops those). Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    starts = np.asarray(starts, dtype=np.float64)[:, None]
    begin, end = annotation["start"].to_numpy()[None], annotation["end"].to_numpy()[None]
    overlap = np.minimum(starts + patch_seconds, end) - np.maximum(starts, begin)  # (patches, cycles)
    counts = overlap >= min_overlap - 1e-9
    crackles = (counts & (annotation["crackles"].to_numpy()[None] == 1)).any(axis=1)
    wheezes = (counts & (annotation["wheezes"].to_numpy()[None] == 1)).any(axis=1)
    labels = crackles.astype(np.int64) + 2 * wheezes.astype(np.int64)
    return np.where(counts.any(axis=1), labels, -1)


def patient_split(
    df: pd.DataFrame, test_fraction: float = 0.3, seed: int = 0, *, by: str | None = "diagnosis"
) -> pd.Series:
    """Split at patient level: a Series of 'train'/'test' aligned with ``df`` (which needs a ``patient`` column).

    ``round(n_patients * test_fraction)`` patients go to test (at least one on each side when there are two
    or more). Stratified-ish: patients are grouped by their most frequent value of ``by`` (e.g. diagnosis;
    None for no groups); each group sends ``floor(size * test_fraction)`` patients to test and the patients
    still owed go to the groups with the largest remainders (ties broken by the seed), so a group of one
    patient lands in test only when it is its turn. Who goes within a group is a seeded shuffle. Every
    recording or patch of a patient lands on the same side. Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    if by is None:
        strata = pd.Series("all", index=pd.Index(sorted(df["patient"].unique()), name="patient"))
    else:
        strata = df.groupby("patient")[by].agg(lambda values: values.mode().iloc[0]).sort_index()
    groups = sorted(strata.groupby(strata).groups.items(), key=lambda item: str(item[0]))
    rng = np.random.default_rng(seed)
    sizes = np.array([len(patients) for _, patients in groups])
    n_test = min(max(round(sizes.sum() * test_fraction), 1), sizes.sum() - 1)
    quota = sizes * test_fraction
    take = np.floor(quota).astype(int)
    for g in np.lexsort((rng.random(len(groups)), -(quota - take))):  # largest remainder first
        if take.sum() >= n_test:
            break
        if take[g] < sizes[g]:
            take[g] += 1
    test_patients = [
        p for (_, patients), k in zip(groups, take, strict=True) for p in rng.permutation(patients)[:k]
    ]
    return pd.Series(
        np.where(df["patient"].isin(test_patients), "test", "train"), index=df.index, name="split"
    )


def official_split_overlap(df: pd.DataFrame) -> pd.DataFrame:
    """Patients with recordings on both sides of the official split: DataFrame[patient, n_train, n_test].

    ``df`` is :func:`list_recordings`'s table. On the real database (its ``ICBHI_challenge_train_test.txt``):
    patients 156 (9 recordings in train, 8 in test) and 218 (4 and 4). A patient on both
    sides lets a model score by recognising the patient, so the course uses :func:`patient_split`.
    Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    counts = pd.crosstab(df["patient"], df["split"]).reindex(columns=["train", "test"], fill_value=0)
    both = counts[(counts["train"] > 0) & (counts["test"] > 0)]
    return both.rename(columns={"train": "n_train", "test": "n_test"}).reset_index().rename_axis(columns=None)


def icbhi_score(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """The ICBHI challenge score for 4-class labels (0 normal, 1 crackle, 2 wheeze, 3 both).

    specificity = correct normal / all normal; sensitivity = abnormal predicted as their exact class /
    all abnormal; score = (sensitivity + specificity) / 2. A side with no examples gives NaN. Returns
    ``{"specificity", "sensitivity", "score", "n_normal", "n_abnormal"}``.
    Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.shape} vs {y_pred.shape}")
    normal, correct = y_true == 0, y_true == y_pred
    n_normal, n_abnormal = int(normal.sum()), int((~normal).sum())
    sp = float(correct[normal].mean()) if n_normal else float("nan")
    se = float(correct[~normal].mean()) if n_abnormal else float("nan")
    return {
        "specificity": sp,
        "sensitivity": se,
        "score": (sp + se) / 2,
        "n_normal": n_normal,
        "n_abnormal": n_abnormal,
    }


def cycle_probabilities(
    cycles: pd.DataFrame,
    recording: np.ndarray,
    start: np.ndarray,
    proba: np.ndarray,
    *,
    patch_seconds: float = audio.PATCH_SECONDS,
) -> np.ndarray:
    """Class probabilities per respiratory cycle from those of the patches: (cycles, classes) float64.

    ``cycles``: one row per cycle with ``name`` (its recording), ``start`` and ``end`` in seconds (e.g.
    :func:`helpers.breath.dataset.cycle_table`). ``recording`` and ``start`` (N,) place each patch
    ``[start, start + patch_seconds)`` (``PatchDataset.recording`` / ``.start``); ``proba`` (N, classes) are
    its predicted probabilities. Row ``i`` is the mean of the probabilities of the patches of cycle ``i``'s
    recording that overlap it, weighted by the seconds of overlap; NaN where no patch overlaps the cycle (a
    cycle in a dropped last partial patch, or one whose patches were all dropped). The arg-max of a row is
    the cycle's predicted class: the ICBHI challenge scores cycles, not patches.
    Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    recording = np.asarray(recording).astype(str)
    start, proba = np.asarray(start, dtype=np.float64), np.asarray(proba, dtype=np.float64)
    by_recording = pd.Series(np.arange(len(recording))).groupby(recording).indices
    out = np.full((len(cycles), proba.shape[1]), np.nan)
    for i, (name, begin, end) in enumerate(zip(cycles["name"], cycles["start"], cycles["end"], strict=True)):
        rows = by_recording.get(name, np.zeros(0, dtype=np.int64))
        overlap = np.minimum(start[rows] + patch_seconds, end) - np.maximum(start[rows], begin)
        weight = np.clip(overlap, 0.0, None)
        if weight.sum() > 0:
            out[i] = weight @ proba[rows] / weight.sum()
    return out
