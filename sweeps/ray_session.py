"""Start or join Ray, check that a trial fits somewhere, and keep the logs quiet.

``check_address`` runs before anything starts: a TCP check that gives up after 10 s instead
of Ray's minutes of retries. ``wait_for_resources`` fails fast when no node, and no node type
the autoscaler could add, fits one trial (Tune would otherwise wait forever), and waits,
saying so, while the autoscaler brings up a node type that fits.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sweeps.config import ConfigError, SweepConfig, show

CONNECT_TIMEOUT_S = 10.0
_QUIET_LOGGERS = (
    # Expected, harmless warnings: preset confirm values replace param_space placeholders, and
    # per-checkpoint experiment snapshots (wanted: they make --resume lose nothing).
    "ray.tune.search.variant_generator", "ray.tune.execution.experiment_state",
    "ray.tune.search.optuna.optuna_search",
    # A private local instance keeps Ray's default token auth; its notice about that is noise here.
    "ray._private.authentication.authentication_token_setup",
)


def quiet_logs() -> None:
    """Silence TensorFlow's start-up lines (before it is imported) and Tune's expected warnings.

    Only logging: never TensorFlow's performance switches. Trial processes inherit this
    environment, and ``TF_ENABLE_ONEDNN_OPTS=0`` (which also hides a start-up line) halved the
    trials' training speed on CPUs (950 against 1,900 images/s per trial, 2 at once).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" per study


def resolve_address(address: str | None) -> str:
    return address or os.environ.get("RAY_ADDRESS") or "local"


def _auto_address() -> str:
    """What ``address="auto"`` means to Ray: the cluster this machine started last."""
    current = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"
    try:
        return current.read_text().strip()
    except OSError:
        raise ConfigError("--address auto: no Ray cluster was started on this machine (no "
                          f"{current}); start one with `ray start --head` or `ray up cluster.yaml`, "
                          "or omit --address for a local run") from None


def check_address(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail in at most ``timeout`` seconds if the named cluster does not answer. No Ray import."""
    address = resolve_address(address)
    if address == "local":
        return
    target = _auto_address() if address == "auto" else address
    default_port = 10001 if target.startswith("ray://") else 6379
    try:
        parts = urlsplit(target if "://" in target else f"ray://{target}")
        host, port = parts.hostname, parts.port or default_port
    except ValueError:  # '[::1' (an unclosed IPv6 bracket), a port out of range
        host = None
    if not host or len(address) > 1000:
        raise ConfigError(f"--address {show(address)}: expected HOST:PORT, ray://HOST:PORT, auto or local")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(f"--address {address}: no Ray cluster answers at {host}:{port} within "
                          f"{timeout:g} s ({exc.strerror or exc.__class__.__name__}); start one with "
                          f"`ray up cluster.yaml` or omit --address for a local run") from None


# Cloud credentials Ray Tune copies from the driver's environment into every trial actor's
# ``runtime_env`` env_vars (ray.tune.execution.class_cache), which Ray then logs, world-readable,
# under /tmp/ray/session_*/logs. Trials never get them from the tool: a local trial inherits the
# driver's environment anyway, and a cluster's nodes use their own credentials (instance roles).
CREDENTIAL_PREFIXES = ("AWS_", "GOOGLE_", "GCS_", "GCLOUD_", "AZURE_", "ABFS_")

# A reused actor (sweeps.runner.REUSE_ACTORS) starts its next trial only after the previous trial's
# thread has ended: Ray Tune's FunctionTrainable.reset_config waits TUNE_FUNCTION_THREAD_TIMEOUT_S
# for it (default 2 s) and, past that, fails the reset, which marks the *new* trial ERROR with no
# retry. A stopped TensorFlow trial's thread took 4.2 s to end on 2 busy CPUs (its teardown runs
# after the training function has returned; measured with default.yaml's data), and 4 of the first
# 11 search trials of a real default.yaml run were lost that way. Set in the driver (a local Ray's
# workers inherit it) and forwarded in the trial actors' runtime_env (a cluster's do not).
THREAD_END_ENV = "TUNE_FUNCTION_THREAD_TIMEOUT_S"
THREAD_END_S = 60  # seconds a reused actor waits for the previous trial's thread to end


def configure_trial_env() -> None:
    """What Ray Tune forwards to every trial actor in ``runtime_env``: never cloud credentials;
    always the reused actor's thread timeout (``THREAD_END_S``, unless the user set one)."""
    from ray.tune.execution import class_cache

    os.environ.setdefault(THREAD_END_ENV, str(THREAD_END_S))
    class_cache.ENV_VARS_TO_PROPAGATE = frozenset(
        v for v in class_cache.ENV_VARS_TO_PROPAGATE if not v.startswith(CREDENTIAL_PREFIXES)
    ) | {THREAD_END_ENV}


def start_ray(cfg: SweepConfig):
    """Join the cluster the user named (``address`` or RAY_ADDRESS), else start a private one.
    Cloud credentials are never put into a ``runtime_env`` (``configure_trial_env``)."""
    import ray

    configure_trial_env()

    if ray.is_initialized():  # e.g. a test or notebook that started Ray itself
        return ray
    address = resolve_address(cfg.address)
    kwargs: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False}
    if address != "local":
        # Ship this checkout's packages, so workers run the same code as the driver.
        import sweeps
        import trainable

        kwargs.update(include_dashboard=None, runtime_env={
            "py_modules": [os.path.dirname(trainable.__file__), os.path.dirname(sweeps.__file__)]})
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise ConfigError(f"--address {address}: no Ray cluster there ({str(exc).splitlines()[0][:160]}); "
                          f"start one with `ray up cluster.yaml` or omit --address for a local run") from None
    return ray


def _fits(resources: dict[str, float], cpu: float, gpu: float) -> bool:
    return resources.get("CPU", 0) >= cpu and resources.get("GPU", 0) >= gpu


def _node_types() -> list[dict[str, float]]:
    """Resources of the node types the autoscaler may add (empty without an autoscaler): the cluster
    config the autoscaler publishes in the GCS (``node_group_configs``; max_count -1 = unbounded)."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # no autoscaler, or an older Ray: then only live nodes count
        return []
    if config is None:
        return []
    return [dict(group.resources) for group in config.node_group_configs if group.max_count != 0]


def wait_for_resources(cfg: SweepConfig, nodes=None, node_types=None, clock=time.monotonic,
                       sleep=time.sleep, poll_s: float = 5.0) -> None:
    """Return once some alive node fits one trial. Raise ConfigError when none does and no node type
    of the cluster ever could; wait up to ``resources.wait_for_nodes_s`` while one could be added.

    ``nodes`` (a callable returning ``ray.nodes()``-shaped dicts) and ``node_types`` (a list of
    resource dicts) default to the live cluster; tests pass their own.
    """
    import ray

    need_cpu, need_gpu = cfg.resources.cpus_per_trial, cfg.resources.gpus_per_trial
    get_nodes = nodes or ray.nodes
    types = _node_types() if node_types is None else node_types

    def alive() -> list[dict]:
        return [n for n in get_nodes() if n.get("Alive", True)]

    if any(_fits(n["Resources"], need_cpu, need_gpu) for n in alive()):
        return
    if not any(_fits(t, need_cpu, need_gpu) for t in types):
        current = alive()
        most_cpu = max((n["Resources"].get("CPU", 0) for n in current), default=0)
        most_gpu = max((n["Resources"].get("GPU", 0) for n in current), default=0)
        raise ConfigError(
            f"resources: a trial asks for {need_cpu:g} CPU and {need_gpu:g} GPU, but the largest node "
            f"has {most_cpu:g} CPU and {most_gpu:g} GPU and no node type of the cluster can add more; "
            f"lower resources.cpus_per_trial/gpus_per_trial or add such a node type")
    deadline = clock() + cfg.resources.wait_for_nodes_s
    print(f"waiting up to {cfg.resources.wait_for_nodes_s:g} s for the autoscaler to add a node with "
          f"{need_cpu:g} CPU and {need_gpu:g} GPU ...", flush=True)
    while clock() < deadline:
        sleep(poll_s)
        if any(_fits(n["Resources"], need_cpu, need_gpu) for n in alive()):
            print("a node that fits a trial is up", flush=True)
            return
    raise ConfigError(f"resources: no node with {need_cpu:g} CPU and {need_gpu:g} GPU joined within "
                      f"{cfg.resources.wait_for_nodes_s:g} s (resources.wait_for_nodes_s); check the "
                      f"autoscaler (`ray status`, `ray monitor cluster.yaml`)")
