"""Search algorithms and schedulers that keep the SELU-vs-ReLU comparison fair.

* :class:`ArmOptunaSearch`: Ray Tune's ``OptunaSearch`` that expands an arm name into the
  arm's settings, records scheduler-stopped trials as PRUNED (not as COMPLETE with a
  truncated score) and, on restore, fails study trials the Tune experiment never saw.
* :class:`StratifiedSearch`: one ``ArmOptunaSearch`` (its own Optuna study) per arm, asked in
  turn, so every arm gets exactly ``per_arm`` trials and the arms run concurrently.
* :class:`PerArmScheduler`: one ASHA instance per arm, so early stopping compares a trial
  only with trials of its own arm (a weak arm's trials are never cut because the other arm
  is better).
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

import optuna
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from sweeps.config import ParamSpec, SweepConfig

logger = logging.getLogger(__name__)


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
    """OptunaSearch that knows the sweep's arms; see the module docstring."""

    def __init__(self, space, *, arm_settings: dict[str, dict[str, Any]], fixed_arm: str | None,
                 seed_base: int, **kwargs):
        super().__init__(space=space, **kwargs)
        self._arm_settings = arm_settings
        self._fixed_arm = fixed_arm
        self._seed_base = seed_base

    def suggest(self, trial_id: str) -> dict | None:
        params = super().suggest(trial_id)
        if params is None:
            return None
        arm = params.pop("arm", self._fixed_arm)
        return {**params, **self._arm_settings[arm],
                "seed": self._seed_base + self._ot_trials[trial_id].number, "stage": "search"}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if not error and stopped_early(result):
            ot_trial = self._ot_trials[trial_id]
            try:  # PRUNED keeps the last intermediate value; TPE treats it as a partial result
                self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
            except Exception as exc:  # pragma: no cover - optuna refuses a double tell
                logger.warning(exc)
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
        storage = self._ot_study._storage
        orphans = [t for t in self._ot_study.get_trials(deepcopy=False,
                                                        states=(optuna.trial.TrialState.RUNNING,))
                   if t.number not in known]
        for t in orphans:
            storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        return len(orphans)

    @property
    def study(self) -> optuna.Study:
        return self._ot_study


class StratifiedSearch(Searcher):
    """Round-robin over per-arm searchers: equal trials per arm, each arm its own study."""

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
    """Routes each trial to its own arm's ASHA instance (keyed by ``config["arm"]``)."""

    def __init__(self, arms: list[str], metric: str, mode: str, max_t: int, grace_period: int,
                 reduction_factor: int):
        super().__init__()
        self._metric, self._mode = metric, mode
        self._by_arm = {arm: AsyncHyperBandScheduler(time_attr="training_iteration", metric=metric,
                                                      mode=mode, max_t=max_t, grace_period=grace_period,
                                                      reduction_factor=reduction_factor)
                        for arm in arms}

    def _for(self, trial) -> TrialScheduler:
        return self._by_arm.get(trial.config.get("arm"), self._fallback)

    @property
    def _fallback(self) -> TrialScheduler:
        return next(iter(self._by_arm.values()))

    def set_search_properties(self, metric, mode, **spec) -> bool:
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


def _seed_base(cfg: SweepConfig) -> int:
    """Search trial k of an arm trains with weight seed ``search.seed * 1000 + k``: arms are
    paired seed by seed, and the confirmation stage's seeds (``confirm.seed_offset`` + i) differ."""
    return cfg.search.seed * 1000


def make_searcher(cfg: SweepConfig, storage: optuna.storages.BaseStorage | None, mode: str = "max"):
    """The search algorithm for ``cfg.search.mode``: StratifiedSearch or one joint ArmOptunaSearch."""
    metric = cfg.search.metric
    settings = {arm.name: arm.settings(cfg.train) for arm in cfg.arms}
    distributions = optuna_distributions(cfg.search.space)
    common = dict(metric=metric, mode=mode, storage=storage, arm_settings=settings)
    if cfg.search.mode == "joint":
        space = {"arm": optuna.distributions.CategoricalDistribution([a.name for a in cfg.arms]),
                 **distributions}
        return ArmOptunaSearch(space, fixed_arm=None, study_name=f"{cfg.name}-joint",
                               sampler=optuna.samplers.TPESampler(seed=cfg.search.seed),
                               seed_base=_seed_base(cfg), **common)
    searchers = {
        arm.name: ArmOptunaSearch(dict(distributions), fixed_arm=arm.name,
                                  study_name=f"{cfg.name}-{arm.name}",
                                  sampler=optuna.samplers.TPESampler(seed=cfg.search.seed + i),
                                  seed_base=_seed_base(cfg), **common)
        for i, arm in enumerate(cfg.arms)
    }
    return StratifiedSearch(searchers, per_arm=cfg.search.num_samples, metric=metric, mode=mode)


def total_search_trials(cfg: SweepConfig) -> int:
    return cfg.search.num_samples * (len(cfg.arms) if cfg.search.mode == "stratified" else 1)


def make_scheduler(cfg: SweepConfig):
    """ASHA per arm (stratified) or one ASHA (joint); FIFO when early stopping is off."""
    es = cfg.search.early_stopping
    if not es.enabled:
        return FIFOScheduler()
    max_t = max([int(p.high if p.choices is None else max(p.choices))
                 for p in cfg.search.space if p.name == "epochs"] or [cfg.train.epochs])
    arms = [a.name for a in cfg.arms] if cfg.search.mode == "stratified" else ["__all__"]
    return PerArmScheduler(arms, metric=cfg.search.metric, mode="max", max_t=max_t,
                           grace_period=es.grace_period, reduction_factor=es.reduction_factor)
