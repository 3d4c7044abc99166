"""sweeps/runner.py with real Ray and synthetic data: fairness, storage, retries, kill + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

from analysis.load import load_results
from sweeps.config import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[2]


def _studies(exp: Path) -> dict[str, optuna.Study]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{exp}/optuna.db")
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.study.get_all_study_summaries(storage)}


def _epochs_by_trial(stage_dir: Path) -> dict[str, list[float]]:
    out = {}
    for result in stage_dir.glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        out[result.parent.name] = [r["epoch"] for r in rows]
    return out


def test_stratified_mode_gives_equal_trials_per_arm(smoke_sweep):
    cfg, exp, _ = smoke_sweep
    trials = load_results([exp]).trials
    search = trials[trials["stage"] == "search"]
    assert search.groupby("arm").size().to_dict() == {"relu": 3, "selu": 3}
    confirm = trials[trials["stage"] == "confirm"]
    assert confirm.groupby("arm").size().to_dict() == {"relu": 2, "selu": 2}
    assert set(confirm["seed"]) == {10_000, 10_001}
    assert confirm["final_test_accuracy"].notna().all()


def test_optuna_storage_holds_every_trial_with_its_state(smoke_sweep):
    cfg, exp, _ = smoke_sweep
    studies = _studies(exp)
    assert set(studies) == {"smoke-relu", "smoke-selu"}
    for study in studies.values():
        assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
        assert all(t.value is not None and 0 <= t.value <= 1 for t in study.trials)


def test_confirmation_uses_each_arms_best_search_config(smoke_sweep):
    cfg, exp, _ = smoke_sweep
    trials = load_results([exp]).trials
    for arm in ("relu", "selu"):
        search = trials[(trials["stage"] == "search") & (trials["arm"] == arm)]
        top = search[search["final_val_accuracy"] == search["final_val_accuracy"].max()]  # ties
        confirm = trials[(trials["stage"] == "confirm") & (trials["arm"] == arm)]
        assert confirm["lr"].nunique() == 1 and confirm["lr"].iloc[0] in set(top["lr"])
        assert confirm["epochs"].iloc[0] in set(top["epochs"])


def test_a_trial_that_raises_once_is_retried_from_its_checkpoint_and_finishes(smoke_sweep):
    cfg, exp, root = smoke_sweep
    assert (root / "crashed-once").exists(), "the injected crash happened"
    trials = load_results([exp]).trials
    assert (trials["status"] == "finished").all()
    for stage in ("search", "confirm"):
        for name, epochs in _epochs_by_trial(exp / stage).items():
            assert epochs == sorted(set(epochs)), f"{name} repeated an epoch: {epochs}"


def test_sweep_ends_with_a_report(smoke_sweep):
    _, exp, _ = smoke_sweep
    assert (exp / "report" / "report.md").exists() and (exp / "report" / "report.html").exists()
    assert (exp / "config.yaml").exists()


def _finished(result_json: Path) -> bool:
    lines = [line for line in result_json.read_text().splitlines() if line.strip()]
    try:
        last = json.loads(lines[-1]) if lines else {}
    except ValueError:  # being written right now
        return False
    return last.get("epoch", 0) >= last.get("target_epochs", float("inf"))


def _cli(*args, **kwargs):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return [sys.executable, str(ROOT / "sweeps" / "run.py"), *map(str, args)], env


def test_sigkill_of_the_driver_then_resume_finishes_with_no_trial_run_twice(tmp_path):
    args = ["--config", CONFIG_DIR / "smoke.yaml", "--storage-path", tmp_path, "--name", "killed",
            "--set", "search.num_samples=3", "--set", "search.early_stopping.enabled=false",
            "--set", "search.space.epochs.low=2", "--set", "search.space.epochs.high=3",
            "--set", "confirm.seeds=1", "--no-report"]
    cmd, env = _cli(*args)
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    search = tmp_path / "killed" / "search"
    deadline = time.time() + 240
    finished_before: dict[str, list[float]] = {}
    while time.time() < deadline and proc.poll() is None:
        done = [p.parent for p in search.glob("*/result.json") if _finished(p)]
        if len(done) >= 2:
            time.sleep(2)  # a kill seconds after trials finished must lose none of them
            finished_before = {p.name: _epochs_by_trial(search)[p.name] for p in done}
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the sweep ended before it could be killed; make it longer"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray instance it started
    proc.wait()
    log.close()
    assert finished_before, "no trial finished before the deadline"
    mtimes = {name: (search / name / "result.json").stat().st_mtime for name in finished_before}

    cmd, env = _cli("--name", "killed", "--storage-path", tmp_path, "--resume", "--no-report")
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    epochs = _epochs_by_trial(search)
    assert len(epochs) == 6, sorted(epochs)
    for name, seen in epochs.items():
        assert seen == sorted(set(seen)), f"{name} ran an epoch twice: {seen}"
    for name in finished_before:  # trials finished before the kill were not touched again
        assert (search / name / "result.json").stat().st_mtime == mtimes[name]
    for study in _studies(tmp_path / "killed").values():
        states = [t.state for t in study.trials]
        assert states.count(optuna.trial.TrialState.COMPLETE) == 3, states
        assert optuna.trial.TrialState.RUNNING not in states
    trials = load_results([tmp_path / "killed"]).trials
    assert (trials["status"] == "finished").all()
    assert trials[trials["stage"] == "confirm"].groupby("arm").size().to_dict() == {"relu": 1, "selu": 1}
