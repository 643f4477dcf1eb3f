"""helpers.data.download (with helpers.data.http_download, archives and kaggle) and data_download.py
against a local HTTP server (127.0.0.1, never the internet)."""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import io
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import threading
import types
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers.config import get_settings
from helpers.data import archives, download, http_download, kaggle
from helpers.data.download import Remote
from helpers.data.http_download import DownloadError

ROOT = Path(__file__).resolve().parents[1]
HTML = b"<!DOCTYPE html>\n<html><body>Too many requests, try again later</body></html>\n"
KERMANY = {"chest_xray/train/NORMAL/IM-1.jpeg": b"jpg", "chest_xray/test/PNEUMONIA/IM-2.jpeg": b"jpg"}
PAYLOAD = {"pack/a.txt": b"alpha\n" * 1000, "pack/sub/b.bin": bytes(range(256)) * 64, "pack/empty.txt": b""}


def _load_cli():
    spec = importlib.util.spec_from_file_location("data_download", ROOT / "data_download.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_bytes(members: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra:
            tf.addfile(info)
    return buf.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.files`` (with ``server.types[path]`` as Content-Type where given); honours ``Range``
    unless ``server.ignore_range``; ``server.range_from_zero`` answers a ``Range`` request with 206 and the
    whole file (a Content-Range that starts at 0); ``server.cut_after`` makes the next response stop after
    that many bytes (a dropped connection)."""

    def do_GET(self):  # noqa: N802 - the http.server API
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start, wanted = 0, self.headers.get("Range")
        if wanted and not srv.ignore_range:
            start = 0 if srv.range_from_zero else int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        data = body[start:]
        if self.path in srv.types:
            self.send_header("Content-Type", srv.types[self.path])
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if srv.cut_after is not None:
            data, srv.cut_after = data[: srv.cut_after], None
            self.close_connection = True
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.requests, httpd.cut_after, httpd.ignore_range = {}, [], None, False
    httpd.types, httpd.range_from_zero = {}, False
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def logs():
    lines: list[str] = []
    return lines


# ---------------------------------------------------------------------------------------------- HTTP path
@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_complete_download_is_verified_extracted_and_cleaned_up(server, tmp_path, logs, kind):
    data = zip_bytes(PAYLOAD) if kind == "zip" else tar_bytes(PAYLOAD)
    server.files[f"/d.{kind}"] = data
    target = tmp_path / "data" / "set"
    out = archives.download_and_extract(
        f"{server.url}/d.{kind}",
        target,
        md5=md5(data),
        sha256=hashlib.sha256(data).hexdigest(),
        log=logs.append,
    )
    assert out == target
    for name, content in PAYLOAD.items():
        assert (target / name).read_bytes() == content
    assert files_under(tmp_path) == sorted(["data/set/.complete", *(f"data/set/{n}" for n in PAYLOAD)])
    assert server.requests == [(f"/d.{kind}", None)]


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path, logs):
    data = bytes(range(256)) * 400  # 102,400 bytes
    server.files["/big.bin"] = data
    server.cut_after = 30_000
    dest = tmp_path / "big.bin"
    with pytest.raises(DownloadError, match=r"^download of big.bin interrupted after 30000 of 102400 bytes"):
        http_download.download_file(
            f"{server.url}/big.bin", dest, md5=md5(data), chunk_size=4096, log=logs.append
        )
    assert not dest.exists() and (tmp_path / "big.bin.part").read_bytes() == data[:30_000]
    http_download.download_file(
        f"{server.url}/big.bin", dest, md5=md5(data), chunk_size=4096, log=logs.append
    )
    assert server.requests == [("/big.bin", None), ("/big.bin", "bytes=30000-")]
    assert dest.read_bytes() == data
    assert not (tmp_path / "big.bin.part").exists()
    assert any("resuming big.bin" in line for line in logs)


def test_server_that_ignores_range_restarts_cleanly(server, tmp_path, logs):
    data = b"0123456789" * 5000
    server.files["/f.bin"] = data
    server.cut_after = 12_345
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="interrupted"):
        http_download.download_file(f"{server.url}/f.bin", dest, log=logs.append)
    server.ignore_range = True
    http_download.download_file(f"{server.url}/f.bin", dest, size=len(data), log=logs.append)
    assert server.requests[1] == ("/f.bin", "bytes=12345-")
    assert dest.read_bytes() == data  # 200 instead of 206: rewritten from the start, not appended
    assert any("ignored the resume request" in line for line in logs)


def test_already_complete_part_answered_416_is_accepted(server, tmp_path):
    data = b"x" * 1000
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(data)
    http_download.download_file(f"{server.url}/f.bin", tmp_path / "f.bin", md5=md5(data), log=lambda _: None)
    assert (tmp_path / "f.bin").read_bytes() == data and server.requests == [("/f.bin", "bytes=1000-")]


def test_checksum_mismatch_leaves_nothing_and_names_the_file(server, tmp_path, logs):
    data = zip_bytes(PAYLOAD)
    server.files["/data.zip"] = data
    with pytest.raises(DownloadError) as err:
        archives.download_and_extract(
            f"{server.url}/data.zip", tmp_path / "set", md5="0" * 32, log=logs.append
        )
    assert str(err.value) == f"checksum mismatch for data.zip: expected md5 {'0' * 32}, got {md5(data)}"
    assert files_under(tmp_path) == []


def test_size_mismatch_is_reported(server, tmp_path):
    server.files["/f.bin"] = b"abc"
    with pytest.raises(DownloadError, match=r"^size mismatch for f.bin: expected 4 bytes, got 3$"):
        http_download.download_file(f"{server.url}/f.bin", tmp_path / "f.bin", size=4, log=lambda _: None)
    assert files_under(tmp_path) == []


def test_no_network_and_http_errors_are_one_line(server, tmp_path):
    with pytest.raises(
        DownloadError, match=r"^no network: cannot reach 127.0.0.1 for x.zip \(.*\); check the connection"
    ):
        http_download.download_file("http://127.0.0.1:1/x.zip", tmp_path / "x.zip")
    with pytest.raises(
        DownloadError, match=r"^HTTP 404 Not Found for x.zip from http://127.0.0.1:\d+/x.zip$"
    ):
        http_download.download_file(f"{server.url}/x.zip", tmp_path / "x.zip")
    assert files_under(tmp_path) == []


def test_disk_space_is_checked_before_downloading(server, tmp_path, monkeypatch):
    server.files["/f.bin"] = b"y" * 4_000_000
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=100))
    with pytest.raises(  # readable sizes (helpers.files.human_bytes), not "needs 0.00 GB but only 0.00 GB"
        DownloadError, match=r"^disk full: downloading f.bin needs 4 MB but only 100 B is free in "
    ):
        http_download.download_file(f"{server.url}/f.bin", tmp_path / "f.bin", log=lambda _: None)
    assert files_under(tmp_path) == []


def test_enospc_while_writing_becomes_a_disk_full_message(server, tmp_path, monkeypatch):
    server.files["/f.bin"] = b"z" * 5000

    class FullDisk(io.BytesIO):
        def write(self, _data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(http_download, "open", lambda *_a, **_k: FullDisk(), raising=False)
    with pytest.raises(DownloadError, match=r"^disk full while writing .*f.bin.part: free some space"):
        http_download.download_file(f"{server.url}/f.bin", tmp_path / "f.bin", log=lambda _: None)


def test_second_run_finds_the_marker_and_does_nothing(server, tmp_path, logs):
    server.files["/d.zip"] = zip_bytes(PAYLOAD)
    target = tmp_path / "set"
    archives.download_and_extract(f"{server.url}/d.zip", target, log=logs.append)
    before = files_under(tmp_path)
    archives.download_and_extract(f"{server.url}/d.zip", target, log=logs.append)
    assert len(server.requests) == 1 and files_under(tmp_path) == before
    assert logs[-1] == f"set: already there in {target}; nothing to do"


def test_a_206_for_other_bytes_than_asked_restarts_from_zero(server, tmp_path, logs):
    data = bytes(range(256)) * 200  # 51,200 bytes
    server.files["/f.bin"] = data
    server.cut_after = 10_000
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="interrupted"):
        http_download.download_file(f"{server.url}/f.bin", dest, log=logs.append)
    server.range_from_zero = True  # "bytes=10000-" answered with 206 "bytes 0-51199/51200"
    http_download.download_file(f"{server.url}/f.bin", dest, log=logs.append)
    assert dest.read_bytes() == data  # the wrong bytes were not appended to the .part
    assert server.requests[1:] == [("/f.bin", "bytes=10000-"), ("/f.bin", None)]
    assert any(
        "asked for bytes 10000- of f.bin, the server sent 'bytes 0-51199/51200'" in line
        and "downloading f.bin again from the start" in line
        for line in logs
    )


@pytest.mark.parametrize("known", ["md5", "archive check only"])
def test_a_part_that_is_not_the_start_of_the_file_is_not_accepted(server, tmp_path, logs, known):
    data = zip_bytes(PAYLOAD, zipfile.ZIP_STORED)
    server.files["/d.zip"] = data
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "d.zip.part").write_bytes(b"Z" * 3000)  # the start of another version
    target = archives.download_and_extract(
        f"{server.url}/d.zip", tmp_path / "set", md5=md5(data) if known == "md5" else None, log=logs.append
    )
    for name, content in PAYLOAD.items():
        assert (target / name).read_bytes() == content
    assert server.requests == [("/d.zip", "bytes=3000-"), ("/d.zip", None)]  # resumed, then from scratch
    assert any("d.zip.part: it was not the start of this file" in line for line in logs)
    assert files_under(tmp_path) == sorted(["set/.complete", *(f"set/{n}" for n in PAYLOAD)])


def test_a_resumed_download_that_stays_bad_fails_after_one_fresh_try(server, tmp_path, logs):
    server.files["/d.zip"] = HTML
    server.types["/d.zip"] = "text/html"
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "d.zip.part").write_bytes(b"<")
    with pytest.raises(DownloadError) as err:
        archives.download_and_extract(f"{server.url}/d.zip", tmp_path / "set", log=logs.append)
    assert server.requests == [("/d.zip", "bytes=1-"), ("/d.zip", None)]
    assert str(err.value).startswith(f"d.zip downloaded from {server.url}/d.zip is not a zip or tar archive")
    assert "text/html" in str(err.value) and "moved aside to " in str(err.value)
    assert [p.name.split(".bad-")[0] for p in (tmp_path / "downloads").iterdir()] == ["d.zip"]


def test_an_archive_that_fails_extraction_is_moved_aside_and_fetched_again(server, tmp_path, logs):
    good = zip_bytes({"a.txt": b"A" * 500}, zipfile.ZIP_STORED)
    bad = bytearray(good)
    bad[bad.index(b"AAAA")] = ord("B")  # the headers are fine, the content fails its CRC on extraction
    server.files["/d.zip"] = bytes(bad)
    with pytest.raises(DownloadError, match=r"^corrupt archive d.zip: Bad CRC-32 .*; moved d.zip aside to "):
        archives.download_and_extract(f"{server.url}/d.zip", tmp_path / "set", log=logs.append)
    server.files["/d.zip"] = good
    archives.download_and_extract(f"{server.url}/d.zip", tmp_path / "set", log=logs.append)
    assert (tmp_path / "set" / "a.txt").read_bytes() == b"A" * 500
    assert len(server.requests) == 2  # the bad copy was not reused


# ---------------------------------------------------------------------------------------------- archives
def _tarinfo(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def _zip_symlink(name: str, target: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        info = zipfile.ZipInfo(name)
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, target)
    return buf.getvalue()


MALICIOUS = {
    "zip-dotdot": (
        "bad.zip",
        lambda: zip_bytes({"ok.txt": b"x", "../evil.txt": b"evil"}),
        "'../evil.txt' climbs out",
    ),
    "zip-absolute": ("bad.zip", lambda: zip_bytes({"/tmp/abs-evil.txt": b"evil"}), "has an absolute path"),
    "zip-symlink": ("bad.zip", lambda: _zip_symlink("link", "../../outside"), "is a link to '../../outside'"),
    "tar-dotdot": ("bad.tar.gz", lambda: tar_bytes({"a/../../evil.txt": b"evil"}), "climbs out"),
    "tar-absolute": ("bad.tar.gz", lambda: tar_bytes({"/tmp/abs-evil.txt": b"evil"}), "has an absolute path"),
    "tar-symlink": (
        "bad.tar.gz",
        lambda: tar_bytes({"ok.txt": b"x"}, [_tarinfo("sub/link", tarfile.SYMTYPE, "../../outside")]),
        "is a link to '../../outside', outside the destination",
    ),
    "tar-hardlink": (
        "bad.tar.gz",
        lambda: tar_bytes({"ok.txt": b"x"}, [_tarinfo("hard", tarfile.LNKTYPE, "../outside.txt")]),
        "is a link to '../outside.txt'",
    ),
    "tar-device": (
        "bad.tar.gz",
        lambda: tar_bytes({}, [_tarinfo("dev", tarfile.CHRTYPE)]),
        "is a device file",
    ),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_archives_are_rejected_and_nothing_is_written_outside(server, tmp_path, case):
    filename, build, why = MALICIOUS[case]
    server.files[f"/{filename}"] = build()
    root = tmp_path / "root"
    target = root / "data" / "set"
    with pytest.raises(DownloadError) as err:
        archives.download_and_extract(f"{server.url}/{filename}", target, log=lambda _: None)
    assert str(err.value).startswith(f"unsafe archive {filename}: member ") and why in str(err.value)
    # only the verified archive is left (for a later look); no target, no temporary folder, nothing outside
    assert files_under(tmp_path) == [f"root/data/downloads/{filename}"]
    assert sorted(p.name for p in (root / "data").iterdir()) == ["downloads"]
    assert not Path("/tmp/abs-evil.txt").exists()


def test_a_safe_internal_symlink_is_extracted(tmp_path):
    archive = tmp_path / "ok.tar.gz"
    archive.write_bytes(tar_bytes({"d/real.txt": b"r"}, [_tarinfo("d/link", tarfile.SYMTYPE, "real.txt")]))
    (tmp_path / "out").mkdir()
    archives.safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "d" / "link").read_bytes() == b"r"


def test_corrupt_archives_are_reported(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is not an archive" * 10)
    with pytest.raises(DownloadError, match=r"^corrupt archive junk.zip: neither a zip nor a tar file$"):
        archives.safe_extract(junk, tmp_path)
    data = bytearray(zip_bytes({"a.txt": b"A" * 500}, zipfile.ZIP_STORED))
    data[data.index(b"AAAA")] = ord("B")  # flip one byte of the stored content: the CRC no longer matches
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(data))
    target = tmp_path / "set"
    with pytest.raises(DownloadError, match=r"^corrupt archive damaged.zip: Bad CRC-32 for file 'a.txt'$"):
        with archives.staged(target, "test", log=lambda _: None) as tmp:
            archives.safe_extract(damaged, tmp)
    assert not target.exists() and not list(tmp_path.glob(".set.partial-*"))


# ---------------------------------------------------------------------------------------------- data sets
def test_icbhi_from_a_mirror_is_arranged_with_its_text_files(server, tmp_path, monkeypatch, logs):
    recs = {"101_1b1_Al_sc_Meditron.wav": b"RIFF0", "101_1b1_Al_sc_Meditron.txt": b"0.1\t1.2\t0\t1\n"}
    data = zip_bytes(recs)  # recordings at the top of the zip: moved into ICBHI_final_database/
    server.files.update(
        {"/i.zip": data, "/diag.txt": b"101\tURTI\n", "/split.txt": b"101_1b1_Al_sc_Meditron\ttrain\n"}
    )
    remotes = {
        "icbhi": Remote(f"{server.url}/i.zip", "ICBHI_final_database.zip", md5=md5(data), verify_tls=False),
        "icbhi_diagnosis": Remote(
            f"{server.url}/diag.txt", "ICBHI_Challenge_diagnosis.txt", verify_tls=False
        ),
        "icbhi_split": Remote(f"{server.url}/split.txt", "ICBHI_challenge_train_test.txt", verify_tls=False),
    }
    monkeypatch.setattr(download, "REMOTES", remotes)
    target = download.fetch("icbhi", tmp_path, log=logs.append)
    assert files_under(tmp_path) == [
        "icbhi/.complete",
        "icbhi/ICBHI_Challenge_diagnosis.txt",
        "icbhi/ICBHI_challenge_train_test.txt",
        "icbhi/ICBHI_final_database/101_1b1_Al_sc_Meditron.txt",
        "icbhi/ICBHI_final_database/101_1b1_Al_sc_Meditron.wav",
    ]
    assert any("has expired" in line and md5(data) in line for line in logs)
    assert "warning: FAIL ICBHI_final_database/*.wav: 1 (expected 920)" in logs  # not the real counts
    items = download.check_dataset("icbhi", target, synthetic=True)
    assert [(i.found, i.ok) for i in items] == [(1, True), (1, True), (1, True), (1, True)]


@pytest.mark.parametrize("bad", ["html page", "zip of something else"])
def test_a_bad_download_is_moved_aside_and_a_later_run_downloads_again(server, tmp_path, logs, bad):
    bad_url, good_url = f"{server.url}/bad/ChestXRay2017.zip", f"{server.url}/good/ChestXRay2017.zip"
    server.files["/bad/ChestXRay2017.zip"] = HTML if bad == "html page" else zip_bytes({"readme.txt": b"?"})
    server.types["/bad/ChestXRay2017.zip"] = (
        "text/html; charset=utf-8" if bad == "html page" else "application/zip"
    )
    server.files["/good/ChestXRay2017.zip"] = zip_bytes(KERMANY)
    with pytest.raises(DownloadError) as err:
        download.fetch("kermany", tmp_path, url=bad_url, log=logs.append)
    downloads = tmp_path / "downloads"
    [aside] = downloads.iterdir()  # no ChestXRay2017.zip and no .part left to reuse
    assert aside.name.startswith("ChestXRay2017.zip.bad-")
    assert aside.read_bytes() == server.files["/bad/ChestXRay2017.zip"]
    message = str(err.value)
    assert "\n" not in message and f"aside to {aside}, so the next run downloads it again" in message
    if bad == "html page":
        assert message.startswith(f"ChestXRay2017.zip downloaded from {bad_url} is not a zip or tar archive")
        assert "(it begins with '<!DOCTYPE html>')" in message and "text/html" in message
    else:
        assert message.startswith(
            f"corrupt archive ChestXRay2017.zip from {bad_url}: no chest_xray/{{train,test}}"
        )
    target = download.fetch("kermany", tmp_path, url=good_url, log=logs.append)
    assert files_under(target) == [".complete", *sorted(KERMANY)]
    assert server.requests[-1] == ("/good/ChestXRay2017.zip", None)


def test_a_bad_file_left_in_downloads_is_moved_aside_not_reused(server, tmp_path, logs):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "ChestXRay2017.zip").write_bytes(HTML)  # left by an earlier version of this script
    server.files["/ChestXRay2017.zip"] = zip_bytes(KERMANY)
    target = download.fetch("kermany", tmp_path, url=f"{server.url}/ChestXRay2017.zip", log=logs.append)
    assert files_under(target) == [".complete", *sorted(KERMANY)]
    assert server.requests == [("/ChestXRay2017.zip", None)]
    [aside] = downloads.glob("ChestXRay2017.zip.bad-*")
    assert aside.read_bytes() == HTML
    assert (
        f"ChestXRay2017.zip in {downloads} is not a zip or tar archive (it begins with '<!DOCTYPE html>'), "
        f"so it is not used: moved aside to {aside.name}; downloading it again from "
        f"{server.url}/ChestXRay2017.zip" in logs
    )


def test_a_good_file_left_in_downloads_is_reused_without_a_request(server, tmp_path, logs):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "ChestXRay2017.zip").write_bytes(zip_bytes(KERMANY))
    target = download.fetch("kermany", tmp_path, url=f"{server.url}/ChestXRay2017.zip", log=logs.append)
    assert files_under(target) == [".complete", *sorted(KERMANY)]
    assert server.requests == []
    assert f"using {downloads / 'ChestXRay2017.zip'}, downloaded earlier" in logs


def test_cli_archive_installs_a_local_copy_and_keeps_it(tmp_path, capsys):
    rsna = {
        "rsna-pneumonia-detection-challenge/stage_2_train_labels.csv": b"patientId,x,y,width,height,Target\np1,,,,,0\n",
        "rsna-pneumonia-detection-challenge/stage_2_detailed_class_info.csv": b"patientId,class\np1,Normal\n",
        "rsna-pneumonia-detection-challenge/stage_2_train_images/p1.dcm": b"DICM",
    }
    archive = tmp_path / "usb" / "rsna.zip"
    archive.parent.mkdir()
    archive.write_bytes(zip_bytes(rsna))
    cli = _load_cli()
    assert cli.main(["rsna", "--archive", str(archive), "--dest", str(tmp_path / "data")]) == 0
    assert files_under(tmp_path / "data") == [
        "rsna/.complete",
        "rsna/stage_2_detailed_class_info.csv",
        "rsna/stage_2_train_images/p1.dcm",
        "rsna/stage_2_train_labels.csv",
    ]
    assert archive.is_file()  # a user's own copy is never deleted
    out = capsys.readouterr().out
    assert "warning: FAIL stage_2_train_images/*.dcm: 1 (expected 26,684)" in out
    assert cli.main(["rsna", "--archive", str(archive), "--dest", str(tmp_path / "data")]) == 0
    assert "already there" in capsys.readouterr().out


def test_cli_archive_with_wrong_checksum_exits_with_one_line(tmp_path, capsys):
    archive = tmp_path / "ICBHI_final_database.zip"
    data = zip_bytes({"x.wav": b"RIFF"})
    archive.write_bytes(data)
    code = _load_cli().main(["icbhi", "--archive", str(archive), "--dest", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 1
    assert err == (
        f"error: checksum mismatch for ICBHI_final_database.zip: expected md5 {download.REMOTES['icbhi'].md5}, "
        f"got {md5(data)}\n"
    )
    assert archive.read_bytes() == data and not (tmp_path / "data" / "icbhi").exists()


def test_unknown_dataset_lists_the_known_ones(tmp_path, capsys):
    message = "unknown dataset 'mnist': choose one of rsna, kermany, icbhi, synthetic"
    with pytest.raises(DownloadError, match=f"^{message}$"):
        download.fetch("mnist", tmp_path)
    assert _load_cli().main(["mnist", "--dest", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"error: {message}\n"


def test_cli_help_mentions_every_dataset_and_the_credentials():
    out = subprocess.run(
        [sys.executable, "data_download.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    for word in (*download.DATASETS, "KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "kaggle.json", "Colab secret"):
        assert word in out.stdout
    for word in (
        "--archive",
        "--url",
        "--dest",
        "--check",
        kaggle.RSNA_RULES_URL,
        "f6a5d0ea40bbcd25e17754f9d5ddae48",
    ):
        assert word in out.stdout


def test_cli_check_reports_counts_and_fails_on_missing(tmp_path, capsys):
    cli = _load_cli()
    normal = tmp_path / "kermany" / "chest_xray" / "test" / "NORMAL"
    normal.mkdir(parents=True)
    (normal / "IM-1.jpeg").write_bytes(b"jpg")
    assert cli.main(["kermany", "--check", "--dest", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "FAIL chest_xray/test/NORMAL/*.jpeg: 1 (expected 234)" in captured.out
    assert captured.err == "error: check failed for kermany\n"
    assert cli.main(["icbhi", "--check", "--dest", str(tmp_path)]) == 1
    assert f"icbhi: not there ({tmp_path / 'icbhi'})" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- Kaggle
class FakeHTTPError(Exception):
    """Shaped like kagglehub's KaggleApiHTTPError (a requests.HTTPError): the status is on ``.response``."""

    def __init__(self, status: int):
        super().__init__(f"{status} Client Error.")
        self.response = types.SimpleNamespace(status_code=status)


def _fake_kagglehub(monkeypatch, competition_download) -> None:
    module = types.ModuleType("kagglehub")
    module.competition_download = competition_download
    module.dataset_download = competition_download
    monkeypatch.setitem(sys.modules, "kagglehub", module)
    monkeypatch.setenv("KAGGLE_API_TOKEN", "test-token")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (403, f"accept the competition rules first at {kaggle.RSNA_RULES_URL}"),
        (
            401,
            "no valid Kaggle credentials (HTTP 401): create an API token at https://www.kaggle.com/settings",
        ),
    ],
)
def test_kagglehub_403_and_401_become_rules_and_credentials_messages(monkeypatch, tmp_path, status, expected):
    def refuse(handle, path=None, *, force_download=False, output_dir=None):
        raise FakeHTTPError(status)

    _fake_kagglehub(monkeypatch, refuse)
    with pytest.raises(DownloadError) as err:
        download.fetch("rsna", tmp_path, log=lambda _: None)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert files_under(tmp_path) == [] and list(tmp_path.iterdir()) == []


def test_kaggle_cli_output_is_mapped_too():
    message = str(
        kaggle.kaggle_error(
            "403 - Forbidden - Permission 'competitions.participate' was denied",
            "competition",
            "rsna-pneumonia-detection-challenge",
        )
    )
    assert kaggle.RSNA_RULES_URL in message
    assert "KAGGLE_API_TOKEN" in str(kaggle.kaggle_error("401 - Unauthorized", "dataset", "a/b"))


@pytest.fixture
def kaggle_cli(monkeypatch, tmp_path):
    """A fake ``kaggle`` command on PATH (kagglehub made unimportable) running the given shell body."""

    def install(body: str) -> None:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        exe = bin_dir / "kaggle"
        exe.write_text("#!/bin/sh\n" + body)
        exe.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setitem(sys.modules, "kagglehub", None)
        monkeypatch.setenv("KAGGLE_API_TOKEN", "test-token")

    return install


def test_kaggle_cli_refusal_is_mapped_to_the_rules_message(kaggle_cli, tmp_path, logs):
    kaggle_cli("echo \"403 - Forbidden - Permission 'competitions.participate' was denied\"; exit 1\n")
    with pytest.raises(DownloadError, match="HTTP 403.*accept the competition rules first"):
        download.fetch("rsna", tmp_path / "data", log=logs.append)
    assert logs[0].startswith("403 - Forbidden") and not (tmp_path / "data" / "rsna").exists()


def test_kaggle_cli_zip_is_extracted_into_the_layout(kaggle_cli, tmp_path):
    src = tmp_path / "src.zip"
    src.write_bytes(
        zip_bytes({"stage_2_train_labels.csv": b"patientId,Target\n", "stage_2_train_images/p.dcm": b""})
    )
    # kaggle competitions download -c HANDLE -p DIR  ->  DIR/HANDLE.zip
    kaggle_cli(f'cp "{src}" "$6/$4.zip"\n')
    target = download.fetch("rsna", tmp_path / "data", log=lambda _: None)
    assert files_under(target) == [".complete", "stage_2_train_images/p.dcm", "stage_2_train_labels.csv"]
    assert not (tmp_path / "data" / "downloads").exists()  # the downloaded zip is removed after success


def test_kaggle_cli_zip_that_is_not_a_zip_is_moved_aside(kaggle_cli, tmp_path):
    kaggle_cli('printf "<html>Service unavailable</html>" > "$6/$4.zip"\n')
    downloads = tmp_path / "data" / "downloads"
    with pytest.raises(DownloadError) as err:
        download.fetch("rsna", tmp_path / "data", log=lambda _: None)
    [aside] = downloads.iterdir()
    assert aside.name.startswith("rsna-pneumonia-detection-challenge.zip.bad-")
    assert str(err.value) == (
        "rsna-pneumonia-detection-challenge.zip from the kaggle command is not a zip or tar archive "
        f"(it begins with '<html>Service unavailable</html>'): moved aside to {aside}, so the next run "
        "downloads it again"
    )


@pytest.mark.parametrize("with_output_dir", [True, False])
def test_kagglehub_success_lands_in_the_layout(monkeypatch, tmp_path, with_output_dir):
    cache = tmp_path / "cache" / "rsna"

    def write(folder: Path) -> str:
        (folder / "stage_2_train_images").mkdir(parents=True)
        (folder / "stage_2_train_images" / "p1.dcm").write_bytes(b"DICM")
        (folder / "stage_2_train_labels.csv").write_text("patientId,x,y,width,height,Target\np1,,,,,0\n")
        (folder / "stage_2_detailed_class_info.csv").write_text("patientId,class\np1,Normal\n")
        return str(folder)

    def new_api(handle, path=None, *, force_download=False, output_dir=None):
        return write(Path(output_dir))

    def old_api(handle, path=None, *, force_download=False):
        return write(cache)

    _fake_kagglehub(monkeypatch, new_api if with_output_dir else old_api)
    target = download.fetch("rsna", tmp_path / "data", log=lambda _: None)
    assert archives.is_complete(target)
    assert [(i.found, i.ok) for i in download.check_dataset("rsna", target, synthetic=True)] == [
        (1, True),
        (1, True),
        (1, True),
    ]


def test_no_kaggle_credentials_is_said_before_any_download(monkeypatch, tmp_path):
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_KERNEL_RUN_TYPE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(
        DownloadError, match=r"^no Kaggle credentials found: create an API token .*kaggle.json$"
    ):
        download.fetch("rsna", tmp_path / "data", log=lambda _: None)


def test_colab_secrets_are_copied_into_the_environment(monkeypatch):
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    secrets = {"KAGGLE_API_TOKEN": "tok-123"}

    def get(name):
        if name not in secrets:
            raise KeyError(name)  # Colab raises SecretNotFoundError
        return secrets[name]

    colab = types.ModuleType("google.colab")
    colab.userdata = types.SimpleNamespace(get=get)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    assert kaggle.load_colab_kaggle_secrets() == ["KAGGLE_API_TOKEN"]
    assert kaggle.kaggle_credentials() == "KAGGLE_API_TOKEN"
    assert os.environ["KAGGLE_API_TOKEN"] == "tok-123"


# ---------------------------------------------------------------------------------------------- synthetic
def test_cli_synthetic_generates_through_helpers_datasets_under_dest(monkeypatch, tmp_path, capsys):
    from helpers.data import datasets

    seen = []

    def fake(name):
        def make(settings):
            seen.append((name, settings.data_dir))
            return settings.synthetic_dir / name

        return make

    for name in ("rsna", "kermany", "icbhi"):
        monkeypatch.setattr(datasets, f"{name}_dir", fake(name))
    monkeypatch.setattr(datasets, "data_source", lambda name, settings: "synthetic")
    assert _load_cli().main(["synthetic", "--dest", str(tmp_path)]) == 0
    mode = get_settings().mode
    assert seen == [("rsna", tmp_path), ("kermany", tmp_path), ("icbhi", tmp_path)]
    assert capsys.readouterr().out.splitlines() == [
        f"{n}: synthetic data in {tmp_path / f'synthetic-{mode}' / n}" for n in ("rsna", "kermany", "icbhi")
    ]
