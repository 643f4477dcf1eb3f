"""Make whatever a notebook needs from an earlier one, and cache it: data -> store -> checkpoint.

Every notebook runs on its own, in any order. Notebook 03 needs the model that notebook 02 trains, which needs
the store that notebook 01 builds, which needs the data that notebook 00 generates. Each function here returns
the cached artefact when it exists (the second time is instant) and makes it, by the same code the earlier
notebook teaches, when it is missing. Artefacts live in ``settings.cache_dir`` (one folder per mode) and
their names say which data they come from (``real`` or ``synthetic``) so the two never mix.

Data flows one way: files -> :func:`rsna_store` -> :func:`trained_xray_model`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from helpers.config import Settings, get_settings, pick_device
from helpers.data import datasets
from helpers.files import build_lock
from helpers.training.checkpoints import epochs_done, load_checkpoint
from helpers.training.loop import fit, train_step
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

    Full and cpu mode: the paper's (Adam at 1e-4, ``pos_weight`` from the class balance), best checkpoint by
    validation ROC-AUC, :class:`helpers.xray.augment.GpuAugment` as it comes (small rotations, shifts and zooms,
    black fill); cpu mode trains fewer films at 160 px for fewer epochs (``config.CPU_SIZES``). Smoke mode has about 15 optimisation steps on 112 films at 64 px, and three changes make a
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


def announce_training_time(
    settings: Settings, model: torch.nn.Module, train_x: Any, config: dict[str, Any]
) -> float | None:
    """Full mode without a CUDA GPU: time one optimisation step (on a copy of ``model``, which is left as it
    was) and print how long training with ``config`` will take, and how to get the CPU-sized lesson instead.
    Returns the estimated seconds, or None (nothing printed) in the other modes or on a GPU."""
    device = pick_device()
    if settings.mode != "full" or device.type == "cuda":
        return None
    batch = min(config["batch_size"], len(train_x))
    probe = copy.deepcopy(model).to(device).train()
    x = torch.from_numpy(np.asarray(train_x[:batch])).float()[:, None].to(device) / 255
    y = torch.zeros(batch, 1, device=device)  # the shape of the model output (B x 1 logits)
    optimizer = torch.optim.Adam(probe.parameters(), lr=config["lr"])
    seconds = []
    for _ in range(2):  # the first step also pays for one-off set-up: time the second
        start = time.perf_counter()
        train_step(probe, x, y, torch.nn.BCEWithLogitsLoss(), optimizer)
        seconds.append(time.perf_counter() - start)
    steps = config["epochs"] * max(1, len(train_x) // batch)
    total = steps * seconds[-1] * 1.2  # validation adds about a fifth
    print(
        f"Full mode on a {device.type}: one training step of {batch} films took {seconds[-1]:.1f} s, so "
        f"{config['epochs']} epochs will take about {total / 60:.0f} min. For the same lesson sized for a CPU, "
        f'set os.environ["XAI_COURSE_MODE"] = "cpu" in the first cell (or unset it) and restart the kernel.',
        flush=True,
    )
    return total


def _finished(path: Path, recipe: dict[str, Any]) -> bool:
    """True when ``path`` holds a checkpoint whose run completed all the epochs of ``recipe``."""
    done = epochs_done(path) if path.is_file() else None
    return done is not None and done >= recipe["epochs"]


def _train_xray_model(
    settings: Settings, path: Path, recipe: dict[str, Any], *, progress: bool, retrain: bool
) -> None:
    """Train (or resume, saying so) the notebook-02 ResNet18 into ``path`` with ``recipe``."""
    done = epochs_done(path) if path.is_file() else None
    if not retrain and done is not None:
        print(
            f"{path.name}: its training stopped after {done} of {recipe['epochs']} epochs; resuming it",
            flush=True,
        )
    store = rsna_store(settings, progress=progress)
    train_x, train_y = store.split_arrays("train")
    val_x, val_y = store.split_arrays("val")
    torch.manual_seed(0)
    model = resnet18_xray(mean=store.mean, std=store.std)
    announce_training_time(settings, model, train_x, recipe)
    fit(
        model, train_x, train_y, val_x, val_y, checkpoint_path=path, progress=progress,
        checkpoint_meta={"store": store.path.name}, resume=not retrain, **recipe,
    )  # fmt: skip


def trained_xray_model(
    settings: Settings | None = None, *, progress: bool = True, retrain: bool = False
) -> tuple[torch.nn.Module, dict]:
    """The ResNet18 trained by notebook 02, in eval mode on the best device -> ``(model, meta)``.

    Loads the checkpoint when its run is complete. A run that was interrupted (notebook 02 or ``prepare``
    stopped part-way) is resumed, saying so: a half-trained model is never used as the finished one. Without a
    checkpoint, trains one with :func:`xray_training_config` (about a minute and a half in cpu mode, minutes
    on a GPU in full mode) and saves it, under a lock file (:func:`helpers.files.build_lock`): a second
    process asking at the same time waits and then loads the finished model. The model carries the store's mean/std;
    ``meta`` holds the image size and the training history.
    """

    settings = settings or get_settings()
    path, recipe = checkpoint_path(settings), xray_training_config(settings)
    if retrain or not _finished(path, recipe):
        # two notebooks (or a notebook and prepare) asking at once: one trains, the other waits and reuses
        with build_lock(path, "training the ResNet18") as waited_for:
            if waited_for is not None and _finished(path, recipe):
                print(f"{path.name}: reusing the model that {waited_for} trained meanwhile", flush=True)
            else:
                _train_xray_model(settings, path, recipe, progress=progress, retrain=retrain)
    model, meta = load_checkpoint(path)
    return model.to(pick_device()).eval(), meta
