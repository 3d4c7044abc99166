"""Distributed for real: sweeps/run.py against real services that these tests start themselves.

* One sweep under s3:// on an S3 server (moto, 127.0.0.1), its Optuna studies in a PostgreSQL
  (pgserver) behind a password: its driver SIGKILLed with its process group mid-search, then
  ``--resume`` (refused without the database URL, which the saved config hides), the report
  built from the bucket, the password in no file and no output; then a second sweep of the same
  name in another storage path sharing the database, and ``--overwrite`` of that one.
* A Ray cluster of a 0-CPU head and two workers with 2 fake GPUs each (``ray.cluster_utils``):
  fractional GPUs pack two concurrent trials onto one GPU, a trial on a removed node resumes from
  its checkpoint on the other node, and a trial no node can fit fails at once.

Each sweep is smoke-sized. Trials see the GPU ids Ray assigns them but train on the CPU. Run as a
script, this file is the driver of the cluster tests: sweeps/run.py's arguments, plus a Keras
callback (``probe``) in every trial that records where each epoch ran and can hold a trial there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "sweeps" / "configs" / "smoke.yaml"
# One search trial per arm (1 epoch), one confirmation seed per arm.
TINY = ["--config", str(SMOKE), "--set", "search.num_samples=1", "--set", "search.replicates=1",
        "--set", "confirm.seeds=1", "--set", "search.max_epochs=1"]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT), **(extra or {})}
    env.pop("RAY_ADDRESS", None)
    return env


def start_cli(*args, cwd: Path, log: Path, env: dict[str, str] | None = None,
              script: Path = ROOT / "sweeps" / "run.py") -> subprocess.Popen:
    """sweeps/run.py (or ``script``) in its own process group, output to ``log``.out/.err."""
    with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
        return subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=out, stderr=err,
                                env=_env(env), cwd=cwd, start_new_session=True)


def run_cli(*args, cwd: Path, env: dict[str, str] | None = None, timeout: float = 400,
            script: Path = ROOT / "sweeps" / "run.py") -> subprocess.CompletedProcess:
    """Run to the end; past ``timeout``, kill its whole process group (Ray included) and fail."""
    proc = subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(env), cwd=cwd, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"sweeps/run.py {' '.join(map(str, args))} ran past {timeout:g} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_for(what: str, predicate, proc: subprocess.Popen | None = None, timeout: float = 300,
             poll: float = 0.5):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep exited ({proc.returncode}) before {what}")
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


def session_processes(sid: int) -> list[str]:
    """Live processes of session ``sid`` (a process started with start_new_session has sid = pid)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # exited meanwhile
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp session
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(text[:text.rindex(")") + 1])
    return found


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


# --------------------------------------------------------------------------------------------
# Remote storage (S3) with the Optuna studies in PostgreSQL, as on a real cluster


@dataclass
class RemoteSweep:
    name: str
    storage: str                       # s3://bucket/sweeps
    root: Path                         # local files: the CLI's cwd (work/) and the killed run's output
    killed: int                        # the first run's exit status
    keys_when_killed: list[str]
    outputs: list[str]                 # stdout + stderr of every run
    refused: subprocess.CompletedProcess
    resumed: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def remote_sweep(s3_server, postgres, tmp_path_factory) -> RemoteSweep:
    """One sweep under s3://, its studies in PostgreSQL behind a password: started; SIGKILLed with its
    whole process group once its first search trial has reported; resumed without the database URL
    (refused: the saved config hides the password), then with it, to the end and the report."""
    name, storage = "twin", f"s3://{s3_server.bucket}/sweeps"
    root = tmp_path_factory.mktemp("remote")
    work = root / "work"  # the CLI's cwd: the report of a remote sweep goes to ./results/<name>/
    work.mkdir()
    first = start_cli(*TINY, "--name", name, "--storage-path", storage, "--optuna-storage", postgres.url(),
                      cwd=work, log=root / "first", env=s3_server.env)
    try:
        wait_for("a search trial's first result in the bucket", lambda: [
            k for k in s3_server.keys(f"sweeps/{name}/search") if k.endswith("/result.json")
            and s3_server.read(k).strip()], first)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and every process it started
        first.wait()
    # Ray's workers run in process groups of their own, but die with their raylet.
    wait_for("every process of the killed sweep to end", lambda: not session_processes(first.pid),
             timeout=60)
    keys = s3_server.keys(f"sweeps/{name}")
    common = ["--name", name, "--storage-path", storage, "--resume"]
    refused = run_cli(*common, cwd=work, env=s3_server.env)
    resumed = run_cli(*common, "--optuna-storage", postgres.url(), cwd=work, env=s3_server.env)
    outputs = [(root / "first.out").read_text() + (root / "first.err").read_text(),
               *(p.stdout + p.stderr for p in (refused, resumed))]
    return RemoteSweep(name, storage, root, first.returncode, keys, outputs, refused, resumed)


def test_s3_sweep_survives_a_sigkill_and_reports_from_the_bucket(remote_sweep, s3_server):
    sweep, bucket = remote_sweep, s3_server.bucket
    prefix = f"{bucket}/sweeps/{sweep.name}"
    # Killed while it ran (a finished run would have exited 0 first), with a search trial done.
    assert sweep.killed == -signal.SIGKILL and "done:" not in sweep.outputs[0]
    assert f"{prefix}/.selu-sweep.json" in sweep.keys_when_killed

    ok(sweep.resumed)
    assert f"done: {sweep.storage}/{sweep.name}" in sweep.resumed.stdout
    runs = [json.loads(line) for line in s3_server.read(f"{prefix}/runs.jsonl").splitlines()]
    assert [r["mode"] for r in runs] == ["start", "resume"]
    keys = s3_server.keys(f"sweeps/{sweep.name}")
    for stage in ("search", "confirm"):  # Tune's state, the trials' results and checkpoints: remote
        assert any(k.startswith(f"{prefix}/{stage}/experiment_state") for k in keys)
        assert sum(k.endswith("/result.json") for k in keys if f"/{stage}/" in k) == 2  # none twice
        assert any("/checkpoint_" in k for k in keys if f"/{stage}/" in k)
    # Locally only the report and the copy it was built from: the experiment lives in the bucket.
    work = sweep.root / "work"
    assert [p.name for p in work.iterdir()] == ["results"]
    assert (work / "results" / sweep.name / "report" / "report.md").stat().st_size > 0
    from analysis.load import load_results

    trials = load_results([work / "results" / sweep.name / "experiment"]).trials
    assert sorted(map(tuple, trials[["stage", "arm"]].values.tolist())) == [
        ("confirm", "relu"), ("confirm", "selu"), ("search", "relu"), ("search", "selu")]
    assert set(trials["status"]) == {"finished"}


def _studies(url: str) -> dict[str, list[tuple[str, dict]]]:
    """Every study in the database: name -> [(state, params)] of its trials."""
    import optuna

    storage = optuna.storages.RDBStorage(url)
    try:
        return {s.study_name: [(t.state.name, t.params) for t in
                               optuna.load_study(study_name=s.study_name, storage=storage).trials]
                for s in optuna.study.get_all_study_summaries(storage)}
    finally:
        storage.remove_session()
        storage.engine.dispose()


def _of(studies: dict, exp_id: str) -> dict:
    return {k: v for k, v in studies.items() if f"-{exp_id}-" in k}


def _completed_lrs(studies: dict) -> list[float]:
    return sorted(params["lr"] for trials in studies.values() for state, params in trials
                  if state == "COMPLETE")


def _remote_exp_id(s3_server, sweep: RemoteSweep) -> str:
    return json.loads(s3_server.read(f"{s3_server.bucket}/sweeps/{sweep.name}/.selu-sweep.json"))[
        "experiment_id"]


def test_postgres_resume_needs_the_url_again_and_the_password_appears_nowhere(remote_sweep, s3_server,
                                                                              postgres):
    sweep = remote_sweep
    assert sweep.refused.returncode == 2
    assert sweep.refused.stderr.strip().splitlines() == [
        "error: search.optuna_storage: the saved config hides the database password; pass "
        "--optuna-storage URL again, or set PGPASSWORD (or ~/.pgpass) / MYSQL_PWD"]
    ok(sweep.resumed)
    exp_id = _remote_exp_id(s3_server, sweep)
    mine = _of(_studies(postgres.url()), exp_id)
    assert sorted(mine) == [f"twin-{exp_id}-relu-r0", f"twin-{exp_id}-selu-r0"]
    # One trial per study completed, the one Tune ran (a trial asked just before the kill is FAIL).
    prefix = f"{s3_server.bucket}/sweeps/{sweep.name}"
    ran = sorted(json.loads(s3_server.read(k))["lr"] for k in s3_server.keys(f"sweeps/{sweep.name}/search")
                 if k.endswith("/params.json"))
    assert _completed_lrs(mine) == ran and len(ran) == 2
    assert {state for trials in mine.values() for state, _ in trials} <= {"COMPLETE", "FAIL"}
    assert f"postgresql+psycopg://{postgres.user}:***@/" in s3_server.read(f"{prefix}/config.yaml").decode()

    secret = postgres.password.encode()
    assert [k for k in s3_server.keys() if secret in s3_server.read(k)] == []
    assert [str(p) for p in sweep.root.rglob("*") if p.is_file() and secret in p.read_bytes()] == []
    assert [out for out in sweep.outputs if postgres.password in out] == []


def test_a_pickled_study_storage_holds_no_password_and_reconnects_with_it(postgres):
    """Tune saves the searcher, storage included, into the experiment (tuner.pkl, searcher-state)."""
    import pickle

    from sweeps import studies

    blob = pickle.dumps(studies.optuna_storage(postgres.url()))
    assert postgres.password.encode() not in blob and b"sweeper@" in blob
    # No registry: the unpickled storage connects with the password the driver was given once,
    # which export_password put where the client reads it (PGPASSWORD).
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("PGPASSWORD", raising=False)
        studies.export_password(postgres.url())
        restored = pickle.loads(blob)
        assert postgres.password not in restored.url
        assert restored.get_all_studies() is not None


def test_same_name_sweeps_share_a_database_and_overwrite_deletes_only_its_own(remote_sweep, s3_server,
                                                                              postgres, tmp_path):
    url = postgres.url()
    id_a = _remote_exp_id(s3_server, remote_sweep)
    studies_a = _of(_studies(url), id_a)
    assert studies_a
    # The same name, the same database, another storage path (local; one arm, to be quick).
    args = [*TINY, "--name", "twin", "--storage-path", tmp_path, "--optuna-storage", url,
            "--set", "arms=[relu]", "--skip-confirm", "--no-report"]
    ok(run_cli(*args, cwd=tmp_path))
    exp_b = tmp_path / "twin"
    id_b = json.loads((exp_b / ".selu-sweep.json").read_text())["experiment_id"]
    assert id_b != id_a
    studies = _studies(url)
    assert _of(studies, id_a) == studies_a
    assert sorted(_of(studies, id_b)) == [f"twin-{id_b}-relu-r0"]
    ran = sorted(json.loads(p.read_text())["lr"] for p in (exp_b / "search").glob("*/params.json"))
    assert _completed_lrs(_of(studies, id_b)) == ran and len(ran) == 1

    ok(run_cli(*args, "--overwrite", cwd=tmp_path))
    new_b = json.loads((exp_b / ".selu-sweep.json").read_text())["experiment_id"]
    studies = _studies(url)
    assert _of(studies, id_a) == studies_a  # the other sweep's studies: untouched
    assert _of(studies, id_b) == {}  # the overwritten sweep's: gone
    assert sorted(_of(studies, new_b)) == [f"twin-{new_b}-relu-r0"]


# --------------------------------------------------------------------------------------------
# Multi-node: a Ray cluster of processes on this machine


def probe(log: str, hold_once: str | None = None, barrier: int = 0):
    """A Keras callback for every trial: appends where each epoch begins (trial id, node id, GPU ids)
    to ``log``. ``hold_once``: the first trial to begin its second epoch claims this file and waits
    there (to be killed with its node). ``barrier``: each trial's first epoch ends only once
    ``barrier`` trials have begun (or after 120 s), so they provably overlap in time."""
    import keras

    def write(record: dict) -> None:
        with open(log, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def begun() -> int:
        with open(log) as fh:
            return len({json.loads(line)["trial"] for line in fh})

    class Probe(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            import ray
            from ray import tune

            record = {"event": "begin", "trial": tune.get_context().get_trial_id(), "epoch": epoch,
                      "time": time.time(),
                      "node": ray.get_runtime_context().get_node_id(), "gpus": ray.get_gpu_ids(),
                      "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}
            if hold_once and epoch == 1:
                try:
                    os.close(os.open(hold_once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    pass
                else:
                    write({**record, "held": True})
                    time.sleep(600)  # until the test removes this node (then the trial is killed)
            write(record)

        def on_epoch_end(self, epoch, logs=None):
            from ray import tune

            t0 = time.monotonic()
            while barrier and begun() < barrier and time.monotonic() - t0 < 120:
                time.sleep(0.2)
            write({"event": "end", "trial": tune.get_context().get_trial_id(), "epoch": epoch,
                   "time": time.time()})

    return Probe()


def _driver(argv: list[str]) -> int:
    """sweeps/run.py with the probe in every trial (in-process, so the callback reaches the trials)."""
    import dataclasses

    sys.path.insert(0, str(ROOT))
    from sweeps.config import ConfigError
    from sweeps.run import parse
    from sweeps.runner import run_sweep

    try:
        cfg, options = parse(argv)
        callback = probe(os.environ["PROBE_LOG"], os.environ.get("PROBE_HOLD_ONCE"),
                         int(os.environ.get("PROBE_BARRIER", "0")))
        exp = run_sweep(cfg, dataclasses.replace(options, callbacks=(callback,)))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"done: {exp}")
    return 0


def _records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_fractional_gpus_pack_two_concurrent_trials_onto_one_fake_gpu(tmp_path, ray_cluster):
    log = tmp_path / "probe.jsonl"
    log.touch()
    # 4 trials at once (no search; one arm, 4 seeds), 1 CPU and half a GPU each: two per worker.
    proc = run_cli(*TINY, "--storage-path", tmp_path / "results", "--address", ray_cluster.address,
                   "--set", "search.enabled=false", "--set", "arms=[relu]", "--set", "confirm.seeds=4",
                   "--set", "train.epochs=1", "--set", "resources.cpus_per_trial=1",
                   "--set", "resources.gpus_per_trial=0.5", "--no-report",
                   cwd=tmp_path, script=Path(__file__),
                   env={"PROBE_LOG": str(log), "PROBE_BARRIER": "4"})
    ok(proc)
    records = _records(log)
    first = {}
    for r in records:
        if r["event"] == "begin":
            first.setdefault(r["trial"], r)
    assert len(first) == 4
    workers = {n.node_id for n in ray_cluster.worker_nodes}
    for r in first.values():
        assert r["node"] in workers  # never on the 0-CPU head
        assert len(r["gpus"]) == 1 and r["cuda"] == str(r["gpus"][0])
    by_gpu: dict[tuple, list[dict]] = {}
    for r in first.values():
        by_gpu.setdefault((r["node"], str(r["gpus"][0])), []).append(r)
    # Best fit: each worker's two trials share one of its two GPUs, the other GPU stays free.
    assert sorted(len(v) for v in by_gpu.values()) == [2, 2], by_gpu
    assert len({node for node, _ in by_gpu}) == 2
    # ... at the same time: every trial began its first epoch before any trial could finish it.
    ends = [r["time"] for r in records if r["event"] == "end"]
    assert len(ends) == 4 and max(r["time"] for r in first.values()) < min(ends)


def test_a_trial_no_node_can_fit_fails_at_once_naming_the_largest_node(tmp_path, ray_cluster):
    t0 = time.monotonic()
    proc = run_cli(*TINY, "--storage-path", tmp_path / "results", "--address", ray_cluster.address,
                   "--set", "resources.gpus_per_trial=4", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "the largest node has 2 CPU and 2 GPU and no node type of the cluster can add more" in proc.stderr
    assert time.monotonic() - t0 < 90  # no wait for an autoscaler that is not there
    assert not (tmp_path / "results").exists()


def test_a_trial_on_a_removed_node_resumes_from_its_checkpoint_on_another(tmp_path, ray_cluster):
    log, hold = tmp_path / "probe.jsonl", tmp_path / "held"
    log.touch()
    storage = tmp_path / "results"
    # One trial (no search, one arm, one seed) of 2 epochs, on a whole worker (2 CPUs).
    driver = start_cli(*TINY, "--storage-path", storage, "--address", ray_cluster.address,
                       "--set", "search.enabled=false", "--set", "arms=[relu]", "--set", "train.epochs=2",
                       "--set", "resources.cpus_per_trial=2", "--set", "train.checkpoint_every=1",
                       "--no-report",
                       cwd=tmp_path, log=tmp_path / "driver", script=Path(__file__),
                       env={"PROBE_LOG": str(log), "PROBE_HOLD_ONCE": str(hold)})
    try:
        held = wait_for("a trial held at its second epoch",
                        lambda: [r for r in _records(log) if r.get("held")], driver)[0]
        trial_dir = wait_for("the driver to record the held trial's first epoch", lambda: [
            p.parent for p in (storage / "smoke" / "confirm").glob(f"*_{held['trial']}/result.json")
            if p.read_text().strip()], driver)[0]
        node = next(n for n in ray_cluster.worker_nodes if n.node_id == held["node"])
        ray_cluster.remove_node(node)
        assert driver.wait(timeout=400) == 0, (tmp_path / "driver.err").read_text()[-3000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        if len(ray_cluster.worker_nodes) < 2:  # leave the fixture as it was
            ray_cluster.add_node(num_cpus=2, num_gpus=2)
    # The held trial's second epoch ran on the other node, from the checkpoint of its first.
    after = [r for r in _records(log) if r["trial"] == held["trial"] and r["event"] == "begin"
             and not r.get("held")]
    assert [(r["epoch"], r["node"] == held["node"]) for r in after] == [(0, True), (1, False)]
    epochs = [json.loads(line)["epoch"] for line in (trial_dir / "result.json").read_text().splitlines()]
    assert epochs == [1.0, 2.0]  # strictly increasing: resumed at epoch 2, not restarted at 1
    assert list(trial_dir.glob("checkpoint_*"))
    from analysis.load import load_results

    trials = load_results([storage / "smoke"]).trials
    assert len(trials) == 1 and set(trials["status"]) == {"finished"}


if __name__ == "__main__":
    sys.exit(_driver(sys.argv[1:]))
