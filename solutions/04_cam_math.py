"""Solutions to the exercises of notebooks/04_cam_math.ipynb (each function returns the answer)."""

import math

import numpy as np
import torch

# The toy example of section 1.1: two 3 x 3 feature maps (K x h x w) and the head's weights.
TOY_FEATURES = np.array(
    [[[3, 1, 0], [2, 2, 0], [1, 0, 0]], [[0, 1, 2], [0, 2, 4], [1, 3, 5]]], dtype=np.float32
)
TOY_WEIGHTS = (2.0, -0.5)


def cam_value(features, weights, row, col):
    # M(1, 1) = w_1 A_1(1, 1) + w_2 A_2(1, 1) = 1 * 2 + 1 * 2 = 4
    features = np.asarray(features, dtype=float)
    return float(sum(w_k * features[k, row, col] for k, w_k in enumerate(weights)))


def logit_from_cam(features, weights, bias):
    # M = A_1 + A_2 sums to 9 + 18 = 27 over 9 positions: mean 3, so y = 3 - 2 = 1.
    # Check with GAP + linear: F = (1, 2), y = 1 * 1 + 1 * 2 - 2 = 1.
    cam = np.einsum("k,kij->ij", np.asarray(weights, dtype=float), np.asarray(features, dtype=float))
    return float(cam.mean() + bias)


def hw_factor(image_size):
    # Five stride-2 steps, each rounding up: 300 -> 150 -> 75 -> 38 -> 19 -> 10, so h = w = 10 and h w = 100
    # (at 224: 7 x 7 = 49). Rounding up five times is the same as ceil(image_size / 32), not image_size // 32.
    side = math.ceil(image_size / 32)
    return side * side


def negative_region(features, weights):
    # target=0 explains -y: its map is ReLU(-M) / (h w), largest where M is most negative.
    # M = 2 A_1 - A_2 / 2 = [[6, 1.5, -1], [4, 3, -2], [1.5, -1.5, -2.5]]: the bottom-right cell, -2.5.
    cam = np.einsum("k,kij->ij", np.asarray(weights, dtype=float), np.asarray(features, dtype=float))
    row, col = np.unravel_index(np.argmin(cam), cam.shape)
    return (int(row), int(col))


def upsample_values(values, size):
    # u = (X + 1/2) * n / size - 1/2, clamped to [0, n - 1], then linear interpolation between cells:
    # u = -0.375, -0.125, 0.125, 0.375, 0.625, 0.875, 1.125, 1.375 -> [0, 0, 0.5, 1.5, 2.5, 3.5, 4, 4]
    n = len(values)
    out = []
    for x in range(size):
        u = min(max((x + 0.5) * n / size - 0.5, 0.0), n - 1)
        left = int(math.floor(u))
        right = min(left + 1, n - 1)
        t = u - left
        out.append((1 - t) * values[left] + t * values[right])
    return out


def grad_cam_raw(activations, gradients):
    # alpha_k: the spatial mean of the gradient, one weight per image and channel (B x K x 1 x 1);
    # then the weighted sum over the channels (dim 1) and the ReLU -> B x h x w
    alpha = gradients.mean(dim=(2, 3), keepdim=True)
    return torch.relu((alpha * activations).sum(dim=1))


def example_context(name):
    """The keyword context each check takes (the notebook passes the same, built from its toy tensors)."""
    return {
        "cam_value": {"features": TOY_FEATURES, "weights": (1.0, 1.0), "row": 1, "col": 1},
        "logit_from_cam": {"features": TOY_FEATURES, "weights": (1.0, 1.0), "bias": -2.0},
        "hw_factor": {"image_size": 300},
        "grad_cam_raw": {},
        "negative_region": {"features": TOY_FEATURES, "weights": TOY_WEIGHTS},
        "upsample_values": {"values": (0.0, 4.0), "size": 8},
    }[name]
