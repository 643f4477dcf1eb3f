"""helpers.widgets.breath: the explorer builds, and its controls change the numbers and the figure shown."""

from __future__ import annotations

import re

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

pytest.importorskip("ipywidgets")  # before helpers.widgets, which imports it

from helpers.breath import audio, icbhi  # noqa: E402
from helpers.data.synthetic_audio import make_icbhi_like  # noqa: E402
from helpers.widgets import breath  # noqa: E402


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    root = make_icbhi_like(tmp_path_factory.mktemp("icbhi"), 2, seed=0, workers=1, duration_s=(10.0, 11.0))
    return icbhi.list_recordings(root)


def test_cycle_summary_counts_kept_bands_and_energy_above_the_cut_off():
    annotation = pd.DataFrame({"start": [0.0], "end": [1.0], "crackles": [0], "wheezes": [1]})
    features = np.full((120, 64), np.log(1.0 + audio.LOG_OFFSET), np.float32)  # mel magnitude 1 everywhere
    info = breath.cycle_summary(features, annotation, 0, 1500.0)
    assert info["label"] == "wheeze" and info["kept"] == 54 and info["bands"] == 64
    assert info["share_above"] == pytest.approx(10 / 64, rel=1e-5)
    assert breath.cycle_summary(features, annotation, 0, 2000.0)["share_above"] == pytest.approx(
        0.0, abs=1e-9
    )


def _text(html: str) -> str:
    """The summary as a reader sees it (tags removed)."""
    return re.sub(r"<[^>]+>", "", html)


def test_explorer_redraws_when_a_control_changes(recordings):
    n_cycles = {n: len(icbhi.read_annotation(t)) for n, t in recordings[["name", "txt"]].to_numpy()}
    name = next(n for n, k in n_cycles.items() if k >= 2)
    box = breath.breath_explorer(recordings, name=name)
    controls, summary = box.controls, box.summary
    assert set(controls) == {"recording", "cycle", "cutoff"}
    assert len(controls["cycle"].options) == n_cycles[name]
    assert "keeps 54 of 64 bands" in _text(summary.value) and name in summary.value
    assert "<span data-metric='kept'>54</span>" in summary.value  # what the browser test reads
    assert breath.EXPLORER_CLASS in box._dom_classes
    assert box.state["title"] == f"{name}, cycle 0"

    controls["cutoff"].value = 1000.0
    assert "a cut-off at 1000 Hz keeps" in _text(summary.value) and "keeps 54 of" not in _text(summary.value)

    controls["cycle"].value = 1
    assert box.state["title"] == f"{name}, cycle 1" and "cycle 1:" in summary.value

    other = next(n for n in n_cycles if n != name)
    controls["recording"].value = other
    assert controls["cycle"].value == 0 and other in summary.value
    assert box.state["title"] == f"{other}, cycle 0"
    assert len(controls["cycle"].options) == n_cycles[other]


def test_explorer_refuses_an_empty_table(recordings):
    with pytest.raises(ValueError, match="at least one recording"):
        breath.breath_explorer(recordings.iloc[:0])
