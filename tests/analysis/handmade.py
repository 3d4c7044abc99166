"""Handmade experiment directories in Ray Tune's on-disk layout (no Ray run needed).

``make_experiment`` writes what ``sweeps/run.py`` leaves behind: ``config.yaml``, ``data.json``,
``optuna.db`` (a real Optuna study per arm), ``search/`` and ``confirm/`` Tune experiments with one
directory per trial (``params.json``, ``result.json`` lines as Tune writes them) and an
``experiment_state-*.json`` per stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import yaml

ARMS = ("relu", "selu")
T0 = 1_767_225_600  # 2026-01-01 00:00 UTC


def result_rows(trial_id: str, config: dict, epochs: int, *, quality: float, test: bool,
                start: float) -> list[dict]:
    """Result lines of one trial as Ray Tune writes them (the trainable's metrics + Tune's keys)."""
    rows, best, best_epoch, total = [], 0.0, 0, 0.0
    min_loss, min_epoch = np.inf, 0
    for e in range(1, epochs + 1):
        val = quality - 0.3 * np.exp(-e / 2)
        train = val + 0.02 * e
        val_loss = 1.8 - val
        if val > best:
            best, best_epoch = val, e
        if val_loss < min_loss:
            min_loss, min_epoch = val_loss, e
        total += 5.0
        row = {"epoch": float(e), "train_loss": 1.7 - train, "train_accuracy": train, "val_loss": val_loss,
               "val_accuracy": val, "generalization_gap": train - val, "epoch_seconds": 5.0,
               "images_per_second": 900.0, "best_val_accuracy": best, "target_epochs": float(epochs),
               "diverged": 0.0, "train_eval_loss": 1.75 - train, "train_eval_accuracy": train - 0.01,
               "best_epoch": float(best_epoch), "min_val_loss": float(min_loss),
               "min_val_loss_epoch": float(min_epoch)}
        if test:
            row.update(test_loss=val_loss + 0.01, test_accuracy=val - 0.005)
        row.update(timestamp=int(start + total), checkpoint_dir_name=f"checkpoint_{e - 1:06d}", done=False,
                   training_iteration=e, trial_id=trial_id, date="2026-01-01_00-00-00",
                   time_this_iter_s=5.0, time_total_s=total, pid=4242, hostname="node", node_ip="127.0.0.1",
                   config=config, time_since_restore=total, iterations_since_restore=e)
        rows.append(row)
    return rows


def write_trial(stage_dir: Path, trial_id: str, config: dict, rows: list[dict]) -> Path:
    tdir = stage_dir / f"train_cnn_{trial_id}_arm={config.get('arm', config.get('activation'))}"
    tdir.mkdir(parents=True)
    (tdir / "params.json").write_text(json.dumps(config, indent=2))
    (tdir / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tdir


def write_state(stage_dir: Path, trials: list[tuple[str, Path, str]]) -> Path:
    """Tune's experiment_state file: trial_data = [[trial JSON, runtime JSON], ...]."""
    data = [[json.dumps({"trial_id": tid, "status": status, "relative_logdir": tdir.name,
                         "experiment_tag": tdir.name}), json.dumps({})] for tid, tdir, status in trials]
    path = stage_dir / "experiment_state-2026-01-01_00-00-00.json"
    path.write_text(json.dumps({"trial_data": data, "runner_data": {}, "stats": {}}))
    return path


def make_experiment(root: Path, name: str = "exp", *, search_per_arm: int = 3, replicates: int = 3,
                    epochs: int = 3, optuna_db: bool = True) -> Path:
    """A complete small sweep: SELU ~2 points better than ReLU in every replicate."""
    exp = root / name
    exp.mkdir(parents=True)
    rng = np.random.default_rng(0)
    cfg = {"name": name, "storage_path": str(root), "arms": [{"name": a, "activation": a} for a in ARMS],
           "confirm": {"seeds": replicates}}
    (exp / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (exp / "data.json").write_text(json.dumps({"dataset": "synthetic", "train": 400, "val": 100,
                                               "test": 100}))
    start = float(T0)
    best: dict[str, tuple[float, str, dict]] = {}
    state = []
    for i in range(search_per_arm * len(ARMS)):
        arm = ARMS[i % 2]
        tid = f"aaaa{i:04d}"
        config = {"arm": arm, "activation": arm, "lr": float(10 ** rng.uniform(-4, -2)), "epochs": epochs,
                  "batch_size": 100, "seed": i, "stage": "search", "kernel_initializer": "auto",
                  "normalization": "scale", "dropout": 0.0, "validate_on": "val"}
        quality = 0.6 + (0.02 if arm == "selu" else 0.0) + rng.normal(0, 0.01)
        tdir = write_trial(exp / "search", tid, config, result_rows(tid, config, epochs, quality=quality,
                                                                     test=False, start=start))
        start += 20
        state.append((tid, tdir, "TERMINATED"))
        if arm not in best or quality > best[arm][0]:
            best[arm] = (quality, tid, config)
    write_state(exp / "search", state)
    state = []
    for arm in ARMS:
        _, source, chosen = best[arm]
        for r in range(replicates):
            tid = f"bbbb{len(state):04d}"
            config = {**chosen, "seed": 1000 + r, "stage": "confirm", "replicate": r, "source_trial": source,
                      "evaluate_test": True}
            quality = 0.6 + (0.02 if arm == "selu" else 0.0) + 0.003 * r
            tdir = write_trial(exp / "confirm", tid, config, result_rows(tid, config, epochs, quality=quality,
                                                                         test=True, start=start))
            start += 20
            state.append((tid, tdir, "TERMINATED"))
    write_state(exp / "confirm", state)
    if optuna_db:
        write_optuna_db(exp / "optuna.db", name)
    return exp


def write_optuna_db(path: Path, name: str) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{path}"
    for k, arm in enumerate(ARMS):
        study = optuna.create_study(study_name=f"{name}-{arm}", storage=url, direction="maximize",
                                    sampler=optuna.samplers.RandomSampler(seed=k))
        study.optimize(lambda t: 0.6 - abs(np.log10(t.suggest_float("lr", 1e-4, 1e-2, log=True)) + 3) / 10
                       + t.suggest_int("epochs", 1, 3) / 100, n_trials=6)


def tree_digest(root: Path, exclude: str = "report") -> dict[str, tuple]:
    """Everything about the tree under ``root`` that analysis must not change: names, types, modes,
    sizes, mtimes, file hashes and link targets (symlinks not followed, FIFOs not opened)."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == exclude or rel_dir.startswith(exclude + os.sep):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if rel == exclude:
                continue
            st = os.lstat(p)
            entry: tuple = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            if stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                try:
                    with open(p, "rb") as fh:
                        h.update(fh.read())
                except PermissionError:  # chmod 000 as a non-root user: size and mtime still count
                    pass
                entry += (st.st_size, h.hexdigest())
            elif stat.S_ISLNK(st.st_mode):
                entry += (os.readlink(p),)
            out[rel] = entry
    return out
