"""Solutions to the exercises of notebooks/05_gradcam_guided_backprop.ipynb.

A number exercise's solution is a function that returns the answer from the notebook's values; a code
exercise's solution is the function the learner writes (the check calls it on several inputs).
"""

import math

import numpy as np

from helpers.explain import faithfulness


def layer4_cells(image_size):
    # conv1, the max-pool and the first convolution of layer2, layer3 and layer4 each halve the side, rounding
    # UP (padding keeps the edge pixels): n -> ceil(n / 2), five times, which is ceil(image_size / 32)
    side = image_size
    for _ in range(5):
        side = math.ceil(side / 2)
    return side  # 100 -> 50 -> 25 -> 13 -> 7 -> 4 (not 100 // 32 = 3); 224 -> 7, 160 -> 5


def guided_relu_backward(forward_input, grad_output):
    # the plain gradient keeps R where f > 0; the deconvnet keeps R where R > 0; guided backprop needs both
    return (forward_input > 0).to(grad_output.dtype) * grad_output.clamp(min=0)


def pointing_game(heatmap, boxes):
    row, col = np.unravel_index(np.argmax(heatmap), np.shape(heatmap))
    cx, cy = col + 0.5, row + 0.5  # the pixel's centre; x runs along the columns, y along the rows
    return float(any(x <= cx < x + w and y <= cy < y + h for x, y, w, h in boxes))


def deletion_wins(result):
    ours = faithfulness.curve_auc(result.deletion)
    return int((ours < faithfulness.curve_auc(result.random_deletion)).sum())


def example_context(name):
    """Small, fast contexts for tests/test_exercises.py."""
    if name == "layer4_cells":
        return {"image_size": 100}
    if name in ("guided_relu_backward", "pointing_game"):
        return {}
    if name == "deletion_wins":
        fractions = np.linspace(0, 1, 5)
        curves = np.array([[1.0, 0.5, 0.2, 0.1, 0.0], [0.9, 0.8, 0.7, 0.5, 0.0]])
        slow = np.array([[1.0, 0.9, 0.6, 0.3, 0.0], [0.9, 0.3, 0.1, 0.0, 0.0]])
        result = faithfulness.FaithfulnessResult(fractions, curves, slow[:, ::-1], slow, curves[:, ::-1])
        return {"result": result}  # image 0: Grad-CAM wins; image 1: random wins -> 1
    raise KeyError(name)
