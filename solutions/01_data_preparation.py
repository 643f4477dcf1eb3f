"""Solutions to the exercises of notebooks/01_data_preparation.ipynb (each function returns the answer)."""

import math

import numpy as np
import pandas as pd


def monochrome1_value(stored, bits_stored):
    # 12 bits: 0 .. 4095. MONOCHROME2 would give 3000 / 4095 = 0.733; MONOCHROME1 shows low values bright,
    # so read_xray inverts: 1 - 0.733 = 0.267. A dense (bright) pixel stays bright whatever the file says.
    top = 2**bits_stored - 1
    return 1 - stored / top


def ap_risk_ratio(meta):
    # AP: 4,664 / 12,173 = 0.383; PA: 1,348 / 14,511 = 0.093; ratio 4.12. The view alone says a lot about the
    # label: a model can learn to recognise AP films (portable, bedside, sicker patients) instead of pneumonia.
    rates = meta.groupby("view_position")["Target"].mean()
    return rates["AP"] / rates["PA"]


def linear_window(values, center, width):
    # DICOM PS3.3 C.11.2.1.2.1, the linear VOI function, with the output range [0, 1]:
    # y = (v - (C - 0.5)) / (W - 1) + 0.5, black below C - 0.5 - (W - 1) / 2, white above C - 0.5 + (W - 1) / 2.
    # Clipping the straight line to [0, 1] gives exactly those two cases. Float first: stored values are integers.
    v = np.asarray(values, dtype=np.float64)
    return np.clip((v - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def nyquist(original, size):
    # A 3,000-pixel detector image resized to 512: one sample every 3000 / 512 = 5.86 original pixels; at most
    # half a cycle per sample: 512 / 3000 / 2 = 0.085 cycles per original pixel, a period of at least 11.7
    # original pixels. Anything finer must be smoothed away BEFORE sampling, or it comes back as a false coarse
    # pattern.
    return size / original / 2


def std_from_sums(n, sum_x, sum_x2):
    # E[x^2] - E[x]^2, from sums accumulated in float64 (helpers even sums the uint8 values as integers). The
    # same formula for any split: here the validation split, whose std the notebook does not print.
    mean = sum_x / n
    return math.sqrt(sum_x2 / n - mean**2)


def leaked_fraction(items):
    # With several images per child, an image-level split puts most children with 2+ images on both sides:
    # validation then scores the model on children it has already seen.
    train_ids = set(items.loc[items["image_split"] == "train", "patientId"])
    val = items[items["image_split"] == "val"]
    return val["patientId"].isin(train_ids).mean()


def example_context(name):
    """Small, fast contexts for tests/test_exercises.py."""
    pixels = np.array([0, 51, 102, 255], dtype=np.float64) / 255
    return {
        "monochrome1_value": {"stored": 3000, "bits_stored": 12},
        "ap_risk_ratio": {
            "meta": pd.DataFrame(
                {
                    "view_position": ["AP", "AP", "AP", "AP", "PA", "PA", "PA", "PA", "PA"],
                    "Target": [1, 1, 0, 0, 1, 0, 0, 0, 0],
                }  # fmt: skip
            )
        },
        "linear_window": {},  # the exercise brings its own inputs
        "nyquist": {"original": 3000, "size": 512},
        "std_from_sums": {"n": pixels.size, "sum_x": pixels.sum(), "sum_x2": (pixels**2).sum()},
        "leaked_fraction": {
            "items": pd.DataFrame(
                {
                    "patientId": ["a", "a", "b", "b", "c", "d"],
                    "image_split": ["train", "val", "train", "train", "val", "val"],
                }  # fmt: skip
            )
        },
    }[name]
