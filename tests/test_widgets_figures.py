"""helpers.widgets.figures: the figure-in-an-Output helper that every explorer redraws through."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

w = pytest.importorskip("ipywidgets")  # before helpers.widgets, which imports it

from helpers.widgets.figures import figure_output  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_refresh_draws_a_new_figure_each_time_and_closes_it(capsys):
    drawn = []

    def draw():
        fig, ax = plt.subplots()
        ax.set_title(f"figure {len(drawn)}")
        drawn.append(fig)
        return fig

    out = figure_output(draw)
    assert isinstance(out, w.Output) and drawn == []  # nothing is drawn until the first refresh
    out.refresh()
    out.refresh()
    assert [fig.axes[0].get_title() for fig in drawn] == ["figure 0", "figure 1"]
    assert not any(plt.fignum_exists(fig.number) for fig in drawn)  # closed: no pile-up of open figures
    assert plt.get_fignums() == []
    capsys.readouterr()  # outside a kernel, display() prints the figures' repr
