"""``benchmarks/gpu_check.py --dry-run``: every section of the GPU check runs on the CPU with tiny sizes, so the
script that proves the GPU path (issue 16) cannot rot between the runs on a GPU. Part of the normal ``pytest``
run (10-20 s, most of it imports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = [
    "environment",
    "precision",
    "device_data",
    "augment",
    "no_host_sync",
    "fit",
    "resume_across_devices",
    "predict_parity",
    "explain_parity",
    "t4_memory",
    "out_of_memory",
    "fast_vs_paper",
    "epoch_time",
]


def test_the_gpu_check_dry_run_passes_every_section_on_the_cpu(tmp_path):
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--report", str(report)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(report.read_text())
    assert [s["section"] for s in result["sections"]] == SECTIONS
    failed = {s["section"]: s.get("error") for s in result["sections"] if s["status"] != "passed"}
    assert not failed, failed
    assert result["summary"]["failed"] == []
    sections = {s["section"]: s for s in result["sections"]}
    assert sections["environment"]["dry_run"] is True
    assert sections["out_of_memory"]["simulated"] is True  # a real one needs a GPU
    assert len(sections["fit"]["epoch_seconds"]) == 3
    assert "13/13 sections passed" in done.stdout
