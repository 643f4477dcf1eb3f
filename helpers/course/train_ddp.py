"""Notebook 02's ResNet18 trained on one process or on several with PyTorch DDP: ``python -m helpers.course.train_ddp``.

Taught in ``notebooks/08_scaling_up.ipynb``. One process::

    python -m helpers.course.train_ddp --mode smoke

Two processes on this machine (gloo between CPU processes; NCCL, one GPU each, where there are GPUs)::

    torchrun --standalone --nproc_per_node=2 -m helpers.course.train_ddp --mode smoke

Several nodes: the same command on every node with ``--nnodes=2 --node_rank=<0 or 1>
--rdzv_backend=c10d --rdzv_endpoint=<host of node 0>:29500`` instead of ``--standalone`` (see the README for a
SLURM script). The training code is :func:`helpers.training.loop.fit`, the same as in notebook 02, with the
``ranks`` that :func:`helpers.training.distributed.process_group` reads from torchrun's variables. Every
rank prints its throughput; rank 0 prints the history and the final metrics, and writes the checkpoint
(resumable with the same or another number of processes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from helpers import config
from helpers.course import pipeline
from helpers.files import write_atomic
from helpers.training import distributed
from helpers.training.loop import fit
from helpers.training.models import resnet18_xray


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.course.train_ddp", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--mode", choices=config.MODES, help="the course mode (default: as configured)")
    parser.add_argument("--epochs", type=int, help="epochs (default: the mode's recipe)")
    parser.add_argument("--device", choices=["auto", "cpu"], default="auto", help="cpu: gloo even with GPUs")
    parser.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across ranks (CUDA only)")
    parser.add_argument("--fresh", action="store_true", help="start again instead of resuming the checkpoint")
    parser.add_argument("--name", default="resnet18-rsna-ddp", help="checkpoint name (default: %(default)s)")
    parser.add_argument("--history-json", help="rank 0 also writes the history to this JSON file")
    return parser.parse_args(argv)


def _threads_per_process(ranks: distributed.Ranks | None, settings: config.Settings) -> int:
    """Share the CPU cores among the processes of this node instead of letting each take them all."""
    if ranks is None:
        return config.set_cpu_threads(settings)
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", ranks.world_size))
    threads = max(1, config.usable_cpus() // per_node)
    torch.set_num_threads(threads)
    return threads


def train(args: argparse.Namespace, ranks: distributed.Ranks | None) -> dict:
    """Train (or resume) on this process; returns rank 0's summary (every rank returns its own)."""
    settings = config.get_settings()
    main = ranks is None or ranks.is_main
    threads = _threads_per_process(ranks, settings)
    store = pipeline.rsna_store(settings, progress=main)  # a lock makes one rank build, the others reuse
    recipe = pipeline.xray_training_config(settings)
    if args.epochs:
        recipe["epochs"] = args.epochs
    path = pipeline.checkpoint_path(settings, name=args.name)
    torch.manual_seed(recipe["seed"])
    model = resnet18_xray(mean=store.mean, std=store.std)
    train_x, train_y = store.split_arrays("train")
    val_x, val_y = store.split_arrays("val")
    history = fit(
        model, train_x, train_y, val_x, val_y, checkpoint_path=path, resume=not args.fresh, progress=main,
        checkpoint_meta={"store": store.path.name}, ranks=ranks, sync_bn=args.sync_bn, **recipe,
    )  # fmt: skip
    world = 1 if ranks is None else ranks.world_size
    shard = len(train_y) // world
    seen = shard - shard % (recipe["batch_size"] // world)
    rate = seen * len(history) / max(history["seconds"].sum(), 1e-9)
    who = "one process" if ranks is None else f"rank {ranks.rank} of {world}"
    print(
        f"{who} ({'cuda' if torch.cuda.is_available() and args.device != 'cpu' else 'cpu'}, {threads} threads): "
        f"{seen} training films per epoch, {rate:.0f} films/s (training and validation)",
        flush=True,
    )
    last = history.iloc[-1]
    summary = {
        "world_size": world,
        "epochs": len(history),
        "train_loss": float(last["train_loss"]),
        "val_loss": float(last["val_loss"]),
        "val_auc": float(last["val_auc"]),
        "history": history.to_dict("records"),
    }
    if main:
        print(history.round(4).to_string(index=False))
        print(
            f"final ({world} process{'es' if world > 1 else ''}, global batch {recipe['batch_size']}): "
            f"train loss {summary['train_loss']:.4f}, val loss {summary['val_loss']:.4f}, "
            f"val ROC-AUC {summary['val_auc']:.3f}",
            flush=True,
        )
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mode:
        os.environ[config.MODE_ENV] = args.mode
    with distributed.process_group(device=None if args.device == "auto" else args.device) as ranks:
        summary = train(args, ranks)
        if args.history_json and (ranks is None or ranks.is_main):
            write_atomic(args.history_json, json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
