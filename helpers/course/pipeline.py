"""Make whatever a notebook needs from an earlier one, and cache it: data -> store -> checkpoint.

Every notebook runs on its own, in any order. Notebook 03 needs the model that notebook 02 trains, which needs
the store that notebook 01 builds, which needs the data that notebook 00 generates. Each function here returns
the cached artefact when it exists (the second time is instant) and makes it, by the same code the earlier
notebook teaches, when it is missing. Artefacts live in ``settings.cache_dir`` (one folder per mode) and
their names say which data they come from (``real`` or ``synthetic``) so the two never mix.

Data flows one way: files -> :func:`rsna_store` -> :func:`trained_xray_model`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from helpers.config import Settings, get_settings, pick_device
from helpers.data import datasets
from helpers.training.checkpoints import load_checkpoint
from helpers.training.loop import fit
from helpers.training.models import resnet18_xray
from helpers.xray.augment import GpuAugment
from helpers.xray.preprocess import split_patients
from helpers.xray.rsna import rsna_items
from helpers.xray.store import PreparedStore, build_store, load_store

SPLIT_SEED = 0
#: Part of every checkpoint's name: 2 = the model carries its input standardisation (older ones do not load).
RECIPE_VERSION = 2
VAL_FRACTION = 0.15
TEST_FRACTION = 0.15


def store_path(settings: Settings | None = None, name: str = "rsna") -> Path:
    """Where the preprocessed store of data set ``name`` lives for this mode and data source."""
    settings = settings or get_settings()
    source = datasets.data_source(name, settings) if name in ("rsna", "kermany", "icbhi") else "synthetic"
    return settings.cache_dir / f"store-{name}-{source}-{settings.sizes.image_size}px"


def _rsna_items(rsna_dir: Path, progress: bool):

    items = rsna_items(rsna_dir, progress=progress)
    items["split"] = split_patients(
        items, val_fraction=VAL_FRACTION, test_fraction=TEST_FRACTION, seed=SPLIT_SEED
    )
    return items


def rsna_store(
    settings: Settings | None = None, *, progress: bool = True, workers: int | None = None
) -> PreparedStore:
    """The RSNA(-format) images of this mode as a finished store (built once, then reused).

    Patient-level split, stratified by label: 70 % train, 15 % validation (checkpoint choice), 15 % test
    (evaluation only). Images resized to ``settings.sizes.image_size``; ``workers``: processes for the
    first build (None: by CPU count, see :func:`helpers.xray.store.build_store`). Taught in notebook 01.
    """
    settings = settings or get_settings()
    dest = store_path(settings, "rsna")
    try:
        return load_store(dest)
    except ValueError:
        pass
    items = _rsna_items(datasets.rsna_dir(settings), progress)
    build_store(items, dest, size=settings.sizes.image_size, workers=workers, progress=progress)
    return load_store(dest)


def shortcut_stores(
    settings: Settings | None = None, *, progress: bool = True
) -> tuple[PreparedStore, PreparedStore]:
    """Two synthetic stores for the shortcut lesson (notebook 05): ``(confounded, clean)``.

    In the confounded set a marker is burned into every positive image; the clean set (other patients) has
    none. A model trained on the first may read the marker instead of the lungs.
    """
    settings = settings or get_settings()
    out = []
    for folder in datasets.rsna_shortcut_dirs(settings):
        dest = settings.cache_dir / f"store-shortcut-{folder.name}-{settings.sizes.image_size}px"
        try:
            out.append(load_store(dest))
            continue
        except ValueError:
            pass
        build_store(_rsna_items(folder, progress), dest, size=settings.sizes.image_size, progress=progress)
        out.append(load_store(dest))
    return out[0], out[1]


def checkpoint_path(settings: Settings | None = None, name: str = "resnet18-rsna") -> Path:
    """Where the best checkpoint of model ``name`` is kept for this mode and data source."""
    settings = settings or get_settings()
    # The name carries a digest of the training settings, so a checkpoint trained with other settings is never
    # silently reused after they change.
    recipe = json.dumps(
        {"recipe": RECIPE_VERSION, **xray_training_config(settings)}, sort_keys=True, default=repr
    )
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:8]
    source = datasets.data_source("rsna", settings)
    return settings.cache_dir / f"{name}-{source}-{settings.sizes.image_size}px-{digest}.pt"


def xray_training_config(settings: Settings | None = None) -> dict[str, Any]:
    """The training settings that notebook 02 teaches and that :func:`trained_xray_model` reuses.

    Full mode: the paper's (Adam at 1e-4, ``pos_weight`` from the class balance), best checkpoint by
    validation ROC-AUC, :class:`helpers.xray.augment.GpuAugment` as it comes (small rotations, shifts and zooms,
    black fill). Smoke mode has about 15 optimisation steps on 112 films at 64 px, and three changes make a
    model that works (measured over 8 seeds: validation ROC-AUC 1.0, test ROC-AUC 0.97, Grad-CAM at
    ``layer3`` in the boxes about 4x as often as random maps; before, with 3 epochs at 1e-3 and nothing
    else: validation ROC-AUC 0.62 and loss 13.9): Adam at 1e-3; BatchNorm statistics recomputed before each
    validation (``recalibrate_bn``, see :func:`helpers.training.loop.recalibrate_batchnorm`); edge padding
    instead of black for the augmentation (with black wedges, Grad-CAM missed the opacities for some seeds). The checkpoint
    is chosen by validation loss, because 24 validation films saturate the ROC-AUC at 1.0.
    """
    settings = settings or get_settings()
    config: dict[str, Any] = {
        "epochs": settings.sizes.epochs,
        "batch_size": settings.sizes.batch_size,
        "lr": 1e-4,
        "pos_weight": "auto",
        "monitor": "val_auc",
        "seed": 0,
        "augment": GpuAugment(),
    }
    if settings.smoke:
        config.update(
            lr=1e-3,
            monitor="val_loss",
            recalibrate_bn=True,
            augment=GpuAugment(padding_mode="border"),
        )
    return config


def trained_xray_model(
    settings: Settings | None = None, *, progress: bool = True, retrain: bool = False
) -> tuple[torch.nn.Module, dict]:
    """The ResNet18 trained by notebook 02, in eval mode on the best device -> ``(model, meta)``.

    Loads the checkpoint when it exists; otherwise trains one with :func:`xray_training_config` (seconds in
    smoke mode, minutes on a GPU in full mode) and saves it. The model carries the store's mean/std;
    ``meta`` holds the image size and the training history.
    """

    settings = settings or get_settings()
    path = checkpoint_path(settings)
    if retrain or not path.is_file():
        store = rsna_store(settings, progress=progress)
        train_x, train_y = store.split_arrays("train")
        val_x, val_y = store.split_arrays("val")
        torch.manual_seed(0)
        model = resnet18_xray(mean=store.mean, std=store.std)
        fit(
            model, train_x, train_y, val_x, val_y, checkpoint_path=path, progress=progress,
            checkpoint_meta={"store": store.path.name}, **xray_training_config(settings),
        )  # fmt: skip
    model, meta = load_checkpoint(path)
    return model.to(pick_device()).eval(), meta
