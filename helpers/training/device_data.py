"""Serving image batches to a device: on the GPU when the data fit, streamed when not (prediction: :mod:`helpers.training.inference`).

Taught in ``notebooks/02_training_resnet18.ipynb``; used by :func:`helpers.training.loop.fit` and
:mod:`helpers.training.inference` (logits and probabilities for a whole split).

Why not a ``torch.utils.data.DataLoader``: the preprocessed images are small uint8 arrays (all RSNA
films at 224 x 224 are 1.3 GB), so they fit in GPU memory next to ResNet18. Copied there once, a batch
is one ``index_select`` on the GPU: no worker processes, no per-image Python, no host-to-device copy per
step. On a 2-vCPU Colab machine the DataLoader's workers, not the T4, are otherwise the bottleneck.
When the images do not fit, batches are gathered on the CPU from the (memory-mapped) array and copied
from page-locked ("pinned") memory with ``non_blocking=True``, so the copy overlaps the GPU's work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from helpers.config import pick_device

_COPY_CHUNK_BYTES = 64 * 2**20


class DeviceData:
    """Images (and labels) ready to be served to ``device`` in batches.

    ``images``: N x H x W or N x C x H x W, uint8 (served as is, divided by 255 in the step) or float
    (e.g. log-mel patches, no division), a NumPy array, a ``np.memmap`` or a tensor. ``labels``: (N,).
    On CUDA the images are copied to GPU memory in 64 MB chunks when they fit with ``reserve_bytes``
    to spare (default: the larger of 2 GiB and 20 % of the card, for the model's activations);
    otherwise they stay on the host and each batch is gathered, pinned and copied ``non_blocking``, so
    the copy overlaps the previous step's computation. On the CPU the array is used where it is.

    Taught in ``notebooks/02_training_resnet18.ipynb``.
    """

    def __init__(
        self, images: Any, labels: Any = None, device: Any = None, *, reserve_bytes: int | None = None
    ):
        self.device = torch.device(device) if device is not None else pick_device()
        if isinstance(images, torch.Tensor) and images.device.type != "cpu":
            array = images.to(self.device)  # already on an accelerator: use it as it is
        else:
            array = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        if array.ndim not in (3, 4):
            raise ValueError(f"images must be N x H x W or N x C x H x W, got shape {tuple(array.shape)}")
        if "uint8" in str(array.dtype):
            self.scale = 1.0 / 255.0
        elif "float" in str(array.dtype):
            self.scale = 1.0
        else:
            raise ValueError(f"images must be uint8 (0-255) or float, got dtype {array.dtype}")
        array = array[:, None] if array.ndim == 3 else array
        self.n = int(array.shape[0])
        if isinstance(array, torch.Tensor):
            self.on_device, self._images = True, array
        else:
            self.on_device = self.device.type != "cpu" and _fits_on_device(
                array.nbytes, self.device, reserve_bytes
            )
            self._images = _copy_to_device(array, self.device) if self.on_device else array
        self.labels_np: np.ndarray | None = None
        self.labels: torch.Tensor | None = None
        if labels is not None:
            self.labels_np = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
            if self.labels_np.shape != (self.n,):
                raise ValueError(f"labels must have shape ({self.n},), got {self.labels_np.shape}")
            self.labels = torch.as_tensor(self.labels_np).to(self.device)

    def __len__(self) -> int:
        return self.n

    @property
    def image_shape(self) -> tuple[int, ...]:
        """C x H x W of one image."""
        return tuple(self._images.shape[1:])

    @property
    def index_device(self) -> torch.device:
        """Where batch indices must live: the device when the images are there, else the CPU."""
        return self.device if self.on_device else torch.device("cpu")

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw images B x C x H x W (stored dtype) and labels (B,) on the device for indices ``idx``."""
        if self.on_device:
            y = None if self.labels is None else self.labels.index_select(0, idx)
            return self._images.index_select(0, idx), y
        rows = idx.numpy()
        x = torch.from_numpy(np.asarray(self._images[rows]))  # fancy indexing copies: writable, contiguous
        y = None if self.labels_np is None else torch.from_numpy(self.labels_np[rows])
        if self.device.type == "cuda":  # page-locked memory lets the copy run asynchronously
            x = x.pin_memory().to(self.device, non_blocking=True)
            y = None if y is None else y.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            x, y = x.to(self.device), None if y is None else y.to(self.device)
        return x, y

    def batches(
        self, batch_size: int, order: torch.Tensor | None = None, drop_last: bool = False
    ) -> Iterator[tuple]:
        """Yield ``batch(idx)`` for consecutive slices of ``order`` (default: 0..N-1)."""
        if order is None:
            order = torch.arange(self.n, device=self.index_device)
        stop = self.n - self.n % batch_size if drop_last and self.n >= batch_size else self.n
        for start in range(0, stop, batch_size):
            yield self.batch(order[start : start + batch_size])


def _fits_on_device(nbytes: int, device: torch.device, reserve_bytes: int | None) -> bool:
    """True when ``nbytes`` fit into the free memory of a CUDA device with a reserve to spare.

    Free memory is what the driver reports free (``torch.cuda.mem_get_info``) plus what PyTorch's caching
    allocator holds but does not use (``memory_reserved - memory_allocated``, e.g. left by an earlier run in
    the same notebook): the allocator reuses that memory before it asks the driver for more.
    """
    if device.type != "cuda":
        return True  # Apple MPS shares the host's memory
    free, total = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    reserve = reserve_bytes if reserve_bytes is not None else max(2 * 2**30, int(0.2 * total))
    return nbytes + reserve <= free + cached


def _copy_to_device(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """Copy a (possibly memory-mapped) array to the device chunk by chunk (bounded host memory)."""
    out = torch.empty(images.shape, dtype=torch.from_numpy(np.empty(0, images.dtype)).dtype, device=device)
    rows = max(1, _COPY_CHUNK_BYTES // max(1, images[0].nbytes))
    for start in range(0, len(images), rows):
        out[start : start + rows].copy_(torch.from_numpy(np.array(images[start : start + rows])))
    return out


def prepare_batch(
    raw: torch.Tensor,
    scale: float,
    augment: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Raw B x C x H x W batch -> float32 model input ``augment(raw * scale)``: the image in [0, 1].

    The model standardises its own input (:class:`helpers.training.models.InputStandardisation`), so this
    is all the preparation there is, in training and at prediction alike. Augmenting the [0, 1] image means
    the zero padding of :class:`helpers.xray.augment.GpuAugment` is black.
    """
    x = raw.float() * scale
    if augment is not None:
        x = augment(x, generator)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
