"""The user's own tools on a sweep: TensorBoard, MLflow, Weights & Biases, and Ray's result readers.

Ray Tune does the logging; this module only picks Ray's callbacks from the ``logging`` section:

* TensorBoard: ``TBXLoggerCallback`` writes event files into every trial directory when
  ``tensorboardX`` is installed (extra ``tensorboard``): ``tensorboard --logdir <exp>``.
* MLflow (``logging.mlflow``, extra ``tracking``): :class:`MLflowCallback`, Ray's
  ``MLflowLoggerCallback`` with each result logged in one batch: one MLflow run per trial holding
  its config as params and every epoch's metrics. A plain directory as ``tracking_uri`` becomes
  the SQLite store ``<dir>/mlflow.db`` (artifacts in ``<dir>/artifacts``), since MLflow 3 refuses
  to write its old file store; ``mlflow ui --backend-store-uri sqlite:///<dir>/mlflow.db``.
* Weights & Biases (``logging.wandb``, extra ``tracking``): ``WandbLoggerCallback``, one run per
  trial, grouped by sweep name. ``mode: offline`` (the default) never touches the network: the
  runs go to ``<exp>/wandb/offline-run-*-<trial_id>`` (``$WANDB_DIR/wandb/`` if set; ``./wandb/``
  for a remote experiment), and ``wandb sync <exp>/wandb/offline-run-*`` uploads them later.
"""

from __future__ import annotations

import functools
import importlib.util
import netrc
import os
import time
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from sweeps.config import ConfigError, SweepConfig

if TYPE_CHECKING:
    from ray import tune

    from sweeps.experiment import Experiment

_EXTRA = "pip install 'selu-sweep[tracking]' (or: pip install {package})"


def check(cfg: SweepConfig) -> None:
    """Raise ConfigError when a configured tracker cannot run here (package missing, no W&B key).

    Reads nothing but the environment and writes nothing: safe before a sweep starts.
    """
    if cfg.logging.mlflow is not None:
        if importlib.util.find_spec("mlflow") is None:
            raise ConfigError(f"logging.mlflow: MLflow is not installed; {_EXTRA.format(package='mlflow')} "
                              f"or set logging.mlflow: null")
        if not cfg.logging.mlflow.tracking_uri.strip():
            raise ConfigError("logging.mlflow.tracking_uri: empty; give a directory (e.g. mlruns), a "
                              "sqlite:/// URL or an http(s):// tracking server")
    w = cfg.logging.wandb
    if w is not None:
        if importlib.util.find_spec("wandb") is None:
            raise ConfigError(f"logging.wandb: wandb is not installed; {_EXTRA.format(package='wandb')} "
                              f"or set logging.wandb: null")
        if w.mode == "online" and os.environ.get("WANDB_MODE") not in ("offline", "disabled") \
                and not _wandb_key_found():
            raise ConfigError("logging.wandb.mode: online needs a W&B API key; run `wandb login` or set "
                              "WANDB_API_KEY, or use mode: offline (then `wandb sync` later)")


def _wandb_key_found() -> bool:
    """An API key in WANDB_API_KEY or in the netrc entry `wandb login` writes."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def mlflow_tracking_uri(uri: str) -> str:
    """An MLflow tracking URI: URLs pass through; a plain directory becomes ``sqlite:///<dir>/mlflow.db``
    (created), a plain ``*.db`` path the SQLite file itself."""
    uri = uri.strip()
    if "://" in uri or uri.startswith(("sqlite:", "databricks", "file:")):
        return uri
    path = os.path.abspath(os.path.expanduser(uri))
    if not path.endswith(".db"):
        os.makedirs(path, exist_ok=True)
        path = os.path.join(path, "mlflow.db")
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    return f"sqlite:///{path}"


@functools.cache
def _mlflow_callback_class() -> type:
    from ray.air.integrations.mlflow import MLflowLoggerCallback  # imports mlflow: only when asked

    class MLflowCallback(MLflowLoggerCallback):
        """Ray's MLflowLoggerCallback, but each result goes to MLflow in one ``log_batch`` call (Ray
        logs metric by metric: a database or HTTP round trip each, about 1 s per result with SQLite),
        and a new experiment keeps its artifacts in ``artifact_location``, not in ``./mlruns``."""

        def __init__(self, tracking_uri: str, *, artifact_location: str | None = None, **kwargs):
            super().__init__(tracking_uri, **kwargs)
            self.artifact_location = artifact_location
            self._client = None

        def setup(self, *args, **kwargs):
            from mlflow.tracking import MlflowClient

            if self.artifact_location:
                client = MlflowClient(self.tracking_uri)
                if client.get_experiment_by_name(self.experiment_name) is None:
                    client.create_experiment(self.experiment_name, artifact_location=self.artifact_location)
            super().setup(*args, **kwargs)
            self._client = MlflowClient(self.tracking_uri)  # after Ray set the token, if any

        def log_trial_result(self, iteration: int, trial, result: dict):
            from mlflow.entities import Metric
            from ray.tune.result import TIMESTEPS_TOTAL, TRAINING_ITERATION
            from ray.tune.utils import flatten_dict

            step = int(result.get(TIMESTEPS_TOTAL) or result[TRAINING_ITERATION])
            now = int(time.time() * 1000)
            metrics = []
            for key, value in flatten_dict(result).items():
                try:
                    metrics.append(Metric(key, float(value), now, step))
                except (TypeError, ValueError):  # strings, lists: not metrics (as in Ray's callback)
                    continue
            for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
                self._client.log_batch(self._trial_runs[trial], metrics=metrics[i:i + 1000])

    return MLflowCallback


def __getattr__(name: str):  # ``MLflowCallback`` is defined on first use: its base class imports mlflow
    if name == "MLflowCallback":
        return _mlflow_callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_callbacks(cfg: SweepConfig, exp: Experiment) -> list[tune.Callback]:
    """Ray Tune callbacks for the configured trackers, in addition to the progress table.

    Raises ConfigError as :func:`check` does. With ``logging.wandb.mode: offline`` it sets
    ``WANDB_MODE=offline`` in this (driver) process, as Ray reads it there.
    """
    check(cfg)
    callbacks: list[tune.Callback] = []
    if importlib.util.find_spec("tensorboardX") is not None:
        # Tune adds it by itself too; named here so the event files do not hang on that default.
        from ray.tune.logger import TBXLoggerCallback

        callbacks.append(TBXLoggerCallback())
    if cfg.logging.mlflow is not None:
        m = cfg.logging.mlflow
        uri = mlflow_tracking_uri(m.tracking_uri)
        artifacts = None if uri == m.tracking_uri.strip() else \
            os.path.join(os.path.dirname(uri.removeprefix("sqlite:///")), "artifacts")  # a plain path
        callbacks.append(_mlflow_callback_class()(
            uri, artifact_location=artifacts, experiment_name=m.experiment,
            tags={"sweep": cfg.name, "experiment_dir": exp.path}, save_artifact=False))
    if cfg.logging.wandb is not None:
        from ray.air.integrations.wandb import WandbLoggerCallback

        w = cfg.logging.wandb
        if w.mode == "offline":
            # Ray checks for an API key unless WANDB_MODE says offline; the config says it is.
            os.environ["WANDB_MODE"] = "offline"
        # W&B writes a run's files as it finishes, after Ray's last copy of the trial directory into
        # the experiment: so not there, but straight into the experiment (when local).
        where = os.path.abspath(os.environ.get("WANDB_DIR") or ("." if exp.remote else exp.path))
        callbacks.append(WandbLoggerCallback(project=w.project, group=cfg.name, mode=w.mode, dir=where,
                                             upload_checkpoints=False, save_checkpoints=False))
    return callbacks

