"""Progress bars for the long steps: one place that decides when a bar is shown.

``tqdm.auto`` draws a widget bar in Jupyter and a text bar elsewhere. A helper called with ``progress=False``
shows none; with ``progress=True`` it shows one unless ``TQDM_DISABLE=1`` is set in the environment (tests,
headless runs), which tqdm reads only when ``disable`` is not passed explicitly. Passing ``disable=not
progress`` directly would override that switch, so helpers call :func:`progress_bar` instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A ``tqdm.auto`` bar over ``iterable`` (or a manual one with ``total=``); none when ``enabled`` is False.

    Keyword arguments go to tqdm (``total``, ``desc``, ``unit``...). With ``enabled=True`` the environment's
    ``TQDM_DISABLE`` still turns the bar off.
    """
    if not enabled:
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)
