"""Course configuration: the run mode, where data and caches live, device choice and seeding.

Taught in ``notebooks/00_setup.ipynb``. The mode is read from ONE environment variable,
``XAI_COURSE_MODE``, here and nowhere else:

- ``auto`` (the default): ``full`` where a CUDA GPU is available, ``cpu`` otherwise;
- ``full``: the paper's sizes (224 px, thousands of films, the real data when downloaded), made for a GPU;
- ``cpu``: a learner without a GPU: sized so that the whole course runs in about 15 minutes on a 2-core laptop,
  with ``layer4`` maps of 5 x 5 cells that point at the opacities, by the same code as ``full``;
- ``smoke``: tests and CI only (tiny data, a few steps). ``pytest`` sets it for the notebook kernels
  (``conftest.py``).

Paths are relative to the course root: the checkout that holds this package (``pyproject.toml`` next to
``helpers/``), or the current working directory when the package was pip-installed (Colab). Each path
can be overridden with an environment variable:

- ``XAI_COURSE_ROOT``: the course root.
- ``XAI_COURSE_DATA``: raw data (real downloads under ``rsna/``, ``kermany/``, ``icbhi/``; the built-in
  synthetic sets under ``synthetic-<mode>/``).
- ``XAI_COURSE_CACHE``: derived artefacts (preprocessed stores, checkpoints), one folder per mode so that
  smoke-test artefacts never mix with real ones.

``~`` is expanded, and a relative value is taken against the course root (``XAI_COURSE_ROOT`` itself: against
the checkout, or the current directory when pip-installed), never against the current directory: a notebook
(running in ``notebooks/``) and a script started from the repository root mean the same folder
(``XAI_COURSE_DATA=data`` is the default data folder, wherever Python runs). :func:`describe`, the report at the top of every
notebook, checks that the folders the course writes to are writable (:func:`require_writable`).
``XAI_COURSE_THREADS`` (a positive integer) sets the torch CPU threads (:func:`set_cpu_threads`).

Nothing is cached between calls: :func:`get_settings` reads the environment each time.

torch is imported inside the functions that need it (the device, seeding, threads, and the ``auto`` mode's
question "is there a CUDA GPU?"), so that importing this module, which everything does, stays fast.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import random
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

MODE_ENV = "XAI_COURSE_MODE"
ROOT_ENV = "XAI_COURSE_ROOT"
DATA_ENV = "XAI_COURSE_DATA"
CACHE_ENV = "XAI_COURSE_CACHE"
THREADS_ENV = "XAI_COURSE_THREADS"
MODES = ("smoke", "cpu", "full")
AUTO = "auto"

# Public address of the course repository: the Colab badges and the Colab setup cell read it from here.
REPO_URL = "https://github.com/xai-lung-course/xai-lung-course"
REPO_BRANCH = "main"


@dataclass(frozen=True)
class Sizes:
    """The sizes that differ between the modes."""

    rsna_patients: int  # synthetic RSNA-like patients to generate
    dicom_size: int  # side of the synthetic DICOM images, in pixels (real RSNA: 1024)
    image_size: int  # side of the preprocessed training images (the paper: 224)
    icbhi_patients: int  # synthetic ICBHI-like patients to generate
    epochs: int  # training epochs for the X-ray model
    batch_size: int
    audio_epochs: int  # training epochs for the breath-sound model


SMOKE_SIZES = Sizes(
    rsna_patients=160,
    dicom_size=256,
    image_size=64,
    icbhi_patients=8,
    epochs=5,
    batch_size=32,
    audio_epochs=4,
)
#: Measured on a 2-core CPU (benchmarks/bench_cpu_mode.py): 160 px gives layer4 maps of 5 x 5 cells.
CPU_SIZES = Sizes(
    rsna_patients=800,
    dicom_size=512,
    image_size=160,
    icbhi_patients=24,
    epochs=4,
    batch_size=32,
    audio_epochs=10,
)
FULL_SIZES = Sizes(
    rsna_patients=3000,
    dicom_size=1024,
    image_size=224,
    icbhi_patients=40,
    epochs=12,
    batch_size=64,
    audio_epochs=15,
)


@dataclass(frozen=True)
class Settings:
    """Everything a notebook needs to know about where it runs. Build it with :func:`get_settings`."""

    mode: str
    root: Path
    data_dir: Path
    cache_dir: Path
    sizes: Sizes
    mode_reason: str = ""  # why this mode: set by the environment, or chosen by auto

    @property
    def smoke(self) -> bool:
        return self.mode == "smoke"

    @property
    def synthetic_dir(self) -> Path:
        """Where the built-in synthetic data sets of this mode live."""
        return self.data_dir / f"synthetic-{self.mode}"

    def real_dir(self, dataset: str) -> Path:
        """Where ``data_download.py`` puts a real data set (``rsna``, ``kermany`` or ``icbhi``)."""
        return self.data_dir / dataset


def _checkout() -> Path | None:
    """The repository holding this package (``pyproject.toml`` beside ``helpers/``), None when pip-installed."""
    checkout = Path(__file__).resolve().parent.parent
    return checkout if (checkout / "pyproject.toml").is_file() and (checkout / "notebooks").is_dir() else None


def _env_path(name: str, base: Path) -> Path | None:
    """The folder ``$name`` names (``~`` expanded, a relative one taken against ``base``), None when unset."""
    value = os.environ.get(name, "").strip()
    return (base / Path(value).expanduser()).resolve() if value else None


def find_root() -> Path:
    """The course root: ``$XAI_COURSE_ROOT``, else the checkout holding this package, else the cwd.

    A relative ``$XAI_COURSE_ROOT`` is taken against the checkout (the cwd when pip-installed).
    """
    base = _checkout() or Path.cwd().resolve()
    return _env_path(ROOT_ENV, base) or base


def choose_mode() -> tuple[str, str]:
    """``(mode, reason)`` from ``$XAI_COURSE_MODE``: ``auto`` (the default) picks ``full`` where CUDA is available
    and ``cpu`` otherwise; ``smoke``, ``cpu`` and ``full`` are taken as set."""
    asked = os.environ.get(MODE_ENV, AUTO).strip().lower() or AUTO
    if asked == AUTO:
        import torch

        if torch.cuda.is_available():  # asks the driver only: no CUDA context, no GPU memory taken
            return "full", "chosen automatically: a CUDA GPU is available"
        return "cpu", "chosen automatically: no CUDA GPU, so the lesson is sized for this CPU"
    if asked not in MODES:
        raise ValueError(f"{MODE_ENV}={asked!r} is not a mode; expected one of {', '.join((AUTO, *MODES))}")
    return asked, f"set by {MODE_ENV}={asked}"


def get_mode() -> str:
    """The run mode (``smoke``, ``cpu`` or ``full``), see :func:`choose_mode`."""
    return choose_mode()[0]


def get_settings() -> Settings:
    """Read the mode and paths from the environment (fresh on every call; nothing is cached).

    Relative ``$XAI_COURSE_DATA`` / ``$XAI_COURSE_CACHE`` are taken against the course root, not the cwd.
    """
    mode, reason = choose_mode()
    root = find_root()
    data_dir = _env_path(DATA_ENV, root) or (root / "data").resolve()
    cache_root = _env_path(CACHE_ENV, root) or (root / "cache").resolve()
    sizes = {"smoke": SMOKE_SIZES, "cpu": CPU_SIZES, "full": FULL_SIZES}[mode]
    return Settings(mode, root, data_dir, cache_root / mode, sizes, reason)


def pick_device(prefer: str | None = None):
    """The best available ``torch.device``: CUDA, then Apple MPS, then CPU (or ``prefer`` if given)."""
    import torch

    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (all devices) so that a run can be repeated."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_cpu_threads(settings: Settings | None = None) -> int:
    """Pick the number of torch CPU threads deliberately and return it.

    On a busy 2-core machine two threads contend with everything else and training gets several times
    slower, while one thread barely loses (measured for the course), so smoke mode uses one thread.
    ``$XAI_COURSE_THREADS`` (a positive integer) overrides the choice.
    """
    import torch

    settings = settings or get_settings()
    env = positive_int_env(THREADS_ENV, "the number of torch CPU threads, e.g. 1 or 2")
    if env is not None:
        n = env
    elif settings.smoke:
        n = 1
    else:
        n = usable_cpus()
    torch.set_num_threads(n)
    return n


def positive_int_env(name: str, meaning: str) -> int | None:
    """``$name`` as a positive integer, None when unset or empty; a ValueError naming it and its value otherwise."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(
            f"{name}={value!r} is not allowed: it must be a positive integer ({meaning}); fix or unset it"
        )
    return number


def require_writable(folder: str | os.PathLike, what: str, env: str) -> None:
    """Raise PermissionError naming ``folder``, ``env`` (the variable that moves it) and the fix, unless this
    process can create files in ``folder`` (or, when it does not exist yet, in its nearest existing parent)."""
    folder = Path(folder).absolute()
    probe = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if probe is None or os.access(probe, os.W_OK | os.X_OK):
        return
    blocked = "it is" if probe == folder else f"it does not exist and its parent {probe} is"
    raise PermissionError(
        errno.EACCES,
        f"the {what} folder {folder} is not writable: {blocked} read-only for this user. Set {env} to a folder "
        f'you can write to (os.environ["{env}"] = "~/xai-course/{what}" in the first cell, or export '
        f"it before starting Jupyter), or make the folder writable, then run again",
    )


def check_writable(settings: Settings) -> None:
    """:func:`require_writable` for the folders the course writes to: the cache, and the data folder unless
    every data set there is a real download (then only read)."""
    require_writable(settings.cache_dir, "cache", CACHE_ENV)
    if not all(settings.real_dir(d).is_dir() for d in ("rsna", "kermany", "icbhi")):
        require_writable(settings.synthetic_dir, "data", DATA_ENV)


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2 CPU quota: "<quota> <period>" or "max <period>"


def usable_cpus(cgroup_cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """How many CPU cores this process may really use: ``os.cpu_count()`` capped by the CPU affinity mask
    and by a container's CPU quota (cgroup v2), rounded down, at least 1.

    ``os.cpu_count()`` alone reports the host's cores inside Docker, JupyterHub or Binder (e.g. 64 on a pod
    limited to 2 vCPUs); starting a process per reported core then makes everything slower.
    """
    count = os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        count = min(count, len(os.sched_getaffinity(0)) or count)
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            count = min(count, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota here (or unreadable): nothing to cap
    return max(1, count)


def is_colab() -> bool:
    """True inside Google Colab (the ``google.colab`` module can be imported)."""

    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):
        return False


#: Seconds per notebook as ``(first run, later runs)``, measured by ``python -m helpers.course.run_notebooks --mode
#: <mode>`` on a 2-core CPU: the first run with empty ``data/`` and ``cache/`` (it makes what it needs), later runs
#: reuse them. None: not measured. Full mode has no figure: it was not measured on a GPU.
EXPECTED_SECONDS: dict[str, dict[str, tuple[float | None, float | None]]] = {
    "smoke": {
        "00": (None, 5),
        "01": (None, 14),
        "02": (None, 10),
        "03": (None, 11),
        "04": (None, 13),
        "05": (None, 21),
        "05b": (None, 61),
        "06": (None, 17),
        "07": (None, 15),
        "08": (None, 26),
    },
    "cpu": {
        "00": (48, 5),
        "01": (27, 17),
        "02": (102, 17),
        "03": (16, 18),
        "04": (20, 22),
        "05": (185, 67),
        "05b": (309, 322),
        "06": (97, 83),
        "07": (65, 16),
        "08": (53, 26),
    },
}


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def expected_time(settings: Settings, notebook: str) -> str:
    """How long ``notebook`` (``"02"``) is expected to take in this mode, as a phrase for the report."""
    first, later = EXPECTED_SECONDS.get(settings.mode, {}).get(notebook, (None, None))
    if first is None and later is None:
        return f"not measured for {settings.mode} mode"
    parts = [f"about {_duration(first)} the first time (it makes its data)"] if first is not None else []
    parts += [f"about {_duration(later)} when its data exist"] if later is not None else []
    return ", ".join(parts) + " (measured on a 2-core laptop CPU)"


def describe(settings: Settings | None = None, notebook: str | None = None) -> str:
    """The report every notebook prints at the top: the mode and why, the device, the data in use; with
    ``notebook`` (``"02"``) also how long it is expected to take and the one line that changes the mode.
    Raises PermissionError, naming the folder and the variable that moves it, when the cache or data folder is
    read-only (:func:`check_writable`), before any work starts."""
    settings = settings or get_settings()
    check_writable(settings)
    device = pick_device()
    real = [d for d in ("rsna", "kermany", "icbhi") if settings.real_dir(d).is_dir()]
    data = "real: " + ", ".join(real) if real else "built-in synthetic data"
    lines = [
        f"mode={settings.mode} ({settings.mode_reason or 'set directly'}) | device={device.type} | data={data} "
        f"| data dir={display_path(settings.data_dir, settings)}"
    ]
    if notebook is not None:
        lines.append(
            f"expected time for notebook {notebook} in {settings.mode} mode: {expected_time(settings, notebook)}"
        )
        lines.append(
            f'change the mode: os.environ["{MODE_ENV}"] = "cpu" (or "full", "smoke") in the first cell, '
            f"or {MODE_ENV}=cpu jupyter lab"
        )
    if settings.mode == "full" and device.type == "cpu":
        lines.append(
            "WARNING: full mode on a CPU trains ResNet18 at 224 px for many minutes per epoch; "
            f"{MODE_ENV}=cpu gives the same lesson in minutes (training prints its estimate before it starts)"
        )
    return "\n".join(lines)


def display_path(path: Path, settings: Settings | None = None) -> str:
    """``path`` relative to the course root when it lies inside it (what notebooks print), else as is."""
    settings = settings or get_settings()
    try:
        return str(Path(path).resolve().relative_to(settings.root))
    except ValueError:
        return str(path)


def package_versions(
    names: tuple[str, ...] = (
        "torch",
        "torchvision",
        "numpy",
        "pandas",
        "scikit-learn",
        "matplotlib",
        "seaborn",
        "pydicom",
        "pillow",
        "librosa",
        "soundfile",
        "ipywidgets",
        "torchxrayvision",
        "nbval",
    ),
) -> dict[str, str]:
    """Installed versions of the packages the course uses (``"missing"`` for any that is not installed)."""

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out
