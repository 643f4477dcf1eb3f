"""Benchmark: generating the built-in synthetic data sets.

Targets: the smoke RSNA-like set (160 patients at 256 px) in a few seconds; 3,000 patients at 1,024 px in
a few minutes on 2 cores. The baseline, measured in the same run, is the bare cost of the file format:
JPEG-encoding one fixed image and writing it as a DICOM file per patient (no drawing, one process). The
ratio says how much the procedural drawing costs on top of that.

    python benchmarks/bench_synthetic.py                          # 160 at 256 px, then 60 at 1024 px
    python benchmarks/bench_synthetic.py --patients 3000 --size 1024 --workers 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

from helpers.data.synthetic import make_rsna_like, rsna_dicom
from helpers.data.synthetic_audio import make_icbhi_like
from helpers.data.synthetic_xray import draw_radiograph


def baseline_seconds(n: int, size: int, folder: Path) -> float:
    """Seconds to JPEG-encode and write ``n`` DICOM files of one fixed ``size`` x ``size`` image."""
    pixels = draw_radiograph(np.random.default_rng(0), size)
    meta = {"sex": "F", "age": 51, "view": "PA", "spacing": 0.143 * 1024 / size}
    start = time.perf_counter()
    for i in range(n):
        pydicom.dcmwrite(folder / f"{i}.dcm", rsna_dicom(pixels, f"p{i}", meta, 0), enforce_file_format=True)
    return time.perf_counter() - start


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=60, help="patients of the full-size run")
    parser.add_argument("--size", type=int, default=1024, help="image side of the full-size run")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        smoke = timed(make_rsna_like, root / "smoke", 160, image_size=256, workers=args.workers)
        (root / "base").mkdir()
        base = baseline_seconds(args.patients, args.size, root / "base")
        full = timed(make_rsna_like, root / "full", args.patients, image_size=args.size, workers=args.workers)
        rerun = timed(
            make_rsna_like, root / "full", args.patients, image_size=args.size, workers=args.workers
        )
        icbhi = timed(make_icbhi_like, root / "icbhi", 8, duration_s=(6.0, 10.0), workers=args.workers)
    print(f"smoke RSNA set, 160 patients at 256 px: {smoke:.2f} s")
    print(
        f"{args.patients} patients at {args.size} px: {full:.2f} s ({full / args.patients * 1000:.0f} ms each), "
        f"baseline (encode + write only, 1 process) {base:.2f} s, ratio {full / base:.2f}x"
    )
    print(
        f"  projected for 3000 patients: {full / args.patients * 3000 / 60:.1f} min; rerun of a complete set {rerun:.2f} s"
    )
    print(f"smoke ICBHI set, 8 patients: {icbhi:.2f} s")


if __name__ == "__main__":
    main()
