"""Class activation maps: CAM, Grad-CAM, guided backpropagation and Guided Grad-CAM, batched, pure torch.

CAM and Grad-CAM are taught in ``notebooks/04_cam_math.ipynb``; Grad-CAM at any layer, guided
backpropagation and Guided Grad-CAM in ``notebooks/05_gradcam_guided_backprop.ipynb``.

Every function here leaves the model exactly as it found it: it runs the model in eval mode (BatchNorm
uses its running statistics, dropout is off) and afterwards restores each module's training flag, removes
every hook it added (also when the forward pass raises), never changes ``requires_grad`` or ``inplace``
flags, never writes ``.grad`` of the parameters or of the input, and never modifies the input. Results
are fresh, detached tensors on the model's device.

Targets. A single-logit model (output ``B x 1`` or ``B``) has two classes: ``target=1`` explains the
logit (pneumonia), ``target=0`` explains its negative (the "normal" class). A multi-logit model takes a
class index, or one index per image (a sequence or a 1-D tensor of length ``B``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers.model_state import eval_mode

Target = int | Sequence[int] | Tensor
Layer = str | nn.Module

__all__ = [
    "check_images",
    "class_activation_map",
    "finish_maps",
    "grad_cam",
    "layer_activations",
    "guided_backprop",
    "guided_grad_cam",
    "min_max_normalize",
    "model_input",
    "resolve_layer",
    "target_scores",
    "upsample_maps",
]


def resolve_layer(model: nn.Module, layer: Layer) -> nn.Module:
    """The submodule of ``model`` named by ``layer`` (a dotted name such as ``"layer4"``, ``"layer3.1.conv2"``
    or ``"features.3"``, or the module itself).

    A name that does not exist raises a ``ValueError`` that suggests the closest names (``difflib``), so
    ``"layer4.1.bn3"`` answers "did you mean 'layer4.1.bn2'?".
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    if isinstance(layer, nn.Module):
        if any(module is layer for module in model.modules()):
            return layer
        raise ValueError(
            f"the layer {type(layer).__name__} passed to explain {type(model).__name__} is not one of its "
            "modules; pass a submodule of the model or its dotted name, e.g. 'layer4'"
        )
    if not isinstance(layer, str):
        raise ValueError(
            f"layer must be a module or a dotted name such as 'layer4', got {type(layer).__name__}"
        )
    names = {name: module for name, module in model.named_modules() if name}
    if layer in names:
        return names[layer]
    close = difflib.get_close_matches(layer, list(names), n=3, cutoff=0.6)
    hint = (
        "did you mean " + ", ".join(repr(name) for name in close) + "?"
        if close
        else "its top-level layers are " + ", ".join(repr(name) for name in names if "." not in name)
    )
    raise ValueError(f"{type(model).__name__} has no layer named {layer!r}; {hint}")


def target_scores(logits: Tensor, target: Target) -> Tensor:
    """The score to explain for each image: ``B x 1`` (or ``B``) or ``B x K`` logits -> ``B``.

    Single logit: ``target=1`` gives the logit, ``target=0`` its negative. ``K`` logits: the logit of the
    class ``target`` (one index for all images, or one per image).
    Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    if logits.ndim == 1:
        logits = logits[:, None]
    if logits.ndim != 2:
        raise ValueError(f"expected model outputs B x K (or B), got shape {tuple(logits.shape)}")
    classes = _target_indices(target, logits.shape[0], logits.shape[1], logits.device)
    if logits.shape[1] == 1:
        return logits[:, 0] * (2 * classes - 1).to(logits.dtype)
    return logits.gather(1, classes[:, None])[:, 0]


def min_max_normalize(maps: Tensor) -> Tensor:
    """Scale each map of ``B x H x W`` to [0, 1] (its minimum to 0, its maximum to 1).

    A constant map (all zeros, for instance) becomes all zeros rather than NaN.
    Taught in ``notebooks/04_cam_math.ipynb``.
    """
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(torch.finfo(maps.dtype).tiny), 0.0)


def class_activation_map(
    model: nn.Module,
    x: Tensor,
    upsample: bool = False,
    *,
    target: Target = 1,
    features: Layer = "layer4",
    head: Layer = "fc",
) -> Tensor:
    r"""Class activation map (Zhou et al. 2016) of a network whose head is global average pooling + linear.

    With :math:`A_k` the ``features`` output (``B x K x h x w``; ResNet18: ``layer4``) and :math:`w^c` the
    row of ``head.weight`` for class :math:`c` (the single row of a 1-logit head, negated for ``target=0``):

    .. math:: M^c(i, j) = \sum_k w^c_k \, A_k(i, j), \qquad
              y^c = \frac{1}{h w} \sum_{i, j} M^c(i, j) + b^c .

    The map is not normalised, so that the logit equals its spatial mean plus the bias
    (``-logit = mean - bias`` for ``target=0``). ``x``: ``B x C x H x W`` -> ``B x h x w``, or ``B x H x W``
    with ``upsample=True`` (bilinear, ``align_corners=False``). Taught in ``notebooks/04_cam_math.ipynb``.
    """
    check_images(x)
    feature_layer = resolve_layer(model, features)
    linear = resolve_layer(model, head)
    if not isinstance(linear, nn.Linear):
        raise ValueError(
            f"CAM needs a linear head after global average pooling; {head!r} is {type(linear).__name__}"
        )
    captured: list[Tensor] = []

    def keep_copy(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        captured.append(_as_feature_map(output, features).detach().clone())

    with _explaining(model) as handles, torch.no_grad():
        handles.append(feature_layer.register_forward_hook(keep_copy))
        model(model_input(model, x))
        if len(captured) != 1:
            raise ValueError(
                f"layer {features!r} ran {len(captured)} times in one forward pass; CAM needs it once"
            )
        activations = captured[0]
        if activations.shape[1] != linear.in_features:
            raise ValueError(
                f"{features!r} has {activations.shape[1]} channels but the head {head!r} expects "
                f"{linear.in_features} features"
            )
        classes = _target_indices(target, x.shape[0], linear.out_features, activations.device)
        if linear.out_features == 1:
            weights = linear.weight[0] * (2 * classes - 1)[:, None].to(activations.dtype)
        else:
            weights = linear.weight[classes]
        cam = torch.einsum("bkhw,bk->bhw", activations, weights)
    return upsample_maps(cam, x.shape[-2:]) if upsample else cam


def grad_cam(
    model: nn.Module,
    x: Tensor,
    layer: Layer,
    target: Target = 1,
    *,
    normalize: bool = True,
    upsample: bool = True,
) -> Tensor:
    r"""Grad-CAM (Selvaraju et al. 2017) for a whole batch: one forward and one backward pass.

    With :math:`A_k` the output of ``layer`` (``B x K x h x w``) and :math:`y` the score of ``target``:

    .. math:: \alpha_k = \frac{1}{h w} \sum_{i, j} \frac{\partial y}{\partial A_k(i, j)}, \qquad
              L = \mathrm{ReLU}\Big(\sum_k \alpha_k A_k\Big),

    then bilinear upsampling to the input size (``align_corners=False``) and per-image min-max scaling to
    [0, 1] (a map that is zero everywhere stays zero). ``x``: ``B x C x H x W`` -> ``B x H x W``;
    ``normalize=False, upsample=False`` returns the raw ``B x h x w`` map at the layer's resolution. For a
    global-average-pooling + linear head, Grad-CAM on the last block equals ``ReLU(CAM) / (h w)``.

    Only the part of the network above ``layer`` records a graph: the forward pass runs without gradients
    up to ``layer``, whose output is copied into a fresh leaf tensor, and ``torch.autograd.grad`` stops
    there. The copy also keeps the activation safe from later in-place operations (``out += identity``,
    inplace ReLU), so ``"layer4.1.bn2"`` gives the right map. ``layer`` must run once per forward pass (a
    ReLU module that a ResNet block calls twice is refused). Taught in ``notebooks/04_cam_math.ipynb`` and
    ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    activations, gradients = layer_activations(model, x, layer, target)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    return finish_maps(F.relu((weights * activations).sum(dim=1)), x.shape[-2:], normalize, upsample)


def layer_activations(
    model: nn.Module, x: Tensor, layer: Layer, target: Target = 1, *, gradients: bool = True
) -> tuple[Tensor, Tensor | None]:
    """The output of ``layer`` for ``x`` (``B x K x h x w``, a detached copy) and, with ``gradients``, the
    gradient of the score of ``target`` with respect to it (else ``None``): what the CAM family weighs.

    Only the part of the network above ``layer`` records a graph: the forward pass runs without gradients up
    to ``layer``, whose output is copied into a fresh leaf tensor, and ``torch.autograd.grad`` stops there.
    The copy also keeps the activation safe from later in-place operations (``out += identity``, inplace
    ReLU), so ``"layer4.1.bn2"`` gives the right map. ``layer`` must run once per forward pass (a ReLU module
    that a ResNet block calls twice is refused). Used by :func:`grad_cam` and
    :mod:`helpers.explain.cam_family`; the model is left as it was.
    """
    check_images(x)
    module = resolve_layer(model, layer)
    captured: list[Tensor] = []

    def capture(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor | None:
        if captured:
            raise ValueError(
                f"layer {layer!r} runs more than once in a forward pass (a module used twice, such as the "
                "ReLU of a ResNet block); choose a layer that runs once, e.g. its parent block"
            )
        captured.append(_as_feature_map(output, layer).detach().clone())
        if not gradients:
            return None
        torch.set_grad_enabled(True)  # the graph starts here; the enclosing no_grad() restores the mode
        return captured[-1].requires_grad_(True).clone()  # later in-place operations change this copy

    with _explaining(model) as handles, torch.no_grad():
        handles.append(module.register_forward_hook(capture))
        logits = model(model_input(model, x))
        if not captured:
            raise ValueError(f"layer {layer!r} did not run in the forward pass of {type(model).__name__}")
        scores = target_scores(logits, target)  # checks the target also when no gradient is needed
        if not gradients:
            return captured[0], None
        if not logits.requires_grad:
            raise ValueError(
                f"the model's output does not depend on layer {layer!r}; pick a layer before the head"
            )
        (gradient,) = torch.autograd.grad(scores.sum(), captured[0])
    return captured[0].detach(), gradient


def finish_maps(raw: Tensor, size: Sequence[int], normalize: bool = True, upsample: bool = True) -> Tensor:
    """Raw ``B x h x w`` maps upsampled to ``size`` (bilinear) and scaled to [0, 1] per image, as asked."""
    maps = upsample_maps(raw, size) if upsample else raw
    return min_max_normalize(maps) if normalize else maps


class _PositiveGradient(torch.autograd.Function):
    """Identity forward (a copy); backward lets only positive gradients through (the "guided" ReLU)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, activation: Tensor) -> Tensor:
        return activation.clone()

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, gradient: Tensor) -> Tensor:
        return gradient.clamp(min=0)


def guided_backprop(model: nn.Module, x: Tensor, target: Target = 1) -> Tensor:
    r"""Guided backpropagation (Springenberg et al. 2015): the input gradient of the score of ``target``,
    where every ReLU passes back only positive gradients, and only where its input was positive:

    .. math:: R^{(l)} = \mathbb{1}\big[f^{(l)} > 0\big] \odot \mathrm{ReLU}\big(R^{(l+1)}\big).

    ``x``: ``B x C x H x W`` -> ``B x C x H x W`` (one forward and one backward pass for the batch). Every
    ``nn.ReLU`` module is guided, whatever its name, inplace or not, and also when a block calls it twice:
    a forward hook feeds its output through an identity whose backward clamps the gradient at zero (the
    ReLU's own backward supplies the mask). Functional ``F.relu`` calls keep their ordinary gradient, as in
    Captum. The gradient is taken with ``torch.autograd.grad`` on a private copy of ``x``, so ``x.grad`` is
    never touched and two calls give the same, independent results. Taught in
    ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    check_images(x)
    relus = [module for module in model.modules() if isinstance(module, nn.ReLU)]

    def guide(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        return _PositiveGradient.apply(output)

    with _explaining(model) as handles, torch.enable_grad():
        handles.extend(relu.register_forward_hook(guide) for relu in relus)
        images = model_input(model, x).requires_grad_(True)
        scores = target_scores(model(images), target)
        (gradients,) = torch.autograd.grad(scores.sum(), images)
    return gradients


def guided_grad_cam(
    model: nn.Module,
    x: Tensor,
    layer: Layer,
    target: Target = 1,
    *,
    normalize: bool = True,
) -> Tensor:
    r"""Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation times the upsampled Grad-CAM map.

    .. math:: G(x) = \frac{\partial^{\mathrm{guided}} y}{\partial x} \odot \mathrm{upsample}(L)

    ``x``: ``B x C x H x W`` -> ``B x C x H x W``. With ``normalize=True`` the Grad-CAM factor is min-max
    scaled to [0, 1] per image (a mask, as in pytorch-grad-cam's example); ``normalize=False`` uses the raw
    upsampled map (Captum's ``GuidedGradCam`` with ``interpolate_mode="bilinear"``). Taught in
    ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    cam = grad_cam(model, x, layer, target, normalize=normalize, upsample=True)
    return guided_backprop(model, x, target) * cam[:, None]


@contextmanager
def _explaining(model: nn.Module) -> Iterator[list[torch.utils.hooks.RemovableHandle]]:
    """Run ``model`` in eval mode; afterwards remove the hooks put in the yielded list and restore modes."""
    handles: list[torch.utils.hooks.RemovableHandle] = []
    with eval_mode(model):
        try:
            yield handles
        finally:
            for handle in handles:
                handle.remove()


def check_images(x: Tensor) -> None:
    """Raise ``ValueError`` unless ``x`` is a float ``B x C x H x W`` tensor (every explanation's input)."""
    if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        dtype = f", dtype {x.dtype}" if isinstance(x, Tensor) else ""
        raise ValueError(f"expected images as a float tensor B x C x H x W, got {shape}{dtype}")


def model_input(model: nn.Module, x: Tensor) -> Tensor:
    """A private copy of ``x`` on the model's device, cut from the caller's graph."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else x.device
    return x.detach().to(device=device, copy=True)


def _as_feature_map(output: object, layer: Layer) -> Tensor:
    if not isinstance(output, Tensor) or output.ndim != 4:
        found = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(f"layer {layer!r} must output a B x K x h x w feature map, got {found}")
    return output


def _target_indices(target: Target, batch: int, n_outputs: int, device: torch.device) -> Tensor:
    """``target`` as a ``B`` long tensor of class indices, checked against the number of model outputs."""
    classes = torch.as_tensor(target, device=device)
    if classes.is_floating_point() or classes.is_complex() or classes.ndim > 1:
        raise ValueError(f"target must be a class index or one index per image, got {target!r}")
    classes = classes.long().expand(batch) if classes.ndim == 0 else classes.long()
    if classes.shape != (batch,):
        raise ValueError(f"target has {classes.shape[0]} entries for a batch of {batch} images")
    valid = 2 if n_outputs == 1 else n_outputs
    if bool(((classes < 0) | (classes >= valid)).any()):
        what = (
            "a single-logit model takes target 1 (the logit) or 0 (its negative)"
            if n_outputs == 1
            else f"the model has {n_outputs} classes (0 to {n_outputs - 1})"
        )
        raise ValueError(f"target {target!r} is out of range: {what}")
    return classes


def upsample_maps(maps: Tensor, size: Sequence[int]) -> Tensor:
    """``B x h x w`` -> ``B x H x W``, bilinear with ``align_corners=False``."""
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
