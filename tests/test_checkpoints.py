"""Tests of helpers.training.checkpoints: safe, atomic checkpoint files and RunCheckpoints, the state that lets a
training run resume exactly where it stopped. Tiny breath CNNs on 16 x 16 images keep it fast."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import helpers.training.checkpoints as checkpoints
from helpers.files import STALE_TMP_S, DiskFullError
from helpers.training.checkpoints import RunCheckpoints, load_checkpoint, resume_path, save_checkpoint
from helpers.training.device_data import DeviceData
from helpers.training.loop import make_loss, make_optimisation, train_one_epoch
from helpers.training.models import breath_cnn, resnet18_xray
from helpers.xray.augment import GpuAugment

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"batch_size": 8, "lr": 0.01, "seed": 0, "augment": dataclasses.asdict(GpuAugment(rotation=15.0))}


def _tiny_model(n_classes=1, seed=0, **kwargs):
    torch.manual_seed(seed)
    return breath_cnn(n_classes=n_classes, width=4, **kwargs)


def _data(n=24, size=16, seed=0):
    """uint8 images whose label is visible: positives have a bright square in the upper left."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 120, size=(n, size, size), dtype=np.uint8)
    y = np.arange(n) % 2
    x[y == 1, 2:8, 2:8] += 120
    return DeviceData(x, y.astype(np.float32), "cpu")


def _optimisation(model, data, seed=0):
    return make_optimisation(
        model, data, lr=0.01, weight_decay=0.0, amp="off", channels_last=False, seed=seed
    )


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# save_checkpoint / load_checkpoint


def test_a_failing_save_leaves_the_old_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    model = _tiny_model()
    save_checkpoint(path, model, note="first")
    old_bytes = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoints.torch, "save", broken_save)
    with pytest.raises(OSError, match="No space left on device"):
        save_checkpoint(path, model, note="second")
    assert path.read_bytes() == old_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_checkpoints_load_with_weights_only_and_rebuild_the_model(tmp_path):
    model = _tiny_model(n_classes=3, mean=0.25, std=2.0)
    history = pd.DataFrame({"epoch": [1, 2], "val_auc": [0.5, 0.75], "best": [True, False]})
    path = save_checkpoint(
        tmp_path / "c.pt", model, threshold=np.float32(0.5), history=history, folder=tmp_path
    )
    raw = torch.load(path, weights_only=True)  # plain tensors and Python types only
    assert raw["meta"]["history"] == [
        {"epoch": 1, "val_auc": 0.5, "best": True},
        {"epoch": 2, "val_auc": 0.75, "best": False},
    ]
    assert raw["meta"]["folder"] == str(tmp_path) and isinstance(raw["meta"]["threshold"], float)
    assert "mean" not in raw["meta"] and "std" not in raw["meta"]  # the weights carry them
    assert (
        float(raw["state_dict"]["normalise.mean"]) == 0.25
        and float(raw["state_dict"]["normalise.std"]) == 2.0
    )
    rebuilt, meta = load_checkpoint(path)
    assert meta["architecture"] == "breath_cnn" and meta["architecture_kwargs"]["n_classes"] == 3
    for name, tensor in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], tensor), name
    assert (float(rebuilt.normalise.mean), float(rebuilt.normalise.std)) == (0.25, 2.0)


def test_a_rebuilt_resnet18_gets_the_standardisation_it_was_saved_with(tmp_path):
    path = save_checkpoint(tmp_path / "r.pt", resnet18_xray(mean=0.42, std=0.21))
    rebuilt, meta = load_checkpoint(path)
    assert meta["architecture"] == "resnet18_xray" and meta["architecture_kwargs"] == {}
    assert float(rebuilt.normalise.mean) == pytest.approx(0.42)
    assert float(rebuilt.normalise.std) == pytest.approx(0.21)
    old = {k: v for k, v in torch.load(path, weights_only=True)["state_dict"].items() if "normalise" not in k}
    save_checkpoint(tmp_path / "old.pt", resnet18_xray())  # a checkpoint from before the standardisation ...
    payload = torch.load(tmp_path / "old.pt", weights_only=True)
    payload["state_dict"] = old
    torch.save(payload, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"(?s)old\.pt: the weights do not fit the model.*normalise\.mean"):
        load_checkpoint(tmp_path / "old.pt")  # ... does not load silently with the wrong statistics


class _NotATensor:
    pass


def test_load_checkpoint_refuses_pickles_and_foreign_files(tmp_path):
    pickled = tmp_path / "evil.pt"
    torch.save({"format": checkpoints.CHECKPOINT_FORMAT, "meta": _NotATensor()}, pickled)
    with pytest.raises(
        ValueError, match=r"evil\.pt: not a readable checkpoint \(torch.load with weights_only=True"
    ):
        load_checkpoint(pickled)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match=r"foreign\.pt: not a course checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt: no checkpoint there"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"checkpoint meta\['thing'\] is a _NotATensor"):
        save_checkpoint(tmp_path / "x.pt", _tiny_model(), thing=_NotATensor())
    save_checkpoint(tmp_path / "small.pt", _tiny_model(n_classes=2))
    with pytest.raises(ValueError, match=r"small\.pt: the weights do not fit the model"):
        load_checkpoint(tmp_path / "small.pt", _tiny_model(n_classes=3))
    save_checkpoint(tmp_path / "plain.pt", torch.nn.Linear(2, 1))
    with pytest.raises(ValueError, match=r"plain\.pt: unknown architecture 'Linear'; pass the model"):
        load_checkpoint(tmp_path / "plain.pt")


def test_resume_path_sits_beside_the_best_checkpoint(tmp_path):
    assert resume_path(tmp_path / "best.pt") == tmp_path / "best.last.pt"
    assert resume_path("runs/resnet.v2.pt").as_posix() == "runs/resnet.v2.last.pt"


# full disks, killed saves and damaged files

UNEXPECTED_POS = "[enforce fail at inline_container.cc:672] . unexpected pos 4608 vs 4501"


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    "error",
    [RuntimeError(UNEXPECTED_POS), OSError(errno.ENOSPC, "No space left on device")],
    ids=["torch-unexpected-pos", "enospc"],
)
def test_a_full_disk_raises_disk_full_naming_the_checkpoint(tmp_path, monkeypatch, error):
    path = tmp_path / "model.pt"
    model = _tiny_model()
    save_checkpoint(path, model, note="first")
    old_bytes = path.read_bytes()

    def full_disk_save(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"the first half of a checkpoint")
        raise error

    monkeypatch.setattr(checkpoints.torch, "save", full_disk_save)
    with pytest.raises(DiskFullError, match=r"disk full while writing the checkpoint .*model\.pt") as info:
        save_checkpoint(path, model, note="second")
    assert info.value.errno == errno.ENOSPC and info.value.__cause__ is error
    assert path.read_bytes() == old_bytes
    assert _files(tmp_path) == ["model.pt"]


@contextlib.contextmanager
def _small_tmpfs(folder, size="2m"):
    """A real ``size`` tmpfs mounted on ``folder`` (root with ``mount`` only; the test is skipped otherwise)."""
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount")
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:  # a failing test's traceback may still hold a file open there: then detach it lazily
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.parametrize("checked_first", [True, False], ids=["free-space-checked", "torch-save-fails"])
def test_a_real_full_disk_raises_disk_full_and_keeps_the_old_checkpoint(tmp_path, monkeypatch, checked_first):
    with _small_tmpfs(tmp_path / "small") as folder:
        path = folder / "model.pt"
        save_checkpoint(path, torch.nn.Linear(10, 10))
        old_bytes = path.read_bytes()
        if not checked_first:  # let torch.save run into the full disk itself
            monkeypatch.setattr(checkpoints, "require_free_space", lambda *args: None)
        with pytest.raises(DiskFullError, match=r"disk full.*model\.pt"):
            save_checkpoint(path, torch.nn.Linear(1000, 1000))  # 4 MB of weights on a 2 MB disk
        assert path.read_bytes() == old_bytes
        assert _files(folder) == ["model.pt"]


_KILLED_SAVE = """
import sys, time
import torch
from helpers.training import checkpoints

def slow_save(obj, f, *args, **kwargs):
    with open(f, "wb") as handle:
        handle.write(b"x" * 100_000)
    print("writing", flush=True)
    time.sleep(600)

checkpoints.torch.save = slow_save
checkpoints.save_checkpoint(sys.argv[1], torch.nn.Linear(2, 2))
"""


def _killed_mid_save(path):
    """Start a save of ``path`` in a child process and kill it (SIGKILL) while it writes its temporary."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", _KILLED_SAVE, str(path)], stdout=subprocess.PIPE, env=env)
    try:
        assert child.stdout.readline() == b"writing\n"
    finally:
        child.kill()  # SIGKILL: no finally block of the child runs
        child.wait()  # reaped: its PID is no longer alive
    (tmp,) = path.parent.glob(f".{path.name}.{child.pid}.*.tmp")
    return tmp


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and PIDs of dead processes: POSIX")
@pytest.mark.parametrize("opened_by", ["save_checkpoint", "RunCheckpoints"])
def test_the_temporary_of_a_killed_save_is_removed_next_time(tmp_path, opened_by):
    path = tmp_path / "best.pt"
    tmp = _killed_mid_save(path)
    assert tmp.stat().st_size == 100_000 and not path.exists()
    other = tmp_path / f".other.pt.{os.getppid()}.0123abcd.tmp"  # another checkpoint's: not ours to touch
    other.write_bytes(b"x")
    if opened_by == "save_checkpoint":
        save_checkpoint(path, _tiny_model())
        assert _files(tmp_path) == [other.name, "best.pt"]
    else:
        RunCheckpoints(path, SETTINGS, {})
        assert _files(tmp_path) == [other.name]


def test_only_temporaries_of_dead_or_old_saves_are_removed(tmp_path):
    path = tmp_path / "best.pt"
    live = tmp_path / f".best.pt.{os.getpid()}.0123abcd.tmp"  # a save running now, in this process
    old = tmp_path / f".best.pt.{os.getppid()}.4567abcd.tmp"  # a live PID, but left for hours
    unrelated = tmp_path / ".best.pt.notes.tmp"
    for tmp in (live, old, unrelated):
        tmp.write_bytes(b"x")
    hours_ago = time.time() - STALE_TMP_S - 3600
    os.utime(old, (hours_ago, hours_ago))
    assert checkpoints.remove_stale_temporaries(path) == [old]
    assert _files(tmp_path) == sorted([live.name, unrelated.name])


def test_an_empty_checkpoint_says_so_and_what_to_do(tmp_path):
    path = tmp_path / "best.pt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"best\.pt: the checkpoint is empty \(0 bytes\).*delete it"):
        load_checkpoint(path, _tiny_model())
    state = RunCheckpoints(path, SETTINGS, {})
    resume_path(path).write_bytes(b"")
    with pytest.raises(ValueError, match=r"best\.last\.pt: the checkpoint is empty \(0 bytes\).*delete it"):
        state.resume(_tiny_model(), None)


@pytest.mark.parametrize("keep", [0.5, 0.01, 0.99])
def test_a_truncated_checkpoint_says_so_with_its_size_and_what_to_do(tmp_path, keep):
    path = tmp_path / "best.pt"
    save_checkpoint(path, _tiny_model())
    data = path.read_bytes()
    cut = data[: int(len(data) * keep)]
    path.write_bytes(cut)
    pattern = (
        rf"best\.pt: the checkpoint is truncated or corrupt \({len(cut)} bytes; torch\.load: .+\); delete it"
    )
    with pytest.raises(ValueError, match=pattern):
        load_checkpoint(path)


# RunCheckpoints


def test_end_epoch_keeps_the_best_epoch_and_the_resumable_state(tmp_path):
    path = tmp_path / "best.pt"
    run = RunCheckpoints(path, SETTINGS, {"split": "a"})
    model, data = _tiny_model(), _data()
    opt = _optimisation(model, data)
    history = [{"epoch": 1, "val_loss": 0.7}]
    run.end_epoch(model, opt, history, 0.7, improved=True)
    best_weights = _weights(model)
    _, meta = load_checkpoint(path)
    assert (meta["split"], meta["epoch"], meta["metrics"], meta["history"]) == ("a", 1, history[0], history)
    with torch.no_grad():
        model.fc.bias.add_(1.0)
    history = [*history, {"epoch": 2, "val_loss": 0.9}]
    run.end_epoch(model, opt, history, 0.7, improved=False)
    _, meta = load_checkpoint(path)
    assert meta["epoch"] == 1  # not improved: the best file is left as it was ...
    _, state = load_checkpoint(resume_path(path))
    assert [row["epoch"] for row in state["history"]] == [1, 2]  # ... the resumable state is not
    assert state["config"] == SETTINGS and state["best_score"] == 0.7
    assert {"optimizer", "scaler", "rng"} <= set(state) and {"order", "augment", "torch"} <= set(state["rng"])
    run.restore_best(model)
    _assert_same_weights(_weights(model), best_weights)


def test_without_a_path_the_best_weights_are_kept_in_memory(tmp_path, monkeypatch):
    run = RunCheckpoints(None, SETTINGS, {})
    model, data = _tiny_model(), _data()
    opt = _optimisation(model, data)
    saved = []
    monkeypatch.setattr(checkpoints, "save_checkpoint", lambda *a, **k: saved.append(a))
    run.end_epoch(model, opt, [{"epoch": 1}], 0.5, improved=True)
    best = _weights(model)
    with torch.no_grad():
        model.fc.weight.mul_(2.0)  # the kept copy must not follow the model
    run.end_epoch(model, opt, [{"epoch": 1}, {"epoch": 2}], 0.5, improved=False)
    run.restore_best(model)
    _assert_same_weights(_weights(model), best)
    assert saved == [] and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="resume=True needs a checkpoint_path to resume from"):
        run.resume(model, opt)


def test_resume_with_nothing_saved_starts_afresh(tmp_path):
    model, data = _tiny_model(), _data()
    before = _weights(model)
    assert RunCheckpoints(tmp_path / "new.pt", SETTINGS, {}).resume(model, _optimisation(model, data)) == (
        [],
        None,
    )
    _assert_same_weights(_weights(model), before)


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({**SETTINGS, "lr": 0.001}, "lr"),
        ({**SETTINGS, "augment": dataclasses.asdict(GpuAugment(rotation=15.0, hflip=True))}, "augment"),
        ({**SETTINGS, "augment": None}, "augment"),
        ({k: v for k, v in SETTINGS.items() if k != "seed"}, "seed"),  # a dropped setting is a change
        ({**SETTINGS, "recalibrate_bn": True}, "recalibrate_bn"),  # so is a new one
    ],
)
def test_resume_refuses_other_settings_naming_them_and_touches_nothing(tmp_path, settings, name):
    path = tmp_path / "best.pt"
    model, data = _tiny_model(), _data()
    RunCheckpoints(path, SETTINGS, {}).end_epoch(model, _optimisation(model, data), [{"epoch": 1}], 0.5, True)
    other = _tiny_model(seed=1)
    before = _weights(other)
    opt = _optimisation(other, data)
    with pytest.raises(
        ValueError, match=r"best\.last\.pt: cannot resume, the saved run used other settings"
    ) as info:
        RunCheckpoints(path, settings, {}).resume(other, opt)
    message = str(info.value)
    assert f"{{{name!r}: {{'saved': {SETTINGS.get(name)!r}, 'now': {settings.get(name)!r}}}}}" in message
    assert "use resume=False or delete the file" in message
    _assert_same_weights(_weights(other), before)  # a refused resume leaves the model as it was
    assert opt.optimizer.state_dict()["state"] == {}


def test_resume_restores_history_weights_optimizer_and_every_random_generator(tmp_path):
    path = tmp_path / "best.pt"
    data = _data()
    model = _tiny_model()
    opt = _optimisation(model, data, seed=3)
    loss_fn = make_loss(1, data.labels_np, None, None, "cpu")
    train_one_epoch(
        model, data, loss_fn, opt, 8, GpuAugment(rotation=15.0)
    )  # optimizer state, used generators
    torch.manual_seed(123)
    history = [{"epoch": 1, "train_loss": 0.69, "best": True}]
    RunCheckpoints(path, SETTINGS, {}).end_epoch(model, opt, history, 0.69, improved=True)
    saved_weights, saved_adam = _weights(model), opt.optimizer.state_dict()
    draws = (
        torch.randperm(24, generator=opt.generators["order"]),
        torch.rand(5, generator=opt.generators["augment"]),
        torch.rand(5),  # the global RNG (dropout)
    )

    fresh = _tiny_model(seed=9)  # a new process: other weights, other generator states
    fresh_opt = _optimisation(fresh, data, seed=4)
    torch.manual_seed(999)
    assert RunCheckpoints(path, SETTINGS, {}).resume(fresh, fresh_opt) == (history, 0.69)
    _assert_same_weights(_weights(fresh), saved_weights)
    adam = fresh_opt.optimizer.state_dict()
    assert adam["param_groups"] == saved_adam["param_groups"]
    for index, state in saved_adam["state"].items():
        for key, value in state.items():
            assert torch.equal(adam["state"][index][key], value), (index, key)
    again = (
        torch.randperm(24, generator=fresh_opt.generators["order"]),
        torch.rand(5, generator=fresh_opt.generators["augment"]),
        torch.rand(5),
    )
    for a, b in zip(draws, again, strict=True):
        assert torch.equal(a, b)


def _train(path, epochs, stop_after=None, init_seed=0):
    """Epochs of train_one_epoch with RunCheckpoints, as fit runs them (dropout and augmentation draw random
    numbers); ``stop_after`` epochs, the run stops as if interrupted. Returns (history, model)."""
    data = _data()
    model = _tiny_model(seed=init_seed, dropout=0.5)
    torch.manual_seed(0)
    opt = _optimisation(model, data)
    loss_fn = make_loss(1, data.labels_np, "auto", None, "cpu")
    run = RunCheckpoints(path, SETTINGS, {})
    history, best = run.resume(model, opt)
    for epoch in range(len(history), epochs if stop_after is None else stop_after):
        loss, _ = train_one_epoch(model, data, loss_fn, opt, 8, GpuAugment(rotation=15.0))
        improved = best is None or loss < best
        best = loss if improved else best
        history.append({"epoch": epoch + 1, "train_loss": loss})
        run.end_epoch(model, opt, history, best, improved)
    return history, model


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    full_history, full_model = _train(tmp_path / "full.pt", epochs=4)
    path = tmp_path / "stopped.pt"
    stopped, _ = _train(path, epochs=4, stop_after=2)
    assert [row["epoch"] for row in stopped] == [1, 2]
    resumed_history, resumed_model = _train(path, epochs=4, init_seed=7)
    assert resumed_history == full_history
    _assert_same_weights(_weights(resumed_model), _weights(full_model))
    assert len({row["train_loss"] for row in full_history}) == 4  # the epochs differ: it trained
