"""Tests of helpers.training.loop (with helpers.training.device_data and helpers.training.checkpoints): the training loop,
resuming, checkpoints, batched prediction. Tiny models and 16 x 16 / 32 x 32 images keep it fast."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import torch

import helpers.training.checkpoints as checkpoints
from helpers.xray.augment import GpuAugment
from helpers.training.device_data import DeviceData, _fits_on_device
from helpers.training.models import breath_cnn, resnet18_xray
from helpers.training.loop import (
    HISTORY_COLUMNS,
    compute_pos_weight,
    fit,
    load_checkpoint,
    predict_logits,
    predict_proba,
    resolve_amp,
    save_checkpoint,
    train_step,
)

EXACT_COLUMNS = ["epoch", "train_loss", "val_loss", "val_acc", "val_auc", "lr", "best"]  # not the timings


def _binary_data(n_train=24, n_val=12, size=16, seed=0):
    """uint8 images whose label is visible: positives have a bright square in the upper left."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 120, size=(n_train + n_val, size, size), dtype=np.uint8)
    y = np.arange(n_train + n_val) % 2
    x[y == 1, 2:8, 2:8] += 120
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _tiny_model(n_classes=1, seed=0):
    torch.manual_seed(seed)
    return breath_cnn(n_classes=n_classes, width=4, dropout=0.3)


def _fit(model, data, **kwargs):
    options = {"epochs": 2, "batch_size": 8, "lr": 1e-2, "device": "cpu", "progress": False}
    return fit(model, *data, **{**options, **kwargs})


def test_compute_pos_weight_is_negatives_over_positives():
    assert compute_pos_weight([0, 0, 0, 1]) == 3.0
    assert compute_pos_weight(np.array([1, 1, 0, 1, 0])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="pos_weight needs both classes in the training labels, got 0 of 3"):
        compute_pos_weight([0, 0, 0])


def test_one_training_step_changes_the_weights():
    torch.manual_seed(0)
    model = resnet18_xray()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y, vx, vy = _binary_data(n_train=8, n_val=4, size=32)
    history = _fit(model, (x, y, vx, vy), epochs=1, lr=1e-3)
    after = model.state_dict()
    for name in ("conv1.weight", "layer4.1.conv2.weight", "fc.weight", "fc.bias", "bn1.running_mean"):
        assert not torch.equal(before[name], after[name]), name
    assert int(after["bn1.num_batches_tracked"]) == 1  # exactly one step: 8 images, batch 8
    assert list(history.columns) == HISTORY_COLUMNS and len(history) == 1


def test_train_step_returns_a_detached_device_loss():
    model = _tiny_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def loss(logits, y):
        return loss_fn(logits[:, 0], y)

    value = train_step(model, torch.randn(4, 1, 16, 16), torch.tensor([0.0, 1.0, 0.0, 1.0]), loss, optimizer)
    assert value.shape == () and not value.requires_grad and value > 0


def test_fit_history_and_auto_pos_weight_in_the_checkpoint(tmp_path):
    x, y, vx, vy = _binary_data()
    y = y.copy()
    y[:6] = 0  # 15 negatives, 9 positives
    labels_before = y.copy()
    path = tmp_path / "best.pt"
    history = _fit(
        _tiny_model(), (x, y, vx, vy), epochs=3, checkpoint_path=path, checkpoint_meta={"split": "a"}
    )
    assert list(history.columns) == HISTORY_COLUMNS
    assert history["epoch"].tolist() == [1, 2, 3] and bool(history["best"].iloc[0])
    assert history["lr"].tolist() == [1e-2] * 3
    assert ((history["val_acc"] >= 0) & (history["val_acc"] <= 1)).all()
    assert (history["images_per_s"] > 0).all()
    np.testing.assert_array_equal(y, labels_before)  # the caller's labels are not touched
    model, meta = load_checkpoint(path)
    assert meta["pos_weight"] == pytest.approx(15 / 9)
    assert meta["architecture"] == "breath_cnn" and meta["split"] == "a"
    assert (meta["mean"], meta["std"], meta["image_size"], meta["num_classes"]) == (0.5, 0.25, [16, 16], 1)
    best_epoch = int(history.loc[history["best"], "epoch"].iloc[-1])
    assert meta["epoch"] == best_epoch and len(meta["history"]) == best_epoch
    assert meta["metrics"]["val_auc"] == history["val_auc"].iloc[best_epoch - 1]


def test_fit_is_deterministic_on_cpu():
    data = _binary_data()
    augment = GpuAugment(rotation=15.0)
    model_a, model_b, model_c = _tiny_model(), _tiny_model(), _tiny_model()
    a = _fit(model_a, data, augment=augment, seed=3)
    b = _fit(model_b, data, augment=augment, seed=3)
    c = _fit(model_c, data, augment=augment, seed=4)
    pd.testing.assert_frame_equal(a[EXACT_COLUMNS], b[EXACT_COLUMNS])
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert a["train_loss"].tolist() != c["train_loss"].tolist()


class _InterruptingAugment(GpuAugment):
    """A GpuAugment that raises KeyboardInterrupt on its n-th call, like a learner pressing stop."""

    def __init__(self, stop_at_call: int):
        super().__init__(rotation=15.0)
        self.calls, self.stop_at_call = 0, stop_at_call

    def __call__(self, images, generator=None):
        self.calls += 1
        if self.calls == self.stop_at_call:
            raise KeyboardInterrupt
        return super().__call__(images, generator)


def test_resume_after_an_interruption_gives_the_uninterrupted_history(tmp_path):
    data = _binary_data()  # 24 images, batch 8: 3 steps per epoch
    options = {"epochs": 4, "monitor": "val_loss"}
    full_model = _tiny_model()
    full = _fit(
        full_model, data, augment=GpuAugment(rotation=15.0), checkpoint_path=tmp_path / "a.pt", **options
    )

    path = tmp_path / "b.pt"
    with pytest.raises(KeyboardInterrupt):  # stopped in the middle of epoch 3
        _fit(
            _tiny_model(), data, augment=_InterruptingAugment(stop_at_call=8), checkpoint_path=path, **options
        )
    _, state = load_checkpoint(tmp_path / "b.last.pt")
    assert [row["epoch"] for row in state["history"]] == [1, 2]

    resumed_model = _tiny_model(seed=99)  # a fresh process would build a new, differently initialised model
    resumed = _fit(
        resumed_model, data, augment=GpuAugment(rotation=15.0), checkpoint_path=path, resume=True, **options
    )
    pd.testing.assert_frame_equal(resumed[EXACT_COLUMNS], full[EXACT_COLUMNS])
    for p_full, p_resumed in zip(full_model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(p_full, p_resumed)  # both hold the best epoch's weights

    # A complete run resumes instantly: no training step (the augment would raise) and the same history.
    again = _fit(
        _tiny_model(), data, augment=_InterruptingAugment(1), checkpoint_path=path, resume=True, **options
    )
    pd.testing.assert_frame_equal(again, resumed)
    with pytest.raises(
        ValueError, match=r"b\.last\.pt: cannot resume, the saved run used other settings .*'lr'"
    ):
        _fit(_tiny_model(), data, checkpoint_path=path, resume=True, epochs=5, lr=1e-3)


def test_no_per_step_host_sync_in_the_loop(monkeypatch):
    """The loop reads values from the device (.item()) a fixed number of times per epoch, not per step."""
    calls = []
    original_item = torch.Tensor.item

    def counting_item(self):
        if sys._getframe(1).f_globals.get("__name__", "").startswith("helpers."):
            calls.append(1)
        return original_item(self)

    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    counts = []
    for n_train in (8, 32):  # 1 and 4 steps per epoch
        calls.clear()
        _fit(_tiny_model(), _binary_data(n_train=n_train), epochs=2)
        counts.append(len(calls))
    assert counts[0] == counts[1] == 4  # train loss and validation loss, per epoch


def test_multiclass_fit_with_breath_cnn_on_float_patches():
    rng = np.random.default_rng(0)
    n, k = 48, 3
    y = np.arange(n) % k
    x = rng.normal(0, 1, size=(n, 24, 16)).astype(np.float32)
    for c in range(k):  # class c: a bright band of mel bins
        x[y == c, :, 5 * c : 5 * c + 4] += 3.0
    model = _tiny_model(n_classes=k)
    history = fit(
        model,
        x[:36],
        y[:36],
        x[36:],
        y[36:],
        epochs=6,
        batch_size=12,
        lr=2e-2,
        mean=0.0,
        std=1.0,
        class_weights="auto",
        monitor="val_acc",
        device="cpu",
        progress=False,
    )
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert np.isfinite(history["val_auc"]).all() and history["val_acc"].max() > 0.5
    probs = predict_proba(model, x[36:], mean=0.0, std=1.0, batch_size=5)
    assert probs.shape == (12, k)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match=r"train_y must hold class indices 0..2, found \[0 1 2 3\]"):
        fit(model, x[:4], np.arange(4), x[:4], np.arange(4) % 3, epochs=1, device="cpu", num_classes=3)


def test_predict_proba_normalises_like_training_and_applies_the_sigmoid():
    model = _tiny_model().eval()
    x, *_ = _binary_data(n_train=10)
    logits = predict_logits(model, x, mean=0.4, std=0.2, batch_size=3)
    with torch.no_grad():
        expected = model((torch.from_numpy(x[:, None]).float() / 255 - 0.4) / 0.2)
    assert logits.shape == (10, 1)
    np.testing.assert_allclose(logits, expected.numpy(), rtol=1e-5, atol=1e-6)
    probs = predict_proba(model, x, mean=0.4, std=0.2)
    assert probs.shape == (10,)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits[:, 0])), rtol=1e-5)


def test_fit_rejects_bad_arguments():
    data = _binary_data()
    bad_labels = (data[0], np.full(24, 2), data[2], data[3])
    with pytest.raises(ValueError, match=r"train_y must hold 0/1 labels for a 1-logit model, found \[2\]"):
        _fit(_tiny_model(), bad_labels)
    with pytest.raises(ValueError, match="monitor must be one of"):
        _fit(_tiny_model(), data, monitor="accuracy")
    with pytest.raises(ValueError, match="resume=True needs a checkpoint_path"):
        _fit(_tiny_model(), data, resume=True)


def test_device_data_inputs(tmp_path):
    images = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(10, 6, 5))
    images[:] = np.arange(10, dtype=np.uint8)[:, None, None]
    images.flush()
    memmap = np.load(tmp_path / "x.npy", mmap_mode="r")
    data = DeviceData(memmap, np.arange(10) % 2, "cpu")
    assert (data.image_shape, data.scale, data.on_device, len(data)) == ((1, 6, 5), 1 / 255, False, 10)
    batches = list(data.batches(4, torch.tensor([9, 0, 3, 4, 5, 6, 7, 8, 1, 2]), drop_last=True))
    assert len(batches) == 2
    first_x, first_y = batches[0]
    assert first_x.dtype == torch.uint8 and first_x[:, 0, 0, 0].tolist() == [9, 0, 3, 4]
    assert first_y.tolist() == [1, 0, 1, 0]
    assert DeviceData(np.zeros((3, 2, 4, 4), np.float32), device="cpu").scale == 1.0
    with pytest.raises(ValueError, match="images must be uint8 .0-255. or float, got dtype int32"):
        DeviceData(np.zeros((3, 4, 4), np.int32), device="cpu")
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\), got \(2,\)"):
        DeviceData(np.zeros((3, 4, 4), np.uint8), [0, 1], device="cpu")


def test_gpu_memory_check_keeps_a_reserve(monkeypatch):
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * gib, 16 * gib))
    cuda = torch.device("cuda")
    assert _fits_on_device(6 * gib, cuda, None)  # reserve max(2 GiB, 20 % of 16 GiB = 3.2 GiB)
    assert not _fits_on_device(7 * gib, cuda, None)
    assert _fits_on_device(7 * gib, cuda, reserve_bytes=gib)


def test_resolve_amp(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None and resolve_amp("off", cpu) is None
    assert resolve_amp("bf16", cpu) is torch.bfloat16 and resolve_amp("fp16", cpu) is torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # T4
    assert resolve_amp("auto", torch.device("cuda")) is torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))  # A100
    assert resolve_amp(True, torch.device("cuda")) is torch.bfloat16
    with pytest.raises(ValueError, match="amp must be 'auto', 'bf16', 'fp16' or 'off', got 'fp8'"):
        resolve_amp("fp8", cpu)


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
    model = _tiny_model(n_classes=3)
    history = pd.DataFrame({"epoch": [1, 2], "val_auc": [0.5, 0.75], "best": [True, False]})
    path = save_checkpoint(tmp_path / "c.pt", model, mean=np.float32(0.5), history=history, folder=tmp_path)
    raw = torch.load(path, weights_only=True)  # plain tensors and Python types only
    assert raw["meta"]["history"] == [
        {"epoch": 1, "val_auc": 0.5, "best": True},
        {"epoch": 2, "val_auc": 0.75, "best": False},
    ]
    assert raw["meta"]["folder"] == str(tmp_path) and isinstance(raw["meta"]["mean"], float)
    rebuilt, meta = load_checkpoint(path)
    assert meta["architecture"] == "breath_cnn" and meta["architecture_kwargs"]["n_classes"] == 3
    for name, tensor in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], tensor), name


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


def test_recalibrate_batchnorm_gives_the_exact_statistics_of_the_data_and_restores_the_model():
    from helpers.training.loop import recalibrate_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, bias=False), torch.nn.BatchNorm2d(3), torch.nn.Dropout()
    )
    model[1].momentum = 0.3
    model.train()
    images = np.random.default_rng(0).integers(0, 256, size=(20, 8, 8), dtype=np.uint8)
    data = DeviceData(images, device="cpu")
    weights = [p.detach().clone() for p in model.parameters()]
    assert recalibrate_batchnorm(model, data, mean=0.5, std=0.25, batch_size=5) == 1
    with torch.no_grad():
        conv = model[0](torch.from_numpy(images).float()[:, None] / 255 * 4 - 2)  # (x/255 - 0.5) / 0.25
    torch.testing.assert_close(model[1].running_mean, conv.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    per_batch_var = torch.stack([c.var(dim=(0, 2, 3)) for c in conv.split(5)])  # unbiased, as BatchNorm keeps
    torch.testing.assert_close(model[1].running_var, per_batch_var.mean(dim=0), rtol=1e-4, atol=1e-5)
    assert model[1].momentum == 0.3 and all(m.training for m in model.modules())
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters(), strict=True))
    assert recalibrate_batchnorm(torch.nn.Linear(2, 1), data, 0.5, 0.25) == 0  # no BatchNorm: nothing to do


def test_few_step_training_with_recalibrated_batchnorm_evaluates_sanely():
    """Two steps of a ResNet18: eval-mode BatchNorm with momentum-0.1 running averages gives absurd logits;
    recalibrated, the validation loss stays near the training loss."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 120, size=(40, 32, 32), dtype=np.uint8)
    y = np.arange(40) % 2
    x[y == 1, 4:14, 4:14] += 120
    losses = {}
    for recalibrate in (False, True):
        torch.manual_seed(0)
        history = _fit(
            resnet18_xray(), (x[:32], y[:32], x[32:], y[32:]), epochs=1, batch_size=16, lr=1e-3,
            recalibrate_bn=recalibrate,
        )  # fmt: skip
        losses[recalibrate] = history.loc[0, ["train_loss", "val_loss"]].to_numpy(float)
    assert losses[True][1] < 3 * max(losses[True][0], 0.7)
    assert losses[False][1] > losses[True][1]


def test_augment_options_override_the_augmentation_and_are_part_of_the_resumable_settings(tmp_path):
    data = _binary_data()
    seen = []

    class Spy(GpuAugment):
        def replace(self, **changes):
            seen.append(changes)
            return super().replace(**changes)

    options = {"augment_options": {"padding_mode": "border"}, "recalibrate_bn": True}
    path = tmp_path / "c.pt"
    _fit(_tiny_model(), data, augment=Spy(), checkpoint_path=path, **options)
    assert seen == [{"padding_mode": "border"}]
    _, state = load_checkpoint(tmp_path / "c.last.pt")
    assert state["config"]["augment_options"] == {"padding_mode": "border"}
    assert state["config"]["recalibrate_bn"] is True
    with pytest.raises(ValueError, match="augment_options"):  # other settings: no silent resume
        _fit(
            _tiny_model(), data, augment=GpuAugment(), checkpoint_path=path, resume=True, recalibrate_bn=True
        )
    with pytest.raises(ValueError, match="needs a GpuAugment"):
        _fit(_tiny_model(), data, augment=None, augment_options={"padding_mode": "border"})


def test_out_of_gpu_memory_says_what_to_do_and_keeps_the_finished_epochs(tmp_path, monkeypatch):
    from helpers.training import loop as train_module

    original, steps = train_module.train_step, []

    def step_then_oom(*args, **kwargs):
        steps.append(1)
        if len(steps) > 3:  # the second epoch (3 steps each) runs out of memory
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", step_then_oom)
    path = tmp_path / "model.pt"
    with pytest.raises(
        torch.cuda.OutOfMemoryError, match=r"(?s)Tried to allocate.*batch_size=8.*Restart session"
    ):
        _fit(_tiny_model(), _binary_data(), checkpoint_path=path, epochs=3)
    resumed_steps = []

    def counting(*args, **kwargs):
        resumed_steps.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", counting)
    history = _fit(_tiny_model(), _binary_data(), checkpoint_path=path, epochs=3, resume=True)
    assert list(history["epoch"]) == [1, 2, 3]
    assert len(resumed_steps) == 6, "epoch 1 was kept: the resumed run trained only epochs 2 and 3"
