"""Download one file over HTTP(S): resumable, checked for free space, verified by size and checksum.

Used by data_download.py, taught in notebooks/00_setup.ipynb (through :mod:`helpers.data.download`).

:func:`download_file` streams ``url`` to ``<dest>.part`` with a progress bar and renames it to ``dest``
only once its size and checksums are right and it passes ``check`` (e.g. "is it a readable archive?").
An interrupted transfer keeps the ``.part`` and the next run resumes it with an HTTP ``Range`` request (a
server that ignores the request gets the file rewritten from the start, and so does a ``206`` answer for
other bytes than those asked for). A bad download is never used: a size or checksum mismatch deletes it, a
failed ``check`` moves it aside to ``<file>.bad-<timestamp>`` (:func:`move_aside`), also for a file that
an earlier run left in place; one that fails after a resume is first downloaded once more from scratch
(the ``.part`` may have been the start of another version of the file). Free disk space is checked before
writing (:func:`helpers.files.require_free_space`); network, HTTP, disk-full and checksum failures all
become a :class:`DownloadError` with a one-line message that names the file. :class:`DownloadError` and
the ``Log`` callback type live here so that :mod:`helpers.data.archives`, :mod:`helpers.data.kaggle` and
:mod:`helpers.data.download` can share them without an import cycle.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from helpers.files import DiskFullError, human_bytes, require_free_space

Log = Callable[[str], None]
#: What is wrong with a finished file (e.g. "not a zip or tar archive"), or ``None`` when it is usable.
Check = Callable[[Path], "str | None"]

HTML_HINT = (
    " (the server answered with an HTML page, Content-Type text/html, not the file: an error, login or "
    "'too many requests' page, or a link to a web page instead of to the file itself)"
)


class DownloadError(RuntimeError, ValueError):
    """A download, check or extraction failed; the message is one line that says what to do."""


class CorruptArchiveError(DownloadError):
    """An archive that cannot be read or does not hold the data set: a downloaded copy must not be reused."""


def ensure_free_space(folder: Path, needed: int, what: str) -> None:
    """Raise :class:`DownloadError` ("disk full") when ``folder``'s disk has less than ``needed`` bytes free.

    The check and its message are :func:`helpers.files.require_free_space`'s (sizes as "4 MB", "1.2 GB").
    """
    try:
        require_free_space(folder, needed, what)
    except DiskFullError as exc:
        raise DownloadError(exc.strerror or str(exc)) from exc


def move_aside(path: Path, name: str | None = None) -> Path:
    """Rename a bad download to ``<name>.bad-<timestamp>`` beside it (kept for a look, never used again)."""
    aside = path.with_name(f"{name or path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    return aside


@contextlib.contextmanager
def moved_aside_if_corrupt(path: Path | None) -> Iterator[None]:
    """Inside the block, a :class:`CorruptArchiveError` moves ``path`` (a download, not a user's own file)
    aside, so that the next run downloads it again instead of failing on the same file; ``None``: nothing."""
    try:
        yield
    except CorruptArchiveError as exc:
        if path is None or not path.is_file():
            raise
        aside = move_aside(path)
        raise CorruptArchiveError(
            f"{exc}; moved {path.name} aside to {aside}, so the next run downloads it again"
        ) from exc


def _network_error(url: str, name: str, exc: BaseException) -> DownloadError:
    host = urlsplit(url).hostname or url
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ssl.SSLCertVerificationError):
        return DownloadError(
            f"the TLS certificate of {host} could not be verified ({reason.verify_message}) for {name}"
        )
    return DownloadError(
        f"no network: cannot reach {host} for {name} ({reason}); check the connection, or use --archive FILE "
        "with a local copy or --url with a mirror"
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


@dataclass(frozen=True)
class _Download:
    """One call of :func:`download_file`: where from, where to, and how the result is checked."""

    url: str
    dest: Path
    md5: str | None
    sha256: str | None
    size: int | None
    check: Check | None
    verify_tls: bool
    timeout: float
    chunk_size: int
    log: Log

    @property
    def name(self) -> str:
        return self.dest.name

    @property
    def part(self) -> Path:
        return self.dest.with_name(self.dest.name + ".part")


def download_file(
    url: str,
    dest: Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    check: Check | None = None,
    verify_tls: bool = True,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
    log: Log = print,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a previous ``.part``; returns ``dest``.

    The file is renamed to ``dest`` only when its size and checksums (where known) and ``check`` pass. A
    size or checksum mismatch deletes it, a failed ``check`` moves it aside (:func:`move_aside`); a file
    that failed after a resume is first downloaded once more from the start. An interrupted transfer keeps
    the ``.part`` for the next run. An existing ``dest`` is reused when it passes ``check`` (its checksums
    were verified when it was made); one that fails is moved aside and downloaded again.
    """
    job = _Download(url, Path(dest), md5, sha256, size, check, verify_tls, timeout, chunk_size, log)
    if job.dest.is_file() and _reusable(job):
        return job.dest
    job.dest.parent.mkdir(parents=True, exist_ok=True)
    resumed, content_type = _transfer(job)
    error = _problem(job, content_type)
    if error is not None and resumed:
        log(
            f"{error}, after resuming {job.part.name}: it was not the start of this file, so it is deleted "
            f"and {job.name} downloaded from scratch"
        )
        job.part.unlink()
        _, content_type = _transfer(job)
        error = _problem(job, content_type)
    if error is not None:
        raise _discard(job, error)
    os.replace(job.part, job.dest)
    return job.dest


def _reusable(job: _Download) -> bool:
    """True when the ``dest`` left by an earlier run passes ``check``; one that fails is moved aside."""
    problem = job.check(job.dest) if job.check else None
    if problem is None:
        job.log(f"using {job.dest}, downloaded earlier")
        return True
    aside = move_aside(job.dest)
    job.log(
        f"{job.name} in {job.dest.parent} is {problem}, so it is not used: moved aside to {aside.name}; "
        f"downloading it again from {job.url}"
    )
    return False


def _problem(job: _Download, content_type: str) -> DownloadError | None:
    """What is wrong with the finished ``.part`` (size, checksums, ``check``), or ``None`` when it is good."""
    hint = HTML_HINT if "html" in content_type.lower() else ""
    try:
        verify_file(job.part, job.name, md5=job.md5, sha256=job.sha256, size=job.size)
    except DownloadError as exc:
        return DownloadError(f"{exc}{hint}")
    problem = job.check(job.part) if job.check else None
    if problem is None:
        return None
    return CorruptArchiveError(f"{job.name} downloaded from {job.url} is {problem}{hint}")


def _discard(job: _Download, error: DownloadError) -> DownloadError:
    """Delete a bad ``.part`` (size or checksum wrong) or move it aside for a look (``check`` failed)."""
    if not isinstance(error, CorruptArchiveError):
        job.part.unlink()
        return error
    aside = move_aside(job.part, job.name)
    return CorruptArchiveError(
        f"{error}; moved aside to {aside}, so the next run downloads it again (use another --url if this "
        "one keeps failing)"
    )


def _transfer(job: _Download) -> tuple[bool, str]:
    """Fill ``job.part`` from the URL, resuming what is there; returns (resumed, answer's Content-Type)."""
    offset = job.part.stat().st_size if job.part.is_file() else 0
    try:
        response = _open(job.url, offset, job.verify_tls, job.timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: complete, or not a prefix of this file
            if exc.headers.get("Content-Range", "") == f"bytes */{offset}":
                return True, ""
            return _restart(job, f"the server has no byte {offset} of {job.name} (HTTP 416)")
        raise DownloadError(f"HTTP {exc.code} {exc.reason} for {job.name} from {job.url}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise _network_error(job.url, job.name, exc) from None
    with response:
        sent = response.headers.get("Content-Range", "")
        if not (offset and response.status == 206 and not sent.startswith(f"bytes {offset}-")):
            return _stream(job, response, offset), response.headers.get("Content-Type", "")
    return _restart(job, f"asked for bytes {offset}- of {job.name}, the server sent {sent!r}")


def _restart(job: _Download, why: str) -> tuple[bool, str]:
    """Delete the ``.part`` and download from byte 0: bytes from the wrong place are never appended."""
    job.log(f"{why}: downloading {job.name} again from the start")
    job.part.unlink(missing_ok=True)
    return _transfer(job)  # no Range request now, so this cannot restart again


def _stream(job: _Download, response: http.client.HTTPResponse, offset: int) -> bool:
    """Append (HTTP 206) or rewrite (HTTP 200) ``job.part`` with a progress bar; True when it appended."""
    if offset and response.status == 206:
        job.log(f"resuming {job.name} at {human_bytes(offset)}")
    elif offset:
        job.log(f"the server ignored the resume request: downloading {job.name} again from the start")
        offset = 0
    length = response.headers.get("Content-Length")
    remaining = int(length) if length is not None else None
    if remaining is not None:
        ensure_free_space(job.part.parent, remaining, f"downloading {job.name}")
    total = offset + remaining if remaining is not None else job.size
    received = 0
    try:
        with (
            open(job.part, "ab" if offset else "wb") as fh,
            tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=job.name
            ) as bar,
        ):
            while chunk := response.read(job.chunk_size):
                fh.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DownloadError(
                f"disk full while writing {job.part}: free some space and run again to resume"
            ) from None
        raise DownloadError(
            f"download of {job.name} interrupted ({exc}): run the same command again to resume"
        ) from None
    if remaining is not None and received < remaining:
        raise DownloadError(
            f"download of {job.name} interrupted after {offset + received} of {offset + remaining} bytes: "
            "run the same command again to resume"
        )
    return offset > 0
