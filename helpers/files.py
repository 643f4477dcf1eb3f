"""Files that are never half-written, folders that resume, and the one rule for worker processes.

Used by every module that writes (the synthetic sets, the store, checkpoints, patch caches, executed notebooks).

- :func:`atomic_path` / :func:`write_atomic`: write to a temporary name in the same folder, then ``os.replace``
  (atomic on POSIX and Windows): a reader sees the old file or the new one, never a half-written one, and a
  crash leaves no temporary behind. The temporary name carries the process id and a random part, so two
  processes writing the same file at once (two notebooks on "Run all") never share a temporary.
- :func:`claim_folder`: a folder made from given arguments, resumable, refusing other arguments.
- :func:`require_free_space` / :func:`disk_full_guard`: a write that cannot fit is refused before it starts,
  and one that hits a full disk anyway raises :class:`DiskFullError` naming the file, never a bus error or
  a library's internal message.
- :func:`process_pool` / :func:`run_tasks`: worker processes are always started with ``spawn``. ``fork``
  copies a notebook kernel with its threads (ZeroMQ, torch's thread pools) mid-flight, which can deadlock the
  children; ``spawn`` starts clean interpreters (a script then needs an ``if __name__ == "__main__":`` guard).
"""

from __future__ import annotations

import contextlib
import errno
import json
import multiprocessing
import multiprocessing.pool
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from helpers.config import usable_cpus
from helpers.progress import progress_bar

#: A temporary file older than this (seconds) is left over from a killed run and is removed.
STALE_TMP_S = 600
PARAMS_FILE = ".synthetic.json"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary name beside ``path``; on success it replaces ``path``, on any error it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class DiskFullError(OSError):
    """The disk (or quota) has no room for a write; the message names the path and the sizes."""


def human_bytes(n: float) -> str:
    """``n`` bytes in the largest unit that keeps 3 significant digits: ``"512 B"``, ``"1.46 MB"``, ``"2.10 GB"``."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" or abs(n) >= 1000 else f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def require_free_space(folder: str | os.PathLike, needed: int, what: str) -> None:
    """Raise :class:`DiskFullError` when ``folder``'s disk has fewer than ``needed`` bytes free.

    ``folder`` may not exist yet: its nearest existing parent is asked.
    """
    folder = Path(folder).absolute()
    probe = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise DiskFullError(
            errno.ENOSPC,
            f"disk full: {what} needs {human_bytes(needed)} but only {human_bytes(free)} is free in {folder}; "
            "free some space (or point XAI_COURSE_DATA / XAI_COURSE_CACHE at a larger disk) and run again",
        )


def _is_disk_full(exc: BaseException, path: Path) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # torch.save reports a short write as RuntimeError("... unexpected pos ..."), without the errno.
    if isinstance(exc, RuntimeError) and ("unexpected pos" in str(exc) or "No space left" in str(exc)):
        return True
    return False


@contextlib.contextmanager
def disk_full_guard(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn a full-disk failure inside the block into :class:`DiskFullError` naming ``what`` and ``path``."""
    path = Path(path)
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, RuntimeError) as exc:
        if not _is_disk_full(exc, path):
            raise
        raise DiskFullError(
            errno.ENOSPC,
            f"disk full while writing {what} {path}: {exc}. What was already finished is kept, so the next "
            "run resumes; free some space and run again",
        ) from exc


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically, and only when the file is missing or its bytes differ."""
    path, raw = Path(path), data.encode() if isinstance(data, str) else data
    if path.is_file() and path.read_bytes() == raw:
        return
    with atomic_path(path) as tmp:
        tmp.write_bytes(raw)


def claim_folder(dest: Path, params: dict[str, Any]) -> None:
    """Create ``dest``, drop temporaries of killed runs, and refuse a folder made with other arguments.

    Temporaries younger than ``STALE_TMP_S`` are left alone: they may belong to another process making
    the same set right now (two notebooks at once), which is safe since both write the same bytes.
    """
    dest.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for stale in dest.rglob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if now - stale.stat().st_mtime > STALE_TMP_S:
                stale.unlink()
    record = dest / PARAMS_FILE
    text = json.dumps(params, sort_keys=True, indent=1) + "\n"
    if record.is_file() and record.read_text() != text:
        raise ValueError(
            f"{dest} already holds a synthetic set made with other arguments ({record.read_text().strip()}); "
            f"asked for {json.dumps(params, sort_keys=True)}: use another folder or delete this one"
        )
    write_atomic(record, text)


def process_pool(workers: int, initializer: Callable[[], None] | None = None) -> multiprocessing.pool.Pool:
    """A pool of ``workers`` processes started with ``spawn`` (see the module docstring for why)."""
    return multiprocessing.get_context("spawn").Pool(workers, initializer=initializer)


def run_tasks(
    fn: Callable[[Any], None],
    tasks: Sequence[Any],
    workers: int | None,
    desc: str,
    seconds_each: float = 0.02,
) -> None:
    """Run ``fn`` on every task over ``workers`` processes (:func:`process_pool`) with a progress bar.

    ``workers=None`` uses all usable cores, but only as many as get about 3 s of work each (``seconds_each``
    is the rough cost of one task), since starting a process costs about a second. Each task should carry
    its own seed, so that results do not depend on the number of workers.
    """
    if workers is None:
        workers = min(usable_cpus(), int(len(tasks) * seconds_each / 3.0))
    workers = max(1, min(workers, len(tasks)))
    if workers == 1:
        for task in progress_bar(tasks, desc=desc):
            fn(task)
        return
    chunk = max(1, min(16, len(tasks) // (4 * workers)))
    with process_pool(workers) as pool:
        for _ in progress_bar(pool.imap(fn, tasks, chunksize=chunk), total=len(tasks), desc=desc):
            pass
