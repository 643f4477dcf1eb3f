"""The results the lessons rely on, checked here so that the build fails while a learner only gets a warning.

A lesson cell never raises for a result it does not like (a metric, a score, an agreement between methods): it
warns. These tests read the values that the notebooks print in their checked cells (``# NBVAL_CHECK_OUTPUT``).
nbval re-executes every notebook in smoke mode and fails when a checked cell prints anything else than its
stored output, so the stored values are the ones the current code computes; here they must also be good.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def checked_text(prefix: str, needle: str) -> str:
    """The stored stdout of the one checked cell of notebook ``prefix`` whose source contains ``needle``."""
    (path,) = NOTEBOOKS.glob(f"{prefix}_*.ipynb")
    cells = [
        c
        for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
        if c["cell_type"] == "code" and needle in "".join(c["source"])
    ]
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells contain {needle!r}"
    source = "".join(cells[0]["source"])
    assert source.lstrip().startswith("# NBVAL_CHECK_OUTPUT"), (
        f"{path.name}: the cell with {needle!r} is not checked"
    )
    return "".join("".join(o.get("text", "")) for o in cells[0]["outputs"] if o.get("name") == "stdout")


def gradcam_beats_random(text: str, margin: float = 0.10) -> tuple[float, float]:
    """(ours, random) from notebook 05's pointing-game line; raises AssertionError when ours < random + margin."""
    found = re.search(r"pointing game ([\d.]+) vs random maps ([\d.]+)", text)
    assert found, f"no pointing-game line in {text!r}"
    ours, chance = map(float, found.groups())
    assert ours >= chance + margin, (
        f"Grad-CAM pointing game {ours} does not beat random maps {chance} by {margin}"
    )
    return ours, chance


def planted_sounds_recovered(text: str, floor: float) -> dict[str, float]:
    """The AUC dict printed by notebook 06; raises AssertionError when one is not above ``floor``."""
    found = re.search(r"(\{.*\})", text)
    assert found, f"no AUC dict in {text!r}"
    aucs = ast.literal_eval(found.group(1))
    assert all(value > floor for value in aucs.values()), f"AUCs {aucs} not all above {floor}"
    return aucs


def test_gradcam_beats_random_maps_in_notebook_05():
    ours, chance = gradcam_beats_random(checked_text("05", "MARGIN = 0.10"))
    assert 0 <= chance < ours <= 1


def test_gradcam_beats_random_maps_on_the_kermany_set_in_notebook_07():
    ours, chance = gradcam_beats_random(checked_text("07", "MARGIN = 0.10"))
    assert 0 <= chance < ours <= 1


def test_gradcam_finds_the_marker_of_the_shortcut_model_in_notebook_05():
    """Notebook 05's sentence "Grad-CAM has found the marker" rests on these two printed comparisons."""
    text = checked_text("05", "marker_row.enrichment > box_row.enrichment")
    assert "(enrichment): True" in text and "opacity box: True" in text, text


def test_integrated_gradients_is_complete_in_notebook_05b():
    text = checked_text("05b", "gradients.completeness(")
    assert "128 steps:" in text and text.count(": True") == 2, text


def test_one_and_two_processes_agree_in_notebook_08():
    assert "agree within" in (text := checked_text("08", "TOLERANCE = ")) and text.rstrip().endswith(
        "True"
    ), text


def test_the_planted_breath_sounds_are_recovered_in_notebook_06():
    planted_sounds_recovered(checked_text("06", "recovered = {k: round(metrics[k], 2)"), floor=0.65)


def test_the_cropped_model_stays_above_chance_in_notebook_06():
    text = checked_text("06", "crop_metrics = results[")
    aucs = planted_sounds_recovered(text, floor=0.5)
    assert aucs["macro_auc"] > 0.6


def test_the_checks_fail_on_bad_results():
    with pytest.raises(AssertionError, match="does not beat random maps"):
        gradcam_beats_random("Grad-CAM layer2: pointing game 0.150 vs random maps 0.120 (+0.030; ...)")
    assert gradcam_beats_random("pointing game 0.650 vs random maps 0.120") == (0.65, 0.12)
    with pytest.raises(AssertionError, match="not all above 0.65"):
        planted_sounds_recovered("AUCs: {'crackle_auc': 0.9, 'wheeze_auc': 0.55, 'macro_auc': 0.7}", 0.65)


def test_no_lesson_cell_from_02_on_asserts_or_raises():
    """Lessons warn; they never stop a learner's "Run all" over a result (tests/ fail the build instead)."""
    found = []
    for path in sorted(NOTEBOOKS.glob("0[2-9]_*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
            source = "".join(cell["source"])
            if cell["cell_type"] != "code":
                continue
            code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
            if any(isinstance(node, (ast.Assert, ast.Raise)) for node in ast.walk(ast.parse(code))):
                found.append(f"{path.name} cell {i}")
    assert found == []
