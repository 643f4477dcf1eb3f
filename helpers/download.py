"""Download, verify and unpack the real data sets (RSNA, Kermany, ICBHI) and check what is there.

Taught in ``notebooks/00_setup.ipynb`` (where data lives); the command line is ``data_download.py``.

Every data set ends up in ``<dest>/<name>`` in the layout the notebooks expect, with a ``.complete`` marker
written last: a folder without it was never finished. Downloads stream to ``<dest>/downloads/<file>.part``
(resumed with an HTTP Range request when a run is interrupted) and are renamed only once their size and
checksum are right. Archives are checked member by member (no absolute paths, no ``..``, no links that
point outside, no device files) and unpacked into a temporary folder next to the destination, which is
renamed into place only when everything worked, so a failure never leaves a half-extracted folder.
Every failure is a :class:`DownloadError` with a one-line message. The built-in synthetic sets are made
by :mod:`helpers.datasets` (``rsna_dir`` etc.); ``data_download.py synthetic`` calls those.
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import json
import os
import re
import shutil
import ssl
import stat
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from tqdm.auto import tqdm

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
RSNA_RULES_URL = "https://www.kaggle.com/competitions/rsna-pneumonia-detection-challenge/rules"
REAL_DATASETS = ("rsna", "kermany", "icbhi")
DATASETS = (*REAL_DATASETS, "synthetic")
MARKER = ".complete"
CREDENTIALS_HELP = (
    "create an API token at https://www.kaggle.com/settings and set KAGGLE_API_TOKEN (environment variable "
    "or Colab secret) or save it in ~/.kaggle/access_token; older keys: KAGGLE_USERNAME + KAGGLE_KEY or "
    "~/.kaggle/kaggle.json"
)
Log = Callable[[str], None]


class DownloadError(RuntimeError, ValueError):
    """A download, check or extraction failed; the message is one line that says what to do."""


# ---------------------------------------------------------------------------------------------- HTTP
def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def ensure_free_space(folder: Path, needed: int, what: str) -> None:
    """Raise :class:`DownloadError` ("disk full") when ``folder``'s disk has less than ``needed`` bytes free."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DownloadError(f"disk full: {what} needs {_gb(needed)} but only {_gb(free)} is free in {folder}")


def _network_error(url: str, exc: BaseException) -> DownloadError:
    host = urlsplit(url).hostname or url
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ssl.SSLCertVerificationError):
        return DownloadError(f"the TLS certificate of {host} could not be verified ({reason.verify_message})")
    return DownloadError(
        f"no network: cannot reach {host} ({reason}); check the connection, or use --archive FILE with a "
        "local copy or --url with a mirror"
    )


def _open(url: str, offset: int, verify_tls: bool, timeout: float):
    headers = {"User-Agent": "xai-lung-course-downloader", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    context = ssl.create_default_context()
    if not verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return urllib.request.urlopen(
        urllib.request.Request(url, headers=headers), timeout=timeout, context=context
    )


def file_digests(path: Path, chunk_size: int = 1 << 22) -> dict[str, str]:
    """MD5 and SHA-256 of a file, read once in chunks: ``{"md5": hex, "sha256": hex}``."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            md5.update(chunk)
            sha.update(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def verify_file(
    path: Path, name: str, *, md5: str | None = None, sha256: str | None = None, size: int | None = None
) -> None:
    """Check a file's size and checksums where known; a mismatch raises :class:`DownloadError` naming ``name``."""
    got_size = path.stat().st_size
    if size is not None and got_size != size:
        raise DownloadError(f"size mismatch for {name}: expected {size} bytes, got {got_size}")
    if md5 or sha256:
        got = file_digests(path)
        for algo, want in (("md5", md5), ("sha256", sha256)):
            if want and got[algo] != want.lower():
                raise DownloadError(
                    f"checksum mismatch for {name}: expected {algo} {want.lower()}, got {got[algo]}"
                )


def download_file(
    url: str,
    dest: Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    verify_tls: bool = True,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
    log: Log = print,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a previous ``.part``; returns ``dest``.

    The file is renamed to ``dest`` only when complete and verified; a checksum mismatch deletes the
    ``.part``; an interrupted transfer keeps it for the next run. An existing ``dest`` is returned as is.
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for _attempt in range(2):
        offset = part.stat().st_size if part.is_file() else 0
        try:
            response = _open(url, offset, verify_tls, timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # nothing left to send: complete, or not a prefix of this file
                if exc.headers.get("Content-Range", "") == f"bytes */{offset}":
                    break
                part.unlink()
                continue
            raise DownloadError(f"HTTP {exc.code} {exc.reason} for {dest.name} from {url}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise _network_error(url, exc) from None
        with response:
            _stream(response, part, offset, dest.name, size, chunk_size, log)
        break
    try:
        verify_file(part, dest.name, md5=md5, sha256=sha256, size=size)
    except DownloadError:
        part.unlink()
        raise
    os.replace(part, dest)
    return dest


def _stream(
    response, part: Path, offset: int, name: str, size: int | None, chunk_size: int, log: Log
) -> None:
    """Append (HTTP 206) or rewrite (HTTP 200) ``part`` from an open response, with a progress bar."""
    if offset and response.status == 206:
        content_range = response.headers.get("Content-Range", "")
        if not content_range.startswith(f"bytes {offset}-"):
            raise DownloadError(
                f"bad resume of {name}: asked for bytes {offset}-, server sent {content_range!r}"
            )
        log(f"resuming {name} at {_gb(offset)}")
    elif offset:
        log(f"the server ignored the resume request: downloading {name} again from the start")
        offset = 0
    length = response.headers.get("Content-Length")
    remaining = int(length) if length is not None else None
    if remaining is not None:
        ensure_free_space(part.parent, remaining, f"downloading {name}")
    total = offset + remaining if remaining is not None else size
    received = 0
    try:
        with (
            open(part, "ab" if offset else "wb") as fh,
            tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=name) as bar,
        ):
            while chunk := response.read(chunk_size):
                fh.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DownloadError(
                f"disk full while writing {part}: free some space and run again to resume"
            ) from None
        raise DownloadError(
            f"download of {name} interrupted ({exc}): run the same command again to resume"
        ) from None
    if remaining is not None and received < remaining:
        raise DownloadError(
            f"download of {name} interrupted after {offset + received} of {offset + remaining} bytes: "
            "run the same command again to resume"
        )


# ---------------------------------------------------------------------------------------------- archives
def _unsafe(archive: Path, member: str, why: str) -> DownloadError:
    return DownloadError(f"unsafe archive {archive.name}: member {member!r} {why}; nothing was extracted")


def _inside(root: str, path: str) -> bool:
    path = os.path.normpath(path)
    return path == root or path.startswith(root + os.sep)


def _check_name(archive: Path, name: str) -> None:
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise _unsafe(archive, name, "has an absolute path")
    if ".." in posix.parts:
        raise _unsafe(archive, name, "climbs out of the destination with '..'")


def _check_link(archive: Path, root: str, name: str, target: str, hard: bool) -> None:
    base = root if hard else os.path.join(root, os.path.dirname(name))
    if os.path.isabs(target) or not _inside(root, os.path.join(base, target)):
        raise _unsafe(archive, name, f"is a link to {target!r}, outside the destination")


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract a zip or tar archive into the existing folder ``dest`` after checking every member.

    Rejects absolute paths, ``..`` members, links pointing outside ``dest`` and device files before
    writing anything; an unreadable archive raises :class:`DownloadError` ("corrupt archive").
    """
    archive, dest = Path(archive), Path(dest)
    root = os.path.normpath(os.path.abspath(dest))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                for info in infos:
                    _check_name(archive, info.filename)
                    if stat.S_ISLNK(info.external_attr >> 16):
                        target = zf.read(info).decode("utf-8", "replace")
                        _check_link(archive, root, info.filename, target, hard=False)
                ensure_free_space(dest, sum(i.file_size for i in infos), f"extracting {archive.name}")
                zf.extractall(dest)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for m in members:
                    _check_name(archive, m.name)
                    if m.isdev():
                        raise _unsafe(archive, m.name, "is a device file")
                    if m.issym() or m.islnk():
                        _check_link(archive, root, m.name, m.linkname, hard=m.islnk())
                ensure_free_space(dest, sum(m.size for m in members), f"extracting {archive.name}")
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tf.extractall(dest, members=members, **extra)
        else:
            raise DownloadError(f"corrupt archive {archive.name}: neither a zip nor a tar file")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        if isinstance(exc, getattr(tarfile, "FilterError", ())):
            raise DownloadError(f"unsafe archive {archive.name}: {exc}; nothing was kept") from None
        raise DownloadError(f"corrupt archive {archive.name}: {exc}") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DownloadError(f"disk full while extracting {archive.name} into {dest.parent}") from None
        raise
    return dest


def is_complete(folder: Path) -> bool:
    """True when ``folder`` was finished by this module (it holds the ``.complete`` marker)."""
    return (Path(folder) / MARKER).is_file()


@contextmanager
def staged(target: Path, source: str, log: Log = print) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``target``; on success mark it complete and rename it to
    ``target``, on any failure delete it. Leftovers of a killed earlier run are removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.partial-*"):
        log(f"removing the unfinished {stale.name} of an earlier run")
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a data folder is readable like any other
    try:
        yield tmp
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        (tmp / MARKER).write_text(json.dumps({"source": source, "completed": stamp}) + "\n")
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def download_and_extract(
    url: str,
    target: Path,
    *,
    filename: str | None = None,
    md5: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    verify_tls: bool = True,
    downloads: Path | None = None,
    keep_archive: bool = False,
    log: Log = print,
) -> Path:
    """Download an archive (resumable, verified) and extract it safely into ``target``; returns ``target``.

    Idempotent: a ``target`` holding the ``.complete`` marker is left alone. The archive is kept in
    ``downloads`` (default: ``target.parent / "downloads"``) only with ``keep_archive=True``.
    """
    target = Path(target)
    if is_complete(target):
        log(f"{target.name}: already there in {target}; nothing to do")
        return target
    filename = filename or os.path.basename(urlsplit(url).path) or f"{target.name}.archive"
    downloads = Path(downloads) if downloads else target.parent / "downloads"
    archive = download_file(
        url, downloads / filename, md5=md5, sha256=sha256, size=size, verify_tls=verify_tls, log=log
    )
    with staged(target, url, log) as tmp:
        safe_extract(archive, tmp)
    if not keep_archive:
        archive.unlink()
    return target


# ---------------------------------------------------------------------------------------------- Kaggle
def load_colab_kaggle_secrets() -> list[str]:
    """Copy ``KAGGLE_API_TOKEN`` / ``KAGGLE_USERNAME`` / ``KAGGLE_KEY`` from Colab secrets into ``os.environ``.

    Only names not already set are read (via ``google.colab.userdata.get``); returns the names copied.
    Outside Colab, or without notebook access to the secret, nothing happens.
    """
    try:
        from google.colab import userdata  # type: ignore[import-not-found]
    except ImportError:
        return []
    loaded = []
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        if os.environ.get(name):
            continue
        try:
            value = userdata.get(name)
        except Exception:  # SecretNotFoundError, NotebookAccessError, ...
            continue
        if value:
            os.environ[name] = str(value).strip()
            loaded.append(name)
    return loaded


def kaggle_credentials() -> str | None:
    """Where Kaggle credentials would come from (env var or file), or ``None`` when there are none."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    folder = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    for name in ("access_token", "kaggle.json"):
        if (folder / name).is_file():
            return str(folder / name)
    return "Kaggle notebook" if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") else None


def _http_status(exc: BaseException | None) -> int | None:
    while exc is not None:
        for value in (
            getattr(getattr(exc, "response", None), "status_code", None),
            getattr(exc, "code", None),
        ):
            if isinstance(value, int):
                return value
        exc = exc.__cause__ or exc.__context__
    return None


def kaggle_error(exc: BaseException | str, kind: str, handle: str) -> DownloadError:
    """Turn a kagglehub exception or ``kaggle`` CLI output into a one-line :class:`DownloadError`.

    401 (or missing credentials) -> how to set credentials; 403 on a competition -> accept the rules.
    """
    text = str(exc)
    status = None if isinstance(exc, str) else _http_status(exc)
    if status is None and (found := re.search(r"\b(401|403)\b", text)):
        status = int(found.group(1))
    if status == 403 and kind == "competition":
        return DownloadError(
            f"Kaggle refused the download of {handle} (HTTP 403): accept the competition rules first at "
            f"{RSNA_RULES_URL if 'rsna' in handle else f'https://www.kaggle.com/competitions/{handle}/rules'}"
            ", signed in as the account of your API token, then run again"
        )
    name = "" if isinstance(exc, str) else type(exc).__name__
    if (
        status in (401, 403)
        or name in ("CredentialError", "UnauthenticatedError")
        or re.search(r"credential|kaggle\.json|unauthori[sz]ed", text, re.IGNORECASE)
    ):
        return DownloadError(f"no valid Kaggle credentials (HTTP {status or 401}): {CREDENTIALS_HELP}")
    if isinstance(exc, OSError) or "ConnectionError" in name:
        return DownloadError(
            f"no network: cannot reach kaggle.com ({text.splitlines()[0] if text else name})"
        )
    first = next((line.strip() for line in text.splitlines() if line.strip()), name)
    return DownloadError(f"Kaggle download of {handle} failed: {first}")


def _move_children(src: Path, dest: Path) -> None:
    for child in sorted(src.iterdir()):
        shutil.move(str(child), str(dest / child.name))


def kaggle_download(kind: str, handle: str, staging: Path, downloads: Path, log: Log = print) -> Path | None:
    """Fetch a Kaggle competition or dataset: with kagglehub into ``staging`` (returns ``None``), else with the
    ``kaggle`` CLI as a zip in ``downloads`` (returns the zip). Errors become :class:`DownloadError`."""
    try:
        import kagglehub  # type: ignore[import-not-found]
    except ImportError:
        kagglehub = None
    if kagglehub is not None:
        get = kagglehub.competition_download if kind == "competition" else kagglehub.dataset_download
        try:
            takes_output_dir = "output_dir" in inspect.signature(get).parameters
        except (TypeError, ValueError):
            takes_output_dir = False
        try:
            path = Path(get(handle, output_dir=str(staging)) if takes_output_dir else get(handle))
        except Exception as exc:
            raise kaggle_error(exc, kind, handle) from None
        if path.resolve() != staging.resolve():  # an older kagglehub (no output_dir) used its cache
            log(f"moving {handle} from the kagglehub cache ({path}) into place")
            _move_children(path, staging)
        return None
    exe = shutil.which("kaggle")
    if exe is None:
        raise DownloadError(
            "neither kagglehub nor the kaggle command is installed: pip install kagglehub (Colab has it), "
            "or copy the archive from someone who has it and use --archive FILE"
        )
    downloads.mkdir(parents=True, exist_ok=True)
    flag = ["competitions", "download", "-c"] if kind == "competition" else ["datasets", "download", "-d"]
    proc = subprocess.Popen(
        [exe, *flag, handle, "-p", str(downloads)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in proc.stdout or []:
        log(line.rstrip())
        lines.append(line)
    archive = downloads / f"{handle.split('/')[-1]}.zip"
    if proc.wait() != 0 or not archive.is_file():
        raise kaggle_error("".join(lines[-20:]) or f"kaggle exited with code {proc.returncode}", kind, handle)
    return archive


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
        raise DownloadError(f"corrupt archive {origin}: no {what} inside, so it is not the {name} data set")
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
        _move_children(aside, staging)
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
    ICBHI). Idempotent: a folder with the ``.complete`` marker is left alone. A missing layout is an error;
    counts that differ from the published ones are only warned about (see :func:`check_dataset`).
    """
    name = normalise_dataset_name(dataset)
    if name == "synthetic":
        raise DownloadError(
            "the synthetic data sets are generated, not downloaded: helpers.datasets.rsna_dir() etc. "
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
    origin = Path(archive).name if archive else (url or name)
    with staged(target, str(archive or url or "default source"), log) as tmp:
        path, fetched = _obtain(name, tmp, downloads, archive, url, log)
        if path is not None:
            safe_extract(path, tmp)
        arrange_layout(name, tmp, origin)
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
