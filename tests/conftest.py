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
