"""Checking a learner's answer: :func:`check` prints a confirmation or a hint (see the package docstring)."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Exercise:
    """One checked exercise.

    ``reference(**context)`` computes the right answer from the notebook's variables that the learner passes
    as keyword arguments (so answers that depend on data are checked against the data in use).
    ``compare(answer, expected)`` returns True when the answer is acceptable (default: :func:`close`).
    """

    question: str
    reference: Callable[..., Any]
    hint: str
    compare: Callable[[Any, Any], bool] = field(default=None)  # type: ignore[assignment]

    def is_right(self, answer: Any, expected: Any) -> bool:
        compare = self.compare or close
        try:
            return bool(compare(answer, expected))
        except (TypeError, ValueError):
            return False


def close(answer: Any, expected: Any, rtol: float = 1e-3, atol: float = 1e-6) -> bool:
    """Numbers and arrays within tolerance; strings case-insensitively; sequences element-wise."""
    if isinstance(expected, str):
        return isinstance(answer, str) and answer.strip().lower() == expected.strip().lower()
    if isinstance(expected, (bool, np.bool_)):
        return isinstance(answer, (bool, np.bool_)) and bool(answer) == bool(expected)
    if isinstance(expected, (int, float, np.number)) and not isinstance(answer, (list, tuple, np.ndarray)):
        a = float(answer)
        return math.isclose(a, float(expected), rel_tol=rtol, abs_tol=atol)
    a = np.asarray(answer, dtype=float)
    e = np.asarray(expected, dtype=float)
    return a.shape == e.shape and bool(np.allclose(a, e, rtol=rtol, atol=atol, equal_nan=True))


def _exercises(notebook: str) -> dict[str, Exercise]:
    try:
        module = importlib.import_module(f"helpers.exercises.ex{notebook}")
    except ModuleNotFoundError as exc:
        raise KeyError(f"no exercises registered for notebook {notebook!r}") from exc
    return module.EXERCISES


def get_exercise(key: str) -> Exercise:
    """The exercise ``key`` (``"NN.name"``, e.g. ``"02.pos_weight"``)."""
    notebook, _, name = key.partition(".")
    exercises = _exercises(notebook)
    if name not in exercises:
        raise KeyError(f"unknown exercise {key!r}; notebook {notebook} has: {', '.join(sorted(exercises))}")
    return exercises[name]


def check(key: str, answer: Any, **context: Any) -> bool:
    """Check a learner's answer to exercise ``key``; print a confirmation or a hint; return whether it is right."""
    exercise = get_exercise(key)
    if answer is None or answer is Ellipsis:
        print(f"[{key}] not attempted yet. {exercise.question}\n  Hint: {exercise.hint}")
        return False
    expected = exercise.reference(**context)
    if exercise.is_right(answer, expected):
        print(f"[{key}] correct.")
        return True
    kind = type(expected).__name__
    shape = f" of shape {np.shape(expected)}" if np.ndim(expected) else ""
    print(f"[{key}] not quite: expected a {kind}{shape}, got {answer!r:.80}.\n  Hint: {exercise.hint}")
    return False
