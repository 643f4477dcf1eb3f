"""Reference answers for the exercises of notebooks/05b_which_explanation.ipynb."""

from __future__ import annotations

import torch
from torch import nn

from helpers.exercises.checks import Exercise
from helpers.explain import gradients


def _ig_of_linear_model(x: torch.Tensor, baseline: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Integrated Gradients of y = w . x (one C x H x W image) by the course's numerical implementation."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(w.numel(), 1, dtype=torch.float64))
    with torch.no_grad():
        model[1].weight.copy_(w.reshape(1, -1))
        model[1].bias.fill_(0.5)
    attributions = gradients.integrated_gradients(model, x[None], baseline=baseline[None], steps=8)
    return attributions[0]


def _images() -> list[dict[str, torch.Tensor]]:
    """Images, baselines and weights of several shapes; baselines black and not; weights of both signs."""
    generator = torch.Generator().manual_seed(11)
    cases = []
    for shape, black in [((1, 4, 4), True), ((1, 6, 8), False), ((3, 5, 5), False)]:
        x = torch.rand(shape, generator=generator, dtype=torch.float64)
        baseline = (
            torch.zeros(shape, dtype=torch.float64)
            if black
            else torch.rand(shape, generator=generator, dtype=torch.float64)
        )
        cases.append(
            {"x": x, "baseline": baseline, "w": torch.randn(shape, generator=generator, dtype=torch.float64)}
        )
    return cases


EXERCISES = {
    "ig_linear": Exercise(
        question="Write ig_linear(x, baseline, w): the Integrated Gradients attributions of y = w . x + b.",
        reference=_ig_of_linear_model,
        hint="The gradient of a linear score is w everywhere on the path, so the integral of the gradient is w: "
        "the attributions are (x - baseline) * w, and they add up to y(x) - y(baseline).",
        inputs=_images,
    ),
}
