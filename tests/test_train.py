"""Tests of helpers.training.loop (with helpers.training.device_data and helpers.training.inference): one step,
one epoch, validation, the whole fit with its checkpoints and resuming, prediction as in training. Tiny models
and 16 x 16 / 32 x 32 images keep it fast. The checkpoint files themselves: tests/test_checkpoints.py."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score

from helpers.training.checkpoints import load_checkpoint, resume_path
from helpers.training.device_data import DeviceData, _fits_on_device, prepare_batch
from helpers.training.inference import logits_for, predict
from helpers.training.loop import (
    HISTORY_COLUMNS,
    Optimisation,
    compute_pos_weight,
    evaluate,
    fit,
    make_loss,
    make_optimisation,
    recalibrate_batchnorm,
    resolve_amp,
    train_one_epoch,
    train_step,
)
from helpers.training.models import InputStandardisation, breath_cnn, resnet18_xray
from helpers.xray.augment import GpuAugment

EXACT_COLUMNS = ["epoch", "train_loss", "val_loss", "val_acc", "val_auc", "lr", "best"]  # not the timings


def _binary_data(n_train=24, n_val=12, size=16, seed=0):
    """uint8 images whose label is visible: positives have a bright square in the upper left."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 120, size=(n_train + n_val, size, size), dtype=np.uint8)
    y = np.arange(n_train + n_val) % 2
    x[y == 1, 2:8, 2:8] += 120
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _tiny_model(n_classes=1, seed=0, dropout=0.3, mean=0.0, std=1.0):
    torch.manual_seed(seed)
    return breath_cnn(n_classes=n_classes, width=4, dropout=dropout, mean=mean, std=std)


def _optimisation(model, data, lr=1e-2, seed=0):
    return make_optimisation(model, data, lr=lr, weight_decay=0.0, amp="off", channels_last=False, seed=seed)


class _CountingBar:
    """Stands in for a tqdm bar: counts the updates."""

    def __init__(self):
        self.updates = 0

    def update(self, n=1):
        self.updates += n


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


def test_make_optimisation_on_the_cpu():
    model, data = _tiny_model(), DeviceData(_binary_data()[0], device="cpu")
    opt = make_optimisation(model, data, lr=0.01, weight_decay=0.1, amp="auto", channels_last=True, seed=7)
    assert isinstance(opt, Optimisation) and isinstance(opt.optimizer, torch.optim.Adam)
    group = opt.optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (0.01, 0.1)
    assert [id(p) for p in group["params"]] == [id(p) for p in model.parameters()]
    assert opt.amp_dtype is None and not opt.scaler.is_enabled()  # 'auto' on a CPU: fp32
    assert opt.channels_last is False  # channels_last is for CUDA only
    assert set(opt.generators) == {"order", "augment"}
    assert torch.equal(opt.generators["order"].get_state(), torch.Generator().manual_seed(7).get_state())
    assert torch.equal(opt.generators["augment"].get_state(), torch.Generator().manual_seed(8).get_state())
    half = make_optimisation(model, data, lr=0.01, weight_decay=0.0, amp="fp16", channels_last=False, seed=0)
    assert half.amp_dtype is torch.float16 and half.scaler.is_enabled()  # fp16 needs loss scaling ...
    bf16 = make_optimisation(model, data, lr=0.01, weight_decay=0.0, amp="bf16", channels_last=False, seed=0)
    assert bf16.amp_dtype is torch.bfloat16 and not bf16.scaler.is_enabled()  # ... bf16 does not


def test_train_one_epoch_returns_the_mean_loss_of_its_shuffled_batches():
    """With lr = 0 the weights stay put, so every batch's loss can be recomputed by hand afterwards."""
    x, y, _, _ = _binary_data(n_train=20)
    model = _tiny_model(dropout=0.0)
    data = DeviceData(x, y.astype(np.float32), "cpu")
    loss_fn = make_loss(1, y, 3.0, None, "cpu")  # pos_weight 3
    opt = _optimisation(model, data, lr=0.0, seed=5)
    model.eval()  # train_one_epoch switches to training mode itself
    before = copy.deepcopy(model)
    bar = _CountingBar()
    mean_loss, images_per_s = train_one_epoch(model, data, loss_fn, opt, 8, bar=bar)
    assert model.training and bar.updates == 2 and images_per_s > 0
    order = torch.randperm(20, generator=torch.Generator().manual_seed(5))  # the "order" generator's draw
    losses = []
    with torch.no_grad():
        for rows in (order[:8].numpy(), order[8:16].numpy()):  # the last 4 images are dropped
            logits = before.train()(torch.from_numpy(x[rows][:, None]).float() / 255)[:, 0]
            target = torch.from_numpy(y[rows]).float()
            p = torch.sigmoid(logits)
            losses.append(-(3.0 * target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean())
    assert mean_loss == pytest.approx(float(torch.stack(losses).mean()), rel=1e-5)
    for name, weight in before.named_parameters():
        assert torch.equal(weight, model.get_parameter(name)), name


def test_train_one_epoch_trains_and_advances_its_generators():
    x, y, _, _ = _binary_data()
    model = _tiny_model()
    data = DeviceData(x, y.astype(np.float32), "cpu")
    loss_fn = make_loss(1, y, None, None, "cpu")
    opt = _optimisation(model, data)
    before = {name: w.detach().clone() for name, w in model.named_parameters()}
    states = {name: g.get_state() for name, g in opt.generators.items()}
    first, _ = train_one_epoch(model, data, loss_fn, opt, 8, GpuAugment(rotation=15.0))
    assert math.isfinite(first) and first > 0
    for name, weight in model.named_parameters():
        assert not torch.equal(before[name], weight), name
    for name, generator in opt.generators.items():  # a new order and new transforms next epoch
        assert not torch.equal(states[name], generator.get_state()), name
    losses = [train_one_epoch(model, data, loss_fn, opt, 8)[0] for _ in range(5)]
    assert losses[-1] < first  # it learns the bright square
    augment_state = opt.generators["augment"].get_state()
    train_one_epoch(model, data, loss_fn, opt, 8)  # without augmentation the augment generator is not used
    assert torch.equal(opt.generators["augment"].get_state(), augment_state)


def test_evaluate_gives_the_loss_accuracy_and_auc_computed_by_hand():
    x, y, vx, vy = _binary_data(n_val=15)
    model = _tiny_model()
    _fit(model, (x, y, vx, vy), epochs=2, restore_best=False)  # some training: scores that are not trivial
    model.train()
    running_mean = model.block1[1].running_mean.clone()
    data = DeviceData(vx, vy.astype(np.float32), "cpu")
    loss_fn = make_loss(1, y, 2.0, None, "cpu")  # the validation loss is the (weighted) training loss
    scores = evaluate(model, data, loss_fn, batch_size=4)
    assert model.training and torch.equal(model.block1[1].running_mean, running_mean)  # eval mode inside
    with torch.no_grad():
        logits = copy.deepcopy(model).eval()(torch.from_numpy(vx[:, None]).float() / 255)[:, 0].double()
    target = torch.from_numpy(vy).double()
    p = torch.sigmoid(logits)
    hand_loss = -(2.0 * target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()
    assert set(scores) == {"val_loss", "val_acc", "val_auc"}
    assert scores["val_loss"] == pytest.approx(float(hand_loss), rel=1e-5)
    assert scores["val_acc"] == pytest.approx(float(((logits > 0).numpy() == vy).mean()))
    assert scores["val_auc"] == pytest.approx(roc_auc_score(vy, logits.numpy()))
    one_class = DeviceData(vx[vy == 0], np.zeros((vy == 0).sum(), np.float32), "cpu")
    with warnings.catch_warnings():  # scikit-learn warns that the AUC is undefined
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        assert math.isnan(evaluate(model, one_class, loss_fn, batch_size=4)["val_auc"])  # NaN, no crash


def test_evaluate_with_several_classes_uses_argmax_and_the_macro_auc():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, size=(18, 8, 8)).astype(np.float32)
    y = np.arange(18) % 3
    model = _tiny_model(n_classes=3).eval()
    data = DeviceData(x, y, "cpu")
    loss_fn = make_loss(3, y, None, [1.0, 2.0, 0.5], "cpu")
    scores = evaluate(model, data, loss_fn, batch_size=5)
    with torch.no_grad():
        logits = model(torch.from_numpy(x[:, None]))
    weights = torch.tensor([1.0, 2.0, 0.5])
    target = torch.from_numpy(y)
    picked = -torch.log_softmax(logits, dim=1)[torch.arange(18), target] * weights[target]
    assert scores["val_loss"] == pytest.approx(float(picked.sum() / weights[target].sum()), rel=1e-5)
    assert scores["val_acc"] == pytest.approx(float((logits.argmax(1) == target).float().mean()))
    probs = torch.softmax(logits, dim=1).numpy()
    assert scores["val_auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))


def test_fit_history_and_auto_pos_weight_in_the_checkpoint(tmp_path):
    x, y, vx, vy = _binary_data()
    y = y.copy()
    y[:6] = 0  # 15 negatives, 9 positives
    labels_before = y.copy()
    path = tmp_path / "best.pt"
    history = _fit(
        _tiny_model(mean=0.5, std=0.25),
        (x, y, vx, vy),
        epochs=3,
        checkpoint_path=path,
        checkpoint_meta={"split": "a"},
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
    assert (meta["image_size"], meta["num_classes"], meta["monitor"]) == ([16, 16], 1, "val_auc")
    assert "mean" not in meta and "std" not in meta  # the model's buffers hold them, untouched by training:
    assert (float(model.normalise.mean), float(model.normalise.std)) == (0.5, 0.25)
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
    """GpuAugment(rotation=15.0), same settings, that raises KeyboardInterrupt on its n-th call, like a learner
    pressing stop. GpuAugment is frozen, so the call count lives in a list set past the frozen __setattr__."""

    def __init__(self, stop_at_call: int):
        super().__init__(rotation=15.0)
        object.__setattr__(self, "_count", [0, stop_at_call])

    def __call__(self, images, generator=None):
        self._count[0] += 1
        if self._count[0] == self._count[1]:
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
    with pytest.raises(ValueError, match=r"other settings \{'augment': \{'saved': \{'rotation': 15\.0"):
        _fit(_tiny_model(), data, augment=GpuAugment(), checkpoint_path=path, resume=True, **options)


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


def test_multiclass_fit_with_breath_cnn_on_float_patches(tmp_path):
    rng = np.random.default_rng(0)
    n, k = 48, 3
    y = np.arange(n) % k
    x = rng.normal(0, 1, size=(n, 24, 16)).astype(np.float32)
    for c in range(k):  # class c: a bright band of mel bins
        x[y == c, :, 5 * c : 5 * c + 4] += 3.0
    model = _tiny_model(n_classes=k)
    path = tmp_path / "k.pt"
    history = fit(
        model,
        x[:36],
        y[:36],
        x[36:],
        y[36:],
        epochs=6,
        batch_size=12,
        lr=2e-2,
        class_weights="auto",
        monitor="val_acc",
        device="cpu",
        progress=False,
        checkpoint_path=path,
    )
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert np.isfinite(history["val_auc"]).all() and history["val_acc"].max() > 0.5
    probs = predict(model, x[36:], batch_size=5, device="cpu", progress=False)
    assert probs.shape == (12, k)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    _, meta = load_checkpoint(path)
    assert meta["num_classes"] == k  # found by a forward pass, not passed
    with pytest.raises(ValueError, match=r"train_y must hold class indices 0..2, found \[0 1 2 3\]"):
        fit(model, x[:4], np.arange(4), x[:4], np.arange(4) % 3, epochs=1, device="cpu")


def test_predict_feeds_the_image_like_training_and_the_model_standardises_it():
    model = _tiny_model(mean=0.4, std=0.2).eval()
    x, *_ = _binary_data(n_train=10)
    images = torch.from_numpy(x[:, None]).float() / 255  # the image in [0, 1]
    torch.testing.assert_close(
        prepare_batch(torch.from_numpy(x[:, None]), 1 / 255), images
    )  # training's input
    with torch.no_grad():
        expected = model(images)
        bare = copy.deepcopy(model)  # the same network without its standardisation, fed it by hand:
        bare.normalise = InputStandardisation(0.0, 1.0)
        torch.testing.assert_close(bare((images - 0.4) / 0.2), expected)  # the buffers do (x - 0.4) / 0.2
    logits = logits_for(model, DeviceData(x, device="cpu"), batch_size=3)
    assert logits.shape == (10, 1)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
    probs = predict(model, x, batch_size=3, device="cpu", progress=False)
    assert probs.shape == (10,)
    np.testing.assert_allclose(probs, torch.sigmoid(expected[:, 0]).numpy(), rtol=1e-5)


def test_fit_rejects_bad_arguments():
    data = _binary_data()
    bad_labels = (data[0], np.full(24, 2), data[2], data[3])
    with pytest.raises(ValueError, match=r"train_y must hold 0/1 labels for a 1-logit model, found \[2\]"):
        _fit(_tiny_model(), bad_labels)
    with pytest.raises(ValueError, match="monitor must be one of"):
        _fit(_tiny_model(), data, monitor="accuracy")
    with pytest.raises(ValueError, match="resume=True needs a checkpoint_path"):
        _fit(_tiny_model(), data, resume=True)
    with pytest.raises(
        ValueError, match="fit needs 2 or more training images and 1 or more for validation, got 24 and 0"
    ):
        _fit(_tiny_model(), (data[0], data[1], data[2][:0], data[3][:0]))
    with pytest.raises(ValueError, match="got 1 and 12"):
        _fit(_tiny_model(), (data[0][:1], data[1][:1], data[2], data[3]))
    removed = {"mean", "std", "num_classes", "augment_options"}  # the model and GpuAugment carry these now
    assert not removed & set(inspect.signature(fit).parameters)


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


def test_recalibrate_batchnorm_gives_the_exact_statistics_of_the_data_and_restores_the_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        InputStandardisation(0.5, 0.25),  # the model standardises x / 255 itself
        torch.nn.Conv2d(1, 3, 3, bias=False),
        torch.nn.BatchNorm2d(3),
        torch.nn.Dropout(),
    )
    model[2].momentum = 0.3
    model.train()
    model[3].eval()  # a mixed state that must come back exactly
    images = np.random.default_rng(0).integers(0, 256, size=(20, 8, 8), dtype=np.uint8)
    data = DeviceData(images, device="cpu")
    weights = [p.detach().clone() for p in model.parameters()]
    assert recalibrate_batchnorm(model, data, batch_size=5) == 1
    with torch.no_grad():
        conv = model[1](torch.from_numpy(images).float()[:, None] / 255 * 4 - 2)  # (x/255 - 0.5) / 0.25
    torch.testing.assert_close(model[2].running_mean, conv.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    per_batch_var = torch.stack([c.var(dim=(0, 2, 3)) for c in conv.split(5)])  # unbiased, as BatchNorm keeps
    torch.testing.assert_close(model[2].running_var, per_batch_var.mean(dim=0), rtol=1e-4, atol=1e-5)
    assert model[2].momentum == 0.3 and int(model[2].num_batches_tracked) == 4
    assert [m.training for m in model] == [True, True, True, False] and model.training
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters(), strict=True))
    assert recalibrate_batchnorm(torch.nn.Linear(2, 1), data) == 0  # no BatchNorm: nothing to do


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


def test_the_augmentation_settings_are_part_of_the_resumable_settings(tmp_path):
    data = _binary_data()
    augment = GpuAugment().replace(padding_mode="border")  # what augment_options={"padding_mode": ...} was
    options = {"recalibrate_bn": True, "checkpoint_path": tmp_path / "c.pt"}
    history = _fit(_tiny_model(), data, augment=augment, **options)
    _, state = load_checkpoint(tmp_path / "c.last.pt")
    assert state["config"]["augment"] == dataclasses.asdict(augment)
    assert state["config"]["augment"]["padding_mode"] == "border"
    assert state["config"]["recalibrate_bn"] is True
    for other in (GpuAugment(), None):  # other settings: no silent resume, and the message names them
        with pytest.raises(ValueError, match=r"cannot resume, the saved run used other settings \{'augment'"):
            _fit(_tiny_model(), data, augment=other, resume=True, **options)
    with pytest.raises(ValueError, match=r"other settings \{'recalibrate_bn'"):
        _fit(_tiny_model(), data, augment=augment, resume=True, checkpoint_path=tmp_path / "c.pt")
    # Equal settings written another way are the same augmentation: the complete run resumes as it was.
    same = GpuAugment(rotation=10, translate=0.1, scale=[0.9, 1.1], padding_mode="border")
    resumed = _fit(_tiny_model(), data, augment=same, resume=True, **options)
    pd.testing.assert_frame_equal(resumed, history)


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


def test_resuming_with_other_class_weights_is_refused_and_the_device_and_precision_are_recorded(tmp_path):
    """pos_weight and class_weights change what is learnt: a resume must match them. The device and the
    precision are recorded in both files (a resume may change them, see tests/test_gpu_path.py)."""
    path = tmp_path / "best.pt"
    data = _binary_data()
    _fit(_tiny_model(), data, epochs=1, checkpoint_path=path, pos_weight=1.0)
    with pytest.raises(ValueError, match="'pos_weight': {'saved': 1.0, 'now': 7.0}"):
        _fit(_tiny_model(), data, checkpoint_path=path, resume=True, pos_weight=7.0)
    state = load_checkpoint(resume_path(path))[1]["config"]
    assert (state["amp"], state["device"], state["order_on"], state["class_weights"]) == (
        "fp32",
        "cpu",
        "cpu",
        None,
    )
    best = load_checkpoint(path)[1]
    assert (best["device"], best["precision"]) == ("cpu", "fp32")
    with pytest.raises(ValueError, match="checkpoint_meta may not set \\['device', 'history'\\]"):
        _fit(
            _tiny_model(),
            data,
            checkpoint_path=tmp_path / "other.pt",
            checkpoint_meta={"history": [], "device": 1},
        )
