"""Does the `cpu` mode teach what it should, on a laptop CPU? Accuracy and localisation per seed, and time per notebook.

For each training seed: the X-ray model of notebook 02 is trained exactly as `pipeline.trained_xray_model` does
in the chosen mode (same store, same recipe; only the seed of the initial weights, the shuffling and the
augmentation changes), then scored on the test split: ROC-AUC, and the pointing game of `layer4` Grad-CAM on
the test positives against its two baselines (random CAM-like maps on the `layer4` grid, and the box-area share
that a map without information scores). The data are the course's own (the synthetic set unless the real
RSNA data is downloaded), as a learner gets them.

    python benchmarks/bench_cpu_mode.py                       # cpu mode, seeds 0 1 2
    python benchmarks/bench_cpu_mode.py --timings build/cpu/timings.csv   # also the headless run's timings

The targets of the cpu mode (issue 13): test ROC-AUC >= 0.90 for every seed; pointing game >= random + 0.25
and above the box-area share. The time per notebook comes from a headless run
(`python -m helpers.course.run_notebooks --mode cpu`), which writes `timings.csv`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from helpers import config
from helpers.course import pipeline
from helpers.data import datasets
from helpers.evaluate.metrics import ranking_metrics
from helpers.explain import cam, localisation
from helpers.training.inference import predict_split
from helpers.training.loop import fit
from helpers.training.models import layer4_side, resnet18_xray

AUC_TARGET, MARGIN_TARGET = 0.90, 0.25


def score_seed(store, recipe: dict, seed: int) -> dict:
    """Train with ``recipe`` and ``seed`` (not cached), then the test ROC-AUC and the layer4 pointing game."""
    train_x, train_y = store.split_arrays("train")
    val_x, val_y = store.split_arrays("val")
    torch.manual_seed(seed)
    model = resnet18_xray(mean=store.mean, std=store.std)
    started = time.perf_counter()
    fit(model, train_x, train_y, val_x, val_y, progress=False, **{**recipe, "seed": seed})
    seconds = time.perf_counter() - started
    test = predict_split(model, store, "test", progress=False)
    positives = test[(test["label"] == 1) & test["boxes"].map(len).gt(0)]
    x = torch.from_numpy(np.asarray(store.images[positives.index.to_numpy()])).float()[:, None] / 255
    maps = np.concatenate([cam.grad_cam(model, chunk, "layer4").cpu().numpy() for chunk in x.split(64)])
    boxes = [
        localisation.scale_boxes(b, (h, w), store.size)
        for b, h, w in zip(positives["boxes"], positives["orig_height"], positives["orig_width"], strict=True)
    ]
    report = localisation.localisation_report(maps, boxes, grid=layer4_side(store.size), seed=0)
    return {
        "seed": seed,
        "train_s": seconds,
        "test_roc_auc": ranking_metrics(test["label"], test["prob"])["roc_auc"],
        "pointing_game": report.loc["method", "pointing_game"],
        "random_maps": report.loc["random", "pointing_game"],
        "box_area": report.loc["box area", "pointing_game"],
        "n_positives": int(report["n_images"].iloc[0]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", default="cpu", choices=config.MODES, help="the mode whose sizes to measure")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lr", type=float, help="override the recipe's learning rate (to compare recipes)")
    parser.add_argument("--epochs", type=int, help="override the recipe's number of epochs")
    parser.add_argument("--timings", type=Path, help="a timings.csv written by helpers.course.run_notebooks")
    args = parser.parse_args(argv)
    os.environ[config.MODE_ENV] = args.mode
    settings = config.get_settings()
    config.set_cpu_threads(settings)
    recipe = pipeline.xray_training_config(settings)
    recipe.update({k: v for k, v in {"lr": args.lr, "epochs": args.epochs}.items() if v is not None})
    store = pipeline.rsna_store(settings)
    source = datasets.data_source("rsna", settings)
    print(
        f"{args.mode} mode, {source} data: {len(store.index)} films at {store.size} px on {config.pick_device()}"
    )
    print("recipe:", {k: v for k, v in recipe.items() if k != "augment"}, "| augment:", recipe["augment"])
    rows = []
    for seed in args.seeds:
        rows.append(score_seed(store, recipe, seed))
        print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows).set_index("seed")
    table["margin_over_random"] = table["pointing_game"] - table["random_maps"]
    met = (table["test_roc_auc"] >= AUC_TARGET) & (table["margin_over_random"] >= MARGIN_TARGET)
    table["targets_met"] = met & (table["pointing_game"] > table["box_area"])
    print(f"\nlayer4 is {layer4_side(store.size)} x {layer4_side(store.size)} cells ({source} data):")
    print(table.round(3).to_string())
    if args.timings is not None and args.timings.is_file():
        timings = pd.read_csv(args.timings)
        print(f"\n{args.timings}:\n{timings.to_string(index=False)}\ntotal: {timings['seconds'].sum():.0f} s")
    return 0 if bool(table["targets_met"].all()) else 1


if __name__ == "__main__":
    sys.exit(main())
