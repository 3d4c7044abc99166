#!/usr/bin/env python
"""Sweep-level costs: per-trial fixed cost under Ray Tune, ASHA's saving, GPU packing.

Three benchmarks, each printing a table and a ratio against a baseline measured in the same run:

* ``overhead``: a sweep of short trials run the way the sweep runs them
  (``tune.with_parameters(train_cnn, data=dataset)``, 1 CPU per trial, ``--concurrency`` at once,
  the sweep's snapshot period, completion records and checkpoint settings from ``sweeps.runner``).
  Duty cycle = sum of the trials' ``epoch_seconds`` / (wall x concurrency); fixed cost per trial =
  (wall x concurrency - sum of epoch seconds) / trials. Arms: A fresh actor per trial (Tune's
  default), B the sweep's ``reuse_actors`` (``sweeps.runner.REUSE_ACTORS``: on), interleaved A B A B;
  target: B's duty cycle >= 0.9 for 15-second trials. Trial k has seed k in both
  arms, so a reused actor that leaked Keras state into the next trial would change its metrics:
  the last column compares each B trial's val_accuracy with the same seed's A trial.
* ``asha``: the same seeded search (``sweeps.runner.run_sweep``, search stage only) with early
  stopping off and on. Epochs trained and each arm's best final val_accuracy among finished trials
  (what the sweep confirms); target: within 1 point using <= 40% of the epochs.
* ``gpu-packing``: k = 1, 2, 4, 8 training loops (``trainable.train.train_loop``, plain Keras 3, no
  Ray) in k processes sharing one GPU (each capped at 1/k of its memory, as a sweep with
  ``gpus_per_trial: 1/k`` does); aggregate images/s against k = 1. Runs on any Keras backend.

    python benchmarks/bench_sweep.py overhead [--trials 20] [--pairs 2] [--epochs 1] [--images 5000]
    python benchmarks/bench_sweep.py asha [--data-dir DIR] [--num-samples 6] [--images 2000]
    python benchmarks/bench_sweep.py gpu-packing [--k 1,2,4,8] [--images 10000] [--epochs 3]
    python benchmarks/bench_sweep.py {overhead,asha,gpu-packing} --smoke-test
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_trainable import Clock, UsageError, load_data, trial_config  # noqa: E402

SMOKE: dict[str, dict[str, Any]] = {
    "overhead": {"trials": 4, "pairs": 1, "epochs": 1, "images": 200, "val": 100},
    "asha": {"num_samples": 3, "images": 300, "val": 100, "epochs_low": 1, "epochs_high": 4, "grace": 1},
    "gpu-packing": {"k": "1,2", "images": 200, "val": 100, "epochs": 1, "repeats": 1},
}
DUTY_TARGET_TRIAL_S = 15.0
DUTY_TARGET = 0.9  # the sweep's duty cycle for trials of DUTY_TARGET_TRIAL_S (issue 15)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="bench", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="cifar-10-batches-py directory or archive (default: synthetic)")
    common.add_argument("--smoke-test", action="store_true", help="tiny preset (seconds) for the test suite")
    common.add_argument("--val", type=int, default=500, help="validation images (default 500)")

    o = sub.add_parser("overhead", parents=[common], help="per-trial fixed cost; reuse_actors")
    o.add_argument("--trials", type=int, default=20, help="trials per arm and pair (default 20)")
    o.add_argument("--pairs", type=int, default=2, help="interleaved A/B pairs (default 2)")
    o.add_argument("--epochs", type=int, default=1, help="epochs per trial (default 1)")
    o.add_argument("--images", type=int, default=5000, help="training images per epoch (default 5000)")
    o.add_argument("--concurrency", type=int, default=2, help="trials at once, 1 CPU each (default 2)")

    a = sub.add_parser("asha", parents=[common], help="epochs and best val acc with and without ASHA")
    a.add_argument("--num-samples", type=int, default=6, help="trials per arm (default 6)")
    a.add_argument("--images", type=int, default=2000, help="training images (default 2000)")
    a.add_argument("--epochs-low", type=int, default=3, help="search space epochs low (default 3)")
    a.add_argument("--epochs-high", type=int, default=27, help="search space epochs high (default 27)")
    a.add_argument("--grace", type=int, default=3, help="ASHA grace period (default 3)")
    a.add_argument("--seed", type=int, default=0, help="search.seed (default 0)")
    a.add_argument("--concurrency", type=int, default=2, help="CPUs for Ray, 1 per trial (default 2)")

    g = sub.add_parser("gpu-packing", parents=[common], help="k training loops on one GPU")
    g.add_argument("--k", default="1,2,4,8", help="loop counts, comma-separated (default 1,2,4,8)")
    g.add_argument("--images", type=int, default=10000, help="training images per epoch (default 10000)")
    g.add_argument("--epochs", type=int, default=3, help="timed epochs per loop after 1 warm-up (default 3)")
    g.add_argument("--repeats", type=int, default=2, help="interleaved rounds over k (default 2)")
    g.add_argument("--threads", type=int, default=1, help="CPU threads per loop (default 1)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="trial config override, e.g. --set steps_per_execution=8")

    args = p.parse_args(argv)
    if args.smoke_test:
        for key, value in SMOKE[args.bench].items():
            setattr(args, key, value)
    positive = {"overhead": ("trials", "pairs", "epochs", "images", "val", "concurrency"),
                "asha": ("num_samples", "images", "val", "epochs_low", "grace", "concurrency"),
                "gpu-packing": ("images", "val", "epochs", "repeats", "threads")}[args.bench]
    for key in positive:
        if getattr(args, key) < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.bench == "asha" and args.epochs_high <= args.epochs_low:
        raise UsageError(f"--epochs-high must be > --epochs-low, got {args.epochs_high} <= {args.epochs_low}")
    if args.bench == "gpu-packing":
        try:
            args.k = [int(v) for v in str(args.k).split(",")]
        except ValueError:
            raise UsageError(f"--k {args.k!r}: use comma-separated whole numbers, e.g. 1,2,4,8") from None
        if not args.k or min(args.k) < 1:
            raise UsageError(f"--k {args.k}: every count must be >= 1")
    if args.data_dir and not os.path.exists(args.data_dir):
        raise UsageError(f"--data-dir {args.data_dir}: no such file or directory; "
                         "make one with ../shared/tools/cifar10_to_batches.py or drop the flag")
    return args


def machine_line() -> str:
    try:
        load = "load average " + ", ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        load = "load average unknown"
    return (f"{platform.machine()}, {os.cpu_count()} CPUs ({load} at the end), "
            f"Python {platform.python_version()}")


def start_local_ray(num_cpus: int):
    """A private local Ray with ``num_cpus`` CPUs, quiet like the sweep's (``sweeps.ray_session``)."""
    import ray

    from sweeps.ray_session import quiet_logs
    from sweeps.runner import EXPERIMENT_CHECKPOINT_S

    quiet_logs()
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = EXPERIMENT_CHECKPOINT_S  # as run_sweep sets it
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    return ray


# --------------------------------------------------------------------------------------------
# 1. Per-trial fixed cost and duty cycle


def run_trials(trainable, storage: str, name: str, trials: int, epochs: int, concurrency: int,
               reuse: bool) -> dict[str, Any]:
    """One Tune run of ``trials`` trials (seed k for trial k); wall time and per-trial results."""
    from ray import tune

    from sweeps.runner import CompletionRecords, trial_dirname

    tuner = tune.Tuner(
        trainable,
        param_space={"seed": tune.grid_search(list(range(trials))), "epochs": epochs, "arm": "relu"},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=reuse,
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0, callbacks=[CompletionRecords()],
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
    t0 = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - t0
    rows = []
    for r in results:
        if r.error is not None:
            raise RuntimeError(f"{name}: trial seed={r.config.get('seed')} failed: {r.error}")
        df = r.metrics_dataframe
        rows.append({"seed": r.config["seed"], "epoch_s": float(df["epoch_seconds"].sum()),
                     "val_accuracy": float(df["val_accuracy"].iloc[-1]), "pid": r.metrics.get("pid")})
    return {"wall": wall, "rows": rows}


def overhead(args: argparse.Namespace) -> int:
    from ray import tune

    from sweeps.runner import REUSE_ACTORS
    from trainable import train_cnn

    data = load_data(args)
    ray = start_local_ray(args.concurrency)
    trainable = tune.with_resources(tune.with_parameters(train_cnn, data=data), {"cpu": 1})
    arms = (("A fresh actors", False), ("B reuse_actors", REUSE_ACTORS))  # B: the sweep's setting
    runs: list[tuple[str, int, dict[str, Any]]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            # Warm-up (not counted): the first trials of a Ray session also start its worker pool.
            run_trials(trainable, tmp, "warmup", args.concurrency, 1, args.concurrency, False)
            for pair in range(1, args.pairs + 1):
                for name, reuse in arms:
                    run = run_trials(trainable, tmp, f"{name[0]}{pair}", args.trials, args.epochs,
                                     args.concurrency, reuse)
                    runs.append((name, pair, run))
                    print(f"pair {pair}/{args.pairs} {name}: {run['wall']:.1f} s", file=sys.stderr)
    finally:
        ray.shutdown()

    import keras

    by_seed = {(name[0], pair): {r["seed"]: r["val_accuracy"] for r in run["rows"]}
               for name, pair, run in runs}
    print(f"# {data.source}: {len(data.y_train)} train / {len(data.y_val)} val images; "
          f"{args.trials} trials x {args.epochs} epoch(s) per run, {args.concurrency} at once (1 CPU each), "
          f"batch 100; Ray Tune, tune.with_parameters(train_cnn); Keras {keras.__version__} "
          f"({keras.backend.backend()}); {machine_line()}; runs interleaved A B A B")
    print("| run            | pair | wall s | sum epoch s | mean epoch s | duty cycle | fixed s/trial "
          "| actors | duty at 15 s trials | max abs val_acc diff vs A |")
    print("|----------------|------|--------|-------------|--------------|------------|---------------"
          "|--------|---------------------|---------------------------|")
    summary: dict[str, list[float]] = {"A": [], "B": []}
    for name, pair, run in runs:
        n = len(run["rows"])
        busy = sum(r["epoch_s"] for r in run["rows"])
        duty = busy / (run["wall"] * args.concurrency)
        fixed = (run["wall"] * args.concurrency - busy) / n
        actors = len({r["pid"] for r in run["rows"]})
        projected = DUTY_TARGET_TRIAL_S / (DUTY_TARGET_TRIAL_S + fixed)
        a = by_seed["A", pair]
        diff = max(abs(v - a[s]) for s, v in by_seed[name[0], pair].items())
        summary[name[0]].append(fixed)
        print(f"| {name:<14} | {pair:4d} | {run['wall']:6.1f} | {busy:11.1f} | {busy / n:12.2f} | "
              f"{duty:10.2f} | {fixed:13.2f} | {actors:6d} | {projected:19.2f} | {diff:25.4f} |")
    fa, fb = statistics.median(summary["A"]), statistics.median(summary["B"])
    t = DUTY_TARGET_TRIAL_S
    print(f"median fixed cost per trial: A {fa:.2f} s, B {fb:.2f} s; ratio B/A {fb / fa:.3f}; "
          f"duty cycle of {t:.0f}-second trials: A {t / (t + fa):.2f}, B {t / (t + fb):.2f} "
          f"(target for B, the sweep's setting: >= {DUTY_TARGET:.1f})")
    ok = all(math.isfinite(v) for v in (fa, fb)) and fa > 0
    return 0 if ok else 1


# --------------------------------------------------------------------------------------------
# 2. ASHA's saving


def asha_config(args: argparse.Namespace, storage: str, early_stopping: bool):
    from sweeps.config import DEFAULT_CONFIG, ConfigError, parse_config, read_yaml

    sets = ["search.replicates=1", f"search.num_samples={args.num_samples}", f"search.seed={args.seed}",
            f"search.space.epochs.low={args.epochs_low}", f"search.space.epochs.high={args.epochs_high}",
            f"search.early_stopping.enabled={str(early_stopping).lower()}",
            f"search.early_stopping.grace_period={args.grace}", "confirm.enabled=false",
            f"data.val_size={args.val}", "resources.cpus_per_trial=1"]
    if args.data_dir:
        sets += [f"data.train_subset={args.images}"]
        flags = {"data.data_dir": args.data_dir}
    else:
        sets += ["data.source=synthetic", f"data.synthetic.train={args.images + args.val}",
                 "data.synthetic.test=100"]
        flags = {}
    flags.update(name=f"asha_{'on' if early_stopping else 'off'}", storage_path=storage)
    try:
        return parse_config(read_yaml(DEFAULT_CONFIG), sets, flags)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def search_summary(path: str) -> dict[str, Any]:
    """Epochs trained, trials stopped early and each arm's best final val_accuracy (finished trials)."""
    from analysis.load import load_results

    res = load_results([path])
    epochs = res.epochs[res.epochs["stage"] == "search"]
    trials = res.trials[res.trials["stage"] == "search"]
    last = epochs.sort_values("epoch").groupby("trial_id").tail(1).set_index("trial_id")
    finished = trials[trials["status"] == "finished"]["trial_id"]
    best = last.loc[last.index.isin(finished)].groupby("arm")["val_accuracy"].max()
    return {"epochs": int(len(epochs)), "trials": int(len(trials)),
            "stopped": int((trials["status"] == "stopped_early").sum()), "best": best.to_dict()}


def asha(args: argparse.Namespace) -> int:
    from sweeps.prepare import RunOptions
    from sweeps.prepare import load_data as sweep_data
    from sweeps.runner import run_sweep
    from trainable.cifar10 import DataError

    asha_config(args, "results", True)  # bad input fails here, before Ray starts
    ray = start_local_ray(args.concurrency)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            dataset = None
            for enabled in (False, True):
                cfg = asha_config(args, tmp, enabled)
                try:
                    dataset = sweep_data(cfg) if dataset is None else dataset
                except DataError as exc:
                    raise UsageError(str(exc)) from None
                with Clock() as clock, contextlib.redirect_stdout(sys.stderr):
                    path = run_sweep(cfg, RunOptions(skip_confirm=True, report=False), dataset=dataset)
                rows.append(("ASHA" if enabled else "no early stopping", clock.wall, search_summary(path)))
    finally:
        ray.shutdown()

    base = rows[0][2]
    arms = sorted(base["best"])
    print(f"# {dataset.source}: {len(dataset.y_train)} train / {len(dataset.y_val)} val images; "
          f"default.yaml search, 1 replicate, {args.num_samples} trials per arm, epochs "
          f"{args.epochs_low}-{args.epochs_high}, search.seed {args.seed}, ASHA grace {args.grace} "
          f"reduction 3; {args.concurrency} trials at once; {machine_line()}")
    print("| run                | wall s | trials | stopped early | epochs trained | epochs vs off | "
          + " | ".join(f"best final val_acc {a}" for a in arms) + " | " + " | ".join(f"diff {a} (points)"
                                                                              for a in arms) + " |")
    print("|--------------------|--------|--------|---------------|----------------|---------------|"
          + "|".join("-" * (22 + len(a)) for a in arms) + "|"
          + "|".join("-" * (17 + len(a)) for a in arms) + "|")
    for name, wall, s in rows:
        ratio = s["epochs"] / base["epochs"]
        best = " | ".join(f"{s['best'].get(a, math.nan):{20 + len(a)}.4f}" for a in arms)
        diff = " | ".join(f"{100 * (s['best'].get(a, math.nan) - base['best'][a]):{15 + len(a)}.2f}"
                          for a in arms)
        print(f"| {name:<18} | {wall:6.1f} | {s['trials']:6d} | {s['stopped']:13d} | {s['epochs']:14d} | "
              f"{ratio:13.2f} | {best} | {diff} |")
    on = rows[1][2]
    ratio = on["epochs"] / base["epochs"]
    worst = min(100 * (on["best"].get(a, math.nan) - base["best"][a]) for a in arms)
    print(f"ASHA trained {ratio:.2f} of the epochs (target <= 0.40); worst best-val-acc change "
          f"{worst:+.2f} points (target >= -1)")
    return 0 if math.isfinite(ratio) and ratio > 0 else 1


# --------------------------------------------------------------------------------------------
# 3. GPU packing


def _packed_loop(rank: int, k: int, args: dict[str, Any], cfg: dict[str, Any], barrier, queue) -> None:
    """One of ``k`` loops: 1 warm-up epoch, wait for all, then the timed epochs."""
    try:
        from trainable._backend import configure_process

        configure_process(args["threads"], 1.0 / k if k > 1 else 0.0)
        data = load_data(argparse.Namespace(**args))
        from trainable.train import train_loop

        marks: list[float] = []

        def report(metrics: dict[str, float], checkpoint_dir: str | None) -> None:
            if metrics["epoch"] == 1:
                barrier.wait(timeout=600)  # every loop compiled and warm: start the clock together
            marks.append(time.time())

        train_loop({**cfg, "epochs": args["epochs"] + 1, "seed": rank}, data, report)
        queue.put((rank, marks[0], marks[-1], len(data.y_train) * args["epochs"], None))
    except Exception as exc:  # report it instead of hanging the parent
        with contextlib.suppress(Exception):
            barrier.abort()
        queue.put((rank, math.nan, math.nan, 0, f"{exc.__class__.__name__}: {exc}"))


def run_packed(k: int, args: argparse.Namespace, cfg: dict[str, Any]) -> tuple[float, float]:
    """(aggregate images/s, wall s of the timed part) of ``k`` loops in ``k`` processes."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(k), ctx.Queue()
    plain = {key: getattr(args, key) for key in ("data_dir", "images", "val", "epochs", "threads")}
    procs = [ctx.Process(target=_packed_loop, args=(i, k, plain, cfg, barrier, queue)) for i in range(k)]
    for p in procs:
        p.start()
    out = [queue.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
    errors = [e for *_, e in out if e]
    if errors:
        raise RuntimeError(f"k={k}: a training loop failed: {errors[0]}")
    wall = max(o[2] for o in out) - min(o[1] for o in out)
    return sum(o[3] for o in out) / wall, wall


def gpu_packing(args: argparse.Namespace) -> int:
    cfg = trial_config(args.set, args.epochs + 1)
    load_data(args)  # bad --data-dir fails here, before any process starts
    results: dict[int, list[tuple[float, float]]] = {k: [] for k in args.k}
    for rnd in range(1, args.repeats + 1):
        for k in args.k:
            rate, wall = run_packed(k, args, cfg)
            results[k].append((rate, wall))
            print(f"round {rnd}/{args.repeats} k={k}: {rate:.0f} images/s", file=sys.stderr)

    import keras

    from trainable._backend import configure_process

    configure_process(1)
    devices = "CPU only"
    with contextlib.suppress(Exception):
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            devices = f"{len(gpus)} GPU(s)" if gpus else devices
        elif keras.backend.backend() == "jax":
            import jax

            devices = ", ".join(sorted({d.platform for d in jax.devices()}))
    base = statistics.median(r for r, _ in results[min(args.k)])
    print(f"# {'synthetic' if not args.data_dir else args.data_dir}: {args.images} train images per loop "
          f"per epoch, {args.epochs} timed epochs after 1 warm-up, batch {cfg['batch_size']}, "
          f"steps_per_execution {cfg['steps_per_execution']}; {args.threads} thread(s) per loop; "
          f"Keras {keras.__version__} ({keras.backend.backend()}), devices: {devices}; {machine_line()}; "
          "rounds interleaved over k")
    print("| k loops | median aggregate images/s | per loop images/s | x k=" + str(min(args.k))
          + " | rounds (images/s) |")
    print("|---------|---------------------------|-------------------|------|-------------------|")
    for k in args.k:
        rate = statistics.median(r for r, _ in results[k])
        print(f"| {k:7d} | {rate:25.0f} | {rate / k:17.0f} | {rate / base:4.2f} | "
              f"{', '.join(f'{r:.0f}' for r, _ in results[k])} |")
    return 0 if math.isfinite(base) and base > 0 else 1


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        if args.bench != "gpu-packing":
            from trainable._backend import configure_process

            configure_process(1)  # the driver trains nothing; keep its threads off the trials' cores
        return {"overhead": overhead, "asha": asha, "gpu-packing": gpu_packing}[args.bench](args)
    except UsageError as exc:
        print(f"bench_sweep: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
