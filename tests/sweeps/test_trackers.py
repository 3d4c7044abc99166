"""sweeps/trackers.py: which of Ray's callbacks a config asks for, and what is refused up front.
(The trackers' output for a real sweep is checked in tests/test_toolbox.py.)"""

from __future__ import annotations

import importlib.util
import os

import pytest

from sweeps import trackers
from sweeps.config import CONFIG_DIR, ConfigError, load_config
from sweeps.experiment import Experiment


def smoke(*overrides: str):
    return load_config(CONFIG_DIR / "smoke.yaml", list(overrides))


def test_without_a_logging_section_only_tensorboard_is_added(tmp_path):
    pytest.importorskip("tensorboardX")
    from ray.tune.logger import TBXLoggerCallback

    callbacks = trackers.make_callbacks(smoke(), Experiment(str(tmp_path), "smoke"))
    assert [type(c) for c in callbacks] == [trackers.TensorBoardCallback]
    assert isinstance(callbacks[0], TBXLoggerCallback), "so Tune adds no second one of its own"


def test_a_directory_tracking_uri_becomes_a_sqlite_store_inside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert trackers.mlflow_tracking_uri("mlruns") == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert (tmp_path / "mlruns").is_dir()
    assert trackers.mlflow_tracking_uri("stores/runs.db") == f"sqlite:///{tmp_path}/stores/runs.db"
    assert (tmp_path / "stores").is_dir()
    for url in ("http://mlflow.internal:5000", "sqlite:////abs/mlflow.db", "databricks"):
        assert trackers.mlflow_tracking_uri(url) == url


def test_offline_wandb_writes_into_the_experiment_grouped_by_sweep_and_needs_no_key(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from ray.air.integrations.wandb import WandbLoggerCallback

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    cfg = smoke("logging.wandb.project=p1")
    exp = Experiment(str(tmp_path), "smoke")
    [wandb] = [c for c in trackers.make_callbacks(cfg, exp) if isinstance(c, WandbLoggerCallback)]
    assert (wandb.project, wandb.group, wandb.kwargs) == ("p1", "smoke", {"mode": "offline", "dir": exp.path})
    assert os.environ["WANDB_MODE"] == "offline"  # Ray then skips its API-key check
    wandb.setup()  # raises "No WandB API key found" unless offline
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    [wandb] = [c for c in trackers.make_callbacks(cfg, exp) if isinstance(c, WandbLoggerCallback)]
    assert wandb.kwargs["dir"] == str(tmp_path / "elsewhere")


def test_online_wandb_without_an_api_key_is_refused_with_the_fix(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "netrc").write_text("machine example.org login a password b\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    cfg = smoke("logging.wandb.mode=online")
    fix = r"logging\.wandb\.mode: online needs a W&B API key; run `wandb login`"
    with pytest.raises(ConfigError, match=fix):
        trackers.check(cfg)
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password k3y\n")
    trackers.check(cfg)  # what `wandb login` writes is enough
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_API_KEY", "k3y")
    trackers.check(cfg)


@pytest.mark.parametrize("section, package", [("mlflow", "mlflow"), ("wandb", "wandb")])
def test_a_tracker_that_is_not_installed_names_the_extra_to_install(section, package, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package
                        else find_spec(name, *a))
    with pytest.raises(ConfigError, match=rf"logging\.{section}: .* not installed; pip install "
                                          rf"'selu-sweep\[tracking\]'"):
        trackers.check(smoke(f"logging.{section}={{}}"))


def test_mlflow_callback_logs_each_result_in_one_batch_and_keeps_artifacts_beside_the_store(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = trackers.mlflow_tracking_uri(str(tmp_path / "mlruns"))
    callback = trackers.MLflowCallback(uri, artifact_location=str(tmp_path / "mlruns" / "artifacts"),
                                       experiment_name="unit", tags={"sweep": "s"})
    callback.setup()
    calls = []
    log_batch = callback._client.log_batch
    callback._client.log_metric = lambda *a, **k: calls.append("log_metric")
    callback._client.log_batch = lambda *a, **k: (calls.append("log_batch"), log_batch(*a, **k))

    class Trial:
        config = {"arm": "selu", "lr": 0.01}

        def __str__(self):
            return "train_cnn_t1"

    trial = Trial()
    callback.log_trial_start(trial)
    for it in (1, 2):
        callback.log_trial_result(it, trial, {"training_iteration": it, "val_accuracy": 0.25 * it,
                                              "config": {"lr": 0.01}, "hostname": "h1", "done": False})
    callback.log_trial_end(trial)
    assert calls == ["log_batch", "log_batch"]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("unit")
    assert experiment.artifact_location == str(tmp_path / "mlruns" / "artifacts")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["arm"] == "selu"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == \
        [(1, 0.25), (2, 0.5)]
    assert run.data.metrics["config/lr"] == 0.01 and "hostname" not in run.data.metrics
