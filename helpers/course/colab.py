"""The Colab badge and the setup cell of every notebook, generated from ONE place: ``helpers.config.REPO_URL``.

A notebook opened on Colab cannot import ``helpers`` before the package is installed, so each notebook
carries its badge (first cell) and its setup cell (second cell) as text. This module writes that text from
:data:`helpers.config.REPO_URL` and :data:`helpers.config.REPO_BRANCH`; the tests fail when a notebook
disagrees with it. After moving the repository, change ``REPO_URL`` and run::

    python -m helpers.course.colab            # rewrite the badges and setup cells of notebooks/NN_*.ipynb
    python -m helpers.course.colab --check    # only report the notebooks that are out of date (exit 1 if any)

The setup cell installs the course with pip on Colab only, with a constraints file that pins the torch and
torchvision Colab already has, so it never reinstalls, upgrades or downgrades them.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

from helpers import config
from helpers.files import atomic_path

COLAB_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
REPO_ENV = "XAI_COURSE_REPO"  # lets a tester point the setup cell at another copy (tests use git+file://)

_SETUP_TEMPLATE = """\
# Setup: on Google Colab this installs the course package (keeping Colab's own torch); elsewhere it does nothing.
import importlib.util
import os
import subprocess
import sys
import tempfile

COURSE_REPO = os.environ.get("{env}", "{source}")
try:
    import google.colab  # noqa: F401  (only importable on Colab)

    ON_COLAB = True
except ImportError:
    ON_COLAB = False
if ON_COLAB and importlib.util.find_spec("helpers") is None:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for pkg in ("torch", "torchvision"):  # never reinstall or downgrade the torch that Colab ships
        try:
            pins.append(f"{{pkg}}=={{version(pkg)}}")
        except PackageNotFoundError:
            pass
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\\n".join(pins))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "-c", f.name, f"xai-lung-course @ {{COURSE_REPO}}"],
        check=True,
    )
    importlib.invalidate_caches()  # make the freshly installed package importable in this kernel"""

_BADGE_PATTERN = re.compile(
    r"\[!\[Open In Colab\]\([^)]*\)\]\(https://colab\.research\.google\.com/github/[^)]*\)"
)


def _owner_repo(repo_url: str) -> str:
    match = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(?:\.git)?/?", repo_url)
    if not match:
        raise ValueError(
            f"REPO_URL must be https://github.com/<owner>/<repo> (Colab opens GitHub), got {repo_url!r}"
        )
    return match.group(1)


def install_source(repo_url: str | None = None, branch: str | None = None) -> str:
    """What the setup cell gives pip: ``git+<REPO_URL>@<REPO_BRANCH>``."""
    return f"git+{repo_url or config.REPO_URL}@{branch or config.REPO_BRANCH}"


def badge_url(notebook: str, repo_url: str | None = None, branch: str | None = None) -> str:
    """The Colab address of ``notebooks/<notebook>`` in the course repository."""
    owner_repo = _owner_repo(repo_url or config.REPO_URL)
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{branch or config.REPO_BRANCH}/notebooks/{notebook}"


def badge_markdown(notebook: str, repo_url: str | None = None, branch: str | None = None) -> str:
    """The "Open In Colab" badge (Markdown) for ``notebook``."""
    return f"[![Open In Colab]({COLAB_BADGE_IMAGE})]({badge_url(notebook, repo_url, branch)})"


def setup_cell_source(repo_url: str | None = None, branch: str | None = None) -> str:
    """The source of every notebook's setup cell (its second cell)."""
    return _SETUP_TEMPLATE.format(env=REPO_ENV, source=install_source(repo_url, branch))


def sync_notebook(
    path: Path, repo_url: str | None = None, branch: str | None = None, *, write: bool = True
) -> bool:
    """Bring ``path``'s badge (first cell) and setup cell (second cell) in line with the repository address.

    Returns True when something was (or, with ``write=False``, would be) changed. The notebook is rewritten
    atomically; every other cell and all outputs are left as they are. Raises ``ValueError`` naming the file
    when its first cell has no Colab badge or its second cell is not a setup cell.
    """
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    if len(nb.cells) < 2 or nb.cells[0].cell_type != "markdown" or nb.cells[1].cell_type != "code":
        raise ValueError(f"{path}: expected a markdown title cell then the setup code cell")
    header, setup = nb.cells[0], nb.cells[1]
    if not _BADGE_PATTERN.search(header.source):
        raise ValueError(f"{path}: the first cell has no 'Open In Colab' badge to update")
    if "google.colab" not in setup.source:
        raise ValueError(f"{path}: the second cell is not the Colab setup cell")
    new_header = _BADGE_PATTERN.sub(
        lambda _: badge_markdown(path.name, repo_url, branch), header.source, count=1
    )
    new_setup = setup_cell_source(repo_url, branch)
    changed = (new_header, new_setup) != (header.source, setup.source)
    if changed and write:
        header.source, setup.source = new_header, new_setup
        with atomic_path(path) as tmp:
            nbformat.write(nb, tmp)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report out-of-date notebooks; change nothing")
    args = parser.parse_args(argv)
    paths = sorted((config.find_root() / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
    stale = [p for p in paths if sync_notebook(p, write=not args.check)]
    verb = "out of date" if args.check else "updated"
    for p in stale:
        print(f"{verb}: {config.display_path(p)}")
    print(
        f"{len(stale)} of {len(paths)} notebooks {verb} (repository {config.REPO_URL}, branch {config.REPO_BRANCH})"
    )
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
