#!/usr/bin/env python
"""Calibration of the verdict's primary rule, by Monte Carlo on simulated sweeps with known truth.

Each simulated experiment is a two-arm sweep of the stratified search design
(``benchmarks/simulate.py:simulate_design``): per replicate, T trials per arm on shared
quasi-random lr candidates and shared trial seeds (common random numbers), successive halving on
every trial as default.yaml runs it (synchronous: checked against the sweep's own
``SyncHalvingCell``, or asynchronous: Ray's ``_Bracket`` rule, checked against Ray's own code, at
the start of every run), the best-epoch objective, and K confirmation seeds per arm (seed k shared). Its noise
parameters are fitted to the real default.yaml runs: the sd of a replicate difference is 1.15
points when candidates and seeds are drawn independently per arm (``crn`` = no), 87% of its
variance from the search (see benchmarks/README.md).

Every experiment's paired replicate differences (every run counted) go through
``analysis.sequential.decide`` / ``run_sequential``: the exact code ``analysis.sequential.look``
runs on a real sweep (checked on a sample through the loader-shaped table at the start of every run).
Designs: fixed R = 3, 5, 10 (one look at alpha), the sequential plan (looks at R = 3..8,
Pocock-type boundaries; optional stopping included), and that plan ended by its wall-clock budget
at R = 4 or 5 (the last look spends the alpha left; ended at R = 3 it is the fixed R = 3 design).
Scenarios: the null (identical arms), bias (equal peaks at different optima), heavy tails, a
skewed null, config-dependent divergence, and planted effects of 1, 2, 5 points.

    python benchmarks/bench_calibration.py [--experiments 10000] [--smoke-test]

Exit 1 if a false-winner rate exceeds 0.05 plus twice its Monte Carlo standard error in a scenario
the rule is meant to hold in (not checked with --smoke-test, whose sample is too small).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.decision import MARGIN_POINTS, replicate_differences  # noqa: E402
from analysis.sequential import Plan, boundary, decide, look, run_sequential  # noqa: E402
from benchmarks.simulate import (  # noqa: E402
    DESIGN,
    NO_HALVING,
    REAL_RUN_NOISE_SCALE,
    asha_rungs,
    asha_stop_epochs,
    confirm_frame,
    replicate_differences_points,
    simulate_design,
    sync_halving_stop_epochs,
)

ALPHA = 0.05
SEQUENTIAL = Plan(3, 8)
FIXED = (3, 5, 10)
# Where a wall-clock budget ends the sequential plan early (its last look spends the alpha left;
# analysis.sequential). At R = 3 that is the fixed R = 3 design (one look at alpha): its rows.
BUDGET_FINAL = (4, 5)
# name: (simulate_design keywords, planted effect in points, is it a null: any winner is false?)
SCENARIOS = {
    "null": ({}, 0.0, True),
    "null, no CRN (measured spread)": ({"crn": False}, 0.0, True),
    "bias: selu optimum lr 3e-4": ({"lr_star_b": 3e-4}, 0.0, True),
    "bias: selu optimum lr 3e-3": ({"lr_star_b": 3e-3}, 0.0, True),
    "bias: selu optimum lr 1e-4 (range edge)": ({"lr_star_b": 1e-4}, 0.0, True),
    "bias: selu optimum 12 epochs": ({"epochs_star_b": 12.0}, 0.0, True),
    "heavy tails (10% bad configs)": ({"bad_config": 0.10}, 0.0, True),
    "skewed null": ({"skew": True}, 0.0, True),
    "divergence (selu, lr > 3e-3)": ({"diverge_b": True}, 0.0, True),
    "effect 1": ({}, 1.0, False),
    "effect 2": ({}, 2.0, False),
    "effect 5": ({}, 5.0, False),
    "effect 2, no CRN (measured spread)": ({"crn": False}, 2.0, False),
    # The noise of the 2026-12-06 real run (sd 1.49 points at T=8, K=3, 30 epochs), at the shipped design.
    "null, real-run spread": ({"noise_scale": REAL_RUN_NOISE_SCALE}, 0.0, True),
    "effect 2, real-run spread": ({"noise_scale": REAL_RUN_NOISE_SCALE}, 2.0, False),
    "effect 3, real-run spread": ({"noise_scale": REAL_RUN_NOISE_SCALE}, 3.0, False),
}
# Nulls the check reports but does not fail on, and why: no test at a fixed R can see a skew that has
# not happened yet (the report warns of skew it sees), and at the range's edge the tuned arms truly
# differ (+0.17 points: the range decides, not the activation; the report warns of a chosen lr at an edge).
NOT_CHECKED = {"skewed null": "skew not yet seen",
               "bias: selu optimum lr 1e-4 (range edge)": "the range decides"}


def shipped_design() -> tuple[int, int, dict]:
    """(T, K, simulate_design keywords) of the shipped ``default.yaml``: trials per cell, seeds per
    arm and replicate, and its search's lr range and ASHA settings, read from the config itself."""
    from sweeps.config import load_config

    cfg = load_config()
    lr = {p.name: p for p in cfg.search.space}["lr"]
    es = cfg.search.early_stopping
    design = dict(lr_low=float(np.log10(lr.low)), lr_high=float(np.log10(lr.high)),
                  max_epochs=cfg.search.max_epochs, grace_period=es.grace_period,
                  reduction_factor=es.reduction_factor, halving=es.halving if es.enabled else NO_HALVING)
    return cfg.search.num_samples, cfg.confirm.seeds, design


def _random_curves(design: dict, cells: int, trials: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    best = np.fmax.accumulate(g.random((cells, trials, design["max_epochs"])), axis=-1)
    best[: cells // 4, 1, 5:] = np.nan  # some trials end on their own (diverged) at epoch 5
    return best


def sweep_sync_stop_epochs(best_so_far: np.ndarray, grace_period: int, reduction_factor: int,
                           max_t: int) -> np.ndarray:
    """Epochs each trial trains when the sweep's own ``SyncHalvingCell`` (what
    ``search.early_stopping.halving: sync`` runs) judges curves ``best_so_far`` (cells, T, max_t;
    NaN after a trial ends on its own): each trial of a cell trains an epoch in turn, waits where
    the cell says PAUSE and stops where it says STOP or cuts it."""
    from ray.tune.schedulers import TrialScheduler

    from sweeps.search import SyncHalvingCell, halving_rungs

    class _T:  # the parts of a Tune Trial the cell reads
        def __init__(self, i):
            self.trial_id, self.status, self.last_result = str(i), "RUNNING", {}

        def set_status(self, status):
            self.status = status

    cells, trials, m = best_so_far.shape[0], best_so_far.shape[1], max_t
    out = np.zeros((cells, trials), dtype=int)
    for c in range(cells):
        cell = SyncHalvingCell(trials, halving_rungs(m, grace_period, reduction_factor), reduction_factor,
                               "v", "max")
        ts = [_T(i) for i in range(trials)]
        for t in ts:
            cell.add(t)
        trained, stop = [0] * trials, [None] * trials
        for _ in range(trials * m + 1):
            running = [i for i in range(trials) if stop[i] is None and ts[i].status == "RUNNING"]
            if not running:
                break
            for i in running:
                e = trained[i] + 1
                if e > m or np.isnan(best_so_far[c, i, e - 1]):  # ends on its own: on_trial_complete
                    stop[i], ts[i].status = trained[i], "TERMINATED"
                    cell.gone.add(ts[i].trial_id)
                    continue
                ts[i].last_result = {"epoch": float(e), "v": float(best_so_far[c, i, e - 1])}
                trained[i] = e
                decision = cell.result(ts[i], ts[i].last_result)
                if decision == TrialScheduler.STOP:
                    stop[i], ts[i].status = e, "TERMINATED"
                elif decision == TrialScheduler.PAUSE:
                    ts[i].status = "PAUSED"
                for cut in cell.decide():
                    j = int(cut)
                    stop[j], ts[j].status = trained[j], "TERMINATED"
                for t in ts:
                    if t.status == "PAUSED" and not cell.waiting(t):
                        t.status = "RUNNING"
        else:
            raise AssertionError(f"synchronous halving never finished cell {c}")
        out[c] = stop
    return out


def check_sync_against_sweep(design: dict, cells: int = 60, trials: int = 8, seed: int = 0) -> int:
    """Compare :func:`sync_halving_stop_epochs` (the simulation's) with
    :func:`sweep_sync_stop_epochs` (the sweep's own scheduler) on random curves; returns the
    number of cells checked. Raises on a mismatch."""
    m, grace, rf = design["max_epochs"], design["grace_period"], design["reduction_factor"]
    best = _random_curves(design, cells, trials, seed)
    ours = sync_halving_stop_epochs(best, grace, rf, m)
    sweep = sweep_sync_stop_epochs(best, grace, rf, m)
    for c in range(cells):
        if sweep[c].tolist() != ours[c].tolist():
            raise AssertionError(f"halving mismatch in cell {c}: sweep {sweep[c].tolist()}, "
                                 f"simulation {ours[c].tolist()}")
    return cells


def check_halving(design: dict, cells: int = 60, trials: int = 8, seed: int = 0) -> int:
    """The design's halving checked against the code the sweep runs for it (no early stopping:
    nothing to check, 0 cells)."""
    if design.get("halving") == NO_HALVING:
        return 0
    check = check_sync_against_sweep if design.get("halving") == "sync" else check_asha_against_ray
    return check(design, cells=cells, trials=trials, seed=seed)


def check_asha_against_ray(design: dict, cells: int = 60, trials: int = 8, seed: int = 0) -> int:
    """Compare :func:`asha_stop_epochs` with Ray's own ``_Bracket.on_result`` on random curves,
    trials of a cell arriving in order; returns the number of cells checked. Raises on a mismatch."""
    from ray.tune.schedulers.async_hyperband import _Bracket

    class _T:  # on_result reads only trial_id
        def __init__(self, i):
            self.trial_id = str(i)

    m, grace, rf = design["max_epochs"], design["grace_period"], design["reduction_factor"]
    best = _random_curves(design, cells, trials, seed)
    ours = asha_stop_epochs(best, grace, rf, m)
    for c in range(cells):
        b = _Bracket(grace, m, rf, 0)
        for i in range(trials):
            stop = m
            for epoch in range(1, m + 1):
                if np.isnan(best[c, i, epoch - 1]):
                    stop = epoch - 1
                    break
                if epoch >= m:  # the scheduler ends a trial at max_t without asking the bracket
                    break
                if b.on_result(_T(i), epoch, float(best[c, i, epoch - 1])) == "STOP":
                    stop = epoch
                    break
            if stop != ours[c, i]:
                raise AssertionError(f"ASHA mismatch in cell {c}, trial {i}: Ray {stop}, ours {ours[c, i]}")
    return cells


def check_through_loader(sim: dict, margin: float, n: int = 5) -> int:
    """The first ``n`` experiments through the loader-shaped path (``replicate_differences`` and
    ``look``) give the differences and decisions the vectorised path gives."""
    frame = confirm_frame({k: v[:n] for k, v in sim.items()})
    d = replicate_differences(frame, "final_test_accuracy", by="sim")
    ours = replicate_differences_points(sim)[:n]
    got = (100 * d["difference"].to_numpy()).reshape(ours.shape)
    if not np.allclose(got, ours):
        raise AssertionError("replicate_differences disagrees with the simulation's differences")
    for e in range(n):
        res = look(frame[frame["sim"] == e], SEQUENTIAL, margin_points=margin, final=True)
        vec = decide(ours[e:e + 1], SEQUENTIAL, margin)
        expect = "winner" if vec["winner_sign"][0] else "equivalent" if vec["equivalent"][0] else "undecided"
        if res["decision"] != expect:
            raise AssertionError(f"look() says {res['decision']}, decide() says {expect}")
    return n


def evaluate(diffs: np.ndarray, margin: float) -> dict[str, dict]:
    """Per design: decisions (+1 arm a, -1 arm b, 0 none, 2 equivalent) and replicates used."""
    out = {}
    for r in FIXED:
        res = decide(diffs[:, :r], Plan(r, r), margin)
        dec = np.where(res["winner_sign"] != 0, res["winner_sign"], np.where(res["equivalent"], 2, 0))
        out[f"R={r}"] = {"decision": dec, "replicates": np.full(len(diffs), r)}
    out[f"seq {SEQUENTIAL.first_look}..{SEQUENTIAL.max_replicates}"] = run_sequential(
        diffs[:, :SEQUENTIAL.max_replicates], SEQUENTIAL, margin)
    for f in BUDGET_FINAL:
        plan = replace(SEQUENTIAL, final_look=f)
        out[f"seq {SEQUENTIAL.first_look}..{SEQUENTIAL.max_replicates}, budget ends it at R={f}"] = \
            run_sequential(diffs[:, :f], plan, margin)
    return out


def _rate(x: np.ndarray) -> tuple[float, float]:
    p = float(np.mean(x))
    return p, float(np.sqrt(max(p * (1 - p), 1e-12) / len(x)))


def main(argv: list[str] | None = None) -> int:
    trials, seeds, shipped = shipped_design()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiments", type=int, default=10000, help="simulated experiments per scenario")
    ap.add_argument("--seeds", type=int, default=seeds,
                    help=f"confirmation seeds per arm and replicate (K; default.yaml: {seeds})")
    ap.add_argument("--trials", type=int, default=trials,
                    help=f"search trials per arm and replicate (T; default.yaml: {trials})")
    ap.add_argument("--margin", type=float, default=MARGIN_POINTS, help="equivalence margin, points")
    ap.add_argument("--margins", type=float, nargs="*", default=[1.0, 1.5, 2.0, 2.5, 3.0],
                    help="margins for the margin table (empty: skip it)")
    ap.add_argument("--smoke-test", action="store_true", help="tiny run (seconds) that only checks it works")
    args = ap.parse_args(argv)
    if args.experiments < 1 or args.seeds < 1 or args.trials < 2 or not 0 < args.margin < 100:
        print("error: --experiments and --seeds must be >= 1, --trials >= 2, --margin in (0, 100)",
              file=sys.stderr)
        return 2
    scenarios = SCENARIOS
    if args.smoke_test:
        args.experiments, args.margins = 60, [args.margin]
        keep = ("null", "skewed null", "divergence (selu, lr > 3e-3)", "effect 2",
                "effect 2, real-run spread")
        scenarios = {k: SCENARIOS[k] for k in keep}
    t0 = time.perf_counter()
    model = {**DESIGN, **shipped}
    checked = check_halving(model, trials=args.trials)
    n = args.experiments
    R = max(max(FIXED), SEQUENTIAL.max_replicates)
    b = boundary(SEQUENTIAL, SEQUENTIAL.first_look, args.margin)
    if model["halving"] == NO_HALVING:
        schedule = f"no early stopping, every trial to {model['max_epochs']} epochs"
    else:
        rungs = [r for r in asha_rungs(model["max_epochs"], model["grace_period"], model["reduction_factor"])
                 if r < model["max_epochs"]]
        against = "the sweep's SyncHalvingCell" if model["halving"] == "sync" else "Ray's _Bracket"
        schedule = (f"{model['halving']} successive halving grace {model['grace_period']} rf "
                    f"{model['reduction_factor']} max {model['max_epochs']} epochs (rungs {rungs}, checked "
                    f"against {against} on {checked} cells)")
    print(f"# {n} simulated experiments per scenario; T={args.trials} trials per arm and replicate, "
          f"K={args.seeds} seeds, {schedule}; margin ±{args.margin:g} points; "
          f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"# sequential plan {SEQUENTIAL.first_look}..{SEQUENTIAL.max_replicates}: nominal two-sided "
          f"alpha per look {b['nominal_alpha']:.4f}, TOST one-sided alpha per look "
          f"{b['equivalence_alpha']:.4f}")
    print("# winner: scenario with no effect: rate of naming ANY winner (false winners); with an effect: "
          "rate of naming the planted winner (power). ± = 1 Monte Carlo s.e.")
    print("| scenario | design | sd of diff (points) | mean diff (points) | winner | ± | wrong way | "
          "equivalent | mean R | 95th pct R |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    failed, noted, rows = [], [], {}
    for i, (name, (kw, effect, null)) in enumerate(scenarios.items()):
        sim = simulate_design(n, R, seeds=args.seeds, trials=args.trials, effect_points=effect,
                              rng=100 + i, **{**shipped, **kw})
        if i == 0:
            check_through_loader(sim, args.margin)
        diffs = replicate_differences_points(sim)  # relu - selu: an effect makes it negative
        for design, res in evaluate(diffs, args.margin).items():
            dec, used = res["decision"], res["replicates"]
            win = (dec == 1) | (dec == -1) if null else dec == -1
            p, se = _rate(win)
            wrong = float(np.mean(dec == 1)) if not null else float("nan")
            eq = float(np.mean(dec == 2))
            rows[(name, design)] = (p, se, eq, float(used.mean()))
            wrong_cell = "" if null else f"{wrong:.3f}"
            print(f"| {name} | {design} | {diffs[:, :int(used.max())].std():.2f} | {diffs.mean():+.2f} | "
                  f"{p:.3f} | {se:.3f} | {wrong_cell} | {eq:.3f} | {used.mean():.2f} | "
                  f"{np.percentile(used, 95):.0f} |")
            if null and p > ALPHA + 2 * se:
                (noted if name in NOT_CHECKED else failed).append(f"{name} / {design}: {p:.3f}")
    if args.margins:
        print()
        print("# margin table, sequential plan: P(equivalent) with no difference and with a true "
              "difference equal to the margin (no CRN: the measured spread)")
        print("| margin (points) | P(eq), diff 0, CRN | P(eq), diff 0, no CRN | P(eq), diff = margin, CRN "
              "| P(eq), diff = margin, no CRN | mean R at diff 0, CRN |")
        print("|---|---|---|---|---|---|")
        base = {c: replicate_differences_points(simulate_design(
            n, SEQUENTIAL.max_replicates, seeds=args.seeds, trials=args.trials, crn=c, rng=900 + c,
            **shipped))
            for c in (True, False)}
        for j, m in enumerate(args.margins):
            at0 = {c: run_sequential(base[c], SEQUENTIAL, m) for c in base}
            atm = {c: run_sequential(replicate_differences_points(simulate_design(
                n, SEQUENTIAL.max_replicates, seeds=args.seeds, trials=args.trials, crn=c,
                effect_points=m, rng=950 + 2 * j + c, **shipped)), SEQUENTIAL, m) for c in base}
            eq = {(c, k): np.mean(v[c]["decision"] == 2) for k, v in (("0", at0), ("m", atm)) for c in base}
            print(f"| {m:g} | {eq[True, '0']:.3f} | {eq[False, '0']:.3f} | {eq[True, 'm']:.3f} | "
                  f"{eq[False, 'm']:.3f} | {at0[True]['replicates'].mean():.2f} |")
    print(f"# {time.perf_counter() - t0:.0f} s")
    if args.smoke_test:
        print("smoke test: ran every step (no calibration check at this size)")
        return 0
    if noted:
        print("NOTED (not checked: " + "; ".join(f"{k}: {v}" for k, v in NOT_CHECKED.items())
              + "): above 0.05 + 2 MC s.e. in: " + "; ".join(noted))
    if failed:
        print("CHECK FAILED: false-winner rate above 0.05 + 2 MC s.e. in: " + "; ".join(failed))
        return 1
    print(f"CHECK: false-winner rate <= 0.05 (+ 2 MC s.e.) in every scenario but {' and '.join(NOT_CHECKED)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
