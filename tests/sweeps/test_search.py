"""sweeps/search.py: per-arm searchers and schedulers, ASHA stops recorded as pruned."""

from __future__ import annotations

import optuna
import pytest
from ray import tune

from analysis.load import load_results
from sweeps.config import ConfigError, load_config
from sweeps.runner import check_resources
from sweeps.search import (
    ArmOptunaSearch,
    PerArmScheduler,
    StratifiedSearch,
    make_searcher,
    stopped_early,
)
from trainable import train_cnn


def _cfg(*overrides):
    return load_config(overrides=["name=t", *overrides])


def test_stratified_searcher_gives_each_arm_its_own_study_and_equal_turns():
    cfg = _cfg("search.num_samples=3")
    searcher = make_searcher(cfg, storage=None)
    assert isinstance(searcher, StratifiedSearch)
    arms = [searcher.suggest(f"t{i}")["arm"] for i in range(6)]
    assert sorted(arms) == ["relu"] * 3 + ["selu"] * 3
    assert arms[:2] == ["relu", "selu"], "arms alternate so they run concurrently"
    assert searcher.suggest("t6") == StratifiedSearch.FINISHED
    assert set(searcher.studies) == {"relu", "selu"}
    assert all(len(s.trials) == 3 for s in searcher.studies.values())


def test_suggestions_carry_the_arm_settings_and_a_seed():
    cfg = load_config(overrides=["name=t", "arms.1.kernel_initializer=lecun_normal"])
    searcher = make_searcher(cfg, storage=None)
    a, b = searcher.suggest("a"), searcher.suggest("b")
    assert a["activation"] == "relu" and b["activation"] == "selu"
    assert b["kernel_initializer"] == "lecun_normal" and a["kernel_initializer"] == "auto"
    assert 1e-4 <= a["lr"] <= 1e-2 and 5 <= a["epochs"] <= 50 and a["stage"] == "search"
    assert a["seed"] == b["seed"], "arms are paired seed by seed"


def test_joint_mode_searches_the_activation_as_one_parameter():
    cfg = _cfg("search.mode=joint", "search.num_samples=4")
    searcher = make_searcher(cfg, storage=None)
    assert isinstance(searcher, ArmOptunaSearch)
    configs = [searcher.suggest(f"t{i}") for i in range(4)]
    assert {c["arm"] for c in configs} <= {"relu", "selu"}
    assert "arm" in searcher.study.trials[0].distributions


def test_scheduler_stop_is_told_to_optuna_as_pruned_not_complete():
    cfg = _cfg("search.num_samples=2")
    searcher = make_searcher(cfg, storage=None)
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.on_trial_result("a", {"val_accuracy": 0.3, "training_iteration": 1})
    searcher.on_trial_complete("a", {"val_accuracy": 0.3, "epoch": 1.0, "target_epochs": 9.0,
                                     "diverged": 0.0, "training_iteration": 1})
    searcher.on_trial_complete("b", {"val_accuracy": 0.5, "epoch": 9.0, "target_epochs": 9.0,
                                     "diverged": 0.0, "training_iteration": 9})
    states = {arm: study.trials[0].state for arm, study in searcher.studies.items()}
    assert states == {"relu": optuna.trial.TrialState.PRUNED, "selu": optuna.trial.TrialState.COMPLETE}


def test_stopped_early_is_a_short_non_diverged_trial():
    assert stopped_early({"epoch": 2.0, "target_epochs": 5.0, "diverged": 0.0})
    assert not stopped_early({"epoch": 5.0, "target_epochs": 5.0, "diverged": 0.0})
    assert not stopped_early({"epoch": 1.0, "target_epochs": 5.0, "diverged": 1.0})
    assert not stopped_early(None)


def test_restore_fails_orphaned_running_study_trials(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/o.db")
    cfg = _cfg("search.num_samples=3")
    searcher = make_searcher(cfg, storage)
    searcher.suggest("a")
    searcher.save(str(tmp_path / "state.pkl"))
    searcher.suggest("b")  # asked after the last save, then the driver dies
    fresh = make_searcher(cfg, storage)
    fresh.restore(str(tmp_path / "state.pkl"))
    study = fresh.studies["selu"]
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.FAIL]
    assert fresh.suggest("c")["arm"] == "selu", "the restored searcher asks again for the lost slot"


def test_asha_stop_is_marked_as_stopped_early_end_to_end(ray_local, tiny_dataset, tmp_path):
    """A real Tune run: the second trial (lr 1e-7, learns nothing) is cut by ASHA at epoch 1."""
    cfg = _cfg("search.mode=joint")
    settings = {a.name: a.settings(cfg.train) for a in cfg.arms}
    space = {"arm": optuna.distributions.CategoricalDistribution(["relu", "selu"]),
             "lr": optuna.distributions.FloatDistribution(1e-7, 1e-2, log=True)}
    searcher = ArmOptunaSearch(space, arm_settings=settings, fixed_arm=None, seed_base=0,
                               metric="val_accuracy", mode="max",
                               points_to_evaluate=[{"arm": "relu", "lr": 3e-3}, {"arm": "relu", "lr": 1e-7}])
    scheduler = PerArmScheduler(["relu", "selu"], metric="val_accuracy", mode="max", max_t=3,
                                grace_period=1, reduction_factor=2)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(train_cnn, data=tiny_dataset), {"cpu": 1}),
        param_space={"epochs": 3},
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=2,
                                    max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="search", verbose=0))
    results = tuner.fit()
    assert not results.errors
    states = [t.state for t in searcher.study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    trials = load_results([tmp_path / "search"]).trials.sort_values("lr", ascending=False)
    assert trials["status"].tolist() == ["finished", "stopped_early"]
    assert trials["n_epochs"].tolist() == [3, 1]


@pytest.mark.parametrize("gpus, ok", [(0.0, True), (0.25, True), (1.0, True), (2.0, False)])
def test_resource_check_against_fake_gpu_nodes(gpus, ok):
    nodes = [{"Alive": True, "Resources": {"CPU": 8.0}},
             {"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    cfg = _cfg(f"resources.gpus_per_trial={gpus}", "resources.cpus_per_trial=2")
    if ok:
        check_resources(cfg, nodes)
    else:
        with pytest.raises(ConfigError, match="largest node has 8 CPU and 1 GPU"):
            check_resources(cfg, nodes)
