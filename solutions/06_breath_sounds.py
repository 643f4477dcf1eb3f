"""Solutions to the exercises of notebooks/06_breath_sounds.ipynb (each function returns the answer)."""

import numpy as np

from helpers.breath import audio


def n_patches(duration):
    n = int(round(duration * 16000))  # samples at 16 kHz
    frames = 1 + (n - 400) // 160 if n >= 400 else 0  # 25 ms window, 10 ms hop, no centre padding
    return frames // 96  # whole 0.96 s patches; the partial last one is dropped (20 s -> 1998 frames -> 20)


def icbhi_score(y_true, y_pred):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    normal = y_true == 0
    specificity = np.mean(y_pred[normal] == 0)
    sensitivity = np.mean(y_pred[~normal] == y_true[~normal])  # the exact abnormal class must be right
    return (sensitivity + specificity) / 2


def vggish_blank_bands():
    centres = audio.mel_center_frequencies(64, 125.0, 7500.0)
    return int((centres > 2000.0).sum())  # 31 of 64: half the VGGish spectrogram is empty for a 4 kHz file


def heat_share(profile, centres):
    profile, centres = np.asarray(profile), np.asarray(centres)
    return profile[centres > 1500.0].sum() / profile.sum()


def device_rule(level, is_4k, threshold):
    return float(np.mean((np.asarray(level) < threshold) == np.asarray(is_4k)))


def example_context(name):
    rng = np.random.default_rng(0)
    if name == "n_patches":
        return {"duration": 20.0}
    if name == "icbhi_score":
        return {"y_true": np.array([0, 0, 0, 1, 2, 3, 3]), "y_pred": np.array([0, 1, 0, 1, 3, 3, 0])}
    if name == "heat_share":
        return {"profile": rng.random(64), "centres": audio.mel_center_frequencies()}
    if name == "device_rule":
        level = np.r_[rng.normal(-4, 0.3, 10), rng.normal(-1.7, 0.3, 10)]
        return {"level": level, "is_4k": np.arange(20) < 10, "threshold": -2.8}
    return {}
