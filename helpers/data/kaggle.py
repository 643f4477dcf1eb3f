"""Download a Kaggle competition or dataset, with clear messages for missing credentials and rules.

Used by data_download.py, taught in notebooks/00_setup.ipynb (through :mod:`helpers.data.download`).

Credentials come from ``KAGGLE_API_TOKEN`` (or the older ``KAGGLE_USERNAME`` + ``KAGGLE_KEY``), a file in
``~/.kaggle``, or Colab secrets (:func:`load_colab_kaggle_secrets` copies them into the environment).
:func:`kaggle_download` uses kagglehub when installed, else the ``kaggle`` command; its failures are mapped
by :func:`kaggle_error` to a one-line :class:`DownloadError` (HTTP 401: how to set credentials; HTTP 403
on a competition: accept its rules first). A zip from the ``kaggle`` command that does not open as an
archive is moved aside (:func:`helpers.data.http_download.move_aside`), never reused.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
from pathlib import Path

from helpers.data.archives import archive_problem, move_children
from helpers.data.http_download import CorruptArchiveError, DownloadError, Log, move_aside

RSNA_RULES_URL = "https://www.kaggle.com/competitions/rsna-pneumonia-detection-challenge/rules"
CREDENTIALS_HELP = (
    "create an API token at https://www.kaggle.com/settings and set KAGGLE_API_TOKEN (environment variable "
    "or Colab secret) or save it in ~/.kaggle/access_token; older keys: KAGGLE_USERNAME + KAGGLE_KEY or "
    "~/.kaggle/kaggle.json"
)


def load_colab_kaggle_secrets() -> list[str]:
    """Copy ``KAGGLE_API_TOKEN`` / ``KAGGLE_USERNAME`` / ``KAGGLE_KEY`` from Colab secrets into ``os.environ``.

    Only names not already set are read (via ``google.colab.userdata.get``); returns the names copied.
    Outside Colab, or without notebook access to the secret, nothing happens.
    """
    try:
        from google.colab import userdata  # type: ignore[import-not-found]
    except ImportError:
        return []
    loaded = []
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        if os.environ.get(name):
            continue
        try:
            value = userdata.get(name)
        except Exception:  # SecretNotFoundError, NotebookAccessError, ...
            continue
        if value:
            os.environ[name] = str(value).strip()
            loaded.append(name)
    return loaded


def kaggle_credentials() -> str | None:
    """Where Kaggle credentials would come from (env var or file), or ``None`` when there are none."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    folder = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    for name in ("access_token", "kaggle.json"):
        if (folder / name).is_file():
            return str(folder / name)
    return "Kaggle notebook" if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") else None


def _http_status(exc: BaseException | None) -> int | None:
    while exc is not None:
        for value in (
            getattr(getattr(exc, "response", None), "status_code", None),
            getattr(exc, "code", None),
        ):
            if isinstance(value, int):
                return value
        exc = exc.__cause__ or exc.__context__
    return None


def kaggle_error(exc: BaseException | str, kind: str, handle: str) -> DownloadError:
    """Turn a kagglehub exception or ``kaggle`` CLI output into a one-line :class:`DownloadError`.

    401 (or missing credentials) -> how to set credentials; 403 on a competition -> accept the rules.
    """
    text = str(exc)
    status = None if isinstance(exc, str) else _http_status(exc)
    if status is None and (found := re.search(r"\b(401|403)\b", text)):
        status = int(found.group(1))
    if status == 403 and kind == "competition":
        return DownloadError(
            f"Kaggle refused the download of {handle} (HTTP 403): accept the competition rules first at "
            f"{RSNA_RULES_URL if 'rsna' in handle else f'https://www.kaggle.com/competitions/{handle}/rules'}"
            ", signed in as the account of your API token, then run again"
        )
    name = "" if isinstance(exc, str) else type(exc).__name__
    if (
        status in (401, 403)
        or name in ("CredentialError", "UnauthenticatedError")
        or re.search(r"credential|kaggle\.json|unauthori[sz]ed", text, re.IGNORECASE)
    ):
        return DownloadError(f"no valid Kaggle credentials (HTTP {status or 401}): {CREDENTIALS_HELP}")
    if isinstance(exc, OSError) or "ConnectionError" in name:
        return DownloadError(
            f"no network: cannot reach kaggle.com ({text.splitlines()[0] if text else name})"
        )
    first = next((line.strip() for line in text.splitlines() if line.strip()), name)
    return DownloadError(f"Kaggle download of {handle} failed: {first}")


def kaggle_download(kind: str, handle: str, staging: Path, downloads: Path, log: Log = print) -> Path | None:
    """Fetch a Kaggle competition or dataset: with kagglehub into ``staging`` (returns ``None``), else with the
    ``kaggle`` CLI as a zip in ``downloads`` (returns the zip). Errors become :class:`DownloadError`."""
    try:
        import kagglehub  # type: ignore[import-not-found]
    except ImportError:
        kagglehub = None
    if kagglehub is not None:
        get = kagglehub.competition_download if kind == "competition" else kagglehub.dataset_download
        try:
            takes_output_dir = "output_dir" in inspect.signature(get).parameters
        except (TypeError, ValueError):
            takes_output_dir = False
        try:
            path = Path(get(handle, output_dir=str(staging)) if takes_output_dir else get(handle))
        except Exception as exc:
            raise kaggle_error(exc, kind, handle) from None
        if path.resolve() != staging.resolve():  # an older kagglehub (no output_dir) used its cache
            log(f"moving {handle} from the kagglehub cache ({path}) into place")
            move_children(path, staging)
        return None
    exe = shutil.which("kaggle")
    if exe is None:
        raise DownloadError(
            "neither kagglehub nor the kaggle command is installed: pip install kagglehub (Colab has it), "
            "or copy the archive from someone who has it and use --archive FILE"
        )
    downloads.mkdir(parents=True, exist_ok=True)
    archive = downloads / f"{handle.split('/')[-1]}.zip"
    _drop_bad_zip(archive, log)
    flag = ["competitions", "download", "-c"] if kind == "competition" else ["datasets", "download", "-d"]
    proc = subprocess.Popen(
        [exe, *flag, handle, "-p", str(downloads)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in proc.stdout or []:
        log(line.rstrip())
        lines.append(line)
    if proc.wait() != 0 or not archive.is_file():
        raise kaggle_error("".join(lines[-20:]) or f"kaggle exited with code {proc.returncode}", kind, handle)
    if problem := archive_problem(archive):
        aside = move_aside(archive)
        raise CorruptArchiveError(
            f"{archive.name} from the kaggle command is {problem}: moved aside to {aside}, so the next run "
            "downloads it again"
        )
    return archive


def _drop_bad_zip(archive: Path, log: Log) -> None:
    """Move aside a zip that an earlier run left and that does not open, so ``kaggle`` fetches it anew."""
    if archive.is_file() and (problem := archive_problem(archive)):
        aside = move_aside(archive)
        log(
            f"{archive.name} in {archive.parent} is {problem}, so it is not used: moved aside to {aside.name}"
        )
