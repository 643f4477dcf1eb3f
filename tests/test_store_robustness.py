"""helpers.xray.store against a classroom: a full disk, two builds at once, a damaged copy (issue 19, 3-5).

The full-disk tests mount a small tmpfs when they run as root (a real full disk: without the fix a build
dies of SIGBUS); the monkeypatched ones simulate ENOSPC anywhere.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import files
from helpers.breath import dataset
from helpers.data.synthetic_audio import make_icbhi_like
from helpers.xray import store as store_module
from helpers.xray.store import build_store, load_store

ROOT = Path(__file__).resolve().parents[1]


def png_items(folder: Path, n: int = 8, pixels: int = 48) -> pd.DataFrame:
    """``n`` random grey PNG files and their items (train/val given, so no split is drawn)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng, rows = np.random.default_rng(0), []
    for i in range(n):
        path = folder / f"p{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (pixels, pixels), dtype=np.uint8)).save(path)
        rows.append(
            {
                "path": str(path),
                "patientId": f"p{i:03d}",
                "label": i % 2,
                "split": "val" if i % 4 == 0 else "train",
            }
        )
    return pd.DataFrame(rows)


def same_store(a: Path, b: Path) -> bool:
    return all((a / name).read_bytes() == (b / name).read_bytes() for name in ("images.npy", "index.csv"))


def assert_clean(dest: Path) -> None:
    """A finished store: its three files only, no partial folder, no lock beside it."""
    assert sorted(p.name for p in dest.iterdir()) == sorted(store_module.STORE_FILES)
    assert not dest.with_name(dest.name + ".partial").exists()
    assert not dest.with_name(dest.name + ".lock").exists()


BUILD = """
import os, sys, time
from pathlib import Path
import pandas as pd
from helpers.xray import store
items = pd.read_csv(sys.argv[1], dtype={"patientId": str})
dest, size, fill_after, delay = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
go = Path(sys.argv[6]) if len(sys.argv) > 6 else None
real, calls = store._read_resized, []

def read(path, size):
    calls.append(path)
    if len(calls) == fill_after + 1:  # something else takes the rest of the disk
        fd = os.open(dest.parent / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, bytes(1 << 16))
        except OSError:
            os.close(fd)
    time.sleep(delay)
    return real(path, size)

store._read_resized = read
if go is not None:
    go.with_name(go.name + "." + str(os.getpid())).touch()  # ready
    while not go.exists():
        time.sleep(0.001)
store.build_store(items, dest, size=size, workers=1, progress=False, checkpoint_every=2)
print("built", dest, len(calls), "images read")
"""


def build_command(items: pd.DataFrame, tmp_path: Path, dest: Path, size: int, fill_after: int = -1) -> list:
    table = tmp_path / "items.csv"
    items.to_csv(table, index=False)
    return [sys.executable, "-c", BUILD, str(table), str(dest), str(size), str(fill_after), "0"]


def run(command: list) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


# -------------------------------------------------------------------------------------- a full disk (3)
@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs at ``tmp_path/disk`` -> (folder, resize(mebibytes)); skipped unless root can mount."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if getattr(os, "geteuid", lambda: 1)() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root; the monkeypatched tests cover the same code")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")

    def resize(mebibytes: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={mebibytes}m", str(folder)], check=True)

    try:
        yield folder, resize
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def assert_disk_full_message(result: subprocess.CompletedProcess, *names: str) -> None:
    """The build ended with a Python DiskFullError naming the file, not with SIGBUS (-7, or 135 from a shell)."""
    assert result.returncode not in (-signal.SIGBUS, 128 + signal.SIGBUS), "killed by SIGBUS (Bus error)"
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("helpers.files.DiskFullError:") and "disk full" in last, result.stderr[-2000:]
    assert all(name in last for name in names), last


def test_a_store_too_big_for_the_disk_is_refused_before_it_starts(tmp_path, small_disk):
    disk, resize = small_disk
    items = png_items(tmp_path / "png")
    reference = build_store(items, tmp_path / "reference", size=512, workers=1, progress=False)
    dest = disk / "store"
    result = run(build_command(items, tmp_path, dest, 512))  # 8 x 512 x 512 = 2 MiB of images on 2 MiB
    assert_disk_full_message(result, "store.partial", "needs", "free")
    assert not dest.exists() and not (disk / "store.partial" / "images.npy").exists()
    resize(8)
    result = run(build_command(items, tmp_path, dest, 512))
    assert result.returncode == 0, result.stderr[-2000:]
    assert_clean(dest)
    assert same_store(dest, reference)


def test_a_disk_that_fills_up_during_the_build_stops_it_cleanly_and_it_resumes(
    tmp_path, small_disk, monkeypatch
):
    disk, _ = small_disk
    items = png_items(tmp_path / "png")
    reference = build_store(items, tmp_path / "reference", size=256, workers=1, progress=False)
    dest = disk / "store"
    result = run(build_command(items, tmp_path, dest, 256, fill_after=3))  # the disk is full from image 4 on
    assert_disk_full_message(result, "progress.npz")
    partial = disk / "store.partial"
    assert not dest.exists() and (partial / "progress.npz").is_file()
    assert not (disk / "store.lock").exists()
    (disk / "filler").unlink()  # space freed: the next build resumes after the 2 images it had saved
    real, calls = store_module._read_resized, []
    monkeypatch.setattr(store_module, "_read_resized", lambda p, s: (calls.append(p), real(p, s))[1])
    build_store(items, dest, size=256, workers=1, progress=False)
    assert len(calls) == 6
    assert_clean(dest)
    assert same_store(dest, reference)


def test_no_room_for_the_images_raises_before_anything_is_written(tmp_path, monkeypatch):
    """The same check without a mount: the disk says it has 100 kB free."""
    items = png_items(tmp_path / "png")
    free = shutil.disk_usage(tmp_path)._replace(free=100_000)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: free)
    with pytest.raises(
        files.DiskFullError, match=r"disk full: the store's 8 images of 256x256 px needs .* 100 kB"
    ):
        build_store(items, tmp_path / "store", size=256, workers=1, progress=False)
    assert not (tmp_path / "store.partial" / "images.npy").exists()
    assert not (tmp_path / "store.lock").exists()


def test_the_images_file_gets_its_blocks_before_any_image_is_written(tmp_path, monkeypatch):
    """Preallocated, so a memory-mapped write never finds the disk full; a full disk there is a DiskFullError.
    Without ``os.posix_fallocate`` (macOS, Windows) the new file is written with zeros, header kept."""
    items = png_items(tmp_path / "png")
    reference = build_store(items, tmp_path / "reference", size=64, workers=1, progress=False)
    events, real_read = [], store_module._read_resized
    monkeypatch.setattr(
        store_module, "_read_resized", lambda p, s: (events.append("read"), real_read(p, s))[1]
    )
    if hasattr(os, "posix_fallocate"):
        real_allocate = os.posix_fallocate

        def allocate(fd: int, start: int, length: int) -> None:
            events.append(("allocate", start, length))
            real_allocate(fd, start, length)

        def no_space(fd: int, start: int, length: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(store_module.os, "posix_fallocate", allocate)
        build_store(items, tmp_path / "store", size=64, workers=1, progress=False)
        assert events == [("allocate", 128, 8 * 64 * 64)] + ["read"] * 8  # all blocks, before any image
        monkeypatch.setattr(store_module.os, "posix_fallocate", no_space)
        with pytest.raises(
            files.DiskFullError, match=r"disk full while writing the store's images .*images\.npy"
        ):
            build_store(items, tmp_path / "full", size=64, workers=1, progress=False)
        monkeypatch.delattr(store_module.os, "posix_fallocate")
    dest = build_store(items, tmp_path / "zeros", size=64, workers=1, progress=False)
    assert same_store(dest, reference)


def test_a_full_disk_while_saving_progress_keeps_the_progress_for_the_resume(tmp_path, monkeypatch):
    items = png_items(tmp_path / "png")
    reference = build_store(items, tmp_path / "reference", size=32, workers=1, progress=False)
    real_write, saves = store_module.write_atomic, []

    def full_at_the_third_save(path, data):
        if Path(path).name == "progress.npz":
            saves.append(path)
            if len(saves) == 3:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data)

    monkeypatch.setattr(store_module, "write_atomic", full_at_the_third_save)
    dest = tmp_path / "store"
    with pytest.raises(
        files.DiskFullError, match=r"disk full while writing the build's progress .*progress\.npz"
    ):
        build_store(items, dest, size=32, workers=1, progress=False, checkpoint_every=2)
    assert len(saves) == 3  # not saved again on the way out
    monkeypatch.undo()
    with np.load(tmp_path / "store.partial" / "progress.npz") as state:
        assert state["done"].sum() == 4
    build_store(items, dest, size=32, workers=1, progress=False)
    assert_clean(dest)
    assert same_store(dest, reference)


# ----------------------------------------------------------------------------------- two builds at once (4)
def test_two_builds_of_one_store_at_once_give_one_store(tmp_path):
    items = png_items(tmp_path / "png")
    reference = build_store(items, tmp_path / "reference", size=32, workers=1, progress=False)
    dest, go = tmp_path / "cache" / "store", tmp_path / "go"
    command = build_command(items, tmp_path, dest, 32)
    command[-1] = "0.05"  # 0.4 s of reading for 8 images: the two builds surely overlap
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [*command, str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
        )
        for _ in range(2)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("go.*"))) < 2:
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "builders did not start"
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    said = [out for out, _ in outputs]
    loser = [i for i, out in enumerate(said) if "reusing the store that PID" in out]
    assert len(loser) == 1, said
    out, winner = said[loser[0]], procs[1 - loser[0]]
    assert out.count(f"is being built by PID {winner.pid} on {socket.gethostname()}") == 1, out
    assert f"reusing the store that PID {winner.pid} on {socket.gethostname()} built meanwhile" in out
    assert "0 images read" in out  # the one that waited read nothing
    assert "8 images read" in said[1 - loser[0]]
    assert_clean(dest)
    assert same_store(dest, reference)


def test_a_lock_of_a_dead_build_is_taken_over(tmp_path, capsys):
    items = png_items(tmp_path / "png")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    dest = tmp_path / "store"
    lock = tmp_path / "store.lock"
    record = {
        "pid": dead.pid,
        "host": socket.gethostname(),
        "what": "preprocessed store",
        "since": time.time(),
        "token": "x",
    }
    lock.write_text(json.dumps(record))
    started = time.monotonic()
    build_store(items, dest, size=32, workers=1, progress=False)
    assert time.monotonic() - started < 30
    assert f"taking over the lock {lock}: PID {dead.pid} on {socket.gethostname()}" in capsys.readouterr().out
    assert_clean(dest)


def test_a_build_waits_while_a_live_process_holds_the_lock(tmp_path, capsys, monkeypatch):
    items = png_items(tmp_path / "png")
    dest = tmp_path / "store"
    monkeypatch.setattr(files, "LOCK_WAIT_S", 0.5)
    with files.build_lock(dest, "preprocessed store"):  # held by this process, which is alive
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=rf"waited 0 min for PID {os.getpid()} on .* to finish {dest}"):
            build_store(items, dest, size=32, workers=1, progress=False)
        assert time.monotonic() - started >= 0.5
    out = capsys.readouterr().out
    assert out.count(f"store is being built by PID {os.getpid()}") == 1, out  # said once
    assert not dest.exists() and not (tmp_path / "store.partial").exists()
    build_store(items, dest, size=32, workers=1, progress=False)  # released: builds
    assert_clean(dest)


def test_a_second_build_of_the_breath_patches_waits_and_reuses_them(tmp_path, capsys, monkeypatch):
    """The breath-sound patch cache (notebook 06) takes the same lock: computed once, not by both."""
    icbhi_dir = make_icbhi_like(tmp_path / "icbhi", 2, seed=0, workers=1, duration_s=(3.0, 4.0))
    made = dataset.build_patch_dataset(icbhi_dir, workers=1, progress=False)
    cache, results = tmp_path / "cache" / "patches.npz", []
    monkeypatch.setattr(dataset, "_recording_patches", lambda job: pytest.fail("computed again"))
    second = threading.Thread(
        target=lambda: results.append(
            dataset.build_patch_dataset(icbhi_dir, workers=1, progress=False, cache_path=cache)
        )
    )
    with files.build_lock(cache, "breath-sound patches"):  # this process is computing them
        second.start()
        time.sleep(0.5)
        assert second.is_alive() and not results  # waiting
        made.save(cache)
    second.join(60)
    np.testing.assert_array_equal(results[0].patches, made.patches)
    out = capsys.readouterr().out
    assert f"reusing the patches that PID {os.getpid()} on {socket.gethostname()} made meanwhile" in out
    assert not cache.with_name("patches.npz.lock").exists()


# ------------------------------------------------------------------------------------ a damaged store (5)
@pytest.fixture
def built(tmp_path):
    """(items, a finished store of 12 images, an identical reference copy)."""
    items = png_items(tmp_path / "png", n=12)
    dest = build_store(items, tmp_path / "store", size=32, workers=1, progress=False)
    shutil.copytree(dest, tmp_path / "reference")
    return items, dest, tmp_path / "reference"


def rebuilt_after_damage(items: pd.DataFrame, dest: Path, reference: Path, capsys, problem: str) -> None:
    """build_store says the store is damaged and what is wrong, builds it again, and the result checks out."""
    build_store(items, dest, size=32, workers=1, progress=False)
    out = capsys.readouterr().out
    assert "damaged" in out and problem in out and "building the store again" in out, out
    assert_clean(dest)
    assert same_store(dest, reference)
    assert len(load_store(dest).index) == 12


def test_an_images_file_cut_short_is_named(built, capsys):
    items, dest, reference = built
    images = dest / "images.npy"
    images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])
    with pytest.raises(
        ValueError, match=r"damaged store: .*images\.npy has 6,208 bytes but its header promises 12,416"
    ) as err:
        load_store(dest)
    assert isinstance(err.value, store_module.DamagedStoreError)
    assert f"delete the folder {dest} and build the store again" in str(err.value)
    rebuilt_after_damage(items, dest, reference, capsys, "images.npy has 6,208 bytes")


def test_an_index_missing_rows_is_named(built, capsys):
    items, dest, reference = built
    csv = dest / "index.csv"
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text("".join(lines[:-4]))  # 8 of the 12 rows, each complete: pandas reads it without a word
    with pytest.raises(ValueError, match=r"damaged store: .*index\.csv has 8 rows for the 12 images"):
        load_store(dest)
    rebuilt_after_damage(items, dest, reference, capsys, "index.csv has 8 rows for the 12 images")


def test_an_index_cut_inside_its_last_row_is_named(built, capsys):
    items, dest, reference = built
    csv = dest / "index.csv"
    csv.write_bytes(csv.read_bytes()[:-15])
    with pytest.raises(ValueError, match=r"damaged store: .*index\.csv does not end with a line break"):
        load_store(dest)  # pandas reads the half row as a row: 12 rows, the count alone would pass
    rebuilt_after_damage(items, dest, reference, capsys, "its last row is cut short")


def test_stats_that_disagree_with_the_images_are_named(built, capsys):
    items, dest, reference = built
    stats = json.loads((dest / "stats.json").read_text())
    (dest / "stats.json").write_text(json.dumps({**stats, "n": 10}))
    with pytest.raises(
        ValueError, match=r"images\.npy holds uint8 \(12, 32, 32\), but stats\.json says uint8 \(10, 32, 32\)"
    ):
        load_store(dest)
    (dest / "index.csv").unlink()
    (dest / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(ValueError, match=r"damaged store: .*index\.csv is missing"):
        load_store(dest)
    rebuilt_after_damage(items, dest, reference, capsys, "index.csv is missing")
