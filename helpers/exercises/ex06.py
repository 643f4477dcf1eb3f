"""Reference answers for the exercises of notebooks/06_breath_sounds.ipynb."""

from __future__ import annotations

import warnings

import librosa
import numpy as np

from helpers.breath import audio, dataset, icbhi
from helpers.exercises.checks import Exercise


def _n_patches(duration: float) -> int:
    n = int(round(duration * audio.SAMPLE_RATE))
    win, hop = audio.frame_lengths()
    frames = 1 + (n - win) // hop if n >= win else 0
    return frames // audio.PATCH_FRAMES


def _spectrogram_shape(
    n_samples: int, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, center: bool
) -> tuple[int, int]:
    """(n_mels, n_frames) of ``librosa.feature.melspectrogram`` for a silent clip: librosa itself answers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Empty filters detected": irrelevant to the shape
        mel = librosa.feature.melspectrogram(
            y=np.zeros(n_samples, dtype=np.float32), sr=sample_rate, n_fft=n_fft,
            hop_length=hop_length, n_mels=n_mels, center=center,
        )  # fmt: skip
    return (int(mel.shape[0]), int(mel.shape[1]))


def _spectrogram_inputs() -> list[dict]:
    """Clips that tell the two framings apart: hops that do and do not divide the length, other rates."""
    return [
        {"n_samples": 16000, "sample_rate": 16000, "n_fft": 512, "hop_length": 160, "n_mels": 64, "center": True},
        {"n_samples": 16000, "sample_rate": 16000, "n_fft": 512, "hop_length": 160, "n_mels": 64, "center": False},
        {"n_samples": 22050 * 3 + 7, "sample_rate": 22050, "n_fft": 2048, "hop_length": 512, "n_mels": 128,
         "center": True},
        {"n_samples": 44100, "sample_rate": 44100, "n_fft": 1024, "hop_length": 441, "n_mels": 40, "center": False},
        {"n_samples": 4000, "sample_rate": 4000, "n_fft": 256, "hop_length": 64, "n_mels": 32, "center": False},
        {"n_samples": 512, "sample_rate": 8000, "n_fft": 512, "hop_length": 100, "n_mels": 20, "center": True},
    ]  # fmt: skip


def _device_shortcut(level: np.ndarray, threshold: float, labels: np.ndarray) -> float:
    """Accuracy of predicting, on each side of the device rule, the class most common on that side."""
    is_4k, labels = np.asarray(level) < threshold, np.asarray(labels)
    right = sum(np.bincount(labels[is_4k == side]).max() for side in (True, False) if (is_4k == side).any())
    return float(right / len(labels))


EXERCISES = {
    "n_patches": Exercise(
        question="How many non-overlapping 96 x 64 patches does a recording of `duration` seconds give?",
        reference=_n_patches,
        hint="Samples n = duration * 16000; frames = 1 + (n - 400) // 160; the last partial patch is dropped.",
    ),
    "spectrogram_shape": Exercise(
        question="Write `spectrogram_shape(n_samples, sample_rate, n_fft, hop_length, n_mels, center)`: the "
        "(n_mels, n_frames) shape of `librosa.feature.melspectrogram` for a clip of `n_samples` samples.",
        reference=_spectrogram_shape,
        hint="Rows are mel bands, columns are frames, one every hop_length samples. With center=True librosa "
        "first pads n_fft // 2 samples on each side of the clip; with center=False it does not, and every frame "
        "needs n_fft samples. Does the sample rate change either number?",
        inputs=_spectrogram_inputs,
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
        question="Which share of a Grad-CAM band profile `profile` lies in the bands centred above `hz` Hz?",
        reference=lambda profile, centres, hz: dataset.heat_share_above(profile, centres, hz),
        hint="Sum the profile over the bands whose centre (in `centres`) is above `hz`, divide by its sum.",
    ),
    "device_rule": Exercise(
        question="A shortcut model knows only the device rule (`level < threshold`: a 4 kHz recording) and "
        "predicts, on each side of the rule, the class most common among that side's patches (`labels`). "
        "Which fraction of the patches does it classify correctly?",
        reference=_device_shortcut,
        hint="Split the patches by level < threshold; on each side count the labels (np.bincount) and keep the "
        "largest count; add the two counts and divide by the number of patches.",
    ),
}
