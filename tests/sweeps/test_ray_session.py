"""sweeps/ray_session.py: the address check gives up fast; the resource check waits only for what
the autoscaler could add."""

from __future__ import annotations

import socket
import time

import pytest

from sweeps.config import ConfigError, load_config
from sweeps.ray_session import check_address, wait_for_resources

NODES = [{"Alive": True, "Resources": {"CPU": 8.0}},
         {"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0}},
         {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]


def _cfg(*overrides):
    return load_config(overrides=["name=t", *overrides])


def test_a_closed_port_is_refused_at_once():
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        check_address(f"127.0.0.1:{port}")


def test_an_address_that_never_answers_gives_up_within_the_timeout(blackhole_address):
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="within 1 s"):
        check_address(blackhole_address, timeout=1.0)
    assert time.monotonic() - t0 < 5


def test_a_listening_address_passes_and_local_needs_no_check():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_address(f"127.0.0.1:{server.getsockname()[1]}")
        check_address(f"ray://127.0.0.1:{server.getsockname()[1]}")
    check_address(None)
    check_address("local")


def test_auto_without_a_started_cluster_says_how_to_start_one(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    with pytest.raises(ConfigError, match="ray start --head"):
        check_address("auto")


@pytest.mark.parametrize("address", ["host:notaport", "://", ":6379"])
def test_malformed_addresses_are_refused(address):
    with pytest.raises(ConfigError, match="--address"):
        check_address(address)


@pytest.mark.parametrize("gpus", [0.0, 0.25, 1.0])
def test_a_trial_that_fits_an_alive_node_starts_at_once(gpus):
    cfg = _cfg(f"resources.gpus_per_trial={gpus}", "resources.cpus_per_trial=2")
    wait_for_resources(cfg, nodes=lambda: NODES, node_types=[], sleep=pytest.fail)


def test_no_node_and_no_node_type_fits_is_refused_at_once():
    cfg = _cfg("resources.gpus_per_trial=2", "resources.cpus_per_trial=2")
    with pytest.raises(ConfigError, match="largest node has 8 CPU and 1 GPU and no node type"):
        wait_for_resources(cfg, nodes=lambda: NODES, node_types=[{"CPU": 16.0, "GPU": 1.0}],
                           sleep=pytest.fail)


def test_waits_while_the_autoscaler_adds_a_node_type_that_fits(capsys):
    cfg = _cfg("resources.gpus_per_trial=4", "resources.wait_for_nodes_s=600")
    now = [0.0]
    calls = []

    def nodes():
        calls.append(now[0])
        joined = [{"Alive": True, "Resources": {"CPU": 32.0, "GPU": 4.0}}] if now[0] >= 30 else []
        return NODES + joined

    def sleep(s):
        now[0] += s

    wait_for_resources(cfg, nodes=nodes, node_types=[{"CPU": 32.0, "GPU": 4.0}], clock=lambda: now[0],
                       sleep=sleep, poll_s=10)
    out = capsys.readouterr().out
    assert "waiting up to 600 s for the autoscaler" in out and "is up" in out
    assert now[0] == 30


def test_the_wait_is_bounded_by_wait_for_nodes_s():
    cfg = _cfg("resources.gpus_per_trial=4", "resources.wait_for_nodes_s=60")
    now = [0.0]
    with pytest.raises(ConfigError, match=r"within 60 s \(resources.wait_for_nodes_s\)"):
        wait_for_resources(cfg, nodes=lambda: NODES, node_types=[{"CPU": 32.0, "GPU": 4.0}],
                           clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s), poll_s=10)
    assert now[0] == 60


def test_quiet_logs_sets_only_logging_switches_never_tensorflows_performance_ones(monkeypatch):
    # Trial processes inherit the driver's environment: TF_ENABLE_ONEDNN_OPTS=0, once set here to
    # hide a start-up line, halved every trial's training speed on CPUs.
    import os

    from sweeps.ray_session import quiet_logs

    for var in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "RAY_AIR_NEW_OUTPUT"):
        monkeypatch.delenv(var, raising=False)
    before = dict(os.environ)
    quiet_logs()
    changed = {k for k in os.environ if os.environ[k] != before.get(k)}
    assert changed <= {"TF_CPP_MIN_LOG_LEVEL", "RAY_AIR_NEW_OUTPUT"}, changed
    assert "TF_ENABLE_ONEDNN_OPTS" not in os.environ


def _slow_to_end(config):
    """Reports 3 epochs; once Tune stops it (SystemExit in tune.report), its thread takes 3 s to end,
    longer than Tune's own 2 s wait (as a stopped TensorFlow trial's teardown did, 4.2 s)."""
    import os

    from ray import tune

    try:
        for epoch in range(1, 4):
            tune.report({"epoch": float(epoch), "pid": float(os.getpid())})
    except SystemExit:
        time.sleep(3)
        raise


def test_a_reused_actor_waits_for_a_stopped_trials_thread_instead_of_failing_the_next_trial(
        ray_local, tmp_path, monkeypatch):
    """reuse_actors: every trial but the first reuses an actor whose stopped trial needs 3 s to end.
    With Tune's own wait (2 s) the reset fails, the next trial is marked ERROR without running (4 of
    11 trials of a real default.yaml run) and Tune then waits on the failed actor (this test, with
    TUNE_FUNCTION_THREAD_TIMEOUT_S=2, hung until the time budget). With configure_trial_env, as
    start_ray calls it, the timeout reaches the trial actors' runtime_env and none fails."""
    import os

    from ray import tune
    from ray.tune.execution import class_cache

    from sweeps.ray_session import THREAD_END_ENV, THREAD_END_S, configure_trial_env

    monkeypatch.delenv(THREAD_END_ENV, raising=False)
    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE", class_cache.ENV_VARS_TO_PROPAGATE)
    configure_trial_env()
    assert os.environ[THREAD_END_ENV] == str(THREAD_END_S)

    class Probe:
        pass

    forwarded = class_cache._ActorClassCache().get(Probe)._default_options["runtime_env"]["env_vars"]
    assert forwarded[THREAD_END_ENV] == str(THREAD_END_S)  # a cluster's workers get it too
    tuner = tune.Tuner(
        tune.with_resources(_slow_to_end, {"cpu": 1}),
        param_space={"k": tune.grid_search([0, 1, 2])},
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=1, time_budget_s=90),
        run_config=tune.RunConfig(name="reuse", storage_path=str(tmp_path), verbose=0,
                                  stop={"epoch": 1}))  # Tune stops each trial after its first report
    results = tuner.fit()
    errors = [str(r.error)[:200] for r in results if r.error is not None]
    assert errors == [] and len(results) == 3, errors
    assert len({r.metrics["pid"] for r in results}) == 1  # one actor ran all three: reused
