"""helpers.files: atomic writes (also with two writers at once), resumable folders, spawn-only worker pools."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import files

SIZE = 1 << 20  # 1 MiB: written in several chunks, so that two writers overlap
CHUNK = 1 << 16


def leftovers(folder: Path) -> list[str]:
    """Temporaries anywhere under ``folder`` (the names :func:`files.atomic_path` uses)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.tmp"))


# ---------------------------------------------------------------------------------------------- atomic_path
def test_atomic_path_replaces_the_file_only_at_the_end(tmp_path):
    path = tmp_path / "table.csv"
    path.write_bytes(b"old")
    old_inode = path.stat().st_ino
    with files.atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp != path
        assert fnmatch.fnmatch(tmp.name, ".*.tmp")  # the pattern claim_folder cleans up
        assert re.fullmatch(rf"\.table\.csv\.{os.getpid()}\.[0-9a-f]{{8}}\.tmp", tmp.name)
        tmp.write_bytes(b"new")
        assert path.read_bytes() == b"old"  # a reader sees the old file until the very end
    assert path.read_bytes() == b"new" and not tmp.exists()
    assert path.stat().st_ino != old_inode  # renamed into place, not rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]
    with files.atomic_path(tmp_path / "fresh.bin") as tmp:  # a file that did not exist yet
        tmp.write_bytes(b"x")
    assert (tmp_path / "fresh.bin").read_bytes() == b"x"


def test_atomic_path_leaves_no_temporary_on_error(tmp_path):
    path = tmp_path / "image.dcm"
    path.write_bytes(b"complete")
    with pytest.raises(RuntimeError, match="killed mid-write"):
        with files.atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"complete" and not tmp.exists()
    with pytest.raises(KeyError):
        with files.atomic_path(tmp_path / "never.dcm"):
            raise KeyError("before anything was written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.dcm"]


def test_every_atomic_path_gets_its_own_temporary(tmp_path):
    names = set()
    for _ in range(50):
        with files.atomic_path(tmp_path / "same.txt") as tmp:
            names.add(tmp.name)
            tmp.write_text("x")
    assert len(names) == 50


# ---------------------------------------------------------------------------------- two writers at once
def write_in_two_halves(path: Path, content: bytes, barrier: threading.Barrier, names: list[str]) -> None:
    """Write ``content`` through atomic_path in two halves; both writers meet between the halves and before
    the replace, so the two writes surely overlap."""
    with files.atomic_path(path) as tmp:
        names.append(tmp.name)
        with open(tmp, "wb") as f:
            f.write(content[: len(content) // 2])
            f.flush()
            barrier.wait()
            f.write(content[len(content) // 2 :])
        barrier.wait()


def run_two_threads(path: Path) -> tuple[list[str], list[BaseException]]:
    barrier, names, errors = threading.Barrier(2, timeout=20), [], []

    def writer(content: bytes) -> None:
        try:
            write_in_two_halves(path, content, barrier, names)
        except BaseException as err:  # reported to the test
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=writer, args=(fill * SIZE,)) for fill in (b"a", b"b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return names, errors


def test_two_threads_writing_one_file_never_share_a_temporary(tmp_path):
    path = tmp_path / "stats.json"
    for _ in range(5):
        names, errors = run_two_threads(path)
        assert errors == []
        assert len(set(names)) == 2, names  # same process, same moment: still two temporaries
        assert path.read_bytes() in (b"a" * SIZE, b"b" * SIZE)  # one complete content, never a mix
        assert leftovers(tmp_path) == []


def test_the_two_writer_check_fails_when_writers_share_a_temporary(tmp_path, monkeypatch):
    """The check above can fail: with a temporary named by the process id alone (as before), the two
    threads write into one file and the second replace finds nothing to rename."""

    class Fixed:
        hex = "00000000"

    monkeypatch.setattr(files.uuid, "uuid4", lambda: Fixed)
    names, errors = run_two_threads(tmp_path / "stats.json")
    assert len(set(names)) == 1
    mixed = (tmp_path / "stats.json").read_bytes() not in (b"a" * SIZE, b"b" * SIZE)
    assert errors or mixed


WRITER = """
import sys, time
from pathlib import Path
from helpers.files import atomic_path
path, fill, rounds, go = Path(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3]), Path(sys.argv[4])
go.with_name(go.name + "." + sys.argv[2]).touch()  # ready
while not go.exists():
    time.sleep(0.001)
names = set()
for _ in range(rounds):
    with atomic_path(path) as tmp:
        names.add(tmp.name)
        with open(tmp, "wb") as f:
            for _ in range(SIZE // CHUNK):
                f.write(fill * CHUNK)
print(*sorted(names), sep="\\n")
"""


def test_two_processes_writing_one_file_never_mix(tmp_path):
    path, go, rounds = tmp_path / "out" / "index.csv", tmp_path / "go", 20
    path.parent.mkdir()
    script = f"SIZE, CHUNK = {SIZE}, {CHUNK}\n" + WRITER
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path), fill, str(rounds), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for fill in ("a", "b")
    ]
    deadline = time.monotonic() + 120
    while not all(go.with_name(f"go.{fill}").exists() for fill in "ab"):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "writers did not start"
        time.sleep(0.01)
    go.touch()
    complete, seen = (b"a" * SIZE, b"b" * SIZE), 0
    while any(p.poll() is None for p in procs):  # a reader meanwhile sees a whole file or none at all
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        assert data in complete, (len(data), data[:1], data[-1:])
        seen += 1
        time.sleep(0.001)
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    names = [set(out.split()) for out, _ in outputs]
    assert len(names[0]) == len(names[1]) == rounds and not names[0] & names[1]
    assert path.read_bytes() in complete and seen > 0
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------- write_atomic
def test_write_atomic_skips_identical_content(tmp_path):
    path = tmp_path / "note.txt"
    files.write_atomic(path, "héllo\n")
    assert path.read_bytes() == "héllo\n".encode()
    os.utime(path, ns=(10**18, 10**18))  # a stamp that a rewrite would change
    inode = path.stat().st_ino
    files.write_atomic(path, "héllo\n")
    files.write_atomic(path, "héllo\n".encode())  # bytes and str alike
    assert path.stat().st_mtime_ns == 10**18 and path.stat().st_ino == inode
    files.write_atomic(path, b"other")
    assert path.read_bytes() == b"other" and path.stat().st_mtime_ns != 10**18
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------- claim_folder
def test_claim_folder_records_its_arguments_and_refuses_others(tmp_path):
    dest = tmp_path / "sets" / "rsna"
    files.claim_folder(dest, {"set": "rsna", "seed": 0})
    record = dest / files.PARAMS_FILE
    assert json.loads(record.read_text()) == {"set": "rsna", "seed": 0}
    os.utime(record, ns=(10**18, 10**18))
    files.claim_folder(dest, {"seed": 0, "set": "rsna"})  # the same arguments: resumes, rewrites nothing
    assert record.stat().st_mtime_ns == 10**18
    with pytest.raises(ValueError) as refused:
        files.claim_folder(dest, {"set": "rsna", "seed": 1})
    message = str(refused.value)
    assert message.startswith(f"{dest} already holds a synthetic set made with other arguments")
    assert '"seed": 1' in message and "use another folder or delete this one" in message
    assert json.loads(record.read_text()) == {"set": "rsna", "seed": 0}  # the record is left as it was


def test_claim_folder_removes_stale_temporaries_and_keeps_young_ones(tmp_path):
    dest = tmp_path / "set"
    (dest / "images").mkdir(parents=True)
    now = time.time()
    stale = [dest / ".a.dcm.111.tmp", dest / "images" / ".b.dcm.222.0123abcd.tmp"]
    young = [dest / ".c.dcm.333.tmp", dest / "images" / ".d.dcm.444.89abcdef.tmp"]
    for path, age in [(p, files.STALE_TMP_S + 5) for p in stale] + [
        (p, files.STALE_TMP_S - 60) for p in young
    ]:
        path.write_bytes(b"partial")
        os.utime(path, (now - age, now - age))
    kept = dest / "images" / "scan.tmp"  # not a hidden temporary of atomic_path: not ours to remove
    kept.write_bytes(b"data")
    os.utime(kept, (now - 10 * files.STALE_TMP_S, now - 10 * files.STALE_TMP_S))
    files.claim_folder(dest, {"set": "test"})
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in [*young, kept])


# ------------------------------------------------------------------------------------------- worker pools
def _child_view(_: object) -> tuple[int, int]:
    """(STALE_TMP_S as the worker sees it, the worker's process id)."""
    return files.STALE_TMP_S, os.getpid()


def test_process_pool_starts_clean_spawned_interpreters(monkeypatch):
    monkeypatch.setattr(files, "STALE_TMP_S", -1)  # a change in this process, which fork would copy
    with files.process_pool(2) as pool:
        assert pool._ctx.get_start_method() == "spawn"
        seen = pool.map(_child_view, range(4), chunksize=1)
    assert all(value == 600 for value, _ in seen)  # the worker imported helpers.files afresh
    assert os.getpid() not in {pid for _, pid in seen}
    if "fork" in multiprocessing.get_all_start_methods():  # the check can fail: a forked worker inherits
        with multiprocessing.get_context("fork").Pool(1) as pool:
            assert pool.map_async(_child_view, [0]).get(timeout=60)[0][0] == -1


def _write_task(task: dict) -> None:
    """A task that carries its own seed: a few random bytes, and which process wrote them."""
    data = np.random.default_rng(task["seed"]).bytes(1000)
    files.write_atomic(Path(task["path"]), data)
    Path(task["path"] + ".pid").write_text(str(os.getpid()))


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.bin"))}


def test_run_tasks_gives_the_same_files_with_one_and_two_workers(tmp_path):
    results = {}
    for workers in (1, 2, None):
        folder = tmp_path / f"workers-{workers}"
        folder.mkdir()
        tasks = [{"path": str(folder / f"{i:02d}.bin"), "seed": 100 + i} for i in range(16)]
        files.run_tasks(_write_task, tasks, workers, desc="test")
        results[workers] = digests(folder)
        pids = {int(p.read_text()) for p in folder.glob("*.pid")}
        if workers == 2:
            assert os.getpid() not in pids and 1 <= len(pids) <= 2
        else:  # one worker, or None for 16 tasks far too cheap to pay for starting a process
            assert pids == {os.getpid()}
        assert leftovers(folder) == []
    assert len(results[1]) == 16 and results[1] == results[2] == results[None]
    files.run_tasks(_write_task, [], 2, desc="nothing")  # no tasks: no pool, no error


# --------------------------------------------------------------------------------------------- build_lock
def lock_record(pid: int, host: str | None = None, age: float = 0.0) -> str:
    host = socket.gethostname() if host is None else host
    return json.dumps(
        {"pid": pid, "host": host, "what": "test set", "since": time.time() - age, "token": "t"}
    )


def dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_build_lock_records_its_owner_and_always_removes_its_lock(tmp_path):
    target = tmp_path / "store"
    lock = tmp_path / "store.lock"
    with files.build_lock(target, "test set") as waited_for:
        assert waited_for is None
        record = json.loads(lock.read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert record["what"] == "test set" and abs(record["since"] - time.time()) < 60
    assert not lock.exists()
    with pytest.raises(KeyError):
        with files.build_lock(target, "test set"):
            raise KeyError("the build failed")
    assert not lock.exists()
    other = lock_record(12345, "elsewhere")
    with files.build_lock(target, "test set"):  # taken over by someone else meanwhile: not ours to remove
        lock.write_text(other)
    assert lock.read_text() == other


HOLDER = """
import sys, time
from pathlib import Path
from helpers.files import build_lock
target, release = Path(sys.argv[1]), Path(sys.argv[2])
with build_lock(target, "test set"):
    print("holding", flush=True)
    while not release.exists():
        time.sleep(0.01)
"""


@pytest.fixture
def holder(tmp_path):
    """A live process holding the lock of ``tmp_path/store`` until ``tmp_path/release`` appears."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = [sys.executable, "-c", HOLDER, str(tmp_path / "store"), str(tmp_path / "release")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "holding"
    yield proc
    (tmp_path / "release").touch()
    proc.communicate(timeout=60)


def test_build_lock_waits_for_a_live_holder_and_says_so_once(tmp_path, holder, capsys, monkeypatch):
    monkeypatch.setattr(files, "LOCK_NOTE_S", 0.3)
    threading.Timer(1.0, (tmp_path / "release").touch).start()
    started = time.monotonic()
    with files.build_lock(tmp_path / "store", "test set") as waited_for:
        assert time.monotonic() - started >= 0.9
        assert json.loads((tmp_path / "store.lock").read_text())["pid"] == os.getpid()
    who = f"PID {holder.pid} on {socket.gethostname()}"
    assert waited_for == who
    out = capsys.readouterr().out
    assert out.count(f"test set: {tmp_path / 'store'} is being built by {who}; waiting") == 1, out
    assert f"if that process is stuck, stop it or delete {tmp_path / 'store.lock'}" in out
    assert f"test set: still waiting for {who}" in out  # a sign of life every LOCK_NOTE_S


def test_build_lock_gives_up_after_its_timeout(tmp_path, holder):
    with pytest.raises(
        TimeoutError, match=rf"test set: waited 0 min for PID {holder.pid} on .* delete .*store\.lock"
    ):
        with files.build_lock(tmp_path / "store", "test set", timeout=0.3):
            pytest.fail("got a lock that a live process holds")
    assert json.loads((tmp_path / "store.lock").read_text())["pid"] == holder.pid  # left alone


@pytest.mark.parametrize(
    ("record", "age", "why"),
    [
        (lambda: lock_record(dead_pid()), 0, "that took it is no longer running"),
        (lambda: lock_record(os.getpid(), "elsewhere", files.STALE_LOCK_S + 60), 0, "took it 24 h ago"),
        (lambda: "", 120, "an incomplete lock file 120 s old"),
    ],
    ids=["dead-pid", "old-on-another-host", "incomplete-and-old"],
)
def test_build_lock_takes_over_a_left_over_lock(tmp_path, capsys, record, age, why):
    lock = tmp_path / "store.lock"
    lock.write_text(record())
    os.utime(lock, (time.time() - age, time.time() - age))
    with files.build_lock(tmp_path / "store", "test set") as waited_for:
        assert waited_for is None and json.loads(lock.read_text())["pid"] == os.getpid()
    out = capsys.readouterr().out
    assert f"test set: taking over the lock {lock}: " in out and why in out, out
    assert not lock.exists() and not (tmp_path / "store.lock.takeover").exists()


@pytest.mark.parametrize(
    ("record", "age"),
    [(lock_record(1, "elsewhere", 3600), 0), ("", 5)],
    ids=["young-on-another-host", "being-written"],
)
def test_build_lock_waits_for_a_lock_that_may_be_alive(tmp_path, record, age):
    lock = tmp_path / "store.lock"
    lock.write_text(record)
    os.utime(lock, (time.time() - age, time.time() - age))
    with pytest.raises(TimeoutError):
        with files.build_lock(tmp_path / "store", "test set", timeout=0.3):
            pytest.fail("took over a lock whose owner may still be building")
    assert lock.read_text() == record


def test_taking_over_never_removes_a_lock_taken_over_meanwhile(tmp_path):
    """Two waiters see the same left-over lock; the first replaces it with its own before the second acts:
    the second must not remove the fresh one (it looks again, under the ``.takeover`` guard)."""
    lock, guard = tmp_path / "store.lock", tmp_path / "store.lock.takeover"
    left_over, fresh = lock_record(dead_pid()), lock_record(os.getpid())
    lock.write_text(fresh)
    files._take_over(lock, left_over)
    assert lock.read_text() == fresh and not guard.exists()
    lock.write_text(left_over)
    guard.touch()  # another waiter is taking it over right now: leave it to that one
    files._take_over(lock, left_over)
    assert lock.read_text() == left_over and guard.exists()
    os.utime(guard, (time.time() - 120, time.time() - 120))  # ... which died doing so: its guard goes
    files._take_over(lock, left_over)
    assert not guard.exists()
    files._take_over(lock, left_over)
    assert not lock.exists() and not guard.exists()


CONTENDER = """
import os, sys, time
from pathlib import Path
from helpers.files import build_lock
target, log, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
go.with_name(go.name + "." + str(os.getpid())).touch()
while not go.exists():
    time.sleep(0.001)
for _ in range(3):
    with build_lock(target, "test set"):
        with open(log, "a") as f:
            f.write(f"in {os.getpid()}\\n")
        time.sleep(0.02)
        with open(log, "a") as f:
            f.write(f"out {os.getpid()}\\n")
"""


def test_build_lock_lets_one_process_at_a_time_in_also_when_taking_over(tmp_path):
    """Four processes start together on a lock left by a dead one: they take it over and then take turns."""
    target, log, go = tmp_path / "store", tmp_path / "log", tmp_path / "go"
    (tmp_path / "store.lock").write_text(lock_record(dead_pid()))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = [sys.executable, "-c", CONTENDER, str(target), str(log), str(go)]
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(4)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("go.*"))) < 4:
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), (
            "contenders did not start"
        )
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outputs]
    lines = log.read_text().splitlines()
    assert len(lines) == 24
    for enter, leave in zip(lines[0::2], lines[1::2], strict=True):  # never two inside at once
        assert enter.startswith("in ") and leave == "out " + enter[3:], lines
    assert sum("taking over the lock" in out for out, _ in outputs) >= 1
    assert sorted(p.name for p in tmp_path.iterdir() if "lock" in p.name) == []
