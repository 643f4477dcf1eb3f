"""Fixtures shared by every unit test."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """Unit tests use tiny tensors: one torch thread is faster than two contending ones on a busy 2-core
    machine (the same choice smoke mode makes in helpers.config.set_cpu_threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


#: Set by ``.ci/run``: in CI a check whose tool is missing (Chromium, ipywidgets 7.7) fails instead of skipping.
CI_ENV = "XAI_COURSE_CI"


@pytest.fixture(scope="session")
def unavailable():
    """``unavailable(reason)``: skip the test with ``reason`` shown, or fail it when running in CI."""
    import os

    def handle(reason: str) -> None:
        if os.environ.get(CI_ENV):
            pytest.fail(f"{reason} ({CI_ENV} is set: this check must run here)")
        pytest.skip(reason)

    return handle


@pytest.fixture
def no_plt_show(monkeypatch):
    """Plotting helpers return figures and never call ``plt.show()``; every figure is closed afterwards."""
    import matplotlib.pyplot as plt

    def refuse_show(*args, **kwargs):
        raise AssertionError("a plotting helper called plt.show(); it must return the figure instead")

    monkeypatch.setattr(plt, "show", refuse_show)
    yield
    plt.close("all")
