"""Reference answers for the exercises of notebooks/08_scaling_up.ipynb."""

from __future__ import annotations

import torch

from helpers.exercises.checks import Exercise
from helpers.training import distributed


def _films_per_rank(n_train: int, world_size: int, global_batch: int) -> int:
    """Films each rank trains on per epoch: its equal shard, less the last incomplete batch of that rank."""
    ranks = distributed.Ranks(0, world_size, 0, torch.device("cpu"))
    shard = len(distributed.train_shard(n_train, ranks, seed=0))
    per_step = distributed.rank_batch(global_batch, ranks)
    return shard - shard % per_step


def _runs() -> list[dict[str, int]]:
    """Runs where the shard divides evenly, where it leaves a remainder, and where the split leaves films out."""
    return [
        {"n_train": 112, "world_size": 2, "global_batch": 32},
        {"n_train": 18678, "world_size": 4, "global_batch": 64},
        {"n_train": 1001, "world_size": 8, "global_batch": 256},
        {"n_train": 559, "world_size": 1, "global_batch": 32},
    ]


EXERCISES = {
    "films_per_rank": Exercise(
        question="Write films_per_rank(n_train, world_size, global_batch): the films each rank trains on per epoch.",
        reference=_films_per_rank,
        hint="Each rank's shard holds n_train // world_size films; each step takes global_batch // world_size of "
        "them, and the last incomplete step is dropped: shard - shard % (global_batch // world_size).",
        inputs=_runs,
    ),
}
