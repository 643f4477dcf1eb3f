"""Breath-sound explorer: pick a recording, one of its annotated cycles and a cut-off frequency.

Taught in ``notebooks/06_breath_sounds.ipynb``, after the static figure of
:func:`helpers.breath.plots.plot_cycle`, which this explorer redraws for the chosen controls. Works with
ipywidgets 7.7 (Colab) and 8.x: ``Dropdown`` with a list of ``(label, value)`` pairs, ``FloatSlider``,
``HTML``, ``Output``, ``observe`` on ``value``.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as w
import numpy as np
import pandas as pd

from helpers.breath import audio, icbhi, plots
from helpers.widgets.figures import figure_output

EXPLORER_CLASS = "xai-breath-explorer"  # on the returned box, for browser tests


def cycle_summary(features: np.ndarray, annotation: pd.DataFrame, cycle: int, cutoff_hz: float) -> dict:
    """Numbers the explorer shows for one cycle: its times and class, the bands kept below ``cutoff_hz`` and
    the share of the cycle's mel magnitude that lies above it.

    ``features`` (frames, 64): the paper's log-mel of the whole recording; ``annotation``: its cycles.
    """
    start, end = annotation.loc[cycle, ["start", "end"]].to_numpy(dtype=float)
    hop = audio.HOP_MS / 1000.0
    inside = features[int(start / hop) : max(int(start / hop) + 1, int(end / hop))]
    magnitude = np.exp(inside.astype(np.float64)) - audio.LOG_OFFSET  # undo log(mel + 0.01)
    centres = audio.mel_center_frequencies(features.shape[1])
    kept = int(np.searchsorted(centres, cutoff_hz, side="right"))
    total = magnitude.sum()
    return {
        "start": start,
        "end": end,
        "label": icbhi.CLASS_NAMES[int(icbhi.cycle_labels(annotation)[cycle])],
        "kept": kept,
        "bands": features.shape[1],
        "share_above": float(magnitude[:, kept:].sum() / total) if total > 0 else float("nan"),
    }


def breath_explorer(
    recordings: pd.DataFrame, *, name: str | None = None, cycle: int = 0, cutoff_hz: float = 1500.0
) -> Any:
    """An ``ipywidgets.VBox``: recording and cycle drop-downs, a cut-off slider (500-2000 Hz), a one-line
    summary (:func:`cycle_summary`) and the figure of :func:`helpers.breath.plots.plot_cycle`.

    ``recordings``: :func:`helpers.breath.icbhi.list_recordings`. Recordings are loaded (16 kHz log-mel) when first
    chosen and kept. The returned box has ``controls`` (dict of the three widgets), ``summary`` (the HTML
    widget), ``output`` (the figure's Output) and ``state`` (the last drawn figure's title) for tests.
    """

    if recordings.empty:
        raise ValueError(
            "breath_explorer needs at least one recording (helpers.breath.icbhi.list_recordings)"
        )
    rows = recordings.set_index("name")
    cache: dict[str, tuple[np.ndarray, pd.DataFrame]] = {}

    def load(rec: str) -> tuple[np.ndarray, pd.DataFrame]:
        if rec not in cache:
            cache[rec] = (
                audio.log_mel(audio.load_audio(rows.at[rec, "wav"])),
                icbhi.read_annotation(rows.at[rec, "txt"]),
            )
        return cache[rec]

    def cycle_options(rec: str) -> list[tuple[str, int]]:
        annotation = load(rec)[1]
        labels = icbhi.cycle_labels(annotation)
        return [
            (f"{k}: {s:.1f}-{e:.1f} s, {icbhi.CLASS_NAMES[labels[k]]}", k)
            for k, (s, e) in enumerate(annotation[["start", "end"]].to_numpy())
        ]

    first = name if name is not None else str(rows.index[0])
    recording = w.Dropdown(options=list(rows.index), value=first, description="recording")
    options = cycle_options(first)
    cycles = w.Dropdown(options=options, value=min(cycle, len(options) - 1), description="cycle")
    cutoff = w.FloatSlider(
        value=cutoff_hz, min=500.0, max=2000.0, step=50.0, description="cut-off (Hz)", continuous_update=False
    )
    summary = w.HTML()
    state: dict[str, Any] = {"busy": False}

    def draw():
        features, annotation = load(recording.value)
        fig = plots.plot_cycle(
            features, annotation, cycles.value, cutoff.value, title=f"{recording.value}, cycle {cycles.value}"
        )
        state["title"] = fig.get_suptitle()
        return fig

    output = figure_output(draw)

    def refresh(change: Any = None) -> None:
        if state["busy"]:
            return
        features, annotation = load(recording.value)
        info = cycle_summary(features, annotation, cycles.value, cutoff.value)
        row = rows.loc[recording.value]
        summary.value = (
            f"<b>{recording.value}</b>: patient {row['patient']}, {row['device']}, recorded at "
            f"{row['sample_rate']} Hz &middot; cycle {cycles.value}: {info['start']:.2f}-{info['end']:.2f} s, "
            f"<b>{info['label']}</b> &middot; a cut-off at <span data-metric='cutoff'>{cutoff.value:.0f}</span> "
            f"Hz keeps <span data-metric='kept'>{info['kept']}</span> of {info['bands']} bands &middot; "
            f"{info['share_above']:.1%} of the cycle's mel magnitude lies above it"
        )
        output.refresh()

    def new_recording(change: Any) -> None:
        state["busy"] = True  # setting the options fires the cycle observer: draw once, below
        try:
            cycles.options = cycle_options(recording.value)
            cycles.value = 0
        finally:
            state["busy"] = False
        refresh()

    recording.observe(new_recording, names="value")
    cycles.observe(refresh, names="value")
    cutoff.observe(refresh, names="value")
    refresh()
    box = w.VBox([w.HBox([recording, cycles]), cutoff, summary, output])
    box.add_class(EXPLORER_CLASS)
    box.controls = {"recording": recording, "cycle": cycles, "cutoff": cutoff}  # type: ignore[attr-defined]
    box.summary, box.output, box.state = summary, output, state  # type: ignore[attr-defined]
    return box
