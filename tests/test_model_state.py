"""Tests of helpers.model_state.eval_mode: eval mode inside the block, every submodule's own flag afterwards."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers.model_state import eval_mode


def _mixed_model() -> nn.Sequential:
    """A training model whose BatchNorm is frozen in eval mode and whose inner block is in eval mode too."""
    model = nn.Sequential(
        nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 1)), nn.Dropout()
    )
    model.train()
    model[1].eval()
    model[2].eval()  # the block and both of its children
    model[2][1].train()  # ... except its Linear: a flag that differs from its parent's
    return model


def _flags(model: nn.Module) -> dict[str, bool]:
    return {name: module.training for name, module in model.named_modules()}


def test_eval_mode_sets_every_module_to_eval_and_restores_each_ones_own_flag():
    model = _mixed_model()
    before = _flags(model)
    assert before == {"": True, "0": True, "1": False, "2": False, "2.0": False, "2.1": True, "3": True}
    with eval_mode(model) as inside:
        assert inside is model
        assert not any(_flags(model).values())
        assert torch.is_grad_enabled()  # gradients are not eval_mode's business
    assert _flags(model) == before


def test_eval_mode_restores_the_flags_when_the_block_raises():
    model = _mixed_model()
    before = _flags(model)
    with pytest.raises(RuntimeError, match="stopped inside"):
        with eval_mode(model):
            model(torch.zeros(2, 3))
            raise RuntimeError("stopped inside")
    assert _flags(model) == before


def test_eval_mode_nests_and_undoes_changes_made_inside_the_block():
    model = _mixed_model()
    before = _flags(model)
    with eval_mode(model):
        with eval_mode(model[2]):  # the inner block restores what it found: everything in eval mode
            assert not any(_flags(model).values())
        assert not any(_flags(model).values())
        with eval_mode(model):
            pass
        assert not any(_flags(model).values())
        model.train()  # code inside the block switches the model back to training ...
    assert _flags(model) == before  # ... and still gets the flags it had before the block


def test_eval_mode_does_what_model_eval_then_model_train_does_not():
    """The naive way, ``model.eval()`` then ``model.train(was_training)``, unfreezes the frozen BatchNorm."""
    naive = _mixed_model()
    was_training = naive.training
    naive.eval()
    naive.train(was_training)
    assert naive[1].training  # the frozen BatchNorm would train again
    model = _mixed_model()
    with eval_mode(model):
        pass
    assert not model[1].training


def test_eval_mode_changes_the_output_of_dropout_and_batchnorm_as_eval_does():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5)).train()
    x = torch.randn(8, 3)
    with eval_mode(model), torch.no_grad():
        inside = model(x)
    with torch.no_grad():
        expected = model.eval()(x)
    torch.testing.assert_close(inside, expected)
