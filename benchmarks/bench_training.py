"""Benchmark: training ResNet18 the paper's way against the course's fast path, and the ceiling.

The same model (``helpers.training.models.resnet18_xray``) is trained for ``--steps`` steps of ``--batch`` images
of ``--size`` x ``--size`` pixels, three ways:

- paper: one ``.npy`` file per image in a folder (float16, as the paper's preprocessing saves them),
  a ``torch.utils.data.DataLoader`` with ``--workers`` worker processes, the paper's CPU torchvision
  transforms (Normalize, RandomAffine, RandomResizedCrop), fp32.
- fast: ``helpers.training.loop.fit`` with the uint8 images held on the device, ``GpuAugment``, mixed precision
  (``--amp``), channels_last on CUDA (and ``torch.compile`` with ``--compile``). One warm-up epoch, then
  the throughput of the second epoch's training part, as ``fit`` reports it.
- ceiling: forward + backward + Adam on random tensors already on the device (same precision and memory
  layout as the fast path): no data handling at all.

Prints images/s of each, the ratios fast / paper and ceiling / fast, the peak GPU memory and the device.

    python benchmarks/bench_training.py                          # CPU: 64 x 64, batch 16, 5 steps
    python benchmarks/bench_training.py --device cuda --size 224 --batch 128 --steps 30
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from helpers.config import pick_device
from helpers.training.loop import fit, resolve_amp, train_step
from helpers.training.models import resnet18_xray
from helpers.xray.augment import GpuAugment

MEAN, STD = 0.49, 0.248  # the paper's dataset statistics (seed 002)


class NpyFolder(Dataset):
    """The paper's data path: one ``.npy`` file per image, loaded and transformed on the CPU per item."""

    def __init__(self, files: list[Path], labels: np.ndarray, transform):
        self.files, self.labels, self.transform = files, labels, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        image = np.load(self.files[i]).astype(np.float32)  # H x W in [0, 1]
        return self.transform(image), float(self.labels[i])


def paper_transform(size: int):
    """Seed 002's training transforms (degrees, translate and scale as in its code), in pixels of ``size``."""
    return transforms.Compose(
        [
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
            transforms.RandomAffine(degrees=(-5, 5), translate=(0, 0.05), scale=(0.9, 1.1)),
            transforms.RandomResizedCrop((size, size), scale=(0.35, 1), antialias=True),
        ]
    )


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The paper's loss: BCEWithLogits with pos_weight (3: about 1 positive for 3 negatives)."""
    pos_weight = torch.tensor([3.0], device=logits.device)
    return F.binary_cross_entropy_with_logits(logits[:, 0].float(), labels, pos_weight=pos_weight)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def run_paper(images: np.ndarray, labels: np.ndarray, args, device: torch.device) -> float:
    """Images/s of the paper's pipeline over ``args.steps`` steps after one warm-up step (fp32)."""
    torch.manual_seed(0)
    # The paper standardises in its CPU transforms (Normalize): the model's own standardisation is the identity.
    model = resnet18_xray(mean=0.0, std=1.0).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    with tempfile.TemporaryDirectory(prefix="bench_training_") as folder:
        files = []
        for i, image in enumerate(images):
            files.append(Path(folder) / f"{i:06d}.npy")
            np.save(files[-1], (image / 255.0).astype(np.float16))
        dataset = NpyFolder(files, labels, paper_transform(args.size))
        loader = DataLoader(
            dataset,
            batch_size=args.batch,
            shuffle=True,
            num_workers=args.workers,
            pin_memory=device.type == "cuda",
        )
        start = None
        for step, (x, y) in enumerate(loader):
            if step == 1:  # after the warm-up step (worker start, first allocations)
                synchronize(device)
                start = time.perf_counter()
            x, y = x.to(device), y.float().to(device)
            train_step(model, x, y, weighted_bce, optimizer)
        synchronize(device)
        return args.steps * args.batch / (time.perf_counter() - start)


def run_fast(images: np.ndarray, labels: np.ndarray, args, device: torch.device) -> float:
    """Images/s of ``helpers.training.loop.fit`` in its second epoch of ``args.steps`` steps."""
    torch.manual_seed(0)
    n = args.steps * args.batch
    history = fit(
        resnet18_xray(mean=MEAN, std=STD),  # the model standardises x / 255 itself, on the device
        images[:n],
        labels[:n],
        images[n:],
        labels[n:],
        epochs=2,
        batch_size=args.batch,
        augment=GpuAugment(),
        device=device,
        amp=args.amp,
        compile=args.compile,
        progress=False,
    )
    return float(history["images_per_s"].iloc[-1])


def run_ceiling(args, device: torch.device) -> float:
    """Images/s of forward + backward + Adam on random images in [0, 1] already on the device."""
    torch.manual_seed(0)
    model = resnet18_xray(mean=MEAN, std=STD).to(device)  # the same model as the fast path
    channels_last = device.type == "cuda"
    x = torch.rand(args.batch, 1, args.size, args.size, device=device)
    if channels_last:
        model, x = (
            model.to(memory_format=torch.channels_last),
            x.contiguous(memory_format=torch.channels_last),
        )
    y = (torch.rand(args.batch, device=device) < 0.25).float()
    amp_dtype = resolve_amp(args.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    fused = True if device.type == "cuda" else None
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=fused)
    step_model = torch.compile(model) if args.compile else model
    for _ in range(3):  # warm-up: allocations, cudnn algorithm choice, compilation
        train_step(step_model, x, y, weighted_bce, optimizer, scaler, amp_dtype)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step(step_model, x, y, weighted_bce, optimizer, scaler, amp_dtype)
    synchronize(device)
    return args.steps * args.batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (the paper: 224)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per method")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="paper's DataLoader")
    parser.add_argument("--amp", default="auto", help="fast path and ceiling: auto, bf16, fp16 or off")
    parser.add_argument("--compile", action="store_true", help="torch.compile the fast path and the ceiling")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--skip-paper", action="store_true", help="only the fast path and the ceiling")
    args = parser.parse_args()
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{device.type} ({os.cpu_count()} cores)"
    )
    amp_dtype = resolve_amp(args.amp, device)
    print(
        f"device: {name} | torch {torch.__version__} | threads {torch.get_num_threads()} | size {args.size} | "
        f"batch {args.batch} | steps {args.steps} | amp {amp_dtype} | compile {args.compile}"
    )
    rng = np.random.default_rng(0)
    n = (args.steps + 1) * args.batch  # paper: one warm-up step + steps; fast: steps + a validation batch
    images = rng.integers(0, 256, size=(n, args.size, args.size), dtype=np.uint8)
    labels = (rng.random(n) < 0.25).astype(np.int64)

    results = {}
    runs = [
        ("fast", lambda: run_fast(images, labels, args, device)),
        ("ceiling", lambda: run_ceiling(args, device)),
    ]
    if not args.skip_paper:
        runs.insert(0, ("paper", lambda: run_paper(images, labels, args, device)))
    labels_text = {
        "paper": f"per-file .npy + DataLoader({args.workers} workers) + CPU transforms, fp32",
        "fast": "helpers.training.loop.fit: data on device + GpuAugment"
        + (f" + AMP {amp_dtype}" if amp_dtype else " (no AMP)")
        + (" + channels_last" if device.type == "cuda" else "")
        + (" + compile" if args.compile else ""),
        "ceiling": "random tensors on device, forward + backward + Adam",
    }
    for key, run in runs:
        reset_peak(device)
        results[key] = run()
        memory = peak_gib(device)
        memory_text = (
            f"peak GPU memory {memory:5.2f} GiB" if memory == memory else "peak GPU memory n/a (CPU)"
        )
        print(f"{key:8s} {results[key]:10.1f} img/s   {memory_text}   [{labels_text[key]}]")
    if "paper" in results:
        print(f"fast / paper:   {results['fast'] / results['paper']:6.2f}x")
    print(f"ceiling / fast: {results['ceiling'] / results['fast']:6.2f}x")


if __name__ == "__main__":
    main()
