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
from sweeps import seeds
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


def _params(exp: Path, stage: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in (exp / stage).glob("*/params.json")]


def test_stratified_mode_gives_equal_trials_per_arm_and_replicate(smoke_sweep):
    cfg, exp, _ = smoke_sweep
    search = _params(exp, "search")
    cells = sorted((p["arm"], p["replicate"]) for p in search)
    assert cells == sorted([(a, r) for a in ("relu", "selu") for r in (0, 1)] * 2)
    confirm = _params(exp, "confirm")
    assert sorted((p["arm"], p["replicate"]) for p in confirm) == cells
    expected = {seeds.confirm_trial_seed(0, r, k) for r in (0, 1) for k in (0, 1)}
    for arm in ("relu", "selu"):  # confirmation seed k of replicate r is shared by the arms
        assert {p["seed"] for p in confirm if p["arm"] == arm} == expected
    assert not {p["seed"] for p in search} & expected, "confirmation seeds are never search seeds"
    trials = load_results([exp]).trials
    assert trials.loc[trials["stage"] == "confirm", "final_test_accuracy"].notna().all()


def test_optuna_storage_holds_every_trial_with_its_state(smoke_sweep):
    cfg, exp, _ = smoke_sweep
    studies = _studies(exp)
    exp_id = json.loads((exp / ".selu-sweep.json").read_text())["experiment_id"]
    assert set(studies) == {f"smoke-{exp_id}-{a}-r{r}" for a in ("relu", "selu") for r in (0, 1)}
    for study in studies.values():
        assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
        assert all(t.value is not None and 0 <= t.value <= 1 for t in study.trials)


def test_confirmation_uses_each_replicates_best_search_config(smoke_sweep):
    cfg, exp, _ = smoke_sweep
    search, confirm = _params(exp, "search"), _params(exp, "confirm")
    trials = load_results([exp]).trials.set_index("trial_id")
    for arm in ("relu", "selu"):
        for r in (0, 1):
            cell = trials[(trials["stage"] == "search") & (trials["arm"] == arm) & (trials["seed"].isin(
                [p["seed"] for p in search if p["arm"] == arm and p["replicate"] == r]))]
            top = cell[cell["final_val_accuracy"] == cell["final_val_accuracy"].max()]  # ties
            chosen = [p for p in confirm if p["arm"] == arm and p["replicate"] == r]
            assert len({p["lr"] for p in chosen}) == 1 and chosen[0]["lr"] in set(top["lr"])
            assert chosen[0]["source_trial"] in set(top.index)


def test_a_trial_that_raises_once_is_retried_from_its_checkpoint_and_finishes(smoke_sweep):
    cfg, exp, root = smoke_sweep
    assert (root / "crashed-once").exists(), "the injected crash happened"
    trials = load_results([exp]).trials
    assert (trials["status"] == "finished").all()
    for stage in ("search", "confirm"):
        for name, epochs in _epochs_by_trial(exp / stage).items():
            assert epochs == sorted(set(epochs)), f"{name} repeated an epoch: {epochs}"


def test_sweep_ends_with_a_report_and_records_what_it_ran(smoke_sweep):
    _, exp, _ = smoke_sweep
    assert (exp / "report" / "report.md").exists() and (exp / "report" / "report.html").exists()
    assert (exp / "config.yaml").stat().st_mode & 0o077 == 0, "config.yaml is readable by the user only"
    assert exp.stat().st_mode & 0o077 == 0, "the experiment directory is the user's only"
    data = json.loads((exp / "data.json").read_text())
    assert data["kind"] == "synthetic" and data["source"].startswith("synthetic") and data["train"] > 0
    runs = [json.loads(line) for line in (exp / "runs.jsonl").read_text().splitlines()]
    assert [r["mode"] for r in runs] == ["start"]


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
            "--set", "search.num_samples=3", "--set", "search.replicates=1",
            "--set", "search.early_stopping.enabled=false",
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
