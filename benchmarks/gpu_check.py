"""One command that proves the course's GPU path on a CUDA machine in at most 5 minutes (issue 16).

    python benchmarks/gpu_check.py                         # on a CUDA machine: writes gpu_check.json
    python benchmarks/gpu_check.py --dry-run               # every section on the CPU, tiny sizes, < 2 min

Each section runs the course's own code (``helpers.training``, ``helpers.xray.augment``, ``helpers.explain``),
asserts what must hold, and is appended to the JSON report as soon as it finishes (the file is rewritten
atomically, so a run stopped by a timeout still leaves every finished section). The sections, in order:

- ``environment``: torch, CUDA, the GPU, its compute capability and memory, the TF32 settings.
- ``precision``: bf16 chosen on compute capability >= 8, fp16 + ``GradScaler`` below; forced fp16 trains.
- ``device_data``: the films held on the device give the same batches as the host (streamed) path.
- ``augment``: ``GpuAugment`` on the device agrees with the CPU within 1e-4 for the same parameters, and
  is reproducible per seed.
- ``no_host_sync``: training steps (bf16 or fp16, channels_last, augmentation) under
  ``torch.cuda.set_sync_debug_mode("error")``: no step waits for the GPU.
- ``fit``: three epochs of ``fit`` with a checkpoint, finite losses, and an epoch time that includes
  validation and the checkpoint.
- ``resume_across_devices``: a run saved on the GPU resumes on the CPU and then on the GPU again.
- ``predict_parity``: the trained model and its reloaded checkpoint predict the same within ``PREDICT_TOL``.
- ``explain_parity``: Grad-CAM and guided backprop on the device within 1e-3 of the CPU (fp32, TF32 off;
  the TF32 differences are reported).
- ``t4_memory``: fp16 training at batch 64 with all 26,684 films on the device fits in a T4's memory
  (``torch.cuda.set_per_process_memory_fraction``).
- ``out_of_memory``: a real out-of-memory error gives the helpful message and frees the run's memory.
- ``fast_vs_paper``: the fast path against the paper's per-file DataLoader pipeline (target >= 5x), at the
  notebook's batch size and the large-GPU one (``benchmarks/bench_training.py``).
- ``epoch_time``: the steady epoch time (validation and checkpoint included) projected to the 26,684 RSNA
  films (70 % training, 15 % validation) against the targets: T4 <= 30 s, H100 <= 2.5 s.

Exit status 1 when a check failed; a missed speed target is reported (``targets``) and fails the run only
with ``--strict``. ``--dry-run`` runs every section on the CPU with tiny sizes (what cannot happen there,
such as a real out-of-memory error or the sync debug mode, is simulated or said so): ``tests/test_gpu_check.py``
runs it, so this script cannot rot.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import json
import math
import os
import sys
import tempfile
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import bench_training  # noqa: E402  (benchmarks/ is not a package)

from helpers.course.pipeline import LARGE_GPU_BATCH  # noqa: E402
from helpers.explain.cam import grad_cam, guided_backprop  # noqa: E402
from helpers.files import atomic_path  # noqa: E402
from helpers.training import loop  # noqa: E402
from helpers.training.checkpoints import load_checkpoint, resume_path  # noqa: E402
from helpers.training.device_data import DeviceData, prepare_batch  # noqa: E402
from helpers.training.inference import logits_for, predict  # noqa: E402
from helpers.training.models import breath_cnn, resnet18_xray  # noqa: E402
from helpers.xray.augment import GpuAugment  # noqa: E402

RSNA_FILMS = 26_684
TRAIN_SHARE, VAL_SHARE = 0.70, 0.15  # helpers.course.pipeline's split
T4_TARGET_S, H100_TARGET_S, PAPER_RATIO_TARGET = 30.0, 2.5, 5.0
T4_BYTES = int(14.5 * 2**30)  # what PyTorch can allocate on a 16 GB T4 (15 GiB total, minus the CUDA context)
PREDICT_TOL = 1e-5  # probabilities, trained vs reloaded model (same device, same memory layout)
EXPLAIN_TOL = 1e-3  # Grad-CAM (maps in [0, 1]) and guided backprop (relative to its largest value)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each section's work is: ``GPU_SIZES`` on a CUDA machine, ``DRY_SIZES`` for ``--dry-run``."""

    image: int  # side of the films, pixels (the paper: 224)
    films: int  # training films of the fit and epoch-time sections
    small_image: int  # side of the films of the cross-device resume (the CPU trains them too)
    small_films: int
    batch: int  # the notebook's batch size
    large_batch: int  # the large-GPU batch size
    steps: int  # timed steps per pipeline in fast_vs_paper
    workers: int  # DataLoader workers of the paper's pipeline
    memory_films: int  # films held on the device in t4_memory


GPU_SIZES = Sizes(224, 4096, 64, 256, 64, LARGE_GPU_BATCH, 12, min(4, os.cpu_count() or 1), RSNA_FILMS)
DRY_SIZES = Sizes(32, 48, 32, 24, 8, 16, 2, 0, 64)


@dataclasses.dataclass
class Check:
    """What the sections share: the device, the sizes, a scratch folder, and results of earlier sections."""

    device: torch.device
    sizes: Sizes
    dry_run: bool
    folder: Path
    shared: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def model(self, mean: float = 0.5, std: float = 0.25) -> torch.nn.Module:
        """The course's ResNet18; in a dry run a tiny CNN (the same loop code, a hundredth of the work: an Adam
        step over ResNet18's 11 million weights alone takes a busy 2-core CPU almost half a second)."""
        if self.dry_run:
            return breath_cnn(n_classes=1, width=4, dropout=0.0, mean=mean, std=std)
        return resnet18_xray(mean=mean, std=std)

    @property
    def layer(self) -> str:
        """The layer to explain: ``layer4`` of ResNet18, ``features`` of the dry run's CNN."""
        return "features" if self.dry_run else "layer4"


def _films(n: int, side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random uint8 films (N x side x side) with a visible label: positives have a bright square."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 160, size=(n, side, side), dtype=np.uint8)
    y = (np.arange(n) % 4 == 0).astype(np.int64)  # a quarter positive, like RSNA
    x[y == 1, side // 4 : side // 2, side // 4 : side // 2] += 90
    return x, y


def _split(n_train: int) -> int:
    """Validation films for ``n_train`` training films, in the proportion of the course's split."""
    return max(2, round(n_train * VAL_SHARE / TRAIN_SHARE))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _target(name: str, value: float, target: float, higher_is_better: bool) -> dict[str, Any]:
    met = value >= target if higher_is_better else value <= target
    return {"name": name, "value": round(value, 3), "target": target, "met": bool(met)}


def check_environment(check: Check) -> dict[str, Any]:
    """What this report was measured on."""
    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": check.device.type}
    out.update(cpus=os.cpu_count(), dry_run=check.dry_run, sizes=dataclasses.asdict(check.sizes))
    if check.cuda:
        props = torch.cuda.get_device_properties(check.device)
        out.update(gpu=props.name, capability=f"{props.major}.{props.minor}")
        out.update(memory_gib=round(props.total_memory / 2**30, 1), large_gpu=loop.is_large_gpu(check.device))
        out.update(
            cudnn_tf32=torch.backends.cudnn.allow_tf32, matmul_tf32=torch.backends.cuda.matmul.allow_tf32
        )
    return out


def _train_steps(model, data: DeviceData, opt, loss_fn, steps: int, batch: int) -> torch.Tensor:
    """``steps`` steps of ``train_one_epoch``'s body (augmented, shuffled on the device); the summed loss,
    on the device and unread (reading it would be a host sync)."""
    order = torch.randperm(data.n, generator=opt.generators["order"], device=data.index_device)
    loss_sum, augment = torch.zeros((), device=data.device), GpuAugment()
    for step, (raw, y) in enumerate(data.batches(batch, order, drop_last=True)):
        if step == steps:
            break
        x = prepare_batch(raw, data.scale, augment, opt.generators["augment"], opt.channels_last)
        loss_sum += loop.train_step(model, x, y, loss_fn, opt.optimizer, opt.scaler, opt.amp_dtype)
    return loss_sum


def _optimised(check: Check, data: DeviceData, amp: str, seed: int = 0):
    """A seeded model (:meth:`Check.model`) on ``data.device``, its
    :class:`helpers.training.loop.Optimisation` and its loss (made here: its ``pos_weight`` is copied to the
    device, a host sync that is no part of a step)."""
    torch.manual_seed(seed)
    model = check.model().to(data.device)
    opt = loop.make_optimisation(
        model, data, lr=1e-4, weight_decay=0.0, amp=amp, channels_last=True, seed=seed
    )
    return model, opt, loop.make_loss(1, data.labels_np, "auto", None, data.device)


def check_precision(check: Check) -> dict[str, Any]:
    """bf16 on compute capability >= 8, fp16 + GradScaler below (the rule, then this GPU); forced fp16 trains."""
    cuda = torch.device("cuda")
    for capability, expected in (((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)):
        with mock.patch.object(torch.cuda, "get_device_capability", lambda device=None, c=capability: c):
            assert loop.resolve_amp("auto", cuda) is expected, capability
    x, y = _films(4 * check.sizes.batch, check.sizes.small_image)
    data = DeviceData(x, y, check.device)
    chosen = loop.resolve_amp("auto", check.device)
    if check.cuda:
        major = torch.cuda.get_device_capability(check.device)[0]
        assert chosen is (torch.bfloat16 if major >= 8 else torch.float16), (major, chosen)
    _, auto, _ = _optimised(check, data, "auto")
    assert auto.scaler.is_enabled() == (chosen is torch.float16)
    model, half, loss_fn = _optimised(check, data, "fp16")
    assert half.amp_dtype is torch.float16 and half.scaler.is_enabled()
    loss = float(_train_steps(model, data, half, loss_fn, 3, check.sizes.batch))
    assert math.isfinite(loss) and math.isfinite(half.scaler.get_scale()), (loss, half.scaler.get_scale())
    return {
        "auto": loop.precision_name(chosen),
        "fp16_loss_sum": round(loss, 4),
        "fp16_scale": half.scaler.get_scale(),
    }


def check_device_data(check: Check) -> dict[str, Any]:
    """The films held on the device and the host path (pinned, streamed) give the same batches."""
    x, y = _films(3 * check.sizes.batch + 5, check.sizes.image)
    held = DeviceData(x, y, check.device)
    streamed = DeviceData(x, y, check.device, reserve_bytes=2**62)  # never fits: the host path
    assert held.on_device == check.cuda and not streamed.on_device
    order = torch.randperm(held.n, generator=torch.Generator().manual_seed(0))
    batches = zip(
        held.batches(check.sizes.batch, order.to(held.index_device)),
        streamed.batches(check.sizes.batch, order),
        strict=True,
    )
    for (raw_a, y_a), (raw_b, y_b) in batches:
        assert torch.equal(raw_a, raw_b) and torch.equal(y_a, y_b)
        assert raw_a.device.type == check.device.type
    rows = order[: check.sizes.batch].numpy()
    assert np.array_equal(
        held.batch(order[: check.sizes.batch].to(held.index_device))[0].cpu().numpy()[:, 0], x[rows]
    )
    return {"films": held.n, "held_on_device": held.on_device, "batches_equal": True}


def check_augment(check: Check) -> dict[str, Any]:
    """GpuAugment on the device within 1e-4 of the CPU for the same parameters; reproducible per seed."""
    augment = GpuAugment(hflip=True)
    x = torch.rand(8, 1, check.sizes.image, check.sizes.image, generator=torch.Generator().manual_seed(1))
    params = augment.sample(8, torch.Generator().manual_seed(2))
    difference = (
        augment.apply(x.to(check.device), params.to(check.device)).cpu() - augment.apply(x, params)
    ).abs()
    assert float(difference.max()) <= 1e-4, float(difference.max())
    on_device = x.to(check.device)
    a, b, c = (augment(on_device, torch.Generator(check.device).manual_seed(s)) for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    return {"max_difference_vs_cpu": float(difference.max()), "same_seed_equal": True}


@contextlib.contextmanager
def _sync_debug(check: Check) -> Iterator[None]:
    """``torch.cuda.set_sync_debug_mode("error")`` on CUDA (any host sync raises); nothing on the CPU."""
    if check.cuda:
        torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        if check.cuda:
            torch.cuda.set_sync_debug_mode(0)


def check_no_host_sync(check: Check) -> dict[str, Any]:
    """Training steps (augmentation, channels_last, bf16 or fp16 with its scaler) never wait for the GPU."""
    x, y = _films(8 * check.sizes.batch, check.sizes.image)
    data = DeviceData(x, y, check.device)
    out = {"sync_debug_mode": "error" if check.cuda else "not available on the CPU: steps run unchecked"}
    for amp in ("auto", "fp16"):
        model, opt, loss_fn = _optimised(check, data, amp)
        _train_steps(model, data, opt, loss_fn, 2, check.sizes.batch)  # warm-up: allocations, cuDNN's choice
        _sync(check.device)
        with _sync_debug(check):
            loss = _train_steps(model, data, opt, loss_fn, 5, check.sizes.batch)
        out[f"{loop.precision_name(opt.amp_dtype)}_loss_sum"] = round(float(loss), 4)
        assert math.isfinite(float(loss))
    return out


def _fit(check: Check, n_train: int, side: int, path: Path | None, **options: Any):
    """``fit`` on ``n_train`` random films (+ validation films in the course's proportion); (history, model,
    wall seconds)."""
    x, y = _films(n_train + _split(n_train), side)
    torch.manual_seed(0)
    model = check.model(mean=0.4, std=0.25)
    options = {
        "epochs": 3,
        "batch_size": check.sizes.batch,
        "augment": GpuAugment(),
        "progress": False,
        **options,
    }
    device, start = options.pop("device", check.device), time.perf_counter()
    train, val = (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
    history = loop.fit(model, *train, *val, device=device, checkpoint_path=path, **options)
    return history, model, time.perf_counter() - start


def check_fit(check: Check) -> dict[str, Any]:
    """Three epochs with a checkpoint: finite losses, the device and the precision recorded, and epoch times
    that hold training, validation and the checkpoint."""
    path = check.folder / "fit" / "best.pt"
    history, model, wall = _fit(check, check.sizes.films, check.sizes.image, path)
    assert np.isfinite(history[["train_loss", "val_loss"]].to_numpy()).all(), history
    training = (check.sizes.films // check.sizes.batch) * check.sizes.batch / history["images_per_s"]
    assert (history["seconds"] > training).all(), "the epoch time must hold more than the training"
    meta = load_checkpoint(path)[1]
    assert (meta["device"], meta["precision"]) == (
        check.device.type,
        loop.precision_name(loop.resolve_amp("auto", check.device)),
    )
    assert len(load_checkpoint(resume_path(path))[1]["history"]) == 3
    check.shared.update(model=model, path=path)
    return {
        "epoch_seconds": history["seconds"].round(3).tolist(),
        "training_seconds": training.round(3).tolist(),
        "images_per_s": history["images_per_s"].round(1).tolist(),
        "fit_wall_seconds": round(wall, 3),
        "precision": meta["precision"],
    }


def check_resume_across_devices(check: Check) -> dict[str, Any]:
    """A run saved on the device resumes on the CPU, then on the device again (notes instead of a refusal)."""
    path = check.folder / "resume" / "best.pt"
    size, n = check.sizes.small_image, check.sizes.small_films
    printed = io.StringIO()
    runs = []
    for epochs, device in ((2, check.device), (3, torch.device("cpu")), (4, check.device)):
        with contextlib.redirect_stdout(printed):
            history, _, wall = _fit(check, n, size, path, epochs=epochs, device=device, resume=True)
        runs.append({"device": device.type, "epochs": len(history), "seconds": round(wall, 2)})
        assert history["epoch"].tolist() == list(range(1, epochs + 1)), history
        assert np.isfinite(history["train_loss"]).all()
    notes = [line for line in printed.getvalue().splitlines() if line.startswith("note:")]
    assert bool(notes) == check.cuda, notes  # a note exactly when the device changed
    return {"runs": runs, "notes": notes}


def check_predict_parity(check: Check) -> dict[str, Any]:
    """The trained model (best epoch, default memory layout after fit) and its reloaded checkpoint predict
    the same on the device within ``PREDICT_TOL``."""
    model, path = check.shared["model"], check.shared["path"]
    convolutions = [p for p in model.parameters() if p.ndim == 4]
    assert all(p.is_contiguous() for p in convolutions), "fit leaves the model in the default memory layout"
    reloaded, _ = load_checkpoint(path)
    x, _ = _films(2 * check.sizes.batch, check.sizes.image, seed=1)
    trained = predict(model, x, batch_size=check.sizes.batch, device=check.device, progress=False)
    again = predict(reloaded, x, batch_size=check.sizes.batch, device=check.device, progress=False)
    difference = float(np.abs(trained - again).max())
    assert difference <= PREDICT_TOL, difference
    return {"max_difference": difference, "tolerance": PREDICT_TOL}


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    """TF32 for cuDNN convolutions and matmuls on or off, restored afterwards."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def _explain_differences(model, x: torch.Tensor, device: torch.device, layer: str) -> dict[str, float]:
    """Grad-CAM (at ``layer``) and guided backprop on ``device`` against the CPU: max |difference| (guided
    backprop relative to its largest value)."""
    on_cpu = copy.deepcopy(model).cpu().eval()
    on_device = copy.deepcopy(model).to(device).eval()
    cam = (grad_cam(on_device, x.to(device), layer).cpu() - grad_cam(on_cpu, x, layer)).abs().max()
    reference = guided_backprop(on_cpu, x)
    guided = (guided_backprop(on_device, x.to(device)).cpu() - reference).abs().max() / reference.abs().max()
    return {"grad_cam": float(cam), "guided_backprop": float(guided)}


def check_explain_parity(check: Check) -> dict[str, Any]:
    """Grad-CAM and guided backprop on the device within ``EXPLAIN_TOL`` of the CPU in fp32 (TF32 off); the
    differences with TF32 on (PyTorch's default for convolutions) are reported; guided backprop repeats
    within 1e-5 (not bit for bit on CUDA: atomic adds)."""
    model = check.shared["model"] if "model" in check.shared else check.model()
    x = torch.from_numpy(_films(4, check.sizes.image, seed=2)[0][:, None]).float() / 255
    with _tf32(False):
        strict = _explain_differences(model, x, check.device, check.layer)
    with _tf32(True):
        relaxed = _explain_differences(model, x, check.device, check.layer)
    assert max(strict.values()) <= EXPLAIN_TOL, strict
    on_device = copy.deepcopy(model).to(check.device).eval()
    first, second = (guided_backprop(on_device, x.to(check.device)) for _ in range(2))
    repeat = float((first - second).abs().max() / first.abs().max())
    assert repeat <= 1e-5, repeat
    return {"fp32": strict, "tf32": relaxed, "guided_repeat": repeat, "tolerance": EXPLAIN_TOL}


@contextlib.contextmanager
def _memory_cap(check: Check, cap_bytes: int) -> Iterator[float]:
    """Let PyTorch allocate at most ``cap_bytes`` on the GPU (yields the fraction; 1.0 on the CPU)."""
    if not check.cuda:
        yield 1.0
        return
    torch.cuda.empty_cache()
    fraction = min(1.0, cap_bytes / torch.cuda.get_device_properties(check.device).total_memory)
    torch.cuda.set_per_process_memory_fraction(fraction, check.device)
    try:
        yield fraction
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, check.device)
        torch.cuda.empty_cache()


def check_t4_memory(check: Check) -> dict[str, Any]:
    """fp16 training at the notebook's batch, all RSNA films held on the device, and a validation batch,
    within a T4's memory."""
    side, n = check.sizes.image, check.sizes.memory_films
    with _memory_cap(check, T4_BYTES) as fraction:
        if check.cuda:
            torch.cuda.reset_peak_memory_stats(check.device)
        films = torch.randint(0, 256, (n, 1, side, side), dtype=torch.uint8, device=check.device)
        data = DeviceData(films, (np.arange(n) % 4 == 0).astype(np.int64), check.device)
        model, opt, loss_fn = _optimised(check, data, "fp16")
        loss = float(_train_steps(model, data, opt, loss_fn, 5, check.sizes.batch))
        logits_for(
            model, DeviceData(films[: 2 * check.sizes.batch], device=check.device), 2 * check.sizes.batch
        )
        peak = torch.cuda.max_memory_allocated(check.device) / 2**30 if check.cuda else None
        del films, data, model, opt, loss_fn
    assert math.isfinite(loss)
    return {"films_on_device": n, "memory_fraction": round(fraction, 3), "peak_gib": peak and round(peak, 2)}


def _oom_fit(check: Check) -> tuple[str, list[weakref.ref], int]:
    """A ``fit`` that runs out of memory: for real on CUDA (a batch far too large for a 3 GiB cap), simulated
    on the CPU. Returns the message, weak references to the run's data and the GPU memory allocated, both
    taken while the error is still held (as Jupyter holds the last one)."""
    made: list[weakref.ref] = []

    class Recorded(DeviceData):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            made.append(weakref.ref(self))

    def out_of_memory(*args: Any, **kwargs: Any):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated on the CPU)")

    batch = 1024 if check.cuda else check.sizes.batch
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(loop, "DeviceData", Recorded))
        if not check.cuda:
            stack.enter_context(mock.patch.object(loop, "train_step", out_of_memory))
        stack.enter_context(_memory_cap(check, 3 * 2**30))
        try:
            _fit(
                check, batch, check.sizes.image, check.folder / "oom" / "best.pt", batch_size=batch, epochs=1
            )
        except torch.cuda.OutOfMemoryError as error:
            allocated = torch.cuda.memory_allocated(check.device) if check.cuda else 0
            return str(error), [ref for ref in made if ref() is not None], allocated
    raise AssertionError(f"no out-of-memory error at batch_size={batch}")


def check_out_of_memory(check: Check) -> dict[str, Any]:
    """A real out-of-memory error (simulated on the CPU) says what to do and leaves the run's memory free."""
    before = torch.cuda.memory_allocated(check.device) if check.cuda else 0
    message, alive, allocated = _oom_fit(check)
    batch = 1024 if check.cuda else check.sizes.batch
    assert f"while training with batch_size={batch}" in message, message
    assert f"batch_size={batch // 2}" in message and "resume=True" in message, message
    assert not alive, f"the error still holds {len(alive)} of the run's data sets"
    model_bytes = 2 * 11_170_753 * 4  # the caller's model (the error's frames hold it) and its gradients
    assert allocated - before <= model_bytes + 64 * 2**20, (before, allocated)
    return {"simulated": not check.cuda, "before_gib": before / 2**30, "with_error_gib": allocated / 2**30}


def check_fast_vs_paper(check: Check) -> dict[str, Any]:
    """The fast path (``fit``: films on the device, GpuAugment, AMP) against the paper's per-file .npy +
    DataLoader pipeline, at the notebook's batch size and the large-GPU one (target >= 5x)."""
    out, targets = {}, []
    for batch in (check.sizes.batch, check.sizes.large_batch):
        args = SimpleNamespace(size=check.sizes.image, batch=batch, steps=check.sizes.steps)
        args.__dict__.update(workers=check.sizes.workers, amp="auto", compile=False)
        images, labels = _films((args.steps + 1) * batch, args.size)
        with mock.patch.object(bench_training, "resnet18_xray", check.model):
            paper = bench_training.run_paper(images, labels, args, check.device)
            fast = bench_training.run_fast(images, labels, args, check.device)
        out[f"batch_{batch}"] = {"paper_img_s": round(paper, 1), "fast_img_s": round(fast, 1)}
        targets.append(_target(f"fast / paper at batch {batch}", fast / paper, PAPER_RATIO_TARGET, True))
    return {**out, "workers": check.sizes.workers, "targets": targets}


def _gpu_target(check: Check) -> tuple[str, float] | None:
    """The epoch target that applies to this GPU: ('T4', 30 s), ('H100', 2.5 s) or None."""
    name = torch.cuda.get_device_name(check.device) if check.cuda else ""
    if "T4" in name:
        return "T4", T4_TARGET_S
    if "H100" in name or "H200" in name:
        return "H100", H100_TARGET_S
    return None


def check_epoch_time(check: Check) -> dict[str, Any]:
    """The second epoch's time (training, fp32 validation, checkpoint), projected to the RSNA training and
    validation films; the recipe's batch for this GPU is held to its target."""
    recipe_batch = LARGE_GPU_BATCH if loop.is_large_gpu(check.device) else GPU_SIZES.batch
    out, targets = {}, []
    for batch in (check.sizes.batch, check.sizes.large_batch):
        path = check.folder / f"epoch-{batch}" / "best.pt"
        history, _, _ = _fit(check, check.sizes.films, check.sizes.image, path, epochs=2, batch_size=batch)
        seconds = float(history["seconds"].iloc[-1])
        projected = seconds * RSNA_FILMS * TRAIN_SHARE / check.sizes.films
        out[f"batch_{batch}"] = {
            "epoch_seconds": round(seconds, 3),
            "projected_rsna_epoch_s": round(projected, 2),
        }
        target = _gpu_target(check)
        if target and batch == recipe_batch:
            targets.append(_target(f"{target[0]} epoch at batch {batch}", projected, target[1], False))
    return {**out, "recipe_batch": recipe_batch, "targets": targets}


SECTIONS: list[tuple[str, Callable[[Check], dict[str, Any]]]] = [
    ("environment", check_environment),
    ("precision", check_precision),
    ("device_data", check_device_data),
    ("augment", check_augment),
    ("no_host_sync", check_no_host_sync),
    ("fit", check_fit),
    ("resume_across_devices", check_resume_across_devices),
    ("predict_parity", check_predict_parity),
    ("explain_parity", check_explain_parity),
    ("t4_memory", check_t4_memory),
    ("out_of_memory", check_out_of_memory),
    ("fast_vs_paper", check_fast_vs_paper),
    ("epoch_time", check_epoch_time),
]


def _write(report: dict[str, Any], path: Path) -> None:
    """Rewrite the whole report atomically: valid JSON at every moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str))


def run_section(name: str, function: Callable[[Check], dict[str, Any]], check: Check) -> dict[str, Any]:
    """One section: its result with ``status`` ('passed' or 'failed') and ``seconds``."""
    start = time.perf_counter()
    try:
        result = {"status": "passed", **function(check)}
    except Exception as error:  # a failed check is reported; the next sections still run
        last = traceback.extract_tb(error.__traceback__)[-1]
        result = {"status": "failed", "error": f"{type(error).__name__}: {error}"[:2000]}
        result["where"] = f"{Path(last.filename).name}:{last.lineno}"
    with contextlib.suppress(Exception):  # a broken CUDA context is reported by the next section
        _sync(check.device)
    return {"section": name, **result, "seconds": round(time.perf_counter() - start, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every section on the CPU with tiny sizes")
    parser.add_argument("--report", type=Path, default=Path("gpu_check.json"), help="the JSON report")
    parser.add_argument("--budget-s", type=float, default=300.0, help="skip the sections left after this")
    parser.add_argument("--strict", action="store_true", help="a missed speed target fails the run too")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: run with --dry-run to check the script on the CPU")
    device = torch.device("cpu" if args.dry_run else "cuda")
    if args.dry_run:  # tiny tensors: one thread beats two contending ones on a busy CPU
        torch.set_num_threads(1)
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "sections": []}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as folder:
        check = Check(device, DRY_SIZES if args.dry_run else GPU_SIZES, args.dry_run, Path(folder))
        for name, function in SECTIONS:
            if time.perf_counter() - start > args.budget_s:
                result = {
                    "section": name,
                    "status": "skipped",
                    "error": f"time budget of {args.budget_s} s spent",
                }
            else:
                result = run_section(name, function, check)
            report["sections"].append(result)
            _write(report, args.report)
            print(
                f"{result['status']:7s} {name:22s} {result.get('seconds', 0):7.1f} s  {result.get('error', '')}"
            )
    return _summarise(report, args, time.perf_counter() - start)


def _summarise(report: dict[str, Any], args: argparse.Namespace, seconds: float) -> int:
    """Add the summary to the report, print it, and return the exit status."""
    sections = report["sections"]
    targets = [t for s in sections for t in s.get("targets", [])]
    failed = [s["section"] for s in sections if s["status"] != "passed"]
    missed = [t["name"] for t in targets if not t["met"]]
    report["summary"] = {"seconds": round(seconds, 1), "failed": failed, "targets_missed": missed}
    _write(report, args.report)
    if targets and args.dry_run:
        print(
            "targets of a dry run (tiny sizes on the CPU) measure nothing; they show that the script works:"
        )
    for t in targets:
        verdict = "met" if t["met"] else "MISSED"
        print(f"target  {t['name']:32s} {t['value']:>9} (target {t['target']}) {verdict}")
    passed = len(sections) - len(failed)
    print(f"{passed}/{len(sections)} sections passed in {seconds:.0f} s; report: {args.report}")
    return 1 if failed or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
