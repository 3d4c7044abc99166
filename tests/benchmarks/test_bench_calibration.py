"""benchmarks/bench_calibration.py must keep running (a --smoke-test run, seconds), and its
simulated search must make ASHA's decisions exactly as Ray's own bracket code does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_calibration import (
    check_asha_against_ray,
    check_halving,
    check_sync_against_sweep,
    check_through_loader,
    shipped_design,
)
from benchmarks.simulate import (
    DESIGN,
    NO_HALVING,
    REAL_RUN_NOISE_SCALE,
    asha_rungs,
    asha_stop_epochs,
    no_stop_epochs,
    replicate_differences_points,
    simulate_design,
)
from sweeps.config import load_config

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_calibration.py"


def test_calibration_benchmark_smoke_test_runs_every_step():
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke-test"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if "| R=" in line or "| seq " in line]
    # 5 scenarios x (R = 3, 5, 10, the sequential plan, and that plan ended by its budget at R = 4 and 5)
    assert len(rows) == 5 * 6
    assert sum("| seq 3..8, budget ends it at R=4 |" in line for line in rows) == 5
    assert "ran every step" in proc.stdout
    cfg = load_config()
    if cfg.search.early_stopping.enabled:  # the header names the shipped schedule and what checked it
        assert "checked against the sweep's SyncHalvingCell on 60 cells" in proc.stdout
    else:
        assert f"no early stopping, every trial to {cfg.search.max_epochs} epochs" in proc.stdout


def test_calibration_benchmark_rejects_bad_arguments():
    proc = subprocess.run([sys.executable, str(BENCH), "--trials", "1"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--trials >= 2" in proc.stderr


@pytest.mark.parametrize("max_epochs", [20, 30])
def test_simulated_asha_matches_rays_bracket(max_epochs):
    design = {**DESIGN, "max_epochs": max_epochs}
    assert check_asha_against_ray(design, cells=40, seed=3) == 40


@pytest.mark.parametrize("max_epochs,grace,rf", [(20, 1, 3), (20, 2, 3), (30, 1, 2), (9, 3, 3)])
def test_simulated_sync_halving_matches_the_sweeps_scheduler(max_epochs, grace, rf):
    """The calibration's synchronous halving stops every trial where sweeps.search.SyncHalvingCell
    (what a sweep with halving: sync runs) stops it, diverged trials included."""
    design = {**DESIGN, "max_epochs": max_epochs, "grace_period": grace, "reduction_factor": rf}
    assert check_sync_against_sweep(design, cells=40, seed=3) == 40


def test_the_calibration_simulates_the_shipped_default_design():
    cfg = load_config()
    trials, seeds, design = shipped_design()
    assert (trials, seeds) == (cfg.search.num_samples, cfg.confirm.seeds)
    assert design["max_epochs"] == cfg.search.max_epochs
    assert design["grace_period"] == cfg.search.early_stopping.grace_period
    es = cfg.search.early_stopping
    assert design["halving"] == (es.halving if es.enabled else NO_HALVING)
    assert design["reduction_factor"] == cfg.search.early_stopping.reduction_factor
    assert 10 ** design["lr_low"] == pytest.approx(1e-4) and 10 ** design["lr_high"] == pytest.approx(1e-2)


def test_the_real_run_noise_scale_reproduces_the_measured_spread():
    """REAL_RUN_NOISE_SCALE is fitted to the 2026-12-06 run: sd 1.49 points at T=8, K=3, 30 epochs."""
    sim = simulate_design(3000, 1, seeds=3, trials=8, rng=5, max_epochs=30, noise_scale=REAL_RUN_NOISE_SCALE)
    assert replicate_differences_points(sim).std() == pytest.approx(1.49, abs=0.08)


def test_without_early_stopping_every_trial_trains_to_the_end_unless_it_ends_on_its_own():
    best = np.fmax.accumulate(np.random.default_rng(0).random((2, 3, 10)), axis=-1)
    best[1, 2, 4:] = np.nan  # diverged after epoch 4
    assert no_stop_epochs(best, 1, 3, 10).tolist() == [[10, 10, 10], [10, 10, 4]]
    assert check_halving({"halving": NO_HALVING}) == 0, "nothing to check against"


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
