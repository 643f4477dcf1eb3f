"""Preprocessing throughput: full-size JPEG Baseline DICOMs -> uint8 224 x 224, in files per second.

Writes ``--n`` RSNA-like 1024 x 1024 JPEG Baseline DICOM files (``helpers.data.synthetic.make_rsna_like`` when it
is there, else a simple drawing here) or takes the ``.dcm`` files of ``--dir``, then times, after one
warm-up pass (files in the page cache, as in a second run):

- per file, one process: the naive baseline (``read_xray`` full decode to float, float resize) vs the fast
  path of ``preprocess.load_and_resize`` (JPEG decoded at reduced scale with ``Image.draft``), and the fast
  path with ``draft`` switched off, to show what ``draft`` itself buys;
- the whole ``build_store`` with 1 worker and with ``--workers`` (default: all cores), pool start included.

Target: build_store on 2 cores >= 1.8x one worker.

    python benchmarks/bench_preprocess.py                       # 64 synthetic files
    python benchmarks/bench_preprocess.py --n 400 --workers 2
    python benchmarks/bench_preprocess.py --dir data/rsna/stage_2_train_images --n 1000
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
from PIL import Image, JpegImagePlugin
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid

from helpers.files import process_pool
from helpers.xray import preprocess, store
from helpers.xray.dicom import read_xray

TARGET_RATIO_2_CORES = 1.8


def write_simple_rsna_like(folder: Path, n: int, image_size: int, seed: int) -> list[Path]:
    """Fallback generator: smooth chest-like shading plus noise, JPEG quality 95 (about RSNA's file size)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:image_size, 0:image_size] / image_size
    paths = []
    for i in range(n):
        lungs = np.exp(-(((xx - 0.33) / 0.13) ** 2 + ((yy - 0.47) / 0.28) ** 2)) + np.exp(
            -(((xx - 0.67) / 0.13) ** 2 + ((yy - 0.47) / 0.28) ** 2)
        )
        pixels = 200 - 120 * lungs + 15 * np.sin(xx * rng.uniform(20, 40)) + rng.normal(0, 3, xx.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=95)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = (
            SecondaryCaptureImageStorage,
            generate_uid(),
        )
        meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds = Dataset()
        ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID = meta, SecondaryCaptureImageStorage, generate_uid()
        ds.PatientID, ds.Modality = f"bench{i:05d}", "CR"
        ds.Rows = ds.Columns = image_size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
        path = folder / f"{ds.PatientID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def make_files(tmp: Path, n: int, image_size: int, seed: int) -> tuple[list[Path], str]:
    try:
        from helpers.data.synthetic import make_rsna_like
    except ImportError:
        return write_simple_rsna_like(
            tmp / "dicom", n, image_size, seed
        ), "simple drawing (no helpers.data.synthetic)"
    make_rsna_like(tmp / "rsna", n, image_size=image_size, seed=seed)
    paths = sorted((tmp / "rsna" / "stage_2_train_images").glob("*.dcm"))
    return paths, "helpers.data.synthetic.make_rsna_like"


def naive_load(path: Path, size: int) -> np.ndarray:
    """What one writes first: decode everything to float, resize the float image, quantise."""
    image = Image.fromarray(read_xray(path)).resize((size, size), Image.Resampling.BILINEAR)
    return np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)


def files_per_second(fn, paths: list[Path], size: int) -> float:
    start = time.perf_counter()
    for path in paths:
        fn(path, size)
    return len(paths) / (time.perf_counter() - start)


def timed_process(job: tuple[int, str, int]) -> float:
    """build_store's worker on one file; returns the CPU seconds it used in its own process."""
    start = time.process_time()
    store._process(job)
    return time.process_time() - start


def pool_files_per_second(paths: list[Path], size: int, workers: int, repeat: int) -> tuple[float, float]:
    """(files/s wall clock, best of ``repeat``; CPU ms per file inside the workers) on a started, warm pool.

    The CPU time per file does not depend on what else runs on the machine, so it tells whether the
    workers themselves slow down when there are several of them.
    """
    jobs = [(i, str(p), size) for i, p in enumerate(paths)]
    chunk = max(1, len(jobs) // (8 * workers))
    best, cpu = 0.0, []
    with process_pool(workers) as pool:  # spawn, like build_store
        pool.map(timed_process, jobs[: 2 * workers], chunksize=1)  # start and warm every worker
        for _ in range(repeat):
            start = time.perf_counter()
            cpu = list(pool.imap_unordered(timed_process, jobs, chunksize=chunk))
            best = max(best, len(jobs) / (time.perf_counter() - start))
    return best, 1e3 * float(np.mean(cpu))


def store_files_per_second(items: pd.DataFrame, dest: Path, size: int, workers: int) -> float:
    start = time.perf_counter()
    store.build_store(items, dest, size=size, workers=workers, progress=False)
    return len(items) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=64, help="number of files (default 64)")
    parser.add_argument("--dir", type=Path, help="use the .dcm files of this folder instead of writing some")
    parser.add_argument("--image-size", type=int, default=1024, help="side of the generated DICOMs")
    parser.add_argument("--size", type=int, default=224, help="side of the stored images")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes of the parallel runs"
    )
    parser.add_argument("--repeat", type=int, default=3, help="pool runs to take the best of")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    k = args.workers

    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp_name:
        tmp = Path(tmp_name)
        if args.dir:
            paths, source = sorted(args.dir.glob("*.dcm"))[: args.n], str(args.dir)
        else:
            paths, source = make_files(tmp, args.n, args.image_size, args.seed)
        if not paths:
            raise SystemExit(f"no .dcm files in {args.dir}")
        mean_kb = np.mean([p.stat().st_size for p in paths]) / 1024
        print(f"{len(paths)} files from {source}, {mean_kb:.0f} KB each on average; output {args.size}px")
        for path in paths:  # warm-up: page cache, imports, decoder plugins
            preprocess.load_and_resize(path, args.size)

        naive = files_per_second(naive_load, paths, args.size)
        fast = files_per_second(preprocess.load_and_resize, paths, args.size)
        with mock.patch.object(JpegImagePlugin.JpegImageFile, "draft", lambda self, mode, size: None):
            no_draft = files_per_second(preprocess.load_and_resize, paths, args.size)
        diff = np.mean(
            [
                np.abs(naive_load(p, args.size) - preprocess.load_and_resize(p, args.size).astype(int)).mean()
                for p in paths[:16]
            ]
        )
        print(f"naive read_xray + float resize : {naive:7.1f} files/s (1 process)")
        print(f"fast path without draft        : {no_draft:7.1f} files/s  ({no_draft / naive:.2f}x naive)")
        print(
            f"fast path (load_and_resize)    : {fast:7.1f} files/s  ({fast / naive:.2f}x naive); "
            f"mean |fast - naive| = {diff:.2f} grey levels"
        )

        print(f"load average before the parallel runs: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        steady_one, cpu_one = pool_files_per_second(paths, args.size, 1, args.repeat)
        steady_many, cpu_many = pool_files_per_second(paths, args.size, k, args.repeat)
        print(
            f"worker pool, 1 process         : {steady_one:7.1f} files/s (warm pool; {cpu_one:.1f} CPU ms/file)"
        )
        print(
            f"worker pool, {k} processes       : {steady_many:7.1f} files/s  ({steady_many / steady_one:.2f}x; "
            f"{cpu_many:.1f} CPU ms/file)"
        )
        projected = k * cpu_one / cpu_many
        print(f"CPU-bound projection, {k} free cores: {projected:.2f}x one process (k x CPU ms ratio)")

        labels = [i % 2 for i in range(len(paths))]
        items = pd.DataFrame(
            {"path": [str(p) for p in paths], "patientId": [p.stem for p in paths], "label": labels}
        )
        preprocess.split_patients(items)  # import sklearn before the clock starts
        one = store_files_per_second(items, tmp / "store1", args.size, workers=1)
        many = store_files_per_second(items, tmp / "storeN", args.size, workers=k)
        same = (tmp / "store1" / "images.npy").read_bytes() == (tmp / "storeN" / "images.npy").read_bytes()
        print(f"build_store, 1 worker          : {one:7.1f} files/s (end to end)")
        print(
            f"build_store, {k} workers         : {many:7.1f} files/s  ({many / one:.2f}x; identical bytes: {same})"
        )
        if k == 2:
            ratios = (
                ("steady state", steady_many / steady_one),
                ("end to end", many / one),
                ("CPU-bound", projected),
            )
            for what, ratio in ratios:
                verdict = "meets" if ratio >= TARGET_RATIO_2_CORES else "misses"
                print(f"target >= {TARGET_RATIO_2_CORES}x on 2 cores, {what}: {ratio:.2f}x, {verdict} it")


if __name__ == "__main__":
    main()
