"""Data-parallel training (issue 18): the course's own loop on 2 CPU processes under torchrun (gloo).

The exactness test uses full-batch training of a model without BatchNorm: then one process and two processes
compute the same gradient (the mean over the two halves is the mean over the whole), take the same Adam steps
and must print the same losses, up to float rounding. With BatchNorm and smaller batches the runs differ
(each rank normalises its own half batch); notebook 08 shows that case with the ResNet18.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.training import distributed
from helpers.training.checkpoints import RunCheckpoints, resume_path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, os, sys
import numpy as np, torch
from torch import nn
from helpers.training import distributed
from helpers.training.loop import fit

out, epochs, checkpoint = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
x = rng.integers(0, 256, size=(40, 1, 8, 8), dtype=np.uint8)
y = (x[:, 0, :4].mean(axis=(1, 2)) > x[:, 0, 4:].mean(axis=(1, 2))).astype(np.int64)
with distributed.process_group(device="cpu") as ranks:
    if ranks is not None and ranks.rank == int(os.environ.get("FAIL_RANK", -1)):
        raise RuntimeError("rank failed on purpose")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))
    history = fit(model, x[:32], y[:32], x[32:], y[32:], epochs=epochs, batch_size=32, lr=1e-2, device="cpu",
                  checkpoint_path=checkpoint if checkpoint != "-" else None, resume=checkpoint != "-",
                  progress=False,
                  ranks=ranks)
    if ranks is None or ranks.is_main:
        with open(out, "w") as handle:
            json.dump(history[["train_loss", "val_loss", "val_auc"]].to_dict("list"), handle)
"""


def _run(tmp_path: Path, processes: int, epochs: int, checkpoint: str = "-", fail_rank: int | None = None):
    """Run the script on ``processes`` processes (1: plain python); returns (completed process, history)."""
    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT)
    out = tmp_path / f"history-{processes}-{epochs}.json"
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    if fail_rank is not None:
        env["FAIL_RANK"] = str(fail_rank)
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
    ]  # fmt: skip
    done = subprocess.run(
        [*launcher, str(script), str(out), str(epochs), checkpoint],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    history = json.loads(out.read_text()) if out.is_file() else None
    return done, history


def _leftover_processes(marker: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in text:
            found.append(text)
    return found


def test_two_processes_train_exactly_like_one_on_the_same_global_batch(tmp_path):
    one, history_one = _run(tmp_path, 1, epochs=3)
    two, history_two = _run(tmp_path, 2, epochs=3)
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    for key in ("train_loss", "val_loss", "val_auc"):
        np.testing.assert_allclose(history_two[key], history_one[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert (
        history_one["train_loss"][-1] < history_one["train_loss"][0]
    )  # it learns: the comparison means something


def test_only_rank_0_writes_and_an_interrupted_run_resumes_on_any_number_of_processes(tmp_path):
    checkpoint = tmp_path / "tiny.pt"
    (tmp_path / "straight").mkdir()  # the same run, uninterrupted, for comparison
    straight, history_straight = _run(
        tmp_path / "straight", 2, epochs=4, checkpoint=str(tmp_path / "straight/s.pt")
    )
    assert straight.returncode == 0, straight.stderr[-2000:]
    first, _ = _run(tmp_path, 2, epochs=2, checkpoint=str(checkpoint))  # as if stopped after epoch 2
    assert first.returncode == 0, first.stderr[-2000:]
    files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("tiny", ".tiny")))
    assert files == ["tiny.last.pt", "tiny.pt"], files  # one checkpoint, its state, no temporaries or locks
    resumed, history = _run(tmp_path, 2, epochs=3, checkpoint=str(checkpoint))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    again, history_again = _run(tmp_path, 1, epochs=4, checkpoint=str(checkpoint))  # one process takes over
    assert again.returncode == 0, again.stderr[-2000:]
    for key in ("train_loss", "val_loss"):
        np.testing.assert_allclose(history[key], history_straight[key][:3], rtol=1e-5, atol=1e-6, err_msg=key)
        np.testing.assert_allclose(
            history_again[key], history_straight[key], rtol=1e-5, atol=1e-6, err_msg=key
        )


def test_a_failing_rank_stops_the_run_and_leaves_no_process_behind(tmp_path):
    failed, history = _run(tmp_path, 2, epochs=2, fail_rank=1)
    assert failed.returncode != 0 and history is None
    assert "rank failed on purpose" in failed.stderr
    assert _leftover_processes(str(tmp_path / "ddp_script.py")) == []


def test_shards_are_disjoint_equal_and_reproducible():
    ranks = [distributed.Ranks(r, 3, r, torch.device("cpu")) for r in range(3)]
    shards = [distributed.train_shard(100, r, seed=5) for r in ranks]
    assert [len(s) for s in shards] == [33, 33, 33]
    assert len(set(np.concatenate(shards))) == 99  # disjoint; 100 % 3 = 1 item left out
    assert all(
        np.array_equal(s, distributed.train_shard(100, r, seed=5)) for s, r in zip(shards, ranks, strict=True)
    )
    slices = [distributed.val_slice(10, r) for r in ranks]
    assert [(s.start, s.stop) for s in slices] == [(0, 3), (3, 7), (7, 10)]  # in order, sizes differ by one
    with pytest.raises(ValueError, match="cannot be shared by 3 ranks"):
        distributed.train_shard(2, ranks[0], seed=0)


def test_the_global_batch_is_split_evenly_and_streams_differ_per_rank_and_epoch():
    two = distributed.Ranks(1, 2, 1, torch.device("cpu"))
    assert distributed.rank_batch(64, two) == 32 and distributed.rank_batch(64, None) == 64
    with pytest.raises(ValueError, match="must divide by the 2 ranks"):
        distributed.rank_batch(33, two)
    draws = {}
    for rank in (0, 1):
        for epoch in (0, 1):
            generators = {"order": torch.Generator()}
            distributed.reseed(generators, 0, epoch, distributed.Ranks(rank, 2, rank, torch.device("cpu")))
            draws[rank, epoch] = torch.randperm(20, generator=generators["order"]).tolist()
    assert len({tuple(d) for d in draws.values()}) == 4
    generators = {"order": torch.Generator()}
    distributed.reseed(generators, 0, 1, distributed.Ranks(1, 2, 1, torch.device("cpu")))
    assert torch.randperm(20, generator=generators["order"]).tolist() == draws[1, 1]


def test_a_run_that_does_not_write_keeps_the_best_in_memory(tmp_path):
    model = torch.nn.Linear(2, 1)
    run = RunCheckpoints(tmp_path / "m.pt", {"seed": 0}, {}, writes=False)
    run.end_epoch(model, None, [{"epoch": 1}], 0.5, improved=True)
    best = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    run.restore_best(model)
    assert all(torch.equal(best[k], v) for k, v in model.state_dict().items())
    assert list(tmp_path.iterdir()) == [] and not resume_path(tmp_path / "m.pt").exists()


def test_no_torchrun_variables_means_one_process(monkeypatch):
    for name in distributed.TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    with distributed.process_group() as ranks:
        assert ranks is None
