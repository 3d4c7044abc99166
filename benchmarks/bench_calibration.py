#!/usr/bin/env python
"""Calibration of the whole decision rule, by Monte Carlo on simulated sweeps with known truth.

Each simulated experiment is a sweep shaped like the loader's output (benchmarks/simulate.py): two
arms, R replicates of a 12-trial ASHA-like search per arm on a response surface peaking at 66%
(search luck: each replicate's tuned configuration falls short of the peak by a random amount),
5 confirmation seeds per tuned configuration, 1% diverged runs. All experiments of one setting go
through ``analysis.decision.decision_tests`` and ``activation_decision`` at once (a ``sim``
column names the experiment): the same functions, and the same Holm family, the report uses.

Rows: R = 1, 3, 5 replicates; planted effect 0 (identical arms: any winner is false) and 1, 2, 5
points (arm ``selu`` better: power = how often it is named). Columns compare, on the same data:

* the decision rule (paired t on replicate means, Holm over every reported test, no test below
  3 replicates or with zero spread),
* the same paired t-test alone (no Holm family: what the test itself does),
* a hierarchical bootstrap (replicates, then seeds within; percentile 95% interval; 1,000
  resamples), the other candidate,
* the OLD rule (today's stats.py before this change: Welch's t-test across the confirmation
  seeds of each arm's tuned configuration(s), diverged runs included, seeds of all replicates
  pooled as if independent).

    python benchmarks/bench_calibration.py [--experiments 2000] [--smoke-test]

Exit 1 if the decision rule's false-winner rate exceeds 0.05 plus twice its Monte Carlo
standard error at any R (not checked with --smoke-test, whose sample is too small).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.decision import activation_decision, decision_tests  # noqa: E402
from benchmarks.simulate import simulate  # noqa: E402

ALPHA = 0.05
ARMS = ("relu", "selu")


def _values(trials: pd.DataFrame, n: int, r: int, k: int, keep_diverged: bool) -> np.ndarray:
    """Confirmation test accuracy as an array (sim, replicate, arm, seed); NaN where diverged
    unless ``keep_diverged`` (the old rule counted diverged runs' accuracy)."""
    c = trials[trials["stage"] == "confirm"]
    v = c["final_test_accuracy"].to_numpy(float)
    if not keep_diverged:
        v = np.where(c["status"].to_numpy() == "diverged", np.nan, v)
    return v.reshape(n, r, len(ARMS), k)  # simulate() emits confirm rows in exactly this order


def old_rule(values: np.ndarray) -> np.ndarray:
    """Winner per experiment under the old rule: Welch across all seeds of each arm (pooled over
    replicates), significant when p < 0.05 and the 95% CI excludes 0. 0: none, +1: selu, -1: relu."""
    n = values.shape[0]
    a = values[:, :, 0, :].reshape(n, -1)
    b = values[:, :, 1, :].reshape(n, -1)
    res = stats.ttest_ind(b, a, axis=1, equal_var=False)
    ci = res.confidence_interval(0.95)
    sig = (res.pvalue < ALPHA) & ((ci.low > 0) | (ci.high < 0))
    return np.where(sig, np.sign(b.mean(1) - a.mean(1)), 0)


def paired_alone(tests: pd.DataFrame, n: int) -> np.ndarray:
    """The primary paired t-test by itself (no Holm family), same data and guards."""
    p = tests[tests["primary"]].set_index("sim").reindex(range(n))
    sig = p["p_value"].to_numpy(float) < ALPHA
    return np.where(sig, -np.sign(p["estimate"].to_numpy(float)), 0)  # estimate = relu - selu


def hierarchical_bootstrap(values: np.ndarray, rng: np.random.Generator, resamples: int = 1000,
                           chunk: int = 100) -> np.ndarray:
    """Percentile bootstrap of the selu - relu mean: resample replicates (paired), then seeds
    within each arm's replicate; winner when the 95% interval excludes 0."""
    n, r, _, k = values.shape
    out = np.zeros(n)
    for s in range(0, n, chunk):
        v = values[s:s + chunk]
        m = len(v)
        ri = rng.integers(0, r, (m, resamples, r))
        ki = rng.integers(0, k, (m, resamples, r, 2, k))
        e = np.arange(m)[:, None, None, None, None]
        picked = v[e, ri[..., None, None], np.arange(2)[None, None, None, :, None], ki]
        with warnings.catch_warnings():  # an all-diverged resample is NaN, and is dropped below
            warnings.simplefilter("ignore", RuntimeWarning)
            means = np.nanmean(picked, axis=(2, 4))  # (m, resamples, arm)
        diff = means[..., 1] - means[..., 0]
        lo, hi = np.nanpercentile(diff, [2.5, 97.5], axis=1)
        out[s:s + m] = np.where(lo > 0, 1, np.where(hi < 0, -1, 0))
    return out


def run_setting(n: int, r: int, effect: float, seeds: int, trials: int, p_diverge: float,
                seed: int) -> dict:
    t0 = time.perf_counter()
    tr, ep = simulate(n, r, seeds=seeds, trials=trials, effect_points=effect, p_diverge=p_diverge,
                      rng=seed, arms=ARMS)
    tests = decision_tests(tr, ep, by="sim")
    dec = activation_decision(tests, by="sim").set_index("sim").reindex(range(n))
    winner = dec["winner"].to_numpy(object)
    new = np.where(winner == "selu", 1, np.where(winner == "relu", -1, 0))
    values = _values(tr, n, r, seeds, keep_diverged=False)
    boot = hierarchical_bootstrap(values, np.random.default_rng(seed + 1))
    old = old_rule(_values(tr, n, r, seeds, keep_diverged=True))
    alone = paired_alone(tests, n)
    target = 1 if effect > 0 else 0

    def rate(x):  # effect 0: any winner (false); effect > 0: the planted winner (power)
        return float(np.mean(x != 0) if target == 0 else np.mean(x == 1))

    fam = tests.groupby("sim")["p_value"].count()
    return {"R": r, "effect": effect, "rule": rate(new), "rule_wrong": float(np.mean(new == -1)),
            "paired_alone": rate(alone), "bootstrap": rate(boot), "old_rule": rate(old),
            "family": float(fam.mean()), "shortfall_mean": tr.attrs["shortfall_mean"],
            "shortfall_sd": tr.attrs["shortfall_sd"], "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiments", type=int, default=2000, help="simulated experiments per setting")
    ap.add_argument("--replicates", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--effects", type=float, nargs="+", default=[0.0, 1.0, 2.0, 5.0],
                    help="planted effects in points (0 = identical arms)")
    ap.add_argument("--seeds", type=int, default=5, help="confirmation seeds per tuned configuration")
    ap.add_argument("--trials", type=int, default=12, help="search trials per arm per replicate")
    ap.add_argument("--p-diverge", type=float, default=0.01, help="chance a confirmation run diverges")
    ap.add_argument("--smoke-test", action="store_true", help="tiny run (seconds) that only checks it works")
    args = ap.parse_args(argv)
    if args.smoke_test:
        args.experiments, args.replicates, args.effects = 30, [1, 3], [0.0, 5.0]
        args.seeds, args.trials = 3, 6
    if args.experiments < 1 or args.seeds < 2 or args.trials < 1 or min(args.replicates) < 1:
        print("error: --experiments, --trials and --replicates must be >= 1 and --seeds >= 2",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    rows = [run_setting(args.experiments, r, e, args.seeds, args.trials, args.p_diverge, seed=1000 * r)
            for r in args.replicates for e in args.effects]
    total = time.perf_counter() - t0
    n = args.experiments
    print(f"# {n} simulated experiments per row; {args.trials} search trials per arm per replicate, "
          f"{args.seeds} seeds, {args.p_diverge:.0%} diverged runs; {platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}; {total:.0f} s")
    print("# effect 0: rate of naming ANY winner (false winners); effect > 0: rate of naming the planted "
          "winner (power). ± = Monte Carlo 95% half-width of the decision rule's rate.")
    print("| R | effect (points) | decision rule | ± | wrong winner | paired t alone | hier. bootstrap "
          "| OLD rule | tests in family | search shortfall mean / sd (points) | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    failed = []
    for row in rows:
        mc = 1.96 * np.sqrt(max(row["rule"] * (1 - row["rule"]), 1e-12) / n)
        print(f"| {row['R']} | {row['effect']:g} | {row['rule']:.3f} | {mc:.3f} | {row['rule_wrong']:.3f} | "
              f"{row['paired_alone']:.3f} | {row['bootstrap']:.3f} | {row['old_rule']:.3f} | "
              f"{row['family']:.1f} | {100 * row['shortfall_mean']:.2f} / {100 * row['shortfall_sd']:.2f} | "
              f"{row['seconds']:.0f} |")
        if row["effect"] == 0 and row["rule"] > ALPHA + 2 * np.sqrt(ALPHA * (1 - ALPHA) / n):
            failed.append(row["R"])
    if args.smoke_test:
        print("smoke test: ran every step (no calibration check at this size)")
        return 0
    if failed:
        print(f"CHECK FAILED: false-winner rate above 0.05 + 2 MC s.e. at R={failed}")
        return 1
    print("CHECK: false-winner rate <= 0.05 (+ 2 MC s.e.) at every R")
    return 0


if __name__ == "__main__":
    sys.exit(main())
