"""Solutions to the exercises of notebooks/05_gradcam_guided_backprop.ipynb (each function returns the answer)."""

import math

import numpy as np
import pandas as pd

from helpers.explain import faithfulness, localisation


def layer4_cells(image_size):
    # conv1, the max-pool and the first convolution of layer2, layer3 and layer4 each halve the side, rounding
    # UP (padding keeps the edge pixels): n -> ceil(n / 2), five times, which is ceil(image_size / 32)
    side = image_size
    for _ in range(5):
        side = math.ceil(side / 2)
    return side  # 224 -> 7, 160 -> 5, 100 -> 4 (not 100 // 32 = 3)


def box_area_baseline(boxes_list, height, width):
    # a map with no information puts its maximum anywhere: it hits a box with probability = the box area share
    shares = [localisation.boxes_to_mask(boxes, height, width).mean() for boxes in boxes_list if len(boxes)]
    return float(np.mean(shares))


def ap_pa_ratio(labels, headers):
    per_patient = labels.groupby("patientId")["Target"].max()  # one row per box -> one per patient
    views = headers.set_index("PatientID")["ViewPosition"]
    share = per_patient.groupby(views.reindex(per_patient.index)).mean()
    return float(share["AP"] / share["PA"])  # real RSNA: 0.383 / 0.093, about 4.1


def deletion_gap(result):
    gap = faithfulness.curve_auc(result.random_deletion) - faithfulness.curve_auc(result.deletion)
    return float(gap.mean())  # > 0: deleting Grad-CAM's top pixels hurts the prediction more than random ones


def example_context(name):
    """Small, fast contexts for tests/test_exercises.py."""
    if name == "layer4_cells":
        return {"image_size": 224}
    if name == "box_area_baseline":
        return {"boxes_list": [[(0, 0, 4, 4)], [(2, 2, 2, 2), (4, 4, 4, 4)], []], "height": 8, "width": 8}
    if name == "ap_pa_ratio":
        labels = pd.DataFrame(
            {"patientId": ["a", "a", "b", "c", "d", "e", "f"], "Target": [1, 1, 0, 1, 0, 0, 1]}
        )
        headers = pd.DataFrame(
            {"PatientID": list("abcdef"), "ViewPosition": ["AP", "AP", "AP", "PA", "PA", "PA"]}
        )
        return {"labels": labels, "headers": headers}
    if name == "deletion_gap":
        fractions = np.linspace(0, 1, 5)
        curves = np.array([[1.0, 0.5, 0.2, 0.1, 0.0], [0.9, 0.3, 0.1, 0.0, 0.0]])
        slow = np.array([[1.0, 0.9, 0.6, 0.3, 0.0], [0.9, 0.8, 0.6, 0.2, 0.0]])
        result = faithfulness.FaithfulnessResult(fractions, curves, slow[:, ::-1], slow, curves[:, ::-1])
        return {"result": result}
    raise KeyError(name)
