"""The two networks of the course: ResNet18 for chest films and a small CNN for breath-sound patches.

Taught in ``notebooks/02_training_resnet18.ipynb`` (ResNet18 surgery) and
``notebooks/06_breath_sounds.ipynb`` (the log-mel patch CNN).

**The model carries its own preprocessing.** Both networks start by standardising their input,
``(x - input_mean) / input_std``, with the training set's mean and standard deviation stored as buffers:
saved in every checkpoint with the weights, moved with ``.to(device)``, never trained. Everything outside
the model (training, prediction, explanations, the explorers) feeds it the image as stored, scaled to
[0, 1] (or the log-mel patch as computed), and input gradients and maps are in that image space. Nothing
downstream carries ``mean``/``std``, so nothing can apply the wrong ones.

Both models end with global average pooling followed by one linear layer, so the class activation map
(CAM) of ``notebooks/04_cam_math.ipynb`` applies exactly: explain ``model.layer4`` of
:func:`resnet18_xray` and ``model.features`` of :func:`breath_cnn`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torchvision.models import ResNet, ResNet18_Weights
from torchvision.models.resnet import BasicBlock

from helpers.model_state import eval_mode


class InputStandardisation(nn.Module):
    """``(x - mean) / std`` with ``mean`` and ``std`` kept as buffers (saved with the weights, never trained).

    The first step of both course models; see the module docstring. B x C x H x W in, the same shape out.
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        if not std > 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={float(self.mean):.4f}, std={float(self.std):.4f}"


def layer4_side(image_size: int) -> int:
    """Side of ResNet18's ``layer4`` maps for an ``image_size`` input: ``conv1``, the max-pool and the first
    blocks of ``layer2``..``layer4`` each map n pixels to ceil(n / 2), so ceil(S / 32): 7 for 224, 5 for 160,
    4 for 100 (not 100 // 32 = 3). Taught in ``notebooks/02_training_resnet18.ipynb``."""
    side = int(image_size)
    for _ in range(5):
        side = -(-side // 2)
    return side


def adapt_conv1_to_grayscale(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Turn an RGB ResNet ``state_dict`` into one for a 1-channel ``conv1`` and a fresh 1-logit ``fc``.

    ``conv1.weight`` (64 x 3 x 7 x 7) becomes 64 x 1 x 7 x 7 by SUMMING the three colour filters: a grey
    image is R = G = B = x, so ``sum_c w_c * x`` gives exactly the response the RGB network had to the
    same grey picture. (Averaging would divide every response by 3 and break the pretrained BatchNorm
    statistics that follow.) The ImageNet ``fc`` (1000 classes) is dropped; the caller keeps its own.

    Taught in ``notebooks/02_training_resnet18.ipynb``.
    """
    if "conv1.weight" not in state_dict:
        raise ValueError("state_dict has no 'conv1.weight': it is not a torchvision ResNet state_dict")
    weight = state_dict["conv1.weight"]
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise ValueError(f"conv1.weight should be out x 3 x k x k (RGB), got {tuple(weight.shape)}")
    adapted = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    adapted["conv1.weight"] = weight.sum(dim=1, keepdim=True)
    return adapted


def _download_imagenet_state_dict(progress: bool = True, timeout: float = 30.0) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet ResNet18 weights, from the torch hub cache or the network.

    ``timeout`` (seconds per network operation) keeps a firewalled machine, whose connections hang
    instead of failing, from blocking a notebook for minutes.
    """
    weights = ResNet18_Weights.IMAGENET1K_V1
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # torch.hub's urlopen takes no timeout of its own
    try:
        return torch.hub.load_state_dict_from_url(weights.url, progress=progress, check_hash=True)
    except Exception as err:  # URLError, socket timeouts, HTTP errors, a truncated file ...
        file_name = os.path.basename(weights.url)
        cache_file = os.path.join(torch.hub.get_dir(), "checkpoints", file_name)
        cache_file = cache_file.replace(os.path.expanduser("~"), "~", 1)  # the same for every reader
        raise RuntimeError(
            f"Could not download the ImageNet weights for ResNet18 ({type(err).__name__}: {err}). "
            f"Either connect to the internet and run again, or copy {file_name} from {weights.url} "
            f"to {cache_file} (the torch hub cache, torch.hub.get_dir()), "
            "or train from scratch with resnet18_xray(pretrained=False)."
        ) from err
    finally:
        socket.setdefaulttimeout(previous)


class XrayResNet18(ResNet):
    """torchvision's ResNet18 with a 1-channel ``conv1``, a 1-logit ``fc`` and its input standardisation
    (``normalise``) in front; see :func:`resnet18_xray`. Every torchvision attribute (``conv1``, ``layer4``,
    ``fc``...) is where torchvision puts it, so CAM, Grad-CAM and the reference libraries find them."""

    def __init__(self, mean: float = 0.5, std: float = 0.25):
        super().__init__(BasicBlock, [2, 2, 2, 2])  # torchvision's resnet18(weights=None), 1000 classes ...
        self.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)  # ... then the surgery
        self.fc = nn.Linear(512, 1)
        self.normalise = InputStandardisation(mean, std)
        # List it first, where it runs: print(model) and named_children() then read in forward order.
        self._modules = {"normalise": self._modules.pop("normalise"), **self._modules}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 1 x S x S images in [0, 1] -> B x 1 logits."""
        return super().forward(self.normalise(x))


def resnet18_xray(
    pretrained: bool = False, progress: bool = True, *, mean: float = 0.5, std: float = 0.25
) -> nn.Module:
    """torchvision ResNet18 for grey chest films: 1-channel ``conv1``, a 1-logit ``fc``, input standardisation.

    Input B x 1 x S x S, the stored image scaled to [0, 1]; the model standardises it with ``mean`` and
    ``std`` (the training set's, from the store: ``resnet18_xray(mean=store.mean, std=store.std)``), kept as
    buffers. Output B x 1 logits (label 1 = pneumonia). Any S >= 32 works: global average pooling makes the
    network size-agnostic (224 in the paper). ``conv1`` is a 7 x 7 stride-2 convolution without bias, as
    in the original. ``pretrained=True`` starts from ImageNet weights with ``conv1`` adapted by
    :func:`adapt_conv1_to_grayscale`; offline, it raises a ``RuntimeError`` that says how to proceed.
    For CAM and Grad-CAM explain ``model.layer4`` (512 maps of :func:`layer4_side` cells a side).

    Taught in ``notebooks/02_training_resnet18.ipynb``.
    """
    model = XrayResNet18(mean, std)
    if pretrained:
        state = adapt_conv1_to_grayscale(_download_imagenet_state_dict(progress=progress))
        missing, unexpected = model.load_state_dict(state, strict=False)
        expected_missing = {"fc.weight", "fc.bias", "normalise.mean", "normalise.std"}
        if unexpected or set(missing) != expected_missing:
            raise RuntimeError(f"ImageNet weights do not fit: missing {missing}, unexpected {unexpected}")
    model.architecture_name = "resnet18_xray"
    model.architecture_kwargs = {}
    return model


def _conv_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    """3 x 3 convolution + BatchNorm + ReLU, then an optional 2 x 2 max-pool (halves H and W)."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class BreathCNN(nn.Module):
    """A small VGG-like CNN for log-mel patches; see :func:`breath_cnn`.

    Layers, with the shapes for a 96 x 64 patch: ``block1`` (32 maps, 48 x 32), ``block2`` (64, 24 x 16),
    ``block3`` (128, 12 x 8), ``features`` (128 maps, 12 x 8: the layer to explain, it ends with a ReLU and
    has no pooling), ``pool`` (global average), ``dropout``, ``fc`` (n_classes logits); ``normalise`` in front.
    """

    def __init__(
        self,
        n_classes: int = 4,
        in_channels: int = 1,
        width: int = 32,
        dropout: float = 0.2,
        mean: float = 0.0,
        std: float = 1.0,
    ):
        super().__init__()
        self.normalise = InputStandardisation(mean, std)
        self.block1 = _conv_block(in_channels, width, pool=True)
        self.block2 = _conv_block(width, 2 * width, pool=True)
        self.block3 = _conv_block(2 * width, 4 * width, pool=True)
        self.features = _conv_block(4 * width, 4 * width, pool=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(4 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x H x W log-mel patches (as computed) -> B x n_classes logits."""
        maps = self.features(self.block3(self.block2(self.block1(self.normalise(x)))))
        return self.fc(self.dropout(torch.flatten(self.pool(maps), 1)))


def breath_cnn(
    n_classes: int = 4,
    in_channels: int = 1,
    width: int = 32,
    dropout: float = 0.2,
    *,
    mean: float = 0.0,
    std: float = 1.0,
) -> nn.Module:
    """A small CNN for 96 x 64 log-mel patches (B x 1 x 96 x 64 -> B x n_classes logits).

    ``mean``/``std``: the training patches' statistics; the model standardises its input with them (buffers).

    Four blocks of 3 x 3 conv + BatchNorm + ReLU (the first three followed by 2 x 2 max-pooling), global
    average pooling, dropout and one linear layer. Explain ``model.features`` with CAM or Grad-CAM: its
    128 maps of 12 x 8 cells keep the time (96 frames / 8) and frequency (64 bands / 8) axes, so heat per
    mel band can be read off. Default 4 classes = ICBHI normal / crackle / wheeze / both.

    Why not ResNet18: a 96 x 64 patch would be reduced to 3 x 2 cells by ResNet18's five stride-2 stages,
    too coarse to say which frequency band mattered; and with a few thousand patches its 11 million
    parameters overfit, while this network has about 0.25 million and trains in seconds on a CPU.

    Taught in ``notebooks/06_breath_sounds.ipynb``.
    """
    model = BreathCNN(n_classes, in_channels, width, dropout, mean, std)
    model.architecture_name = "breath_cnn"
    model.architecture_kwargs = {
        "n_classes": n_classes,
        "in_channels": in_channels,
        "width": width,
        "dropout": dropout,
    }
    return model


def layer_output_shapes(
    model: nn.Module, input_shape: Sequence[int], names: Sequence[str] | None = None
) -> dict[str, tuple[int, ...]]:
    """Output shape of each top-level child of ``model`` for one input of ``input_shape`` (e.g. 1 x 1 x S x S).

    ``names``: the children to report (default: all, in order). One forward pass of zeros in eval mode,
    under ``no_grad``, with temporary forward hooks (removed afterwards; the model's train/eval flag is
    restored). For :func:`resnet18_xray` and S = 224: ``conv1`` 1 x 64 x 112 x 112, ..., ``layer4``
    1 x 512 x 7 x 7, ``avgpool`` 1 x 512 x 1 x 1, ``fc`` 1 x 1. Taught in
    ``notebooks/02_training_resnet18.ipynb``.
    """
    children = dict(model.named_children())
    names = list(children) if names is None else list(names)
    unknown = [n for n in names if n not in children]
    if unknown:
        raise ValueError(f"no top-level module(s) {unknown} in the model; it has {list(children)}")
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        children[n].register_forward_hook(lambda _m, _i, out, n=n: shapes.__setitem__(n, tuple(out.shape)))
        for n in names
    ]
    device = next(model.parameters()).device
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(tuple(input_shape), device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return {n: shapes[n] for n in names}


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters: 11,170,753 for :func:`resnet18_xray`.

    Taught in ``notebooks/02_training_resnet18.ipynb``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# Builders by name, so that a checkpoint's meta ("architecture") can rebuild its model.
ARCHITECTURES = {"resnet18_xray": resnet18_xray, "breath_cnn": breath_cnn}
