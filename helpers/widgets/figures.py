"""The one figure-in-a-widget helper that every explorer uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as w
import matplotlib.pyplot as plt
from IPython.display import display


def figure_output(draw: Callable[[], Any]):
    """An ``ipywidgets.Output`` showing the matplotlib figure that ``draw()`` returns; call ``.refresh()`` to redraw."""

    out = w.Output()

    def refresh() -> None:
        out.clear_output(wait=True)
        with out:
            fig = draw()
            display(fig)
            plt.close(fig)

    out.refresh = refresh  # type: ignore[attr-defined]
    return out
