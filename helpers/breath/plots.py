"""Figures of the breath-sound lesson: waveforms and spectrograms with annotated cycles, the mel filter bank,
per-band profiles, patch explanations and a 4-class confusion matrix.

Taught in ``notebooks/06_breath_sounds.ipynb``. Like :mod:`helpers.evaluate.plots`: every function draws on ``ax``
when one is given (a new figure otherwise), titles the figure, labels the axes with their units (time in s,
frequency in Hz), adds a colour bar where colour carries meaning, returns the Axes (the Figure for multi-panel
plots) and never calls ``plt.show()``. Mel-band axes keep one row per band and label the rows with their
centre frequency in Hz, so a reader sees both the bands the network sees and where they lie in Hz.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from sklearn.metrics import confusion_matrix

from helpers.breath import audio, icbhi

#: One colour per class: 0 normal, 1 crackle, 2 wheeze, 3 both.
CLASS_COLOURS = ("tab:green", "tab:orange", "tab:blue", "tab:purple")
LOG_MEL_LABEL = "log-mel: ln(mel + 0.01)"
HZ_TICKS = (125, 250, 500, 1000, 1500, 2000, 4000, 7000)


def _new_axes(ax: Axes | None, figsize: tuple[float, float] = (8.0, 3.2)) -> Axes:
    return plt.subplots(figsize=figsize)[1] if ax is None else ax


def band_centres(bands: int, n_mels: int | None = None, fmin: float = audio.FMIN, fmax: float = audio.FMAX):
    """Centre frequencies (Hz) of the lowest ``bands`` of ``n_mels`` bands over fmin-fmax (cropped features)."""
    return audio.mel_center_frequencies(n_mels or bands, fmin, fmax)[:bands]


def mel_axis(ax: Axes, centres: np.ndarray, axis: str = "y") -> None:
    """Label a mel-band axis (band 0 at the bottom/left) with frequencies in Hz at the matching band positions."""
    ticks = [f for f in HZ_TICKS if centres[0] <= f <= centres[-1]]
    positions = np.interp(ticks, centres, np.arange(len(centres)))
    label = "frequency (Hz, mel scale)"
    if axis == "y":
        ax.set_yticks(positions, [str(f) for f in ticks])
        ax.set_ylabel(label)
    else:
        ax.set_xticks(positions, [str(f) for f in ticks])
        ax.set_xlabel(label)


def mark_cycles(ax: Axes, annotation: pd.DataFrame, *, offset: float = 0.0, legend: bool = True) -> None:
    """Shade each annotated cycle with its class colour and write its class at the top of ``ax``.

    ``annotation``: :func:`helpers.breath.icbhi.read_annotation`; ``offset`` is subtracted from the cycle times (for
    a plot that starts later than 0 s). The ICBHI annotation says which cycle holds crackles or wheezes, not
    when inside the cycle they sound.
    """
    labels = icbhi.cycle_labels(annotation)
    for (start, end), label in zip(annotation[["start", "end"]].to_numpy() - offset, labels, strict=True):
        ax.axvspan(start, end, color=CLASS_COLOURS[label], alpha=0.18, lw=0)
        ax.axvline(start, color=CLASS_COLOURS[label], lw=1.2)
        ax.text(
            start + 0.05, 0.97, icbhi.CLASS_NAMES[label], transform=ax.get_xaxis_transform(),
            va="top", fontsize="small", color="white",
            bbox={"facecolor": CLASS_COLOURS[label], "alpha": 0.85, "pad": 1.5, "lw": 0},
        )  # fmt: skip
    if legend and len(labels):
        handles = [
            Patch(color=CLASS_COLOURS[k], alpha=0.5, label=icbhi.CLASS_NAMES[k]) for k in np.unique(labels)
        ]
        ax.legend(handles=handles, title="annotated cycle", fontsize="x-small", loc="lower right")


def plot_waveform(
    y: np.ndarray,
    sr: int,
    annotation: pd.DataFrame | None = None,
    *,
    ax: Axes | None = None,
    title: str = "Waveform",
) -> Axes:
    """Samples (n,) against time in s, with the annotated cycles shaded by class."""
    ax = _new_axes(ax)
    ax.plot(np.arange(len(y)) / sr, y, lw=0.4, color="black")
    if annotation is not None:
        mark_cycles(ax, annotation)
    ax.set(xlabel="time (s)", ylabel="amplitude (full scale = 1)", title=title, xlim=(0, len(y) / sr))
    return ax


def plot_log_mel(
    features: np.ndarray,
    annotation: pd.DataFrame | None = None,
    *,
    ax: Axes | None = None,
    fmin: float = audio.FMIN,
    fmax: float = audio.FMAX,
    n_mels: int | None = None,
    hop_ms: float = audio.HOP_MS,
    start_s: float = 0.0,
    title: str = "Log-mel spectrogram",
    colorbar: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Axes:
    """A (frames, bands) log-mel array as an image: time in s across, one row per mel band (labelled in Hz).

    ``start_s`` is the time of the first frame; annotated cycles (times in the recording) are marked when
    ``annotation`` is given. ``n_mels``: the number of bands the features were computed with over
    ``fmin``-``fmax``, when they were cropped since (default: as many as they have).
    """
    ax = _new_axes(ax)
    frames, bands = features.shape
    extent = (start_s, start_s + frames * hop_ms / 1000.0, -0.5, bands - 0.5)
    image = ax.imshow(
        features.T, origin="lower", aspect="auto", cmap="magma", extent=extent, vmin=vmin, vmax=vmax,
        interpolation="nearest",
    )  # fmt: skip
    if annotation is not None:
        mark_cycles(ax, annotation)
        ax.set_xlim(extent[0], extent[1])
    mel_axis(ax, band_centres(bands, n_mels, fmin, fmax))
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label=LOG_MEL_LABEL, pad=0.01)
    ax.set(xlabel="time (s)", title=title)
    return ax


def plot_stft(
    magnitude: np.ndarray,
    sr: int = audio.SAMPLE_RATE,
    *,
    n_fft: int = audio.N_FFT,
    hop_ms: float = audio.HOP_MS,
    ax: Axes | None = None,
    title: str = "STFT magnitude",
    max_hz: float | None = None,
) -> Axes:
    """A (frames, n_fft // 2 + 1) STFT magnitude in dB (20 log10, floor -100 dB): time in s, frequency in Hz."""
    ax = _new_axes(ax)
    db = 20 * np.log10(np.maximum(magnitude, 1e-5))
    extent = (0.0, len(magnitude) * hop_ms / 1000.0, -sr / n_fft / 2, sr / 2 + sr / n_fft / 2)
    image = ax.imshow(
        db.T, origin="lower", aspect="auto", cmap="magma", extent=extent, interpolation="nearest"
    )
    ax.figure.colorbar(image, ax=ax, label="magnitude (dB, 20 log10 |X|)", pad=0.01)
    ax.set(xlabel="time (s)", ylabel="frequency (Hz)", title=title, ylim=(0, max_hz or sr / 2))
    return ax


def plot_filter_bank(
    bank: np.ndarray,
    sr: int = audio.SAMPLE_RATE,
    *,
    ax: Axes | None = None,
    title: str = "Mel filter bank",
    max_hz: float | None = None,
) -> Axes:
    """Each row of a (n_mels, n_fft // 2 + 1) filter bank as a triangle over frequency in Hz."""
    ax = _new_axes(ax)
    freqs = np.linspace(0, sr / 2, bank.shape[1])
    colours = plt.get_cmap("viridis")(np.linspace(0, 1, len(bank)))
    for row, colour in zip(bank, colours, strict=True):
        ax.plot(freqs, row, color=colour, lw=0.9)
    ax.plot(
        freqs,
        np.zeros_like(freqs),
        "|",
        color="grey",
        ms=5,
        label=f"FFT bins ({sr / (2 * (bank.shape[1] - 1)):.2f} Hz apart)",
    )
    top = max_hz or freqs[np.flatnonzero(bank.any(axis=0))[-1]] * 1.05
    ax.set(xlabel="frequency (Hz)", ylabel="filter weight", title=title, xlim=(0, top))
    ax.legend(fontsize="small", loc="upper right")
    return ax


def plot_band_profiles(
    profiles: Mapping[str, np.ndarray],
    *,
    centres: np.ndarray | Mapping[str, np.ndarray] | None = None,
    ax: Axes | None = None,
    cutoff_hz: float | None = 1500.0,
    ylabel: str = "mean Grad-CAM heat (normalised)",
    title: str = "Heat per mel band",
    colours: Sequence[str] | None = None,
) -> Axes:
    """One line per profile (bands,) against the band centre frequency in Hz; a dashed line at ``cutoff_hz``.

    ``centres``: one array for all profiles, one per profile name, or None (the paper's 64 bands; a shorter
    profile takes the lowest bands, as after :func:`helpers.breath.audio.crop_bands`).
    """
    ax = _new_axes(ax, figsize=(7.0, 3.6))
    for i, (name, profile) in enumerate(profiles.items()):
        x = centres.get(name) if isinstance(centres, Mapping) else centres
        x = band_centres(len(profile), audio.N_MELS) if x is None else x
        colour = colours[i] if colours is not None else None
        ax.plot(x, profile, marker=".", ms=3, lw=1.3, label=name, color=colour)
    if cutoff_hz is not None:
        ax.axvline(cutoff_hz, ls="--", color="grey", label=f"{cutoff_hz:.0f} Hz")
    ax.set(xlabel="mel band centre frequency (Hz)", ylabel=ylabel, title=title)
    ax.legend(fontsize="small")
    return ax


def plot_patch_explanations(
    patches: Sequence[np.ndarray],
    heats: Sequence[np.ndarray],
    guided: Sequence[np.ndarray],
    titles: Sequence[str],
    *,
    n_mels: int | None = None,
    title: str = "Grad-CAM and Guided Grad-CAM on log-mel patches",
) -> Figure:
    """One row per patch (frames, bands): the log-mel patch, its Grad-CAM heat over it, its Guided Grad-CAM.

    ``heats`` in [0, 1]; ``guided`` any sign (shown as its magnitude scaled to [0, 1]). ``n_mels``: the
    bands of the front end when the patches were cropped (default: as many as they have).
    """
    n = len(patches)
    fig, axes = plt.subplots(n, 3, figsize=(15.0, 3.2 * n), squeeze=False, layout="constrained")
    for row, (patch, heat, grad, name) in enumerate(zip(patches, heats, guided, titles, strict=True)):
        frames = patch.shape[0]
        extent = (0.0, frames * audio.HOP_MS / 1000.0, -0.5, patch.shape[1] - 0.5)
        magnitude = np.abs(grad)
        magnitude = magnitude / magnitude.max() if magnitude.max() > 0 else magnitude
        panels = (
            (patch, "magma", LOG_MEL_LABEL, f"{name}\nlog-mel patch", None),
            (heat, "jet", "Grad-CAM (normalised)", "Grad-CAM over the patch", patch),
            (magnitude, "gray_r", "|Guided Grad-CAM| (normalised)", "Guided Grad-CAM", None),
        )
        for ax, (values, cmap, label, text, under) in zip(axes[row], panels, strict=True):
            if under is not None:
                ax.imshow(under.T, origin="lower", aspect="auto", cmap="gray", extent=extent)
            image = ax.imshow(
                values.T, origin="lower", aspect="auto", cmap=cmap, extent=extent,
                alpha=0.5 if under is not None else 1.0,
                vmin=None if cmap == "magma" else 0, vmax=None if cmap == "magma" else 1,
            )  # fmt: skip
            fig.colorbar(image, ax=ax, label=label, pad=0.01)
            mel_axis(ax, band_centres(patch.shape[1], n_mels))
            ax.set(xlabel="time in patch (s)", title=text)
    fig.suptitle(title)
    return fig


def plot_confusion_4(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    ax: Axes | None = None,
    title: str = "Confusion matrix",
) -> Axes:
    """4-class confusion matrix (normal, crackle, wheeze, both): counts, coloured by row rate (recall)."""
    ax = _new_axes(ax, figsize=(5.2, 4.4))
    counts = confusion_matrix(y_true, y_pred, labels=range(len(icbhi.CLASS_NAMES)))
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.full(counts.shape, np.nan), where=totals > 0)
    annot = np.array(
        [
            [f"{c}\n({r:.0%})" if t else f"{c}" for c, r in zip(cr, rr, strict=True)]
            for cr, rr, t in zip(counts, rates, totals[:, 0], strict=True)
        ]
    )
    sns.heatmap(
        rates, annot=annot, fmt="", cmap="Blues", vmin=0, vmax=1, square=True,
        xticklabels=icbhi.CLASS_NAMES, yticklabels=icbhi.CLASS_NAMES,
        cbar_kws={"label": "row rate (fraction of the true class)"}, ax=ax,
    )  # fmt: skip
    ax.set(xlabel="predicted class (arg-max)", ylabel="true class", title=f"{title} (n = {len(y_true)})")
    return ax


def plot_cycle(
    features: np.ndarray,
    annotation: pd.DataFrame,
    cycle: int,
    cutoff_hz: float,
    *,
    context_s: float = 0.5,
    title: str = "",
) -> Figure:
    """The log-mel of one annotated cycle (with ``context_s`` around it) and its mean level per band.

    ``features`` (frames, 64): the paper's log-mel of the whole recording. Bands whose centre lies above
    ``cutoff_hz`` (those :func:`helpers.breath.audio.crop_bands` removes) are greyed out on the left and dropped
    from the profile line on the right.
    """
    start, end = annotation.loc[cycle, ["start", "end"]].to_numpy(dtype=float)
    hop = audio.HOP_MS / 1000.0
    first = max(0, int((start - context_s) / hop))
    last = min(len(features), int(np.ceil((end + context_s) / hop)))
    part = features[first:last]
    centres = audio.mel_center_frequencies(features.shape[1])
    kept = int(np.searchsorted(centres, cutoff_hz, side="right"))
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(13.0, 3.6), width_ratios=(2.2, 1.0), layout="constrained"
    )
    plot_log_mel(part, annotation, ax=left, start_s=first * hop, title="Log-mel around the cycle")
    left.set_xlim(first * hop, last * hop)
    if kept < features.shape[1]:
        left.axhspan(kept - 0.5, features.shape[1] - 0.5, color="white", alpha=0.55, hatch="//", lw=0)
    label = icbhi.CLASS_NAMES[int(icbhi.cycle_labels(annotation)[cycle])]
    inside = features[int(start / hop) : max(int(start / hop) + 1, int(end / hop))]
    right.plot(centres, inside.mean(axis=0), color="lightgrey", lw=1, label="all 64 bands")
    right.plot(
        centres[:kept],
        inside.mean(axis=0)[:kept],
        color=CLASS_COLOURS[icbhi.CLASS_NAMES.index(label)],
        lw=1.6,
        label=f"kept ({kept} bands)",
    )
    right.axvline(cutoff_hz, ls="--", color="grey", label=f"cut-off {cutoff_hz:.0f} Hz")
    right.set(
        xlabel="mel band centre frequency (Hz)",
        ylabel="mean log-mel over the cycle",
        title=f"Cycle {cycle} ({label}): level per band",
    )
    right.legend(fontsize="small")
    fig.suptitle(title or f"Cycle {cycle}: {start:.2f}-{end:.2f} s, {label}")
    return fig
