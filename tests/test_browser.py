"""Every notebook, run the way a learner runs it: JupyterLab in a real (headless) Chromium, Run > Run All Cells.

nbval proves the cells run in a kernel; this proves the course works in a browser: the notebook opens, the
kernel starts, no cell shows an error, every widget renders (no "Error displaying widget"), and the
explorers respond to a learner's hand: dragging the threshold slider of notebook 03 changes the sensitivity
and specificity it shows, switching layer and method in the Grad-CAM explorer of 05 changes the picture,
dragging the cut-off of the breath-sound explorer of 06 changes the bands kept, and the augmentation sliders
of 01 change the augmented film. A failing test saves a screenshot of the page under ``build/browser/``.

Needs Chromium (Debian's ``chromium``; ``.ci/run`` installs it with apt-get when missing) and Playwright
for Python (a test dependency). Where Chromium cannot be had the tests are skipped with that reason, except
when ``XAI_COURSE_CI`` is set (by ``.ci/run``), where a missing browser is a failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from jupyterlab_browser import (
    CHROMIUM_FLAGS,
    JS_NOTEBOOK_READY,
    JS_RUN_ALL,
    JS_SHUTDOWN_KERNEL,
    LabServer,
    find_chromium,
    wait_for_run_all,
)

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
SCREENSHOTS = REPO / "build" / "browser"
RUN_TIMEOUT_S = 900.0  # a whole notebook; smoke mode takes well under a minute once the caches exist
CHANGE_TIMEOUT_MS = 60_000  # one widget round trip (kernel recomputes and redraws)


@pytest.fixture(scope="module")
def chromium(unavailable) -> str:
    path = find_chromium()
    if path is None:
        unavailable("no Chromium found: install Debian's `chromium` package or set XAI_CHROMIUM")
    return path


@pytest.fixture(scope="module")
def browser(chromium: str, unavailable) -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, chromium: str) -> Iterator[LabServer]:
    """JupyterLab serving a copy of the notebooks (its autosave must not touch the sources)."""
    root = tmp_path_factory.mktemp("lab-notebooks")
    for name in NOTEBOOKS:
        shutil.copy2(REPO / "notebooks" / name, root / name)
    env = dict(os.environ, XAI_COURSE_MODE="smoke")
    with LabServer(root, tmp_path_factory.mktemp("lab-home"), env) as server:
        yield server


@contextlib.contextmanager
def screenshot_on_failure(page, name: str, lab: LabServer) -> Iterator[None]:
    """Save a full-page screenshot (and the server log's tail in the message) when the body fails."""
    try:
        yield
    except BaseException as error:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / f"{Path(name).stem}-failure.png"
        with contextlib.suppress(Exception):
            page.screenshot(path=str(shot), full_page=True)
        raise AssertionError(
            f"{name}: {error}\nscreenshot: {shot}\njupyter lab log (tail):\n{lab.log_tail(1500)}"
        ) from error


# --------------------------------------------------------------------------------------------- page helpers
def image_src(explorer) -> str:
    """The figure the explorer shows now (its ``Output`` holds one PNG ``<img>``)."""
    image = explorer.locator("img").last
    image.wait_for(state="visible", timeout=CHANGE_TIMEOUT_MS)
    return image.get_attribute("src") or ""


def wait_for(page, what: str, script: str, arg: object) -> None:
    """``page.wait_for_function`` whose timeout says what did not happen."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(script, arg=arg, timeout=CHANGE_TIMEOUT_MS)
    except PlaywrightTimeout:
        raise AssertionError(f"{what} within {CHANGE_TIMEOUT_MS / 1000:.0f} s") from None


def wait_for_new_image(page, explorer_class: str, old_src: str) -> str:
    """Wait until the explorer's figure differs from ``old_src``; the new ``src``."""
    wait_for(
        page,
        f"the figure of .{explorer_class} was not redrawn",
        """([cls, old]) => {
             const imgs = document.querySelectorAll('.' + cls + ' img');
             return imgs.length > 0 && imgs[imgs.length - 1].getAttribute('src') !== old;
           }""",
        [explorer_class, old_src],
    )
    return image_src(page.locator(f".{explorer_class}"))


def wait_for_text_change(page, selector: str, old: str) -> str:
    """Wait until the text of the element ``selector`` differs from ``old``; the new text."""
    wait_for(
        page,
        f"{selector} still reads {old!r}",
        """([sel, old]) => { const e = document.querySelector(sel); return !!e && e.textContent !== old; }""",
        [selector, old],
    )
    return page.locator(selector).first.text_content() or ""


def slider(explorer, label: str):
    """The ``FloatSlider`` labelled ``label`` inside ``explorer`` (ipywidgets 8 or 7 markup)."""
    return explorer.locator(".widget-slider", has=explorer.page.locator("label", has_text=label)).first


def drag_slider(page, control, fraction: float) -> None:
    """Drag the slider's handle with the mouse to ``fraction`` (0-1) of its track, as a learner would."""
    track = control.locator(".noUi-target, .ui-slider").first  # ipywidgets 8 (noUiSlider) / 7 (jQuery UI)
    handle = control.locator(".noUi-handle, .ui-slider-handle").first
    h, t = _settled_boxes(page, handle, track)
    assert h and t, "the slider has no visible handle or track"
    y = h["y"] + h["height"] / 2
    page.mouse.move(h["x"] + h["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(t["x"] + t["width"] * fraction, y, steps=10)
    page.mouse.up()


def _settled_boxes(page, handle, track, tries: int = 20) -> tuple[dict | None, dict | None]:
    """The handle's and the track's boxes once the page stops moving. JupyterLab renders a long notebook's
    cells lazily: scrolling to the slider renders the cells around it, whose heights then shift the slider, so a
    box measured at once can point at another cell (a long notebook 06 clicked into a code cell that way)."""
    boxes = None
    for _ in range(tries):
        handle.scroll_into_view_if_needed()
        page.wait_for_timeout(250)
        now = (handle.bounding_box(), track.bounding_box())
        if now == boxes:
            return now
        boxes = now
    return boxes


def readout_value(control) -> float:
    """The number a slider shows next to it."""
    return float(control.locator(".widget-readout").first.text_content().strip())


def numbers(page, container: str, attribute: str = "data-metric") -> dict[str, str]:
    """``{name: text}`` of the ``[data-metric=name]`` spans inside ``container``."""
    spans = page.locator(f"{container} [{attribute}]")
    return {spans.nth(i).get_attribute(attribute): spans.nth(i).text_content() for i in range(spans.count())}


# ------------------------------------------------------------------------------------- per-notebook checks
def check_augment_explorer(page) -> None:
    """Notebook 01: dragging the rotation slider changes the read-out's angle and the augmented film."""
    from helpers.widgets.augment import EXPLORER_CLASS, READOUT_CLASS

    explorer = page.locator(f".{EXPLORER_CLASS}")
    explorer.scroll_into_view_if_needed()
    before_src = image_src(explorer)
    readout = f".{EXPLORER_CLASS} .{READOUT_CLASS} [data-param='angle_deg']"
    before = page.locator(readout).first.text_content()
    rotation = slider(explorer, "rotation")
    drag_slider(page, rotation, 0.9)
    after = wait_for_text_change(page, readout, before)
    wait_for_new_image(page, EXPLORER_CLASS, before_src)
    angle = float(re.sub(r"[^0-9.+-]", "", after))
    assert angle > 0 and abs(angle - readout_value(rotation)) < 1, (after, readout_value(rotation))


def check_threshold_explorer(page) -> None:
    """Notebook 03: moving the threshold slider changes the threshold, sensitivity/specificity and figure."""
    from helpers.widgets.threshold import EXPLORER_CLASS, READOUT_CLASS

    container = f".{EXPLORER_CLASS} div.{READOUT_CLASS}"
    explorer = page.locator(f".{EXPLORER_CLASS}")
    explorer.scroll_into_view_if_needed()
    before, before_src = numbers(page, container), image_src(explorer)
    assert {"threshold", "sensitivity", "specificity"} <= set(before), before
    control = slider(explorer, "threshold")
    drag_slider(page, control, 0.15)
    wait_for_text_change(page, f"{container} [data-metric='threshold']", before["threshold"])
    wait_for_new_image(page, EXPLORER_CLASS, before_src)
    after = numbers(page, container)
    assert abs(float(after["threshold"]) - readout_value(control)) < 0.006, (after, readout_value(control))
    assert float(after["threshold"]) < float(before["threshold"])
    moved = (after["sensitivity"], after["specificity"]) != (before["sensitivity"], before["specificity"])
    assert moved, f"sensitivity/specificity did not change: before {before}, after {after}"
    # A lower threshold calls more films positive: sensitivity cannot fall, specificity cannot rise.
    assert float(after["sensitivity"]) >= float(before["sensitivity"]), (before, after)
    assert float(after["specificity"]) <= float(before["specificity"]), (before, after)


def check_gradcam_explorer(page) -> None:
    """Notebook 05: another layer, then another method, each gives a new picture and summary."""
    from helpers.widgets.gradcam import EXPLORER_CLASS

    explorer = page.locator(f".{EXPLORER_CLASS}")
    explorer.scroll_into_view_if_needed()
    src = image_src(explorer)
    info = f".{EXPLORER_CLASS} .widget-html-content"
    texts = explorer.locator(".widget-html-content")
    summary = next(t for t in texts.all_text_contents() if "P(pneumonia)" in t)
    layer = explorer.locator(".widget-dropdown", has=page.locator("label", has_text="layer")).locator(
        "select"
    )
    current = layer.input_value()
    other = next(o for o in layer.locator("option").all_text_contents() if o.strip() != current)
    layer.select_option(label=other.strip())
    src = wait_for_new_image(page, EXPLORER_CLASS, src)
    wait_for(
        page,
        f"the summary does not name layer {other.strip()}",
        """([sel, layer]) => [...document.querySelectorAll(sel)].some(e => e.textContent.includes(layer + ' ('))""",
        [info, other.strip()],
    )
    assert summary not in explorer.locator(".widget-html-content").all_text_contents()

    explorer.get_by_role("button", name="Guided Grad-CAM", exact=True).click()
    wait_for_new_image(page, EXPLORER_CLASS, src)
    wait_for(
        page,
        "the summary does not name Guided Grad-CAM",
        """(sel) => [...document.querySelectorAll(sel)].some(e => e.textContent.includes('Guided Grad-CAM of'))""",
        info,
    )


def check_breath_explorer(page) -> None:
    """Notebook 06: dragging the cut-off slider to its low end changes the cut-off, the bands kept and figure."""
    from helpers.widgets.breath import EXPLORER_CLASS

    explorer = page.locator(f".{EXPLORER_CLASS}")
    explorer.scroll_into_view_if_needed()
    container = f".{EXPLORER_CLASS} .widget-html-content"
    before, before_src = numbers(page, container), image_src(explorer)
    assert {"cutoff", "kept"} <= set(before), before
    control = slider(explorer, "cut-off")
    drag_slider(page, control, 0.0)
    wait_for_text_change(page, f"{container} [data-metric='cutoff']", before["cutoff"])
    wait_for_new_image(page, EXPLORER_CLASS, before_src)
    after = numbers(page, container)
    assert float(after["cutoff"]) == readout_value(control) < float(before["cutoff"]), (before, after)
    assert int(after["kept"]) < int(before["kept"]), (before, after)


INTERACTIONS: dict[str, Callable] = {
    "01_data_preparation.ipynb": check_augment_explorer,
    "03_evaluation.ipynb": check_threshold_explorer,
    "05_gradcam_guided_backprop.ipynb": check_gradcam_explorer,
    "06_breath_sounds.ipynb": check_breath_explorer,
}


def test_every_notebook_with_an_explorer_is_checked_here():
    """A new explorer (a ``helpers.widgets`` builder called in a notebook) must get a browser check."""
    import json

    calling = {
        name
        for name in NOTEBOOKS
        if re.search(r"_explorer\(", json.dumps(json.loads((REPO / "notebooks" / name).read_text())["cells"]))
    }
    assert calling == set(INTERACTIONS), (calling, set(INTERACTIONS))


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_runs_in_jupyterlab(notebook: str, browser, lab: LabServer) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    console_errors: list[str] = []
    page.on("pageerror", lambda error: console_errors.append(str(error)))
    try:
        with screenshot_on_failure(page, notebook, lab):
            page.goto(lab.lab_url(notebook), wait_until="domcontentloaded", timeout=120_000)
            page.wait_for_function(JS_NOTEBOOK_READY, arg=notebook, timeout=180_000, polling=500)
            page.evaluate(JS_RUN_ALL)
            state = wait_for_run_all(page, RUN_TIMEOUT_S)
            assert not state.get("timed_out"), f"not finished after {RUN_TIMEOUT_S:.0f} s: {state}"
            failed = [c for c in state["cells"] if c["errors"]]
            assert not failed, "cells show errors:\n" + "\n".join(
                f"  cell {c['index']}: {c['errors']} in {c['source']!r}" for c in failed
            )
            assert all(c["count"] is not None for c in state["cells"]), state
            shown = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first.text_content() or ""
            for broken in (
                "Error displaying widget",
                "Loading widget...",
                "Traceback (most recent call last)",
            ):
                assert broken not in shown, f"the notebook shows {broken!r}"
            if notebook in INTERACTIONS:
                INTERACTIONS[notebook](page)
            assert not console_errors, f"JavaScript errors in the page: {console_errors}"
    finally:
        with contextlib.suppress(Exception):
            page.evaluate(JS_SHUTDOWN_KERNEL)
        context.close()
