"""Every checked exercise has a worked solution that passes its check, and a wrong answer gets a hint."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from helpers.exercises import checks

ROOT = Path(__file__).resolve().parents[1]
SOLUTION_FILES = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.py"))


def load_solutions(path: Path):
    spec = importlib.util.spec_from_file_location(f"solutions_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cases():
    for path in SOLUTION_FILES:
        notebook = path.name[:2]
        for name in exercises._exercises(notebook):
            yield pytest.param(path, notebook, name, id=f"{notebook}.{name}")


def test_every_notebook_with_exercises_has_a_solutions_file():
    registered = {p.stem[2:] for p in (ROOT / "helpers" / "exercises").glob("ex[0-9][0-9].py")}
    with_solutions = {p.name[:2] for p in SOLUTION_FILES}
    assert registered <= with_solutions, f"exercises without solutions: {sorted(registered - with_solutions)}"


@pytest.mark.parametrize("path, notebook, name", list(cases()))
def test_solution_passes_and_wrong_answer_gets_hint(path, notebook, name, capsys):
    module = load_solutions(path)
    assert hasattr(module, name), f"{path.name} has no solution for exercise {notebook}.{name}"
    context = module.example_context(name) if hasattr(module, "example_context") else {}
    answer = getattr(module, name)(**context)
    assert checks.check(f"{notebook}.{name}", answer, **context) is True
    assert "correct" in capsys.readouterr().out

    assert checks.check(f"{notebook}.{name}", "certainly not the answer", **context) is False
    out = capsys.readouterr().out
    assert "not quite" in out and "Hint:" in out


def test_unattempted_exercise_is_reported_not_raised(capsys):
    assert checks.check("00.store_bytes", None) is False
    assert "not attempted yet" in capsys.readouterr().out


def test_unknown_exercise_names_the_known_ones():
    with pytest.raises(KeyError, match="store_bytes"):
        checks.check("00.no_such_thing", 1)


def test_close_compares_numbers_strings_and_arrays():
    assert checks.close(1.0005, 1.0)
    assert not checks.close(1.1, 1.0)
    assert checks.close(" CPU", "cpu")
    assert checks.close([1, 2, 3], (1.0, 2.0, 3.0))
    assert not checks.close([1, 2], [1, 2, 3])
    assert not checks.close(1, True)
