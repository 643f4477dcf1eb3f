"""helpers.config: one mode variable, paths relative to the course root with overrides, device, seeding."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import config

ROOT = Path(__file__).resolve().parents[1]


def test_auto_is_the_default_full_with_cuda_cpu_without(monkeypatch):
    monkeypatch.delenv(config.MODE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert config.choose_mode() == (
        "cpu",
        "chosen automatically: no CUDA GPU, so the lesson is sized for this CPU",
    )
    assert config.get_settings().sizes == config.CPU_SIZES
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert config.choose_mode() == ("full", "chosen automatically: a CUDA GPU is available")
    monkeypatch.setenv(config.MODE_ENV, "auto")
    assert config.get_mode() == "full"


def test_a_mode_set_in_the_environment_wins_and_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for mode, sizes in (
        ("SMOKE", config.SMOKE_SIZES),
        ("cpu", config.CPU_SIZES),
        ("full", config.FULL_SIZES),
    ):
        monkeypatch.setenv(config.MODE_ENV, mode)
        settings = config.get_settings()
        assert (settings.mode, settings.sizes) == (mode.lower(), sizes)
        assert settings.mode_reason == f"set by XAI_COURSE_MODE={mode.lower()}"


def test_cpu_mode_has_layer4_maps_of_at_least_5_cells():
    from helpers.training.models import layer4_side

    assert layer4_side(config.CPU_SIZES.image_size) >= 5
    assert layer4_side(config.FULL_SIZES.image_size) == 7


def test_unknown_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(config.MODE_ENV, "fast")
    with pytest.raises(
        ValueError, match="XAI_COURSE_MODE='fast' is not a mode; expected one of auto, smoke, cpu, full"
    ):
        config.get_settings()


def test_paths_are_inside_the_checkout_by_default(monkeypatch):
    for var in (config.ROOT_ENV, config.DATA_ENV, config.CACHE_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(config.MODE_ENV, "smoke")
    s = config.get_settings()
    assert s.root == ROOT
    assert s.data_dir == ROOT / "data"
    assert s.cache_dir == ROOT / "cache" / "smoke"
    assert s.synthetic_dir == ROOT / "data" / "synthetic-smoke"
    assert s.real_dir("rsna") == ROOT / "data" / "rsna"


def test_paths_can_be_overridden(monkeypatch, tmp_path):
    monkeypatch.setenv(config.DATA_ENV, str(tmp_path / "d"))
    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "c"))
    monkeypatch.setenv(config.MODE_ENV, "full")
    s = config.get_settings()
    assert s.data_dir == tmp_path / "d"
    assert s.cache_dir == tmp_path / "c" / "full"
    assert s.sizes.image_size == 224


def test_settings_are_read_fresh_each_time(monkeypatch):
    monkeypatch.setenv(config.MODE_ENV, "smoke")
    assert config.get_settings().smoke
    monkeypatch.setenv(config.MODE_ENV, "full")
    assert not config.get_settings().smoke


def test_seed_everything_makes_torch_and_numpy_repeatable():
    config.seed_everything(123)
    a = (torch.rand(3), np.random.rand(3))
    config.seed_everything(123)
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_pick_device_on_this_machine_and_preference():
    expected = "cuda" if torch.cuda.is_available() else None
    device = config.pick_device()
    assert device.type in ("cuda", "mps", "cpu")
    if expected:
        assert device.type == expected
    assert config.pick_device("cpu") == torch.device("cpu")


def test_cpu_threads_one_in_smoke_mode_and_overridable(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(config.MODE_ENV, "smoke")
        monkeypatch.delenv("XAI_COURSE_THREADS", raising=False)
        assert config.set_cpu_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("XAI_COURSE_THREADS", "2")
        assert config.set_cpu_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_describe_is_one_line_with_mode_reason_device_and_relative_data_dir(monkeypatch):
    monkeypatch.delenv(config.DATA_ENV, raising=False)
    monkeypatch.delenv(config.ROOT_ENV, raising=False)
    monkeypatch.setenv(config.MODE_ENV, "smoke")
    line = config.describe()
    assert "\n" not in line
    assert line.startswith("mode=smoke (set by XAI_COURSE_MODE=smoke) | device=")
    assert line.endswith("data dir=data")


def test_describe_for_a_notebook_gives_its_expected_time_and_how_to_change_the_mode(monkeypatch):
    monkeypatch.setenv(config.MODE_ENV, "smoke")
    lines = config.describe(notebook="02").splitlines()
    first, later = config.EXPECTED_SECONDS["smoke"]["02"]
    assert first is None and later < 90
    assert lines[1] == (
        f"expected time for notebook 02 in smoke mode: about {later:.0f} s when its data exist "
        "(measured on a 2-core laptop CPU)"
    )
    monkeypatch.setitem(config.EXPECTED_SECONDS, "smoke", {"02": (150.0, 61.0)})
    assert (
        config.describe(notebook="02")
        .splitlines()[1]
        .endswith(
            "about 2 min the first time (it makes its data), about 61 s when its data exist (measured on a 2-core "
            "laptop CPU)"
        )
    )
    assert lines[2].startswith('change the mode: os.environ["XAI_COURSE_MODE"] = "cpu"')
    monkeypatch.setenv(config.MODE_ENV, "full")
    report = config.describe(notebook="02")
    assert "expected time for notebook 02 in full mode: not measured for full mode" in report
    if config.pick_device().type == "cpu":
        assert "WARNING: full mode on a CPU" in report


def test_every_notebook_has_a_measured_time_in_smoke_and_cpu_mode():
    notebooks = sorted(p.name.split("_")[0] for p in (ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
    for mode in ("smoke", "cpu"):
        assert sorted(config.EXPECTED_SECONDS[mode]) == notebooks, mode
    assert all(
        first is not None and later is not None for first, later in config.EXPECTED_SECONDS["cpu"].values()
    )


def test_colab_detection_follows_google_colab_module(monkeypatch, tmp_path):
    assert config.is_colab() is False
    (tmp_path / "google" / "colab").mkdir(parents=True)
    (tmp_path / "google" / "__init__.py").write_text("")
    (tmp_path / "google" / "colab" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.invalidate_caches()
    monkeypatch.delitem(__import__("sys").modules, "google", raising=False)
    assert config.is_colab() is True


def test_package_versions_reports_missing():
    v = config.package_versions(("torch", "no-such-package-xyz"))
    assert v["torch"].startswith(torch.__version__.split("+")[0])
    assert v["no-such-package-xyz"] == "missing"


def test_usable_cpus_respects_affinity_and_a_container_quota(monkeypatch, tmp_path):
    monkeypatch.setattr(config.os, "cpu_count", lambda: 64)  # what a 2-vCPU pod on a big host reports
    if hasattr(config.os, "sched_getaffinity"):
        monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: set(range(64)))
    quota = tmp_path / "cpu.max"
    quota.write_text("200000 100000\n")  # 2 CPUs' worth of time per period
    assert config.usable_cpus(quota) == 2
    quota.write_text("50000 100000\n")  # half a CPU still gets one process
    assert config.usable_cpus(quota) == 1
    quota.write_text("max 100000\n")  # no quota
    assert config.usable_cpus(quota) == 64
    assert config.usable_cpus(tmp_path / "missing") == 64
    if hasattr(config.os, "sched_getaffinity"):
        monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: {0, 1, 2})  # taskset -c 0-2
        assert config.usable_cpus(tmp_path / "missing") == 3


@pytest.mark.parametrize("cwd", [".", "notebooks", "helpers", "TMP"])
def test_relative_paths_mean_the_same_folder_from_any_working_directory(monkeypatch, tmp_path, cwd):
    monkeypatch.chdir(tmp_path if cwd == "TMP" else ROOT / cwd)
    monkeypatch.delenv(config.ROOT_ENV, raising=False)
    monkeypatch.setenv(config.MODE_ENV, "smoke")
    monkeypatch.setenv(config.DATA_ENV, "my-data")
    monkeypatch.setenv(config.CACHE_ENV, "./build/../my-cache")
    s = config.get_settings()
    assert (s.root, s.data_dir, s.cache_dir) == (ROOT, ROOT / "my-data", ROOT / "my-cache" / "smoke")
    monkeypatch.setenv(config.ROOT_ENV, "course-copy")  # relative to the checkout, the others to the root
    s = config.get_settings()
    assert s.root == ROOT / "course-copy"
    assert (s.data_dir, s.cache_dir) == (
        ROOT / "course-copy" / "my-data",
        ROOT / "course-copy" / "my-cache" / "smoke",
    )


def test_home_and_absolute_paths_are_taken_as_they_are(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT / "notebooks")
    monkeypatch.setenv(config.MODE_ENV, "smoke")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv(config.DATA_ENV, "~/xai-data")
    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "cache"))
    s = config.get_settings()
    assert (s.data_dir, s.cache_dir) == (tmp_path / "home" / "xai-data", tmp_path / "cache" / "smoke")


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5", "two"])
def test_a_bad_thread_count_names_the_variable_its_value_and_what_is_allowed(monkeypatch, value):
    monkeypatch.setenv(config.MODE_ENV, "smoke")
    monkeypatch.setenv(config.THREADS_ENV, value)
    before = torch.get_num_threads()
    with pytest.raises(ValueError, match=rf"XAI_COURSE_THREADS='{re.escape(value)}' .*a positive integer"):
        config.set_cpu_threads()
    assert torch.get_num_threads() == before


def test_a_thread_count_may_have_spaces_and_empty_means_unset(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(config.MODE_ENV, "smoke")
        monkeypatch.setenv(config.THREADS_ENV, " 2 ")
        assert config.set_cpu_threads() == 2
        monkeypatch.setenv(config.THREADS_ENV, "")
        assert config.set_cpu_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(folder)``: chmod 0o555 the folder. As root (where chmod does not stop writes) the check
    ``os.access`` is told the same, so that the test still checks what a learner without root would see."""
    made = []

    def make(folder):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o555)
        made.append(folder)
        if os.access(folder, os.W_OK):  # root
            real_access = os.access
            monkeypatch.setattr(
                config.os,
                "access",
                lambda p, mode, **kw: (
                    False if Path(p) in made and mode & os.W_OK else real_access(p, mode, **kw)
                ),
            )
        return folder

    yield make
    for folder in made:
        folder.chmod(0o755)


def test_require_writable_names_the_folder_the_variable_and_the_fix(tmp_path, read_only):
    folder = read_only(tmp_path / "shared")
    config.require_writable(tmp_path, "cache", config.CACHE_ENV)  # writable: nothing happens
    config.require_writable(tmp_path / "new" / "deeper", "cache", config.CACHE_ENV)  # made when needed
    with pytest.raises(PermissionError) as info:
        config.require_writable(folder, "cache", config.CACHE_ENV)
    message = str(info.value)
    assert info.value.errno == errno.EACCES
    assert f"the cache folder {folder} is not writable" in message
    assert 'os.environ["XAI_COURSE_CACHE"] = "~/xai-course/cache"' in message and "writable" in message
    with pytest.raises(
        PermissionError, match=rf"does not exist and its parent {re.escape(str(folder))} is read-only"
    ):
        config.require_writable(folder / "smoke", "data", config.DATA_ENV)


@pytest.mark.parametrize("which", ["cache", "data"])
def test_describe_refuses_a_read_only_folder_before_any_work(monkeypatch, tmp_path, read_only, which):
    monkeypatch.setenv(config.MODE_ENV, "smoke")
    monkeypatch.setenv(config.DATA_ENV, str(tmp_path / "data"))
    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "cache"))
    config.describe()  # both writable
    folder = read_only(tmp_path / which)
    env = {"cache": config.CACHE_ENV, "data": config.DATA_ENV}[which]
    with pytest.raises(PermissionError, match=rf"the {which} folder {re.escape(str(folder))}.*{env}"):
        config.describe(notebook="02")


def test_a_read_only_data_folder_holding_only_real_downloads_is_fine(monkeypatch, tmp_path, read_only):
    monkeypatch.setenv(config.MODE_ENV, "smoke")
    monkeypatch.setenv(config.DATA_ENV, str(tmp_path / "data"))
    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "cache"))
    for name in ("rsna", "kermany", "icbhi"):
        (tmp_path / "data" / name).mkdir(parents=True)
    read_only(tmp_path / "data")
    assert "data=real: rsna, kermany, icbhi" in config.describe()
