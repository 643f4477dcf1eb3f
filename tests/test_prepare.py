"""helpers.course.prepare: the pre-workshop command builds the store, the model and the breath patches once, then reuses."""

from __future__ import annotations

import pytest

from helpers import config
from helpers.course import pipeline, prepare, shortcut
from helpers.training.checkpoints import load_checkpoint
from helpers.xray.store import load_store


@pytest.fixture
def course_root(tmp_path, monkeypatch):
    """A fresh, empty course root in smoke mode (synthetic data is generated into it)."""
    for name in (config.DATA_ENV, config.CACHE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(config.ROOT_ENV, str(tmp_path))
    monkeypatch.setenv(config.MODE_ENV, "smoke")
    return tmp_path


def test_prepare_builds_everything_a_workshop_needs_then_reuses_it(course_root, capsys):
    assert prepare.main(["--train", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "mode=smoke" in out and out.count("[prepare]") == 5, out
    settings = config.get_settings()
    store = load_store(pipeline.store_path(settings))
    assert store.images.dtype.name == "uint8" and store.size == settings.sizes.image_size
    assert set(store.index["split"]) == {"train", "val", "test"}
    checkpoint = pipeline.checkpoint_path(settings)
    patches = settings.cache_dir / "icbhi-patches-synthetic.npz"
    assert checkpoint.is_file() and patches.is_file()
    assert str(course_root) in str(store.path)
    # The trained model carries the store's mean/std in its weights; the meta no longer repeats them.
    model, meta = load_checkpoint(checkpoint)
    assert float(model.normalise.mean) == pytest.approx(store.mean)
    assert float(model.normalise.std) == pytest.approx(store.std)
    assert "mean" not in meta and "std" not in meta and meta["store"] == store.path.name
    assert meta["image_size"] == [store.size, store.size]

    shortcut_model = shortcut.shortcut_checkpoint_path(settings)
    stamps = {p: p.stat().st_mtime_ns for p in (checkpoint, patches, shortcut_model)}
    done = prepare.prepare(train=True, progress=False)  # a second run reuses everything
    assert done == {
        "store": store.path,
        "checkpoint": checkpoint,
        "patches": patches,
        "shortcut": shortcut_model,
    }
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_prepare_can_skip_the_breath_sounds(course_root):
    done = prepare.prepare(breath=False, progress=False, workers=1)
    assert done["patches"] is None and done["checkpoint"] is None and done["store"].is_dir()
    assert not list(config.get_settings().cache_dir.glob("icbhi-patches-*"))


def test_the_checkpoint_name_changes_with_the_recipe_version_and_the_training_settings(
    course_root, monkeypatch
):
    """A checkpoint made by an older recipe (e.g. a model without its standardisation) is never picked up."""
    settings = config.get_settings()
    current = pipeline.checkpoint_path(settings)
    assert current.parent == settings.cache_dir and current.name.startswith("resnet18-rsna-synthetic-")
    assert current.suffix == ".pt" and f"-{settings.sizes.image_size}px-" in current.name
    assert pipeline.checkpoint_path(settings) == current  # the same settings: the same name
    version = pipeline.RECIPE_VERSION
    monkeypatch.setattr(pipeline, "RECIPE_VERSION", version - 1)
    assert pipeline.checkpoint_path(settings) != current
    monkeypatch.setattr(pipeline, "RECIPE_VERSION", version)
    assert pipeline.checkpoint_path(settings) == current
    changed = {**pipeline.xray_training_config(settings), "lr": 0.5}
    monkeypatch.setattr(pipeline, "xray_training_config", lambda settings=None: changed)
    assert pipeline.checkpoint_path(settings) != current


def test_full_mode_on_a_cpu_announces_the_training_time_first(monkeypatch, capsys):
    import numpy as np
    import torch

    from helpers.training.models import resnet18_xray

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    images = np.random.default_rng(0).integers(0, 255, size=(20, 32, 32), dtype=np.uint8)
    recipe = {"batch_size": 8, "lr": 1e-4, "epochs": 3}
    torch.manual_seed(0)
    model = resnet18_xray(mean=0.5, std=0.25).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.setenv(config.MODE_ENV, "full")
    seconds = pipeline.announce_training_time(config.get_settings(), model, images, recipe)
    out = capsys.readouterr().out
    assert seconds is not None and seconds > 0
    assert out.startswith("Full mode on a cpu: one training step of 8 films took ")
    assert (
        f"so 3 epochs will take about {seconds / 60:.0f} min" in out and '"XAI_COURSE_MODE"] = "cpu"' in out
    )
    assert not model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    monkeypatch.setenv(config.MODE_ENV, "cpu")
    assert pipeline.announce_training_time(config.get_settings(), model, images, recipe) is None
    assert capsys.readouterr().out == ""


def test_an_interrupted_training_is_resumed_not_used_half_trained(course_root, capsys):
    """Regression (issue 19, finding 1): notebook 02 stopped after its first epoch left a best checkpoint, which
    trained_xray_model then loaded as if it were the finished model."""
    from helpers.training.checkpoints import epochs_done
    from helpers.training.loop import fit
    from helpers.training.models import resnet18_xray

    settings = config.get_settings()
    store = pipeline.rsna_store(settings, progress=False)
    recipe = pipeline.xray_training_config(settings)
    path = pipeline.checkpoint_path(settings)
    model = resnet18_xray(mean=store.mean, std=store.std)
    interrupted = {**recipe, "epochs": 1}  # as if the kernel died after epoch 1
    fit(model, *store.split_arrays("train"), *store.split_arrays("val"), checkpoint_path=path, progress=False,
        checkpoint_meta={"store": store.path.name}, **interrupted)  # fmt: skip
    assert path.is_file() and epochs_done(path) == 1
    _, meta = pipeline.trained_xray_model(settings, progress=False)
    assert f"stopped after 1 of {recipe['epochs']} epochs; resuming it" in capsys.readouterr().out
    assert epochs_done(path) == recipe["epochs"]
    assert len(pipeline.trained_xray_model(settings, progress=False)[1]["history"]) >= meta["epoch"]
    assert capsys.readouterr().out == ""  # complete now: loaded as it is


def test_two_processes_asking_for_the_model_at_once_train_it_once(course_root):
    """Two notebooks on "Run all" both reach trained_xray_model: one trains, the other waits for its lock and
    loads the finished model (issue 19, finding 4, for the checkpoint). Both get the same weights."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from helpers.training.checkpoints import epochs_done

    script = (
        "import hashlib, torch\n"
        "from helpers.course import pipeline\n"
        "model, meta = pipeline.trained_xray_model(progress=False)\n"
        "weights = torch.cat([p.detach().flatten() for p in model.parameters()]).numpy().tobytes()\n"
        "print('WEIGHTS', hashlib.sha256(weights).hexdigest(), 'EPOCH', meta['epoch'])\n"
    )
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    pipeline.rsna_store(
        progress=False
    )  # the store first (its own lock is tested in test_store_robustness.py)
    runs = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
        for _ in range(2)
    ]  # fmt: skip
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert sum("reusing the model that" in out for out in outputs) == 1, outputs
    assert len({line for out in outputs for line in out.splitlines() if line.startswith("WEIGHTS")}) == 1, (
        outputs
    )
    path = pipeline.checkpoint_path()
    assert epochs_done(path) == pipeline.xray_training_config()["epochs"]
    assert not path.with_name(path.name + ".lock").exists()
