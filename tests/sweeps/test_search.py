"""sweeps/search.py: per-cell (arm x replicate) searchers paired by common random numbers, per-cell
ASHA, and what the Optuna studies record."""

from __future__ import annotations

import math

import optuna
import pytest
from ray import tune

from analysis.load import load_results
from sweeps import seeds
from sweeps.config import load_config
from sweeps.search import (
    OPTUNA_SEARCH_PRIVATE,
    TUNE_CONTROLLER_PRIVATE,
    ArmOptunaSearch,
    DesignSampler,
    PerCellScheduler,
    StratifiedSearch,
    chosen_epochs,
    halving_rungs,
    make_scheduler,
    make_searcher,
    optuna_distributions,
    reference_points,
    sobol_design,
    stopped_early,
)
from trainable import train_cnn


def _cfg(*overrides):
    return load_config(overrides=["name=t", "search.replicates=1", *overrides])


def _by_cell(configs):
    out = {}
    for c in configs:
        out.setdefault((c["arm"], c["replicate"]), []).append(c)
    return out


def test_stratified_searcher_gives_each_arm_its_own_study_and_equal_turns():
    cfg = _cfg("search.num_samples=3")
    searcher = make_searcher(cfg, storage=None)
    assert isinstance(searcher, StratifiedSearch)
    arms = [searcher.suggest(f"t{i}")["arm"] for i in range(6)]
    assert sorted(arms) == ["relu"] * 3 + ["selu"] * 3
    assert arms[:2] == ["relu", "selu"], "arms alternate so they run concurrently"
    assert searcher.suggest("t6") == StratifiedSearch.FINISHED
    assert all(len(s.trials) == 3 for s in searcher.studies.values())


def test_paired_trials_of_every_arm_get_the_same_lr_and_seed_and_replicates_differ():
    """Common random numbers: trial i of replicate r has the same lr and weight seed in every arm."""
    cfg = _cfg("search.num_samples=4", "search.replicates=3", "search.seed=77", "arms=[relu, selu, gelu]")
    searcher = make_searcher(cfg, storage=None, experiment_id="abc")
    assert sorted(searcher.studies) == [f"{a}/r{r}" for a in ("gelu", "relu", "selu") for r in range(3)]
    names = {s.study_name for s in searcher.studies.values()}
    assert names == {f"t-abc-{a}-r{r}" for a in ("relu", "selu", "gelu") for r in range(3)}, "ids in names"
    by_cell = _by_cell(searcher.suggest(f"t{i}") for i in range(36))
    assert searcher.suggest("t36") == StratifiedSearch.FINISHED
    assert all(len(v) == 4 for v in by_cell.values()) and len(by_cell) == 9
    for r in range(3):
        relu, selu, gelu = (by_cell[(a, r)] for a in ("relu", "selu", "gelu"))
        assert [(c["lr"], c["seed"]) for c in relu] == [(c["lr"], c["seed"]) for c in selu] \
            == [(c["lr"], c["seed"]) for c in gelu]
        assert len({c["lr"] for c in relu}) == 4 and len({c["seed"] for c in relu}) == 4
    assert by_cell[("relu", 0)][0]["lr"] != by_cell[("relu", 1)][0]["lr"], "replicates differ"
    assert by_cell[("relu", 0)][0]["seed"] != by_cell[("relu", 1)][0]["seed"]


def test_the_design_is_a_stratified_sobol_sample_of_log_lr_seeded_per_replicate():
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    design = sobol_design(dist, 8, seed=5)
    assert design == sobol_design(dist, 8, seed=5), "deterministic"
    assert design != sobol_design(dist, 8, seed=6)
    strata = sorted(int((math.log10(p["lr"]) + 4) / 2 * 8) for p in design)
    assert strata == list(range(8)), "one point in each eighth of log10 lr in [-4, -2]"
    assert sobol_design(dist, 5, seed=5) == design[:5], "a shorter design is a prefix"
    mixed = {"batch_size": optuna.distributions.IntDistribution(32, 256, step=32),
             "dropout": optuna.distributions.CategoricalDistribution([0.0, 0.1])}
    for point in sobol_design(mixed, 16, seed=1):
        assert point["batch_size"] in range(32, 257, 32) and point["dropout"] in (0.0, 0.1)


def test_searcher_trials_follow_the_design_then_tpe():
    cfg = _cfg("search.num_samples=5", "search.n_startup_trials=3")
    searcher = make_searcher(cfg, storage=None)
    configs = [searcher.suggest(f"t{i}") for i in range(10)]
    design = sobol_design(optuna_distributions(cfg.search.space), 3, seeds.design_seed(cfg.search.seed, 0))
    relu = [c["lr"] for c in configs if c["arm"] == "relu"]
    assert relu[:3] == [p["lr"] for p in design]
    assert not set(relu[3:]) & {p["lr"] for p in design}, "trials past the design come from TPE"
    sampler = searcher.studies["relu/r0"].sampler
    assert isinstance(sampler, DesignSampler) and isinstance(sampler.base, optuna.samplers.TPESampler)


def test_a_crash_between_the_arms_asks_keeps_them_paired_after_restore(tmp_path):
    """A trial asked in one arm only after the last save (then a crash) fails in the study; the
    restored searcher asks again for the same index: the same lr and seed as the other arm."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/o.db")
    cfg = _cfg("search.num_samples=3")
    searcher = make_searcher(cfg, storage)
    first = [searcher.suggest("a"), searcher.suggest("b")]
    searcher.save(str(tmp_path / "state.pkl"))
    lost = searcher.suggest("c")  # relu's trial 1, asked after the last save; then the driver dies
    fresh = make_searcher(cfg, storage)
    fresh.restore(str(tmp_path / "state.pkl"))
    assert [t.state for t in fresh.studies["relu/r0"].get_trials()] == \
        [optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL]
    again = [fresh.suggest(t) for t in ("d", "e", "f", "g")]
    assert again[0]["arm"] == "relu" and (again[0]["lr"], again[0]["seed"]) == (lost["lr"], lost["seed"])
    by_cell = _by_cell(first + again)
    pairs = {arm: [(c["lr"], c["seed"]) for c in by_cell[arm, 0]] for arm in ("relu", "selu")}
    assert pairs["relu"] == pairs["selu"]


def test_the_stratified_search_has_no_reference_point_and_joint_mode_may_keep_it():
    cfg = _cfg("search.num_samples=3")
    first = make_searcher(cfg, storage=None).suggest("a")
    design = sobol_design(optuna_distributions(cfg.search.space), 3, seeds.design_seed(cfg.search.seed, 0))
    assert first["lr"] == design[0]["lr"] != 1e-3, "trial 0 is the design's first point"
    assert reference_points(cfg, None) == []
    joint = _cfg("search.mode=joint", "search.reference_point=true", "search.num_samples=4")
    configs = [make_searcher(joint, storage=None).suggest(f"t{i}") for i in range(1)]
    assert (configs[0]["arm"], configs[0]["lr"]) == ("relu", 1e-3), "the original lr, trained to max_epochs"
    assert configs[0]["epochs"] == joint.search.max_epochs


def test_every_trial_trains_toward_max_epochs():
    cfg = _cfg("search.max_epochs=12")
    config = make_searcher(cfg, storage=None).suggest("a")
    assert config["epochs"] == 12 and "epochs" not in {p.name for p in cfg.search.space}
    assert not isinstance(make_scheduler(cfg), PerCellScheduler), "default.yaml: no early stopping"
    cfg = _cfg("search.max_epochs=12", "search.early_stopping.enabled=true")
    assert make_scheduler(cfg)._sync["relu/r0"].rungs == [1, 3, 9]
    asynchronous = make_scheduler(_cfg("search.max_epochs=12", "search.early_stopping.enabled=true",
                                       "search.early_stopping.halving=async"))
    assert asynchronous._by_cell["relu/r0"]._max_t == 12


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
    assert 1e-4 <= a["lr"] <= 1e-2 and a["epochs"] == cfg.search.max_epochs and a["stage"] == "search"
    assert a["seed"] == b["seed"], "arms are paired seed by seed"
    assert a["replicate"] == b["replicate"] == 0


def test_joint_mode_searches_the_activation_as_one_parameter():
    cfg = _cfg("search.mode=joint", "search.num_samples=4", "search.reference_point=false")
    searcher = make_searcher(cfg, storage=None)
    configs = [searcher.suggest(f"t{i}") for i in range(4)]
    assert {c["arm"] for c in configs} <= {"relu", "selu"}
    study = next(iter(searcher.studies.values()))
    assert "arm" in study.trials[0].distributions


def test_studies_name_their_metric_and_carry_arm_and_replicate():
    cfg = _cfg("search.num_samples=1", "search.replicates=2")
    for cell, study in make_searcher(cfg, storage=None).studies.items():
        arm, r = cell.split("/r")
        assert study.metric_names == ["best_val_accuracy"], "no 'Objective 0'"
        assert study.user_attrs == {"arm": arm, "replicate": int(r), "activation": arm, "objective": "best"}
    joint = next(iter(make_searcher(_cfg("search.mode=joint"), storage=None).studies.values()))
    assert joint.user_attrs["arm"] == "joint" and joint.user_attrs["replicate"] == 0


def test_scheduler_stop_is_told_to_optuna_as_pruned_with_the_value_it_stopped_at():
    cfg = _cfg("search.num_samples=2")
    searcher = make_searcher(cfg, storage=None)
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.on_trial_result("a", {"best_val_accuracy": 0.3, "training_iteration": 1})
    # Tune never passes the result on which ASHA says STOP to on_trial_result:
    searcher.on_trial_complete("a", {"best_val_accuracy": 0.35, "best_epoch": 2.0, "epoch": 2.0,
                                     "target_epochs": 9.0, "diverged": 0.0, "training_iteration": 2})
    trial = searcher.studies["relu/r0"].trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.intermediate_values == {1: 0.3, 2: 0.35}
    assert trial.user_attrs["epochs_trained"] == 2


def test_a_complete_trial_holds_its_last_epoch_and_the_epochs_of_its_best():
    """Under ASHA a trial's last epoch is a STOP (max_t), which Tune never passes to
    on_trial_result: the searcher reports it, and records the epoch of the best as ``epochs``."""
    searcher = make_searcher(_cfg("search.num_samples=1", "search.max_epochs=3"), storage=None)
    searcher.suggest("a")
    for step, best in ((1, 0.3), (2, 0.5)):
        searcher.on_trial_result("a", {"best_val_accuracy": best, "training_iteration": step})
    searcher.on_trial_complete("a", {"best_val_accuracy": 0.5, "best_epoch": 2.0, "epoch": 3.0,
                                     "target_epochs": 3.0, "diverged": 0.0, "training_iteration": 3})
    trial = searcher.studies["relu/r0"].trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 0.5
    assert trial.intermediate_values == {1: 0.3, 2: 0.5, 3: 0.5}
    assert trial.user_attrs["epochs"] == 2 and trial.user_attrs["epochs_trained"] == 3
    assert chosen_epochs({"best_epoch": 2.0, "epoch": 3.0}, "best") == 2
    assert chosen_epochs({"best_epoch": 2.0, "epoch": 3.0}, "final") == 3


def _result_sequence(scheduler, values):
    """Feed (trial, epoch, value) results; the actions ASHA takes."""
    class _Trial:
        def __init__(self, trial_id, arm):
            self.trial_id, self.config = trial_id, {"arm": arm, "replicate": 0}
    trials = {}
    actions = []
    for (arm, i), epoch, value in values:
        trial = trials.setdefault((arm, i), _Trial(f"{arm}{i}", arm))
        if epoch == 1:
            scheduler.on_trial_add(None, trial)
        actions.append(scheduler.on_trial_result(None, trial, {"training_iteration": epoch,
                                                                "best_val_accuracy": value}))
    return actions


def test_per_cell_asha_treats_the_arms_alike_first_trial_at_a_rung_included():
    """Ray lets the first trial to reach an empty rung continue: per cell, that is trial 0, the same
    design point in every arm. The same results in two cells get the same decisions, whatever
    the other cell records (here selu's values are all higher, interleaved with relu's)."""
    scheduler = PerCellScheduler(["relu/r0", "selu/r0"], metric="best_val_accuracy", mode="max", max_t=9,
                                 grace_period=1, reduction_factor=3, halving="async")
    curve = {0: [0.2, 0.25, 0.3], 1: [0.1, 0.12, 0.13], 2: [0.3, 0.4, 0.5], 3: [0.15, 0.2, 0.25]}
    events = [((arm, i), epoch, value + (0.4 if arm == "selu" else 0.0))
              for i in range(4) for epoch, value in zip((1, 3, 9), curve[i]) for arm in ("relu", "selu")]
    actions = _result_sequence(scheduler, events)
    relu = [a for (cell, _, _), a in zip(events, actions) if cell[0] == "relu"]
    selu = [a for (cell, _, _), a in zip(events, actions) if cell[0] == "selu"]
    assert relu == selu
    assert relu[:3] == ["CONTINUE", "CONTINUE", "STOP"], "trial 0 (first at every rung) runs to max_t"
    assert "STOP" in relu[3:6], "a weak later trial is stopped"


class _FakeTrial:
    """The parts of a Tune ``Trial`` the synchronous halving reads."""

    def __init__(self, trial_id, arm, status="PENDING", last_result=None):
        self.trial_id, self.config = trial_id, {"arm": arm, "replicate": 0}
        self.status, self.last_result = status, dict(last_result or {})

    def set_status(self, status):
        self.status = status


class _FakeController:
    """Tune's controller as the scheduler sees it: the trials, and stop_trial (which calls back
    into the scheduler's on_trial_remove for a paused trial, as Tune's does)."""

    def __init__(self):
        self.trials, self.stopped = [], []
        self.scheduler = None

    def get_trials(self):
        return list(self.trials)

    def stop_trial(self, trial):
        self.stopped.append(trial.trial_id)
        self.scheduler.on_trial_remove(self, trial)
        trial.status = "TERMINATED"


def _sync(cells=("relu/r0", "selu/r0"), size=8, max_t=9, grace=1, rf=3):
    scheduler = PerCellScheduler(list(cells), metric="best_val_accuracy", mode="max", max_t=max_t,
                                 grace_period=grace, reduction_factor=rf, halving="sync", cell_size=size)
    controller = _FakeController()
    controller.scheduler = scheduler
    return scheduler, controller


def _report(scheduler, controller, trial, epoch, value, **extra):
    """One result, as Tune handles it: the decision, then the trial's state after it."""
    result = {"epoch": float(epoch), "training_iteration": epoch, "best_val_accuracy": value, **extra}
    trial.status = "RUNNING"
    decision = scheduler.on_trial_result(controller, trial, result)
    trial.last_result = result
    if decision == "PAUSE":
        trial.status = "PAUSED"
    elif decision == "STOP":
        scheduler.on_trial_complete(controller, trial, result)
        trial.status = "TERMINATED"
    return decision


def _added(scheduler, controller, arm, n, prefix=""):
    trials = [_FakeTrial(f"{prefix}{arm}{i}", arm) for i in range(n)]
    for t in trials:
        controller.trials.append(t)
        scheduler.on_trial_add(controller, t)
    return trials


def test_halving_rungs_stop_below_max_t():
    assert halving_rungs(20, 1, 3) == [1, 3, 9]
    assert halving_rungs(9, 1, 3) == [1, 3]
    assert halving_rungs(20, 3, 3) == [3, 9]
    assert halving_rungs(3, 3, 3) == []


def test_sync_halving_holds_every_trial_first_one_included_until_the_cell_reaches_the_rung():
    """No trial is exempt: trial 0 waits at epoch 1 like the others. When the 8th arrives, the best
    floor(8/3) = 2 go on (the reporting one too, if it is among them) and the rest end at epoch 1."""
    scheduler, controller = _sync()
    trials = _added(scheduler, controller, "relu", 8)
    values = [0.30, 0.10, 0.50, 0.20, 0.15, 0.12, 0.11, 0.40]
    decisions = [_report(scheduler, controller, t, 1, v) for t, v in zip(trials, values)]
    assert decisions == ["PAUSE"] * 7 + ["CONTINUE"], "the last one to arrive (0.40) is in the top 2"
    assert sorted(controller.stopped) == ["relu0", "relu1", "relu3", "relu4", "relu5", "relu6"]
    assert trials[2].status == "PAUSED", "promoted while paused: waits for Tune to restart it"
    assert scheduler.choose_trial_to_run(controller) is trials[2]
    # At epoch 3 the two survivors meet again: floor(2/3) -> at least 1 goes on.
    assert _report(scheduler, controller, trials[7], 3, 0.45) == "PAUSE"
    trials[2].status = "RUNNING"
    assert _report(scheduler, controller, trials[2], 3, 0.55) == "CONTINUE"
    assert controller.stopped[-1] == "relu7"
    assert [_report(scheduler, controller, trials[2], e, 0.6) for e in range(4, 10)] == ["CONTINUE"] * 6


def test_sync_halving_cut_trial_is_stopped_when_its_report_completes_the_rung():
    scheduler, controller = _sync(size=3)
    trials = _added(scheduler, controller, "relu", 3)
    assert [_report(scheduler, controller, t, 1, v) for t, v in zip(trials, [0.5, 0.4, 0.3])] == \
        ["PAUSE", "PAUSE", "STOP"]
    assert controller.stopped == ["relu1"] and trials[0].status == "PAUSED"
    assert scheduler.choose_trial_to_run(controller) is trials[0]


def test_sync_halving_treats_the_arms_alike_whatever_the_other_cell_records():
    scheduler, controller = _sync()
    relu, selu = _added(scheduler, controller, "relu", 8), _added(scheduler, controller, "selu", 8)
    values = [0.30, 0.10, 0.50, 0.20, 0.15, 0.12, 0.11, 0.40]
    decisions = {"relu": [], "selu": []}
    for i, v in enumerate(values):  # interleaved; selu's values all higher than any of relu's
        decisions["relu"].append(_report(scheduler, controller, relu[i], 1, v))
        decisions["selu"].append(_report(scheduler, controller, selu[i], 1, v + 0.4))
    assert decisions["relu"] == decisions["selu"]
    assert sorted(t[4:] for t in controller.stopped if t.startswith("relu")) == \
        sorted(t[4:] for t in controller.stopped if t.startswith("selu"))


def test_a_trial_diverged_at_a_rung_ends_on_its_own_and_ranks_last():
    scheduler, controller = _sync(size=3, rf=2)
    trials = _added(scheduler, controller, "relu", 3)
    assert _report(scheduler, controller, trials[0], 1, 0.9, diverged=1.0) == "CONTINUE"
    scheduler.on_trial_complete(controller, trials[0], trials[0].last_result)
    trials[0].status = "TERMINATED"
    assert _report(scheduler, controller, trials[1], 1, 0.2) == "PAUSE"
    assert _report(scheduler, controller, trials[2], 1, 0.1) == "STOP", "floor(3/2) = 1 goes on: trial 1"
    assert controller.stopped == [] and trials[1].status == "PAUSED"


def test_a_trial_that_fails_for_good_before_the_rung_does_not_hold_it_up():
    scheduler, controller = _sync(size=3)
    trials = _added(scheduler, controller, "relu", 3)
    assert _report(scheduler, controller, trials[0], 1, 0.3) == "PAUSE"
    assert _report(scheduler, controller, trials[1], 1, 0.4) == "PAUSE"
    trials[2].status = "ERROR"  # Tune: on_trial_error, then ERROR (a retried one goes back to PENDING)
    scheduler.on_trial_error(controller, trials[2])
    assert scheduler.choose_trial_to_run(controller) is trials[1], "decided at the next step"
    assert controller.stopped == ["relu0"]


def test_a_rung_waits_for_trials_the_searcher_has_not_made_yet():
    scheduler, controller = _sync(size=3)
    trials = _added(scheduler, controller, "relu", 2)
    assert [_report(scheduler, controller, t, 1, v) for t, v in zip(trials, [0.3, 0.4])] == ["PAUSE", "PAUSE"]
    assert scheduler.choose_trial_to_run(controller) is None and controller.stopped == []


def test_a_restored_sync_halving_makes_the_same_promotions_and_starts_no_waiting_trial():
    """Tune restores every unfinished trial as PENDING and would start it. The scheduler rebuilds
    its rungs from the trials' last results: a trial past a rung went on there, one whose last epoch
    is a rung waits (PAUSED again), one cut there keeps its value; the decision is then remade."""
    # Before the kill: rung 1 of relu decided (relu2 and relu7 went on; relu7 reached epoch 2),
    # and selu's rung 1 half full.
    ended = "TERMINATED"
    state = {"relu0": (ended, 1, 0.30), "relu1": (ended, 1, 0.10), "relu2": ("PENDING", 1, 0.50),
             "relu3": (ended, 1, 0.20), "relu4": (ended, 1, 0.15), "relu5": (ended, 1, 0.12),
             "relu6": (ended, 1, 0.11), "relu7": ("PENDING", 2, 0.40),
             **{f"selu{i}": ("PENDING", 1, 0.1 * i) for i in range(5)},
             **{f"selu{i}": ("PENDING", 0, None) for i in range(5, 8)}}
    scheduler, controller = _sync()
    for trial_id, (status, epoch, value) in state.items():
        last = {"epoch": float(epoch), "best_val_accuracy": value} if epoch else {}
        trial = _FakeTrial(trial_id, trial_id[:4], status, last)
        controller.trials.append(trial)
        scheduler.on_trial_add(controller, trial)
    status = {t.trial_id: t.status for t in controller.trials}
    assert status["relu2"] == "PAUSED" and status["relu7"] == "PENDING"
    assert [status[f"selu{i}"] for i in range(8)] == ["PAUSED"] * 5 + ["PENDING"] * 3
    # Tune starts the PENDING ones first (relu7, then selu5..7); relu2 is chosen once they run.
    assert scheduler.choose_trial_to_run(controller).trial_id == "relu7"
    assert controller.stopped == [], "the cut trials had ended; nothing is cut twice"
    for t in controller.trials:
        if t.status == "PENDING":
            t.status = "RUNNING"
    assert scheduler.choose_trial_to_run(controller).trial_id == "relu2", "promoted before the kill"
    assert scheduler._sync["relu/r0"].promoted[1] == {"relu2", "relu7"}
    assert 1 not in scheduler._sync["selu/r0"].promoted


def test_a_paused_trial_cut_without_a_result_is_pruned_with_its_last_value_and_epochs():
    """Tune's stop_trial of a paused trial tells the searcher no result: it uses the last one."""
    searcher = make_searcher(_cfg("search.num_samples=1"), storage=None)
    config = searcher.suggest("a")
    cell = f"{config['arm']}/r0"
    result = {"epoch": 1.0, "target_epochs": 20.0, "training_iteration": 1, "best_val_accuracy": 0.3,
              "best_epoch": 1.0, "diverged": 0.0}
    searcher.on_trial_result("a", result)
    searcher.on_trial_complete("a")
    trial = searcher.studies[cell].trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.intermediate_values == {1: 0.3} and trial.user_attrs["epochs_trained"] == 1


def test_the_private_tune_controller_attributes_the_halving_relies_on_exist():
    import inspect

    from ray.tune.execution.tune_controller import TrialRunnerWrapper, TuneController

    wrapper_attr, mark = TUNE_CONTROLLER_PRIVATE
    assert f"self.{wrapper_attr} = " in inspect.getsource(TrialRunnerWrapper.__init__)
    assert callable(getattr(TuneController, mark, None))


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


def test_restore_takes_trials_the_study_finished_after_the_last_save_as_finished(tmp_path):
    """The driver told the study a trial's end (PostgreSQL/SQLite commit at once), then died before
    Tune's next snapshot: the restored searcher still tracks the trial as running and Tune runs it
    again. Its repeated results and end must leave the finished study trial as it was, not raise
    UpdateFinishedTrialError (which failed the trial and the resumed sweep: CI, 2026-12-07)."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/o.db")
    cfg = _cfg("search.num_samples=2")
    searcher = make_searcher(cfg, storage)
    searcher.suggest("a")
    searcher.save(str(tmp_path / "state.pkl"))  # Tune's last snapshot: "a" running
    result = {"epoch": 2.0, "target_epochs": 2.0, "training_iteration": 2, "val_accuracy": 0.4,
              "best_val_accuracy": 0.4, "best_epoch": 2.0, "diverged": 0.0}
    searcher.on_trial_result("a", {**result, "epoch": 1.0, "training_iteration": 1, "val_accuracy": 0.3})
    searcher.on_trial_complete("a", result)  # told to the study, then the driver dies
    fresh = make_searcher(cfg, storage)
    fresh.restore(str(tmp_path / "state.pkl"))
    cell = next(c for c, s in fresh._searchers.items() if "a" in s._ot_trials)
    before = fresh.studies[cell].trials[0]
    assert before.state == optuna.trial.TrialState.COMPLETE
    fresh.on_trial_result("a", {**result, "epoch": 1.0, "training_iteration": 1, "val_accuracy": 0.3})
    fresh.on_trial_result("a", result)
    fresh.on_trial_complete("a", {**result, "val_accuracy": 0.41})  # rerun: must not raise
    after = fresh.studies[cell].trials[0]
    assert (after.state, after.value, after.intermediate_values, after.user_attrs) == \
        (before.state, before.value, before.intermediate_values, before.user_attrs)
    assert fresh.suggest("b") is not None, "the restored searcher goes on with the next trial"


def test_asha_stop_is_marked_as_stopped_early_end_to_end(ray_local, tiny_dataset, tmp_path):
    """A real Tune run: the second trial (lr 1e-7, learns nothing) is cut by ASHA at epoch 1; the
    first runs to max_t, where ASHA says STOP too, and its study trial still holds epoch 3."""
    cfg = _cfg("search.mode=joint")
    settings = {a.name: a.settings(cfg.train) for a in cfg.arms}
    space = {"arm": optuna.distributions.CategoricalDistribution(["relu", "selu"]),
             "lr": optuna.distributions.FloatDistribution(1e-7, 1e-2, log=True)}
    searcher = ArmOptunaSearch(space, arm_settings=settings, fixed_arm=None, replicate=0, search_seed=0,
                               metric="val_accuracy", mode="max", objective="final",
                               points_to_evaluate=[{"arm": "relu", "lr": 3e-3}, {"arm": "relu", "lr": 1e-7}])
    scheduler = PerCellScheduler(["relu/r0", "selu/r0"], metric="val_accuracy", mode="max", max_t=3,
                                 grace_period=1, reduction_factor=2, halving="async")
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(train_cnn, data=tiny_dataset), {"cpu": 1}),
        param_space={"epochs": 3},
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=2,
                                    max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="search", verbose=0))
    results = tuner.fit()
    assert not results.errors
    complete, pruned = searcher.study.trials
    states = optuna.trial.TrialState
    assert [complete.state, pruned.state] == [states.COMPLETE, states.PRUNED]
    assert sorted(complete.intermediate_values) == [1, 2, 3] and complete.user_attrs["epochs"] == 3
    assert sorted(pruned.intermediate_values) == [1]
    trials = load_results([tmp_path / "search"]).trials.sort_values("lr", ascending=False)
    assert trials["status"].tolist() == ["finished", "stopped_early"]
    assert trials["n_epochs"].tolist() == [3, 1]
