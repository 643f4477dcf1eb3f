"""Breath-sound patches ready for training: the patch data set, a label-balanced patient split, metrics and
heat per mel band.

Taught in ``notebooks/06_breath_sounds.ipynb``. :func:`build_patch_dataset` turns an ICBHI folder (real or
synthetic, see :mod:`helpers.breath.icbhi`) into log-mel patches with one label each; :class:`PatchDataset` holds them
with their metadata and caches them as one ``.npz``. The rest turns a trained patch classifier's outputs into
numbers: :func:`patch_metrics` (the ICBHI score, macro ROC-AUC and one ROC-AUC per adventitious sound),
:func:`band_heat_profiles` (Grad-CAM heat per mel band, averaged over patches) and the helpers of the device
lesson (:func:`band_levels_by`, :func:`high_band_level`).

Patch labels come from the cycles: a cycle flagged "wheeze" holds a wheeze *somewhere*, so a patch cut from
it may hold none (a 0.6 s wheeze touches about half the patches of a 4 s cycle). Patch-level metrics carry
that label noise; on the real data it is the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from helpers.breath import audio, icbhi
from helpers.config import display_path, usable_cpus
from helpers.explain.cam import grad_cam
from helpers.files import atomic_path, build_lock, process_pool
from helpers.progress import progress_bar


@dataclass(frozen=True)
class PatchDataset:
    """Log-mel patches of every annotated part of every recording, with one metadata row per patch.

    ``patches`` (N, 96, n_mels) float32; ``labels`` (N,) int64 (see ``helpers.breath.icbhi.CLASS_NAMES``); ``recording``,
    ``device``, ``diagnosis`` (N,) str; ``patient``, ``sample_rate`` (original rate of the file, Hz) (N,)
    int64; ``start`` (N,) float64 seconds into the recording. ``params`` holds the front-end settings and
    ``skipped`` the reasons of recordings that could not be read. Taught in ``notebooks/06_breath_sounds.ipynb``.
    """

    patches: np.ndarray
    labels: np.ndarray
    recording: np.ndarray
    patient: np.ndarray
    device: np.ndarray
    diagnosis: np.ndarray
    sample_rate: np.ndarray
    start: np.ndarray
    params: dict = field(default_factory=dict)
    skipped: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.labels)

    def metadata(self) -> pd.DataFrame:
        """One row per patch: recording, patient, device, diagnosis, sample_rate, start, label."""
        return pd.DataFrame({name: getattr(self, name) for name in _PER_PATCH if name != "patches"}).rename(
            columns={"labels": "label"}
        )

    def subset(self, index: np.ndarray) -> PatchDataset:
        """The patches selected by a boolean mask or an integer index array (copies)."""
        return replace(self, **{name: getattr(self, name)[index] for name in _PER_PATCH})

    def save(self, path: str | Path) -> None:
        """Write to an uncompressed ``.npz`` atomically (:func:`helpers.files.atomic_path`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {name: getattr(self, name) for name in _PER_PATCH}
        extra = json.dumps({"params": self.params, "skipped": list(self.skipped)})
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            np.savez(out, _extra=np.array(extra), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> PatchDataset:
        """Read a file written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            extra = json.loads(str(data["_extra"]))
            return cls(
                **{name: data[name] for name in _PER_PATCH},
                params=extra["params"],
                skipped=tuple(extra["skipped"]),
            )


_PER_PATCH = ("patches", "labels", "recording", "patient", "device", "diagnosis", "sample_rate", "start")


def _limit_torch_threads() -> None:
    """Pool initializer: one torch thread per worker process, so that workers do not fight over cores."""
    torch.set_num_threads(1)


def _recording_patches(job: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(patches, starts, labels, "") of the annotated patches of one recording, or empty arrays and the reason
    why the audio was rejected."""
    wav, txt, sr, fmax, n_mels, min_overlap = job
    try:
        y = audio.load_audio(wav, sr)
    except audio.AudioError as err:
        return (
            np.zeros((0, audio.PATCH_FRAMES, n_mels), np.float32),
            np.zeros(0),
            np.zeros(0, np.int64),
            str(err),
        )
    cut = audio.patches(audio.log_mel(y, sr, n_mels=n_mels, fmin=audio.FMIN, fmax=fmax))
    starts = audio.patch_start_times(len(cut))
    labels = icbhi.patch_labels(starts, icbhi.read_annotation(txt), min_overlap=min_overlap)
    keep = labels >= 0
    return cut[keep], starts[keep], labels[keep], ""


def build_patch_dataset(
    icbhi_dir: str | Path,
    *,
    sr: int = audio.SAMPLE_RATE,
    fmax: float = audio.FMAX,
    n_mels: int = audio.N_MELS,
    min_overlap: float = 0.48,
    workers: int | None = None,
    progress: bool = True,
    cache_path: str | Path | None = None,
) -> PatchDataset:
    """Load, resample, log-mel and patch every recording of an ICBHI folder, labelling patches by their cycles.

    One task per recording in a pool (:func:`helpers.files.process_pool`) of ``workers`` processes (default: all cores;
    1 = in this process). With ``cache_path``, a cached ``.npz`` made from the same settings and the same
    files (names, sizes, modification times) is returned as it is, otherwise the result is written there
    atomically; one process at a time computes it (:func:`helpers.files.build_lock`), so a second notebook
    waits and reuses it instead of computing it again. Recordings that :func:`helpers.breath.audio.load_audio`
    rejects are skipped with a warning and listed in ``skipped``; annotation errors raise. Taught in
    ``notebooks/06_breath_sounds.ipynb``.
    """
    table = icbhi.list_recordings(icbhi_dir)
    params = {"sr": sr, "fmin": audio.FMIN, "fmax": float(fmax), "n_mels": n_mels, "min_overlap": min_overlap}
    files = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in [*table.wav, *table.txt]]
    params["files_sha256"] = hashlib.sha256(json.dumps(files).encode()).hexdigest()
    jobs = [
        (str(wav), str(txt), sr, float(fmax), n_mels, min_overlap)
        for wav, txt in table[["wav", "txt"]].values
    ]
    if cache_path is None:
        return _compute_patches(table, jobs, params, workers, progress)
    cache_path = Path(cache_path)
    cached = _cached_patches(cache_path, params)
    if cached is not None:
        return cached
    with build_lock(cache_path, "breath-sound patches") as waited_for:
        cached = _cached_patches(cache_path, params)  # made meanwhile by the process this one waited for
        if cached is not None:
            print(f"{display_path(cache_path)}: reusing the patches that {waited_for} made meanwhile")
            return cached
        dataset = _compute_patches(table, jobs, params, workers, progress)
        dataset.save(cache_path)
    return dataset


def _cached_patches(cache_path: Path, params: dict) -> PatchDataset | None:
    """The patch set cached at ``cache_path`` if made with ``params``, else None (missing, other, damaged)."""
    if not cache_path.is_file():
        return None
    try:
        cached = PatchDataset.load(cache_path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # unreadable or older format: recompute
        return None
    return cached if cached.params == params else None


def _compute_patches(
    table: pd.DataFrame, jobs: list[tuple], params: dict, workers: int | None, progress: bool
) -> PatchDataset:
    """The patches of the recordings of ``table`` (one job each) over ``workers`` processes."""
    workers = max(1, min(workers or usable_cpus(), len(jobs)))
    with contextlib.ExitStack() as stack:
        if workers == 1:
            mapped = map(_recording_patches, jobs)
        else:
            pool = stack.enter_context(process_pool(workers, initializer=_limit_torch_threads))
            mapped = pool.imap(_recording_patches, jobs, chunksize=max(1, len(jobs) // (8 * workers)))
        results = list(
            progress_bar(mapped, total=len(jobs), desc="log-mel patches", unit="rec", enabled=progress)
        )
    cut, starts, labels, reasons = zip(*results, strict=True)
    skipped = tuple(reason for reason in reasons if reason)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable recordings: {'; '.join(skipped[:3])}", stacklevel=3)
    rows = table.iloc[np.repeat(np.arange(len(table)), [len(x) for x in labels])]
    return PatchDataset(
        patches=np.concatenate(cut),
        labels=np.concatenate(labels),
        recording=rows["name"].to_numpy(dtype=str),
        patient=rows["patient"].to_numpy(dtype=np.int64),
        device=rows["device"].to_numpy(dtype=str),
        diagnosis=rows["diagnosis"].to_numpy(dtype=str),
        sample_rate=rows["sample_rate"].to_numpy(dtype=np.int64),
        start=np.concatenate(starts),
        params=params,
        skipped=skipped,
    )


def cycle_table(recordings: pd.DataFrame) -> pd.DataFrame:
    """One row per annotated respiratory cycle of the recordings of :func:`helpers.breath.icbhi.list_recordings`.

    Columns: name, cycle (0, 1, ... within the recording), start, end (s), crackles, wheezes, label (0 normal,
    1 crackle, 2 wheeze, 3 both), class (its name), patient, device, sample_rate. Reads the annotation files
    only. Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    frames = []
    for rec in recordings.itertuples():
        cycles = icbhi.read_annotation(rec.txt)
        cycles.insert(0, "cycle", np.arange(len(cycles)))
        cycles.insert(0, "name", rec.name)
        cycles["label"] = icbhi.cycle_labels(cycles)
        cycles = cycles.assign(patient=rec.patient, device=rec.device, sample_rate=rec.sample_rate)
        frames.append(cycles)
    table = pd.concat(frames, ignore_index=True)
    table.insert(table.columns.get_loc("label") + 1, "class", np.asarray(icbhi.CLASS_NAMES)[table["label"]])
    return table


def stratified_patient_split(
    meta: pd.DataFrame, test_fraction: float = 0.3, seed: int = 0, n_candidates: int = 200
) -> pd.Series:
    """A patient-level split whose test and training patches have the closest class mix: Series 'train'/'test'.

    ``meta`` has one row per patch with ``patient`` and ``label`` columns (:meth:`PatchDataset.metadata`).
    ``round(n_patients * test_fraction)`` patients (at least one on each side) go to test. Among
    ``n_candidates`` seeded random choices of test patients, the one is kept that has every class seen in
    ``meta`` on both sides (when any candidate has) and the smallest total-variation distance
    ``0.5 * sum_k |p_test(k) - p_train(k)|`` between the two class mixes; the first such candidate wins a
    tie. With a handful of patients a plain random split easily leaves a class out of the test set (the
    synthetic smoke set has wheeze-only patches in two patients); with the 126 patients of the real set
    any candidate is close. Every patch of a patient lands on the same side. Taught in
    ``notebooks/06_breath_sounds.ipynb``.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    patients = np.sort(meta["patient"].unique())
    if len(patients) < 2:
        raise ValueError(f"a patient-level split needs at least 2 patients, got {len(patients)}")
    classes = np.sort(meta["label"].unique())
    counts = pd.crosstab(meta["patient"], meta["label"]).reindex(
        index=patients, columns=classes, fill_value=0
    )
    counts = counts.to_numpy(dtype=np.float64)
    n_test = min(max(round(len(patients) * test_fraction), 1), len(patients) - 1)
    rng = np.random.default_rng(seed)
    best, best_key = None, None
    for _ in range(n_candidates):
        test = np.zeros(len(patients), dtype=bool)
        test[rng.permutation(len(patients))[:n_test]] = True
        a, b = counts[test].sum(axis=0), counts[~test].sum(axis=0)
        distance = 0.5 * np.abs(a / a.sum() - b / b.sum()).sum()
        key = (bool((a == 0).any() or (b == 0).any()), distance)
        if best_key is None or key < best_key:
            best, best_key = test, key
    test_patients = patients[best]
    return pd.Series(
        np.where(meta["patient"].isin(test_patients), "test", "train"), index=meta.index, name="split"
    )


def _auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC, NaN when only one kind of example is present (instead of sklearn's warning)."""
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, score))


def patch_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict:
    """Metrics of a 4-class patch classifier: labels (N,) in 0..3 and softmax probabilities (N, 4) -> dict.

    ``accuracy``; the ICBHI ``score``, ``sensitivity`` and ``specificity`` of the arg-max predictions
    (:func:`helpers.breath.icbhi.icbhi_score`); ``macro_auc``: one-vs-rest ROC-AUC averaged over the classes
    present; ``crackle_auc`` / ``wheeze_auc``: ROC-AUC of "has crackles" (classes 1 and 3) scored by
    ``p1 + p3``, and of "has wheezes" (2 and 3) by ``p2 + p3`` (chance: 0.5). NaN where undefined.
    Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    y_true, proba = np.asarray(y_true), np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape != (len(y_true), len(icbhi.CLASS_NAMES)):
        raise ValueError(f"proba must be (N, 4) for N = {len(y_true)} labels, got shape {proba.shape}")
    predicted = proba.argmax(axis=1)
    score = icbhi.icbhi_score(y_true, predicted)
    per_class = [_auc(y_true == k, proba[:, k]) for k in range(proba.shape[1])]
    present = [auc for auc in per_class if not np.isnan(auc)]
    return {
        "accuracy": float((predicted == y_true).mean()) if len(y_true) else float("nan"),
        "score": score["score"],
        "sensitivity": score["sensitivity"],
        "specificity": score["specificity"],
        "macro_auc": float(np.mean(present)) if present else float("nan"),
        "crackle_auc": _auc(np.isin(y_true, (1, 3)), proba[:, 1] + proba[:, 3]),
        "wheeze_auc": _auc(np.isin(y_true, (2, 3)), proba[:, 2] + proba[:, 3]),
    }


def band_heat_profiles(
    model: torch.nn.Module,
    patches: np.ndarray,
    labels: np.ndarray,
    *,
    layer: str = "features",
    n_classes: int = len(icbhi.CLASS_NAMES),
    batch_size: int = 256,
) -> np.ndarray:
    """Grad-CAM heat per mel band, averaged over time and over the patches of each class: (n_classes, bands).

    ``patches`` (N, frames, bands) log-mel as computed (the model standardises them); each patch is explained
    for its own class (``target = label``) with :func:`helpers.explain.cam.grad_cam` at ``layer`` (maps min-max
    scaled per patch, upsampled to frames x bands), then averaged over the frames (time) and over the
    patches of the class. Row ``k`` is NaN when no patch has label ``k``. Runs on the model's device.
    Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    patches, labels = np.asarray(patches), np.asarray(labels)
    device = next(model.parameters()).device
    sums = np.zeros((n_classes, patches.shape[-1]))
    counts = np.bincount(labels, minlength=n_classes)[:n_classes]
    for start in range(0, len(patches), batch_size):
        x = torch.from_numpy(patches[start : start + batch_size]).float()[:, None].to(device)
        target = torch.as_tensor(labels[start : start + batch_size], device=device)
        heat = grad_cam(model, x, layer, target).mean(dim=1).cpu().numpy()  # (B, bands)
        np.add.at(sums, labels[start : start + batch_size], heat)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts[:, None] > 0, sums / counts[:, None], np.nan)


def heat_share_above(profile: np.ndarray, centres: np.ndarray, hz: float) -> float:
    """Share of a per-band profile's total (e.g. Grad-CAM heat) in the bands whose centre lies above ``hz``.

    ``profile`` and ``centres`` (bands,). A flat profile over the paper's 64 bands gives 10/64 = 0.156
    above 1500 Hz. Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    profile, centres = np.asarray(profile, dtype=np.float64), np.asarray(centres)
    total = profile.sum()
    return float(profile[centres > hz].sum() / total) if total > 0 else float("nan")


def band_levels_by(data: PatchDataset, key: str = "sample_rate") -> pd.DataFrame:
    """Mean log-mel level per band for each value of a metadata column: DataFrame (groups x bands).

    E.g. ``key="sample_rate"`` gives one row per original sample rate (4000, 44100, ...): the average
    spectrum of the recordings made at that rate. Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    values = getattr(data, key)
    levels = {v: data.patches[values == v].mean(axis=(0, 1)) for v in np.unique(values)}
    return pd.DataFrame(levels).T.rename_axis(key)


def high_band_level(
    patches: np.ndarray, above_hz: float, *, fmin: float = audio.FMIN, fmax: float = audio.FMAX
) -> np.ndarray:
    """Mean log-mel level of each patch over the bands whose centre lies above ``above_hz``: (N,).

    ``patches`` (N, frames, bands) computed with ``fmin``/``fmax``. One number per patch that says how much
    the recording holds high up: the device lesson's one-feature "classifier". Taught in
    ``notebooks/06_breath_sounds.ipynb``.
    """
    centres = audio.mel_center_frequencies(patches.shape[-1], fmin, fmax)
    high = centres > above_hz
    if not high.any():
        raise ValueError(f"no band centre lies above {above_hz} Hz (the top one is {centres[-1]:.0f} Hz)")
    return patches[..., high].mean(axis=(1, 2))
