"""Run the whole course headless: execute every notebook in order and keep the executed copies.

    python -m helpers.run_notebooks                 # full mode (real data if downloaded, else synthetic)
    python -m helpers.run_notebooks --mode smoke    # the quick CI-sized run
    python -m helpers.run_notebooks --only 03 05    # some notebooks only

Executed notebooks (``.ipynb`` with outputs, and ``.html``) go to ``build/<mode>/`` (git-ignored), with
``timings.csv``: how long each notebook took. The source notebooks are never modified. Instructors use the
timings to plan a workshop (see the README's instructor guide).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from helpers.config import MODE_ENV, MODES, find_root


def notebook_paths(root: Path, only: list[str] | None = None) -> list[Path]:
    """The course notebooks ``notebooks/NN_*.ipynb`` in order; ``only`` keeps those whose name starts with one of them."""
    paths = sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if only:
        paths = [p for p in paths if any(p.name.startswith(o) for o in only)]
    return paths


def run_notebook(path: Path, out_dir: Path, timeout: int = 3600) -> float:
    """Execute one notebook in its own folder; write the executed copy and its HTML to ``out_dir``; return seconds."""
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

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
        tmp = out_dir / f".{path.name}.tmp"
        nbformat.write(nb, tmp)
        os.replace(tmp, out_dir / path.name)
        html, _ = HTMLExporter().from_notebook_node(nb)
        tmp_html = out_dir / f".{path.stem}.html.tmp"
        tmp_html.write_text(html, encoding="utf-8")
        os.replace(tmp_html, out_dir / f"{path.stem}.html")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help=f"sets {MODE_ENV} for the kernels (default: as set, else full)",
    )
    parser.add_argument("--only", nargs="*", default=None, help="notebook number prefixes, e.g. 01 03")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: build/<mode>)")
    args = parser.parse_args(argv)

    if args.mode:
        os.environ[MODE_ENV] = args.mode  # the kernels inherit this process's environment
    mode = os.environ.get(MODE_ENV, "full")
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
            seconds = run_notebook(path, out_dir)
            rows.append((path.name, seconds, "ok"))
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
    tmp = out_dir / ".timings.csv.tmp"
    tmp.write_text(table, encoding="utf-8")
    os.replace(tmp, out_dir / "timings.csv")
    width = max(len(n) for n, _, _ in rows)
    print(f"\n{'notebook'.ljust(width)}  seconds  status")
    for n, s, st in rows:
        print(f"{n.ljust(width)}  {s:7.1f}  {st}")
    print(f"total: {sum(s for _, s, st in rows if st == 'ok'):.1f} s; executed copies and HTML in {out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
