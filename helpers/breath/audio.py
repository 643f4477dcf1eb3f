"""Breath-sound front end: reading WAV files, the paper's log-mel spectrogram and 0.96 s patches.

Taught in ``notebooks/06_breath_sounds.ipynb``. The features are the VGGish log-mel front end with the
seed paper's frequency range (16 kHz mono, 25 ms periodic Hann window, 10 ms hop, 512-point FFT, STFT
*magnitude*, 64 HTK mel bands over 100-2000 Hz, natural ``log(mel + 0.01)``, non-overlapping patches of 96
frames). Choices, each checked against VGGish's ``mel_features.py``:

- Framing: no centre padding. Frame ``j`` holds samples ``[160 j, 160 j + 400)``, so a signal of ``n``
  samples gives ``1 + (n - 400) // 160`` frames (VGGish's ``frame()``), and one 96-frame patch needs
  ``400 + 95 * 160`` samples = 0.975 s (the 0.96 s patch hop plus the window's 15 ms tail).
- Magnitude, not power: VGGish's ``stft_magnitude`` is ``|rfft|``; the paper says only "spectrogram".
- Mel filters: ``librosa.filters.mel(htk=True, norm=None)``. Both use the HTK scale
  ``mel = 1127 ln(1 + f / 700)``, band edges evenly spaced in mel and triangles of peak 1. VGGish draws the
  triangles linear in mel, librosa linear in Hz; the weights differ by less than 0.0025 and the log-mel
  by less than 0.01 (measured on noise), far below anything a classifier or a Grad-CAM map can see.
  64 bands over 100-2000 Hz are narrow: each reads only 1 to 3 of the 31.25 Hz FFT bins, and below
  about 300 Hz bands come in pairs that read one and the same bin (bands 0 and 1: the 125 Hz bin, with
  weights 0.36 and 0.64), so the bottom rows of a patch are near-duplicates (VGGish's filters do the same).
- Threads: ``torch.stft`` on one recording is too small a job for several threads. On a busy 2-core
  machine two torch threads made ``log_mel`` 5x slower than one (87 vs 18 ms per 20 s of audio); set the
  thread count with ``helpers.config.set_cpu_threads`` and parallelise over recordings instead (processes).
- Resampling: ``soxr`` at quality ``HQ`` (what ``librosa.resample(res_type="soxr_hq")`` calls, with the same
  output to the bit and 5-20 % less time; ``soxr`` is a dependency of librosa). For a 4 kHz recording its
  anti-alias filter rolls off just below the 2 kHz Nyquist frequency: white noise recorded at 4 kHz comes
  out flat up to about 1.85 kHz, then 0.4 darker in band 62 (centre 1.90 kHz) and 1.3 darker (natural-log
  units) in band 63 (centre 1.95 kHz) than the same noise recorded at 44.1 kHz.
"""

from __future__ import annotations

import functools
import re
import warnings
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import soxr
import torch

SAMPLE_RATE = 16000
WIN_MS = 25.0
HOP_MS = 10.0
N_FFT = 512
N_MELS = 64
FMIN = 100.0
FMAX = 2000.0
LOG_OFFSET = 0.01
PATCH_FRAMES = 96
PATCH_SECONDS = PATCH_FRAMES * HOP_MS / 1000.0  # 0.96 s: the hop between patches
PATCH_SPAN_SECONDS = (WIN_MS + (PATCH_FRAMES - 1) * HOP_MS) / 1000.0  # 0.975 s of samples in one patch
SILENCE_PEAK = 1e-6


class AudioError(ValueError):
    """An audio file that cannot be used: unreadable, truncated, silent or too short.

    Taught in ``notebooks/06_breath_sounds.ipynb``.
    """


class ClippedAudioWarning(UserWarning):
    """A recording whose samples go beyond [-1, 1] (a float file not scaled to full scale) was clipped."""


def _is_truncated(extra_info: str) -> bool:
    """True when libsndfile's header log says the data chunk holds fewer bytes than the header declares."""
    match = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", extra_info, re.M)
    return bool(match) and int(match.group(2)) < int(match.group(1))


def audio_info(path: str | Path) -> dict:
    """Header facts of an audio file without decoding it.

    Returns ``{"samplerate", "channels", "frames", "duration" (s), "subtype" (e.g. "PCM_16"), "format",
    "truncated" (bool: the header promises more data than the file holds)}``. Raises :class:`AudioError`
    naming the file for a missing, empty or unreadable file. Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: the file is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError) as err:
        reason = getattr(err, "error_string", None) or str(err)
        raise AudioError(f"{path}: not a readable audio file ({reason})") from err
    return {
        "samplerate": int(info.samplerate),
        "channels": int(info.channels),
        "frames": int(info.frames),
        "duration": info.frames / info.samplerate if info.samplerate else 0.0,
        "subtype": info.subtype,
        "format": info.format,
        "truncated": _is_truncated(info.extra_info),
    }


def resample(y: np.ndarray, orig_sr: int, sr: int) -> np.ndarray:
    """Resample a mono float signal (n,) -> (about n * sr / orig_sr,) float32 with soxr ``HQ``.

    Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    y = np.ascontiguousarray(y, dtype=np.float32)
    if orig_sr == sr:
        return y
    return np.ascontiguousarray(soxr.resample(y, orig_sr, sr, quality="HQ"), dtype=np.float32)


def load_audio(
    path: str | Path, sr: int = SAMPLE_RATE, *, min_duration: float = PATCH_SPAN_SECONDS
) -> np.ndarray:
    """Read an audio file as mono float32 at ``sr`` Hz: (n,) with values in [-1, 1].

    Any bit depth soundfile reads (8-bit unsigned, 16/24/32-bit integer, 32/64-bit float) is scaled to
    [-1, 1]; channels are averaged; other rates are resampled with soxr. A float file may hold samples beyond
    [-1, 1]: they are clipped to [-1, 1], with a :class:`ClippedAudioWarning` saying how many (the resampler's
    slight overshoot near full scale is clipped silently). Raises :class:`AudioError`, whose
    message names the file and the reason, for a file that is missing, empty, not audio, truncated,
    shorter than ``min_duration`` seconds (default: one 96-frame patch, 0.975 s), holds NaN/inf, or is
    silent (peak below 1e-6). Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    path = Path(path)
    info = audio_info(path)
    if info["truncated"]:
        raise AudioError(f"{path}: truncated: the header promises more audio data than the file holds")
    if info["duration"] < min_duration:
        raise AudioError(
            f"{path}: too short: {info['duration']:.3f} s of audio, at least {min_duration:.3f} s is needed "
            f"(one {PATCH_FRAMES}-frame patch)"
        )
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as err:
        reason = getattr(err, "error_string", None) or str(err)
        raise AudioError(f"{path}: corrupt audio data ({reason})") from err
    y = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(y).all():
        raise AudioError(f"{path}: the samples contain NaN or infinite values")
    peak = float(np.abs(y).max()) if y.size else 0.0
    if peak < SILENCE_PEAK:
        raise AudioError(f"{path}: silent: peak amplitude {peak:.3g} is below {SILENCE_PEAK:g}")
    _warn_if_beyond_full_scale(path, y, peak)
    return np.clip(resample(y, int(file_sr), sr), -1.0, 1.0)


def _warn_if_beyond_full_scale(path: Path, y: np.ndarray, peak: float) -> None:
    """Warn (:class:`ClippedAudioWarning`) when samples of the file's signal ``y`` lie beyond [-1, 1]."""
    if peak <= 1.0:
        return
    over = int(np.count_nonzero(np.abs(y) > 1.0))
    warnings.warn(
        f"{path}: {over} of {y.size} samples ({over / y.size:.1%}) lie beyond [-1, 1] (peak {peak:.3g}); "
        "they were clipped to [-1, 1]. Scale the recording to full scale to keep its loud parts",
        ClippedAudioWarning,
        stacklevel=3,
    )


def frame_lengths(sr: int = SAMPLE_RATE, win_ms: float = WIN_MS, hop_ms: float = HOP_MS) -> tuple[int, int]:
    """(window, hop) in samples, rounded as VGGish does: (400, 160) at 16 kHz.

    Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    return int(round(sr * win_ms / 1000.0)), int(round(sr * hop_ms / 1000.0))


@functools.lru_cache(maxsize=32)
def mel_filter_bank(
    sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = FMIN, fmax: float = FMAX
) -> np.ndarray:
    """HTK mel filters (n_mels, n_fft // 2 + 1) float32, triangles of peak 1 (read-only, cached per parameters).

    Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    if not 0 <= fmin < fmax <= sr / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= sr / 2, got fmin={fmin}, fmax={fmax}, sr={sr}")
    bank = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=True, norm=None)
    bank = np.ascontiguousarray(bank, dtype=np.float32)
    bank.setflags(write=False)
    return bank


def mel_center_frequencies(n_mels: int = N_MELS, fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
    """(n_mels,) centre frequency in Hz of each band (where its weight is 1), for per-band profile plots.

    Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    return librosa.mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax, htk=True)[1:-1]


def stft_magnitude(
    y: np.ndarray,
    sr: int = SAMPLE_RATE,
    *,
    win_ms: float = WIN_MS,
    hop_ms: float = HOP_MS,
    n_fft: int = N_FFT,
) -> np.ndarray:
    """STFT magnitude of a mono signal (n,) -> (frames, n_fft // 2 + 1) float32: the first step of :func:`log_mel`.

    Periodic Hann window of ``win_ms`` (400 samples at 16 kHz), hop ``hop_ms`` (160), FFT size ``n_fft``
    (bin ``k`` is ``k * sr / n_fft`` Hz: 31.25 Hz apart). ``frames = 1 + (n - win) // hop`` (no centre
    padding; 0 frames when n < win). Row ``j`` describes samples ``[j * hop, j * hop + win)``, as in VGGish.
    Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"expected a mono signal of shape (n,), got shape {y.shape}")
    win, hop = frame_lengths(sr, win_ms, hop_ms)
    if n_fft < win:
        raise ValueError(f"n_fft={n_fft} is shorter than the {win}-sample window")
    if len(y) < win:
        return np.zeros((0, n_fft // 2 + 1), dtype=np.float32)
    # torch.stft centres a short window inside each n_fft frame; padding the signal by the same amount on
    # both sides makes frame j hold exactly samples [j * hop, j * hop + win) of y, as in VGGish.
    left = (n_fft - win) // 2
    x = torch.nn.functional.pad(
        torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)), (left, n_fft - win - left)
    )
    window = torch.hann_window(win, periodic=True)
    spec = torch.stft(x, n_fft, hop, win_length=win, window=window, center=False, return_complex=True)
    return spec.abs().T.contiguous().numpy()


def log_mel(
    y: np.ndarray,
    sr: int = SAMPLE_RATE,
    *,
    n_mels: int = N_MELS,
    fmin: float = FMIN,
    fmax: float = FMAX,
    win_ms: float = WIN_MS,
    hop_ms: float = HOP_MS,
    n_fft: int = N_FFT,
    log_offset: float = LOG_OFFSET,
) -> np.ndarray:
    """The paper's log-mel spectrogram: mono signal (n,) -> (frames, n_mels) float32, natural log.

    ``log(|STFT| @ mel_filter_bank.T + log_offset)``: :func:`stft_magnitude` (periodic Hann, no centre
    padding, ``frames = 1 + (n - win) // hop``), then the cached librosa HTK filter bank
    (:func:`mel_filter_bank`). Row ``j`` describes samples ``[j * hop, j * hop + win)``.
    Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"log_mel expects a mono signal of shape (n,), got shape {y.shape}")
    bank = torch.from_numpy(mel_filter_bank(sr, n_fft, n_mels, float(fmin), float(fmax)).copy())
    magnitude = torch.from_numpy(stft_magnitude(y, sr, win_ms=win_ms, hop_ms=hop_ms, n_fft=n_fft))
    return torch.log(magnitude @ bank.T + log_offset).contiguous().numpy()


def power_share_above(y: np.ndarray, hz: float, sr: int = SAMPLE_RATE) -> float:
    """Share of a signal's power (n,) that lies above ``hz`` Hz (periodogram of the whole signal).

    A 4 kHz recording resampled to 16 kHz has almost none above its 2 kHz Nyquist frequency (below 1e-4 of
    its power beyond 2.1 kHz); a 44.1 kHz recording usually has some. Taught in
    ``notebooks/06_breath_sounds.ipynb``.
    """
    power = np.abs(np.fft.rfft(np.asarray(y, dtype=np.float64))) ** 2
    total = power.sum()
    return float(power[np.fft.rfftfreq(len(y), 1.0 / sr) > hz].sum() / total) if total > 0 else float("nan")


def crop_bands(
    features: np.ndarray, max_hz: float, *, fmin: float = FMIN, fmax: float = FMAX
) -> tuple[np.ndarray, int]:
    """Remove the mel bands whose centre lies above ``max_hz`` (the paper's crop above 1500 Hz).

    ``features`` (..., n_mels) -> ``(features[..., :kept], kept)``; with the defaults and 1500 Hz, 54 of 64
    bands are kept. ``fmin``/``fmax`` must be those the features were computed with. Crop rather than
    recompute with ``fmax=1500``: 64 bands over 100-1500 Hz (any fmax below about 1800 Hz) leave some bands
    without a single FFT bin (librosa warns "Empty filters").
    Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    centres = mel_center_frequencies(features.shape[-1], fmin, fmax)
    kept = int(np.searchsorted(centres, max_hz, side="right"))
    if kept == 0:
        raise ValueError(
            f"max_hz={max_hz} is below the lowest band centre ({centres[0]:.1f} Hz): nothing is left"
        )
    return features[..., :kept], kept


def patches(features: np.ndarray, frames: int = PATCH_FRAMES, hop: int | None = None) -> np.ndarray:
    """Cut (T, n_mels) features into patches (n, frames, n_mels), a copy; ``hop`` defaults to ``frames``.

    ``n = 1 + (T - frames) // hop`` (0 when T < frames): the last partial patch is dropped, as VGGish does.
    Patch ``i`` starts at frame ``i * hop``; see :func:`patch_start_times`. Taught in
    ``notebooks/06_breath_sounds.ipynb``.
    """
    hop = frames if hop is None else hop
    if features.ndim != 2:
        raise ValueError(f"patches expects (frames, bands) features, got shape {features.shape}")
    if frames < 1 or hop < 1:
        raise ValueError(f"frames and hop must be positive, got frames={frames}, hop={hop}")
    if features.shape[0] < frames:
        return np.zeros((0, frames, features.shape[1]), dtype=features.dtype)
    windows = np.lib.stride_tricks.sliding_window_view(features, frames, axis=0)[::hop]
    return np.ascontiguousarray(windows.transpose(0, 2, 1))


def patch_start_times(
    n_patches: int, frames: int = PATCH_FRAMES, hop: int | None = None, hop_ms: float = HOP_MS
) -> np.ndarray:
    """(n_patches,) float64 start time in seconds of each patch from :func:`patches` (0, 0.96, 1.92, ...).

    Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    hop = frames if hop is None else hop
    return np.arange(n_patches) * hop * hop_ms / 1000.0
