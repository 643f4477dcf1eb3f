"""Shared by the explanation tests: is a model left exactly as it was, and the negated model for target=0."""

from __future__ import annotations

import torch
from torch import nn


def hooks_of(model: nn.Module) -> int:
    """Hooks of every kind on every module of ``model``."""
    return sum(
        len(m._forward_hooks)
        + len(m._backward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_pre_hooks)
        for m in model.modules()
    )


def snapshot(model: nn.Module) -> dict:
    """What an explanation must leave as it was: weights and buffers, modes, ``requires_grad``, ``inplace``."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "inplace": [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)],
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    """``model`` matches ``before`` (a :func:`snapshot`), has no ``.grad`` and no hook."""
    after = snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    assert all(torch.equal(after["state"][k], before["state"][k]) for k in before["state"])
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["inplace"] == before["inplace"]
    assert all(p.grad is None for p in model.parameters())
    assert hooks_of(model) == 0


class Negated(nn.Module):
    """The single-logit model with its output negated: the reference libraries' way to explain target=0."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.model(x)
