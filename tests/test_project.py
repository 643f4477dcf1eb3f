"""The course as a whole: layout, one list of dependencies, README commands, notebook conventions."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from helpers import config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_layout_of_the_design_doc():
    for name in ("README.md", "environment.yml", "pyproject.toml", "data_download.py", ".ci/run"):
        assert (ROOT / name).is_file(), name
    for name in ("helpers", "notebooks", "tests", "benchmarks", "solutions"):
        assert (ROOT / name).is_dir(), name


def test_environment_yml_installs_this_repo_with_extras_and_lists_no_other_dependency():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pips = [d for d in deps if isinstance(d, dict)]
    assert len(pips) == 1 and list(pips[0]) == ["pip"]
    assert pips[0]["pip"] == ["-e .[test]"], (
        "the pip section must only install this repository with its extras"
    )
    assert "pip" in conda
    # conda supplies only the interpreter and pip: pyproject.toml stays the one list of dependencies
    assert all(re.match(r"^(python(=[\d.]+)?|pip)$", d) for d in conda), conda
    assert PYPROJECT["project"]["optional-dependencies"]["test"]


def test_pyproject_has_no_exact_pins_and_lower_bounds_on_torch():
    deps = PYPROJECT["project"]["dependencies"] + sum(
        PYPROJECT["project"]["optional-dependencies"].values(), []
    )
    assert not [d for d in deps if "==" in d], "no exact pins: Colab ships its own versions"
    torch_req = [d for d in deps if re.match(r"^torch\b", d) and not d.startswith("torchvision")]
    assert torch_req and all(">=" in d and "<" not in d for d in torch_req)
    assert PYPROJECT["project"]["requires-python"] == ">=3.10"
    assert (
        PYPROJECT["tool"]["setuptools"]["packages"] == ["helpers"]
        or "packages" in PYPROJECT["tool"]["setuptools"]
    )


def test_pytest_runs_notebooks_with_nbval_in_the_current_environment():
    opts = PYPROJECT["tool"]["pytest"]["ini_options"]
    assert "--nbval-lax" in opts["addopts"] and "--nbval-current-env" in opts["addopts"]
    assert "notebooks" in opts["testpaths"] and "tests" in opts["testpaths"]
    conftest = (ROOT / "conftest.py").read_text()
    assert f'"{config.MODE_ENV}", "smoke"' in conftest


def test_readme_gives_the_commands_that_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert 'pip install -e ".[test]"' in readme
    assert "jupyter lab" in readme
    assert re.search(r"^pytest$", readme, re.M), "the README's test command is plain `pytest`"
    assert "python -m helpers.course.run_notebooks" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^pytest\s*$", ci, re.M)


def test_gitignore_keeps_data_cache_and_build_out():
    ignored = (ROOT / ".gitignore").read_text().split()
    for entry in ("/data/", "/cache/", "/build/"):
        assert entry in ignored


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_follows_the_course_conventions(path):
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    first = "".join(cells[0]["source"])
    owner_repo = config.REPO_URL.split("github.com/")[1]
    badge = f"https://colab.research.google.com/github/{owner_repo}/blob/{config.REPO_BRANCH}/notebooks/{path.name}"
    assert cells[0]["cell_type"] == "markdown" and first.startswith("# ")
    assert badge in first, (
        "Colab badge must point at this notebook in the repository of helpers.config.REPO_URL"
    )
    assert "Learning objectives" in first
    setup = "".join(cells[1]["source"])
    assert cells[1]["cell_type"] == "code" and "google.colab" in setup
    assert f"git+{config.REPO_URL}@{config.REPO_BRANCH}" in setup, (
        "setup cell must install from helpers.config.REPO_URL"
    )
    assert "torch==" not in setup and "--upgrade" not in setup, (
        "setup cell must never reinstall Colab's torch"
    )
    report = "".join(cells[2]["source"])
    assert "config.describe(" in report, "third cell prints the one-line configuration report"
    text = "\n".join("".join(c["source"]) for c in cells)
    assert re.search(r"^## .*Summary", text, re.M), "a Summary section"
    assert re.search(r"^## .*Exercises?", text, re.M), "an Exercises section"
    assert 'check("' in text, "exercises are checked"
    assert "# NBVAL_CHECK_OUTPUT" in text, "nbval checks the printed values of deterministic cells"
    assert not re.search(r"['\"]/(home|root|work|tmp|content)/", text), "relative paths only"
    outputs = sum(len(json.dumps(c.get("outputs", []))) for c in cells if c["cell_type"] == "code")
    assert outputs < 100_000, "notebooks are stored without bulky outputs"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


#: Control characters that a JSON escape typed by hand produces: "\t" in "$\\mu_\\text$" written as "\text" is a
#: TAB followed by "ext", which Markdown renders as "$\mu_<TAB>ext$". Newlines are the only ones allowed.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_markdown_holds_no_control_characters(path):
    for index, cell in enumerate(json.loads(path.read_text())["cells"]):
        text = "".join(cell["source"])
        found = CONTROL_CHARACTERS.search(text) if cell["cell_type"] == "markdown" else None
        assert found is None, (
            f"{path.name} cell {index}: control character {found.group()!r} in "
            f"{text[max(0, found.start() - 30) : found.end() + 30]!r} (a backslash escape typed into the JSON?)"
        )


def test_the_control_character_rule_catches_a_tab_in_latex():
    assert CONTROL_CHARACTERS.search("$\\mu_\text{batch}$")  # "\t" became a TAB
    assert not CONTROL_CHARACTERS.search("$\\mu_\\text{batch}$\nnext line")


def test_notebooks_are_numbered_in_order():
    """00, 01, ... without gaps; an optional notebook after NN is NNb (05b reads after 05, before 06)."""
    prefixes = [p.name.split("_")[0] for p in NOTEBOOKS]
    assert all(re.fullmatch(r"\d\d[b-z]?", prefix) for prefix in prefixes), prefixes
    numbers = sorted({int(prefix[:2]) for prefix in prefixes})
    assert numbers == list(range(len(numbers)))
    assert all(prefix[:2] in prefixes for prefix in prefixes), "a lettered notebook follows its numbered one"
    assert prefixes == sorted(prefixes)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_checked_cells_store_the_output_nbval_compares_and_nothing_else_is_stored(path):
    """nbval compares a checked cell's output with the stored one: a checked cell with no stored output checks
    nothing. Refresh with `python -m helpers.course.run_notebooks --store-checked-outputs`."""
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        checked = "".join(cell["source"]).lstrip().startswith("# NBVAL_CHECK_OUTPUT")
        if checked:
            assert cell["outputs"], f"cell {i} is checked but stores no output"
            kinds = {o["output_type"] for o in cell["outputs"]}
            assert kinds <= {"stream", "execute_result"}, f"cell {i} stores {kinds}"
            assert all(o.get("name", "stdout") == "stdout" for o in cell["outputs"]), (
                f"cell {i} stores stderr"
            )
        else:
            assert not cell["outputs"], f"cell {i} is not checked but stores outputs"


GUIDE = ROOT / "docs" / "INSTRUCTOR_GUIDE.md"


def test_instructor_guide_has_schedules_measured_timings_checklist_and_fixes():
    text = GUIDE.read_text()
    assert "(docs/INSTRUCTOR_GUIDE.md)" in (ROOT / "README.md").read_text(), "the README links the guide"
    for heading in ("### One day", "### Two days", "## Pre-workshop checklist", "## Common failures"):
        assert heading in text, heading
    # every notebook has a measured smoke time (seconds) in the timings table, and nothing is left to fill in
    for path in NOTEBOOKS:
        row = re.search(
            rf"^\| {re.escape(path.stem)}(?: \(optional\))? \| ([\d.]+) s \| ([\d.]+) s \|$", text, re.M
        )
        assert row, f"no measured timings for {path.stem} in the guide"
        # the first table is cpu mode's, and every notebook's report cell quotes the same figures
        first, later = config.EXPECTED_SECONDS["cpu"][path.name.split("_")[0]]
        assert (float(row.group(1)), float(row.group(2))) == (first, later), path.stem
    assert not re.search(r"TIMINGS_TABLE|BROWSER_TOTAL|TODO|TBD", text)
    assert "2 CPU cores" in text and "not measured" in text.lower(), (
        "the machine is named; GPU times are honest"
    )
    for failure in ("401", "403", "out of memory", "usable_cpus"):
        assert failure in text, failure


def test_commands_in_the_instructor_guide_exist():
    """Every `python -m helpers.X` module and every `data_download.py` option the guide gives is real."""
    import importlib
    import subprocess
    import sys

    text = GUIDE.read_text()
    modules = set(re.findall(r"python -m (helpers(?:\.\w+)+)", text))
    assert {"helpers.course.prepare", "helpers.course.run_notebooks", "helpers.course.colab"} <= modules
    for module in modules:
        assert hasattr(importlib.import_module(module), "main"), module
    help_text = subprocess.run(
        [sys.executable, str(ROOT / "data_download.py"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in set(re.findall(r"data_download\.py[^\n`]*?(--[a-z-]+)", text)):
        assert option in help_text, option
    assert "--archive" in text and "--check" in text
    prepare_help = subprocess.run(
        [sys.executable, "-m", "helpers.course.prepare", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in set(re.findall(r"helpers\.course\.prepare[^\n`]*?(--[a-z-]+)", text)):
        assert option in prepare_help, option
