"""Log-mel front-end throughput on an ICBHI-like workload: librosa baseline vs helpers.breath.audio.

Writes synthetic 16-bit WAVs of ``--seconds-per-file`` seconds at a mix of rates (default 80 % 44.1 kHz,
20 % 4 kHz, like the real set's devices) into a temporary folder, then times, in seconds of audio per second:

- the front end alone on in-memory 16 kHz signals: ``librosa.feature.melspectrogram`` (same parameters,
  then log) vs ``helpers.breath.audio.log_mel``;
- the whole pipeline per file (read + resample to 16 kHz + log-mel): ``librosa.load`` + melspectrogram vs
  ``helpers.breath.audio.load_audio`` + ``log_mel``, in one process (one torch thread) and over a process pool
  (``helpers.files.process_pool``: spawn, as in ``build_patch_dataset``; one worker per core, one torch thread
  each, pool start included: spawned workers import torch and librosa, a few seconds that only a long run
  such as ``--hours 5.5`` amortises).

It prints the ratios and the projected time for the real ICBHI's 5.5 h (target: <= 30 s on 2 cores). At most
``--files`` distinct files are written and reused in turn (from the page cache) to reach the total, so
``--hours 5.5`` needs no 1.7 GB of disk.

    python benchmarks/bench_logmel.py                  # 3 minutes of audio: a few seconds
    python benchmarks/bench_logmel.py --hours 5.5      # the real target size
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch

from helpers.breath import audio
from helpers.files import process_pool

ICBHI_SECONDS = 5.5 * 3600
TARGET_SECONDS = 30.0


def librosa_log_mel(y: np.ndarray, sr: int = audio.SAMPLE_RATE) -> np.ndarray:
    """The baseline: librosa's melspectrogram with the paper's parameters, (frames, 64) natural log.

    librosa centres the 400-sample window in each 512-sample frame; 56 zeros on each side give VGGish's frames.
    """
    mel = librosa.feature.melspectrogram(
        y=np.pad(y, 56),
        sr=sr,
        n_fft=audio.N_FFT,
        hop_length=160,
        win_length=400,
        window="hann",
        center=False,
        power=1.0,
        n_mels=audio.N_MELS,
        fmin=audio.FMIN,
        fmax=audio.FMAX,
        htk=True,
        norm=None,
    )
    return np.log(mel + audio.LOG_OFFSET).T


def baseline_file(path: str) -> int:
    y, sr = librosa.load(path, sr=audio.SAMPLE_RATE, mono=True, res_type="soxr_hq")
    return librosa_log_mel(y, sr).shape[0]


def helpers_file(path: str) -> int:
    return audio.log_mel(audio.load_audio(path)).shape[0]


def one_thread() -> None:
    torch.set_num_threads(1)


def write_files(folder: Path, n_files: int, seconds: float, share_4k: float, seed: int = 0) -> list[Path]:
    """Noise bursts with a breathing envelope, 16-bit PCM, at 4 kHz or 44.1 kHz."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n_files):
        sr = 4000 if i < round(n_files * share_4k) else 44100
        t = np.arange(int(seconds * sr)) / sr
        y = 0.1 * rng.standard_normal(len(t)) * (0.6 + 0.4 * np.sin(2 * np.pi * t / 3.5))
        path = folder / f"{100 + i}_1b1_Al_sc_{'LittC2SE' if sr == 4000 else 'AKGC417L'}.wav"
        sf.write(path, y.astype(np.float32), sr, subtype="PCM_16")
        paths.append(path)
    return paths


def timed(fn, items, workers: int) -> float:
    """Seconds to map ``fn`` over ``items`` in this process (workers=1) or in a fresh (spawn) pool."""
    start = time.perf_counter()
    if workers == 1:
        for item in items:
            fn(item)
    else:
        with process_pool(workers, initializer=one_thread) as pool:
            pool.map(fn, items, chunksize=max(1, len(items) // (4 * workers)))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="total audio to process (default 3)")
    parser.add_argument("--hours", type=float, default=None, help="total audio in hours (5.5 = real ICBHI)")
    parser.add_argument(
        "--seconds-per-file", type=float, default=20.0, help="ICBHI recordings: 10-90 s, most 20 s"
    )
    parser.add_argument(
        "--share-4k", type=float, default=0.2, help="share of files at 4 kHz, the rest 44.1 kHz"
    )
    parser.add_argument("--files", type=int, default=48, help="at most this many distinct files are written")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    total = args.hours * 3600 if args.hours is not None else args.minutes * 60
    n_items = max(1, round(total / args.seconds_per_file))
    total = n_items * args.seconds_per_file
    one_thread()
    print(
        f"{total / 60:.1f} min of audio in {n_items} files of {args.seconds_per_file:g} s "
        f"({args.share_4k:.0%} at 4 kHz, the rest 44.1 kHz); {args.workers} workers; torch {torch.__version__}"
    )

    with tempfile.TemporaryDirectory(prefix="bench_logmel_") as tmp:
        paths = write_files(Path(tmp), min(args.files, n_items), args.seconds_per_file, args.share_4k)
        items = [str(paths[i % len(paths)]) for i in range(n_items)]
        baseline_file(items[0]), helpers_file(items[0])  # imports, filter banks, FFT plans: not timed

        signals = [audio.load_audio(p) for p in paths]
        np.testing.assert_allclose(audio.log_mel(signals[0]), librosa_log_mel(signals[0]), atol=1e-4)
        repeats = max(1, n_items // len(signals))
        front = {}
        for name, fn in (
            ("librosa melspectrogram", librosa_log_mel),
            ("helpers.breath.audio.log_mel", audio.log_mel),
        ):
            start = time.perf_counter()
            for _ in range(repeats):
                for y in signals:
                    fn(y)
            front[name] = len(signals) * repeats * args.seconds_per_file / (time.perf_counter() - start)

        rows = {}
        for workers in sorted({1, args.workers}):
            for name, fn in (("librosa load+mel", baseline_file), ("helpers load+log_mel", helpers_file)):
                rows[(name, workers)] = total / timed(fn, items, workers)

    print("\nfront end only (16 kHz signals in memory, 1 process, 1 torch thread), s of audio per s:")
    for name, speed in front.items():
        print(f"  {name:<26} {speed:>9.0f}")
    print(
        f"  ratio helpers / librosa     {front['helpers.breath.audio.log_mel'] / front['librosa melspectrogram']:>8.2f}x"
    )
    print("\nread + resample + log-mel per file, s of audio per s, and projected time for ICBHI's 5.5 h:")
    for (name, workers), speed in rows.items():
        print(f"  {name:<22} {workers} proc {speed:>9.0f}   5.5 h in {ICBHI_SECONDS / speed:6.1f} s")
    for workers in sorted({1, args.workers}):
        ratio = rows[("helpers load+log_mel", workers)] / rows[("librosa load+mel", workers)]
        print(f"  ratio helpers / librosa, {workers} proc: {ratio:.2f}x")
    if args.workers > 1:
        scaling = rows[("helpers load+log_mel", args.workers)] / rows[("helpers load+log_mel", 1)]
        print(f"  helpers, {args.workers} processes vs 1: {scaling:.2f}x")
    best = ICBHI_SECONDS / max(rows[("helpers load+log_mel", w)] for w in sorted({1, args.workers}))
    verdict = "meets" if best <= TARGET_SECONDS else "misses"
    print(
        f"\nprojected 5.5 h with helpers: {best:.1f} s, {verdict} the target of {TARGET_SECONDS:.0f} s "
        f"(measured on {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
