"""Colab and Python compatibility: the widget builders under ipywidgets 7.7 (Colab's) and 8.x, and code that
runs on Python 3.10 to 3.13.

- ipywidgets: the widget tests (``tests/test_widgets_*.py``) run again in a subprocess that imports
  ipywidgets 7.7.1, the release Colab ships, installed with pip into ``build/ipywidgets-7.7.1/`` (git-ignored,
  reused) and put first on ``PYTHONPATH``; the main run covers the installed 8.x. ``XAI_IPYWIDGETS7_DIR``
  points at a ready folder instead (for machines without PyPI).
- Python: only 3.11 is installed here, so the minimum version is checked statically with vermin (which knows
  when each syntax feature, module and function appeared) over every Python file and notebook cell, and an
  AST scan finds any import of a standard-library module that Python 3.12 or 3.13 removed.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IPYWIDGETS_COLAB = "7.7.1"  # what Colab ships (and has for years); its only extra need is ipython_genutils
MIN_PYTHON = (3, 10)
#: Standard-library modules removed in Python 3.12 (PEP 632, 594 early) and 3.13 (PEP 594).
REMOVED_MODULES = {
    "distutils", "imp", "asynchat", "asyncore", "smtpd",  # 3.12
    "aifc", "audioop", "cgi", "cgitb", "chunk", "crypt", "imghdr", "mailcap", "msilib", "nis", "nntplib",
    "ossaudiodev", "pipes", "sndhdr", "spwd", "sunau", "telnetlib", "uu", "xdrlib", "lib2to3",  # 3.13
}  # fmt: skip


def python_sources() -> list[Path]:
    """Every Python file of the course (package, tests, solutions, benchmarks, scripts)."""
    files = [ROOT / "data_download.py", ROOT / "conftest.py"]
    for folder in ("helpers", "tests", "solutions", "benchmarks"):
        files += sorted((ROOT / folder).rglob("*.py"))
    return files


def notebook_code(path: Path) -> str:
    """The notebook's code cells as one Python file (IPython magics and shell lines commented out)."""
    cells = json.loads(path.read_text())["cells"]
    chunks = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        chunks.append(re.sub(r"^(\s*)([%!])", r"\1# \2", source, flags=re.M))
    return "\n\n".join(chunks) + "\n"


@pytest.fixture(scope="module")
def notebook_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("notebook-code")
    files = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb")):
        target = out / f"{path.stem}.py"
        target.write_text(notebook_code(path))
        files.append(target)
    return files


# ----------------------------------------------------------------------------------------------- ipywidgets
@pytest.fixture(scope="module")
def ipywidgets7_dir(unavailable) -> Path:
    """A folder holding ipywidgets 7.7.1 (and ipython_genutils), installed once with pip."""
    explicit = os.environ.get("XAI_IPYWIDGETS7_DIR")
    folder = Path(explicit) if explicit else ROOT / "build" / f"ipywidgets-{IPYWIDGETS_COLAB}"
    marker = folder / f"ipywidgets-{IPYWIDGETS_COLAB}.dist-info"
    if marker.is_dir():
        return folder
    if explicit:
        pytest.fail(f"XAI_IPYWIDGETS7_DIR={explicit} holds no ipywidgets {IPYWIDGETS_COLAB}")
    staging = folder.with_name(folder.name + ".partial")  # installed aside, then renamed: never half there
    subprocess.run(["rm", "-rf", str(staging)], check=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
         "--target", str(staging), f"ipywidgets=={IPYWIDGETS_COLAB}", "ipython_genutils==0.2.0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if result.returncode != 0:
        subprocess.run(["rm", "-rf", str(staging)], check=False)
        unavailable(
            f"could not install ipywidgets {IPYWIDGETS_COLAB} with pip: {result.stderr.strip()[-400:]}"
        )
    subprocess.run(["rm", "-rf", str(folder)], check=True)
    staging.rename(folder)
    return folder


def run_widget_tests(pythonpath: Path | None, expect: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, XAI_EXPECT_IPYWIDGETS=expect)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH", "")]))
    widget_tests = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_widgets_*.py"))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *widget_tests],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_widget_builders_work_under_ipywidgets_7_7_as_on_colab(ipywidgets7_dir: Path) -> None:
    result = run_widget_tests(ipywidgets7_dir, IPYWIDGETS_COLAB)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\b\d+ passed", result.stdout) and "skipped" not in result.stdout, result.stdout[-2000:]


def test_widget_builders_work_under_ipywidgets_8() -> None:
    import ipywidgets

    assert ipywidgets.__version__.startswith("8."), "the installed ipywidgets should be 8.x"
    result = run_widget_tests(None, ipywidgets.__version__)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\b\d+ passed", result.stdout) and "skipped" not in result.stdout, result.stdout[-2000:]


# ------------------------------------------------------------------------------------------------- Python
def run_vermin(files: list[Path]) -> subprocess.CompletedProcess:
    """vermin with the target ``MIN_PYTHON`` or newer, listing only the violations (exit status 1 if any)."""
    script = "import sys; from vermin.main import main; sys.argv[0] = 'vermin'; sys.exit(main())"
    target = f"-t={MIN_PYTHON[0]}.{MIN_PYTHON[1]}-"
    options = [target, "--violations", "--no-tips", "--eval-annotations", "--no-parse-comments"]
    return subprocess.run(
        [sys.executable, "-c", script, *options, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_scans_cover_every_subpackage() -> None:
    """``helpers`` is a tree of subpackages (data, xray, training, ...): each one's modules are scanned."""
    sources = set(python_sources())
    subpackages = [p.parent for p in (ROOT / "helpers").glob("*/__init__.py")]
    assert {"data", "xray", "training", "evaluate", "explain", "breath", "course"} <= {
        p.name for p in subpackages
    }
    for folder in subpackages:
        assert set(folder.glob("*.py")) <= sources, folder.name
    assert ROOT / "helpers" / "training" / "loop.py" in sources


def test_nothing_needs_a_python_newer_than_3_10(notebook_files: list[Path], unavailable) -> None:
    try:
        import vermin  # noqa: F401
    except ImportError:
        unavailable("vermin is not installed (pip install -e '.[test]')")
    result = run_vermin(python_sources() + notebook_files)
    assert result.returncode == 0 and "Target versions not met" not in result.stdout, result.stdout[-4000:]
    assert "error:" not in result.stdout, result.stdout[-4000:]  # a file vermin could not parse


def test_sources_parse_with_the_python_3_10_grammar(notebook_files: list[Path]) -> None:
    """Syntax newer than 3.10 (``except*``, ``type X = ...``, PEP 701 f-strings) fails here."""
    for path in python_sources() + notebook_files:
        try:
            ast.parse(path.read_text(), filename=str(path), feature_version=MIN_PYTHON)
        except SyntaxError as error:
            pytest.fail(
                f"{path.name}:{error.lineno}: not Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} syntax: {error.msg}"
            )


def test_nothing_imports_a_module_that_python_3_13_removed(notebook_files: list[Path]) -> None:
    used = []
    for path in python_sources() + notebook_files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            used += [f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] in REMOVED_MODULES]
    assert not used, used


def test_the_checks_above_can_fail(tmp_path: Path) -> None:
    """The scans find what they look for: a 3.11 module, 3.11 syntax and a removed module."""
    bad = tmp_path / "bad.py"
    bad.write_text("import tomllib\nimport imghdr\ntry:\n    pass\nexcept* ValueError:\n    pass\n")
    with pytest.raises(SyntaxError):
        ast.parse(bad.read_text(), feature_version=MIN_PYTHON)
    imported = {
        a.name for n in ast.walk(ast.parse(bad.read_text())) if isinstance(n, ast.Import) for a in n.names
    }
    assert imported & REMOVED_MODULES == {"imghdr"}
    try:
        import vermin  # noqa: F401
    except ImportError:
        return
    result = run_vermin([bad])
    assert result.returncode != 0 and "'tomllib' module requires !2, 3.11" in result.stdout, result.stdout
