"""Reference answers for the exercises of notebooks/06_breath_sounds.ipynb."""

from __future__ import annotations

import numpy as np

from helpers.breath import audio, dataset, icbhi
from helpers.exercises.checks import Exercise


def _n_patches(duration: float) -> int:
    n = int(round(duration * audio.SAMPLE_RATE))
    win, hop = audio.frame_lengths()
    frames = 1 + (n - win) // hop if n >= win else 0
    return frames // audio.PATCH_FRAMES


EXERCISES = {
    "n_patches": Exercise(
        question="How many non-overlapping 96 x 64 patches does a recording of `duration` seconds give?",
        reference=_n_patches,
        hint="Samples n = duration * 16000; frames = 1 + (n - 400) // 160; the last partial patch is dropped.",
    ),
    "icbhi_score": Exercise(
        question="What is the ICBHI score of the predictions `y_pred` for the labels `y_true`?",
        reference=lambda y_true, y_pred: icbhi.icbhi_score(y_true, y_pred)["score"],
        hint="Specificity = correct normal / all normal; sensitivity = abnormal predicted as their exact class "
        "/ all abnormal (labels 1, 2, 3); the score is their mean.",
    ),
    "vggish_blank_bands": Exercise(
        question="Of the 64 VGGish mel bands over 125-7500 Hz, how many are centred above the 2 kHz Nyquist "
        "frequency of a 4 kHz recording (and so hold nothing for it)?",
        reference=lambda: int((audio.mel_center_frequencies(64, 125.0, 7500.0) > 2000.0).sum()),
        hint="audio.mel_center_frequencies(n_mels, fmin, fmax) gives the centres in Hz; count those above 2000.",
    ),
    "heat_share": Exercise(
        question="Which share of a Grad-CAM band profile `profile` lies in the bands centred above 1500 Hz?",
        reference=lambda profile, centres: dataset.heat_share_above(profile, centres, 1500.0),
        hint="Sum the profile over the bands whose centre (in `centres`) is above 1500 Hz, divide by its sum.",
    ),
    "device_rule": Exercise(
        question="A rule calls a patch '4 kHz' when its `level` above 1500 Hz is below `threshold`. Which "
        "fraction of the patches does it get right (`is_4k` says the truth)?",
        reference=lambda level, is_4k, threshold: float(
            np.mean((np.asarray(level) < threshold) == np.asarray(is_4k))
        ),
        hint="Compare the boolean array level < threshold with is_4k, element by element, and take the mean.",
    ),
}
