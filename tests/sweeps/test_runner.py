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
import pytest

from analysis.contract import FINAL_LOOK_FILE, MARGIN_POINTS
from analysis.load import load_results
from sweeps import runner, seeds
from sweeps.config import CONFIG_DIR, load_config
from trainable.train import METRICS

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


def test_trials_that_raise_or_are_killed_are_retried_from_their_checkpoints_and_finish(smoke_sweep):
    cfg, exp, root = smoke_sweep
    assert (root / "crashed-once").exists(), "the injected exception happened"
    assert (root / "killed-once").exists(), "the injected SIGKILL happened"
    trials = load_results([exp]).trials
    assert (trials["status"] == "finished").all()
    for stage in ("search", "confirm"):
        for name, epochs in _epochs_by_trial(exp / stage).items():
            # every epoch at most once, up to the last: a retry restarted from scratch would report
            # epoch 1 twice. (Ray may drop a retried trial's un-synced early rows, so not "== [1, 2]".)
            assert epochs == sorted(set(epochs)) and epochs[-1] == 2.0, f"{name}: {epochs}"


def test_sweep_ends_with_a_report_and_records_what_it_ran(smoke_sweep):
    _, exp, _ = smoke_sweep
    assert (exp / "report" / "report.md").exists() and (exp / "report" / "report.html").exists()
    assert (exp / "config.yaml").stat().st_mode & 0o077 == 0, "config.yaml is readable by the user only"
    assert exp.stat().st_mode & 0o077 == 0, "the experiment directory is the user's only"
    data = json.loads((exp / "data.json").read_text())
    assert data["source"] == "synthetic" and data["detail"].startswith("synthetic") and data["train"] > 0
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


# Per-epoch values a replayed epoch must reproduce (its timing may differ).
_REPRODUCED = tuple(m for m in METRICS if m not in ("epoch_seconds", "images_per_second"))


def _epoch_values(result_json: Path) -> list[tuple]:
    rows = [json.loads(line) for line in result_json.read_text().splitlines() if line.strip()]
    return [tuple(r.get(k) for k in _REPRODUCED) for r in rows]


def _run_and_kill(tmp_path: Path, args: list, stage: str, after: int) -> dict[str, dict]:
    """Start the CLI, SIGKILL it (and its Ray) 2 s after ``after`` trials of ``stage`` finished;
    returns, for every result.json holding its trial's last epoch then: its mtime, its per-epoch
    values and whether the trial's completion record (done.json) was written."""
    cmd, env = _cli(*args)
    seen: set[Path] = set()  # finished once: Tune's sync rewrites a file in place, so a read can miss it
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        stage_dir = tmp_path / "killed" / stage
        deadline = time.time() + 900  # generous: the guard against a hang, not a speed test
        while time.time() < deadline and proc.poll() is None:
            seen |= {p for p in stage_dir.glob("*/result.json") if _finished(p)}
            if len(seen) >= after:
                time.sleep(2)  # a kill seconds after trials finished must lose none of them
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the sweep ended before it could be killed; make it longer"
        for _ in range(3):  # stable reads: a file Tune is copying over itself is read again
            seen |= {p for p in (tmp_path / "killed").glob("*/*/result.json") if _finished(p)}
            time.sleep(0.05)
        finished = {str(p): {"mtime": p.stat().st_mtime, "values": _epoch_values(p),
                             "recorded": (p.parent / "done.json").is_file()} for p in sorted(seen)}
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray instance it started
        proc.wait()
    assert len([f for f in finished if f"/{stage}/" in f]) >= after, "too few trials finished before the kill"
    return finished


def _resume_and_check(tmp_path: Path, finished_before: dict[str, dict], search_trials: int, seeds: int):
    cmd, env = _cli("--name", "killed", "--storage-path", tmp_path, "--resume", "--no-report")
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    (tmp_path / "resume.log").write_text(resumed.stdout + resumed.stderr)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    exp = tmp_path / "killed"
    assert len(_epochs_by_trial(exp / "search")) == 2 * search_trials
    assert len(_epochs_by_trial(exp / "confirm")) == 2 * seeds
    for stage in ("search", "confirm"):
        for name, seen in _epochs_by_trial(exp / stage).items():
            assert seen == sorted(set(seen)), f"{name} ran an epoch twice: {seen}"
    for path, before in finished_before.items():
        # A trial whose end was recorded before the kill is not touched again. One that had logged
        # its last epoch but not yet ended in the driver (under load, 2 s can pass in between) is
        # restored from its last checkpoint and ends: Tune rewrites its file, with the same epochs.
        if before["recorded"]:
            assert Path(path).stat().st_mtime == before["mtime"], path
        assert _epoch_values(Path(path)) == before["values"], path
    for study in _studies(exp).values():
        states = [t.state for t in study.trials]
        assert states.count(optuna.trial.TrialState.COMPLETE) == search_trials, states
        assert optuna.trial.TrialState.RUNNING not in states
    trials = load_results([exp]).trials
    assert (trials["status"] == "finished").all()
    per_arm = trials[trials["stage"] == "confirm"].groupby("arm").size().to_dict()
    assert per_arm == {"relu": seeds, "selu": seeds}
    runs = [json.loads(line)["mode"] for line in (exp / "runs.jsonl").read_text().splitlines()]
    assert runs == ["start", "resume"], "every start and resume is recorded"


_KILL_ARGS = ["--config", CONFIG_DIR / "smoke.yaml", "--name", "killed", "--no-report",
              "--set", "search.replicates=1", "--set", "search.early_stopping.enabled=false",
              "--set", "search.max_epochs=3"]


def test_sigkill_of_the_driver_in_the_search_then_resume_loses_nothing(tmp_path):
    args = [*_KILL_ARGS, "--storage-path", tmp_path, "--set", "search.num_samples=3",
            "--set", "confirm.seeds=1"]
    finished = _run_and_kill(tmp_path, args, "search", after=2)
    _resume_and_check(tmp_path, finished, search_trials=3, seeds=1)


def test_sigkill_of_the_driver_in_the_confirmation_then_resume_loses_nothing(tmp_path):
    args = [*_KILL_ARGS, "--storage-path", tmp_path, "--set", "search.num_samples=1",
            "--set", "confirm.seeds=3"]
    finished = _run_and_kill(tmp_path, args, "confirm", after=2)
    _resume_and_check(tmp_path, finished, search_trials=1, seeds=3)


@pytest.mark.parametrize("vary", [True, False])
def test_without_a_search_each_confirmation_trial_trains_on_a_split_the_sweep_made(vary):
    """default.yaml varies the split per replicate; with search.enabled false its confirmation trials
    named no split_seed and every one failed ("no such split", found 2026-12-06 running
    default.yaml --set search.enabled=false). Each trial now names replicate 0's split."""
    from sweeps.prepare import load_data

    cfg = load_config(CONFIG_DIR / "smoke.yaml", ["search.enabled=false", "search.replicates=1",
                                                  f"data.vary_split={str(vary).lower()}"])
    configs = runner.confirm_configs(cfg, None)
    data = load_data(cfg)
    assert len(configs) == 2 * cfg.confirm.seeds
    for config in configs:
        if vary:
            assert isinstance(data, dict) and config["split_seed"] in data, (config, list(data))
        else:
            assert "split_seed" not in config and not isinstance(data, dict)


def _assert_the_best_at_epoch_1_alone_went_on(exp: Path) -> None:
    """In each search cell (relu/r0, selu/r0) of 3 trials with a rung at epoch 1, two trials recorded
    epoch 1 only and one epochs 1-3: the one with the best value of its cell at epoch 1."""
    cells: dict[str, dict[str, list[dict]]] = {}
    for params in (exp / "search").glob("*/params.json"):
        config = json.loads(params.read_text())
        result = params.parent / "result.json"
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        cells.setdefault(f"{config['arm']}/r{config['replicate']}", {})[params.parent.name] = lines
    assert set(cells) == {"relu/r0", "selu/r0"}
    for cell, rows in cells.items():
        epochs = sorted(tuple(r["epoch"] for r in lines) for lines in rows.values())
        assert epochs == [(1.0,), (1.0,), (1.0, 2.0, 3.0)], (cell, epochs)
        at_1 = {name: lines[0]["best_val_accuracy"] for name, lines in rows.items()}
        went_on = [name for name, lines in rows.items() if len(lines) > 1]
        assert len(went_on) == 1 and at_1[went_on[0]] == max(at_1.values()), (cell, at_1, went_on)


_SYNC_ARGS = ["search.replicates=1", "search.num_samples=3", "search.max_epochs=3", "confirm.seeds=1",
              "search.early_stopping.enabled=true", "search.early_stopping.halving=sync",
              "search.early_stopping.grace_period=1", "search.early_stopping.reduction_factor=3"]


def test_sync_halving_in_a_real_sweep_runs_the_best_at_each_rung_on_and_prunes_the_rest(ray_local, tmp_path):
    """Three trials per cell, a rung at epoch 1: every trial waits there (PAUSE) for its cell, then
    the best one (floor(3/3) = 1) is restored from its checkpoint and trains to epoch 3, the other
    two end at epoch 1: PRUNED in Optuna with their value and epochs, stopped_early in the results.
    Warm actors on (the shipped mode), so paused and restored trials pass through reused actors."""
    from sweeps.runner import REUSE_ACTORS, RunOptions, run_sweep

    assert REUSE_ACTORS
    cfg = load_config(CONFIG_DIR / "smoke.yaml", [f"storage_path={tmp_path}", "name=halving", *_SYNC_ARGS])
    exp = Path(run_sweep(cfg, RunOptions()))
    _assert_the_best_at_epoch_1_alone_went_on(exp)
    for study in _studies(exp).values():
        states = sorted(t.state.name for t in study.trials)
        assert states == ["COMPLETE", "PRUNED", "PRUNED"], states
        for t in study.trials:
            assert t.user_attrs["epochs_trained"] == (3 if t.state.name == "COMPLETE" else 1)
            assert sorted(t.intermediate_values) == ([1, 2, 3] if t.state.name == "COMPLETE" else [1])
    trials = load_results([exp]).trials
    search = trials[trials["stage"] == "search"]
    assert sorted(search["status"]) == ["finished"] * 2 + ["stopped_early"] * 4
    assert (trials[trials["stage"] == "confirm"]["status"] == "finished").all()


def test_sigkill_while_trials_wait_at_a_rung_then_resume_makes_the_same_promotions(tmp_path):
    """Killed once at least 3 search trials have recorded epoch 1 (so some wait, paused, at the rung),
    then resumed: every trial's epochs are recorded once and the cell's best at epoch 1 (and only it)
    trained on, as in an uninterrupted run."""
    args = ["--config", CONFIG_DIR / "smoke.yaml", "--name", "killed", "--no-report",
            "--storage-path", tmp_path,
            *[a for kv in _SYNC_ARGS for a in ("--set", kv)]]
    cmd, env = _cli(*args)
    stage_dir = tmp_path / "killed" / "search"
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 900  # the guard against a hang, not a speed test
        while time.time() < deadline and proc.poll() is None:
            if sum(1 for p in stage_dir.glob("*/result.json") if p.stat().st_size) >= 3:
                time.sleep(2)
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the sweep ended before it could be killed; make it longer"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    cmd, env = _cli("--name", "killed", "--storage-path", tmp_path, "--resume", "--no-report")
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    (tmp_path / "resume.log").write_text(resumed.stdout + resumed.stderr)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    exp = tmp_path / "killed"
    for name, seen in _epochs_by_trial(exp / "search").items():
        assert seen == sorted(set(seen)), f"{name} ran an epoch twice: {seen}"
    _assert_the_best_at_epoch_1_alone_went_on(exp)
    for study in _studies(exp).values():
        states = [t.state.name for t in study.trials]
        assert sorted(s for s in states if s != "FAIL") == ["COMPLETE", "PRUNED", "PRUNED"], states
        # A FAIL is a study trial asked after Tune's last snapshot (ArmOptunaSearch.match_study): its
        # index was asked again, so the same design point and seed ran in its place.
        asked_again = {t.user_attrs["trial_index"] for t in study.trials if t.state.name != "FAIL"}
        assert all(t.user_attrs["trial_index"] in asked_again for t in study.trials if t.state.name == "FAIL")
    trials = load_results([exp]).trials
    assert len(trials[trials["stage"] == "confirm"]) == 2
    runs = [json.loads(line)["mode"] for line in (exp / "runs.jsonl").read_text().splitlines()]
    assert runs == ["start", "resume"]


def test_a_corrupt_experiment_state_or_study_database_is_exit_2(tmp_path):
    """A damaged sweep directory is a clear error on --resume, not a traceback."""
    exp = tmp_path / "killed"
    exp.mkdir(mode=0o700)
    (exp / ".selu-sweep.json").write_text(json.dumps({"tool": "selu-sweep", "experiment_id": "abc",
                                                      "name": "killed"}))
    saved = (CONFIG_DIR / "smoke.yaml").read_text().replace("name: smoke ", "name: killed ")
    (exp / "config.yaml").write_text(saved)
    (exp / "search").mkdir()
    (exp / "search" / "experiment_state-2026-01-01_00-00-00.json").write_text("{not json")
    (exp / "search" / "tuner.pkl").write_bytes(b"\x80\x04garbage")
    (exp / "optuna.db").write_bytes(b"this is not an SQLite file" * 100)
    cmd, env = _cli("--name", "killed", "--storage-path", tmp_path, "--resume")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "optuna.db" in lines[0] or "cannot restore" in lines[0]
    (exp / "optuna.db").unlink()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    # Not signed by this user's key: refused before anything in it is read as a pickle.
    assert proc.returncode == 2 and "refused: no signature" in proc.stderr, proc.stderr[-2000:]
    # The user vouches for it (python -m sweeps.trust): then the damage itself is the clear error.
    sign = subprocess.run([sys.executable, "-m", "sweeps.trust", str(exp / "search")], env=env,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert sign.returncode == 0, sign.stderr[-2000:]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "cannot restore the search stage" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


class _Result:
    """The parts of a Tune ``Result`` that best_configs reads."""

    def __init__(self, config: dict, **metrics):
        self.config, self.metrics, self.error = config, {"trial_id": config["id"], **metrics}, None


def test_each_cells_best_trial_is_chosen_and_objective_best_confirms_at_its_best_epoch():
    from sweeps.config import load_config
    from sweeps.runner import best_configs

    def trial(id_, arm, rep, val, best_epoch, epoch=20.0, diverged=0.0):
        return _Result({"id": id_, "arm": arm, "replicate": rep, "lr": 1e-3, "epochs": 20}, val_accuracy=val,
                       best_val_accuracy=val + 0.05, best_epoch=best_epoch, epoch=epoch, target_epochs=20.0,
                       diverged=diverged)

    results = [trial("a", "relu", 0, 0.60, 7), trial("b", "relu", 0, 0.65, 9),
               trial("c", "relu", 0, 0.99, 3, diverged=1.0),         # diverged: never chosen
               trial("d", "relu", 0, 0.90, 3, epoch=5.0),            # stopped early by ASHA: never chosen
               trial("e", "selu", 0, 0.55, 12)]
    final = best_configs(load_config(overrides=["name=t", "search.replicates=1", "search.objective=final"]),
                         results)
    assert final["relu/r0"]["source_trial"] == "b" and final["relu/r0"]["epochs"] == 20
    best = best_configs(load_config(overrides=["name=t", "search.replicates=1", "search.objective=best"]),
                        results)
    assert best["relu/r0"]["epochs"] == 9 and best["selu/r0"]["epochs"] == 12, "confirm at the best epoch"


def test_identical_arms_end_to_end_name_no_winner(ray_local, tmp_path):
    """relu against relu under another name, a real (tiny) replicated sweep: no activation winner; the
    runs at the original configuration are run, loaded and tested as their own, secondary estimand."""
    from sweeps.config import load_config
    from sweeps.runner import RunOptions, run_sweep

    cfg = load_config(CONFIG_DIR / "smoke.yaml", [
        f"storage_path={tmp_path}", "name=twins", "arms=[{name: relu, activation: relu}, "
        "{name: relu-again, activation: relu}]", "search.replicates=3", "search.num_samples=1",
        "search.max_epochs=1", "confirm.seeds=3", "confirm.original_seeds=1", "train.lr=0.002"])
    exp = Path(run_sweep(cfg, RunOptions()))
    record = json.loads((exp / "report" / "verdict.json").read_text())
    assert record["unit"] == "replicate" and record["replicates"] == {"relu": 3, "relu-again": 3}
    assert record["winner"] is None, record["claims"]
    assert record["synthetic_data"] is True and "SYNTHETIC" in record["claims"][0]
    # the runs at the original configuration: in the confirmation's experiment, trained at train.lr and
    # the most epochs, their own seeds paired across arms, and tested apart (secondary), never in the primary
    original = [p for p in _params(exp, "confirm") if p["stage"] == "original"]
    tuned = [p for p in _params(exp, "confirm") if p["stage"] == "confirm"]
    assert len(original) == 6 and len(tuned) == 18
    assert {(p["lr"], p["epochs"], p["source_trial"]) for p in original} == {(0.002, 1, "")}
    for r in range(3):
        seeds_by_arm = {a: {p["seed"] for p in original if p["replicate"] == r and p["arm"] == a}
                        for a in ("relu", "relu-again")}
        assert seeds_by_arm["relu"] == seeds_by_arm["relu-again"] and len(seeds_by_arm["relu"]) == 1
    assert not {p["seed"] for p in original} & {p["seed"] for p in tuned}
    oc = record["original_configuration"]
    assert oc["n"] == 3 and oc["test"] == "paired t-test on replicate means" and record["complete"] is True
    assert record["seeds"] == {"relu": [3, 3, 3], "relu-again": [3, 3, 3]}  # the primary: tuned runs only
    assert any(c.startswith("Original configuration (lr 0.002, 1 epoch, no search) (secondary")
               for c in record["claims"]), record["claims"]


LOAD_WITHOUT_PROJECT = r"""
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("sweeps", "trainable", "analysis"):
            raise ModuleNotFoundError(name)

sys.meta_path.insert(0, Refuse())
from ray import cloudpickle
searcher, scheduler, progress, records = cloudpickle.loads(sys.stdin.buffer.read())
print(type(searcher).__name__, sorted(searcher._searchers), type(scheduler).__name__, scheduler._metric,
      type(progress).__name__, type(records).__name__)
"""


def test_searcher_scheduler_and_progress_table_unpickle_without_the_project(tmp_path):
    from ray import cloudpickle

    from sweeps.completion import CompletionRecords
    from sweeps.progress import ProgressTable
    from sweeps.search import make_scheduler, make_searcher

    cfg = load_config(CONFIG_DIR / "smoke.yaml")
    runner.pickle_project_by_value()
    data = cloudpickle.dumps((make_searcher(cfg, None), make_scheduler(cfg), ProgressTable("search", 8, 16),
                              CompletionRecords()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run([sys.executable, "-I", "-c", LOAD_WITHOUT_PROJECT], input=data, env=env,
                          cwd=tmp_path, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout.decode().split() == [
        "StratifiedSearch", "['relu/r0',", "'relu/r1',", "'selu/r0',", "'selu/r1']", "PerCellScheduler",
        "best_val_accuracy", "ProgressTable", "CompletionRecords"]


# --------------------------------------------------------------------------------------------
# Replicates until decided: the loop, with the stages and the look replaced by fakes. The look is
# analysis.sequential.look (design.md §3); this fake stands in for it in these tests only.


class _FakeSequential:
    """``analysis.sequential`` as design.md §3 specifies it: a Plan, and a look that decides
    ``decisions[R]`` at R complete pairs ("continue" when absent and not final)."""

    def __init__(self, decisions: dict[int, str]):
        self.decisions, self.looks, self.final_looks = decisions, [], []

    def plan_from_config(self, config):
        plan = config["search"]["replicates"]
        return {"min_replicates": plan["min"], "max_replicates": plan["max"], "final_look": None}

    def final_look_record(self, record):
        return record

    def with_final_look(self, plan, record):
        return {**plan, "final_look": record["replicates"]}

    def look(self, trials, plan, *, margin_points, metric=None, final=False):
        pairs = int(trials[trials["stage"] == "confirm"]["replicate"].nunique())
        self.looks.append((pairs, final, margin_points))
        self.final_looks.append(plan["final_look"])
        decision = self.decisions.get(pairs, "undecided" if final else "continue")
        return {"decision": decision, "winner": "selu" if decision == "winner" else None,
                "replicates": pairs,
                "look": pairs - plan["min_replicates"] + 1,
                "looks_planned": plan["max_replicates"] - plan["min_replicates"] + 1,
                "arm_a": "selu", "arm_b": "relu", "difference": 1.5, "ci": [0.5, 2.5], "ci_level": 0.975,
                "p_value": 0.01, "boundary": {"method": "fake", "nominal_alpha": 0.025, "critical_t": 3.1},
                "test": "fake", "reason": None}


def _fake_stages(monkeypatch, tmp_path, decisions, budget_minutes=None, clock=None, started=(),
                 final_look=None):
    """The runner's loop over fake stages: each confirmed batch writes its replicates' trials into
    a handmade trials table that the fake look reads. Returns (ran batches, fake sequential)."""
    import sys

    import pandas as pd

    from sweeps.config import load_config
    from sweeps.experiment import Experiment

    plan = {"min": 3, "max": 6}
    if budget_minutes is not None:
        plan["budget_minutes"] = budget_minutes
    cfg = load_config(CONFIG_DIR / "smoke.yaml", [f"storage_path={tmp_path}",
                                                  f"search.replicates={json.dumps(plan)}"])
    fake = _FakeSequential(decisions)
    monkeypatch.setitem(sys.modules, "analysis.sequential", fake)
    import analysis

    monkeypatch.setattr(analysis, "sequential", fake, raising=False)
    ran, confirmed = [], []

    class _Grid(list):
        num_errors = 0

    def search(cfg, exp, trainable, exp_id, batch):
        ran.append(("search", batch.replicates, batch.first, batch.path(exp)))
        return _Grid()

    def best(cfg, results, reps):
        return {f"{a.name}/r{r}": {"lr": 1e-3, "epochs": 2} for r in reps for a in cfg.arms}

    def confirm(cfg, exp, trainable, best, batch):
        ran.append(("confirm", batch.replicates, batch.first, batch.path(exp)))
        confirmed.extend(batch.replicates)
        return _Grid()

    def load(paths):
        rows = [{"stage": "confirm", "replicate": r, "arm": a} for r in confirmed for a in ("relu", "selu")]
        return type("R", (), {"trials": pd.DataFrame(rows)})()

    monkeypatch.setattr(runner, "run_search", search)
    monkeypatch.setattr(runner, "best_configs", best)
    monkeypatch.setattr(runner, "run_confirm", confirm)
    monkeypatch.setattr("analysis.load.load_results", load)
    monkeypatch.setattr(runner, "_started", lambda exp, batch: batch.replicates in started)
    exp = Experiment(str(tmp_path), cfg.name)
    Path(exp.path).mkdir(parents=True)
    (Path(exp.path) / "runs.jsonl").write_text(json.dumps({"time": "2026-01-01T00:00:00+0000"}) + "\n")
    if final_look is not None:
        (Path(exp.path) / FINAL_LOOK_FILE).write_text(json.dumps(final_look))
    runner._run_stages(cfg, runner.RunOptions(), exp, trainable=None, exp_id="x", clock=clock or time.time)
    return ran, fake


def test_a_sequential_plan_runs_min_replicates_together_then_one_at_a_time_until_decided(
        monkeypatch, tmp_path, capsys):
    ran, fake = _fake_stages(monkeypatch, tmp_path, decisions={5: "winner"})
    exp = tmp_path / "smoke"
    assert ran == [("search", (0, 1, 2), True, f"{exp}/search"),
                   ("confirm", (0, 1, 2), True, f"{exp}/confirm"),
                   ("search", (3,), False, f"{exp}/search/replicate-3"),
                   ("confirm", (3,), False, f"{exp}/confirm/replicate-3"),
                   ("search", (4,), False, f"{exp}/search/replicate-4"),
                   ("confirm", (4,), False, f"{exp}/confirm/replicate-4")]
    # A look after each confirmed batch from min on, at the analysis margin, the last one not final.
    assert fake.looks == [(3, False, MARGIN_POINTS), (4, False, MARGIN_POINTS), (5, False, MARGIN_POINTS)]
    looks = [line for line in capsys.readouterr().out.splitlines() if line.startswith("look ")]
    assert looks[-1] == ("look 3/4 after 5 replicate pair(s): winner (selu); difference (selu - relu) "
                         "+1.50 points, 97.5% CI [+0.50, +2.50]; p 0.01; boundary nominal_alpha 0.025, "
                         "critical_t 3.1")
    assert len(looks) == 3


def test_a_sequential_plan_stops_at_max_with_a_final_look_or_on_equivalence(monkeypatch, tmp_path):
    ran, fake = _fake_stages(monkeypatch, tmp_path, decisions={})
    assert fake.looks[-1] == (6, True, MARGIN_POINTS) and len(fake.looks) == 4
    assert [b for stage, b, _, _ in ran if stage == "search"] == [(0, 1, 2), (3,), (4,), (5,)]
    ran, fake = _fake_stages(monkeypatch, tmp_path / "eq", decisions={3: "equivalent"})
    assert [b for stage, b, _, _ in ran] == [(0, 1, 2), (0, 1, 2)] and len(fake.looks) == 1


def test_a_replicate_that_would_end_after_the_budget_is_not_started_and_the_look_before_is_final(
        monkeypatch, tmp_path, capsys):
    """Budget 50 min; the sweep started at 00:00. After 3 replicates at 00:30 (10 min each) a 4th
    would end at 40 min: it runs; after it, at 00:45 (11.25 min each), a 5th would end at 56 min,
    so the look at R = 4 is the final one (it spends the alpha left), recorded in final-look.json
    before it is made, so that the report tests that look at the same level."""
    import calendar

    t0 = calendar.timegm((2026, 1, 1, 0, 0, 0))
    now = iter([t0 + 30 * 60, t0 + 45 * 60])
    ran, fake = _fake_stages(monkeypatch, tmp_path, decisions={}, budget_minutes=50,
                             clock=lambda: next(now))
    assert [b for stage, b, _, _ in ran if stage == "search"] == [(0, 1, 2), (3,)]
    assert fake.looks == [(3, False, MARGIN_POINTS), (4, True, MARGIN_POINTS)]
    assert fake.final_looks == [None, 4]
    record = json.loads((tmp_path / "smoke" / FINAL_LOOK_FILE).read_text())
    assert record["replicates"] == 4 and record["reason"].startswith("budget: another replicate")
    out = capsys.readouterr().out
    assert "budget: another replicate (about 11.2 min) would end at 56.2 of search.replicates." \
           "budget_minutes 50" in out and "stopping at 4 replicates" in out
    assert out.index("look 2/4 after 4") < out.index("budget: another replicate")
    # Resumed after the budget: a replicate that had started is finished, no new one is begun.
    now = iter([t0 + 90 * 60, t0 + 95 * 60])
    ran, fake = _fake_stages(monkeypatch, tmp_path / "again", decisions={}, budget_minutes=50,
                             clock=lambda: next(now), started=[(3,)])
    assert [b for stage, b, _, _ in ran if stage == "search"] == [(0, 1, 2), (3,)]
    assert fake.looks[-1] == (4, True, MARGIN_POINTS)


def test_a_resumed_sweep_adds_no_replicate_after_the_look_its_budget_made_final(monkeypatch, tmp_path,
                                                                                capsys):
    """final-look.json says the budget made R = 4 the last look; resumed with a clock that would
    now let a replicate in (as if the budget had been raised), the sweep repeats its looks at
    R = 3 and 4, the last at the final level, and adds no fifth replicate: that alpha is spent."""
    import calendar

    t0 = calendar.timegm((2026, 1, 1, 0, 0, 0))
    ran, fake = _fake_stages(monkeypatch, tmp_path, decisions={}, budget_minutes=50,
                             clock=lambda: t0 + 60, started=[(3,)],
                             final_look={"replicates": 4, "reason": "budget: ..."})
    assert [b for stage, b, _, _ in ran if stage == "search"] == [(0, 1, 2), (3,)]
    assert fake.looks == [(3, False, MARGIN_POINTS), (4, True, MARGIN_POINTS)] and fake.final_looks == [4, 4]
    assert "the look at R = 4 was the last (final-look.json: budget: ...); its alpha is spent" \
        in capsys.readouterr().out


def test_a_fixed_design_runs_every_replicate_in_one_batch_without_a_look(monkeypatch, tmp_path):
    from sweeps.config import load_config

    cfg = load_config(CONFIG_DIR / "smoke.yaml", ["search.replicates=4"])
    assert runner.replicate_batches(cfg) == [(0, 1, 2, 3)]
    cfg = load_config(CONFIG_DIR / "smoke.yaml", ["search.replicates={min: 3, max: 5}"])
    assert runner.replicate_batches(cfg) == [(0, 1, 2), (3,), (4,)]
    cfg = load_config(CONFIG_DIR / "smoke.yaml", ["search.enabled=false", "search.replicates=1"])
    assert runner.replicate_batches(cfg) == [(0,)]


# --------------------------------------------------------------------------------------------
# Completion records: a trial's end survives a driver killed before Tune's next snapshot


def _three_epochs(config):
    from ray import tune

    for epoch in range(1, 4):
        tune.report({"epoch": float(epoch), "target_epochs": 3.0, "val_accuracy": 0.1 * epoch,
                     "diverged": 0.0})


def test_a_trial_whose_end_the_snapshot_missed_is_not_run_again_on_resume(ray_local, tmp_path):
    """Real Tune files: two trials end (each writes done.json); then Tune's state is rolled back to
    what a snapshot taken before trial 0's last epoch holds (RUNNING, last result epoch 2, its
    result.json without epoch 3). ``trust_completion_records`` restores the end from done.json."""
    from ray import tune

    from sweeps.completion import CompletionRecords, trust_completion_records

    tuner = tune.Tuner(_three_epochs, param_space={"k": tune.grid_search([0, 1])},
                       run_config=tune.RunConfig(name="stage", storage_path=str(tmp_path), verbose=0,
                                                 callbacks=[CompletionRecords()]))
    tuner.fit()
    stage = tmp_path / "stage"
    (state_file,) = stage.glob("experiment_state-*.json")
    state = json.loads(state_file.read_text())
    trial = json.loads(state["trial_data"][0][0])
    meta = json.loads(state["trial_data"][0][1])
    tdir = stage / trial["relative_logdir"]
    record = json.loads((tdir / "done.json").read_text())
    assert record["trial_id"] == trial["trial_id"] and record["last_result"]["epoch"] == 3.0
    final = meta["last_result"]
    trial["status"] = "RUNNING"
    meta["last_result"] = {**final, "epoch": 2.0, "training_iteration": 2}
    state["trial_data"][0] = [json.dumps(trial), json.dumps(meta)]
    state_file.write_text(json.dumps(state))
    lines = (tdir / "result.json").read_text().splitlines()
    (tdir / "result.json").write_text("\n".join(lines[:2]) + "\n")
    other = stage / json.loads(state["trial_data"][1][0])["relative_logdir"] / "result.json"
    other_before = other.read_bytes()

    assert trust_completion_records(str(stage)) == 1
    assert trust_completion_records(str(stage)) == 0  # nothing left to mark
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(stage))
    by_id = {t.trial_id: t for t in analysis.trials}
    assert by_id[trial["trial_id"]].status == "TERMINATED"
    assert by_id[trial["trial_id"]].last_result["epoch"] == 3.0
    epochs = [json.loads(line)["epoch"] for line in (tdir / "result.json").read_text().splitlines()]
    assert epochs == [1.0, 2.0, 3.0]
    assert other.read_bytes() == other_before

    # A record that belongs to another trial (a reused directory name) is not trusted.
    trial["status"] = "RUNNING"
    state = json.loads(state_file.read_text())
    state["trial_data"][0][0] = json.dumps(trial)
    state_file.write_text(json.dumps(state))
    (tdir / "done.json").write_text(json.dumps({**record, "trial_id": "someone-else"}))
    assert trust_completion_records(str(stage)) == 0


def _three_checkpointed_epochs(config):
    import tempfile

    from ray import tune

    start = 1
    if (checkpoint := tune.get_checkpoint()) is not None:
        with checkpoint.as_directory() as d:
            start = int(Path(d, "epoch").read_text()) + 1
    for epoch in range(start, 4):
        with tempfile.TemporaryDirectory() as d:
            Path(d, "epoch").write_text(str(epoch))
            tune.report({"epoch": float(epoch), "target_epochs": 3.0, "val_accuracy": 0.1 * epoch,
                         "diverged": 0.0}, checkpoint=tune.Checkpoint.from_directory(d))


def _as_of_epoch(meta_json: str, keep: int) -> str:
    """A trial's run metadata as a snapshot taken after its ``keep``-th checkpoint would hold it."""
    from ray.tune.utils.serialization import TuneFunctionEncoder, _loads_with_cloudpickle

    meta = _loads_with_cloudpickle(meta_json)
    manager = meta["checkpoint_manager"]
    manager._checkpoint_results = manager._checkpoint_results[:keep]
    manager._latest_checkpoint_result = manager._checkpoint_results[-1] if keep else None
    meta["last_result"] = {**meta["last_result"], "epoch": float(keep), "training_iteration": keep}
    return json.dumps(meta, indent=2, cls=TuneFunctionEncoder)


def test_epochs_after_the_restored_checkpoint_are_cut_from_result_json_and_recorded_once(ray_local, tmp_path):
    """The SIGKILL test once saw epochs [1, 2, 2, 3]: Tune's last snapshot (a second behind) held
    the epoch-1 checkpoint while result.json already had epoch 2, so the restored trial trained
    epoch 2 again and Tune appended it again. Real Tune files: both trials of a finished stage are
    rolled back to a snapshot taken after their first checkpoint (trial 0) and before any (trial 1);
    ``roll_back_unfinished_results`` cuts result.json to match, and the restored run then records
    every epoch exactly once."""
    from ray import tune

    from sweeps.completion import roll_back_unfinished_results

    def tuner():
        return tune.Tuner(_three_checkpointed_epochs, param_space={"k": tune.grid_search([0, 1])},
                          run_config=tune.RunConfig(name="stage", storage_path=str(tmp_path), verbose=0))

    tuner().fit()
    stage = tmp_path / "stage"
    (state_file,) = stage.glob("experiment_state-*.json")
    state = json.loads(state_file.read_text())
    dirs = []
    for i, keep in enumerate((1, 0)):
        trial = json.loads(state["trial_data"][i][0])
        trial["status"] = "RUNNING"
        state["trial_data"][i] = [json.dumps(trial), _as_of_epoch(state["trial_data"][i][1], keep)]
        dirs.append(stage / trial["relative_logdir"])
    state_file.write_text(json.dumps(state))
    with open(dirs[0] / "result.json", "a") as f:
        f.write('{"epoch": 4')  # a line cut short by the kill

    assert roll_back_unfinished_results(str(stage)) == 2
    assert [json.loads(line)["epoch"] for line in (dirs[0] / "result.json").read_text().splitlines()] == [1.0]
    assert (dirs[1] / "result.json").read_text() == ""
    assert roll_back_unfinished_results(str(stage)) == 0  # nothing left to cut

    results = tune.Tuner.restore(str(stage), trainable=_three_checkpointed_epochs,
                                 resume_unfinished=True).fit()
    assert sorted(r.metrics["epoch"] for r in results) == [3.0, 3.0]
    for tdir in dirs:
        rows = [json.loads(line) for line in (tdir / "result.json").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1.0, 2.0, 3.0], tdir
        assert [r["training_iteration"] for r in rows] == [1, 2, 3]
        progress = (tdir / "progress.csv").read_text().splitlines()
        col = progress[0].split(",").index("training_iteration")
        assert [row.split(",")[col] for row in progress[1:]] == ["1", "2", "3"]


def test_the_staging_copy_to_local_storage_replaces_files_whole_and_skips_unchanged(tmp_path, monkeypatch):
    """Tune's own copy truncates and rewrites every trial's files in place at every snapshot; the
    SIGKILL test found a finished trial's result.json empty after a kill. A copy killed between two
    files here leaves the second file's previous version whole."""
    import pyarrow.fs

    from sweeps import completion

    staging, storage = tmp_path / "staging", tmp_path / "storage"
    files = {"a/result.json": "1\n2\n", "b/result.json": "1\n", "experiment_state-x.json": "{}"}
    for rel, text in files.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_text(text)
    tune_calls = []

    def upload(**kw):
        completion._atomic_upload(**kw, _tune=lambda **k: tune_calls.append(k))

    fs = pyarrow.fs.LocalFileSystem()
    upload(local_path=str(staging), fs=fs, fs_path=str(storage))
    assert all((storage / rel).read_text() == text for rel, text in files.items())
    assert (storage / "b/result.json").stat().st_mtime_ns == (staging / "b/result.json").stat().st_mtime_ns
    assert not list(storage.rglob(".*.tmp-*"))

    (staging / "a/result.json").write_text("1\n2\n3\n")
    (staging / "b/result.json").write_text("1\n2\n")
    replaced, real_replace = [], os.replace

    def replace_then_die(src, dst):
        if replaced:
            raise KeyboardInterrupt  # the kill, after the first file
        replaced.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(completion.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        upload(local_path=str(staging), fs=fs, fs_path=str(storage))
    monkeypatch.undo()
    a, b = ((storage / n).read_text() for n in ("a/result.json", "b/result.json"))
    assert a in ("1\n2\n", "1\n2\n3\n") and b in ("1\n", "1\n2\n"), (a, b)  # each whole: old or new
    assert len(replaced) == 1 and (a == "1\n2\n3\n") + (b == "1\n2\n") == 1  # the one copied first is new

    before = (storage / "experiment_state-x.json").stat().st_mtime_ns
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    upload(local_path=str(staging), fs=fs, fs_path=str(storage))
    monkeypatch.undo()
    assert not any(p.endswith("experiment_state-x.json") for p in opened), "copied again, unchanged"
    assert (storage / "experiment_state-x.json").stat().st_mtime_ns == before
    assert (storage / "a/result.json").read_text() == "1\n2\n3\n"
    assert (storage / "b/result.json").read_text() == "1\n2\n"
    upload(local_path=str(staging), fs=fs, fs_path=str(storage), exclude=["*.png"])
    assert len(tune_calls) == 1  # with exclude: Tune's own copy

    # A signature goes before the file it signs (a .sig lists older versions, never newer ones).
    (staging / "experiment_state-x.json").write_text('{"v": 2}')
    (staging / "experiment_state-x.json.sig").write_text("new\nold\n")
    replaced.clear()
    monkeypatch.setattr(completion.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        upload(local_path=str(staging), fs=fs, fs_path=str(storage))
    monkeypatch.undo()
    assert [Path(p).name for p in replaced] == ["experiment_state-x.json.sig"]
    assert (storage / "experiment_state-x.json").read_text() == "{}"


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_a_snapshot_cut_short_by_a_kill_is_put_back_whole_before_the_restore(ray_local, tmp_path, monkeypatch,
                                                                             signed):
    """Tune copies its snapshot to local storage in place, in the background: a kill during the copy
    leaves an empty experiment_state file (the SIGKILL test hit it). CompletionRecords keeps a whole
    copy after every snapshot; restore_snapshot puts it back and Tune restores from it. Signed: as a
    sweep runs it (sweeps.trust signs each snapshot), the copy holds the state and its .sig, and the
    .sig (which sorts after the state) is never taken for the state."""
    from ray import tune
    from ray.tune.execution.tune_controller import TuneController

    from sweeps import completion, trust
    from sweeps.completion import CompletionRecords, restore_snapshot

    own = getattr(TuneController.save_to_dir, "__wrapped__", TuneController.save_to_dir)
    monkeypatch.setattr(TuneController, "save_to_dir", own)  # undone after the test
    if signed:
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
        trust.install()
    tuner = tune.Tuner(_three_epochs, param_space={"k": tune.grid_search([0, 1])},
                       run_config=tune.RunConfig(name="stage", storage_path=str(tmp_path), verbose=0,
                                                 callbacks=[CompletionRecords()]))
    tuner.fit()
    stage = tmp_path / "stage"
    (state_file,) = stage.glob("experiment_state-*.json")
    whole = state_file.read_bytes()
    slot, manifest = completion._newest_slot(str(stage / ".last-snapshot"))
    snap = Path(slot)
    assert (snap / state_file.name).read_bytes() == whole  # the copy holds the final state
    assert restore_snapshot(str(stage)) == []  # Tune's own state is whole and as new: kept
    state_file.write_bytes(b"")  # what the kill left
    assert state_file.name in restore_snapshot(str(stage))
    assert state_file.read_bytes() == whole
    # A kill while the next copy was written leaves that slot without its manifest: the whole one
    # is used. Tune's own files a mix of two snapshots (one file from a later step, as the loop
    # found: the trial counter ahead of the trial list): the copy's file is put back.
    other = snap.parent / ("b" if snap.name == "a" else "a")
    other.mkdir(exist_ok=True)
    (other / "manifest.json").unlink(missing_ok=True)
    (other / state_file.name).write_bytes(b'{"runner_data": {"_iteration": 99999')
    assert completion._newest_slot(str(stage / ".last-snapshot"))[0] == slot
    searcher_file = next(n for n in manifest["files"] if n != state_file.name and not n.endswith(".sig"))
    copy = (stage / searcher_file).read_bytes()
    (stage / searcher_file).write_bytes(copy + b" ")
    assert restore_snapshot(str(stage)) == [searcher_file]
    assert (stage / searcher_file).read_bytes() == copy
    if signed:
        assert (snap / f"{state_file.name}.sig").is_file()
        trust.sign_file(str(stage / "tuner.pkl"))  # as the runner does after making the Tuner
        trust.verify_dir(str(stage))  # the state put back verifies against its signature
    restored = tune.Tuner.restore(str(stage), trainable=_three_epochs).get_results()
    assert sorted(r.metrics["epoch"] for r in restored) == [3.0, 3.0]
