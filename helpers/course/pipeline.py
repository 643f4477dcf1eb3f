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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from helpers.config import Settings, get_settings, pick_device
from helpers.data import datasets
from helpers.data.synthetic import KERMANY_MARKER, _kermany_boxes, kermany_names, task_rng
from helpers.data.synthetic_xray import random_pose
from helpers.files import PARAMS_FILE, build_lock
from helpers.training.checkpoints import epochs_done, load_checkpoint, resume_path
from helpers.training.loop import fit, is_large_gpu, scaled_lr, train_step
from helpers.training.models import resnet18_xray
from helpers.xray.augment import GpuAugment
from helpers.xray.eda import image_level_split
from helpers.xray.kermany import kermany_items
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
    return _recipe_path(settings, name, "rsna", xray_training_config(settings))


def _recipe_path(settings: Settings, name: str, dataset: str, recipe: dict[str, Any]) -> Path:
    """``<cache>/<name>-<source>-<size>px-<digest>.pt``. The name carries a digest of the training settings, so
    a checkpoint trained with other settings is never silently reused after they change."""
    text = json.dumps({"recipe": RECIPE_VERSION, **recipe}, sort_keys=True, default=repr)
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    source = datasets.data_source(dataset, settings)
    return settings.cache_dir / f"{name}-{source}-{settings.sizes.image_size}px-{digest}.pt"


#: Full mode on a large GPU trains with this batch size (see :func:`xray_training_config`).
LARGE_GPU_BATCH = 256


def xray_training_config(settings: Settings | None = None) -> dict[str, Any]:
    """The training settings that notebook 02 teaches and that :func:`trained_xray_model` reuses.

    Full and cpu mode: the paper's (Adam at 1e-4, ``pos_weight`` from the class balance), best checkpoint by
    validation ROC-AUC, :class:`helpers.xray.augment.GpuAugment` (small rotations, shifts and zooms) with edge
    padding in every mode, the fill notebook 02 recommends (black fill draws edges no film has; measured in cpu
    mode over seeds 0/1/2, edge vs black: test ROC-AUC 0.997/0.990/1.000 vs 0.976/1.000/0.990, pointing game
    0.68/0.44/0.40 vs 0.64/0.36/0.61, random maps 0.10: no difference beyond noise); cpu mode trains fewer films at 160 px for fewer epochs (``config.CPU_SIZES``). Smoke mode has about 15 optimisation steps on 112 films at 64 px, and three changes make a
    model that works (measured over 8 seeds: validation ROC-AUC 1.0, test ROC-AUC 0.97, Grad-CAM at
    ``layer3`` in the boxes about 4x as often as random maps; before, with 3 epochs at 1e-3 and nothing
    else: validation ROC-AUC 0.62 and loss 13.9): Adam at 1e-3; BatchNorm statistics recomputed before each
    validation (``recalibrate_bn``, see :func:`helpers.training.loop.recalibrate_batchnorm`); edge padding
    instead of black for the augmentation, as in the other modes (with black wedges, Grad-CAM missed the opacities for some seeds). The checkpoint
    is chosen by validation loss, because 24 validation films saturate the ROC-AUC at 1.0.

    Full mode on a large GPU (:func:`helpers.training.loop.is_large_gpu`: 40 GiB or more, compute capability 8 or
    more: A100, H100, H200) trains with batches of ``LARGE_GPU_BATCH`` = 256 films at Adam 2e-4. Why: at 64
    films a ResNet18 step at 224 px is about 8-13 ms of work for an H100 but its ~350 kernels take the CPU
    about 3-5 ms to queue (issue 16's estimates, not measured yet), so the GPU waits for the CPU and an epoch
    of the 18.7k training films takes 3-4.5 s; 256 films give each launch four times the work. The learning
    rate follows the square-root rule for Adam (:func:`helpers.training.loop.scaled_lr`: 1e-4 x sqrt(256 / 64));
    the linear rule (x 4) is SGD's. An epoch then has a quarter of the steps, so the model is not the one the
    T4 recipe trains: the recipe is part of the checkpoint's name (:func:`checkpoint_path`). A T4, an L4 or a
    24 GB card keeps the paper's 64 films at 1e-4. Taught in ``notebooks/02_training_resnet18.ipynb``.
    """
    settings = settings or get_settings()
    config: dict[str, Any] = {
        "epochs": settings.sizes.epochs,
        "batch_size": settings.sizes.batch_size,
        "lr": 1e-4,
        "pos_weight": "auto",
        "monitor": "val_auc",
        "seed": 0,
        "augment": GpuAugment(padding_mode="border"),
    }
    if settings.mode == "full" and is_large_gpu():
        config.update(
            batch_size=LARGE_GPU_BATCH, lr=scaled_lr(1e-4, LARGE_GPU_BATCH, settings.sizes.batch_size)
        )
    if settings.smoke:
        config.update(
            lr=1e-3,
            monitor="val_loss",
            recalibrate_bn=True,
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


def _trained(
    settings: Settings,
    path: Path,
    recipe: dict[str, Any],
    store_fn: Callable[..., PreparedStore],
    what: str,
    *,
    progress: bool,
    retrain: bool,
) -> tuple[torch.nn.Module, dict]:
    """The ResNet18 of ``recipe`` trained on ``store_fn(settings)`` into ``path``: loaded when its run is
    complete, resumed (saying so) when it was interrupted, trained when missing, under a lock file, so that a
    second process asking at the same time waits and then loads it. In eval mode on the best device."""
    if retrain or not _finished(path, recipe):
        # two notebooks (or a notebook and prepare) asking at once: one trains, the other waits and reuses
        with build_lock(path, f"training the {what}") as waited_for:
            if waited_for is not None and _finished(path, recipe):
                print(f"{path.name}: reusing the model that {waited_for} trained meanwhile", flush=True)
            else:
                _train(settings, path, recipe, store_fn, progress=progress, retrain=retrain)
    model, meta = load_checkpoint(path)
    return model.to(pick_device()).eval(), meta


def _train(
    settings: Settings,
    path: Path,
    recipe: dict[str, Any],
    store_fn: Callable[..., PreparedStore],
    *,
    progress: bool,
    retrain: bool,
) -> None:
    """Train (or resume, saying so) a ResNet18 on ``store_fn(settings)`` into ``path`` with ``recipe``."""
    done = epochs_done(path) if path.is_file() else None
    if not retrain and done is not None:
        print(
            f"{path.name}: its training stopped after {done} of {recipe['epochs']} epochs; resuming it",
            flush=True,
        )
    store = store_fn(settings, progress=progress)
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
    return _trained(settings, path, recipe, rsna_store, "ResNet18", progress=progress, retrain=retrain)


# ------------------------------------------------------------------------------ Kermany (seed 001, notebook 07)
#: Share of the pooled children (official train + val folders) in the validation split (notebooks 01 and 07).
KERMANY_VAL_FRACTION = 0.2
#: Epochs of the Kermany model per mode: its training split is a half to a fifth of the RSNA one, so more epochs
#: give it a similar number of optimisation steps (smoke 15, cpu about 60).
KERMANY_EPOCHS = {"smoke": 5, "cpu": 6, "full": 12}


def kermany_store_items(kermany_root: str | Path) -> pd.DataFrame:
    """The items of the Kermany store, exactly as notebook 01 builds them (so both notebooks share one store).

    :func:`helpers.xray.kermany.kermany_items`: the official test folder stays ``test``; the official train and
    val folders are pooled and :data:`KERMANY_VAL_FRACTION` of their CHILDREN (stratified, seed 0) become
    ``val``. Plus ``image_split``, the wrong split by image that notebooks 01 and 07 contrast with it.
    """
    items = kermany_items(kermany_root, val_fraction=KERMANY_VAL_FRACTION, seed=SPLIT_SEED)
    by_image = image_level_split(len(items), KERMANY_VAL_FRACTION, seed=SPLIT_SEED)
    items["image_split"] = np.where(items["split"] == "test", "test", by_image)
    return items


def kermany_store(
    settings: Settings | None = None, *, progress: bool = True, workers: int | None = None
) -> PreparedStore:
    """The Kermany(-format) images of this mode as a finished store (built once, then reused).

    The real set when downloaded (``python data_download.py kermany``), else the built-in synthetic one;
    the split of :func:`kermany_store_items`, images resized to ``settings.sizes.image_size``. The same
    store as notebook 01, section 9. Taught in ``notebooks/07_kermany_pediatric.ipynb``.
    """
    settings = settings or get_settings()
    dest = store_path(settings, "kermany")
    try:
        return load_store(dest)
    except ValueError:
        pass
    items = kermany_store_items(datasets.kermany_dir(settings))
    build_store(items, dest, size=settings.sizes.image_size, workers=workers, progress=progress)
    return load_store(dest)


def kermany_training_config(settings: Settings | None = None) -> dict[str, Any]:
    """The training settings of the Kermany model: :func:`xray_training_config` (the recipe of notebook 02),
    with half the mode's batch size and :data:`KERMANY_EPOCHS` epochs, because the Kermany training split is
    small. Where notebook 02 trains with larger batches at a scaled learning rate (full mode on a large GPU), the
    rate of the mode's own batch size is kept: a few thousand images need no large batches.
    Taught in ``notebooks/07_kermany_pediatric.ipynb``.
    """
    settings = settings or get_settings()
    config = xray_training_config(settings)
    base = settings.sizes.batch_size
    config.update(
        batch_size=max(8, base // 2),
        epochs=KERMANY_EPOCHS[settings.mode],
        lr=scaled_lr(config["lr"], base, config["batch_size"]),  # the same rate unless notebook 02 scaled it
    )
    return config


def kermany_checkpoint_path(settings: Settings | None = None) -> Path:
    """Where the best checkpoint of the Kermany model is kept for this mode and data source (the name carries
    a digest of :func:`kermany_training_config`, so other settings never reuse it)."""
    settings = settings or get_settings()
    return _recipe_path(settings, "resnet18-kermany", "kermany", kermany_training_config(settings))


def _run_history(path: Path, meta: dict) -> list[dict]:
    """Every epoch of the run that saved ``path`` (from its resumable state; the best checkpoint's own history
    stops at the best epoch), or the checkpoint's history when that state is gone."""
    try:
        payload = torch.load(resume_path(path), map_location="cpu", weights_only=True, mmap=True)
        return list(payload["meta"]["history"])
    except (OSError, RuntimeError, ValueError, KeyError, TypeError):
        return list(meta["history"])


def trained_kermany_model(
    settings: Settings | None = None, *, progress: bool = True, retrain: bool = False
) -> tuple[torch.nn.Module, dict]:
    """The ResNet18 of notebook 07, trained on :func:`kermany_store`, in eval mode on the best device.

    The same code and caching as :func:`trained_xray_model`: a complete checkpoint is loaded, an interrupted
    run is resumed (saying so), a missing one is trained with :func:`kermany_training_config` under a lock
    file, so that a second process asking at the same time waits and then loads it. Returns ``(model, meta)``;
    ``meta["history"]`` holds every epoch of the run, also those after the best one (for the learning curves).
    Taught in ``notebooks/07_kermany_pediatric.ipynb``.
    """
    settings = settings or get_settings()
    path, recipe = kermany_checkpoint_path(settings), kermany_training_config(settings)
    model, meta = _trained(
        settings, path, recipe, kermany_store, "Kermany ResNet18", progress=progress, retrain=retrain
    )
    meta["history"] = _run_history(path, meta)
    return model, meta


def _image_key(path: str | Path) -> str:
    """``split/CLASS/file name``: the part of an image's path that names it inside a Kermany folder."""
    return "/".join(Path(path).parts[-3:])


def planted_kermany_boxes(kermany_root: str | Path) -> dict[str, list[tuple[float, float, float, float]]]:
    """The opacity boxes planted in the built-in synthetic Kermany set -> ``{"split/CLASS/name": boxes}``.

    The generator (:func:`helpers.data.synthetic.make_kermany_like`) draws each pneumonia inside boxes but, like
    the real set, writes no box file. It is deterministic, so the boxes are recomputed here from its seed and
    each image's keys (the same random draws, in the same order). Boxes are ``(x, y, w, h)`` in the image's
    original pixels (the JPEG's width and height); NORMAL images have none. ``ValueError`` for a folder that is
    not the built-in set (the real one has no boxes). ``tests/test_kermany_pipeline.py`` redraws images with
    these boxes and compares them with the files byte for byte. Taught in ``notebooks/07_kermany_pediatric.ipynb``.
    """
    root = Path(kermany_root)
    params = root / PARAMS_FILE
    if not (root / KERMANY_MARKER).is_file() or not params.is_file():
        raise ValueError(f"{root}: not the built-in synthetic Kermany set (no {KERMANY_MARKER}): no boxes")
    record = json.loads(params.read_text())
    seed, n_per_class = int(record["seed"]), int(record["n_per_class"])
    counts = {"train": n_per_class, "val": 8, "test": max(8, n_per_class // 4)}
    out = {}
    for s, (split, count) in enumerate(counts.items()):
        for c, label in enumerate(("NORMAL", "PNEUMONIA")):
            first = 100 + 1000 * s if label == "NORMAL" else 1000 * s
            for i, (name, kind) in enumerate(kermany_names(task_rng(seed, s, c), count, label, first)):
                rng = task_rng(seed, s, c, i)  # the draws of synthetic._write_kermany_image, in its order
                height = int(rng.integers(300, 601))
                width = min(600, int(height * rng.uniform(1.0, 1.35)))
                pose = random_pose(rng, pediatric=True)
                boxes = [] if kind == "normal" else _kermany_boxes(rng, pose, height, kind)
                stretch = width / height  # drawn on a height x height square, then stretched to the width
                out[f"{split}/{label}/{name}"] = [(x * stretch, y, w * stretch, h) for x, y, w, h in boxes]
    return out


def kermany_boxes(
    store: PreparedStore, kermany_root: str | Path
) -> list[list[tuple[float, float, float, float]]]:
    """The planted boxes of every row of ``store`` (:func:`planted_kermany_boxes`), in original pixels.

    ``ValueError`` when ``kermany_root`` is not the built-in synthetic set or a store image is not in it.
    """
    planted = planted_kermany_boxes(kermany_root)
    keys = store.index["path"].map(_image_key)
    missing = sorted(set(keys) - set(planted))
    if missing:
        raise ValueError(f"{store.path}: {len(missing)} images not in {kermany_root}, e.g. {missing[0]}")
    return [planted[key] for key in keys]
