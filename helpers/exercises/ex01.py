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
    "nyquist": Exercise(
        question=(
            "Resizing a 1,024-pixel film to 224 pixels: what is the highest spatial frequency, in cycles per "
            "ORIGINAL pixel, that the small image can still represent?"
        ),
        reference=lambda original, size: size / original / 2,
        hint=(
            "The small image samples once every original/size original pixels. A sampled signal represents "
            "at most half a cycle per sample (Nyquist)."
        ),
    ),
    "std_from_sums": Exercise(
        question=(
            "From the running sums of the training images, n (pixels), sum_x and sum_x2 (x in [0, 1]), "
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
