"""What early-stopping schedule could train <= 40% of the epochs at the shipped design (issue 15).

Simulated sweeps of default.yaml's design (T trials per arm and replicate toward max_epochs, K = 1,
noise fitted to the real runs: ``benchmarks/simulate.py``), one replicate each, under asynchronous
successive halving (Ray's ASHA, re-implemented and checked against Ray's ``_Bracket`` in
``bench_calibration.py``: ``search.early_stopping.halving: async``) and under synchronous successive
halving (checked against the sweep's ``SyncHalvingCell``: ``halving: sync``, the default). Per
schedule: the fraction of the no-early-stopping epochs the search trains, each arm's mean true
accuracy of the chosen configuration (search quality), and the sd and mean of the replicate
differences, at the model's noise and at the real run's spread, with and without selu's optimum at
the range's edge (lr 1e-4).

    python benchmarks/bench_schedules.py                 # 4,000 experiments per row, ~5 s on 2 CPUs
    python benchmarks/bench_schedules.py --smoke-test    # seconds; tests/benchmarks
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_calibration import shipped_design  # noqa: E402
from benchmarks.simulate import (  # noqa: E402
    NO_HALVING,
    REAL_RUN_NOISE_SCALE,
    asha_rungs,
    replicate_differences_points,
    simulate_design,
)

SCHEDULES = [("async", 1, 3), ("async", 1, 4), ("async", 1, 5), ("async", 2, 3),
             ("sync", 1, 3), ("sync", 1, 2), ("sync", 2, 3), ("sync", 3, 3)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", type=int, default=4000, help="simulated experiments per row")
    ap.add_argument("--smoke-test", action="store_true", help="tiny run (seconds) that only checks it works")
    args = ap.parse_args(argv)
    if args.experiments < 10:
        ap.error("--experiments: at least 10")
    n = 40 if args.smoke_test else args.experiments
    trials, seeds, design = shipped_design()
    max_t = design["max_epochs"]
    started = time.perf_counter()
    print(f"# {n} simulated one-replicate experiments per row; T={trials} trials per arm, K={seeds}, toward "
          f"{max_t} epochs; {platform.machine()}, Python {platform.python_version()}")
    shipped = ("no early stopping" if design["halving"] == NO_HALVING else
               f"{design['halving']} grace {design['grace_period']} rf {design['reduction_factor']}")
    print(f"# shipped: {shipped}. "
          "frac = epochs trained / (T x max_epochs); true = mean true accuracy of the chosen config "
          "(points); sd/mean = replicate difference relu - selu (points)")
    print("| schedule | grace | rf | rungs | noise | selu optimum | frac | true relu | true selu | sd | "
          "mean |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for halving, grace, rf in SCHEDULES:
        for noise_name, scale in (("model", 1.0), ("real run", REAL_RUN_NOISE_SCALE)):
            for edge in (None, 1e-4):
                sim = simulate_design(n, 1, seeds=seeds, trials=trials, rng=1,
                                      **{**design, "halving": halving, "grace_period": grace,
                                         "reduction_factor": rf, "noise_scale": scale, "lr_star_b": edge})
                d = replicate_differences_points(sim)
                frac = sim["trained"].sum(-1).mean() / (trials * max_t)
                true = 100 * sim["true"].mean(axis=(0, 1))
                print(f"| {halving} | {grace} | {rf} | {asha_rungs(max_t, grace, rf)} | {noise_name} | "
                      f"{'lr 1e-4' if edge else 'same'} | {frac:.3f} | {true[0]:.2f} | {true[1]:.2f} | "
                      f"{d.std():.2f} | {d.mean():+.2f} |")
    print(f"# {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
