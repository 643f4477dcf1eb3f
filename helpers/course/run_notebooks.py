"""Run the whole course headless: execute every notebook in order and keep the executed copies.

    python -m helpers.course.run_notebooks                 # the mode XAI_COURSE_MODE sets, else auto (cpu or full)
    python -m helpers.course.run_notebooks --mode smoke    # the quick CI-sized run
    python -m helpers.course.run_notebooks --only 03 05    # some notebooks only
    python -m helpers.course.run_notebooks --publish       # no GPU: auto = cpu; also refresh docs/executed/

Executed notebooks (``.ipynb`` with outputs, and ``.html``) go to ``build/<mode>/`` (git-ignored), with
``timings.csv``: how long each notebook took. The source notebooks are not modified. Instructors use the
timings to plan a workshop (see ``docs/INSTRUCTOR_GUIDE.md``).

For maintainers: ``--publish`` (a cpu-mode run, on a machine without CUDA) writes the executed copies, figures included (shrunk to palette PNGs of
at most ``MAX_FIGURE_WIDTH`` pixels, widget state dropped), to ``docs/executed/``, where GitHub and nbviewer show
them to readers without a kernel; ``tests/test_executed_copies.py`` fails when they are stale.
``--store-checked-outputs`` (smoke mode only) writes back into the source notebooks the text
outputs of the cells marked ``# NBVAL_CHECK_OUTPUT`` and strips every other output. nbval compares a checked
cell's new output against the stored one, so a checked cell without a stored output would check nothing.
"""

from __future__ import annotations

import argparse
import base64
import copy
import io
import os
import sys
import time
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient
from nbconvert import HTMLExporter
from PIL import Image

from helpers.config import AUTO, MODE_ENV, MODES, find_root, get_mode
from helpers.files import atomic_path, write_atomic


def notebook_paths(root: Path, only: list[str] | None = None) -> list[Path]:
    """The course notebooks ``notebooks/NN_*.ipynb`` in order; ``only`` keeps those whose name starts with one of them."""
    paths = sorted((root / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
    if only:
        paths = [p for p in paths if p.name.split("_")[0] in only]
    return paths


def run_notebook(path: Path, out_dir: Path, timeout: int = 3600) -> float:
    """Execute one notebook in its own folder; write the executed copy and its HTML to ``out_dir``; return seconds."""

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        seconds = time.perf_counter() - start
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / path.name) as tmp:
            nbformat.write(nb, tmp)
        write_atomic(out_dir / f"{path.stem}.html", HTMLExporter().from_notebook_node(nb)[0])
    return seconds


PUBLISHED_DIR = Path("docs") / "executed"
MAX_FIGURE_WIDTH = 720
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def shrink_png(data: str, max_width: int = MAX_FIGURE_WIDTH) -> str:
    """A base64 PNG at most ``max_width`` pixels wide, as a 256-colour palette PNG (base64 again)."""
    image = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)), Image.LANCZOS)
    out = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, "PNG", optimize=True)
    return base64.b64encode(out.getvalue()).decode("ascii")


def published_copy(executed):
    """The executed notebook as readers get it: figures shrunk (:func:`shrink_png`), widget views and the
    widget state dropped (a static page cannot run them; each explorer has a static figure before it)."""
    nb = copy.deepcopy(executed)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            data = output.get("data", {})
            data.pop(WIDGET_VIEW, None)
            if "image/png" in data:
                data["image/png"] = shrink_png(data["image/png"])
        cell.outputs = [o for o in cell.outputs if "data" not in o or o["data"]]
    return nb


def publish(paths: list[Path], out_dir: Path, root: Path) -> list[Path]:
    """Write the published copies of the executed ``paths`` (found in ``out_dir``) to ``docs/executed/``."""
    written = []
    for path in paths:
        executed = nbformat.read(out_dir / path.name, as_version=4)
        dest = root / PUBLISHED_DIR / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            nbformat.write(published_copy(executed), tmp)
        written.append(dest)
    return written


CHECK_MARK = "# NBVAL_CHECK_OUTPUT"


def is_checked(cell) -> bool:
    """Whether nbval compares this cell's output (its source starts with ``# NBVAL_CHECK_OUTPUT``)."""
    return cell.get("cell_type") == "code" and "".join(cell.get("source", "")).lstrip().startswith(CHECK_MARK)


def checked_outputs_only(executed, source):
    """``source`` with the text outputs of its checked cells taken from ``executed``, all other outputs removed.

    Only stdout streams and ``text/plain`` results are kept (figures and stderr are never compared).
    """

    out = nbformat.from_dict(source)
    if len(executed.cells) != len(out.cells):
        raise ValueError("the executed notebook has a different number of cells than its source")
    count = 0
    for cell, done in zip(out.cells, executed.cells, strict=True):
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        if not is_checked(cell):
            continue
        count += 1
        kept = []
        for o in done.outputs:
            if o.output_type == "stream" and o.name == "stdout":
                kept.append(nbformat.v4.new_output("stream", name="stdout", text=o.text))
            elif o.output_type == "execute_result" and "text/plain" in o.data:
                kept.append(
                    nbformat.v4.new_output(
                        "execute_result", data={"text/plain": o.data["text/plain"]}, execution_count=count
                    )
                )
        cell.outputs, cell.execution_count = kept, count
    return out


def store_checked_outputs(path: Path, out_dir: Path) -> None:
    """Execute ``path`` (smoke mode) and write its checked cells' outputs back into it (atomically)."""

    run_notebook(path, out_dir)
    executed = nbformat.read(out_dir / path.name, as_version=4)
    source = nbformat.read(path, as_version=4)
    updated = checked_outputs_only(executed, source)
    missing = [i for i, c in enumerate(updated.cells) if is_checked(c) and not c.outputs]
    if missing:
        raise ValueError(f"{path.name}: checked cells {missing} printed nothing; nbval would compare nothing")
    with atomic_path(path) as tmp:
        nbformat.write(updated, tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mode",
        choices=(AUTO, *MODES),
        default=None,
        help=f"sets {MODE_ENV} for the kernels (default: as set, else auto: full with CUDA, cpu without)",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="maintainers: write the executed copies with their figures to docs/executed/ (cpu mode)",
    )
    parser.add_argument("--only", nargs="*", default=None, help="notebook number prefixes, e.g. 01 03")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: build/<mode>)")
    parser.add_argument(
        "--store-checked-outputs",
        action="store_true",
        help="maintainers: store the outputs of '# NBVAL_CHECK_OUTPUT' cells in the source notebooks (smoke mode)",
    )
    args = parser.parse_args(argv)
    if args.store_checked_outputs:
        if args.mode not in (None, "smoke"):
            parser.error("--store-checked-outputs runs in smoke mode, the mode pytest checks")
        args.mode = "smoke"
    if args.mode:
        os.environ[MODE_ENV] = args.mode  # the kernels inherit this process's environment
    mode = get_mode()  # each kernel resolves the same mode (and reports why) by itself
    if args.publish and (mode != "cpu" or torch.cuda.is_available()):
        parser.error(
            f"--publish needs a cpu-mode run on a machine without a GPU (this one: {mode} mode, CUDA "
            f"{'available' if torch.cuda.is_available() else 'absent'}): the copies readers see are a CPU run's"
        )
    root = find_root()
    out_dir = args.out or root / "build" / mode
    paths = notebook_paths(root, args.only)
    if not paths:
        print(f"no notebooks found in {root / 'notebooks'}", file=sys.stderr)
        return 2

    rows: list[tuple[str, float, str]] = []
    failed = False
    for path in paths:
        print(f"running {path.name} ({mode}) ...", flush=True)
        try:
            start = time.perf_counter()
            if args.store_checked_outputs:
                store_checked_outputs(path, out_dir)
            else:
                run_notebook(path, out_dir)
            rows.append((path.name, time.perf_counter() - start, "ok"))
        except Exception as exc:  # report and go on: one broken notebook should not hide the others
            failed = True
            rows.append((path.name, float("nan"), f"FAILED: {type(exc).__name__}"))
            print(
                f"  {path.name} failed: {str(exc).splitlines()[-1] if str(exc) else type(exc).__name__}",
                file=sys.stderr,
            )
        print(f"  {rows[-1][2]} in {rows[-1][1]:.1f} s", flush=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    table = "notebook,seconds,status\n" + "".join(f"{n},{s:.1f},{st}\n" for n, s, st in rows)
    write_atomic(out_dir / "timings.csv", table)
    width = max(len(n) for n, _, _ in rows)
    print(f"\n{'notebook'.ljust(width)}  seconds  status")
    for n, s, st in rows:
        print(f"{n.ljust(width)}  {s:7.1f}  {st}")
    print(f"total: {sum(s for _, s, st in rows if st == 'ok'):.1f} s; executed copies and HTML in {out_dir}")
    if args.publish and not failed:
        written = publish(paths, out_dir, root)
        size = sum(p.stat().st_size for p in written) / 1e6
        print(f"published {len(written)} executed copies to {root / PUBLISHED_DIR} ({size:.1f} MB)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
