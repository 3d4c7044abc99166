"""The user's own tools on a sweep: TensorBoard, MLflow, Weights & Biases, and Ray's result readers.

Ray Tune does the logging; this module only picks Ray's callbacks from the ``logging`` section:

* TensorBoard: :class:`TensorBoardCallback` (Ray's ``TBXLoggerCallback``, with every trial's config
  as its hparams, confirmation trials included) writes event files into every trial directory when
  ``tensorboardX`` is installed (extra ``tensorboard``): ``tensorboard --logdir <exp>``.
* MLflow (``logging.mlflow``, extra ``tracking``, which installs ``mlflow`` with its UI):
  :class:`MLflowCallback`, Ray's
  ``MLflowLoggerCallback`` with each result logged in one batch: one MLflow run per trial holding
  its config as params and every epoch's metrics. A plain directory as ``tracking_uri`` becomes
  the SQLite store ``<dir>/mlflow.db`` (artifacts in ``<dir>/artifacts``), since MLflow 3 refuses
  to write its old file store; ``mlflow ui --backend-store-uri sqlite:///<dir>/mlflow.db``.
* Weights & Biases (``logging.wandb``, extra ``tracking``): :class:`WandbCallback` (Ray's
  ``WandbLoggerCallback``, which writes a trial's run before the trial's end returns), one run per
  trial, grouped by sweep name. ``mode: offline`` (the default) never touches the network: the
  runs go to ``<exp>/wandb/offline-run-*-<trial_id>`` (``$WANDB_DIR/wandb/`` if set; ``./wandb/``
  for a remote experiment), and ``wandb sync <exp>/wandb/offline-run-*`` uploads them later.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import netrc
import os
import time
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from sweeps.config import ConfigError, SweepConfig

if TYPE_CHECKING:
    from ray import tune

    from sweeps.experiment import Experiment

logger = logging.getLogger(__name__)
WANDB_STARTUP_S = 600  # how long a trial's W&B logging actor may take to start on a loaded machine

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


@functools.cache
def _tensorboard_callback_class() -> type:
    from ray.tune.logger import TBXLoggerCallback
    from ray.tune.logger.tensorboardx import VALID_SUMMARY_TYPES
    from ray.tune.utils import flatten_dict

    class TensorBoardCallback(TBXLoggerCallback):
        """Ray's TBXLoggerCallback, but every trial's hparams are its config's scalar values.

        Ray writes hparams from ``trial.evaluated_params``: the values a search algorithm chose.
        Confirmation trials are built from fixed configs, so theirs is empty and TensorBoard's
        HPARAMS tab showed none of them; search trials showed lr but not arm or replicate. Here
        both stages write arm, activation, replicate, seed, lr, epochs (every scalar in the config)
        against the trial's last result."""

        def log_trial_end(self, trial, failed: bool = False):
            if trial in self._trial_writer and self._trial_result.get(trial):
                from tensorboardX.summary import hparams

                flat = flatten_dict(self._trial_result[trial], delimiter="/")
                metrics = {k: v for k, v in flat.items() if isinstance(v, tuple(VALID_SUMMARY_TYPES))}
                params = {k: v for k, v in flatten_dict(trial.config or {}, delimiter="/").items()
                          if isinstance(v, (str, bool, int, float))}
                try:
                    writer = self._trial_writer[trial].file_writer
                    for tag in hparams(hparam_dict=params, metric_dict=metrics):
                        writer.add_summary(tag)
                except Exception as exc:  # as Ray does: a bad value costs the hparams, not the sweep
                    logger.warning("TensorBoard hparams of trial %s not written: %s", trial.trial_id, exc)
                self._trial_writer[trial].close()
                del self._trial_writer[trial]
                del self._trial_result[trial]
                return
            super().log_trial_end(trial, failed)

    return TensorBoardCallback


@functools.cache
def _wandb_callback_class() -> type:
    from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

    class WandbLoggingActor(_WandbLoggingActor):
        """Ray's W&B logging actor, with start-up limits for a loaded machine and a clean end.

        ``wandb.init`` gives up after 90 s (``init_timeout``) and W&B's service process after 30 s
        (``x_service_wait``); on a loaded machine the actor's start-up alone took 30-40 s (measured),
        and a give-up loses every row of the trial, with nothing said (Ray never reads the actor's
        outcome). Offline, nothing but load can make them slow: wait WANDB_STARTUP_S instead
        (unless the user set them). ``run`` returns once W&B's service has closed the run
        (``wandb.teardown()``), before Ray kills the actor and its child processes."""

        def run(self):
            os.environ.setdefault("WANDB_INIT_TIMEOUT", str(WANDB_STARTUP_S))
            os.environ.setdefault("WANDB__SERVICE_WAIT", str(WANDB_STARTUP_S))
            try:
                super().run()
            finally:
                self._wandb.teardown()

    class WandbCallback(WandbLoggerCallback):
        """Ray's WandbLoggerCallback, but a trial's end waits until its W&B run is written.

        Ray only queues the end of the run (``log_trial_end``) and reaps finished logging actors
        later; nothing checks that the actor wrote the trial's rows, and an actor still starting
        or writing when it is reaped (``__del__`` waits 2 s, then kills) loses them silently. Here
        ``log_trial_end`` waits for the trial's actor to finish (at most ``upload_timeout``), and a
        failed actor is named in a warning instead of vanishing: when Tune's ``on_trial_complete``
        returns, the trial's offline run file holds every row it was sent."""

        _logger_actor_cls = WandbLoggingActor

        def log_trial_end(self, trial, failed: bool = False):
            import ray

            if trial not in self._trial_logging_futures:
                return
            self._signal_logging_actor_stop(trial=trial)
            future = self._trial_logging_futures[trial]
            done, _ = ray.wait([future], timeout=self._upload_timeout)
            if done:
                try:
                    ray.get(future)
                except Exception as exc:  # the actor's own error: say which trial lost its W&B run
                    logger.warning("W&B run of trial %s failed: %s: %s", trial.trial_id,
                                   type(exc).__name__, str(exc).splitlines()[0][:300] if str(exc) else "")
            else:
                logger.warning("W&B run of trial %s still not written after %s s; giving up on it",
                               trial.trial_id, self._upload_timeout)
            self._logging_future_to_trial.pop(future, None)
            self._cleanup_logging_actor(trial)

    return WandbCallback


def __getattr__(name: str):  # the callbacks are defined on first use: their base classes import the tools
    if name == "MLflowCallback":
        return _mlflow_callback_class()
    if name == "WandbCallback":
        return _wandb_callback_class()
    if name == "TensorBoardCallback":
        return _tensorboard_callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_callbacks(cfg: SweepConfig, exp: Experiment) -> list[tune.Callback]:
    """Ray Tune callbacks for the configured trackers, in addition to the progress table.

    Raises ConfigError as :func:`check` does. With ``logging.wandb.mode: offline`` it sets
    ``WANDB_MODE=offline`` in this (driver) process, as Ray reads it there.
    """
    check(cfg)
    callbacks: list[tune.Callback] = []
    if importlib.util.find_spec("tensorboardX") is not None:
        # Tune adds its own unless one is given (TBXLoggerCallback or a subclass, as here).
        callbacks.append(_tensorboard_callback_class()())
    if cfg.logging.mlflow is not None:
        m = cfg.logging.mlflow
        uri = mlflow_tracking_uri(m.tracking_uri)
        artifacts = None if uri == m.tracking_uri.strip() else \
            os.path.join(os.path.dirname(uri.removeprefix("sqlite:///")), "artifacts")  # a plain path
        callbacks.append(_mlflow_callback_class()(
            uri, artifact_location=artifacts, experiment_name=m.experiment,
            tags={"sweep": cfg.name, "experiment_dir": exp.path}, save_artifact=False))
    if cfg.logging.wandb is not None:
        w = cfg.logging.wandb
        if w.mode == "offline":
            # Ray checks for an API key unless WANDB_MODE says offline; the config says it is.
            os.environ["WANDB_MODE"] = "offline"
        # W&B writes a run's files as it finishes, after Ray's last copy of the trial directory into
        # the experiment: so not there, but straight into the experiment (when local).
        where = os.path.abspath(os.environ.get("WANDB_DIR") or ("." if exp.remote else exp.path))
        callbacks.append(_wandb_callback_class()(project=w.project, group=cfg.name, mode=w.mode, dir=where,
                                             upload_checkpoints=False, save_checkpoints=False))
    return callbacks

