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
* ``asha``: the same seeded search (``sweeps.runner.run_sweep``, search stage only, default.yaml's
  design: trial i has the same lr and seed in every arm and in every run) with early stopping off,
  then under each ``--schedule HALVING,GRACE,RF`` (default: default.yaml's; repeat the flag to
  compare several against the one run without). Epochs trained, trials stopped early, and each
  arm's best val_accuracy (at its best epoch) among finished trials with the (lr, epochs) it
  chose: what the sweep confirms. Target: within 1 point in both arms using <= 40% of the epochs.
* ``gpu-packing``: k = 1, 2, 4, 8 training loops (``trainable.train.train_loop``, plain Keras 3, no
  Ray) in k processes sharing one GPU (each capped at 1/k of its memory, as a sweep with
  ``gpus_per_trial: 1/k`` does), on synthetic full-size data (45,000 images), under
  ``KERAS_BACKEND=jax`` and TensorFlow in turn: aggregate images/s against k = 1 and the GPU's
  utilisation (``nvidia-smi`` sampled every 0.5 s). One prepared script for a GPU machine
  (about 5 minutes on one GPU at the defaults); ``--smoke-test`` runs it tiny on the CPU.
* ``replicate``: the headline of the replicates-per-hour issue: one replicate of a config
  (``--set search.replicates=1``; default.yaml) run end to end through ``sweeps/run.py`` (search,
  confirmation, report) by an older checkout (``--old-tree``: its own code and its own copy of the
  config) and by this one, in turn, as a user runs it, each in a fresh Ray. Wall time of each and the
  ratio new/old (target <= 0.55). Expect 30-40 minutes on 2 CPUs with the JPEG copy of CIFAR-10.

    python benchmarks/bench_sweep.py overhead [--trials 20] [--pairs 2] [--epochs 1] [--images 5000]
    python benchmarks/bench_sweep.py asha [--data-dir DIR] [--num-samples T] [--max-epochs E] [--images 2000]
                                          [--schedule sync,1,3 --schedule async,1,3]
    python benchmarks/bench_sweep.py gpu-packing [--k 1,2,4,8] [--backends jax,tensorflow] [--images 45000]
    python benchmarks/bench_sweep.py replicate --old-tree DIR --data-dir DIR [--config NAME] [--pairs 1]
    python benchmarks/bench_sweep.py {overhead,asha,gpu-packing,replicate} --smoke-test
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
import subprocess
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
    "asha": {"num_samples": 3, "images": 300, "val": 100, "max_epochs": 4, "grace": 1},
    "gpu-packing": {"k": "1,2", "images": 200, "val": 100, "epochs": 1, "repeats": 1},
    "replicate": {"config": "smoke.yaml", "pairs": 1},
}
DUTY_TARGET_TRIAL_S = 15.0
DUTY_TARGET = 0.9  # the sweep's duty cycle for trials of DUTY_TARGET_TRIAL_S (issue 15)
REPLICATE_TARGET = 0.55  # one replicate's wall time, new / old (issue 15)


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
    a.add_argument("--num-samples", type=int, help="trials per arm (default: default.yaml's)")
    a.add_argument("--images", type=int, default=2000, help="training images (default 2000)")
    a.add_argument("--max-epochs", type=int, help="search.max_epochs (default: default.yaml's)")
    a.add_argument("--grace", type=int, help="grace period of the default schedule (default: default.yaml's)")
    a.add_argument("--schedule", action="append", default=[], metavar="HALVING,GRACE,RF",
                   help="early stopping to measure, e.g. sync,1,3 or async,1,3; repeat to compare "
                        "several (default: default.yaml's halving, grace period and reduction factor)")
    a.add_argument("--replay", action="append", default=[], metavar="sync,GRACE,RF",
                   help="also replay the run without early stopping through the sweep's synchronous "
                        "halving at these settings (no training: its curves are what a real run at "
                        "them would see, since a trial's curve depends only on its lr and seed)")
    a.add_argument("--confirm", type=int, default=0, metavar="K",
                   help="also retrain each run's chosen configurations on K fresh seeds (the sweep's own "
                        "confirmation, seeds shared across runs) and compare their test accuracy: the "
                        "best val accuracy of a search is a maximum over noisy trials, inflated most "
                        "where most trials finished (default 0: off)")
    a.add_argument("--seed", type=int, default=0, help="search.seed (default 0)")
    a.add_argument("--concurrency", type=int, default=2, help="CPUs for Ray, 1 per trial (default 2)")

    g = sub.add_parser("gpu-packing", parents=[common], help="k training loops on one GPU")
    g.add_argument("--k", default="1,2,4,8", help="loop counts, comma-separated (default 1,2,4,8)")
    g.add_argument("--images", type=int, default=45000,
                   help="training images per loop and epoch (default 45000: full size, synthetic)")
    g.add_argument("--epochs", type=int, default=2, help="timed epochs per loop after 1 warm-up (default 2)")
    g.add_argument("--repeats", type=int, default=1,
                   help="interleaved rounds over backends and k (default 1)")
    g.add_argument("--backends", default="jax,tensorflow",
                   help="Keras backends, comma-separated (default jax,tensorflow; one not installed is "
                        "named and skipped)")
    g.add_argument("--threads", type=int, default=1, help="CPU threads per loop (default 1)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="trial config override, e.g. --set steps_per_execution=8")

    r = sub.add_parser("replicate", parents=[common],
                       help="one replicate end to end: an old checkout vs this one")
    r.add_argument("--old-tree", required=True,
                   help="a checkout of the older commit (git worktree add DIR COMMIT)")
    r.add_argument("--config", default="default.yaml",
                   help="a config file name in each tree's sweeps/configs/ (default default.yaml)")
    r.add_argument("--pairs", type=int, default=1, help="old/new pairs, run old new old new (default 1)")

    args = p.parse_args(argv)
    if args.smoke_test:
        for key, value in SMOKE[args.bench].items():
            setattr(args, key, value)
    positive = {"overhead": ("trials", "pairs", "epochs", "images", "val", "concurrency"),
                "asha": ("num_samples", "images", "val", "max_epochs", "grace", "concurrency"),
                "gpu-packing": ("images", "val", "epochs", "repeats", "threads"),
                "replicate": ("pairs",)}[args.bench]
    if args.bench == "asha" and args.confirm < 0:
        raise UsageError(f"--confirm must be >= 0, got {args.confirm}")
    for key in positive:
        if getattr(args, key) is not None and getattr(args, key) < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.bench == "gpu-packing":
        try:
            args.k = [int(v) for v in str(args.k).split(",")]
        except ValueError:
            raise UsageError(f"--k {args.k!r}: use comma-separated whole numbers, e.g. 1,2,4,8") from None
        if not args.k or min(args.k) < 1:
            raise UsageError(f"--k {args.k}: every count must be >= 1")
        args.backends = [b.strip() for b in str(args.backends).split(",") if b.strip()]
        unknown = [b for b in args.backends if b not in ("jax", "tensorflow", "torch")]
        if unknown or not args.backends:
            raise UsageError(f"--backends {unknown or args.backends}: use jax, tensorflow and/or torch")
    if args.bench == "replicate":
        if not (Path(args.old_tree) / "sweeps" / "run.py").is_file():
            raise UsageError(f"--old-tree {args.old_tree}: no sweeps/run.py there; make one with "
                             "`git worktree add DIR COMMIT`")
        named = Path(args.config).name == args.config  # a bare name: never a path out of the tree
        for tree in (Path(args.old_tree), ROOT):
            if not named or not (tree / "sweeps" / "configs" / args.config).is_file():
                raise UsageError(f"--config {args.config!r}: not a file in {tree}/sweeps/configs/; "
                                 "give the name of a config both trees ship, e.g. default.yaml")
    if args.bench == "asha":
        args.schedule = [_schedule(text) for text in args.schedule]
        args.replay = [_schedule(text) for text in args.replay]
        if any(h != "sync" for h, _, _ in args.replay):
            raise UsageError("--replay: only synchronous halving replays exactly (async ASHA depends on "
                             "the order trials arrive); use sync,GRACE,RF")
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

    from sweeps.ray_session import configure_trial_env, quiet_logs
    from sweeps.runner import EXPERIMENT_CHECKPOINT_S

    quiet_logs()
    configure_trial_env()  # as start_ray: a reused actor waits for the previous trial's thread
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


def _schedule(text: str) -> tuple[str, int, int]:
    """``--schedule HALVING,GRACE,RF``, e.g. ``sync,1,3``."""
    from sweeps.config import HALVINGS

    parts = [p.strip() for p in str(text).split(",")]
    try:
        halving, grace, rf = parts[0], int(parts[1]), int(parts[2])
        if len(parts) != 3 or halving not in HALVINGS or grace < 1 or rf < 2:
            raise ValueError
    except (ValueError, IndexError):
        raise UsageError(f"--schedule {text!r}: use HALVING,GRACE,RF with HALVING one of "
                         f"{', '.join(HALVINGS)}, GRACE >= 1 and RF >= 2, e.g. sync,1,3") from None
    return halving, grace, rf


def asha_config(args: argparse.Namespace, storage: str, schedule: tuple[str, int, int] | None):
    """The bench's search config: early stopping off (``schedule`` None), under ``schedule``
    (halving, grace period, reduction factor), or under default.yaml's (``()``)."""
    from sweeps.config import DEFAULT_CONFIG, ConfigError, parse_config, read_yaml

    sets = ["search.replicates=1", f"search.seed={args.seed}",
            f"search.early_stopping.enabled={str(schedule is not None).lower()}", "confirm.enabled=false",
            f"data.val_size={args.val}", "resources.cpus_per_trial=1"]
    halving, grace, rf = schedule or (None, None, None)
    for key, value in (("search.num_samples", args.num_samples), ("search.max_epochs", args.max_epochs),
                       ("search.early_stopping.grace_period", grace or args.grace),
                       ("search.early_stopping.halving", halving),
                       ("search.early_stopping.reduction_factor", rf)):
        if value is not None:  # else default.yaml's value
            sets.append(f"{key}={value}")
    if args.data_dir:
        sets += [f"data.train_subset={args.images}"]
        flags = {"data.data_dir": args.data_dir}
    else:
        sets += ["data.source=synthetic", f"data.synthetic.train={args.images + args.val}",
                 "data.synthetic.test=100"]
        flags = {}
    flags.update(name="es_" + ("_".join(map(str, schedule)) if schedule else "off" if schedule is None
                               else "default"), storage_path=storage)
    try:
        return parse_config(read_yaml(DEFAULT_CONFIG), sets, flags)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def search_summary(path: str) -> dict[str, Any]:
    """Epochs trained, trials stopped early, and per arm the best val_accuracy (at its best epoch)
    among finished trials with the (lr, epochs) it stands for: what the sweep would confirm."""
    from analysis.load import load_results

    res = load_results([path])
    epochs = res.epochs[res.epochs["stage"] == "search"]
    trials = res.trials[res.trials["stage"] == "search"]
    last = epochs.sort_values("epoch").groupby("trial_id").tail(1).set_index("trial_id")
    finished = last.loc[last.index.isin(trials[trials["status"] == "finished"]["trial_id"])]
    lr = trials.set_index("trial_id")["lr"]
    best, chosen = {}, {}
    for arm, rows in finished.groupby("arm"):
        top = rows.sort_values(["best_val_accuracy", "best_epoch"], ascending=[False, True]).iloc[0]
        best[arm] = float(top["best_val_accuracy"])
        chosen[arm] = (float(lr[top.name]), int(top["best_epoch"]))
    return {"epochs": int(len(epochs)), "trials": int(len(trials)),
            "stopped": int((trials["status"] == "stopped_early").sum()), "best": best, "chosen": chosen}


def replay_sync(path: str, schedule: tuple[str, int, int], max_epochs: int) -> dict[str, Any]:
    """:func:`search_summary` of a run without early stopping as synchronous halving at
    ``schedule`` would have cut it: the sweep's own ``SyncHalvingCell`` judges each cell's recorded
    ``best_val_accuracy`` curves (trials in the order they started), and each trial counts up to
    the epoch it would have stopped at."""
    import numpy as np
    from bench_calibration import sweep_sync_stop_epochs

    from analysis.load import load_results

    _, grace, rf = schedule
    res = load_results([path])
    trials = res.trials[res.trials["stage"] == "search"].sort_values("start_time")
    epochs = res.epochs[res.epochs["stage"] == "search"].set_index(["trial_id", "epoch"]).sort_index()
    total, stopped, best, chosen = 0, 0, {}, {}
    for (arm, _), cell in trials.groupby(["arm", "replicate"], sort=False):
        ids = cell["trial_id"].tolist()
        curves = np.full((1, len(ids), max_epochs), np.nan)
        for i, t in enumerate(ids):
            values = epochs.loc[t, "best_val_accuracy"].to_numpy(float)[:max_epochs]
            curves[0, i, :len(values)] = values
        stop = sweep_sync_stop_epochs(curves, grace, rf, max_epochs)[0]
        total += int(stop.sum())
        stopped += int((stop < max_epochs).sum())
        for t, e, lr in zip(ids, stop, cell["lr"]):
            if e < max_epochs:
                continue
            row = epochs.loc[(t, float(e))] if (t, float(e)) in epochs.index else epochs.loc[(t, e)]
            key = (float(row["best_val_accuracy"]), -int(row["best_epoch"]))
            if arm not in best or key > (best[arm], -chosen[arm][1]):
                best[arm], chosen[arm] = key[0], (float(lr), int(row["best_epoch"]))
    return {"epochs": total, "trials": len(trials), "stopped": stopped, "best": best, "chosen": chosen}


def confirmed_summary(cfg, path: str, seeds: int, dataset) -> dict[str, tuple[float, float, str]]:
    """Retrain each arm's chosen configuration of the search in ``path`` on ``seeds`` seeds
    (``--confirm-only``, the sweep's own confirmation: the same seeds for every run, paired across
    arms) and return, per arm, (mean test accuracy, its sd over seeds, "lr, epochs" retrained: the
    sweep's own choice, which can differ from :func:`search_summary`'s where trials tie)."""
    import dataclasses

    from analysis.load import load_results
    from sweeps.prepare import RunOptions
    from sweeps.runner import run_sweep

    confirm = dataclasses.replace(cfg.confirm, enabled=True, seeds=seeds)
    with contextlib.redirect_stdout(sys.stderr):
        run_sweep(dataclasses.replace(cfg, confirm=confirm), RunOptions(confirm_only=True, report=False),
                  dataset=dataset)
    trials = load_results([path]).trials
    runs = trials[trials["stage"] == "confirm"]
    return {arm: (float(g["final_test_accuracy"].mean()), float(g["final_test_accuracy"].std()),
                  "{:.3g}, {}".format(g["lr"].iloc[0], int(g["epochs"].iloc[0])))
            for arm, g in runs.groupby("arm")}


def asha(args: argparse.Namespace) -> int:
    from sweeps.prepare import RunOptions
    from sweeps.prepare import load_data as sweep_data
    from sweeps.runner import run_sweep
    from trainable.cifar10 import DataError

    schedules = args.schedule
    if not schedules:  # default.yaml's, with --grace if given
        es = asha_config(args, "results", ()).search.early_stopping
        schedules = [(es.halving, es.grace_period, es.reduction_factor)]
    for schedule in schedules:
        cfg = asha_config(args, "results", schedule)  # bad input fails here, before Ray starts
    ray = start_local_ray(args.concurrency)
    rows, confirmed = [], {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            dataset = None
            for schedule in (None, *schedules):
                cfg = asha_config(args, tmp, schedule)
                try:
                    dataset = sweep_data(cfg) if dataset is None else dataset
                except DataError as exc:
                    raise UsageError(str(exc)) from None
                with Clock() as clock, contextlib.redirect_stdout(sys.stderr):
                    path = run_sweep(cfg, RunOptions(skip_confirm=True, report=False), dataset=dataset)
                name = "{} g{} rf{}".format(*schedule) if schedule else "no early stopping"
                rows.append((name, clock.wall, search_summary(path)))
                if args.confirm:
                    confirmed[name] = confirmed_summary(cfg, path, args.confirm, dataset)
                if schedule is None:
                    rows += [("replay {} g{} rf{}".format(*r), math.nan,
                              replay_sync(path, r, cfg.search.max_epochs)) for r in args.replay]
    finally:
        ray.shutdown()

    base = rows[0][2]
    arms = sorted(base["best"])
    s = cfg.search
    shown = next(iter(dataset.values())) if isinstance(dataset, dict) else dataset  # one per split
    print(f"# {shown.source}: {len(shown.y_train)} train / {len(shown.y_val)} val images; "
          f"default.yaml search (lr from the shared Sobol design, objective {s.objective}), 1 replicate, "
          f"{s.num_samples} trials per arm toward {s.max_epochs} epochs, search.seed {s.seed}; rows: "
          f"HALVING (sync or async successive halving) gGRACE rfREDUCTION; {args.concurrency} trials "
          f"at once; "
          f"{machine_line()}")
    print("| run                | wall s | trials | stopped early | epochs trained | epochs vs off | "
          + " | ".join(f"best val_acc {a}" for a in arms) + " | "
          + " | ".join(f"diff {a} (points)" for a in arms) + " | "
          + " | ".join(f"chosen {a} (lr, epochs)" for a in arms) + " |")
    print("|--------------------|--------|--------|---------------|----------------|---------------|"
          + "|".join("-" * (16 + len(a)) for a in arms) + "|"
          + "|".join("-" * (17 + len(a)) for a in arms) + "|"
          + "|".join("-" * (24 + len(a)) for a in arms) + "|")
    for name, wall, r in rows:
        ratio = r["epochs"] / base["epochs"]
        best = " | ".join(f"{r['best'].get(a, math.nan):{14 + len(a)}.4f}" for a in arms)
        diff = " | ".join(f"{100 * (r['best'].get(a, math.nan) - base['best'][a]):{15 + len(a)}.2f}"
                          for a in arms)
        picks = {a: "{:.3g}, {}".format(*r["chosen"][a]) if a in r["chosen"] else "-" for a in arms}
        chosen = " | ".join(f"{picks[a]:>{22 + len(a)}}" for a in arms)
        shown = f"{wall:6.1f}" if math.isfinite(wall) else f"{'-':>6}"  # a replay trains nothing
        print(f"| {name:<18} | {shown} | {r['trials']:6d} | {r['stopped']:13d} | {r['epochs']:14d} | "
              f"{ratio:13.2f} | {best} | {diff} | {chosen} |")
    if confirmed:
        base_test = confirmed["no early stopping"]
        print(f"# chosen configurations retrained on {args.confirm} fresh seeds (the sweep's confirmation, "
              "the same seeds in every run): test accuracy, mean ± sd over seeds")
        print("| run                | " + " | ".join(f"test acc {a}" for a in arms) + " | "
              + " | ".join(f"diff {a} (points)" for a in arms) + " | "
              + " | ".join(f"retrained {a} (lr, epochs)" for a in arms) + " |")
        print("|--------------------|" + "|".join("-" * (12 + len(a)) for a in arms) + "|"
              + "|".join("-" * (17 + len(a)) for a in arms) + "|"
              + "|".join("-" * (27 + len(a)) for a in arms) + "|")
        for name, test in confirmed.items():
            acc = " | ".join(f"{test[a][0]:.4f} ± {test[a][1]:.4f}".rjust(9 + len(a)) for a in arms)
            diff = " | ".join(f"{100 * (test[a][0] - base_test[a][0]):{15 + len(a)}.2f}" for a in arms)
            picks = " | ".join(f"{test[a][2]:>{25 + len(a)}}" for a in arms)
            print(f"| {name:<18} | {acc} | {diff} | {picks} |")
    ok = True
    for name, _, on in rows[1:]:
        ratio = on["epochs"] / base["epochs"]
        worst = min(100 * (on["best"].get(a, math.nan) - base["best"][a]) for a in arms)
        tested = ""
        if name in confirmed:
            change = min(100 * (confirmed[name][a][0] - confirmed["no early stopping"][a][0]) for a in arms)
            tested = f"; worst confirmed test-acc change {change:+.2f} points"
        print(f"{name} trained {ratio:.2f} of the epochs (target <= 0.40); worst best-val-acc change "
              f"{worst:+.2f} points (target >= -1){tested}")
        ok = ok and math.isfinite(ratio) and ratio > 0
    return 0 if ok else 1


# --------------------------------------------------------------------------------------------
# 3. GPU packing


def _packed_loop(rank: int, k: int, args: dict[str, Any], cfg: dict[str, Any], barrier, queue) -> None:
    """One of ``k`` loops: 1 warm-up epoch, wait for all, then the timed epochs. Its backend is the
    ``KERAS_BACKEND`` the parent set before starting it."""
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
        queue.put((rank, marks[0], marks[-1], len(data.y_train) * args["epochs"], _devices(), None))
    except Exception as exc:  # report it instead of hanging the parent
        with contextlib.suppress(Exception):
            barrier.abort()
        queue.put((rank, math.nan, math.nan, 0, "", f"{exc.__class__.__name__}: {exc}"))


def _devices() -> str:
    """The accelerator this process trained on, in words (from inside a loop's process)."""
    import keras

    backend = keras.backend.backend()
    with contextlib.suppress(Exception):
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            return f"{len(gpus)} GPU(s)" if gpus else "CPU only"
        if backend == "jax":
            import jax

            return ", ".join(sorted({d.platform for d in jax.devices()}))
    return "unknown"


class GpuSampler:
    """Samples ``nvidia-smi`` (utilisation %, memory used MiB) every ``period`` s in a thread;
    :meth:`mean` averages the samples inside a time window. No nvidia-smi: no samples."""

    QUERY = ["--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]

    def __init__(self, period: float = 0.5) -> None:
        import shutil
        import threading

        self.smi = shutil.which("nvidia-smi")
        self.period, self.samples = period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import subprocess

        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                out = subprocess.run([self.smi, *self.QUERY], capture_output=True, text=True,
                                     timeout=10, check=True).stdout
                rows = [[float(v) for v in line.split(",")] for line in out.strip().splitlines()]
                if rows:  # the busiest card (the loops share one)
                    self.samples.append((time.time(), max(r[0] for r in rows), max(r[1] for r in rows)))
            self._stop.wait(self.period)

    def __enter__(self) -> GpuSampler:
        if self.smi:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.smi:
            self._thread.join(timeout=15)

    def mean(self, start: float, end: float) -> tuple[float, float]:
        inside = [(u, m) for t, u, m in self.samples if start <= t <= end]
        if not inside:
            return math.nan, math.nan
        return statistics.mean(u for u, _ in inside), max(m for _, m in inside)


def run_packed(k: int, backend: str, args: argparse.Namespace, cfg: dict[str, Any]) -> dict[str, Any]:
    """``k`` loops in ``k`` processes on ``backend``: aggregate images/s over the timed part,
    the GPU's mean utilisation and peak memory in that window, and the device in words."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(k), ctx.Queue()
    plain = {key: getattr(args, key) for key in ("data_dir", "images", "val", "epochs", "threads")}
    procs = [ctx.Process(target=_packed_loop, args=(i, k, plain, cfg, barrier, queue)) for i in range(k)]
    saved = os.environ.get("KERAS_BACKEND")
    os.environ["KERAS_BACKEND"] = backend  # a spawned child inherits the environment at start()
    try:
        with GpuSampler() as gpu:
            for p in procs:
                p.start()
            out = [queue.get(timeout=3600) for _ in procs]
            for p in procs:
                p.join()
    finally:
        if saved is None:
            os.environ.pop("KERAS_BACKEND", None)
        else:
            os.environ["KERAS_BACKEND"] = saved
    errors = [e for *_, e in out if e]
    if errors:
        raise RuntimeError(f"{backend} k={k}: a training loop failed: {errors[0]}")
    start, end = min(o[1] for o in out), max(o[2] for o in out)
    util, mem = gpu.mean(start, end)
    return {"rate": sum(o[3] for o in out) / (end - start), "util": util, "mem": mem, "device": out[0][4]}


def available_backends(names: list[str]) -> tuple[list[str], list[str]]:
    """(installed, missing) among the Keras backends ``names`` (by their Python package)."""
    import importlib.util

    package = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
    ok = [b for b in names if importlib.util.find_spec(package[b]) is not None]
    return ok, [b for b in names if b not in ok]


def gpu_packing(args: argparse.Namespace) -> int:
    cfg = trial_config(args.set, args.epochs + 1)
    load_data(args)  # bad --data-dir fails here, before any process starts
    backends, missing = available_backends(args.backends)
    results: dict[tuple[str, int], list[dict[str, Any]]] = {(b, k): [] for b in backends for k in args.k}
    for rnd in range(1, args.repeats + 1):
        for backend in backends:
            for k in args.k:
                res = run_packed(k, backend, args, cfg)
                results[backend, k].append(res)
                print(f"round {rnd}/{args.repeats} {backend} k={k}: {res['rate']:.0f} images/s, GPU "
                      f"{res['util']:.0f}%", file=sys.stderr)

    def fmt(value: float, spec: str) -> str:
        return "n/a" if not math.isfinite(value) else format(value, spec)

    print(f"# {'synthetic' if not args.data_dir else args.data_dir}: {args.images} train images per loop "
          f"per epoch, {args.epochs} timed epochs after 1 warm-up, batch {cfg['batch_size']}, "
          f"steps_per_execution {cfg['steps_per_execution']}; {args.threads} thread(s) per loop; each of "
          f"k loops capped at 1/k of the GPU's memory; GPU utilisation: mean of nvidia-smi samples "
          f"every 0.5 s in the timed window (n/a: no nvidia-smi); {machine_line()}; rounds interleaved")
    for backend in missing:
        print(f"# {backend}: not installed, not measured")
    print("| backend    | k loops | median aggregate images/s | per loop images/s | x k=1 | GPU util % "
          "| GPU mem MiB | device | rounds (images/s) |")
    print("|------------|---------|---------------------------|-------------------|-------|------------"
          "|-------------|--------|-------------------|")
    ok = bool(backends)
    for backend in backends:
        base = statistics.median(r["rate"] for r in results[backend, min(args.k)])
        ok = ok and math.isfinite(base) and base > 0
        for k in args.k:
            runs = results[backend, k]
            rate = statistics.median(r["rate"] for r in runs)
            util = statistics.median(r["util"] for r in runs)
            mem = max(r["mem"] for r in runs)
            print(f"| {backend:<10} | {k:7d} | {rate:25.0f} | {rate / k:17.0f} | {rate / base:5.2f} | "
                  f"{fmt(util, '10.0f'):>10} | {fmt(mem, '11.0f'):>11} | {runs[0]['device']} | "
                  f"{', '.join(format(r['rate'], '.0f') for r in runs)} |")
    return 0 if ok else 1


# --------------------------------------------------------------------------------------------
# 4. One replicate end to end, an old checkout against this one


class RunFailed(Exception):
    """A benchmarked sweep exited non-zero: reported with the end of its output, exit code 1."""


def _tree_commit(tree: Path) -> str:
    """The tree's commit (short), with "+changes" when its tracked files differ from it."""
    def git(*a: str) -> str:
        proc = subprocess.run(["git", "-C", str(tree), *a], capture_output=True, text=True, timeout=60)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def run_replicate(tree: Path, args: argparse.Namespace, storage: str, name: str) -> dict[str, Any]:
    """``sweeps/run.py`` of ``tree`` (its code: PYTHONPATH, and its config) for one replicate.
    The config goes as a path into the tree: older checkouts take ``--config FILE`` only."""
    config = tree / "sweeps" / "configs" / args.config
    cmd = [sys.executable, str(tree / "sweeps" / "run.py"), "--config", str(config), "--name", name,
           "--storage-path", storage, "--set", "search.replicates=1"]
    if args.data_dir:
        cmd += ["--data-dir", str(Path(args.data_dir).resolve())]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("RAY_ADDRESS", None)  # a private local Ray, as a user's first run
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise RunFailed(f"{name}: {tree}/sweeps/run.py exited {proc.returncode}; its output ends:\n{tail}")
    return {"wall": wall}


def replicate(args: argparse.Namespace) -> int:
    trees = (("old", Path(args.old_tree).resolve()), ("new", ROOT))
    commits = {tag: _tree_commit(tree) for tag, tree in trees}
    runs: list[tuple[str, int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(1, args.pairs + 1):
            for tag, tree in trees:
                run = run_replicate(tree, args, tmp, f"{tag}{pair}")
                runs.append((tag, pair, run["wall"]))
                print(f"pair {pair}/{args.pairs} {tag} ({commits[tag]}): {run['wall']:.1f} s",
                      file=sys.stderr)
    data = f"cifar10:{args.data_dir}" if args.data_dir else "the config's data"
    print(f"# one replicate of {args.config} (--set search.replicates=1; each tree's own config and code), "
          f"{data}; old {commits['old']}, new {commits['new']}; runs interleaved old new; {machine_line()}")
    print("| run | pair | commit | wall s | wall min |")
    print("|-----|------|--------|--------|----------|")
    for tag, pair, wall in runs:
        print(f"| {tag:<3} | {pair:4d} | {commits[tag]} | {wall:6.1f} | {wall / 60:8.2f} |")
    old = statistics.median(w for t, _, w in runs if t == "old")
    new = statistics.median(w for t, _, w in runs if t == "new")
    print(f"median wall: old {old / 60:.2f} min, new {new / 60:.2f} min; ratio new/old {new / old:.3f} "
          f"(target <= {REPLICATE_TARGET})")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        if args.bench not in ("gpu-packing", "replicate"):
            from trainable._backend import configure_process

            configure_process(1)  # the driver trains nothing; keep its threads off the trials' cores
        return {"overhead": overhead, "asha": asha, "gpu-packing": gpu_packing,
                "replicate": replicate}[args.bench](args)
    except UsageError as exc:
        print(f"bench_sweep: error: {exc}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"bench_sweep: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
