"""helpers.progress: progress=False hides the bar; progress=True shows it unless TQDM_DISABLE=1 is set."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers.progress import progress_bar

SCRIPT = """
from helpers.progress import progress_bar
shown = progress_bar(range(3), total=3, desc="on")
hidden = progress_bar(range(3), enabled=False)
print(shown.disable, hidden.disable)
shown.close(); hidden.close()
"""


def _disabled_flags(tqdm_disable: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    if tqdm_disable is not None:
        env["TQDM_DISABLE"] = tqdm_disable
    # tqdm reads TQDM_* when it is imported, so each setting needs a fresh interpreter
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_progress_false_always_hides_the_bar():
    bar = progress_bar(range(5), enabled=False)
    assert bar.disable and list(bar) == [0, 1, 2, 3, 4]


def test_progress_true_shows_the_bar_unless_the_environment_turns_bars_off():
    assert _disabled_flags(None) == "False True"
    assert _disabled_flags("1") == "True True"  # what the tests and headless runs set
