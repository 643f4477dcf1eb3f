"""Unpack archives safely and stage data-set folders so that a failure never leaves half a folder.

Used by data_download.py, taught in notebooks/00_setup.ipynb (through :mod:`helpers.data.download`).

:func:`archive_problem` tells a readable zip or tar archive from anything else (an HTML error page, a file
spliced from two versions by a resume); :func:`helpers.data.http_download.download_file` uses it as its
``check``, so that such a download is moved aside instead of being reused.
:func:`safe_extract` checks every member of a zip or tar archive before writing anything (no absolute
paths, no ``..``, no links that point outside, no device files) and checks the free disk space.
:func:`staged` yields a temporary folder next to the destination that is marked complete (a ``.complete``
marker, written last) and renamed into place only when everything worked; :func:`is_complete` tells a
finished folder from an unfinished one. :func:`download_and_extract` combines these with
:func:`helpers.data.http_download.download_file`. Every failure is a :class:`DownloadError`; an archive
that cannot be read is a :class:`CorruptArchiveError`.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from helpers.data.http_download import (
    CorruptArchiveError,
    DownloadError,
    Log,
    download_file,
    ensure_free_space,
    moved_aside_if_corrupt,
)

MARKER = ".complete"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
#: What a damaged zip or tar archive raises while it is read.
_CORRUPT = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


def is_archive_name(name: str) -> bool:
    """True when the file name ends like a zip or tar archive (``.zip``, ``.tar.gz``, ``.tgz``, ...)."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def archive_problem(path: Path) -> str | None:
    """What makes ``path`` unusable as a zip or tar archive (e.g. ``"not a zip or tar archive (it begins
    with '<!DOCTYPE html>')"``), or ``None`` when its member list and every member's header can be read.

    Quick for a zip (nothing is decompressed); a compressed tar is read through once.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    # reads the member's own header: catches a file spliced from two versions by a resume
                    with contextlib.suppress(NotImplementedError, RuntimeError):  # method, password: later
                        zf.open(info).close()
            return None
        if tarfile.is_tarfile(path):
            with tarfile.open(path) as tf:
                tf.getmembers()
            return None
    except _CORRUPT as exc:
        return f"an unreadable archive ({exc})"
    with open(path, "rb") as fh:
        head = fh.read(40).split(b"\n")[0].strip()
    shown = head.isascii() and head.decode("ascii").isprintable() and head
    return "not a zip or tar archive" + (f" (it begins with {head.decode()!r})" if shown else "")


def _unsafe(archive: Path, member: str, why: str) -> DownloadError:
    return DownloadError(f"unsafe archive {archive.name}: member {member!r} {why}; nothing was extracted")


def _inside(root: str, path: str) -> bool:
    path = os.path.normpath(path)
    return path == root or path.startswith(root + os.sep)


def _check_name(archive: Path, name: str) -> None:
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise _unsafe(archive, name, "has an absolute path")
    if ".." in posix.parts:
        raise _unsafe(archive, name, "climbs out of the destination with '..'")


def _check_link(archive: Path, root: str, name: str, target: str, hard: bool) -> None:
    base = root if hard else os.path.join(root, os.path.dirname(name))
    if os.path.isabs(target) or not _inside(root, os.path.join(base, target)):
        raise _unsafe(archive, name, f"is a link to {target!r}, outside the destination")


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract a zip or tar archive into the existing folder ``dest`` after checking every member.

    Rejects absolute paths, ``..`` members, links pointing outside ``dest`` and device files before
    writing anything; an unreadable archive raises :class:`CorruptArchiveError` ("corrupt archive").
    """
    archive, dest = Path(archive), Path(dest)
    root = os.path.normpath(os.path.abspath(dest))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                for info in infos:
                    _check_name(archive, info.filename)
                    if stat.S_ISLNK(info.external_attr >> 16):
                        target = zf.read(info).decode("utf-8", "replace")
                        _check_link(archive, root, info.filename, target, hard=False)
                ensure_free_space(dest, sum(i.file_size for i in infos), f"extracting {archive.name}")
                zf.extractall(dest)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for m in members:
                    _check_name(archive, m.name)
                    if m.isdev():
                        raise _unsafe(archive, m.name, "is a device file")
                    if m.issym() or m.islnk():
                        _check_link(archive, root, m.name, m.linkname, hard=m.islnk())
                ensure_free_space(dest, sum(m.size for m in members), f"extracting {archive.name}")
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tf.extractall(dest, members=members, **extra)
        else:
            raise CorruptArchiveError(f"corrupt archive {archive.name}: neither a zip nor a tar file")
    except _CORRUPT as exc:
        if isinstance(exc, getattr(tarfile, "FilterError", ())):
            raise DownloadError(f"unsafe archive {archive.name}: {exc}; nothing was kept") from None
        raise CorruptArchiveError(f"corrupt archive {archive.name}: {exc}") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DownloadError(f"disk full while extracting {archive.name} into {dest.parent}") from None
        raise
    return dest


def is_complete(folder: Path) -> bool:
    """True when ``folder`` was finished by this module (it holds the ``.complete`` marker)."""
    return (Path(folder) / MARKER).is_file()


@contextmanager
def staged(target: Path, source: str, log: Log = print) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``target``; on success mark it complete and rename it to
    ``target``, on any failure delete it. Leftovers of a killed earlier run are removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.partial-*"):
        log(f"removing the unfinished {stale.name} of an earlier run")
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a data folder is readable like any other
    try:
        yield tmp
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        (tmp / MARKER).write_text(json.dumps({"source": source, "completed": stamp}) + "\n")
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def download_and_extract(
    url: str,
    target: Path,
    *,
    filename: str | None = None,
    md5: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    verify_tls: bool = True,
    downloads: Path | None = None,
    keep_archive: bool = False,
    log: Log = print,
) -> Path:
    """Download an archive (resumable, verified) and extract it safely into ``target``; returns ``target``.

    Idempotent: a ``target`` holding the ``.complete`` marker is left alone. The archive is kept in
    ``downloads`` (default: ``target.parent / "downloads"``) only with ``keep_archive=True``; one that is
    not a readable archive, before or after extraction, is moved aside so that the next run downloads it
    again.
    """
    target = Path(target)
    if is_complete(target):
        log(f"{target.name}: already there in {target}; nothing to do")
        return target
    filename = filename or os.path.basename(urlsplit(url).path) or f"{target.name}.archive"
    downloads = Path(downloads) if downloads else target.parent / "downloads"
    archive = download_file(
        url,
        downloads / filename,
        md5=md5,
        sha256=sha256,
        size=size,
        check=archive_problem,
        verify_tls=verify_tls,
        log=log,
    )
    with staged(target, url, log) as tmp, moved_aside_if_corrupt(archive):
        safe_extract(archive, tmp)
    if not keep_archive:
        archive.unlink()
    return target


def move_children(src: Path, dest: Path) -> None:
    """Move everything inside the folder ``src`` into the folder ``dest`` (in sorted order)."""
    for child in sorted(src.iterdir()):
        shutil.move(str(child), str(dest / child.name))
