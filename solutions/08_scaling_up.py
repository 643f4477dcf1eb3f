"""Solutions to the exercises of notebooks/08_scaling_up.ipynb.

A code exercise's solution is the function the learner writes (the check calls it on several inputs).
"""


def films_per_rank(n_train, world_size, global_batch):
    # Equal shards (the n_train % world_size films left over sit out the run, so that every rank takes the same
    # number of steps), then whole steps of global_batch / world_size films; the rest of the shard is dropped.
    shard = n_train // world_size
    per_step = global_batch // world_size
    return shard - shard % per_step  # 112 films, 2 ranks, batch 32: shard 56, steps of 16 -> 48
