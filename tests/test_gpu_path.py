"""CPU tests of what issue 16 found would break on a GPU: resuming a run saved on another kind of device (or
with its index moved to the host), validation in fp32 under mixed-precision training, the out-of-memory
message and the memory it frees, a smaller batch after running out of memory, checkpoint writes in the
background and the epoch time that includes them, the free-memory check, the large-GPU recipe and the torch
lower bound. The GPU itself is checked by ``benchmarks/gpu_check.py`` (its dry run: tests/test_gpu_check.py)."""

from __future__ import annotations

import dataclasses
import errno
import gc
import re
import threading
import time
import types
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from helpers.config import CPU_SIZES, FULL_SIZES, get_settings
from helpers.course import pipeline
from helpers.files import DiskFullError
from helpers.training import checkpoints
from helpers.training import loop as loop_module
from helpers.training.checkpoints import RunCheckpoints, derived_seed, load_checkpoint, resume_path
from helpers.training.device_data import DeviceData, _fits_on_device
from helpers.training.inference import logits_for
from helpers.training.loop import fit, make_loss, make_optimisation
from helpers.training.models import breath_cnn
from helpers.xray.augment import GpuAugment

ROOT = Path(__file__).resolve().parents[1]
EXACT_COLUMNS = ["epoch", "train_loss", "val_loss", "val_acc", "val_auc", "lr", "best"]
GIB = 2**30


def _data(n_train=24, n_val=12, size=16, seed=0):
    """uint8 images whose label is visible: positives have a bright square in the upper left."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 120, size=(n_train + n_val, size, size), dtype=np.uint8)
    y = np.arange(n_train + n_val) % 2
    x[y == 1, 2:8, 2:8] += 120
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _model(seed=0, dropout=0.3):
    torch.manual_seed(seed)
    return breath_cnn(n_classes=1, width=4, dropout=dropout)


def _fit(model, **kwargs):
    options = {"epochs": 2, "batch_size": 8, "lr": 1e-2, "device": "cpu", "progress": False}
    options["augment"] = GpuAugment(rotation=15.0)
    return fit(model, *_data(), **{**options, **kwargs})


def _as_if_saved_on(path, generators, **config):
    """Rewrite the resumable state beside ``path`` as a run on a GPU would have saved it: the named generators
    with 16-byte CUDA (Philox) states, and the ``config`` values given (device, order_on, amp ...)."""
    state = resume_path(path)
    payload = torch.load(state, weights_only=True)
    for name in generators:
        payload["meta"]["rng"][name] = torch.arange(16, dtype=torch.uint8)
        payload["meta"]["rng"].setdefault("devices", {})[name] = "cuda"
    payload["meta"]["rng"]["cuda"] = torch.zeros(16, dtype=torch.uint8)
    payload["meta"]["config"].update(config)
    torch.save(payload, state)


# Resuming on another device, or with the index moved to the host


@pytest.mark.parametrize(
    ("generators", "config"),
    [
        (("order", "augment"), {"amp": "bf16", "device": "cuda", "order_on": "cuda"}),  # a GPU run, on a CPU
        (("order",), {"order_on": "cuda"}),  # the films no longer fit on the GPU: the index is on the host
    ],
    ids=["gpu-run-resumed-on-cpu", "index-moved-to-host"],
)
def test_a_state_that_does_not_fit_the_device_is_reseeded_deterministically_with_a_note(
    tmp_path, capsys, generators, config
):
    first = tmp_path / "a" / "best.pt"
    _fit(_model(), epochs=2, checkpoint_path=first)
    _as_if_saved_on(first, generators, **config)
    second = tmp_path / "b" / "best.pt"
    second.parent.mkdir()
    for name in (first.name, resume_path(first).name):
        (second.parent / name).write_bytes((first.parent / name).read_bytes())
    capsys.readouterr()

    resumed = [_fit(_model(seed=9), epochs=4, checkpoint_path=path, resume=True) for path in (first, second)]
    printed = capsys.readouterr().out
    pd.testing.assert_frame_equal(resumed[0][EXACT_COLUMNS], resumed[1][EXACT_COLUMNS])  # deterministic
    assert resumed[0]["epoch"].tolist() == [1, 2, 3, 4] and np.isfinite(resumed[0]["train_loss"]).all()
    for name in ("order", "augment"):
        note = re.search(
            rf"note: best\.last\.pt: the '{name}' generator was saved on cuda \(16-byte state\)", printed
        )
        assert (note is not None) == (name in generators), (name, printed)
    assert f"derived_seed(0, 'order', 2) = {derived_seed(0, 'order', 2)}" in printed
    saved = ", ".join(f"{k}={v!r}" for k, v in config.items())
    assert f"saved with {saved}, continuing with " in printed
    assert load_checkpoint(resume_path(first))[1]["config"]["device"] == "cpu"  # the new run's, from now on


def test_resume_reseeds_exactly_the_generators_that_do_not_fit(tmp_path):
    path = tmp_path / "best.pt"
    x, y, _, _ = _data()
    data = DeviceData(x, y.astype(np.float32), "cpu")
    model = _model()
    opt = make_optimisation(model, data, lr=0.01, weight_decay=0.0, amp="off", channels_last=False, seed=3)
    settings = {"batch_size": 8, "seed": 3}
    RunCheckpoints(path, settings, {}).end_epoch(model, opt, [{"epoch": 1}], 0.5, improved=True)
    augment_state = opt.generators["augment"].get_state()
    _as_if_saved_on(path, ["order"])
    fresh = make_optimisation(
        _model(1), data, lr=0.01, weight_decay=0.0, amp="off", channels_last=False, seed=4
    )
    RunCheckpoints(path, settings, {}).resume(_model(1), fresh)
    expected = torch.Generator().manual_seed(derived_seed(3, "order", 1)).get_state()
    assert torch.equal(fresh.generators["order"].get_state(), expected)
    assert torch.equal(fresh.generators["augment"].get_state(), augment_state)  # this one fits: restored
    assert derived_seed(3, "order", 1) != derived_seed(3, "order", 2) != derived_seed(4, "order", 1)
    assert 0 <= derived_seed(3, "order", 1) < 2**63


@pytest.mark.parametrize("saved_fused", [False, True], ids=["cpu-adam-to-fused", "fused-adam-to-cpu"])
def test_resume_keeps_the_optimizer_implementation_of_this_device(tmp_path, saved_fused):
    """Fused Adam is a GPU run's choice; a state it saved resumes into this device's Adam, and back."""
    x, y, _, _ = _data()
    data = DeviceData(x, y.astype(np.float32), "cpu")

    def optimisation(model, fused):
        opt = make_optimisation(
            model, data, lr=0.01, weight_decay=0.0, amp="off", channels_last=False, seed=0
        )
        return dataclasses.replace(opt, optimizer=torch.optim.Adam(model.parameters(), lr=0.01, fused=fused))

    model, loss_fn = _model(), make_loss(1, y, None, None, "cpu")
    opt = optimisation(model, saved_fused)
    loop_module.train_one_epoch(model, data, loss_fn, opt, 8)
    settings = {"batch_size": 8, "seed": 0}
    RunCheckpoints(tmp_path / "best.pt", settings, {}).end_epoch(model, opt, [{"epoch": 1}], 0.5, True)
    fresh_model = _model(seed=1)
    fresh = optimisation(fresh_model, not saved_fused)
    RunCheckpoints(tmp_path / "best.pt", settings, {}).resume(fresh_model, fresh)
    assert bool(fresh.optimizer.param_groups[0]["fused"]) is (not saved_fused)
    steps = [state["step"] for state in fresh.optimizer.state.values()]
    assert all(float(step) == 3 and step.dtype == torch.float32 for step in steps)
    loop_module.train_one_epoch(fresh_model, data, loss_fn, fresh, 8)  # and it trains on


# Validation in fp32


def test_validation_runs_in_fp32_when_the_training_uses_bf16_autocast(tmp_path):
    model = _model(dropout=0.0)
    seen = []
    model.fc.register_forward_hook(lambda module, args, out: seen.append((module.training, out.dtype)))
    history = _fit(model, epochs=1, amp="bf16", restore_best=False, checkpoint_path=tmp_path / "m.pt")
    assert {dtype for training, dtype in seen if training} == {torch.bfloat16}  # the training used autocast
    assert {dtype for training, dtype in seen if not training} == {torch.float32}  # validation did not
    _, _, vx, vy = _data()
    val = DeviceData(vx, vy.astype(np.float32), "cpu")
    logits = logits_for(model, val, batch_size=16)  # fp32, as notebook 03 evaluates
    loss_fn = make_loss(1, _data()[1], "auto", None, "cpu")
    assert history["val_loss"].iloc[0] == pytest.approx(float(loss_fn(logits, val.labels)), rel=1e-6)
    assert history["val_auc"].iloc[0] == roc_auc_score(vy, logits[:, 0].numpy())
    assert load_checkpoint(tmp_path / "m.pt")[1]["precision"] == "bf16"


# Out of GPU memory


def _oom(*args, **kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_while_copying_the_films_says_so_and_that_a_smaller_batch_does_not_help(monkeypatch):
    monkeypatch.setattr(loop_module, "DeviceData", _oom)
    with pytest.raises(torch.cuda.OutOfMemoryError) as info:
        _fit(_model())
    message = str(info.value)
    assert "Tried to allocate 2.00 GiB" in message and "while copying the films to it" in message
    assert "A smaller batch_size does not help here" in message and "Restart session" in message


def test_out_of_memory_frees_what_the_run_held_and_says_a_smaller_batch_resumes(tmp_path, monkeypatch):
    made = []

    class Recorded(DeviceData):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(weakref.ref(self))

    steps, original = [], loop_module.train_step

    def step_then_oom(*args, **kwargs):
        steps.append(1)
        return _oom() if len(steps) > 3 else original(*args, **kwargs)  # in the second epoch

    monkeypatch.setattr(loop_module, "DeviceData", Recorded)
    monkeypatch.setattr(loop_module, "train_step", step_then_oom)
    path = tmp_path / "model.pt"
    with pytest.raises(torch.cuda.OutOfMemoryError) as info:
        _fit(_model(), epochs=3, checkpoint_path=path)
    gc.collect()
    assert len(made) == 2 and all(ref() is None for ref in made), "the error still holds the run's data"
    message = str(info.value)
    assert "while training with batch_size=8" in message and "fit(..., batch_size=4)" in message
    assert (
        f"saved beside {path}: with resume=True the run continues from them at the smaller batch" in message
    )
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_a_smaller_batch_resumes_after_running_out_of_memory(tmp_path, monkeypatch, capsys):
    steps, original = [], loop_module.train_step

    def step_then_oom(*args, **kwargs):
        steps.append(1)
        return _oom() if len(steps) > 3 else original(*args, **kwargs)

    monkeypatch.setattr(loop_module, "train_step", step_then_oom)
    path = tmp_path / "model.pt"
    with pytest.raises(torch.cuda.OutOfMemoryError):
        _fit(_model(), epochs=3, checkpoint_path=path)
    monkeypatch.setattr(loop_module, "train_step", original)
    full = _fit(_model(), epochs=3, checkpoint_path=tmp_path / "full.pt")
    capsys.readouterr()
    resumed = _fit(_model(), epochs=3, checkpoint_path=path, resume=True, batch_size=4)
    assert "saved with batch_size=8, continuing with batch_size=4" in capsys.readouterr().out
    assert resumed["epoch"].tolist() == [1, 2, 3]
    pd.testing.assert_frame_equal(resumed[EXACT_COLUMNS].iloc[:1], full[EXACT_COLUMNS].iloc[:1])  # kept
    assert load_checkpoint(resume_path(path))[1]["config"]["batch_size"] == 4
    with pytest.raises(ValueError, match=r"other settings \{'lr'"):  # what is learnt may not change
        _fit(_model(), epochs=4, checkpoint_path=path, resume=True, batch_size=4, lr=1e-3)


def test_the_free_memory_check_counts_what_pytorch_caches(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * GIB, 16 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 6 * GIB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: GIB)
    cuda = torch.device("cuda")
    assert _fits_on_device(5 * GIB, cuda, None)  # 5 + 3.2 reserve <= 4 free + 5 cached
    assert not _fits_on_device(6 * GIB, cuda, None)


# Checkpoint writes and the epoch time


def test_checkpoints_are_written_in_the_background_and_the_epoch_time_includes_them(tmp_path, monkeypatch):
    threads, save, evaluate = [], checkpoints.torch.save, loop_module.evaluate

    def slow_save(*args, **kwargs):
        threads.append(threading.current_thread().name)
        time.sleep(0.15)
        return save(*args, **kwargs)

    def slow_evaluate(*args, **kwargs):
        time.sleep(0.1)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "save", slow_save)
    monkeypatch.setattr(loop_module, "evaluate", slow_evaluate)
    path = tmp_path / "best.pt"
    history = _fit(_model(), epochs=3, checkpoint_path=path)
    assert set(threads) == {"checkpoint-writer"} and len(threads) >= 4  # 3 states and the first best epoch
    training = 24 / history["images_per_s"]  # 3 batches of 8
    assert (history["seconds"] >= training + 0.1).all()  # validation is part of the epoch ...
    # ... and so is the wait for the previous epoch's files (2 x 0.15 s after epoch 1) when they are not done
    assert history["seconds"].iloc[1] >= 0.3
    saved = pd.DataFrame(load_checkpoint(resume_path(path))[1]["history"])[history.columns]
    pd.testing.assert_frame_equal(saved, history)  # fit waited for the last files; the same seconds


def test_a_failed_background_write_is_raised_by_fit(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints.torch, "save", full_disk)
    with pytest.raises(DiskFullError, match=r"disk full while writing the checkpoint .*best"):
        _fit(_model(), epochs=2, checkpoint_path=tmp_path / "best.pt")
    assert list(tmp_path.iterdir()) == []  # no temporary left behind


# The large-GPU recipe and the torch version


def _fake_gpu(monkeypatch, major, memory_gib):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    props = types.SimpleNamespace(major=major, minor=0, total_memory=memory_gib * GIB)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)


def test_full_mode_on_a_large_gpu_trains_with_large_batches_at_a_scaled_learning_rate(monkeypatch):
    full = dataclasses.replace(get_settings(), mode="full", sizes=FULL_SIZES)
    cpu = dataclasses.replace(get_settings(), mode="cpu", sizes=CPU_SIZES)
    _fake_gpu(monkeypatch, 9, 80)  # H100
    large = pipeline.xray_training_config(full)
    assert (large["batch_size"], large["lr"]) == (256, 2e-4)  # 1e-4 x sqrt(256 / 64)
    assert pipeline.xray_training_config(cpu)["batch_size"] == CPU_SIZES.batch_size  # full mode only
    h100_path = pipeline.checkpoint_path(full)
    for major, memory in ((7, 15), (8, 22), (8, 24)):  # T4, L4, a 24 GB card
        _fake_gpu(monkeypatch, major, memory)
        config = pipeline.xray_training_config(full)
        assert (config["batch_size"], config["lr"]) == (64, 1e-4), (major, memory)
    assert pipeline.checkpoint_path(full) != h100_path  # another recipe, another checkpoint


def test_compilation_is_off_by_default_and_takes_a_mode(monkeypatch):
    modes = []
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: modes.append(mode) or model)
    _fit(_model(), epochs=1)
    _fit(_model(), epochs=1, compile="reduce-overhead")  # CUDA graphs on a GPU
    _fit(_model(), epochs=1, compile=True)
    assert modes == ["reduce-overhead", None]


def test_the_torch_lower_bound_has_the_amp_api_the_loop_uses():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"torch>=2.3"' in text and '"torchvision>=0.18"' in text  # torch.amp.GradScaler("cuda"): 2.3
    assert torch.amp.GradScaler("cpu", enabled=False) is not None
