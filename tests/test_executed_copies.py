"""The executed copies in docs/executed/: what a reader sees on GitHub or nbviewer without running anything.

They are made by ``python -m helpers.course.run_notebooks --publish`` on a machine without a GPU (auto = cpu).
A copy is stale when its code differs from the source notebook's; every cell that draws a figure must have one
stored, and the seven copies stay small. Also the publishing step itself (figures shrunk, widget state dropped).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from helpers.course import run_notebooks

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
PUBLISHED = ROOT / run_notebooks.PUBLISHED_DIR
MAX_TOTAL_BYTES = 8 * 2**20
REFRESH = "refresh them: `python -m helpers.course.run_notebooks --publish` on a machine without a GPU"


def code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]


def draws_a_figure(source: str) -> bool:
    """A cell that shows a matplotlib figure: it calls ``plt.show()`` (the course's convention)."""
    return "plt.show()" in source


def stale_cells(source_path: Path, copy_path: Path) -> list[int]:
    """Indices of the code cells whose source differs between the notebook and its executed copy."""
    ours, theirs = code_cells(source_path), code_cells(copy_path)
    if len(ours) != len(theirs):
        return list(range(max(len(ours), len(theirs))))
    return [
        i
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
        if "".join(a["source"]) != "".join(b["source"])
    ]


def figures_missing(copy_path: Path) -> list[int]:
    """Indices of the code cells that draw a figure but store no image."""
    return [
        i
        for i, cell in enumerate(code_cells(copy_path))
        if draws_a_figure("".join(cell["source"]))
        and not any("image/png" in o.get("data", {}) for o in cell["outputs"])
    ]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_each_notebook_has_a_fresh_executed_copy_with_its_figures(source):
    copy = PUBLISHED / source.name
    assert copy.is_file(), f"{copy} is missing; {REFRESH}"
    assert stale_cells(source, copy) == [], f"{copy.name} is stale; {REFRESH}"
    assert figures_missing(copy) == [], f"{copy.name}: cells draw a figure but store none; {REFRESH}"
    cells = code_cells(copy)
    errors = [i for i, c in enumerate(cells) if any(o.get("output_type") == "error" for o in c["outputs"])]
    assert errors == [], f"{copy.name}: cells {errors} stored an error"
    report = "".join("".join(o.get("text", "")) for o in cells[1]["outputs"] + cells[0]["outputs"])
    assert "mode=cpu" in report, f"{copy.name} is not a cpu-mode run"


def test_the_executed_copies_are_small_and_linked_from_each_notebook():
    total = sum(p.stat().st_size for p in PUBLISHED.glob("*.ipynb"))
    assert 0 < total < MAX_TOTAL_BYTES, f"{total / 2**20:.1f} MB of executed copies"
    for source in SOURCES:
        header = "".join(json.loads(source.read_text(encoding="utf-8"))["cells"][0]["source"])
        assert f"](../docs/executed/{source.name})" in header, (
            f"{source.name} does not link its executed copy"
        )
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/executed/" in readme


def test_the_staleness_check_fails_after_a_code_cell_is_edited(tmp_path):
    source = SOURCES[2]
    edited = json.loads(source.read_text(encoding="utf-8"))
    first_code = next(c for c in edited["cells"] if c["cell_type"] == "code")
    first_code["source"] = ["print('edited without regenerating the executed copy')\n"]
    edited_path = tmp_path / source.name
    edited_path.write_text(json.dumps(edited), encoding="utf-8")
    assert stale_cells(edited_path, PUBLISHED / source.name) == [0]
    no_figure = json.loads((PUBLISHED / source.name).read_text(encoding="utf-8"))
    for cell in no_figure["cells"]:
        for output in cell.get("outputs", []):
            output.get("data", {}).pop("image/png", None)
    stripped = tmp_path / "stripped.ipynb"
    stripped.write_text(json.dumps(no_figure), encoding="utf-8")
    assert figures_missing(stripped) != []


def _png(width: int, height: int) -> str:
    image = Image.new("RGB", (width, height))
    for x in range(0, width, 7):
        for y in range(0, height, 5):
            image.putpixel((x, y), (x % 256, y % 256, (x * y) % 256))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_publishing_shrinks_figures_and_drops_widget_state():
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"x": 1}}}
    figure = nbformat.v4.new_output(
        "display_data", data={"image/png": _png(1600, 900), "text/plain": "<Figure>"}
    )
    widget = nbformat.v4.new_output(
        "display_data", data={run_notebooks.WIDGET_VIEW: {"model_id": "abc"}, "text/plain": "VBox()"}
    )
    nb.cells = [nbformat.v4.new_code_cell("plt.show()", outputs=[figure, widget])]
    published = run_notebooks.published_copy(nb)
    assert "widgets" not in published.metadata and "widgets" in nb.metadata  # the input is left alone
    shown, widget_out = published.cells[0].outputs
    assert (
        run_notebooks.WIDGET_VIEW not in widget_out["data"] and widget_out["data"]["text/plain"] == "VBox()"
    )
    image = Image.open(io.BytesIO(base64.b64decode(shown["data"]["image/png"])))
    assert image.size == (run_notebooks.MAX_FIGURE_WIDTH, round(900 * run_notebooks.MAX_FIGURE_WIDTH / 1600))
    assert image.mode == "P"  # a 256-colour palette
    small = run_notebooks.shrink_png(_png(300, 200))
    assert Image.open(io.BytesIO(base64.b64decode(small))).size == (300, 200)  # small figures keep their size
