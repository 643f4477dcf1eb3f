"""helpers.course.prepare: the pre-workshop command builds the store, the model and the breath patches once, then reuses."""

from __future__ import annotations

import pytest

from helpers import config
from helpers.course import pipeline, prepare
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
    assert "mode=smoke" in out and out.count("[prepare]") == 4, out
    settings = config.get_settings()
    store = load_store(pipeline.store_path(settings))
    assert store.images.dtype.name == "uint8" and store.size == settings.sizes.image_size
    assert set(store.index["split"]) == {"train", "val", "test"}
    checkpoint = pipeline.checkpoint_path(settings)
    patches = settings.cache_dir / "icbhi-patches-synthetic.npz"
    assert checkpoint.is_file() and patches.is_file()
    assert str(course_root) in str(store.path)

    stamps = {p: p.stat().st_mtime_ns for p in (checkpoint, patches)}
    done = prepare.prepare(train=True, progress=False)  # a second run reuses everything
    assert done == {"store": store.path, "checkpoint": checkpoint, "patches": patches}
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_prepare_can_skip_the_breath_sounds(course_root):
    done = prepare.prepare(breath=False, progress=False, workers=1)
    assert done["patches"] is None and done["checkpoint"] is None and done["store"].is_dir()
    assert not list(config.get_settings().cache_dir.glob("icbhi-patches-*"))
