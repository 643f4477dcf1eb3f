"""Random affine augmentation of a whole batch on its device, a different transform per image.

Taught in ``notebooks/01_data_preparation.ipynb`` (preview) and ``notebooks/02_training_resnet18.ipynb``.

torchvision's ``RandomAffine`` on a batch tensor draws ONE transform for the whole batch, and used per
image in a ``Dataset`` it runs on the CPU workers, which on a 2-vCPU Colab machine are slower than the
GPU they feed. Here the batch stays where it is: we draw B sets of parameters, build B affine matrices
``theta`` (B x 2 x 3) and let ``F.affine_grid`` + ``F.grid_sample`` resample all images in one call.

Only geometry changes, so the label stays valid: a film rotated by a few degrees or shifted by a few
percent is still the same patient with the same finding. The paper of seed 002 uses rotation,
translation and scaling; seed 001 rotates by up to +-30 degrees. Our defaults are moderate (+-10 degrees,
+-10 % shift, 0.9-1.1 zoom): positioning varies that much between real films, whereas 30 degrees
never happens in an upright PA/AP film and would mostly teach the model to ignore the corners.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AffineParams", "GpuAugment"]


@dataclass(frozen=True)
class AffineParams:
    """Per-image transform parameters, each a tensor of shape (B,).

    ``angle_deg``: counter-clockwise rotation in degrees; ``shift_x``, ``shift_y``: translation as a
    fraction of the width / height (positive = right / down); ``scale``: zoom (> 1 enlarges);
    ``flip``: 1.0 where the image is mirrored left-right, else 0.0.
    """

    angle_deg: torch.Tensor
    shift_x: torch.Tensor
    shift_y: torch.Tensor
    scale: torch.Tensor
    flip: torch.Tensor

    @staticmethod
    def identity(batch: int, device: torch.device | str = "cpu") -> AffineParams:
        """Parameters that leave every image unchanged."""
        zeros = torch.zeros(batch, device=device)
        return AffineParams(zeros, zeros, zeros, torch.ones(batch, device=device), zeros)

    def to(self, device: torch.device | str) -> AffineParams:
        """The same parameters on another device (a non-blocking copy)."""
        moved = [t.to(device, non_blocking=True) for t in (self.angle_deg, self.shift_x, self.shift_y)]
        return AffineParams(
            *moved, self.scale.to(device, non_blocking=True), self.flip.to(device, non_blocking=True)
        )


def affine_theta(params: AffineParams, height: int, width: int) -> torch.Tensor:
    """B x 2 x 3 matrices for ``F.affine_grid``: output pixel -> input pixel, in [-1, 1] coordinates.

    The image transform is ``out = T R S F in`` (flip F, scale S, rotation R, shift T, about the
    centre). ``affine_grid`` wants the inverse map, ``in = F S^-1 R^-1 (out - t)``. Rotation is done in
    pixel units and then expressed in the normalised coordinates of ``affine_grid`` (x over W/2, y over
    H/2), so a non-square image is rotated without shearing.
    """
    a = torch.deg2rad(params.angle_deg)
    cos, sin = torch.cos(a), torch.sin(a)
    inv_s = 1.0 / params.scale
    mirror = 1.0 - 2.0 * params.flip  # -1 where flipped
    # Inverse rotation by -a in pixel coordinates (y points down, so "counter-clockwise" on screen).
    # [[cos, -sin], [sin, cos]] rescaled by the aspect ratio for normalised coordinates.
    a00 = cos * inv_s
    a01 = -sin * inv_s * (height / width)
    a10 = sin * inv_s * (width / height)
    a11 = cos * inv_s
    # F is applied last in the inverse map (it acts on the input x axis): first row times -1 if flipped.
    a00, a01 = a00 * mirror, a01 * mirror
    tx, ty = 2.0 * params.shift_x, 2.0 * params.shift_y  # fraction of the size -> normalised units
    b0 = -(a00 * tx + a01 * ty)
    b1 = -(a10 * tx + a11 * ty)
    row0 = torch.stack([a00, a01, b0], dim=1)
    row1 = torch.stack([a10, a11, b1], dim=1)
    return torch.stack([row0, row1], dim=1)


@dataclass(frozen=True)
class GpuAugment:
    """Label-preserving random affine augmentation of a float B x C x H x W batch, on its own device.

    Every image gets its own rotation in ``[-rotation, rotation]`` degrees, shift in
    ``[-translate, translate]`` of its size along x and y, zoom in ``scale`` and, if ``hflip``, a
    left-right mirror with probability 1/2. Resampling is bilinear; the uncovered border is filled with
    zeros (``padding_mode="zeros"``: black when applied to x / 255 before normalisation, as the
    training loop does) or with the nearest edge pixel (``"border"``).

    No vertical flips, ever: a chest film has a fixed orientation (apices up, diaphragm and stomach
    bubble down); an upside-down film does not occur, so flipping only teaches the model that anatomy
    can be anywhere and wastes capacity. Left-right flips are off by default for a similar reason
    (heart on the left, side markers and lines), though less harmful.

    A frozen dataclass: its settings are plain values (saved with a training run, compared on resume).
    Reproducible: pass a seeded ``torch.Generator``; the same generator state gives the same output.
    Sampling happens on the generator's device (use one on the batch's device to avoid a host copy).

    Taught in ``notebooks/01_data_preparation.ipynb`` and ``notebooks/02_training_resnet18.ipynb``.
    """

    rotation: float = 10.0
    translate: float = 0.1
    scale: tuple[float, float] = (0.9, 1.1)
    hflip: bool = False
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        if self.rotation < 0 or not 0 <= self.translate < 1:
            raise ValueError(
                f"need rotation >= 0 and 0 <= translate < 1, got {self.rotation} and {self.translate}"
            )
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {self.scale}")
        if self.padding_mode not in ("zeros", "border", "reflection"):
            raise ValueError(
                f"padding_mode must be 'zeros', 'border' or 'reflection', got {self.padding_mode!r}"
            )
        # Plain floats and a tuple, whatever was passed: equal settings compare (and save) equal.
        for name, value in (("rotation", float(self.rotation)), ("translate", float(self.translate))):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "scale", (float(self.scale[0]), float(self.scale[1])))
        object.__setattr__(self, "hflip", bool(self.hflip))

    def replace(self, **changes) -> GpuAugment:
        """A copy with some settings changed, e.g. ``augment.replace(padding_mode="border")``."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"GpuAugment has no setting(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def sample(self, batch: int, generator: torch.Generator | None = None) -> AffineParams:
        """Draw parameters for ``batch`` images (tensors of shape (B,) on the generator's device)."""
        device = generator.device if generator is not None else torch.device("cpu")

        def uniform(low: float, high: float) -> torch.Tensor:
            u = torch.rand(batch, generator=generator, device=device)
            return low + (high - low) * u

        angle = uniform(-self.rotation, self.rotation)
        shift_x = uniform(-self.translate, self.translate)
        shift_y = uniform(-self.translate, self.translate)
        zoom = uniform(*self.scale)
        if self.hflip:
            flip = (torch.rand(batch, generator=generator, device=device) < 0.5).float()
        else:
            flip = torch.zeros(batch, device=device)
        return AffineParams(angle, shift_x, shift_y, zoom, flip)

    def apply(self, images: torch.Tensor, params: AffineParams) -> torch.Tensor:
        """Resample B x C x H x W float ``images`` with the given per-image parameters (same shape out)."""
        if images.ndim != 4 or not images.is_floating_point():
            raise ValueError(
                f"GpuAugment expects a float B x C x H x W batch, got {images.dtype} {tuple(images.shape)}"
            )
        b, _, h, w = images.shape
        if params.angle_deg.shape != (b,):
            raise ValueError(f"parameters are for {params.angle_deg.shape[0]} images, the batch has {b}")
        params = params.to(images.device)
        theta = affine_theta(params, h, w).to(images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(
            images, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=False
        )

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """B x C x H x W float -> B x C x H x W float, each image with its own random transform."""
        if images.ndim != 4:
            raise ValueError(f"GpuAugment expects a B x C x H x W batch, got shape {tuple(images.shape)}")
        return self.apply(images, self.sample(images.shape[0], generator))
