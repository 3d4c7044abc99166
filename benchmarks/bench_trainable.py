#!/usr/bin/env python
"""Trainable throughput against a plain Keras ``model.fit`` on the same data, threads and epochs.

A (baseline): ``build_model`` + ``compile`` + one ``model.fit(..., validation_data=val)`` call, the
way a Keras user trains and validates, with B's ``steps_per_execution`` (both arms equal).
B (trainable): ``trainable.train.train_loop``, the loop ``train_cnn`` runs inside Ray Tune, with
a report function that copies each checkpoint into a storage directory like Tune's local storage
does. B does more per epoch than A (it also evaluates
the fixed training sample, reports, checkpoints every ``checkpoint_every`` epochs); the ratio B/A
of images trained per wall-clock second is its whole overhead. Target: ratio >= 0.95.

Runs are interleaved (A B A B ...) because the machine is shared; the summary is the median of
the per-pair ratios. A second table measures one checkpoint (save + copy to storage) against an
epoch of B.

    python benchmarks/bench_trainable.py [--data-dir DIR] [--images 5000] [--val 500]
        [--epochs 5] [--pairs 5] [--threads 2] [--set KEY=VALUE ...] [--no-tune] [--smoke-test]
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SMOKE = {"images": 300, "val": 100, "epochs": 2, "pairs": 1, "checkpoint_reps": 3, "no_tune": True}


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="cifar-10-batches-py directory or archive (default: synthetic data)")
    p.add_argument("--images", type=int, default=5000, help="training images per epoch (default 5000)")
    p.add_argument("--val", type=int, default=500, help="validation images (default 500)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--pairs", type=int, default=5, help="interleaved A/B pairs (default 5)")
    p.add_argument("--threads", type=int, default=2, help="compute threads for both (default 2)")
    p.add_argument("--checkpoint-reps", type=int, default=20, help="timed checkpoints (default 20)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="trial config override, e.g. --set steps_per_execution=8 (A takes "
                        "steps_per_execution and the model settings from it too)")
    p.add_argument("--no-tune", action="store_true", help="skip timing checkpoints inside Ray Tune")
    p.add_argument("--smoke-test", action="store_true", help="tiny preset (seconds) for the test suite")
    args = p.parse_args(argv)
    if args.smoke_test:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    for key in ("images", "val", "epochs", "pairs", "threads", "checkpoint_reps"):
        if getattr(args, key) < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.data_dir and not os.path.exists(args.data_dir):
        raise UsageError(f"--data-dir {args.data_dir}: no such file or directory; "
                         "make one with ../shared/tools/cifar10_to_batches.py or drop the flag")
    return args


def trial_config(overrides: list[str], epochs: int) -> dict[str, Any]:
    from trainable.train import DEFAULTS, check_config

    cfg: dict[str, Any] = {"epochs": epochs}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or key not in DEFAULTS:
            raise UsageError(f"--set {item!r}: use KEY=VALUE with KEY one of {sorted(DEFAULTS)}")
        try:
            cfg[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            cfg[key] = raw
    try:
        return check_config(cfg)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def load_data(args: argparse.Namespace):
    from trainable.dataset import DataError, make_dataset

    try:
        if args.data_dir:
            return make_dataset("cifar10", data_dir=args.data_dir, val_size=args.val,
                                train_subset=args.images)
        return make_dataset("synthetic", val_size=args.val, synthetic_size=(args.images + args.val, 100))
    except DataError as exc:
        raise UsageError(str(exc)) from None


class Clock:
    """Wall-clock and process CPU seconds of a block (CPU time is less disturbed by other jobs)."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def run_plain_keras(data, cfg: dict[str, Any]) -> Clock:
    """One plain ``model.fit`` with per-epoch validation (normalisation included), compiled with
    the trial config's ``steps_per_execution`` like the trainable."""
    import keras

    from trainable.dataset import normalize
    from trainable.model import build_model

    with Clock() as clock:
        x = normalize(data.x_train, cfg["normalization"], data.channel_mean, data.channel_std)
        xv = normalize(data.x_val, cfg["normalization"], data.channel_mean, data.channel_std)
        keras.utils.set_random_seed(cfg["seed"])
        model = build_model(cfg["activation"], cfg["kernel_initializer"], cfg["dropout"], seed=cfg["seed"])
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg["lr"]),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                      steps_per_execution=cfg["steps_per_execution"])  # as B: equal footing
        model.fit(x, data.y_train, batch_size=cfg["batch_size"], epochs=cfg["epochs"],
                  validation_data=(xv, data.y_val), shuffle=True, verbose=0)
    return clock


def run_trainable(data, cfg: dict[str, Any], storage: Path) -> tuple[Clock, list[dict[str, float]]]:
    """``train_loop`` with a report that persists checkpoints to ``storage``."""
    from trainable.train import train_loop

    reports: list[dict[str, float]] = []

    def report(metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        reports.append(metrics)
        if checkpoint_dir is not None:
            shutil.copytree(checkpoint_dir, storage / f"checkpoint_{len(reports):06d}")

    with Clock() as clock:
        train_loop(cfg, data, report)
    return clock, reports


def checkpoint_seconds(data, cfg: dict[str, Any], storage: Path, reps: int) -> list[float]:
    """Time ``save_checkpoint`` + copy to storage on a trained model with optimizer state."""
    import keras

    from trainable.model import build_model
    from trainable.train import initial_state, save_checkpoint

    model = build_model(cfg["activation"], cfg["kernel_initializer"], cfg["dropout"], seed=0)
    model.compile(optimizer=keras.optimizers.Adam(cfg["lr"]), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(data.x_train[:200] / 255.0, data.y_train[:200], batch_size=100, epochs=1, verbose=0)
    times = []
    for i in range(reps + 1):
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(model, initial_state(), tmp)
            shutil.copytree(tmp, storage / f"timed_{i:04d}")
        times.append(time.perf_counter() - t0)
    return times[1:]  # the first save also builds Keras's saving machinery


def _tune_checkpoint_trial(config: dict[str, Any]) -> None:
    """A Tune trial that times report-with-checkpoint against a plain report, alternately."""
    import keras
    import numpy as np
    from ray import tune

    from trainable._backend import configure_process
    from trainable.model import build_model
    from trainable.train import initial_state, save_checkpoint

    configure_process(1)
    model = build_model("relu", seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    rng = np.random.default_rng(0)
    model.fit(rng.random((200, 32, 32, 3)), rng.integers(0, 10, 200), batch_size=100, verbose=0)
    times: dict[str, list[float]] = {"checkpoint": [], "plain": []}
    for i in range(2 * config["reps"] + 2):
        medians = {k: statistics.median(v) if v else 0.0 for k, v in times.items()}
        t0 = time.perf_counter()
        if i % 2:
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(model, initial_state(), tmp)
                tune.report(medians, checkpoint=tune.Checkpoint.from_directory(tmp))
        else:
            tune.report(medians)
        if i >= 2:  # the first pair warms Keras's saving and Tune's storage up
            times["checkpoint" if i % 2 else "plain"].append(time.perf_counter() - t0)
    tune.report({k: statistics.median(v) for k, v in times.items()})


def tune_checkpoint_seconds(reps: int, storage: Path) -> float:
    """Extra seconds a checkpoint adds to a report inside a real local Ray Tune trial."""
    import ray
    from ray import tune

    chatter = io.StringIO()  # Ray's start-up notes and Tune's experiment box: not part of the table
    with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        try:
            tuner = tune.Tuner(tune.with_resources(_tune_checkpoint_trial, {"cpu": 1}),
                               param_space={"reps": reps},
                               run_config=tune.RunConfig(storage_path=str(storage), name="ckpt", verbose=0))
            result = tuner.fit()[0]
        finally:
            ray.shutdown()
    if result.error is not None:
        raise RuntimeError(f"the Tune checkpoint trial failed: {result.error}")
    metrics = result.metrics
    return metrics["checkpoint"] - metrics["plain"]


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        cfg = trial_config(args.set, args.epochs)
        from trainable._backend import configure_process

        configure_process(args.threads)  # both arms share these threads
        data = load_data(args)
    except UsageError as exc:
        print(f"bench_trainable: error: {exc}", file=sys.stderr)
        return 2

    n_train = len(data.y_train)
    runs: list[tuple[str, int, Clock]] = []
    epoch_walls: list[float] = []
    fit_walls: list[float] = []  # the training part of each B epoch (images / images_per_second)
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(1, args.pairs + 1):
            a = run_plain_keras(data, cfg)
            storage = Path(tmp) / f"pair{pair}"
            storage.mkdir()
            b, reports = run_trainable(data, cfg, storage)
            runs += [("A plain keras fit", pair, a), ("B trainable loop", pair, b)]
            epoch_walls += [r["epoch_seconds"] for r in reports]
            fit_walls += [n_train / r["images_per_second"] for r in reports]
            print(f"pair {pair}/{args.pairs}: A {a.wall:.1f} s, B {b.wall:.1f} s", file=sys.stderr)
        ckpt = checkpoint_seconds(data, cfg, Path(tmp), args.checkpoint_reps)
        tune_ckpt = None if args.no_tune else tune_checkpoint_seconds(args.checkpoint_reps, Path(tmp))

    import keras

    images = cfg["epochs"] * n_train
    by_pair = {(name[0], pair): clock for name, pair, clock in runs}
    pairs = range(1, args.pairs + 1)
    # images/s of B over images/s of A = A's seconds over B's seconds
    ratios = [by_pair["A", p].wall / by_pair["B", p].wall for p in pairs]
    cpu_ratios = [by_pair["A", p].cpu / by_pair["B", p].cpu for p in pairs]
    print(f"# {data.source}: {n_train} train / {len(data.y_val)} val images, {cfg['epochs']} epochs, "
          f"batch {cfg['batch_size']}; {os.environ.get('TF_NUM_INTRAOP_THREADS')} threads; "
          f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"Keras {keras.__version__} ({keras.backend.backend()})")
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"# load average (1/5/15 min) at the end: {load}; CPU time counts this process only, so it "
          "is less disturbed by other jobs than wall time")
    print(f"# both arms: steps_per_execution={cfg['steps_per_execution']}; B also: eval_batch_size="
          f"{cfg['eval_batch_size']}, train_eval_size={cfg['train_eval_size']}, checkpoint_every="
          f"{cfg['checkpoint_every']}; runs interleaved A B A B")
    print("| run                  | pair | wall s | images/s | CPU s | images/CPU-s |")
    print("|----------------------|------|--------|----------|-------|--------------|")
    for name, pair, clock in runs:
        print(f"| {name:<20} | {pair:4d} | {clock.wall:6.2f} | {images / clock.wall:8.0f} | "
              f"{clock.cpu:5.1f} | {images / clock.cpu:12.0f} |")
    for arm, name in (("A", "median A"), ("B", "median B")):
        wall = statistics.median(images / by_pair[arm, p].wall for p in pairs)
        cpu = statistics.median(images / by_pair[arm, p].cpu for p in pairs)
        print(f"| {name:<20} |      |        | {wall:8.0f} |       | {cpu:12.0f} |")
    ratio = statistics.median(ratios)
    print(f"median ratio B/A (images/s): {ratio:.3f} (pairs: {', '.join(f'{r:.3f}' for r in ratios)}); "
          f"by CPU time: {statistics.median(cpu_ratios):.3f}; target >= 0.95")

    epoch_s = statistics.median(epoch_walls)
    end_s = statistics.median(e - f for e, f in zip(epoch_walls, fit_walls))
    print(f"B per epoch (medians): {statistics.median(fit_walls):.2f} s training, {end_s:.2f} s epoch-end "
          f"work (evaluation of {min(cfg['train_eval_size'], n_train)} training + {len(data.y_val)} "
          f"validation images, checkpoint, report) = {end_s / epoch_s:.1%} of the epoch")
    ck = statistics.median(ckpt)
    print()
    print(f"# checkpoint: save model + optimizer + state and copy to storage (median of {len(ckpt)}); "
          f"'in Tune': extra time of tune.report with a checkpoint over one without, in a local Ray "
          f"Tune trial (median of {args.checkpoint_reps}); against B's median epoch ({n_train} images)")
    print("| checkpoint_every     | checkpoint ms | epoch ms | share of training time |")
    print("|----------------------|---------------|----------|------------------------|")
    for label, cost in (("", ck), (" in Tune", tune_ckpt)):
        if cost is None:
            continue
        for every in sorted({1, 2, 5, cfg["checkpoint_every"]}):
            share = cost / (every * epoch_s + cost)
            name = f"{every}{' (config)' if every == cfg['checkpoint_every'] else ''}{label}"
            print(f"| {name:<20} | {cost * 1e3:13.1f} | {epoch_s * 1e3:8.0f} | {share:22.2%} |")
    return 0 if math.isfinite(ratio) and ratio > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
