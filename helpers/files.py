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
- :func:`build_lock`: one process at a time builds a folder (two notebooks on "Run all", or a notebook and
  ``python -m helpers.course.prepare``); the other waits, then reuses what the first one built. A lock left by
  a killed process is taken over.
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
import socket
import sys
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
#: A lock of another host older than this (seconds) is taken as left over: no build takes a day.
STALE_LOCK_S = 24 * 3600
#: How long (seconds) :func:`build_lock` waits for another process's build before giving up by default.
LOCK_WAIT_S = 6 * 3600
#: How often (seconds) a waiting :func:`build_lock` looks at the lock, and says that it is still waiting.
LOCK_POLL_S, LOCK_NOTE_S = 0.2, 300


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


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a PID reused by another program counts as running)."""
    if sys.platform == "win32":  # there os.kill(pid, 0) would send a Ctrl-C, so ask the kernel
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return kernel32.GetLastError() == 5  # ERROR_ACCESS_DENIED: it exists, owned by someone else
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_lock(lock: Path) -> tuple[str, dict | None]:
    """(text, owner) of a lock file; owner is None while the record is incomplete (being written)."""
    text = lock.read_text()
    try:
        owner = json.loads(text)
    except ValueError:
        return text, None
    complete = isinstance(owner, dict) and {"pid", "host", "since", "token"} <= owner.keys()
    return text, owner if complete else None


def _stale(lock: Path, owner: dict | None) -> str | None:
    """Why ``lock`` is left over (its owner is gone), or None while its owner may still be building."""
    if owner is None:  # created a moment ago and not yet written, or its writer died in that moment
        age = time.time() - lock.stat().st_mtime
        return f"an incomplete lock file {age:.0f} s old" if age > 60 else None
    who = f"PID {owner['pid']} on {owner['host']}"
    if owner["host"] == socket.gethostname():
        return None if _pid_alive(int(owner["pid"])) else f"{who} that took it is no longer running"
    age = time.time() - float(owner["since"])
    return f"{who} took it {age / 3600:.0f} h ago, longer than builds take" if age > STALE_LOCK_S else None


def _try_lock(lock: Path, what: str, token: str) -> bool:
    """Create ``lock`` holding this process's record; False if it exists (``O_EXCL``: one creator wins)."""
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    record = dict(pid=os.getpid(), host=socket.gethostname(), what=what, since=time.time(), token=token)
    try:
        with disk_full_guard(lock, "the lock file"), os.fdopen(fd, "w") as out:
            out.write(json.dumps(record))
    except BaseException:
        lock.unlink(missing_ok=True)
        raise
    return True


def _take_over(lock: Path, seen: str) -> None:
    """Remove the left-over ``lock`` whose text was ``seen``, unless another process took it over meanwhile.

    The guard file lets one waiter at a time look again and remove it: two waiters removing at once could
    otherwise remove the fresh lock that one of them had just created.
    """
    guard = lock.with_name(lock.name + ".takeover")
    try:
        os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - guard.stat().st_mtime > 60:  # its process died while taking over
                guard.unlink()
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            if lock.read_text() == seen:
                lock.unlink()
    finally:
        guard.unlink(missing_ok=True)


def _acquire(lock: Path, target: Path, what: str, token: str, timeout: float) -> str | None:
    """Take ``lock``, waiting while a live process holds it (saying once for whom); -> whom it waited for."""
    start = last_note = time.monotonic()
    waited_for = None
    while not _try_lock(lock, what, token):
        try:
            text, owner = _read_lock(lock)
            stale = _stale(lock, owner)
        except FileNotFoundError:  # released meanwhile: try again
            continue
        if stale:
            print(f"{what}: taking over the lock {lock}: {stale}")
            _take_over(lock, text)
            continue
        who, now = f"PID {owner['pid']} on {owner['host']}" if owner else "another process", time.monotonic()
        if who != waited_for:
            print(
                f"{what}: {target} is being built by {who}; waiting for it to finish (at most "
                f"{timeout / 60:.0f} min; if that process is stuck, stop it or delete {lock})"
            )
            waited_for, last_note = who, now
        elif now - last_note >= LOCK_NOTE_S:
            print(f"{what}: still waiting for {who} ({(now - start) / 60:.0f} min so far)")
            last_note = now
        if now - start > timeout:
            raise TimeoutError(
                f"{what}: waited {timeout / 60:.0f} min for {who} to finish {target}; if it is stuck, "
                f"stop it or delete {lock}, and run again"
            )
        time.sleep(LOCK_POLL_S)
    return waited_for


@contextlib.contextmanager
def build_lock(target: str | os.PathLike, what: str, timeout: float | None = None) -> Iterator[str | None]:
    """Hold the lock file ``<target>.lock`` while building ``target``; yields None, or whom it waited for.

    Two processes building the same folder at once (two notebooks on "Run all") would delete each other's
    temporaries or results. The lock is created atomically (``O_CREAT | O_EXCL``: exactly one of two
    creators succeeds) and records the owner's PID and host name. Another process waits, saying once
    for whom, then holds the lock itself: it must look again whether ``target`` is finished now and reuse it
    (the yielded name says that it waited). A left-over lock (its PID no longer runs on this host, or it
    is older than ``STALE_LOCK_S`` on another host sharing the folder) is taken over with a note.
    ``TimeoutError`` after ``timeout`` seconds of waiting (None: ``LOCK_WAIT_S``). The folder of ``target``
    is made if missing. Used by ``helpers.xray.store.build_store`` (notebook 01) and
    ``helpers.breath.dataset.build_patch_dataset`` (notebook 06).
    """
    target = Path(target)
    lock, token = target.with_name(target.name + ".lock"), uuid.uuid4().hex
    lock.parent.mkdir(parents=True, exist_ok=True)
    waited_for = _acquire(lock, target, what, token, LOCK_WAIT_S if timeout is None else timeout)
    try:
        yield waited_for
    finally:
        with contextlib.suppress(FileNotFoundError):
            owner = _read_lock(lock)[1]
            if owner is not None and owner["token"] == token:  # still ours, not taken over as left over
                lock.unlink()


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
