"""The Colab path of every notebook's setup cell, exercised for real.

We cannot run Colab here, so we make `google.colab` importable, point the setup cell at a `git+file://` URL of
a local clone of this repository, and run the cell in a fresh virtual environment that already has the
course's dependencies (as Colab has torch and friends) but not the course package. The cell must install the
package from the clone, and must not reinstall or change torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
import torch

from helpers import config
from helpers.course import colab

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "00_setup.ipynb"


def setup_cell_source(path: Path = NOTEBOOK) -> str:
    nb = json.loads(path.read_text())
    return "".join(nb["cells"][1]["source"])


NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
#: Run in the fresh environment: import a module of a subpackage, print every installed helpers module.
SUBPACKAGE_CHECK = """
import json
from pathlib import Path

import helpers.training.loop
from helpers.breath import dataset
from helpers.xray import store

root = Path(helpers.__file__).parent.parent
assert Path(helpers.training.loop.__file__).parent.parent.parent == root
print(json.dumps(sorted(str(p.relative_to(root)) for p in (root / "helpers").rglob("*.py"))))
"""


def test_every_notebook_has_the_setup_cell_and_badge_generated_from_repo_url():
    cells = {p.name: setup_cell_source(p) for p in NOTEBOOKS}
    expected = colab.setup_cell_source()
    assert f'"git+{config.REPO_URL}@{config.REPO_BRANCH}"' in expected
    assert [n for n, s in cells.items() if s != expected] == [], "run: python -m helpers.course.colab"
    for path in NOTEBOOKS:
        header = "".join(json.loads(path.read_text())["cells"][0]["source"])
        assert colab.badge_markdown(path.name) in header, path.name
    assert not [p for p in NOTEBOOKS if colab.sync_notebook(p, write=False)]


def test_moving_the_repository_rewrites_badge_and_setup_cell_only(tmp_path):
    path = tmp_path / "03_evaluation.ipynb"
    shutil.copy2(ROOT / "notebooks" / path.name, path)
    before = json.loads(path.read_text())
    new_url = "https://github.com/some-school/lung-xai"
    assert colab.sync_notebook(path, new_url, "teaching") is True
    after = json.loads(path.read_text())
    header, setup = "".join(after["cells"][0]["source"]), "".join(after["cells"][1]["source"])
    assert (
        "https://colab.research.google.com/github/some-school/lung-xai/blob/teaching/notebooks/03_evaluation.ipynb"
        in header
    )
    assert "xai-lung-course/xai-lung-course" not in header + setup
    assert '"git+https://github.com/some-school/lung-xai@teaching"' in setup
    assert after["cells"][2:] == before["cells"][2:], "nothing else changes"
    assert colab.sync_notebook(path, new_url, "teaching") is False, "a second run changes nothing"
    assert not list(tmp_path.glob(".*.tmp")), "no half-written file is left"


def test_sync_refuses_a_notebook_without_badge_or_setup_cell(tmp_path):
    path = tmp_path / "99_other.ipynb"
    nb = json.loads((ROOT / "notebooks" / "00_setup.ipynb").read_text())
    nb["cells"][0]["source"] = ["# A notebook without a badge\n"]
    path.write_text(json.dumps(nb))
    with pytest.raises(ValueError, match=r"99_other\.ipynb: the first cell has no 'Open In Colab' badge"):
        colab.sync_notebook(path)
    with pytest.raises(ValueError, match="github.com/<owner>/<repo>"):
        colab.badge_url("00_setup.ipynb", "https://gitlab.com/x/y")


def test_colab_command_checks_and_reports(capsys):
    assert colab.main(["--check"]) == 0
    assert f"0 of {len(NOTEBOOKS)} notebooks out of date" in capsys.readouterr().out


def test_setup_cell_does_nothing_outside_colab():
    env = {k: v for k, v in os.environ.items() if k != "XAI_COURSE_REPO"}
    env["XAI_COURSE_REPO"] = "git+file:///nonexistent/should-not-be-used"
    result = subprocess.run(
        [sys.executable, "-c", setup_cell_source()], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and "pip" not in result.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="git is needed to make a local clone")
def test_setup_cell_installs_from_git_on_colab_and_keeps_torch(tmp_path):
    # A clone of the committed repository, like the one Colab would fetch from GitHub.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)

    # A fresh environment that sees every installed dependency except the course package itself.
    site = Path(sysconfig.get_paths()["purelib"])
    deps = tmp_path / "deps"
    deps.mkdir()
    for entry in site.iterdir():
        if entry.name.startswith(("xai_lung_course", "__editable__", "helpers")) or entry.suffix == ".pth":
            continue
        (deps / entry.name).symlink_to(entry)
    env_dir = tmp_path / "colab-env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    new_site = Path(
        subprocess.check_output(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (new_site / "deps.pth").write_text(str(deps) + "\n")

    # `google.colab` importable, as on Colab.
    fake = tmp_path / "fake"
    (fake / "google" / "colab").mkdir(parents=True)
    (fake / "google" / "__init__.py").write_text("")
    (fake / "google" / "colab" / "__init__.py").write_text("")

    env = dict(os.environ)
    env.update(PYTHONPATH=str(fake), XAI_COURSE_REPO=f"git+file://{clone}", PIP_DISABLE_PIP_VERSION_CHECK="1")
    before = subprocess.run([str(py), "-c", "import helpers"], env=env, capture_output=True, cwd=tmp_path)
    assert before.returncode != 0, "the fresh environment must not have the course package yet"

    result = subprocess.run(
        [str(py), "-c", setup_cell_source()],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    log = result.stdout + result.stderr
    assert "Installing collected packages: torch" not in log and " torch-" not in log

    check = subprocess.run(
        [str(py), "-c", "import helpers, torch; print(helpers.__file__); print(torch.__version__)"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stderr
    helpers_file, torch_version = check.stdout.split()
    assert Path(helpers_file).resolve().is_relative_to(env_dir.resolve()), helpers_file
    assert torch_version == torch.__version__

    # A regular (not editable) install holds the subpackages too (setuptools packages.find, helpers.*):
    # every module of the clone is there, and one from a subpackage imports.
    modules = subprocess.run(
        [str(py), "-c", SUBPACKAGE_CHECK], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert modules.returncode == 0, modules.stderr
    installed = json.loads(modules.stdout)
    in_clone = sorted(str(p.relative_to(clone)) for p in (clone / "helpers").rglob("*.py"))
    assert installed == in_clone
    some = {"helpers/training/loop.py", "helpers/data/datasets.py", "helpers/course/colab.py"}
    assert some <= set(installed)

    # A second run finds the package and does nothing.
    again = subprocess.run(
        [str(py), "-c", setup_cell_source()], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert again.returncode == 0 and again.stdout == ""
