"""A sweep's results in the user's own tools: TensorBoard, MLflow, W&B (offline), optuna-dashboard,
and Ray's own readers in a process where this project cannot be imported.

One tiny sweep (1 search trial per arm, 2 epochs, 1 confirmation seed per arm) with MLflow and
W&B configured feeds every integration test here.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 2


@pytest.fixture(scope="module")
def tracked_sweep(ray_local, tmp_path_factory):
    """Returns (exp_dir, mlflow_dir): the finished sweep and its MLflow tracking directory."""
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    from sweeps.config import CONFIG_DIR, load_config
    from sweeps.runner import RunOptions, run_sweep

    root = tmp_path_factory.mktemp("toolbox")
    cfg = load_config(CONFIG_DIR / "smoke.yaml", [
        f"storage_path={root}", "name=toolbox", "search.num_samples=1", "search.replicates=1",
        "confirm.seeds=1", f"search.max_epochs={EPOCHS}",
        f"search.early_stopping.grace_period={EPOCHS}",  # ASHA (metric from TuneConfig) stops nothing
        f"logging.mlflow.tracking_uri={root / 'mlruns'}", "logging.mlflow.experiment=toolbox",
        "logging.wandb.mode=offline"])
    wandb_mode = os.environ.get("WANDB_MODE")
    try:
        exp = Path(run_sweep(cfg, RunOptions(report=False)))
    finally:  # make_callbacks sets WANDB_MODE=offline for this (driver) process
        os.environ.pop("WANDB_MODE", None)
        if wandb_mode is not None:
            os.environ["WANDB_MODE"] = wandb_mode
    return exp, root / "mlruns"


def _trials(exp: Path) -> dict[str, tuple[Path, list[dict]]]:
    """trial_id -> (trial dir, its results), both stages."""
    out = {}
    for result in sorted(exp.glob("*/*/result.json")):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        out[rows[-1]["trial_id"]] = (result.parent, rows)
    return out


def test_tensorboard_event_files_hold_every_epochs_val_accuracy(tracked_sweep):
    pytest.importorskip("tensorboardX")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    exp, _ = tracked_sweep
    trials = _trials(exp)
    assert len(trials) == 4  # 2 search + 2 confirmation trials
    for trial_dir, rows in trials.values():
        assert list(trial_dir.glob("events.out.tfevents.*")), trial_dir
        events = EventAccumulator(str(trial_dir))
        events.Reload()
        logged = [(e.step, e.value) for e in events.Scalars("ray/tune/val_accuracy")]
        assert logged == [(r["training_iteration"], pytest.approx(r["val_accuracy"])) for r in rows]
        assert len(logged) == EPOCHS


def _hparams(trial_dir: Path) -> dict:
    """The hparams TensorBoard's HPARAMS tab reads from a trial's event files (session start)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = {}
    for path in trial_dir.glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    for key, v in data.session_start_info.hparams.items():
                        out[key] = getattr(v, v.WhichOneof("kind"))
    return out


def test_tensorboard_hparams_for_both_stages(tracked_sweep):
    pytest.importorskip("tensorboardX")
    exp, _ = tracked_sweep
    stages = set()
    for trial_dir, rows in _trials(exp).values():
        config = rows[-1]["config"]
        hparams = _hparams(trial_dir)
        stages.add(config["stage"])
        for key in ("arm", "activation", "replicate", "seed", "lr", "epochs"):
            assert hparams[key] == pytest.approx(config[key]), (trial_dir.name, key, hparams)
    assert stages == {"search", "confirm"}


def test_mlflow_store_has_a_run_per_trial_with_its_config_and_every_epoch(tracked_sweep):
    from mlflow.tracking import MlflowClient

    exp, mlflow_dir = tracked_sweep
    client = MlflowClient(f"sqlite:///{mlflow_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("toolbox")
    assert experiment.artifact_location == str(mlflow_dir / "artifacts")  # not ./mlruns in the cwd
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    trials = _trials(exp)
    assert len(runs) == len(trials) == 4
    for trial_id, (_, rows) in trials.items():
        run = runs[f"train_cnn_{trial_id}"]
        assert run.info.status == "FINISHED"
        assert run.data.params["arm"] == rows[-1]["config"]["arm"]
        assert run.data.tags["sweep"] == "toolbox"
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert sorted((m.step, m.value) for m in history) == \
            [(r["training_iteration"], pytest.approx(r["val_accuracy"])) for r in rows]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_ui_of_the_tracking_extra_serves_the_sweeps_store(tracked_sweep, tmp_path):
    """`mlflow ui --backend-store-uri sqlite:///<dir>/mlflow.db` (the command sweeps/trackers.py
    names) starts on a loopback port and lists the sweep's MLflow experiment, within 240 s.
    mlflow-skinny has no UI ("No module named 'huey'"): the tracking extra installs mlflow."""
    import importlib.util
    import signal
    import urllib.request

    if importlib.util.find_spec("mlflow.server") is None or importlib.util.find_spec("huey") is None:
        pytest.fail("mlflow's UI is not installed (mlflow-skinny has none): "
                    "pip install 'selu-sweep[tracking]'")
    _, mlflow_dir = tracked_sweep
    port = _free_port()
    store = f"sqlite:///{mlflow_dir / 'mlflow.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store,
                             "--host", "127.0.0.1", "--port", str(port)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "ui.log", "w"),
                            start_new_session=True)
    try:
        deadline, body = time.monotonic() + 240, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search"
                                            f"?max_results=100", timeout=10) as response:
                    body = json.loads(response.read())
                break
            except OSError:
                time.sleep(2)
        assert body is not None, (proc.poll(), (tmp_path / "ui.log").read_text()[-2000:])
        assert "toolbox" in [e["name"] for e in body["experiments"]]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert response.status == 200 and b"<html" in response.read(4096).lower()  # the UI's page
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wandb_records(path: Path):
    """The protobuf records of an offline ``run-*.wandb`` file (W&B's LevelDB-style log: a 7-byte
    header, then 32 KiB blocks of chunks, each with a crc32, a length and a FULL/FIRST/MIDDLE/LAST
    type)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, block, chunks = 7, 32768, []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # no room for a chunk header: the block is padded
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        chunks.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def _wandb_log(path: Path) -> tuple[object, list[tuple[int, float]]]:
    logged, run = [], None
    for record in _wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "history":
            items = {"/".join(i.nested_key) or i.key: i.value_json for i in record.history.item}
            logged.append((int(items["training_iteration"]), float(items["val_accuracy"])))
    return run, logged


def test_wandb_offline_runs_hold_every_epochs_val_accuracy(tracked_sweep):
    # Read once: the W&B callback returns from a trial's end only when the trial's run is written
    # (test_wandb_run_is_written_when_its_trial_ends), so nothing here waits for a writer.
    exp, _ = tracked_sweep
    for trial_id, (_, rows) in _trials(exp).items():
        files = list(exp.glob(f"wandb/offline-run-*-{trial_id}/run-{trial_id}.wandb"))
        assert len(files) == 1, trial_id  # the run directory is named after the trial
        run, logged = _wandb_log(files[0])
        assert logged == [(r["training_iteration"], pytest.approx(r["val_accuracy"])) for r in rows]
        assert (run.run_id, run.project, run.run_group) == (trial_id, "selu-sweep", "toolbox")


def _report_three_epochs(config):
    from ray import tune

    for epoch in (1, 2, 3):
        tune.report({"val_accuracy": epoch / 10 + config["x"]})


def test_wandb_run_is_written_when_its_trial_ends(ray_local, tmp_path, monkeypatch):
    """The moment Tune's on_trial_complete has passed the W&B callback, the trial's offline run
    holds all its rows: a later callback reads the file then (Tune calls callbacks in order)."""
    pytest.importorskip("wandb")
    from ray import tune

    from sweeps.trackers import WandbCallback

    monkeypatch.setenv("WANDB_MODE", "offline")
    seen = {}

    class ReadAtTrialEnd(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            files = list(tmp_path.glob(f"wandb/offline-run-*-{trial.trial_id}/run-{trial.trial_id}.wandb"))
            seen[trial.trial_id] = _wandb_log(files[0])[1] if len(files) == 1 else files

    wandb = WandbCallback(project="p", group="g", mode="offline", dir=str(tmp_path))
    tune.Tuner(_report_three_epochs, param_space={"x": tune.grid_search([0.0, 0.5])},
               run_config=tune.RunConfig(name="wb", storage_path=str(tmp_path), verbose=0,
                                         callbacks=[wandb, ReadAtTrialEnd()])).fit()
    assert len(seen) == 2
    rows = sorted([(step, round(value, 6)) for step, value in logged] for logged in seen.values())
    assert rows == [[(1, 0.1), (2, 0.2), (3, 0.3)], [(1, 0.6), (2, 0.7), (3, 0.8)]]
    assert wandb._trial_logging_actors == {}, "each trial's logging actor is reaped at its end"


def _wsgi_get(app, path: str) -> tuple[str, dict]:
    from wsgiref.util import setup_testing_defaults

    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    return status[0], json.loads(body)


def test_optuna_dashboard_reads_the_sweeps_studies(tracked_sweep):
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    import optuna

    exp, _ = tracked_sweep
    storage = optuna.storages.RDBStorage(f"sqlite:///{exp / 'optuna.db'}")
    app = optuna_dashboard.wsgi(storage)
    status, listing = _wsgi_get(app, "/api/studies")
    assert status == "200 OK"
    names = {s["study_name"]: s["study_id"] for s in listing["study_summaries"]}
    assert sorted(n.rsplit("-", 2)[-2] for n in names) == ["relu", "selu"]  # <name>-<id>-<arm>-r0
    search = {t["config"]["arm"]: t for _, t in ((d, rows[-1]) for d, rows in _trials(exp).values())
              if t["config"]["stage"] == "search"}
    for name, study_id in names.items():
        status, study = _wsgi_get(app, f"/api/studies/{study_id}")
        assert status == "200 OK"
        [trial] = study["trials"]
        assert trial["state"] == "Complete"
        assert trial["values"] == [pytest.approx(search[name.rsplit("-", 2)[-2]]["val_accuracy"])]


# Run with `python -I` from a copy of the experiment: this project must not be importable (an
# import hook refuses it even where it is installed), only Ray and its dependencies.
FRESH_PROCESS = r"""
import json, os, sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("sweeps", "trainable", "analysis"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Refuse())
try:
    import sweeps  # noqa: F401
    sys.exit("the project is importable")
except ModuleNotFoundError:
    pass
from ray import tune

def train_cnn(config):  # Tuner.restore wants a trainable of the original name
    pass

out = {}
for stage in ("search", "confirm"):
    path = os.path.join(sys.argv[1], stage)
    analysis = tune.ExperimentAnalysis(path)
    best_trial = analysis.get_best_trial("val_accuracy", "max")
    best = tune.Tuner.restore(path, trainable=train_cnn).get_results().get_best_result()
    out[stage] = {"trials": len(analysis.trials), "analysis_best": best_trial.trial_id,
                  "best": best.metrics["trial_id"], "metric": best.metrics["val_accuracy"]}
print(json.dumps(out))
"""


def test_ray_reads_the_results_in_a_fresh_process_without_the_project(tracked_sweep, tmp_path):
    exp, _ = tracked_sweep
    copy = tmp_path / "copy"
    shutil.copytree(exp, copy)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run([sys.executable, "-I", "-c", FRESH_PROCESS, str(copy)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    trials = _trials(exp)
    for stage in ("search", "confirm"):
        final = {tid: rows[-1]["val_accuracy"] for tid, (d, rows) in trials.items() if d.parent.name == stage}
        top = max(final.values())
        winners = {tid for tid, value in final.items() if value == top}  # ties: either is right
        assert out[stage]["trials"] == 2
        assert out[stage]["best"] in winners and out[stage]["analysis_best"] in winners
        assert out[stage]["metric"] == pytest.approx(top)


def test_trial_directory_names_pickle_without_the_project():
    from sweeps.runner import trial_dirname

    class Trial:
        config = {"arm": "selu", "lr": 1e-3}
        trial_id = "ab12_00003"

    data = pickle.dumps(trial_dirname)
    assert b"sweeps" not in data
    assert pickle.loads(data)(Trial()) == "selu_ab12_00003"


def test_per_cell_scheduler_takes_the_tuneconfig_metric_it_was_built_with():
    from sweeps.search import PerCellScheduler

    scheduler = PerCellScheduler(["relu/r0", "selu/r0"], metric="val_accuracy", mode="max", max_t=4,
                                 grace_period=1, reduction_factor=2, halving="async")
    assert scheduler.set_search_properties("val_accuracy", "max")
    assert not scheduler.set_search_properties("val_loss", "min")  # Tune then says: conflicting metric


def test_pyproject_license_is_an_spdx_expression_and_extras_name_the_tools():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert "setuptools>=77" in project["build-system"]["requires"]  # SPDX license strings
    extras = {k: " ".join(v) for k, v in project["project"]["optional-dependencies"].items()}
    assert "mlflow-skinny" not in extras["tracking"], "mlflow-skinny has no UI: `mlflow ui` needs mlflow"
    for extra, package in (("tracking", "mlflow>"), ("tracking", "wandb"), ("dashboard", "optuna-dashboard"),
                           ("tensorboard", "tensorboardX"), ("tensorboard", "tensorboard>")):
        assert package in extras[extra], (extra, package)


def _console_script(name: str) -> Path:
    script = Path(sys.executable).parent / name
    if not script.exists():
        pytest.skip(f"{name} is not installed next to {sys.executable} (pip install -e .)")
    return script


@pytest.mark.parametrize("name", [
    "selu-sweep",
    "selu-analysis",
])
def test_installed_commands_name_themselves_in_help(name):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([str(_console_script(name)), "--help"], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {name} "), proc.stdout[:200]


@pytest.mark.parametrize("name", ["smoke", "smoke.yaml"])
def test_installed_command_finds_a_packaged_config_by_name_from_any_directory(name, tmp_path):
    # The config is read and parsed (an unknown --set key is then refused with exit 2, before
    # anything starts): proof the packaged file was found from a directory without sweeps/.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([str(_console_script("selu-sweep")), "--config", name, "--set", "no_such_key=1",
                           "--storage-path", str(tmp_path / "results")], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "no_such_key" in proc.stderr and "no such file" not in proc.stderr, proc.stderr
    assert not (tmp_path / "results").exists(), "nothing written"


def test_gitignore_covers_the_trackers_local_stores(tmp_path):
    # MLflow's default tracking_uri (mlruns) and W&B's ./wandb (remote experiments) land in the cwd.
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    subprocess.run([git, "init", "-q", str(tmp_path)], check=True, timeout=60)
    paths = ["mlruns/mlflow.db", "wandb/offline-run-1-abc/run-abc.wandb", "results/x", "sweeps/run.py"]
    proc = subprocess.run([git, "check-ignore", *paths], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.stdout.split() == paths[:3], proc.stdout
