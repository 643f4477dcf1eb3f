"""Synthetic breath sounds in the ICBHI 2017 layout: WAV recordings with per-cycle crackle/wheeze labels.

Taught in ``notebooks/06_breath_sounds.ipynb``; generated on first use by :func:`helpers.data.datasets.icbhi_dir`.
A recording is breathing (noise band-limited to about 100-1000 Hz, energy falling above 200 Hz, under an
inspiration/expiration envelope, cycles of 2.5-5 s) with events planted inside the annotated cycles:
crackles (short damped transients: fine ~650 Hz ~5 ms, coarse ~350 Hz ~15 ms) and wheezes (tonal
100-1000 Hz with harmonics, 0.25-1.2 s). The annotation flags say exactly which cycles carry them. The
recording device sets the sample rate (4 kHz, 10 kHz or 44.1 kHz), so a 4 kHz file has nothing above
2 kHz, like the real set. Same determinism, atomic writes and resume rules as :mod:`helpers.data.synthetic`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from helpers.data.synthetic import task_rng
from helpers.files import atomic_path, claim_folder, run_tasks, write_atomic

LOCATIONS = ("Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr")
#: Device -> sample rates it records at (first listed = most common). The Littmann 3200 records at 4 kHz.
DEVICE_RATES = {
    "AKGC417L": (44100,),
    "Litt3200": (4000,),
    "LittC2SE": (4000, 44100),
    "Meditron": (44100, 4000, 10000),
}
DIAGNOSES = {
    "COPD": 0.45, "Healthy": 0.15, "URTI": 0.10, "Pneumonia": 0.08,
    "Bronchiectasis": 0.07, "Bronchiolitis": 0.07, "LRTI": 0.04, "Asthma": 0.04,
}  # fmt: skip
#: Cycle mix (crackles, wheezes) -> probability. Over the diagnosis mix: ~35 % crackles, 20 % wheezes, 10 % both.
CYCLES_ILL = {(0, 0): 0.47, (1, 0): 0.28, (0, 1): 0.12, (1, 1): 0.13}
CYCLES_WELL = {(0, 0): 0.85, (1, 0): 0.09, (0, 1): 0.03, (1, 1): 0.03}
WELL = ("Healthy", "URTI")
DIAGNOSIS_FILE = "ICBHI_Challenge_diagnosis.txt"
SPLIT_FILE = "ICBHI_challenge_train_test.txt"


def _pick(rng: np.random.Generator, table: dict) -> Any:
    keys = list(table)
    return keys[int(rng.choice(len(keys), p=np.array(list(table.values())) / sum(table.values())))]


def plan_icbhi(n_patients: int, seed: int, duration_s: tuple[float, float]) -> list[dict[str, Any]]:
    """One dict per recording (name, patient, diagnosis, sample rate, WAV subtype, duration, split, keys).

    Patients get ids from 101, with 2-6 recordings each (the real set: 920 recordings of 126 patients); the
    first two record with a 44.1 kHz and a 4 kHz device, so any set of two or more patients mixes both
    rates. The official split is by recording, as in the real set: about 40 % of the patients are in the
    test split, and one patient (two from 20 patients on, like patients 156 and 218 of the real set) has
    its last recording on the other side, so the official split shares patients between train and test.
    """
    rng = task_rng(seed, 0)
    devices = list(rng.permutation(["AKGC417L", "Litt3200"])) + list(
        rng.permutation(["LittC2SE", "Meditron"])
    )
    n_test = min(max(round(0.4 * n_patients), 1), n_patients - 1) if n_patients > 1 else 0
    test = set(rng.permutation(n_patients)[:n_test].tolist())
    plan = []
    for i in range(n_patients):
        prng = task_rng(seed, 1, i)
        device = devices[i % len(devices)]
        diagnosis = _pick(prng, DIAGNOSES)
        locations = prng.permutation(LOCATIONS)
        for r in range(int(prng.integers(2, 7))):
            mode = "mc" if device == "AKGC417L" and prng.random() < 0.6 else "sc"
            name = f"{101 + i}_{r + 1}b{int(prng.integers(1, 4))}_{locations[r]}_{mode}_{device}"
            rates = DEVICE_RATES[device]
            plan.append(
                {
                    "name": name, "patient": 101 + i, "diagnosis": diagnosis, "keys": (seed, 2, i, r),
                    "rate": int(rates[0] if prng.random() < 0.7 else prng.choice(rates)),
                    "subtype": _pick(prng, {"PCM_16": 0.8, "PCM_24": 0.15, "FLOAT": 0.05}),
                    "duration": float(prng.uniform(*duration_s)), "split": "test" if i in test else "train",
                }
            )  # fmt: skip
    n_shared = 0 if n_patients < 2 else 1 if n_patients < 20 else 2
    for i in task_rng(seed, 3).permutation(n_patients)[:n_shared].tolist():
        last = max(k for k, rec in enumerate(plan) if rec["patient"] == 101 + i)
        plan[last]["split"] = "train" if plan[last]["split"] == "test" else "test"
    return plan


def breath_noise(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Unit-RMS noise of ``n`` samples shaped like breath sounds: band 100-1000 Hz, falling above 200 Hz."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    shape = (1.0 / (1.0 + (100.0 / np.maximum(f, 1.0)) ** 4)) / np.sqrt(1.0 + (f / 200.0) ** 2)
    shape /= 1.0 + (f / 1000.0) ** 8
    noise = np.fft.irfft(spectrum * shape, n)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def cycle_bounds(rng: np.random.Generator, duration: float) -> list[tuple[float, float]]:
    """Contiguous respiratory cycles of 2.5-5 s inside ``duration`` seconds, rounded to milliseconds."""
    bounds, t = [], round(float(rng.uniform(0.0, 0.5)), 3)
    while True:
        end = round(t + float(rng.uniform(2.5, 5.0)), 3)
        if end > duration:
            return bounds
        bounds.append((t, end))
        t = end


def breathing_envelope(
    n: int, sr: int, bounds: list[tuple[float, float]], rng: np.random.Generator
) -> np.ndarray:
    """Amplitude over time: a loud inspiration (35-45 % of each cycle), a softer expiration, a floor."""
    t = np.arange(n) / sr
    env = np.full(n, 0.15)
    for start, end in bounds:
        insp = float(rng.uniform(0.35, 0.45))
        phase = (t - start) / (end - start)
        inside = (phase >= 0) & (phase < 1)
        bump = np.where(
            phase < insp,
            np.sin(np.pi * phase / insp) ** 2,
            0.6 * np.sin(np.pi * (phase - insp) / (1 - insp)) ** 2,
        )
        env[inside] += bump[inside]
    return env


def crackle(sr: int, fine: bool) -> np.ndarray:
    """One crackle: a sharp deflection then a damped oscillation (fine: ~650 Hz, ~5 ms; coarse: ~350 Hz, ~15 ms)."""
    freq, length = (650.0, 0.005) if fine else (350.0, 0.015)
    t = np.arange(max(2, int(length * sr))) / sr
    return -np.sin(2 * np.pi * freq * t) * np.exp(-t / (length / 3))


def wheeze(rng: np.random.Generator, sr: int, length: float) -> np.ndarray:
    """A wheeze: a gliding tone of 150-800 Hz with its harmonics below Nyquist, faded in and out."""
    t = np.arange(int(length * sr)) / sr
    f0 = float(rng.uniform(150.0, 800.0))
    freq = f0 * (1.0 + float(rng.uniform(-0.08, 0.08)) * t / length)
    phase = 2 * np.pi * np.cumsum(freq) / sr
    tone = sum(a * np.sin(k * phase) for k, a in ((1, 1.0), (2, 0.45), (3, 0.2)) if k * f0 * 1.1 < 0.45 * sr)
    fade = np.minimum(1.0, np.minimum(t, length - t) / 0.04)
    return tone * fade


def synthesize_recording(rec: dict[str, Any]) -> tuple[np.ndarray, list[tuple[float, float, int, int]]]:
    """The samples (float, peak below 1) and the annotation rows ``(start, end, crackles, wheezes)``."""
    rng = task_rng(*rec["keys"])
    sr, n = rec["rate"], int(rec["duration"] * rec["rate"])
    bounds = cycle_bounds(rng, rec["duration"])
    y = breath_noise(rng, n, sr) * breathing_envelope(n, sr, bounds, rng)
    mix = CYCLES_WELL if rec["diagnosis"] in WELL else CYCLES_ILL
    rows = []
    for start, end in bounds:
        has_crackles, has_wheezes = _pick(rng, mix)
        if has_crackles:
            fine = rng.random() < 0.6
            for at in rng.uniform(start + 0.05, end - 0.05, int(rng.integers(5, 11))):
                wave = crackle(sr, fine) * float(rng.uniform(12.0, 20.0) if fine else rng.uniform(8.0, 14.0))
                i = int(at * sr)
                y[i : i + len(wave)] += wave
        if has_wheezes:
            length = float(rng.uniform(0.25, min(1.2, 0.7 * (end - start))))
            at = float(rng.uniform(start + 0.05, end - 0.05 - length))
            wave = wheeze(rng, sr, length) * float(rng.uniform(1.5, 3.0))
            i = int(at * sr)
            y[i : i + len(wave)] += wave
        rows.append((start, end, int(has_crackles), int(has_wheezes)))
    if sr > 8000:  # a wide-band microphone also records hiss up to its Nyquist frequency
        y += float(rng.uniform(0.3, 0.5)) * rng.standard_normal(n)
    y *= float(rng.uniform(0.3, 0.8)) / np.max(np.abs(y))
    return y, rows


def _write_recording(rec: dict[str, Any]) -> None:
    """Synthesize one recording and write its WAV and annotation ``.txt`` (a worker's unit of work)."""
    y, rows = synthesize_recording(rec)
    wav = Path(rec["path"]) / f"{rec['name']}.wav"
    with atomic_path(wav) as tmp:
        sf.write(tmp, y.astype(np.float32), rec["rate"], subtype=rec["subtype"], format="WAV")
    write_atomic(wav.with_suffix(".txt"), "".join(f"{s:.3f}\t{e:.3f}\t{c}\t{w}\n" for s, e, c, w in rows))


def make_icbhi_like(
    dest: str | os.PathLike,
    n_patients: int,
    seed: int = 0,
    workers: int | None = None,
    duration_s: tuple[float, float] = (8.0, 20.0),
) -> Path:
    """Write an ICBHI-like set: ``ICBHI_final_database/*.wav`` + ``.txt`` and the two tables.

    ``n_patients`` patients (ids from 101) with 1-3 recordings each of ``duration_s`` seconds (a range,
    at least 3 s), mixed sample rates (4 kHz and 44.1 kHz always, given two patients) and WAV subtypes
    (mostly 16-bit PCM, some 24-bit and float). ``ICBHI_Challenge_diagnosis.txt`` and
    ``ICBHI_challenge_train_test.txt`` are written last. Returns ``dest``.
    """
    dest = Path(dest)
    if n_patients < 1:
        raise ValueError(f"n_patients must be at least 1, got {n_patients}")
    if not 3.0 <= duration_s[0] <= duration_s[1]:
        raise ValueError(
            f"duration_s must be a range (low, high) with 3 <= low <= high seconds, got {duration_s}"
        )
    params = {"set": "icbhi", "n_patients": n_patients, "seed": seed, "duration_s": list(duration_s)}
    claim_folder(dest, params)
    folder = dest / "ICBHI_final_database"
    folder.mkdir(exist_ok=True)
    plan = plan_icbhi(n_patients, seed, duration_s)
    tasks = [
        {**rec, "path": str(folder)}
        for rec in plan
        if not ((folder / f"{rec['name']}.wav").is_file() and (folder / f"{rec['name']}.txt").is_file())
    ]
    run_tasks(_write_recording, tasks, workers, desc="synthetic ICBHI recordings", seconds_each=0.05)
    diagnoses = sorted({(rec["patient"], rec["diagnosis"]) for rec in plan})
    write_atomic(dest / DIAGNOSIS_FILE, "".join(f"{p}\t{d}\n" for p, d in diagnoses))
    write_atomic(
        dest / SPLIT_FILE,
        "".join(f"{rec['name']}\t{rec['split']}\n" for rec in sorted(plan, key=lambda r: r["name"])),
    )
    return dest
