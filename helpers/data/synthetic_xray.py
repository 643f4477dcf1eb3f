"""Procedural chest radiographs: the pixels of the built-in synthetic RSNA-like and Kermany-like sets.

Taught in ``notebooks/00_setup.ipynb`` (what the synthetic data is) and used by ``helpers.data.synthetic``.
Everything here is vectorised numpy on one image; nothing touches files. A radiograph is a density map
(bright = dense) built from soft shapes in *anatomical* coordinates ``(u, v)`` in ``[0, 1]`` (the patient's
pose moves them), then an exposure curve, a smooth exposure gradient and pixel noise. Opacities are drawn
in *image* coordinates inside the boxes given in output pixels, so the boxes of the label file are exactly
where the planted pneumonia is: the known right answer for Grad-CAM in ``notebooks/05_gradcam_guided_backprop``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

#: Largest side drawn with numpy; bigger images are upsampled (bicubic), noise and all.
DRAW_SIZE = 512
#: Lung centres (u) and semi-axes in anatomical coordinates, shared by the drawer and box placement.
LUNG_CENTRES_U = (0.335, 0.665)
LUNG_CENTRE_V = 0.46
LUNG_SEMI_AXES = (0.14, 0.33)


@dataclass(frozen=True)
class Pose:
    """Where the patient stands: rotation (degrees), shift (fraction of the image) and body scale."""

    angle_deg: float
    shift_x: float
    shift_y: float
    scale: float

    def to_image(self, u: float, v: float) -> tuple[float, float]:
        """Map an anatomical point ``(u, v)`` to image coordinates ``(x, y)``, both in ``[0, 1]`` units."""
        cos, sin = math.cos(math.radians(self.angle_deg)), math.sin(math.radians(self.angle_deg))
        du, dv = (u - 0.5) * self.scale, (v - 0.5) * self.scale
        return 0.5 + self.shift_x + du * cos + dv * sin, 0.5 + self.shift_y - du * sin + dv * cos


def random_pose(rng: np.random.Generator, pediatric: bool = False) -> Pose:
    """A slight per-patient rotation and shift; children (``pediatric``) fill less of the frame."""
    scale = rng.uniform(0.68, 0.84) if pediatric else rng.uniform(0.94, 1.05)
    return Pose(
        angle_deg=float(rng.uniform(-4.0, 4.0)),
        shift_x=float(rng.uniform(-0.03, 0.03)),
        shift_y=float(rng.uniform(-0.03, 0.03) + (0.02 if pediatric else 0.0)),
        scale=float(scale),
    )


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth random field, ``size`` x ``size`` float32 with zero mean and unit-ish spread.

    ``cells`` random values a side are upsampled bicubically, so ``1 / cells`` is the feature size.
    """
    coarse = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    big = Image.fromarray(coarse).resize((size, size), Image.BICUBIC, box=(1, 1, cells + 2, cells + 2))
    return np.asarray(big, dtype=np.float32)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * z)


def _anatomy(pose: Pose, n: int, rng: np.random.Generator, abnormal: bool) -> np.ndarray:
    """The density of the body (n x n float32, roughly in [0, 1]) before opacities and exposure."""
    grid = (np.arange(n, dtype=np.float32) + 0.5) / n - 0.5
    x, y = grid[None, :] - pose.shift_x, grid[:, None] - pose.shift_y
    cos, sin = (
        math.cos(math.radians(pose.angle_deg)) / pose.scale,
        math.sin(math.radians(pose.angle_deg)) / pose.scale,
    )
    u = 0.5 + x * cos - y * sin
    v = 0.5 + x * sin + y * cos
    du = np.abs(u - 0.5)
    # Soft tissue: neck widening into shoulders, a little narrower at the waist, thinner at its edges.
    half_width = 0.085 + 0.355 * _sigmoid((v - 0.13) / 0.035) - 0.04 * np.clip(v - 0.5, 0.0, None)
    rel = du / half_width
    body = _sigmoid((1.0 - rel) * half_width / 0.012)
    density = 0.42 * body * (1.0 - 0.3 * rel * rel * rel * rel)
    # Lungs: two egg shapes narrowing to the apex, cut below by the diaphragm domes (right one higher).
    raised = abnormal and rng.random() < 0.35
    lungs = np.zeros_like(density)
    for side, cu in enumerate(LUNG_CENTRES_U):
        lateral = (u - cu) * (1.0 if side else -1.0) > 0
        semi_u = np.where(lateral, np.float32(0.165), np.float32(0.115)) * (
            0.45 + 0.55 * _sigmoid((v - 0.22) / 0.06)
        )
        dv2 = ((v - LUNG_CENTRE_V) / LUNG_SEMI_AXES[1]) ** 2
        ell = ((u - cu) / semi_u) ** 2 + np.where(v > LUNG_CENTRE_V, dv2 * dv2, dv2)
        base = (0.77 if side == 0 else 0.795) - (0.07 if raised and side == 1 else 0.0)
        dome = base - 0.07 * np.exp(-(((u - cu) / 0.09) ** 2)) + 0.03 * ((u - cu) / 0.13) ** 2
        lungs = np.maximum(lungs, _sigmoid((1.0 - ell) / 0.05) * _sigmoid((dome - v) / 0.008))
    hilum = np.exp(-(((du - 0.1) / 0.05) ** 2) - ((v - 0.45) / 0.08) ** 2)
    markings = 0.22 + 0.07 * smooth_noise(rng, n, 28) + 0.25 * hilum
    density -= lungs * 0.32 * (1.0 - markings)
    # Mediastinum and spine, then the heart (larger on some films: AP magnification, cardiomegaly).
    density += 0.2 * _sigmoid((0.05 + 0.04 * v - du) / 0.012) * _sigmoid((v - 0.08) / 0.02)
    heart_scale = float(rng.uniform(0.95, 1.1)) * (1.2 if abnormal and not raised else 1.0)
    hu, hv = (u - 0.545) / heart_scale, (v - 0.63) / heart_scale
    hr, hs = hu * 0.94 + hv * 0.34, hv * 0.94 - hu * 0.34
    density += 0.17 * _sigmoid((1.0 - (hr / 0.165) ** 2 - (hs / 0.115) ** 2) / 0.12) * body
    # Ribs: curved periodic bands, faint outside the lungs, and the two clavicles.
    thorax = _sigmoid((0.42 - du) / 0.02) * _sigmoid((v - 0.12) / 0.02) * _sigmoid((0.78 - v) / 0.03)
    phase = (v - 0.16 - 1.6 * (du - 0.12) ** 2 + 0.05 * du) * (1.0 / float(rng.uniform(0.062, 0.072)))
    ribs = 0.5 + 0.5 * np.cos(2 * np.pi * phase)
    ribs *= ribs * ribs * ribs * _sigmoid((du - 0.06) / 0.01) * thorax * (0.35 + 0.65 * lungs)
    density += 0.1 * ribs
    clavicle = np.abs(v - (0.155 - 0.12 * (du - 0.06) + 0.3 * (du - 0.2) ** 2))
    density += (
        0.14
        * _sigmoid((0.012 - clavicle) / 0.004)
        * _sigmoid((du - 0.04) / 0.01)
        * _sigmoid((0.33 - du) / 0.01)
    )
    density += 0.03 * smooth_noise(rng, n, 10) * body
    return density


def draw_opacity(density: np.ndarray, box: Sequence[float], size: int, rng: np.random.Generator) -> None:
    """Add a soft, patchy, textured opacity inside ``box`` = ``(x, y, width, height)`` in output pixels.

    ``density`` (n x n) is changed in place; the blob's support is the ellipse inscribed in the box, so it
    never leaves the box. Its strength makes it clearly brighter than lung without saturating.
    """
    n = density.shape[0]
    f = n / size
    bx, by, bw, bh = (float(b) * f for b in box)
    x0, x1 = max(int(bx), 0), min(int(np.ceil(bx + bw)), n)
    y0, y1 = max(int(by), 0), min(int(np.ceil(by + bh)), n)
    if x1 <= x0 or y1 <= y0:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    ell = ((xx - bx - bw / 2) / (bw / 2)) ** 2 + ((yy - by - bh / 2) / (bh / 2)) ** 2
    shape = np.clip(1.0 - ell, 0.0, 0.6) * (1.0 / 0.6)
    shape *= shape * (3.0 - 2.0 * shape)  # smoothstep: a soft edge, zero on the ellipse inscribed in the box
    cells = max(3, int(round(max(bw, bh) / n * 22)))
    patch = smooth_noise(rng, max(x1 - x0, y1 - y0), cells)[: y1 - y0, : x1 - x0]
    patch = np.clip(0.55 + 0.45 * patch, 0.0, 1.0)
    density[y0:y1, x0:x1] += float(rng.uniform(0.3, 0.4)) * shape * (0.4 + 0.6 * patch)


MARKER_VALUE = 245  # the grey level of the confounding 'L' marker


def marker_strokes(width: int) -> list[tuple[int, int, int, int]]:
    """The confounding 'L' in an image ``width`` pixels wide, as its two strokes ``(x, y, w, h)`` in pixels:
    the vertical one, then the horizontal one. About 6 % of the width, 3 % in from the top-left corner."""
    size = max(4, round(0.06 * width))
    offset, stroke = max(1, round(0.03 * width)), max(1, size // 4)
    return [(offset, offset, stroke, size), (offset, offset + size - stroke, int(0.75 * size), stroke)]


def burn_marker(image: np.ndarray) -> None:
    """Burn the bright 'L' of :func:`marker_strokes` into the top-left corner of a uint8 image, in place."""
    for x, y, w, h in marker_strokes(image.shape[1]):
        image[y : y + h, x : x + w] = MARKER_VALUE


def draw_radiograph(
    rng: np.random.Generator,
    size: int,
    boxes: Sequence[Sequence[float]] = (),
    *,
    pose: Pose | None = None,
    abnormal: bool = False,
    marker: bool = False,
    width: int | None = None,
) -> np.ndarray:
    """One synthetic frontal chest radiograph as uint8, ``size`` x ``width`` (default square), bright = dense.

    ``boxes``: opacities to plant, ``(x, y, width, height)`` in pixels of the square ``size`` image.
    ``abnormal``: a non-pneumonia finding (large heart or a raised, blunted diaphragm).
    ``marker``: the confounding 'L' in the top-left corner. ``width``: stretch to this width (Kermany).
    """
    pose = pose or random_pose(rng)
    n = min(size, DRAW_SIZE)
    density = _anatomy(pose, n, rng, abnormal)
    for box in boxes:
        draw_opacity(density, box, size, rng)
    gamma, lo, hi = rng.uniform(0.8, 1.25), rng.uniform(0.0, 0.05), rng.uniform(0.82, 0.97)
    exposure = 1.0 + 0.07 * smooth_noise(rng, n, 3)
    image = lo + (hi - lo) * np.clip(density * exposure, 0.0, 1.0) ** gamma
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(rng.uniform(0.008, 0.02))
    out_w = width or size
    if (n, n) != (size, out_w):
        image = np.asarray(Image.fromarray(image.astype(np.float32)).resize((out_w, size), Image.BICUBIC))
    pixels = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if marker:
        burn_marker(pixels)
    return pixels
