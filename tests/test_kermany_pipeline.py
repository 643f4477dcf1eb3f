"""helpers.course.pipeline for notebook 07: the Kermany store, its model, and the planted boxes (smoke sizes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import config
from helpers.course import pipeline
from helpers.data import datasets, synthetic
from helpers.data.synthetic_xray import draw_radiograph, random_pose
from helpers.training.checkpoints import epochs_done, load_checkpoint
from helpers.training.loop import fit
from helpers.training.models import resnet18_xray
from helpers.xray.store import build_store


@pytest.fixture(scope="module")
def course_root(tmp_path_factory):
    """One fresh course root in smoke mode for the whole module: the synthetic Kermany set is made once."""
    root = tmp_path_factory.mktemp("course")
    with pytest.MonkeyPatch.context() as patch:
        for name in (config.DATA_ENV, config.CACHE_ENV):
            patch.delenv(name, raising=False)
        patch.setenv(config.ROOT_ENV, str(root))
        patch.setenv(config.MODE_ENV, "smoke")
        yield root


@pytest.fixture(scope="module")
def store(course_root):
    return pipeline.kermany_store(progress=False, workers=1)


def test_the_store_keeps_the_test_folder_and_splits_the_rest_by_child(store, course_root):
    settings = config.get_settings()
    assert store.path == pipeline.store_path(settings, "kermany") and str(course_root) in str(store.path)
    assert store.path.name == f"store-kermany-synthetic-{settings.sizes.image_size}px"
    index = store.index
    assert (index["split"] == "test").equals(index["official_split"] == "test")  # the test folder, untouched
    pooled = index[index["split"] != "test"]
    assert set(pooled["split"]) == {"train", "val"}
    assert (pooled.groupby("patientId")["split"].nunique() == 1).all()  # no child on both sides
    children = pooled.groupby("patientId")["split"].first()
    assert (children == "val").mean() == pytest.approx(pipeline.KERMANY_VAL_FRACTION, abs=0.05)
    # the wrong split by image, kept to compare, does put children on both sides
    assert (pooled.groupby("patientId")["image_split"].nunique() > 1).any()
    assert store.images.shape == (len(index), settings.sizes.image_size, settings.sizes.image_size)


def test_the_store_is_reused_and_is_the_one_notebook_01_builds(store):
    stats = store.stats["created"]
    again = pipeline.kermany_store(progress=False)
    assert again.path == store.path and again.stats["created"] == stats  # opened, not built again
    # notebook 01 (section 9) builds it from the same items: its build_store call finds the store finished
    root = datasets.kermany_dir(config.get_settings())
    built = build_store(pipeline.kermany_store_items(root), store.path, size=store.size, progress=False)
    assert Path(built) == store.path and pipeline.kermany_store(progress=False).stats["created"] == stats


def _redraw(root: Path, key: str, boxes: list) -> bytes:
    """The JPEG that synthetic._write_kermany_image writes for ``key``, drawn with ``boxes`` (original pixels)."""
    split, label, name = key.split("/")
    s, c = synthetic_folders(split, label)
    count = len(list((root / "chest_xray" / split / label).glob("*.jpeg")))
    first = 100 + 1000 * s if label == "NORMAL" else 1000 * s
    names = synthetic.kermany_names(synthetic.task_rng(0, s, c), count, label, first)
    i = [n for n, _ in names].index(name)
    rng = synthetic.task_rng(0, s, c, i)  # the generator's draws, in its order
    height = int(rng.integers(300, 601))
    width = min(600, int(height * rng.uniform(1.0, 1.35)))
    pose = random_pose(rng, pediatric=True)
    if names[i][1] != "normal":
        synthetic._kermany_boxes(rng, pose, height, names[i][1])  # advance the generator past the box draws
    square = [(x * height / width, y, w * height / width, h) for x, y, w, h in boxes]
    return synthetic._jpeg_bytes(draw_radiograph(rng, height, square, pose=pose, width=width), quality=90)


def synthetic_folders(split: str, label: str) -> tuple[int, int]:
    return ("train", "val", "test").index(split), ("NORMAL", "PNEUMONIA").index(label)


def test_the_planted_boxes_are_the_ones_the_generator_drew(store):
    """Drawing an image again with the recomputed boxes gives the file on disk byte for byte, so the boxes are
    exactly where its opacities are (and a change to the generator's draws fails here)."""
    root = datasets.kermany_dir(config.get_settings())
    planted = pipeline.planted_kermany_boxes(root)
    assert set(planted) == set(store.index["path"].map(lambda p: "/".join(Path(p).parts[-3:])))
    pneumonia = sorted(key for key in planted if "/PNEUMONIA/" in key)
    assert all(planted[key] == [] for key in planted if "/NORMAL/" in key)
    for key in pneumonia:
        n = len(planted[key])
        assert (n == 1) if "_bacteria_" in key else (2 <= n <= 4), (key, n)
    for key in pneumonia[::6] + [key for key in planted if "/NORMAL/" in key][:2]:
        assert _redraw(root, key, planted[key]) == (root / "chest_xray" / key).read_bytes(), key
    # a box moved by a few pixels draws another image
    key = pneumonia[0]
    moved = [(x + 6, y, w, h) for x, y, w, h in planted[key]]
    assert _redraw(root, key, moved) != (root / "chest_xray" / key).read_bytes()


def test_the_boxes_follow_the_rows_of_the_store_and_lie_inside_the_images(store):
    root = datasets.kermany_dir(config.get_settings())
    boxes = pipeline.kermany_boxes(store, root)
    assert len(boxes) == len(store.index)
    labels = store.index["label"].to_numpy()
    assert all(bool(b) == bool(y) for b, y in zip(boxes, labels, strict=True))
    for b, h, w in zip(boxes, store.index["orig_height"], store.index["orig_width"], strict=True):
        for x, y, bw, bh in b:
            assert 0 <= x and x + bw <= w and 0 <= y and y + bh <= h


def test_the_boxes_need_the_built_in_set(tmp_path, store):
    fake = tmp_path / "kermany" / "chest_xray"
    for split in ("train", "test"):
        (fake / split / "NORMAL").mkdir(parents=True)
    with pytest.raises(ValueError, match="not the built-in synthetic Kermany set"):
        pipeline.planted_kermany_boxes(tmp_path / "kermany")
    with pytest.raises(ValueError, match="not the built-in synthetic Kermany set"):
        pipeline.kermany_boxes(store, tmp_path / "kermany")


def test_the_training_recipe_is_notebook_02s_with_its_own_batch_epochs_and_checkpoint(
    course_root, monkeypatch
):
    own = ("epochs", "batch_size")
    for mode in config.MODES:
        monkeypatch.setenv(config.MODE_ENV, mode)
        settings = config.get_settings()
        recipe, rsna = pipeline.kermany_training_config(settings), pipeline.xray_training_config(settings)
        assert recipe["epochs"] == pipeline.KERMANY_EPOCHS[mode]
        assert recipe["batch_size"] == settings.sizes.batch_size // 2
        assert {k: v for k, v in recipe.items() if k not in own} == {
            k: v for k, v in rsna.items() if k not in own
        }
    # full mode on a large GPU: notebook 02 scales batch and rate up; the small Kermany set keeps the mode's own
    monkeypatch.setattr(pipeline, "is_large_gpu", lambda device=None: True)
    settings = config.get_settings()
    assert pipeline.xray_training_config(settings)["lr"] > 1e-4
    assert pipeline.kermany_training_config(settings)["lr"] == pytest.approx(1e-4)
    assert pipeline.kermany_training_config(settings)["batch_size"] == settings.sizes.batch_size // 2
    monkeypatch.setenv(config.MODE_ENV, "smoke")
    settings = config.get_settings()
    path = pipeline.kermany_checkpoint_path(settings)
    assert path.parent == settings.cache_dir and path.name.startswith("resnet18-kermany-synthetic-64px-")
    assert path != pipeline.checkpoint_path(settings)
    changed = {**pipeline.kermany_training_config(settings), "lr": 0.5}
    monkeypatch.setattr(pipeline, "kermany_training_config", lambda settings=None: changed)
    assert pipeline.kermany_checkpoint_path(settings) != path  # other settings, another checkpoint


def test_an_interrupted_training_is_resumed_then_the_finished_model_is_loaded(store, capsys):
    settings = config.get_settings()
    recipe, path = pipeline.kermany_training_config(settings), pipeline.kermany_checkpoint_path(settings)
    torch.manual_seed(0)
    model = resnet18_xray(mean=store.mean, std=store.std)
    fit(model, *store.split_arrays("train"), *store.split_arrays("val"), checkpoint_path=path, progress=False,
        checkpoint_meta={"store": store.path.name}, **{**recipe, "epochs": 1})  # fmt: skip
    assert epochs_done(path) == 1  # as if the kernel died after epoch 1
    model, meta = pipeline.trained_kermany_model(settings, progress=False)
    assert f"stopped after 1 of {recipe['epochs']} epochs; resuming it" in capsys.readouterr().out
    assert epochs_done(path) == recipe["epochs"] and len(meta["history"]) == recipe["epochs"]
    assert not model.training and meta["store"] == store.path.name
    assert float(model.normalise.mean) == pytest.approx(store.mean)
    assert not path.with_name(path.name + ".lock").exists()
    stamp = path.stat().st_mtime_ns
    again, _ = pipeline.trained_kermany_model(settings, progress=False)  # complete now: loaded as it is
    assert capsys.readouterr().out == "" and path.stat().st_mtime_ns == stamp
    reference, _ = load_checkpoint(path)
    x = torch.from_numpy(np.array(store.images[:4])).float()[:, None] / 255
    with torch.no_grad():
        assert torch.allclose(again.cpu()(x), reference.eval()(x), atol=1e-5)
