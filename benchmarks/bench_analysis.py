#!/usr/bin/env python
"""Analysis speed on a large generated sweep (default 2,000 trials x 50 epochs).

The results are written in Ray Tune's on-disk layout (params.json + result.json lines per trial,
an experiment_state file), then timed against a baseline in the same run: merely reading and
JSON-parsing every result line, the floor any loader pays. Prints a table with the ratios.

    python benchmarks/bench_analysis.py [--trials 2000] [--epochs 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.load import load_results  # noqa: E402
from analysis.report import build_report, write_report  # noqa: E402


def generate(root: Path, n_trials: int, n_epochs: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    exp = root / "bench"
    states = []
    for stage, n in (("search", n_trials - 20), ("confirm", 20)):
        stage_dir = exp / stage
        for i in range(n):
            arm = ("relu", "selu")[i % 2]
            trial_id = f"{i:08x}"
            tdir = stage_dir / f"{arm}_{trial_id}"
            tdir.mkdir(parents=True)
            epochs = n_epochs  # every trial reports all its epochs: trials x epochs rows
            config = {"arm": arm, "activation": arm, "lr": float(10 ** rng.uniform(-4, -2)),
                      "epochs": epochs, "batch_size": 100, "seed": i, "stage": stage,
                      "kernel_initializer": "auto", "normalization": "scale", "dropout": 0.0}
            (tdir / "params.json").write_text(json.dumps(config))
            lines, best = [], 0.0
            for e in range(1, epochs + 1):
                val = 0.7 - 0.3 * np.exp(-e / 5) - 0.002 * max(0, e - 15) + rng.normal(0, 0.005)
                train = 0.75 - 0.35 * np.exp(-e / 5) + 0.004 * e
                best = max(best, val)
                lines.append(json.dumps({
                    "epoch": float(e), "train_loss": 1.5 - train, "train_accuracy": train,
                    "val_loss": 1.6 - val + 0.004 * max(0, e - 15), "val_accuracy": val,
                    "generalization_gap": train - val, "epoch_seconds": 10.0, "images_per_second": 4000.0,
                    "best_val_accuracy": best, "target_epochs": float(epochs), "diverged": 0.0,
                    **({"test_loss": 1.6 - val, "test_accuracy": val - 0.01} if stage == "confirm" else {}),
                    "training_iteration": e, "trial_id": trial_id, "time_total_s": 10.0 * e,
                    "config": config}))
            (tdir / "result.json").write_text("\n".join(lines) + "\n")
            states.append(json.dumps({"trial_id": trial_id, "status": "TERMINATED",
                                      "relative_logdir": tdir.name}))
        (stage_dir / "experiment_state-2026-01-01_00-00-00.json").write_text(
            json.dumps({"trial_data": [[s, "{}"] for s in states]}))
        states = []
    return exp


def baseline_read(exp: Path) -> int:
    n = 0
    for result in exp.glob("*/*/result.json"):
        with open(result) as fh:
            n += sum(1 for line in fh if json.loads(line))
    return n


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        exp = generate(Path(tmp), args.trials, args.epochs)
        gen_s = time.perf_counter() - t0
        rows = baseline_read(exp)
        results = load_results([exp])
        cases = {
            "baseline: read + json.loads every line": lambda: baseline_read(exp),
            "load_results (trials + epochs tables)": lambda: load_results([exp]),
            "build_report (statistics, verdict)": lambda: build_report(results),
            "write_report (everything, figures, files)": lambda: write_report([exp], Path(tmp) / "out"),
        }
        times = {name: timed(fn, args.repeats) for name, fn in cases.items()}
    base = statistics.mean(times["baseline: read + json.loads every line"])
    print(f"# {args.trials} trials, {rows} epoch rows (generated in {gen_s:.1f} s); "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; n={args.repeats} runs each")
    print(f"| {'step':<44} | mean s | std s | x baseline |")
    print(f"|{'-' * 46}|--------|-------|------------|")
    for name, ts in times.items():
        mean, std = statistics.mean(ts), statistics.stdev(ts) if len(ts) > 1 else 0.0
        print(f"| {name:<44} | {mean:6.2f} | {std:5.2f} | {mean / base:10.2f} |")


if __name__ == "__main__":
    main()
