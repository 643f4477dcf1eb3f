"""Prepare the course's derived data ahead of a workshop, so that no learner waits for it.

    python -m helpers.course.prepare                    # the preprocessed X-ray store (notebook 01) and breath patches (06)
    python -m helpers.course.prepare --train            # also the trained models that notebooks 03 to 05 load
    python -m helpers.course.prepare --train --mode cpu # the cpu-mode files, to stage on learners' laptops

Works for the mode in ``--mode`` (else ``XAI_COURSE_MODE``, else auto: ``cpu`` without a GPU) and the data in use (real data when downloaded with
``data_download.py``, else the built-in synthetic sets, generated here). Every step reuses what is already
built and resumes what was interrupted, so running it again is cheap. Progress bars show the long steps.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from helpers import config
from helpers.breath import dataset
from helpers.course import pipeline, shortcut
from helpers.data import datasets


def _step(name: str, started: float) -> None:
    print(f"[prepare] {name}: done in {time.perf_counter() - started:.1f} s", flush=True)


def prepare(
    *, train: bool = False, breath: bool = True, workers: int | None = None, progress: bool = True
) -> dict:
    """Build (or reuse) the X-ray store, optionally the trained X-ray model, and the breath-sound patches.

    Returns ``{"store": path, "checkpoint": path or None, "patches": path or None}`` (with ``train`` also
    ``"shortcut"``: the model of notebook 05's shortcut lesson, trained on its two synthetic stores).
    """

    settings = config.get_settings()
    done: dict = {"store": None, "checkpoint": None, "patches": None}
    started = time.perf_counter()
    store = pipeline.rsna_store(settings, progress=progress, workers=workers)
    done["store"] = store.path
    _step(
        f"X-ray store {config.display_path(store.path, settings)} ({len(store.images)} images, {store.size} px)",
        started,
    )
    if train:
        started = time.perf_counter()
        pipeline.trained_xray_model(settings, progress=progress)
        done["checkpoint"] = pipeline.checkpoint_path(settings)
        _step(f"trained ResNet18 {config.display_path(done['checkpoint'], settings)}", started)
        started = time.perf_counter()
        confounded, _ = pipeline.shortcut_stores(settings, progress=progress)
        shortcut.train_shortcut_model(confounded, settings, progress=progress)
        done["shortcut"] = shortcut.shortcut_checkpoint_path(settings)
        _step(f"shortcut-lesson model {config.display_path(done['shortcut'], settings)}", started)
    if breath:
        started = time.perf_counter()
        icbhi_path = datasets.icbhi_dir(settings)
        source = datasets.data_source("icbhi", settings)
        cache = settings.cache_dir / f"icbhi-patches-{source}.npz"  # the name notebook 06 uses
        dataset.build_patch_dataset(icbhi_path, cache_path=cache, progress=progress)
        done["patches"] = cache
        _step(f"breath-sound patches {config.display_path(cache, settings)}", started)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--train", action="store_true", help="also train and save the X-ray model (03-05 load it)"
    )
    parser.add_argument(
        "--no-breath", action="store_true", help="skip the breath-sound patches of notebook 06"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="processes for preprocessing (default: by CPU)"
    )
    parser.add_argument(
        "--mode",
        choices=(config.AUTO, *config.MODES),
        default=None,
        help=f"sets {config.MODE_ENV} (default: as set)",
    )
    args = parser.parse_args(argv)
    if args.mode:
        os.environ[config.MODE_ENV] = args.mode
    print("[prepare]", config.describe(), flush=True)
    prepare(train=args.train, breath=not args.no_breath, workers=args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
