"""benchmarks/bench_calibration.py must keep running: a tiny --smoke-test run (seconds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_calibration.py"


def test_calibration_benchmark_smoke_test_runs_every_step():
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke-test"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 4  # R = 1, 3 x effect = 0, 5
    assert "| 1 | 0 | 0.000 |" in proc.stdout  # one replicate: never a winner
    assert "ran every step" in proc.stdout


def test_calibration_benchmark_rejects_bad_arguments():
    proc = subprocess.run([sys.executable, str(BENCH), "--seeds", "1"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--seeds >= 2" in proc.stderr
