"""Switching a model to evaluation mode for a while, and back, exactly as it was.

Used wherever the course runs a model without training it: validation, prediction, explanations, the
explorers. ``model.eval()`` followed by ``model.train(was_training)`` is not enough: it sets EVERY submodule
to the parent's old flag (a model whose BatchNorms were frozen in eval mode inside a training model comes
back with them training), and it is skipped when an exception escapes in between.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode inside the ``with`` block; afterwards every submodule's own train/eval flag
    is restored, also when the block raises. Gradients are untouched (wrap in ``torch.no_grad()`` if needed)."""
    modes = {module: module.training for module in model.modules()}
    try:
        yield model.eval()
    finally:
        for module, training in modes.items():
            module.training = training
