"""Search algorithms and schedulers that keep the SELU-vs-ReLU comparison fair.

* :class:`ArmOptunaSearch`: Ray Tune's ``OptunaSearch`` that expands an arm name into the
  arm's settings, records scheduler-stopped trials as PRUNED (not as COMPLETE with a
  truncated score) and, on restore, fails study trials the Tune experiment never saw.
* :class:`StratifiedSearch`: one ``ArmOptunaSearch`` (its own Optuna study) per cell, a cell
  being an arm and a replicate of its tuning, asked in turn, so every cell gets exactly
  ``per_cell`` trials and the cells run concurrently.
* :class:`PerArmScheduler`: one ASHA instance per cell, so early stopping compares a trial
  only with trials of its own arm and replicate (a weak arm's trials are never cut because
  the other arm is better, and replicates stay independent).

Replicate ``r`` of every arm uses the same TPE sampler seed (``sweeps.seeds``): the arms are
paired. The private attributes of Ray's ``OptunaSearch`` this module relies on are listed in
``OPTUNA_SEARCH_PRIVATE`` (a test pins them).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable
from typing import Any

import optuna
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from sweeps import seeds
from sweeps.config import ParamSpec, SweepConfig
from sweeps.seeds import cell_of, study_name

logger = logging.getLogger(__name__)

# Ray's OptunaSearch keeps its state in these private attributes; ArmOptunaSearch reads them.
OPTUNA_SEARCH_PRIVATE = ("_ot_trials", "_ot_study", "_completed_trials", "_metric", "_points_to_evaluate",
                         "_storage", "_study_name", "_setup_study")


def optuna_distributions(space: tuple[ParamSpec, ...]) -> dict[str, optuna.distributions.BaseDistribution]:
    """Optuna distributions for the configured search space."""
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for p in space:
        if p.choices is not None:
            out[p.name] = optuna.distributions.CategoricalDistribution(list(p.choices))
        elif p.is_int:
            out[p.name] = optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.log)
        else:
            out[p.name] = optuna.distributions.FloatDistribution(p.low, p.high, log=p.log)
    return out


def stopped_early(result: dict | None) -> bool:
    """True when a trial ended before its planned epochs without diverging (a scheduler stop)."""
    if not result or "epoch" not in result or "target_epochs" not in result:
        return False
    return result.get("diverged", 0.0) != 1.0 and result["epoch"] < result["target_epochs"]


class ArmOptunaSearch(OptunaSearch):
    """OptunaSearch for one cell (arm and replicate) of the sweep; see the module docstring."""

    def __init__(self, space, *, arm_settings: dict[str, dict[str, Any]], fixed_arm: str | None,
                 replicate: int, search_seed: int, extra: dict[str, Any] | None = None, **kwargs):
        super().__init__(space=space, **kwargs)
        self._arm_settings = arm_settings
        self._fixed_arm = fixed_arm
        self._replicate = replicate
        self._search_seed = search_seed
        self._extra = dict(extra or {})

    def _setup_study(self, mode):
        # A study that already has trials (a resumed sweep) got its reference point when it began.
        points = self._points_to_evaluate
        if points and self._storage is not None:
            try:
                if optuna.load_study(study_name=self._study_name, storage=self._storage).trials:
                    self._points_to_evaluate = []
            except KeyError:  # no such study yet
                pass
        try:
            super()._setup_study(mode)
        finally:
            self._points_to_evaluate = points

    def suggest(self, trial_id: str) -> dict | None:
        params = super().suggest(trial_id)
        if params is None:
            return None
        arm = params.pop("arm", self._fixed_arm)
        number = self._ot_trials[trial_id].number
        return {**params, **self._arm_settings[arm], **self._extra, "replicate": self._replicate,
                "seed": seeds.search_trial_seed(self._search_seed, self._replicate, number),
                "stage": "search"}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if not error and stopped_early(result):
            # Tune never passes the result on which the scheduler said STOP to on_trial_result:
            # report it here, so the PRUNED trial carries the value of the epoch it stopped at.
            ot_trial = self._ot_trials[trial_id]
            value = result.get(self._metric)
            if value is not None:
                ot_trial.report(float(value), step=int(result.get("training_iteration", result["epoch"])))
            self._ot_study.tell(ot_trial.number, state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result=result, error=error)

    def restore(self, checkpoint_path: str):
        super().restore(checkpoint_path)
        self.fail_orphans()

    def fail_orphans(self) -> int:
        """Mark study trials left RUNNING that this searcher does not track (asked after the last
        experiment checkpoint, before a crash) as FAIL, so the study matches the experiment."""
        known = {t.number for t in self._ot_trials.values()}
        orphans = [t for t in self._ot_study.get_trials(deepcopy=False,
                                                        states=(optuna.trial.TrialState.RUNNING,))
                   if t.number not in known]
        for t in orphans:
            self._ot_study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        return len(orphans)

    @property
    def study(self) -> optuna.Study:
        return self._ot_study


class StratifiedSearch(Searcher):
    """Round-robin over per-cell searchers: equal trials per cell, each cell its own study."""

    def __init__(self, searchers: dict[str, ArmOptunaSearch], per_arm: int, metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self._searchers = searchers
        self._per_arm = per_arm
        self._arm_of: dict[str, str] = {}
        self._counts = dict.fromkeys(searchers, 0)

    def suggest(self, trial_id: str) -> dict | None:
        open_arms = [a for a in self._searchers if self._counts[a] < self._per_arm]
        if not open_arms:
            return Searcher.FINISHED
        arm = min(open_arms, key=lambda a: self._counts[a])  # ties: config order
        config = self._searchers[arm].suggest(trial_id)
        if config is None:
            return None
        self._counts[arm] += 1
        self._arm_of[trial_id] = arm
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._arm_of:
            self._searchers[self._arm_of[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._arm_of:
            self._searchers[self._arm_of[trial_id]].on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        state = {"arm_of": self._arm_of, "counts": self._counts, "per_arm": self._per_arm,
                 "searchers": {a: s.__dict__.copy() for a, s in self._searchers.items()}}
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(state, fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            state = pickle.load(fh)
        self._arm_of, self._counts = state["arm_of"], state["counts"]
        for arm, searcher_state in state["searchers"].items():
            self._searchers[arm].__dict__.update(searcher_state)
            self._searchers[arm].fail_orphans()

    @property
    def studies(self) -> dict[str, optuna.Study]:
        return {a: s.study for a, s in self._searchers.items()}


class PerArmScheduler(FIFOScheduler):
    """Routes each trial to its own cell's ASHA instance (keyed by :func:`cell_of` its config)."""

    def __init__(self, arms: list[str], metric: str, mode: str, max_t: int, grace_period: int,
                 reduction_factor: int, joint: bool = False):
        super().__init__()
        self._metric, self._mode, self._joint = metric, mode, joint
        self._by_arm = {arm: AsyncHyperBandScheduler(time_attr="training_iteration", metric=metric,
                                                      mode=mode, max_t=max_t, grace_period=grace_period,
                                                      reduction_factor=reduction_factor)
                        for arm in arms}

    def _for(self, trial) -> TrialScheduler:
        return self._by_arm.get(cell_of(trial.config, self._joint), self._fallback)

    @property
    def _fallback(self) -> TrialScheduler:
        return next(iter(self._by_arm.values()))

    def set_search_properties(self, metric, mode, **spec) -> bool:
        if (metric, mode) == (self._metric, self._mode):  # TuneConfig names the metric it was built with
            return True
        return all(s.set_search_properties(metric, mode, **spec) for s in self._by_arm.values())

    def on_trial_add(self, tune_controller, trial):
        self._for(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial):
        self._for(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        return self._for(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        self._for(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        self._for(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "; ".join(f"{arm}: {s.debug_string()}" for arm, s in self._by_arm.items())


def reference_points(cfg: SweepConfig, arm: str | None) -> list[dict[str, Any]]:
    """The original experiment's config (lr 1e-3, 50 epochs), clipped into the search space."""
    if not cfg.search.reference_point:
        return []
    original = {"lr": 1e-3, "epochs": 50, "batch_size": 100, "dropout": 0.0}
    point: dict[str, Any] = {}
    for p in cfg.search.space:
        v = original[p.name]
        if p.choices is not None:
            v = min(p.choices, key=lambda c: abs(c - v))
        else:
            v = min(max(v, p.low), p.high)
        point[p.name] = int(v) if p.is_int else float(v)
    return [{"arm": arm, **point}] if arm else [point]


def _replicates(cfg: SweepConfig, replicates: Iterable[int] | None) -> list[int]:
    return list(range(cfg.search.replicates) if replicates is None else replicates)


def make_searcher(cfg: SweepConfig, storage: optuna.storages.BaseStorage | None, experiment_id: str = "x",
                  mode: str = "max", replicates: Iterable[int] | None = None):
    """One ArmOptunaSearch per cell (arm x replicate, or replicate in joint mode) of the given
    ``replicates`` (default: all) under a StratifiedSearch that gives every cell
    ``search.num_samples`` trials."""
    s = cfg.search
    settings = {arm.name: arm.settings(cfg.train) for arm in cfg.arms}
    distributions = optuna_distributions(s.space)
    common = dict(metric=s.metric, mode=mode, storage=storage, arm_settings=settings, search_seed=s.seed)
    searchers = {}
    for r in _replicates(cfg, replicates):
        extra = {"split_seed": seeds.split_seed(cfg.data.split_seed, r, cfg.data.vary_split)} \
            if cfg.data.vary_split else {}

        def sampler(r=r):
            return optuna.samplers.TPESampler(seed=seeds.sampler_seed(s.seed, r),
                                              n_startup_trials=s.startup_trials)
        if s.mode == "joint":
            space = {"arm": optuna.distributions.CategoricalDistribution([a.name for a in cfg.arms]),
                     **distributions}
            points = [p for a in cfg.arms for p in reference_points(cfg, a.name)]
            cells = {f"r{r}": (space, None, points)}
        else:
            cells = {f"{a.name}/r{r}": (dict(distributions), a.name, reference_points(cfg, None))
                     for a in cfg.arms}
        for cell, (space, fixed_arm, points) in cells.items():
            searchers[cell] = ArmOptunaSearch(
                space, fixed_arm=fixed_arm, replicate=r, extra=extra,
                study_name=study_name(cfg, experiment_id, cell), sampler=sampler(),
                points_to_evaluate=points or None, **common)
    return StratifiedSearch(searchers, per_arm=s.num_samples, metric=s.metric, mode=mode)


def total_search_trials(cfg: SweepConfig, replicates: Iterable[int] | None = None) -> int:
    cells = len(cfg.arms) if cfg.search.mode == "stratified" else 1
    return cfg.search.num_samples * cells * len(_replicates(cfg, replicates))


def make_scheduler(cfg: SweepConfig, replicates: Iterable[int] | None = None):
    """ASHA per cell (arm x replicate, or replicate when joint); FIFO when early stopping is off."""
    es = cfg.search.early_stopping
    if not es.enabled:
        return FIFOScheduler()
    max_t = cfg.max_epochs()
    joint = cfg.search.mode == "joint"
    cells = [cell_of({"arm": a.name, "replicate": r}, joint) for r in _replicates(cfg, replicates)
             for a in (cfg.arms[:1] if joint else cfg.arms)]
    return PerArmScheduler(cells, metric=cfg.search.metric, mode="max", max_t=max_t,
                           grace_period=es.grace_period, reduction_factor=es.reduction_factor, joint=joint)
