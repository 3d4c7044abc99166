"""sweeps/search.py: per-cell (arm x replicate) searchers and schedulers, ASHA stops recorded as pruned."""

from __future__ import annotations

import optuna
import pytest
from ray import tune

from analysis.load import load_results
from sweeps import seeds
from sweeps.config import load_config
from sweeps.search import (
    OPTUNA_SEARCH_PRIVATE,
    ArmOptunaSearch,
    PerArmScheduler,
    StratifiedSearch,
    make_searcher,
    reference_points,
    stopped_early,
)
from trainable import train_cnn


def _cfg(*overrides):
    return load_config(overrides=["name=t", "search.replicates=1", *overrides])


def test_stratified_searcher_gives_each_arm_its_own_study_and_equal_turns():
    cfg = _cfg("search.num_samples=3")
    searcher = make_searcher(cfg, storage=None)
    assert isinstance(searcher, StratifiedSearch)
    arms = [searcher.suggest(f"t{i}")["arm"] for i in range(6)]
    assert sorted(arms) == ["relu"] * 3 + ["selu"] * 3
    assert arms[:2] == ["relu", "selu"], "arms alternate so they run concurrently"
    assert searcher.suggest("t6") == StratifiedSearch.FINISHED
    assert all(len(s.trials) == 3 for s in searcher.studies.values())


def test_each_replicate_is_an_independent_paired_tuning():
    cfg = _cfg("search.num_samples=2", "search.replicates=3", "search.seed=77")
    searcher = make_searcher(cfg, storage=None, experiment_id="abc")
    assert sorted(searcher.studies) == [f"{a}/r{r}" for a in ("relu", "selu") for r in range(3)]
    names = {s.study_name for s in searcher.studies.values()}
    assert names == {f"t-abc-{a}-r{r}" for a in ("relu", "selu") for r in range(3)}, "ids in study names"
    configs = [searcher.suggest(f"t{i}") for i in range(12)]
    assert searcher.suggest("t12") == StratifiedSearch.FINISHED
    by_cell = {}
    for c in configs:
        by_cell.setdefault((c["arm"], c["replicate"]), []).append(c)
    assert all(len(v) == 2 for v in by_cell.values()) and len(by_cell) == 6
    for r in range(3):  # paired: the same sampler seed, so the same suggestions and seeds, per arm
        relu, selu = by_cell[("relu", r)], by_cell[("selu", r)]
        assert [(c["lr"], c["epochs"], c["seed"]) for c in relu] == \
            [(c["lr"], c["epochs"], c["seed"]) for c in selu]
    assert by_cell[("relu", 0)][1]["lr"] != by_cell[("relu", 1)][1]["lr"], "replicates differ"


def test_each_study_starts_from_the_original_config_clipped_into_the_space():
    cfg = _cfg("search.num_samples=3")
    first = make_searcher(cfg, storage=None).suggest("a")
    assert (first["lr"], first["epochs"]) == (1e-3, 30), "lr 1e-3 and 50 epochs clipped to the range"
    assert reference_points(_cfg("search.reference_point=false"), None) == []


def test_tpe_startup_trials_are_sized_to_the_budget():
    assert _cfg("search.num_samples=8").search.startup_trials == 2
    assert _cfg("search.num_samples=60").search.startup_trials == 10
    searcher = make_searcher(_cfg("search.num_samples=12"), storage=None)
    sampler = next(iter(searcher.studies.values())).sampler
    assert sampler._n_startup_trials == 4


@pytest.mark.parametrize("search_seed", [0, 43, 10_000, 2**31 - 1])
def test_search_and_confirmation_seeds_are_disjoint_and_bounded(search_seed):
    search = {seeds.search_trial_seed(search_seed, r, n) for r in range(5) for n in range(50)}
    confirm = {seeds.confirm_trial_seed(search_seed, r, k) for r in range(5) for k in range(10)}
    assert not search & confirm
    assert all(0 <= s < 2**31 for s in search | confirm)


def test_suggestions_carry_the_arm_settings_and_a_seed():
    cfg = _cfg("arms.1.kernel_initializer=lecun_normal")
    searcher = make_searcher(cfg, storage=None)
    a, b = searcher.suggest("a"), searcher.suggest("b")
    assert a["activation"] == "relu" and b["activation"] == "selu"
    assert b["kernel_initializer"] == "lecun_normal" and a["kernel_initializer"] == "auto"
    assert 1e-4 <= a["lr"] <= 1e-2 and 3 <= a["epochs"] <= 30 and a["stage"] == "search"
    assert a["seed"] == b["seed"], "arms are paired seed by seed"
    assert a["replicate"] == b["replicate"] == 0


def test_joint_mode_searches_the_activation_as_one_parameter():
    cfg = _cfg("search.mode=joint", "search.num_samples=4", "search.reference_point=false")
    searcher = make_searcher(cfg, storage=None)
    configs = [searcher.suggest(f"t{i}") for i in range(4)]
    assert {c["arm"] for c in configs} <= {"relu", "selu"}
    study = next(iter(searcher.studies.values()))
    assert "arm" in study.trials[0].distributions


def test_scheduler_stop_is_told_to_optuna_as_pruned_with_the_value_it_stopped_at():
    cfg = _cfg("search.num_samples=2")
    searcher = make_searcher(cfg, storage=None)
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.on_trial_result("a", {"val_accuracy": 0.3, "training_iteration": 1})
    # Tune never passes the result on which ASHA says STOP to on_trial_result:
    searcher.on_trial_complete("a", {"val_accuracy": 0.35, "epoch": 2.0, "target_epochs": 9.0,
                                     "diverged": 0.0, "training_iteration": 2})
    searcher.on_trial_complete("b", {"val_accuracy": 0.5, "epoch": 9.0, "target_epochs": 9.0,
                                     "diverged": 0.0, "training_iteration": 9})
    trials = {cell: study.trials[0] for cell, study in searcher.studies.items()}
    assert trials["relu/r0"].state == optuna.trial.TrialState.PRUNED
    assert trials["relu/r0"].intermediate_values == {1: 0.3, 2: 0.35}
    assert trials["selu/r0"].state == optuna.trial.TrialState.COMPLETE


def test_the_private_optuna_search_attributes_we_rely_on_exist():
    searcher = make_searcher(_cfg("search.num_samples=1"), storage=None)
    inner = next(iter(searcher._searchers.values()))
    missing = [name for name in OPTUNA_SEARCH_PRIVATE if not hasattr(inner, name)]
    assert not missing, f"ray.tune.search.optuna.OptunaSearch no longer has {missing}"


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
    study = fresh.studies["selu/r0"]
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.FAIL]
    assert fresh.suggest("c")["arm"] == "selu", "the restored searcher asks again for the lost slot"


def test_asha_stop_is_marked_as_stopped_early_end_to_end(ray_local, tiny_dataset, tmp_path):
    """A real Tune run: the second trial (lr 1e-7, learns nothing) is cut by ASHA at epoch 1."""
    cfg = _cfg("search.mode=joint")
    settings = {a.name: a.settings(cfg.train) for a in cfg.arms}
    space = {"arm": optuna.distributions.CategoricalDistribution(["relu", "selu"]),
             "lr": optuna.distributions.FloatDistribution(1e-7, 1e-2, log=True)}
    searcher = ArmOptunaSearch(space, arm_settings=settings, fixed_arm=None, replicate=0, search_seed=0,
                               metric="val_accuracy", mode="max",
                               points_to_evaluate=[{"arm": "relu", "lr": 3e-3}, {"arm": "relu", "lr": 1e-7}])
    scheduler = PerArmScheduler(["relu/r0", "selu/r0"], metric="val_accuracy", mode="max", max_t=3,
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
