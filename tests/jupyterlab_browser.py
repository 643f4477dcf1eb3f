"""Test support: a JupyterLab server on 127.0.0.1 and a headless Chromium that drives it like a learner.

Used by ``tests/test_browser.py``. The server runs on a copy of the notebooks (JupyterLab autosaves, and the
source notebooks must keep only the outputs nbval checks), with its config, runtime, settings and workspace
folders in a temporary folder, so it neither reads nor writes the user's Jupyter set-up. The kernel
inherits the server's environment: smoke mode, and none of the test-only switches (``MPLBACKEND``,
``TQDM_DISABLE``), so figures and progress bars render as a learner sees them.

Chromium is the system's (Debian's ``chromium``), launched by Playwright through ``executable_path``:
Playwright's own browser download is not available offline. The flags keep it from calling home.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM_ENV = "XAI_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = [
    "--no-sandbox",  # needed as root (CI containers)
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
]
#: Environment variables that the test suite sets for itself but that a learner's kernel does not have.
TEST_ONLY_ENV = ("MPLBACKEND", "TQDM_DISABLE", "PYTEST_CURRENT_TEST")


def find_chromium() -> str | None:
    """The Chromium executable: ``$XAI_CHROMIUM``, else the first of :data:`CHROMIUM_NAMES` on the PATH."""
    explicit = os.environ.get(CHROMIUM_ENV)
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """``jupyter lab`` on 127.0.0.1 with a random token, serving ``root``; a context manager that stops it
    (and its kernels) on exit, whatever happened."""

    def __init__(self, root: Path, scratch: Path, env: dict[str, str], *, start_timeout: float = 120.0):
        self.root, self.scratch, self.start_timeout = Path(root), Path(scratch), start_timeout
        self.token = secrets.token_hex(16)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.scratch / "jupyterlab.log"
        self.env = {k: v for k, v in env.items() if k not in TEST_ONLY_ENV}
        for name in ("config", "data", "runtime", "settings", "workspaces"):
            (self.scratch / name).mkdir(parents=True, exist_ok=True)
        self.env.update(
            JUPYTER_CONFIG_DIR=str(self.scratch / "config"),
            JUPYTER_RUNTIME_DIR=str(self.scratch / "runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(self.scratch / "settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(self.scratch / "workspaces"),
            JUPYTER_PLATFORM_DIRS="1",
        )
        # Answer JupyterLab's "fetch news?" question up front: never (no toast, no request).
        notification = (
            self.scratch
            / "settings"
            / "@jupyterlab"
            / "apputils-extension"
            / "notification.jupyterlab-settings"
        )
        notification.parent.mkdir(parents=True, exist_ok=True)
        notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "jupyter", "lab", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
            # The test drives the app through window.jupyterapp (commands, models), not through pixel hunting.
            "--LabApp.expose_app_in_browser=True",
            # No internet: no news feed, no update check, no PyPI extension manager.
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ] + (["--ServerApp.allow_root=True"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])  # fmt: skip

    def __enter__(self) -> LabServer:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command(), cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.api("GET", "/api/status")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"jupyter lab did not answer within {self.start_timeout:.0f} s:\n{self.log_tail()}"
        )

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api(self, method: str, path: str) -> dict:
        """One call to the server's REST API (with the token); the decoded JSON answer ({} when empty)."""
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = answer.read()
        return json.loads(body) if body else {}

    def lab_url(self, notebook: str) -> str:
        """The URL that opens ``notebook`` in a fresh workspace (``reset``: nothing reopened from before)."""
        return f"{self.url}/lab/tree/{notebook}?reset&token={self.token}"

    def stop(self) -> None:
        """Shut the server down through its API (which stops the kernels), then make sure it is gone."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.api("POST", "/api/shutdown")
            self.process.wait(timeout=20)
        except (urllib.error.URLError, OSError, subprocess.TimeoutExpired):
            pass
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


# JavaScript run in the page. ``jupyterapp`` is the JupyterLab application (expose_app_in_browser).
JS_NOTEBOOK_READY = """(name) => {
  const app = window.jupyterapp;
  const panel = app && app.shell && app.shell.currentWidget;
  if (!panel || !panel.context || !panel.context.path.endsWith(name) || !panel.content) return false;
  const kernel = panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle'
    && panel.content.widgets.length > 0;
}"""

JS_RUN_ALL = """() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); return true; }"""

JS_CELL_STATES = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = [];
  panel.content.widgets.forEach((cell, index) => {
    if (cell.model.type !== 'code') return;
    const outputs = cell.model.outputs.toJSON();
    const prompt = cell.node.querySelector('.jp-InputPrompt');
    cells.push({
      index: index,
      count: cell.model.executionCount,
      running: cell.model.executionState === 'running' || (!!prompt && prompt.textContent.includes('*')),
      errors: outputs.filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue),
      source: cell.model.sharedModel.getSource().slice(0, 120),
    });
  });
  return {kernel: kernel ? kernel.status : 'none', cells: cells};
}"""

JS_SHUTDOWN_KERNEL = """async () => {
  const panel = window.jupyterapp.shell.currentWidget;
  if (panel && panel.sessionContext) { await panel.sessionContext.shutdown(); }
  return true;
}"""


def wait_for_run_all(page, timeout: float) -> dict:
    """Poll the notebook until every code cell has run (or one failed and the run stopped); the last state.

    Done means: the kernel is idle, no cell is running or queued, and every code cell has an execution
    count, or some cell has an error output (JupyterLab stops a run-all at the first error).
    """
    deadline = time.monotonic() + timeout
    idle_polls = 0
    state: dict = {}
    while time.monotonic() < deadline:
        state = page.evaluate(JS_CELL_STATES)
        cells = state["cells"]
        settled = state["kernel"] == "idle" and not any(c["running"] for c in cells)
        finished = all(c["count"] is not None for c in cells) or any(c["errors"] for c in cells)
        idle_polls = idle_polls + 1 if settled and finished else 0
        if idle_polls >= 2:  # seen settled twice, a second apart: not a gap between two cells
            return state
        page.wait_for_timeout(1000)
    state["timed_out"] = True
    return state
