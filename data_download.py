#!/usr/bin/env python
"""Get the course data: the real data sets (RSNA, Kermany, ICBHI) or the built-in synthetic ones.

A thin command line over ``helpers/data/download.py``; run ``python data_download.py --help``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from helpers.config import Settings, get_settings
from helpers.data import archives, download, http_download, kaggle

EPILOG = f"""\
data sets:
  rsna       RSNA Pneumonia Detection Challenge, Kaggle competition {download.KAGGLE_SOURCES["rsna"][1]}
             (~3.7 GB zipped; 26,684 training DICOMs). Needs Kaggle credentials AND the competition rules
             accepted with the same account: {kaggle.RSNA_RULES_URL}
             Uses kagglehub if installed (Colab has it), else the `kaggle` command.
  kermany    Kermany et al. 2018 pediatric chest X-rays (~1.2 GB, 5,856 JPEGs): Kaggle dataset
             {download.KAGGLE_SOURCES["kermany"][1]} via kagglehub, else Mendeley Data
             doi:10.17632/rscbjbr9sj.2 (ChestXRay2017.zip, plain HTTP, no account).
  icbhi      ICBHI 2017 Respiratory Sound Database (~1.98 GB zip, 920 recordings) from
             https://bhichallenge.med.auth.gr/ plus its diagnosis and train/test files. The site's TLS
             certificate has expired, so the certificate is NOT checked; the zip is verified by its
             MD5 {download.REMOTES["icbhi"].md5} instead.
  synthetic  the built-in synthetic RSNA-like, Kermany-like and ICBHI-like sets, generated (no download)
             for the current mode (XAI_COURSE_MODE: auto, cpu, full or smoke) into DIR/synthetic-<mode>/; a data set
             whose real copy is in DIR is used as it is (the notebooks prefer real data).
  all        rsna, kermany and icbhi.

Kaggle credentials (rsna; optional for kermany), one of:
  KAGGLE_API_TOKEN   environment variable, or a Colab secret of that name (Colab: key icon on the left,
                     add the secret, allow notebook access; this script reads it via
                     google.colab.userdata), or the token saved in ~/.kaggle/access_token.
  KAGGLE_USERNAME + KAGGLE_KEY   older keys, as environment variables or Colab secrets,
                     or ~/.kaggle/kaggle.json.
  Create a token at https://www.kaggle.com/settings (API section).
  HTTP 401 = missing/wrong credentials; HTTP 403 = the competition rules have not been accepted yet.

where files go:
  --dest DIR (default: the course data folder, $XAI_COURSE_DATA or <course root>/data) holds
  DIR/rsna, DIR/kermany, DIR/icbhi in the layouts the notebooks expect. Downloads stream into
  DIR/downloads/<file>.part and resume after an interruption (run the same command again); they are
  renamed only when complete and verified, extracted into a hidden temporary folder and moved into place
  when everything worked. A finished folder holds a {archives.MARKER} marker; a second run does nothing.
  A download that is not a readable archive or not the data set (e.g. an HTML error page from a mirror)
  is moved aside to DIR/downloads/<file>.bad-<time>, never reused: the next run downloads it again.

workshops (flaky Wi-Fi):
  One person downloads once with --keep-archive and copies DIR/downloads/*.zip to a USB stick (for a
  Kaggle download, zip the finished DIR/rsna or DIR/kermany folder instead); everyone else runs e.g.
      python data_download.py icbhi --archive /media/usb/ICBHI_final_database.zip
  Any zip or tar(.gz) holding the data set's files works; the checksum is verified where it is known
  (icbhi). For icbhi put ICBHI_Challenge_diagnosis.txt and ICBHI_challenge_train_test.txt next to the
  zip, otherwise they are downloaded.

examples:
  python data_download.py synthetic
  python data_download.py rsna
  python data_download.py icbhi --url https://my.mirror/ICBHI_final_database.zip
  python data_download.py --check
"""


def build_parser() -> argparse.ArgumentParser:
    """The command line: data sets as positional names, options for where and from what."""
    parser = argparse.ArgumentParser(
        prog="data_download.py",
        description="Download, verify and unpack the course data sets (or generate the synthetic ones).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "datasets", nargs="*", metavar="DATASET", help=f"one or more of: {', '.join(download.DATASETS)}, all"
    )
    parser.add_argument("--dest", type=Path, help="data folder (default: the course data folder)")
    parser.add_argument(
        "--archive", type=Path, metavar="FILE", help="use this local archive instead of downloading"
    )
    parser.add_argument("--url", help="download from this mirror instead of the default address")
    parser.add_argument(
        "--check", action="store_true", help="only verify what is there (expected files and counts)"
    )
    parser.add_argument(
        "--keep-archive", action="store_true", help="keep the downloaded archive in DEST/downloads"
    )
    return parser


def _check(names: list[str], settings: Settings, explicit: bool) -> int:
    failed = []
    for name in names:
        if name == "synthetic":
            roots = [(f"synthetic {n}", n, settings.synthetic_dir / n) for n in download.REAL_DATASETS]
        else:
            roots = [(name, name, settings.real_dir(name))]
        for label, kind, root in roots:
            if not root.is_dir():
                print(f"{label}: not there ({root})")
                failed += [label] if explicit else []
                continue
            items = download.check_dataset(kind, root, synthetic=name == "synthetic")
            marker = (
                "" if archives.is_complete(root) or name == "synthetic" else f" (no {archives.MARKER} marker)"
            )
            print(f"{label}: {root}{marker}")
            for item in items:
                print(f"  {item}")
            failed += [label] if not all(item.ok for item in items) else []
    if failed:
        raise http_download.DownloadError(f"check failed for {', '.join(failed)}")
    return 0


def _synthetic(settings: Settings) -> None:
    """Generate the built-in sets through helpers.data.datasets (the one place that knows their sizes)."""
    from helpers.data import datasets

    for name, make in (
        ("rsna", datasets.rsna_dir),
        ("kermany", datasets.kermany_dir),
        ("icbhi", datasets.icbhi_dir),
    ):
        folder = make(settings)
        print(f"{name}: {datasets.data_source(name, settings)} data in {folder}")


def run(args: argparse.Namespace) -> int:
    """Do what the parsed arguments ask; raises :class:`helpers.data.http_download.DownloadError` on failure."""
    settings = get_settings()
    if args.dest:
        settings = replace(settings, data_dir=args.dest.expanduser().resolve())
    names = []
    for raw in args.datasets:
        names += list(download.REAL_DATASETS) if raw.lower() == "all" else [raw]
    names = [download.normalise_dataset_name(n) for n in names]
    if args.check:
        return _check(names or list(download.DATASETS), settings, explicit=bool(names))
    if not names:
        raise http_download.DownloadError(
            f"name a data set: {', '.join(download.DATASETS)} or all (see --help)"
        )
    if (args.archive or args.url) and (len(names) != 1 or names == ["synthetic"]):
        raise http_download.DownloadError("--archive and --url work with exactly one real data set")
    for name in names:
        if name == "synthetic":
            _synthetic(settings)
        else:
            download.fetch(
                name, settings.data_dir, archive=args.archive, url=args.url, keep_archive=args.keep_archive
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit code (0 ok, 1 a
    :class:`helpers.data.http_download.DownloadError`, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except http_download.DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
