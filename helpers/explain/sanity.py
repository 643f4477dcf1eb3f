"""Sanity checks for explanations: cascading model-parameter randomisation (Adebayo et al. 2018).

Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``. An explanation that describes the MODEL must
change when the model's weights are destroyed. Starting from the top (``fc``, then ``layer4``, ...), the
layers of a deep copy of the model are re-initialised one after the other, cumulatively, and the maps of
each step are compared with the original maps by Spearman rank correlation, of the maps and of their
absolute values (Adebayo et al. report both; sign flips are common after randomisation). Grad-CAM's
correlation collapses; guided backpropagation's barely moves, because it mostly shows edges of the input.

Explainers are passed in as a callable ``explain(model, x) -> maps`` returning ``B x ...`` maps (a tensor or
an array; each image's map is flattened), so any method can be checked, e.g.
``lambda m, x: cam.grad_cam(m, x, "layer4")`` (name the layer: the explainer receives a deep copy, whose
modules are not the caller's). The caller's model is never modified.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata
from torch import nn

from helpers.explain.cam import resolve_layer
from helpers.progress import progress_bar

Explainer = Callable[[nn.Module, torch.Tensor], Any]
RESNET_ORDER: tuple[str | tuple[str, ...], ...] = (
    "fc",
    "layer4",
    "layer3",
    "layer2",
    "layer1",
    ("conv1", "bn1"),
)


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def default_layer_order(model: nn.Module) -> list[tuple[str, ...]]:
    """Groups of submodule names to randomise, top first.

    A torchvision ResNet gets ``fc, layer4, layer3, layer2, layer1, conv1+bn1``; any other model gets its
    top-level children that hold parameters, in reverse order of definition.
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    names = {name for name, _ in model.named_children()}
    groups = [(g,) if isinstance(g, str) else g for g in RESNET_ORDER]
    if all(n in names for group in groups for n in group):
        return groups
    return [(name,) for name, child in reversed(list(model.named_children())) if _has_parameters(child)]


def reinitialise(module: nn.Module, seed: int) -> None:
    """Re-initialise every parameter of ``module`` in place with its modules' ``reset_parameters()``.

    Runs under a forked, seeded torch RNG, so it is deterministic and leaves the global RNG untouched.
    Raises ``ValueError`` if a parameter belongs to a module that has no ``reset_parameters()``.
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    covered: set[int] = set()
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for sub in module.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
                covered.update(id(p) for p in sub.parameters(recurse=False))
    missed = [name for name, p in module.named_parameters() if id(p) not in covered]
    if missed:
        raise ValueError(f"cannot re-initialise parameters {missed}: their module has no reset_parameters()")


def _as_flat_maps(maps: Any, step: str) -> np.ndarray:
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().to("cpu", torch.float64).numpy()
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim < 2:
        raise ValueError(f"explain: expected B x ... maps, got shape {maps.shape} at step {step!r}")
    return maps.reshape(len(maps), -1)


def randomisation_maps(
    model: nn.Module,
    x: torch.Tensor,
    explain: Explainer,
    *,
    layers: Sequence[str | Sequence[str]] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Maps of ``x`` (``B x C x H x W``) before and after each cumulative randomisation step.

    Returns an ordered dict ``{"original": maps, "fc": maps, "fc+layer4"... }`` keyed by the group just
    randomised (``"conv1+bn1"`` for a group of two), each value shaped as ``explain`` returns it (as float64
    numpy). ``layers`` lists names or groups of names, top first (default: :func:`default_layer_order`).
    Each step's re-initialisation has its own seed derived from ``seed``. Works on a deep copy of ``model``.
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    layers = default_layer_order(model) if layers is None else layers
    groups = [(g,) if isinstance(g, str) else tuple(g) for g in layers]
    if not groups:
        raise ValueError(
            "layers: nothing to randomise (an empty list, or a model without children with parameters)"
        )
    work = copy.deepcopy(model)
    modules = [[resolve_layer(work, name) for name in group] for group in groups]

    def run(step: str) -> np.ndarray:
        maps = explain(work, x)
        flat = _as_flat_maps(maps, step)  # checks the shape
        return flat.reshape(np.shape(maps))

    results = {"original": run("original")}
    for k, (group, mods) in enumerate(
        progress_bar(list(zip(groups, modules, strict=True)), enabled=progress), start=1
    ):
        for j, module in enumerate(mods):
            reinitialise(module, seed + k * 1000 + j)
        results["+".join(group)] = run("+".join(group))
    return results


def rank_correlation(reference: Any, maps: Any, *, constant: float = 0.0) -> np.ndarray:
    """Spearman rank correlation per image between two batches of maps (``B x ...`` each): ``(B,)``.

    Average ranks for ties, then Pearson on the ranks (as ``scipy.stats.spearmanr``). Identical rankings
    give exactly 1.0. When either map is constant (Grad-CAM often is all zero once a few layers are random)
    the correlation is undefined and the value is ``constant``: by default 0, the expected correlation
    when the constant map's ties are broken at random; pass ``np.nan`` to keep it undefined.
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    a, b = _as_flat_maps(reference, "reference"), _as_flat_maps(maps, "maps")
    if a.shape != b.shape:
        raise ValueError(f"maps: expected the shape of the reference maps {a.shape}, got {b.shape}")
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ca, cb = ra - ra.mean(axis=1, keepdims=True), rb - rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ca**2).sum(axis=1) * (cb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.clip((ca * cb).sum(axis=1) / denom, -1.0, 1.0)
    rho[(ra == rb).all(axis=1) & (denom > 0)] = 1.0
    rho[denom == 0] = constant
    return rho


def randomisation_table(maps_by_step: dict[str, np.ndarray]) -> pd.DataFrame:
    """Rank correlations of every step's maps with the ``"original"`` ones (from :func:`randomisation_maps`).

    One row per step: ``step`` (0 = original), ``randomised`` (the group randomised at this step),
    ``n_constant`` (images whose map is constant at this step: they score 0, see :func:`rank_correlation`),
    ``spearman_mean``, ``spearman_std``, ``abs_spearman_mean``, ``abs_spearman_std`` (over images), and the
    per-image values in ``spearman`` and ``abs_spearman`` (arrays of length ``B``).
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    if "original" not in maps_by_step:
        raise ValueError(f"maps_by_step: expected an 'original' entry, got {list(maps_by_step)}")
    reference = maps_by_step["original"]
    rows = []
    for step, (name, maps) in enumerate(maps_by_step.items()):
        flat = _as_flat_maps(maps, name)
        row: dict[str, Any] = {
            "step": step,
            "randomised": name,
            "n_constant": int((flat == flat[:, :1]).all(axis=1).sum()),
        }
        values = {
            "spearman": rank_correlation(reference, maps),
            "abs_spearman": rank_correlation(np.abs(reference), np.abs(maps)),
        }
        for key, rho in values.items():
            row[f"{key}_mean"], row[f"{key}_std"] = rho.mean(), rho.std()
        rows.append({**row, **values})
    return pd.DataFrame(rows)
