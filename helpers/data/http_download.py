"""Download one file over HTTP(S): resumable, checked for free space, verified by size and checksum.

Used by data_download.py, taught in notebooks/00_setup.ipynb (through :mod:`helpers.data.download`).

:func:`download_file` streams ``url`` to ``<dest>.part`` with a progress bar and renames it to ``dest``
only once its size and checksums are right. An interrupted transfer keeps the ``.part`` and the next run
resumes it with an HTTP ``Range`` request (a server that ignores the request gets the file rewritten from
the start). Free disk space is checked before writing; network, HTTP, disk-full and checksum failures all
become a :class:`DownloadError` with a one-line message. :class:`DownloadError` and the ``Log`` callback
type live here so that :mod:`helpers.data.archives`, :mod:`helpers.data.kaggle` and :mod:`helpers.data.download` can
share them without an import cycle.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import shutil
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from tqdm.auto import tqdm

Log = Callable[[str], None]


class DownloadError(RuntimeError, ValueError):
    """A download, check or extraction failed; the message is one line that says what to do."""


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def ensure_free_space(folder: Path, needed: int, what: str) -> None:
    """Raise :class:`DownloadError` ("disk full") when ``folder``'s disk has less than ``needed`` bytes free."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DownloadError(f"disk full: {what} needs {_gb(needed)} but only {_gb(free)} is free in {folder}")


def _network_error(url: str, exc: BaseException) -> DownloadError:
    host = urlsplit(url).hostname or url
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ssl.SSLCertVerificationError):
        return DownloadError(f"the TLS certificate of {host} could not be verified ({reason.verify_message})")
    return DownloadError(
        f"no network: cannot reach {host} ({reason}); check the connection, or use --archive FILE with a "
        "local copy or --url with a mirror"
    )


def _open(url: str, offset: int, verify_tls: bool, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": "xai-lung-course-downloader", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    context = ssl.create_default_context()
    if not verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return urllib.request.urlopen(
        urllib.request.Request(url, headers=headers), timeout=timeout, context=context
    )


def file_digests(path: Path, chunk_size: int = 1 << 22) -> dict[str, str]:
    """MD5 and SHA-256 of a file, read once in chunks: ``{"md5": hex, "sha256": hex}``."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            md5.update(chunk)
            sha.update(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def verify_file(
    path: Path, name: str, *, md5: str | None = None, sha256: str | None = None, size: int | None = None
) -> None:
    """Check a file's size and checksums where known; a mismatch raises :class:`DownloadError` naming ``name``."""
    got_size = path.stat().st_size
    if size is not None and got_size != size:
        raise DownloadError(f"size mismatch for {name}: expected {size} bytes, got {got_size}")
    if md5 or sha256:
        got = file_digests(path)
        for algo, want in (("md5", md5), ("sha256", sha256)):
            if want and got[algo] != want.lower():
                raise DownloadError(
                    f"checksum mismatch for {name}: expected {algo} {want.lower()}, got {got[algo]}"
                )


def download_file(
    url: str,
    dest: Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    verify_tls: bool = True,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
    log: Log = print,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a previous ``.part``; returns ``dest``.

    The file is renamed to ``dest`` only when complete and verified; a checksum mismatch deletes the
    ``.part``; an interrupted transfer keeps it for the next run. An existing ``dest`` is returned as is.
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for _attempt in range(2):
        offset = part.stat().st_size if part.is_file() else 0
        try:
            response = _open(url, offset, verify_tls, timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # nothing left to send: complete, or not a prefix of this file
                if exc.headers.get("Content-Range", "") == f"bytes */{offset}":
                    break
                part.unlink()
                continue
            raise DownloadError(f"HTTP {exc.code} {exc.reason} for {dest.name} from {url}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise _network_error(url, exc) from None
        with response:
            _stream(response, part, offset, dest.name, size, chunk_size, log)
        break
    try:
        verify_file(part, dest.name, md5=md5, sha256=sha256, size=size)
    except DownloadError:
        part.unlink()
        raise
    os.replace(part, dest)
    return dest


def _stream(
    response: http.client.HTTPResponse,
    part: Path,
    offset: int,
    name: str,
    size: int | None,
    chunk_size: int,
    log: Log,
) -> None:
    """Append (HTTP 206) or rewrite (HTTP 200) ``part`` from an open response, with a progress bar."""
    if offset and response.status == 206:
        content_range = response.headers.get("Content-Range", "")
        if not content_range.startswith(f"bytes {offset}-"):
            raise DownloadError(
                f"bad resume of {name}: asked for bytes {offset}-, server sent {content_range!r}"
            )
        log(f"resuming {name} at {_gb(offset)}")
    elif offset:
        log(f"the server ignored the resume request: downloading {name} again from the start")
        offset = 0
    length = response.headers.get("Content-Length")
    remaining = int(length) if length is not None else None
    if remaining is not None:
        ensure_free_space(part.parent, remaining, f"downloading {name}")
    total = offset + remaining if remaining is not None else size
    received = 0
    try:
        with (
            open(part, "ab" if offset else "wb") as fh,
            tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=name) as bar,
        ):
            while chunk := response.read(chunk_size):
                fh.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DownloadError(
                f"disk full while writing {part}: free some space and run again to resume"
            ) from None
        raise DownloadError(
            f"download of {name} interrupted ({exc}): run the same command again to resume"
        ) from None
    if remaining is not None and received < remaining:
        raise DownloadError(
            f"download of {name} interrupted after {offset + received} of {offset + remaining} bytes: "
            "run the same command again to resume"
        )
