"""Reference answers for the exercises of notebooks/01_data_preparation.ipynb."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from helpers.exercises.checks import Exercise
from helpers.xray import dicom, eda


def _monochrome1_value(stored: int, bits_stored: int) -> float:
    ds = eda.toy_xray_dataset(bits_stored=bits_stored, photometric="MONOCHROME1")
    return float(dicom.pixels_to_unit(np.array([[stored]], dtype=np.uint16), ds)[0, 0])


def _ap_risk_ratio(meta: Any) -> float:
    rates = eda.positive_rate(meta, "view_position")["rate"]
    return float(rates["AP"] / rates["PA"])


def _std_from_sums(n: int, sum_x: float, sum_x2: float) -> float:
    mean = sum_x / n
    return math.sqrt(sum_x2 / n - mean**2)


def _linear_window(values: Any, center: float, width: float) -> np.ndarray:
    """What read_xray does with a window: the course's own pixel handling on a header with just the window."""
    header = eda.toy_xray_dataset(bits_stored=16, window_center=center, window_width=width)
    return dicom.pixels_to_unit(np.asarray(values, dtype=np.uint16), header)


def _window_inputs() -> list[dict]:
    """Stored values (no rescale) under several windows: wide, the notebook's, narrow, 16-bit, all clipped."""
    rng = np.random.default_rng(1)
    return [
        {"values": np.array([[0, 1024, 2048, 3072, 4095]]), "center": 2048, "width": 4096},
        {"values": rng.integers(0, 4096, size=(4, 6)), "center": 500, "width": 1000},
        {"values": np.arange(96, 106).reshape(2, 5), "center": 100, "width": 2},
        {"values": rng.integers(0, 2**16, size=(8, 8)), "center": 30_000.5, "width": 20_001},
        {"values": np.array([[0, 10], [20, 30]]), "center": 2000, "width": 400},  # all below: all black
    ]


EXERCISES = {
    "monochrome1_value": Exercise(
        question=(
            "A MONOCHROME1 file with BitsStored = 12 (no rescale, no window) stores the value 3000 in a pixel. "
            "What value does read_xray give that pixel (bright = dense, in [0, 1])?"
        ),
        reference=_monochrome1_value,
        hint=(
            "12 stored bits hold 0 .. 2**12 - 1. Scale by that fixed range (never by the image's own min/max), "
            "then invert, because in MONOCHROME1 a LOW stored value is bright."
        ),
    ),
    "ap_risk_ratio": Exercise(
        question=(
            "In the REAL RSNA training set, how many times more often is a patient positive (Target = 1) when "
            "the film is AP than when it is PA? (the ratio of the two positive rates)"
        ),
        reference=_ap_risk_ratio,
        hint=(
            "Group `meta` by view_position and take the mean of Target in each group (or use "
            "eda.positive_rate(meta, 'view_position')); divide the AP rate by the PA rate."
        ),
    ),
    "linear_window": Exercise(
        question=(
            "Write linear_window(values, center, width): the DICOM VOI window (linear function, PS3.3 "
            "C.11.2.1.2.1) that read_xray applies, from (rescaled) values to an array of the same shape in [0, 1]."
        ),
        reference=_linear_window,
        inputs=_window_inputs,
        hint=(
            "y = (v - (C - 0.5)) / (W - 1) + 0.5, then clip to [0, 1] (np.clip): below C - 0.5 - (W - 1) / 2 "
            "black, above C - 0.5 + (W - 1) / 2 white. Section 2 gives the formula; one NumPy expression does it."
        ),
    ),
    "nyquist": Exercise(
        question=(
            "Resizing an original-pixel film to size pixels: what is the highest spatial frequency, in cycles "
            "per ORIGINAL pixel, that the small image can still represent?"
        ),
        reference=lambda original, size: size / original / 2,
        hint=(
            "The small image samples once every original/size original pixels. A sampled signal represents "
            "at most half a cycle per sample (Nyquist)."
        ),
    ),
    "std_from_sums": Exercise(
        question=(
            "From the running sums of the images of a split, n (pixels), sum_x and sum_x2 (x in [0, 1]), "
            "compute the standard deviation of the pixel values."
        ),
        reference=_std_from_sums,
        hint="mean = sum_x / n; variance = sum_x2 / n - mean**2 (E[x^2] - E[x]^2); std = its square root.",
    ),
    "leaked_fraction": Exercise(
        question=(
            "The Kermany images were split at random by IMAGE (column `image_split`). What fraction of the "
            "'val' images show a child who also has an image in 'train'?"
        ),
        reference=lambda items: eda.leaked_fraction(items, split_col="image_split"),
        hint=(
            "Take the set of patientId values with image_split == 'train'; among the rows with "
            "image_split == 'val', what share has a patientId in that set? (A number between 0 and 1.)"
        ),
    ),
}
