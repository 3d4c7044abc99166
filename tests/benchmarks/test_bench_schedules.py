"""benchmarks/bench_schedules.py must keep running, and the simulated synchronous halving must halve
as it says: the best max(1, floor(n / rf)) of the trials still running go on at every rung."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.simulate import sync_halving_stop_epochs

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_schedules.py"


def test_schedules_benchmark_smoke_test_prints_every_schedule():
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke-test"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("| async", "| sync"))]
    assert len(rows) == 8 * 4 and all(0 < float(r.split("|")[7]) <= 1 for r in rows)


def test_sync_halving_keeps_the_best_third_at_every_rung_and_exempts_no_trial():
    # one cell, 9 trials, 20 epochs: trial i's value at every epoch is its rank (trial 0 the worst),
    # trial 8 ends on its own (diverged) at epoch 2
    best = np.tile(np.arange(9, dtype=float)[:, None], (1, 20))[None]
    best[0, 8, 2:] = np.nan  # epochs 3.. missing: it trained 2
    stop = sync_halving_stop_epochs(best, grace_period=1, reduction_factor=3, max_t=20)[0]
    # rung 1: all 9 reach it, floor(9/3) = 3 go on (8, 7, 6); rung 3: 8 ended at 2, so 7 and 6
    # reach it and max(1, floor(2/3)) = 1 goes on (7); it trains to the end
    assert stop.tolist() == [1, 1, 1, 1, 1, 1, 3, 20, 2]
