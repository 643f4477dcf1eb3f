"""Solutions to the exercises of notebooks/00_setup.ipynb (each function returns the answer)."""

from helpers import config


def mode_variable():
    return config.MODE_ENV  # "XAI_COURSE_MODE"


def store_bytes():
    n_images, height, width = 26_684, 224, 224
    return n_images * height * width  # 1,338,926,…: about 1.34 GB, fits on a 16 GB T4 next to the model


def float32_ratio():
    return 4  # 4 bytes per float32 pixel against 1 byte per uint8 pixel


def device_type():
    return config.pick_device().type
