"""Read sweep results (Ray Tune trial directories) into two tidy DataFrames.

Only reads: nothing under an experiment directory is modified, and no Ray cluster is needed.
An experiment directory is either a whole sweep (``config.yaml``, ``search/``, ``confirm/``) or
a single Ray Tune experiment (trial directories with ``params.json`` and ``result.json``).

``load_results(paths)`` returns :class:`Results` with

* ``epochs``: one row per trial-epoch (every metric the trainable reported),
* ``trials``: one row per trial (config, arm, stage, status and the metrics of
  :func:`analysis.metrics.trial_metrics`),
* ``notes``: what was skipped or missing (partial lines, trials without results, ...).

Works on a sweep that is still running or was interrupted: it uses what is there.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.metrics import trial_metrics

STAGES = ("search", "confirm")
CONFIG_COLUMNS = ("arm", "activation", "lr", "epochs", "batch_size", "seed", "kernel_initializer",
                  "normalization", "dropout", "validate_on")
EPOCH_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                 "generalization_gap", "test_loss", "test_accuracy", "best_val_accuracy",
                 "target_epochs", "diverged", "epoch_seconds", "images_per_second")
STATUSES = ("finished", "stopped_early", "diverged", "failed", "incomplete")


class AnalysisError(ValueError):
    """Input that cannot be analysed at all; the message is one line with the fix."""


@dataclass
class Results:
    trials: pd.DataFrame
    epochs: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    experiments: dict[str, Path] = field(default_factory=dict)  # name -> directory


def _stage_dirs(path: Path) -> list[tuple[str, Path]]:
    """(stage, tune experiment dir) pairs under an experiment directory."""
    stages = [(s, path / s) for s in STAGES if (path / s).is_dir()]
    if stages:
        return stages
    if _trial_dirs(path) or glob.glob(str(path / "experiment_state-*.json")):
        return [("", path)]  # a bare Tune experiment; stage comes from each trial's config
    return []


def _trial_dirs(stage_dir: Path) -> list[Path]:
    return sorted(p for p in stage_dir.iterdir()
                  if p.is_dir() and ((p / "params.json").exists() or (p / "result.json").exists()))


def _statuses(stage_dir: Path) -> dict[str, tuple[str, str]]:
    """Trial dir name -> (Tune status, trial id), from the newest readable experiment_state file."""
    for state_file in sorted(glob.glob(str(stage_dir / "experiment_state-*.json")), reverse=True):
        try:
            with open(state_file) as fh:
                state = json.load(fh)
            out = {}
            for item in state["trial_data"]:
                trial = json.loads(item[0])
                out[os.path.basename(trial["relative_logdir"])] = (trial["status"], trial["trial_id"])
            return out
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            continue
    return {}


def _read_result_lines(path: Path, notes: list[str]) -> tuple[list[dict], bool]:
    """Parsed result lines, and whether any line was unreadable (a damaged file)."""
    rows: list[dict] = []
    damaged = False
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        notes.append(f"{path}: unreadable ({exc.__class__.__name__}); trial skipped")
        return rows, True
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            notes.append(f"{path}: line {i + 1} is not valid JSON (partial write?); skipped")
            damaged = True
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows, damaged


def _status(tune_status: str | None, last: dict, has_error_file: bool, damaged: bool = False) -> str:
    if last.get("diverged") == 1.0:
        return "diverged"
    if tune_status == "ERROR" or has_error_file and tune_status != "TERMINATED":
        return "failed"
    epoch, target = last.get("epoch"), last.get("target_epochs")
    if epoch is not None and target is not None and epoch >= target:
        return "finished"
    if tune_status == "TERMINATED" and epoch is not None and not damaged:
        return "stopped_early"  # ended short of its epochs without error: a scheduler stop
    return "incomplete"


def _load_experiment(name: str, path: Path, notes: list[str]) -> tuple[list[dict], list[dict]]:
    trial_rows: list[dict] = []
    epoch_rows: list[dict] = []
    for stage, stage_dir in _stage_dirs(path):
        statuses = _statuses(stage_dir)
        for tdir in _trial_dirs(stage_dir):
            try:
                config = json.loads((tdir / "params.json").read_text())
            except (OSError, ValueError):
                notes.append(f"{tdir}: params.json missing or corrupt; trial skipped")
                continue
            results, damaged = _read_result_lines(tdir / "result.json", notes) \
                if (tdir / "result.json").exists() else ([], False)
            tune_status, known_id = statuses.get(tdir.name, (None, None))
            trial_id = (results[-1].get("trial_id") if results else None) or known_id or tdir.name
            trial_stage = stage or config.get("stage", "search")
            meta = {"experiment": name, "stage": trial_stage, "trial_id": trial_id,
                    "arm": config.get("arm", config.get("activation"))}
            row = {**meta, **{k: config.get(k) for k in CONFIG_COLUMNS if k != "arm"}}
            last = results[-1] if results else {}
            row["status"] = _status(tune_status, last, (tdir / "error.txt").exists(), damaged)
            row["time_total_s"] = last.get("time_total_s")
            if not results:
                notes.append(f"{tdir}: no results yet (Tune status {tune_status or 'unknown'})")
            trial_rows.append(row)
            for r in results:
                epoch_rows.append({**meta, **{k: r.get(k) for k in EPOCH_COLUMNS}})
    return trial_rows, epoch_rows


def load_results(paths: list[str | os.PathLike]) -> Results:
    """Load one or more experiment directories; raises AnalysisError if none holds any trial."""
    if not paths:
        raise AnalysisError("no experiment directory given; pass e.g. results/default")
    notes: list[str] = []
    experiments: dict[str, Path] = {}
    trial_rows: list[dict] = []
    epoch_rows: list[dict] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise AnalysisError(f"{path}: no such directory; pass an experiment dir such as results/NAME")
        if not path.is_dir():
            raise AnalysisError(f"{path}: not a directory; pass an experiment dir such as results/NAME")
        if not _stage_dirs(path):
            raise AnalysisError(f"{path}: not an experiment (no search/, confirm/ or Ray Tune trial "
                                f"directories); pass the directory that sweeps/run.py created")
        name = path.resolve().name
        while name in experiments:
            name += "'"
        experiments[name] = path
        t, e = _load_experiment(name, path, notes)
        if not t:
            notes.append(f"{path}: holds no trials yet")
        trial_rows += t
        epoch_rows += e
    if not trial_rows:
        raise AnalysisError(f"{', '.join(map(str, paths))}: no trials with results yet; "
                            f"wait for the first epoch or check the run's logs")
    epochs = pd.DataFrame(epoch_rows, columns=["experiment", "stage", "trial_id", "arm", *EPOCH_COLUMNS])
    epochs = epochs.drop_duplicates(["experiment", "stage", "trial_id", "epoch"], keep="last")
    trials = pd.DataFrame(trial_rows)
    if len(experiments) > 1:  # the same arm name in two experiments is two different arms
        for df in (trials, epochs):
            df["arm"] = df["experiment"] + "/" + df["arm"].astype(str)
    metrics = trial_metrics(epochs)
    trials = trials.merge(metrics, on=["experiment", "stage", "trial_id"], how="left")
    return Results(trials=trials, epochs=epochs, notes=notes, experiments=experiments)


def load_studies(results: Results) -> dict[str, object]:
    """Optuna studies found in the experiments' ``optuna.db`` files, keyed by study name."""
    import optuna

    studies: dict[str, object] = {}
    for path in results.experiments.values():
        db = path / "optuna.db"
        if not db.exists():
            continue
        try:
            storage = optuna.storages.RDBStorage(f"sqlite:///{db.resolve()}",
                                                 skip_compatibility_check=True)
            for summary in optuna.study.get_all_study_summaries(storage):
                studies[summary.study_name] = optuna.load_study(study_name=summary.study_name,
                                                                storage=storage)
        except Exception as exc:  # a corrupt or foreign DB must not sink the report
            results.notes.append(f"{db}: could not read the Optuna study ({exc.__class__.__name__})")
    return studies
