"""benchmarks/bench_calibration.py must keep running (a --smoke-test run, seconds), and its
simulated search must make ASHA's decisions exactly as Ray's own bracket code does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.bench_calibration import check_asha_against_ray, check_through_loader
from benchmarks.simulate import asha_rungs, asha_stop_epochs, simulate_design

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_calibration.py"


def test_calibration_benchmark_smoke_test_runs_every_step():
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke-test"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if "| R=" in line or "| seq " in line]
    assert len(rows) == 4 * 4  # 4 scenarios x (R = 3, 5, 10 and the sequential plan)
    assert "checked against Ray's _Bracket" in proc.stdout and "ran every step" in proc.stdout


def test_calibration_benchmark_rejects_bad_arguments():
    proc = subprocess.run([sys.executable, str(BENCH), "--trials", "1"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--trials >= 2" in proc.stderr


def test_simulated_asha_matches_rays_bracket():
    assert check_asha_against_ray(cells=40, seed=3) == 40


def test_asha_rungs_are_rays():
    from ray.tune.schedulers.async_hyperband import _Bracket

    b = _Bracket(1, 30, 3, 0)
    assert asha_rungs(30, 1, 3) == sorted(int(m) for m, _ in b._rungs) == [1, 3, 9, 27]


def test_asha_stops_a_trial_below_the_rung_cutoff_and_never_the_first():
    best = np.array([[[0.5] * 30, [0.4] * 30, [0.6] * 30]])
    stop = asha_stop_epochs(best, 1, 3, 30)
    assert stop.tolist() == [[30, 1, 30]]  # the first trial meets empty rungs; the second is below


def test_common_random_numbers_cut_the_spread_of_replicate_differences():
    sd = {crn: (100 * (s["test"][:, :, 0].mean(-1) - s["test"][:, :, 1].mean(-1))).std()
          for crn in (True, False) for s in [simulate_design(300, 4, crn=crn, rng=5)]}
    assert sd[True] < sd[False]


def test_the_vectorised_path_agrees_with_the_loader_path():
    sim = simulate_design(5, 8, rng=1, diverge_b=True)
    assert check_through_loader(sim, margin=2.0) == 5
