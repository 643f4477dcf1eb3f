"""Checking a learner's answer: :func:`check` prints a confirmation or a hint (see the package docstring)."""

from __future__ import annotations

import copy
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
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
    #: Set for an exercise where the learner writes a function: ``inputs(**context)`` gives the keyword
    #: arguments of two or more calls (other sizes, seeds, edge cases); the learner's function and
    #: ``reference`` are called on each, so code right for one input only is caught.
    inputs: Callable[..., list[dict]] | None = None

    def is_right(self, answer: Any, expected: Any) -> bool:
        """Whether ``answer`` is acceptable; an answer the comparison cannot handle is wrong, never an error."""
        compare = self.compare or close
        try:
            return bool(compare(answer, expected))
        except Exception:  # any answer at all may be typed in a notebook: a wrong one gets the hint
            return False


def close(answer: Any, expected: Any, rtol: float = 1e-3, atol: float = 1e-6) -> bool:
    """Numbers and arrays within tolerance; strings case-insensitively; sequences element-wise.

    Where a number is expected, a size-1 array, tensor or list counts as that number; NaN matches NaN;
    integers of any size are compared exactly (``10**400`` is no error).
    """
    if isinstance(expected, str):
        return isinstance(answer, str) and answer.strip().lower() == expected.strip().lower()
    if isinstance(expected, (bool, np.bool_)):
        answer = _as_scalar(answer)
        return isinstance(answer, (bool, np.bool_)) and bool(answer) == bool(expected)
    if isinstance(expected, (int, float, np.number)):
        answer = _as_scalar(answer)
        return not isinstance(answer, (list, tuple, np.ndarray)) and _close_numbers(
            answer, expected, rtol, atol
        )
    a = np.asarray(_as_scalar(answer) if np.ndim(expected) == 0 else _to_numpy(answer), dtype=float)
    e = np.asarray(expected, dtype=float)
    return a.shape == e.shape and bool(np.allclose(a, e, rtol=rtol, atol=atol, equal_nan=True))


def _to_numpy(value: Any) -> Any:
    """A torch tensor (any device, with or without grad) as a NumPy array; anything else as it is."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return value


def _as_scalar(value: Any) -> Any:
    """A size-1 array, tensor, list or tuple as its one element; anything else as it is."""
    value = _to_numpy(value)
    if isinstance(value, (list, tuple, np.ndarray)) and np.size(value) == 1:
        return np.asarray(value, dtype=object).reshape(-1)[0]
    return value


def _number(value: Any) -> int | float:
    """``value`` as a Python int (exact, however large) or float; TypeError/ValueError for a non-number."""
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return int(value)
    return float(value)


def _close_numbers(answer: Any, expected: Any, rtol: float, atol: float) -> bool:
    """``math.isclose`` in exact arithmetic (no overflow for huge integers); NaN matches NaN."""
    a, e = _number(answer), _number(expected)
    if any(isinstance(v, float) and not math.isfinite(v) for v in (a, e)):
        both_nan = all(isinstance(v, float) and math.isnan(v) for v in (a, e))
        return both_nan or a == e  # int == float is exact in Python: 10**400 != inf
    fa, fe = Fraction(a), Fraction(e)
    return abs(fa - fe) <= max(Fraction(rtol) * max(abs(fa), abs(fe)), Fraction(atol))


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
    if exercise.inputs is not None:
        return _check_function(key, exercise, answer, context)
    expected = exercise.reference(**context)
    if exercise.is_right(answer, expected):
        print(f"[{key}] correct.")
        return True
    kind = type(expected).__name__
    shape = f" of shape {np.shape(expected)}" if np.ndim(expected) else ""
    print(f"[{key}] not quite: expected a {kind}{shape}, got {answer!r:.80}.\n  Hint: {exercise.hint}")
    return False


def _describe(kwargs: dict[str, Any]) -> str:
    """``"gradients: Tensor 2 x 3 x 4 x 4, k: 3"``: the shapes of an input, never the expected answer."""
    parts = []
    for name, value in kwargs.items():
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape):
            parts.append(f"{name}: {type(value).__name__} {' x '.join(str(int(n)) for n in shape)}")
        else:
            parts.append(f"{name}: {value!r:.40}")
    return ", ".join(parts)


def _check_function(key: str, exercise: Exercise, answer: Any, context: dict[str, Any]) -> bool:
    """Call the learner's function and the reference on every input of the exercise; report the first miss."""
    if not callable(answer):
        print(f"[{key}] not quite: expected a function, got {answer!r:.80}.\n  Hint: {exercise.hint}")
        return False
    calls = exercise.inputs(**context)
    for k, kwargs in enumerate(calls, start=1):
        where = f"input {k} of {len(calls)} ({_describe(kwargs)})"
        expected = _to_numpy(exercise.reference(**copy.deepcopy(kwargs)))
        try:  # on a copy: the learner's code cannot change the inputs of the next calls
            got = _to_numpy(answer(**copy.deepcopy(kwargs)))
        except Exception as exc:  # a check reports, it never stops the notebook
            print(
                f"[{key}] your function raised {type(exc).__name__}: {exc!s:.200} on {where}.\n"
                f"  Hint: {exercise.hint}"
            )
            return False
        if got is None:
            print(
                f"[{key}] not attempted yet: your function returned None. {exercise.question}\n"
                f"  Hint: {exercise.hint}"
            )
            return False
        if not exercise.is_right(got, expected):
            if np.ndim(got) and np.shape(got) == np.shape(expected):
                what = f"the right shape {np.shape(got)} but other values"
            else:
                shape = f" of shape {np.shape(expected)}" if np.ndim(expected) else ""
                got_shape = f" of shape {np.shape(got)}" if np.ndim(got) else f" {got!r:.60}"
                what = (
                    f"a {type(got).__name__}{got_shape} where a {type(expected).__name__}{shape} was expected"
                )
            print(f"[{key}] not quite on {where}: your function returned {what}.\n  Hint: {exercise.hint}")
            return False
    print(f"[{key}] correct on all {len(calls)} inputs.")
    return True
