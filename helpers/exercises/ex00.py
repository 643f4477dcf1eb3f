"""Reference answers for the exercises of notebooks/00_setup.ipynb."""

from __future__ import annotations

from helpers import config
from helpers.exercises.checks import Exercise

EXERCISES = {
    "mode_variable": Exercise(
        question="Which environment variable selects the course mode (auto, cpu, full or smoke)?",
        reference=lambda: config.MODE_ENV,
        hint="Look at the docstring of helpers.config, or at the names defined at its top.",
    ),
    "store_bytes": Exercise(
        question="How many bytes does the whole RSNA training set (26,684 images) take at 224 x 224 as uint8?",
        reference=lambda: 26_684 * 224 * 224,
        hint="One uint8 pixel is one byte: images x height x width. (Then compare with float32: 4 bytes a pixel.)",
    ),
    "float32_ratio": Exercise(
        question="How many times more memory does the same set take as float32 instead of uint8?",
        reference=lambda: 4,
        hint="A float32 is 32 bits; a uint8 is 8 bits.",
    ),
    "device_type": Exercise(
        question="Which kind of device will this machine train on ('cuda', 'mps' or 'cpu')?",
        reference=lambda: config.pick_device().type,
        hint="helpers.config.pick_device() returns a torch.device; its .type is the answer.",
    ),
}
