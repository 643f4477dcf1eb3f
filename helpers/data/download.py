"""Download, verify and unpack the real data sets (RSNA, Kermany, ICBHI) and check what is there.

Taught in ``notebooks/00_setup.ipynb`` (where data lives); the command line is ``data_download.py``.

Every data set ends up in ``<dest>/<name>`` in the layout the notebooks expect, with a ``.complete`` marker
written last: a folder without it was never finished. Downloads stream to ``<dest>/downloads/<file>.part``
(resumed with an HTTP Range request when a run is interrupted) and are renamed only once their size and
checksum are right and they open as archives; an archive that does not open, or does not hold the data
set, is moved aside to ``<file>.bad-<timestamp>`` (also one left by an earlier run), so the next run
downloads it again instead of failing on the same file. Archives are checked member by member (no
absolute paths, no ``..``, no links that point outside, no device files) and unpacked into a temporary
folder next to the destination, which is renamed into place only when everything worked, so a failure
never leaves a half-extracted folder.
Every failure is a :class:`DownloadError` with a one-line message. The built-in synthetic sets are made
by :mod:`helpers.data.datasets` (``rsna_dir`` etc.); ``data_download.py synthetic`` calls those.

This module holds the data-set table (:data:`REMOTES`, :data:`KAGGLE_SOURCES`), the layouts, the checks
and :func:`fetch`; the machinery lives in :mod:`helpers.data.http_download` (HTTP, checksums, resume),
:mod:`helpers.data.archives` (safe extraction, staging) and :mod:`helpers.data.kaggle` (credentials, Kaggle
downloads). Import those names from where they live.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from helpers.data.archives import (
    MARKER,
    archive_problem,
    is_archive_name,
    is_complete,
    move_children,
    safe_extract,
    staged,
)
from helpers.data.http_download import (
    CorruptArchiveError,
    DownloadError,
    Log,
    download_file,
    moved_aside_if_corrupt,
    verify_file,
)
from helpers.data.kaggle import (
    CREDENTIALS_HELP,
    kaggle_credentials,
    kaggle_download,
    load_colab_kaggle_secrets,
)

ICBHI_BASE = "https://bhichallenge.med.auth.gr/sites/default/files/ICBHI_final_database/"


@dataclass(frozen=True)
class Remote:
    """One file on the web: where it is, what to call it and how to check it."""

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    verify_tls: bool = True


# Every address the course downloads from, in one place.
REMOTES: dict[str, Remote] = {
    # ~1.98 GB. The challenge site's TLS certificate has expired, so the certificate is not checked;
    # the archive is checked by its MD5 instead (the value reported for the public zip).
    "icbhi": Remote(
        ICBHI_BASE + "ICBHI_final_database.zip",
        "ICBHI_final_database.zip",
        md5="f6a5d0ea40bbcd25e17754f9d5ddae48",
        verify_tls=False,
    ),
    "icbhi_diagnosis": Remote(
        ICBHI_BASE + "ICBHI_Challenge_diagnosis.txt", "ICBHI_Challenge_diagnosis.txt", verify_tls=False
    ),
    "icbhi_split": Remote(
        ICBHI_BASE + "ICBHI_challenge_train_test.txt", "ICBHI_challenge_train_test.txt", verify_tls=False
    ),
    # Mendeley Data doi:10.17632/rscbjbr9sj.2, CC BY 4.0, ~1.2 GB (no published checksum).
    "kermany": Remote(
        "https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/"
        "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded",
        "ChestXRay2017.zip",
    ),
}
# (kind, handle) on Kaggle.
KAGGLE_SOURCES: dict[str, tuple[str, str]] = {
    "rsna": ("competition", "rsna-pneumonia-detection-challenge"),
    "kermany": ("dataset", "paultimothymooney/chest-xray-pneumonia"),
}
REAL_DATASETS = ("rsna", "kermany", "icbhi")
DATASETS = (*REAL_DATASETS, "synthetic")


# ---------------------------------------------------------------------------------------------- layouts
def _find_dir(root: Path, wanted: Callable[[Path], bool], max_depth: int = 3) -> Path | None:
    level = [root]
    for _ in range(max_depth + 1):
        for folder in level:
            if wanted(folder):
                return folder
        level = [c for f in level for c in sorted(f.iterdir()) if c.is_dir() and c.name != "__MACOSX"]
    return None


# What identifies each data set's folder inside an archive, and where it must end up (relative path).
LAYOUTS: dict[str, tuple[str, Callable[[Path], bool], str]] = {
    "rsna": ("stage_2_train_labels.csv", lambda d: (d / "stage_2_train_labels.csv").is_file(), "."),
    "kermany": (
        "chest_xray/{train,test}",
        lambda d: (d / "train").is_dir() and (d / "test").is_dir(),
        "chest_xray",
    ),
    "icbhi": ("*.wav recordings", lambda d: any(d.glob("*.wav")), "ICBHI_final_database"),
}


def arrange_layout(name: str, staging: Path, origin: str) -> None:
    """Move the data set's files to the agreed layout inside ``staging`` (archives nest them differently)."""
    what, wanted, rel = LAYOUTS[name]
    for junk in staging.glob("**/__MACOSX"):
        shutil.rmtree(junk, ignore_errors=True)
    found = _find_dir(staging, wanted)
    if found is None:
        raise CorruptArchiveError(
            f"corrupt archive {origin}: no {what} inside, so it is not the {name} data set"
        )
    target = (staging / rel).resolve()
    if found.resolve() == target:
        return
    aside = staging / ".layout"
    if found == staging:
        aside.mkdir()
        for child in sorted(staging.iterdir()):
            if child != aside:
                shutil.move(str(child), str(aside / child.name))
    else:
        os.replace(found, aside)
    if target == staging.resolve():
        move_children(aside, staging)
        aside.rmdir()
    else:
        os.replace(aside, target)
    for child in staging.iterdir():  # drop folders emptied by the move
        if child.is_dir() and not any(child.iterdir()):
            child.rmdir()


# ---------------------------------------------------------------------------------------------- checks
@dataclass(frozen=True)
class CheckItem:
    """One line of a check: ``found`` must equal ``expected`` (``None``: must be above zero)."""

    what: str
    expected: int | None
    found: int

    @property
    def ok(self) -> bool:
        return self.found == self.expected if self.expected is not None else self.found > 0

    def __str__(self) -> str:
        want = f"expected {self.expected:,}" if self.expected is not None else "expected some"
        return f"{'ok  ' if self.ok else 'FAIL'} {self.what}: {self.found:,} ({want})"


def _count(folder: Path, suffix: str) -> int:
    return sum(1 for p in folder.iterdir() if p.suffix.lower() == suffix) if folder.is_dir() else 0


def _lines(path: Path) -> list[str]:
    return (
        [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()] if path.is_file() else []
    )


def check_dataset(name: str, root: Path, *, synthetic: bool = False) -> list[CheckItem]:
    """Count what is in ``root`` against the published numbers (``synthetic=True``: internal consistency)."""
    root = Path(root)
    if name == "rsna":
        rows = [ln.split(",")[0] for ln in _lines(root / "stage_2_train_labels.csv")[1:]]
        classes = {ln.split(",")[0] for ln in _lines(root / "stage_2_detailed_class_info.csv")[1:]}
        patients = len(set(rows))
        return [
            CheckItem(
                "stage_2_train_images/*.dcm",
                patients if synthetic else 26_684,
                _count(root / "stage_2_train_images", ".dcm"),
            ),
            CheckItem("stage_2_train_labels.csv rows", None if synthetic else 30_227, len(rows)),
            CheckItem(
                "stage_2_detailed_class_info.csv patients", patients if synthetic else 26_684, len(classes)
            ),
        ]
    if name == "kermany":
        base = root / "chest_xray"
        items = []
        for split, expected in (("train+val", (1_349, 3_883)), ("test", (234, 390))):
            for label, want in zip(("NORMAL", "PNEUMONIA"), expected, strict=True):
                found = sum(_count(base / s / label, ".jpeg") for s in split.split("+"))
                items.append(
                    CheckItem(f"chest_xray/{split}/{label}/*.jpeg", None if synthetic else want, found)
                )
        return items
    if name == "icbhi":
        base = root / "ICBHI_final_database"
        wavs = {p.stem for p in base.glob("*.wav")} if base.is_dir() else set()
        annotated = sum(1 for p in base.glob("*.txt") if p.stem in wavs) if base.is_dir() else 0
        return [
            CheckItem("ICBHI_final_database/*.wav", None if synthetic else 920, len(wavs)),
            CheckItem("annotation .txt per recording", len(wavs), annotated),
            CheckItem(
                "ICBHI_Challenge_diagnosis.txt patients",
                None if synthetic else 126,
                len(_lines(root / "ICBHI_Challenge_diagnosis.txt")),
            ),
            CheckItem(
                "ICBHI_challenge_train_test.txt recordings",
                len(wavs) if synthetic else 920,
                len(_lines(root / "ICBHI_challenge_train_test.txt")),
            ),
        ]
    raise DownloadError(f"unknown dataset {name!r}: choose one of {', '.join(REAL_DATASETS)}")


# ---------------------------------------------------------------------------------------------- data sets
def normalise_dataset_name(dataset: str) -> str:
    """``dataset`` in lower case; an unknown name raises :class:`DownloadError` listing the known ones."""
    name = dataset.strip().lower()
    if name not in DATASETS:
        raise DownloadError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    return name


def _local_or_remote(
    remote: Remote, archive: Path | None, url: str | None, downloads: Path, log: Log
) -> tuple[Path, bool]:
    """The archive to extract and whether we downloaded it (and may delete it)."""
    if archive is not None:
        archive = Path(archive).expanduser()
        if not archive.is_file():
            raise DownloadError(f"archive not found: {archive}")
        if remote.md5 or remote.sha256 or remote.size:
            log(f"verifying {archive.name} ...")
            verify_file(archive, archive.name, md5=remote.md5, sha256=remote.sha256, size=remote.size)
        return archive, False
    if url is None and not remote.verify_tls:
        log(
            f"note: the TLS certificate of {urlsplit(remote.url).hostname} has expired, so it is not checked; "
            f"the download is verified by its {'MD5 ' + remote.md5 if remote.md5 else 'size and content'} instead"
        )
    verify_tls = remote.verify_tls or url is not None
    path = download_file(
        url or remote.url,
        downloads / remote.filename,
        md5=remote.md5,
        sha256=remote.sha256,
        size=remote.size,
        check=archive_problem if is_archive_name(remote.filename) else None,
        verify_tls=verify_tls,
        log=log,
    )
    return path, True


def _obtain(
    name: str, tmp: Path, downloads: Path, archive: Path | None, url: str | None, log: Log
) -> tuple[Path | None, list[Path]]:
    """Get the data set's archive (or, with kagglehub, its files straight into ``tmp``).

    Returns the archive to extract (``None`` when the files are already in ``tmp``) and the files this
    run downloaded (deleted after success unless the archive is to be kept).
    """
    if archive is not None or url is not None or name == "icbhi":
        remote = REMOTES.get(name) or Remote(url or "", f"{KAGGLE_SOURCES[name][1].split('/')[-1]}.zip")
        path, ours = _local_or_remote(remote, archive, url, downloads, log)
        return path, [path] if ours else []
    kind, handle = KAGGLE_SOURCES[name]
    load_colab_kaggle_secrets()
    if kind == "competition" and kaggle_credentials() is None:
        raise DownloadError(f"no Kaggle credentials found: {CREDENTIALS_HELP}")
    try:
        path = kaggle_download(kind, handle, tmp, downloads, log)
    except DownloadError as exc:
        if name != "kermany":
            raise
        log(f"Kaggle did not work ({exc}); trying Mendeley Data instead")
        for child in tmp.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        path, _ = _local_or_remote(REMOTES["kermany"], None, None, downloads, log)
    return path, [path] if path is not None else []


def _icbhi_text_files(tmp: Path, archive: Path | None, downloads: Path, log: Log) -> list[Path]:
    """Copy the diagnosis and split files into ``tmp``: from next to ``archive`` if there, else downloaded."""
    fetched = []
    for key in ("icbhi_diagnosis", "icbhi_split"):
        beside = Path(archive).expanduser().parent / REMOTES[key].filename if archive else None
        if beside is None or not beside.is_file():
            beside, _ = _local_or_remote(REMOTES[key], None, None, downloads, log)
            fetched.append(beside)
        shutil.copy2(beside, tmp / beside.name)
    return fetched


def fetch(
    dataset: str,
    dest: Path,
    *,
    archive: Path | None = None,
    url: str | None = None,
    keep_archive: bool = False,
    log: Log = print,
) -> Path:
    """Put a real data set (``rsna``, ``kermany``, ``icbhi``) into ``dest/<dataset>``; returns that folder.

    Sources, in order: ``archive`` (a local copy, verified when its checksum is known), ``url`` (a mirror),
    then the default (Kaggle for RSNA; Kaggle, then Mendeley Data for Kermany; the challenge site for
    ICBHI). Idempotent: a folder with the ``.complete`` marker is left alone. A missing layout is an error
    (and a downloaded archive without it is moved aside, see :func:`helpers.data.http_download.move_aside`);
    counts that differ from the published ones are only warned about (see :func:`check_dataset`).
    """
    name = normalise_dataset_name(dataset)
    if name == "synthetic":
        raise DownloadError(
            "the synthetic data sets are generated, not downloaded: helpers.data.datasets.rsna_dir() etc. "
            "(or `python data_download.py synthetic`) make them"
        )
    dest = Path(dest).expanduser()
    target, downloads = dest / name, dest / "downloads"
    if is_complete(target):
        log(f"{name}: already there in {target}; nothing to do")
        return target
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DownloadError(
            f"{target} exists but has no {MARKER} marker (unfinished, or not made by this script): "
            "move it away and run again, or verify it with --check"
        )
    with staged(target, str(archive or url or "default source"), log) as tmp:
        path, fetched = _obtain(name, tmp, downloads, archive, url, log)
        with moved_aside_if_corrupt(path if path in fetched else None):  # never a user's own --archive
            if path is not None:
                safe_extract(path, tmp)
            origin = path.name if path is not None else name
            arrange_layout(name, tmp, f"{origin} from {url}" if url else origin)
        if name == "icbhi":
            fetched += _icbhi_text_files(tmp, archive, downloads, log)
        for item in check_dataset(name, tmp):
            if not item.ok:
                log(f"warning: {item}")
    if not keep_archive:
        for path in fetched:
            path.unlink(missing_ok=True)
        if downloads.is_dir() and not any(downloads.iterdir()):
            downloads.rmdir()
    log(f"{name}: ready in {target}")
    return target
