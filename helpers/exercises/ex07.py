"""Reference answers for the exercises of notebooks/07_kermany_pediatric.ipynb."""

from __future__ import annotations

from fractions import Fraction

from helpers.exercises.checks import Exercise


def _smallest_set(percent: float, decimals: int) -> int:
    """The smallest n for which some whole k gives 100 k / n within half a unit of the last decimal of
    ``percent`` (the GRIM test), in exact arithmetic so that no rounding error decides."""
    target, half = Fraction(str(percent)), Fraction(1, 2 * 10**decimals)
    n = 1
    while True:
        k = round(target * n / 100)  # the nearest whole count; no other k can be closer
        if abs(Fraction(100 * k, n) - target) <= half:
            return n
        n += 1


def _reported_percentages() -> list[dict]:
    """Seed 001's accuracies and a few whose answer is easy to see (16 images for 93.75 %, 3 for 33.3 %);
    none lies exactly half a unit from a possible value, so float and exact arithmetic agree."""
    return [
        {"percent": 93.75, "decimals": 2},
        {"percent": 33.3, "decimals": 1},
        {"percent": 85.07, "decimals": 2},
        {"percent": 98.2, "decimals": 1},
        {"percent": 50.0, "decimals": 1},
        {"percent": 96.78, "decimals": 2},
    ]


def _always_pneumonia(n_normal: int, n_pneumonia: int) -> float:
    return n_pneumonia / (n_normal + n_pneumonia)


EXERCISES = {
    "smallest_set": Exercise(
        question="Write smallest_set(percent, decimals): the smallest number of images n on which some count k "
        "of right answers gives 100 k / n that rounds to `percent` at `decimals` decimals.",
        reference=_smallest_set,
        hint="Try n = 1, 2, 3, ...: for each n the best k is round(percent * n / 100); stop at the first n where "
        "abs(100 * k / n - percent) <= 0.5 * 10 ** -decimals. Rounding k down (int) misses half the cases.",
        inputs=_reported_percentages,
    ),
    "always_pneumonia": Exercise(
        question="What accuracy does a model reach that calls every image of the real test folder pneumonia?",
        reference=_always_pneumonia,
        hint="It is right on every PNEUMONIA image and wrong on every NORMAL one: n_pneumonia / (n_normal + "
        "n_pneumonia), a number between 0 and 1.",
    ),
}
