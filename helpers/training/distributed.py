"""Data-parallel training on several processes (PyTorch DDP under ``torchrun``), with the course's own loop.

Taught in ``notebooks/08_scaling_up.ipynb``; used by :func:`helpers.training.loop.fit` (its ``ranks``
argument) and launched by ``python -m helpers.course.train_ddp`` under ``torchrun``.

``torchrun --nproc_per_node=N`` starts N copies of the same script and tells each, in environment variables,
who it is (``RANK`` 0..N-1, ``LOCAL_RANK`` on its node, ``WORLD_SIZE`` N) and where rank 0 listens
(``MASTER_ADDR``/``MASTER_PORT``). :func:`process_group` reads them and joins the group (NCCL between CUDA
GPUs, gloo between CPU processes); without them it returns ``None`` and everything runs as one process.

What changes with N processes, each written out below:

- **Data.** Each rank holds only its shard of the training set (:func:`train_shard`: a seeded permutation
  cut into N equal parts), so the device-resident data need 1/N of the memory on each GPU, and validates its
  own slice of the validation set (:func:`val_slice`); the logits are gathered (:func:`gather_rows`) so every
  rank computes the same metrics and agrees on the best epoch.
- **Gradients.** DistributedDataParallel averages the gradients of all ranks after every backward pass (an
  all-reduce), so every rank takes the same optimiser step and the weights stay identical.
- **Batch size.** ``batch_size`` stays the *global* batch: each rank takes ``batch_size / N`` images per step,
  so the learning rate needs no change and 1 and N processes take the same number of steps per epoch.
- **Randomness.** Shuffling and augmentation draw from generators seeded per rank and per epoch
  (:func:`reseed`), so no generator state has to be saved and a run resumes with the same or another
  number of ranks.
- **BatchNorm.** Each rank normalises with its own ``batch_size / N`` images; rank 0's running statistics
  are copied to the others before validating and saving (:func:`broadcast_buffers`).
  ``torch.nn.SyncBatchNorm`` (option ``sync_bn``) computes the batch statistics over all ranks instead, at the
  cost of two more all-reduces per BatchNorm layer per step; it needs CUDA.
- **Checkpoints.** Only rank 0 writes (atomically); the others wait at a barrier before reading.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from helpers.training.checkpoints import derived_seed

#: The variables torchrun sets for every process it starts.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group: ``rank`` of ``world_size``, ``local_rank`` on its node, and the
    device it trains on (``cuda:<local_rank>`` or the CPU)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints and prints the summary."""
        return self.rank == 0


def _env_int(name: str) -> int:
    value = os.environ.get(name, "")
    if not value.isdigit():
        raise ValueError(
            f"{name}={value!r}: torchrun sets it to a non-negative integer; start the script with torchrun"
        )
    return int(value)


@contextlib.contextmanager
def process_group(device: str | None = None, timeout_s: float = 600.0) -> Iterator[Ranks | None]:
    """Join the process group that torchrun set up, yield this process's :class:`Ranks`, leave it afterwards.

    Yields ``None`` (one process, nothing to join) when torchrun's variables are absent. ``device``: "cpu"
    forces gloo on the CPU; default CUDA (NCCL, one GPU per local rank) when available. ``timeout_s`` bounds
    every collective, so a rank that died makes the others fail instead of waiting forever.
    """
    if not all(name in os.environ for name in TORCHRUN_ENV):
        yield None
        return
    rank, world, local = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    use_cuda = device != "cpu" and torch.cuda.is_available()
    where = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(where)
    dist.init_process_group(
        "nccl" if use_cuda else "gloo",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    try:
        yield Ranks(rank, world, local, where)
    finally:
        dist.destroy_process_group()


def rank_batch(batch_size: int, ranks: Ranks | None) -> int:
    """Images per step on each rank: the global ``batch_size`` divided by the number of ranks."""
    if ranks is None:
        return batch_size
    if batch_size % ranks.world_size:
        raise ValueError(
            f"batch_size={batch_size} is the global batch and must divide by the {ranks.world_size} ranks; "
            f"use e.g. {batch_size - batch_size % ranks.world_size or ranks.world_size}"
        )
    return batch_size // ranks.world_size


def reseed(generators: dict[str, torch.Generator], seed: int, epoch: int, ranks: Ranks | None) -> None:
    """Seed each named generator (``"order"``, ``"augment"``) for ``epoch`` on this rank: independent streams
    per rank, reproducible from the run's ``seed`` alone, so a resume needs no saved generator state. One
    process (``ranks=None``) keeps its generators running through the epochs: nothing to do."""
    if ranks is None:
        return
    for name, generator in generators.items():
        generator.manual_seed(derived_seed(seed, f"{name}/rank{ranks.rank}", epoch))


def train_shard(n: int, ranks: Ranks, seed: int) -> np.ndarray:
    """Indices of this rank's shard of ``n`` training items: a permutation seeded by ``seed`` (the same on every
    rank) cut into ``world_size`` equal parts. ``n % world_size`` items are left out, so that every rank runs the
    same number of steps (a rank with one more step would wait forever for the others' gradients)."""
    if n < ranks.world_size:
        raise ValueError(f"{n} training items cannot be shared by {ranks.world_size} ranks")
    order = np.random.default_rng(seed).permutation(n)
    per_rank = n // ranks.world_size
    return np.sort(order[ranks.rank * per_rank : (ranks.rank + 1) * per_rank])


def shard_arrays(
    train_x: Any, train_y: Any, val_x: Any, val_y: Any, ranks: Ranks, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """This rank's part of a run's arrays: its training shard (:func:`train_shard`) and its validation slice
    (:func:`val_slice`), read into memory (from a memory-mapped store: only this rank's rows)."""
    rows = train_shard(len(train_y), ranks, seed)
    part = val_slice(len(val_y), ranks)
    return (
        np.asarray(train_x[rows]),
        np.asarray(train_y)[rows],
        np.asarray(val_x[part]),
        np.asarray(val_y)[part],
    )


def val_slice(n: int, ranks: Ranks) -> slice:
    """This rank's contiguous slice of ``n`` validation items (sizes differ by at most one), in rank order,
    so that :func:`gather_rows` gives the items back in their original order."""
    bounds = np.linspace(0, n, ranks.world_size + 1).round().astype(int)
    return slice(int(bounds[ranks.rank]), int(bounds[ranks.rank + 1]))


def gather_rows(rows: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Every rank's ``rows`` (``n_r x ...``, ``n_r`` may differ by rank) concatenated in rank order, on every
    rank. The rows are padded to the largest ``n_r`` for the all-gather and cut back afterwards."""
    count = torch.tensor([rows.shape[0]], device=rows.device)
    counts = [torch.zeros_like(count) for _ in range(ranks.world_size)]
    dist.all_gather(counts, count)
    largest = int(max(c.item() for c in counts))
    padded = torch.zeros((largest, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    padded[: rows.shape[0]] = rows
    parts = [torch.empty_like(padded) for _ in range(ranks.world_size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[: int(c.item())] for part, c in zip(parts, counts, strict=True)])


def mean_over_ranks(value: float, ranks: Ranks) -> float:
    """The mean of a number over all ranks (e.g. each rank's training loss), known to every rank."""
    total = torch.tensor([float(value)], dtype=torch.float64, device=ranks.device)
    dist.all_reduce(total)
    return float(total.item()) / ranks.world_size


def sum_over_ranks(value: float, ranks: Ranks) -> float:
    """The sum of a number over all ranks (e.g. images per second), known to every rank."""
    total = torch.tensor([float(value)], dtype=torch.float64, device=ranks.device)
    dist.all_reduce(total)
    return float(total.item())


def broadcast_buffers(model: nn.Module, ranks: Ranks) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, so that all validate and save the
    same model. The weights need no copy: DDP keeps them identical."""
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def barrier(ranks: Ranks | None) -> None:
    """Wait until every rank gets here (a no-op for one process)."""
    if ranks is not None:
        dist.barrier()


def wrap(model: nn.Module, ranks: Ranks, sync_bn: bool = False) -> nn.Module:
    """``model`` inside DistributedDataParallel (the gradient all-reduce), optionally with SyncBatchNorm.

    The wrapper shares the model's parameters: train through it, validate and save the model itself.
    """
    if sync_bn:
        if ranks.device.type != "cuda":
            raise ValueError("sync_bn needs CUDA: torch.nn.SyncBatchNorm does not run on the CPU (gloo)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [ranks.device.index] if ranks.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
