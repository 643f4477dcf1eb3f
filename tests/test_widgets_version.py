"""Which ipywidgets the widget tests ran under: ``tests/test_compatibility.py`` runs ``tests/test_widgets_*.py``
again with ipywidgets 7.7.1 first on the path and sets ``XAI_EXPECT_IPYWIDGETS``; this makes that run prove
it really imported the version it meant to test (and not the installed 8.x)."""

from __future__ import annotations

import os

import pytest

ipywidgets = pytest.importorskip("ipywidgets")


def test_ipywidgets_is_the_version_under_test():
    expected = os.environ.get("XAI_EXPECT_IPYWIDGETS")
    assert ipywidgets.__version__ == (expected or ipywidgets.__version__)
    assert ipywidgets.__version__.split(".")[0] in {"7", "8"}, (
        "the widgets are written for ipywidgets 7.7 and 8.x"
    )
