"""Where the data in use lives: the real downloads when present, else the built-in synthetic sets.

Taught in ``notebooks/00_setup.ipynb``. Every notebook asks here for its data folder; the synthetic set of
the current mode is generated on first use (deterministic, seed 0) and reused afterwards. Real data is
always preferred: once ``data_download.py`` has put a data set under ``<data dir>/<name>``, every notebook
uses it. :func:`data_source` tells a notebook which one it got, so that numbers computed on synthetic data
can be labelled as such.
"""

from __future__ import annotations

from pathlib import Path

from helpers.config import Settings, get_settings
from helpers.data.synthetic import KERMANY_MARKER, make_kermany_like, make_rsna_like
from helpers.data.synthetic_audio import make_icbhi_like

DATASETS = ("rsna", "kermany", "icbhi")
#: Kermany-like training images per class (the settings have no size for this small side set).
KERMANY_PER_CLASS = {"smoke": 24, "cpu": 100, "full": 300}
#: Length range of the synthetic ICBHI-like recordings, in seconds.
ICBHI_DURATION_S = {"smoke": (6.0, 10.0), "cpu": (8.0, 20.0), "full": (8.0, 20.0)}
SHORTCUT_SEEDS = (1, 2)


def _real_present(name: str, folder: Path) -> bool:
    if name == "rsna":
        return (folder / "stage_2_train_labels.csv").is_file()
    if name == "kermany":
        return (folder / "chest_xray" / "train").is_dir()
    if name == "icbhi":
        return (folder / "ICBHI_final_database").is_dir() and any(
            (folder / "ICBHI_final_database").glob("*.wav")
        )
    raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")


def data_source(name: str, settings: Settings | None = None) -> str:
    """``'real'`` when the real data set ``name`` (rsna, kermany, icbhi) is downloaded, else ``'synthetic'``."""
    settings = settings or get_settings()
    return "real" if _real_present(name, settings.real_dir(name)) else "synthetic"


def rsna_dir(settings: Settings | None = None, generate: bool = True) -> Path:
    """The RSNA folder in use: ``<data>/rsna`` if its labels CSV exists, else this mode's synthetic set.

    The synthetic set (``settings.sizes.rsna_patients`` patients at ``settings.sizes.dicom_size`` pixels)
    is generated when missing unless ``generate=False`` (then its path is returned as it is).
    """
    settings = settings or get_settings()
    if data_source("rsna", settings) == "real":
        return settings.real_dir("rsna")
    return _synthetic_rsna(settings, "rsna", seed=0, confounder=False, generate=generate)


def _synthetic_rsna(settings: Settings, folder: str, seed: int, confounder: bool, generate: bool) -> Path:
    dest = settings.synthetic_dir / folder
    if generate and not (dest / "stage_2_train_labels.csv").is_file():
        make_rsna_like(
            dest,
            settings.sizes.rsna_patients,
            image_size=settings.sizes.dicom_size,
            seed=seed,
            confounder=confounder,
        )
    return dest


def rsna_shortcut_dirs(settings: Settings | None = None) -> tuple[Path, Path]:
    """Two synthetic RSNA-like sets for the shortcut lesson: ``(confounded_dir, clean_dir)``.

    The first has an 'L' marker on every positive image, the second none; different seeds, so different
    patients and pixels. Always synthetic. Taught in ``notebooks/05_gradcam_guided_backprop.ipynb``.
    """
    settings = settings or get_settings()
    confounded = _synthetic_rsna(settings, "rsna-shortcut-confounded", SHORTCUT_SEEDS[0], True, True)
    clean = _synthetic_rsna(settings, "rsna-shortcut-clean", SHORTCUT_SEEDS[1], False, True)
    return confounded, clean


def kermany_dir(settings: Settings | None = None, generate: bool = True) -> Path:
    """The Kermany folder in use (holding ``chest_xray/``): ``<data>/kermany`` if present, else synthetic."""
    settings = settings or get_settings()
    if data_source("kermany", settings) == "real":
        return settings.real_dir("kermany")
    dest = settings.synthetic_dir / "kermany"
    if generate and not (dest / KERMANY_MARKER).is_file():
        make_kermany_like(dest, n_per_class=KERMANY_PER_CLASS[settings.mode], seed=0)
    return dest


def icbhi_dir(settings: Settings | None = None, generate: bool = True) -> Path:
    """The ICBHI folder in use: ``<data>/icbhi`` if it holds recordings, else this mode's synthetic set.

    The synthetic set has ``settings.sizes.icbhi_patients`` patients (short recordings in smoke mode).
    """
    settings = settings or get_settings()
    if data_source("icbhi", settings) == "real":
        return settings.real_dir("icbhi")
    dest = settings.synthetic_dir / "icbhi"
    complete = all(
        (dest / name).is_file()
        for name in ("ICBHI_Challenge_diagnosis.txt", "ICBHI_challenge_train_test.txt")
    )
    if generate and not complete:
        make_icbhi_like(
            dest, settings.sizes.icbhi_patients, seed=0, duration_s=ICBHI_DURATION_S[settings.mode]
        )
    return dest
