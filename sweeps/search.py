"""Search algorithms and schedulers that keep the SELU-vs-ReLU comparison fair.

A *cell* is one tuning: an arm and a replicate (``arm/rR``), or a replicate in ``joint`` mode.

* Common random numbers: trial ``i`` of replicate ``r`` evaluates the same design point with
  the same weight seed in every arm. The design is a scrambled Sobol sequence over the search
  space (log scale for log ranges), seeded per replicate (``sweeps.seeds.design_seed``) and fed
  through :class:`DesignSampler`; after ``search.n_startup_trials`` design points (all of them
  by default) TPE takes over. The index ``i`` is the cell's own count of asked trials, so it
  survives a resume even where a crashed trial left a failed Optuna trial in one arm only.
* No privileged trial: the stratified search has no reference point, and every trial is subject
  to ASHA alike. (Ray's asynchronous ASHA lets the first trial to reach an empty rung continue;
  per cell, that is trial 0, which is the same design point and seed in every arm.)
* Epochs are read off the curve: every trial trains toward ``search.max_epochs``; its objective
  is the best validation accuracy over its epochs (``objective: best``) and the epochs of the
  configuration it stands for are the epoch of that best (:func:`chosen_epochs`), recorded on
  its Optuna trial as the user attribute ``epochs``.

Classes:

* :class:`ArmOptunaSearch`: Ray Tune's ``OptunaSearch`` for one cell: expands an arm name into
  the arm's settings, names the study's metric and tags the study with its arm and replicate,
  records scheduler-stopped trials as PRUNED (with the value ASHA stopped them at: Tune never
  passes that result to ``on_trial_result``) and the last epoch's value of COMPLETE ones, and, on
  restore, fails study trials the Tune experiment never saw.
* :class:`StratifiedSearch`: one ``ArmOptunaSearch`` (its own Optuna study) per cell, asked in
  turn, so every cell gets exactly ``search.num_samples`` trials and the cells run concurrently.
* :class:`PerCellScheduler`: one ASHA instance per cell, so early stopping compares a trial only
  with trials of its own arm and replicate (a weak arm's trials are never cut because the other
  arm is better, and replicates stay independent).

The private attributes of Ray's ``OptunaSearch`` this module relies on are listed in
``OPTUNA_SEARCH_PRIVATE`` (a test pins them).
"""

from __future__ import annotations

import logging
import math
import pickle
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import optuna
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from sweeps import seeds
from sweeps.config import ParamSpec, SweepConfig
from sweeps.seeds import cell_of, study_name
from trainable.train import DEFAULTS

logger = logging.getLogger(__name__)

# Ray's OptunaSearch keeps its state in these private attributes; ArmOptunaSearch reads them.
OPTUNA_SEARCH_PRIVATE = ("_ot_trials", "_ot_study", "_completed_trials", "_metric", "_points_to_evaluate",
                         "_storage", "_study_name", "_setup_study")
JOINT = "joint"  # the study attribute ``arm`` of a joint-mode study (the arm is one of its parameters)


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


# --------------------------------------------------------------------------------------------
# The shared quasi-random design


def _from_unit(dist: optuna.distributions.BaseDistribution, u: float) -> Any:
    """The value at quantile ``u`` in [0, 1) of a uniform (log-uniform for log ranges) draw."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return dist.choices[min(int(u * len(dist.choices)), len(dist.choices) - 1)]
    low, high = float(dist.low), float(dist.high)
    if dist.log:
        value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    else:
        value = low + u * (high - low)
    if isinstance(dist, optuna.distributions.IntDistribution):
        if not dist.log:  # each of the (high - low) / step + 1 values gets an equal share of [0, 1)
            n = (dist.high - dist.low) // dist.step + 1
            return int(dist.low + min(int(u * n), n - 1) * dist.step)
        return int(min(max(round(value), dist.low), dist.high))
    if dist.step is not None:
        value = low + round((value - low) / dist.step) * dist.step
    return float(min(max(value, low), high))


def sobol_design(distributions: dict[str, optuna.distributions.BaseDistribution], n: int,
                 seed: int) -> list[dict[str, Any]]:
    """``n`` points of a scrambled Sobol sequence over ``distributions`` (one dimension each, in
    their order), seeded by ``seed``: the same ``seed`` gives the same points, in the same order.
    In one dimension the first 2**m points put one point in each of 2**m equal strata."""
    if n <= 0 or not distributions:
        return []
    from scipy.stats import qmc

    d, m = len(distributions), max(0, math.ceil(math.log2(n)))
    rng = np.random.default_rng(seed)
    try:
        engine = qmc.Sobol(d, scramble=True, rng=rng)
    except TypeError:  # scipy < 1.15 calls it seed
        engine = qmc.Sobol(d, scramble=True, seed=rng)
    units = engine.random_base2(m)[:n]  # a power of two keeps Sobol's balance; the first n are used
    return [{name: _from_unit(dist, float(u)) for (name, dist), u in zip(distributions.items(), row)}
            for row in units]


class DesignSampler(optuna.samplers.BaseSampler):
    """Trial ``i`` of a study (``i`` set by the searcher in ``next_index`` before it asks) takes
    ``design[i]``; trials past the design are sampled by ``base`` (TPE), which sees the design
    trials in the study's history."""

    def __init__(self, design: list[dict[str, Any]], base: optuna.samplers.BaseSampler):
        self.design = design
        self.base = base
        self.next_index: int | None = None
        self._index_of: dict[int, int] = {}  # Optuna trial number -> index in the cell

    def _point(self, trial: optuna.trial.FrozenTrial) -> dict[str, Any] | None:
        i = self._index_of.get(trial.number)
        return self.design[i] if i is not None and i < len(self.design) else None

    def before_trial(self, study, trial) -> None:
        if self.next_index is not None:
            self._index_of[trial.number] = self.next_index
            self.next_index = None
        self.base.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return {} if self._point(trial) is not None else self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        if self._point(trial) is not None:
            return {}
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        point = self._point(trial)
        if point is not None and param_name in point:
            return point[param_name]
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


# --------------------------------------------------------------------------------------------
# What a trial stands for


def stopped_early(result: dict | None) -> bool:
    """True when a trial ended before its planned epochs without diverging (a scheduler stop)."""
    if not result or "epoch" not in result or "target_epochs" not in result:
        return False
    return result.get("diverged", 0.0) != 1.0 and result["epoch"] < result["target_epochs"]


def chosen_epochs(result: dict | None, objective: str) -> int | None:
    """The epochs of the configuration a trial stands for: the epoch of its best validation
    accuracy (``objective: best``) or the last epoch it trained (``final``); None before any."""
    value = (result or {}).get("best_epoch" if objective == "best" else "epoch")
    return int(value) if value else None


class ArmOptunaSearch(OptunaSearch):
    """OptunaSearch for one cell (arm and replicate) of the sweep; see the module docstring."""

    def __init__(self, space, *, arm_settings: dict[str, dict[str, Any]], fixed_arm: str | None,
                 replicate: int, search_seed: int, extra: dict[str, Any] | None = None,
                 objective: str = "best", **kwargs):
        # Set before OptunaSearch.__init__, which sets the study up (_setup_study reads them).
        self._arm_settings = arm_settings
        self._fixed_arm = fixed_arm
        self._replicate = replicate
        self._search_seed = search_seed
        self._extra = dict(extra or {})
        self._objective = objective
        self._index_of: dict[str, int] = {}  # Tune trial id -> its index in this cell
        self._last_step: dict[str, int] = {}  # Tune trial id -> last step reported to Optuna
        self._last_result: dict[str, dict] = {}  # Tune trial id -> its last result, for a stop without one
        super().__init__(space=space, **kwargs)

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
        study = self._ot_study
        if study.metric_names != [self._metric]:
            with warnings.catch_warnings():  # experimental since Optuna 3.2, still in 5.1
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([self._metric])
        activation = self._arm_settings[self._fixed_arm]["activation"] if self._fixed_arm else JOINT
        attrs = {"arm": self._fixed_arm or JOINT, "replicate": self._replicate, "activation": activation,
                 "objective": self._objective}
        for key, value in attrs.items():
            if study.user_attrs.get(key) != value:
                study.set_user_attr(key, value)

    def suggest(self, trial_id: str) -> dict | None:
        fresh = trial_id not in self._ot_trials
        index = len(self._ot_trials) if fresh else self._index_of.get(trial_id, 0)
        sampler = self._ot_study.sampler
        # Duck-typed, not isinstance: on --resume this class is the by-value copy from tuner.pkl
        # while the restored sampler is sweeps.search's own DesignSampler (a different class).
        if fresh and hasattr(sampler, "next_index"):
            sampler.next_index = index
        params = super().suggest(trial_id)
        if params is None:
            return None
        seed = seeds.search_trial_seed(self._search_seed, self._replicate, index)
        if fresh:
            self._index_of[trial_id] = index
            ot_trial = self._ot_trials[trial_id]
            ot_trial.set_user_attr("trial_index", index)
            ot_trial.set_user_attr("seed", seed)
        arm = params.pop("arm", self._fixed_arm)
        return {**params, **self._arm_settings[arm], **self._extra, "replicate": self._replicate,
                "seed": seed, "stage": "search"}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials:  # finished in the study before a resume (match_study)
            return
        super().on_trial_result(trial_id, result)
        if trial_id in self._ot_trials:
            self._last_step[trial_id] = int(result["training_iteration"])
            self._last_result[trial_id] = dict(result)

    def _record_last(self, trial_id: str, result: dict) -> None:
        """Report the trial's last value (Tune passes no ``on_trial_result`` for the result on
        which a scheduler says STOP, which under ASHA includes a trial's last epoch) and record
        the epochs of the configuration it stands for."""
        ot_trial = self._ot_trials[trial_id]
        value, step = result.get(self._metric), result.get("training_iteration", result.get("epoch"))
        if value is not None and step is not None and math.isfinite(float(value)) \
                and int(step) > self._last_step.get(trial_id, -1):
            ot_trial.report(float(value), step=int(step))
            self._last_step[trial_id] = int(step)
        epochs = chosen_epochs(result, self._objective)
        if epochs is not None:
            ot_trial.set_user_attr("epochs", epochs)
        if "epoch" in result:
            ot_trial.set_user_attr("epochs_trained", int(result["epoch"]))
        ot_trial.set_user_attr("diverged", result.get("diverged") == 1.0)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if not error and not result:
            # Tune stops a paused trial (cut at a rung of synchronous halving) without its result.
            result = self._last_result.get(trial_id)
        self._last_result.pop(trial_id, None)
        if not error and result:
            self._record_last(trial_id, result)
        if not error and stopped_early(result):
            self._ot_study.tell(self._ot_trials[trial_id].number, state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result=result, error=error)

    def restore(self, checkpoint_path: str):
        super().restore(checkpoint_path)
        self.match_study()

    def match_study(self) -> tuple[int, int]:
        """Make this searcher, restored from Tune's last experiment snapshot, agree with its study,
        which the driver wrote to at once and so may be ahead of the snapshot after a crash:

        * a study trial left RUNNING that this searcher does not track (asked after the snapshot)
          becomes FAIL; the searcher then asks again for the same index (so the same design point
          and seed);
        * a trial it tracks as running that the study has finished (told after the snapshot) counts
          as completed: Tune runs it again from its last checkpoint, and its repeated results and
          end leave the finished study trial as it was (the same seed gives the same values).

        Returns (orphans failed, finished trials taken as completed)."""
        running = optuna.trial.TrialState.RUNNING
        trials = {t.number: t for t in self._ot_study.get_trials(deepcopy=False)}
        known = {t.number: tid for tid, t in self._ot_trials.items()}
        orphans = [n for n, t in trials.items() if t.state == running and n not in known]
        for n in orphans:
            self._ot_study.tell(n, state=optuna.trial.TrialState.FAIL)
        finished = [tid for n, tid in known.items() if tid not in self._completed_trials
                    and n in trials and trials[n].state.is_finished()]
        for tid in finished:
            self._completed_trials.add(tid)
            self._last_result.pop(tid, None)
        return len(orphans), len(finished)

    @property
    def study(self) -> optuna.Study:
        return self._ot_study


class StratifiedSearch(Searcher):
    """Round-robin over per-cell searchers: equal trials per cell, each cell its own study."""

    def __init__(self, searchers: dict[str, ArmOptunaSearch], per_cell: int, metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self._searchers = searchers
        self._per_cell = per_cell
        self._cell_of: dict[str, str] = {}  # Tune trial id -> cell
        self._counts = dict.fromkeys(searchers, 0)

    def suggest(self, trial_id: str) -> dict | None:
        open_cells = [c for c in self._searchers if self._counts[c] < self._per_cell]
        if not open_cells:
            return Searcher.FINISHED
        cell = min(open_cells, key=lambda c: self._counts[c])  # ties: config order
        config = self._searchers[cell].suggest(trial_id)
        if config is None:
            return None
        self._counts[cell] += 1
        self._cell_of[trial_id] = cell
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._cell_of:
            self._searchers[self._cell_of[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._cell_of:
            self._searchers[self._cell_of[trial_id]].on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        state = {"cell_of": self._cell_of, "counts": self._counts, "per_cell": self._per_cell,
                 "searchers": {c: s.__dict__.copy() for c, s in self._searchers.items()}}
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(state, fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            state = pickle.load(fh)
        self._cell_of, self._counts = state["cell_of"], state["counts"]
        for cell, searcher_state in state["searchers"].items():
            self._searchers[cell].__dict__.update(searcher_state)
            self._searchers[cell].match_study()

    @property
    def studies(self) -> dict[str, optuna.Study]:
        return {c: s.study for c, s in self._searchers.items()}


def halving_rungs(max_t: int, grace_period: int, reduction_factor: int) -> list[int]:
    """The epochs at which successive halving judges a trial: ``grace_period * rf**k`` below
    ``max_t`` (Ray's ASHA rungs, without the one at ``max_t``, where a trial ends anyway)."""
    rungs, m = [], grace_period
    while m < max_t:
        rungs.append(m)
        m *= reduction_factor
    return rungs


# Ray 2.60's TuneController.stop_trial of a trial with no actor (a paused one) sets it TERMINATED
# but returns before marking it for the next experiment snapshot, which then still says PAUSED
# (seen in tests/sweeps/test_runner.py's halving sweep). The scheduler marks it through these.
TUNE_CONTROLLER_PRIVATE = ("_tune_controller", "_mark_trial_to_checkpoint")


def _mark_for_snapshot(tune_controller, trial) -> None:
    controller = getattr(tune_controller, TUNE_CONTROLLER_PRIVATE[0], tune_controller)
    mark = getattr(controller, TUNE_CONTROLLER_PRIVATE[1], None)
    if mark is not None:
        mark(trial)


class SyncHalvingCell:
    """Synchronous successive halving over one cell's ``size`` trials: every trial trains to a
    rung and waits there (Tune PAUSE: its checkpoint of that epoch is kept, its actor freed);
    when every trial of the cell has reached the rung or ended, the best
    ``max(1, floor(n / reduction_factor))`` of the ``n`` that reached it go on and the others end
    there (PRUNED in Optuna, ``stopped_early`` in the results). No trial is exempt: unlike Ray's
    asynchronous ASHA, the first trial to reach a rung waits for the rest. A trial that diverged at
    a rung ranks last there; ties go to the trial added first.

    All state is rebuilt from the trials' last results when Tune restores an experiment
    (:meth:`add`): a trial past a rung was promoted there, one whose last epoch is a rung waits
    (it is put back to PAUSED, not PENDING, so Tune does not start it), and a trial that ended at
    a rung keeps its value there. The promotions made before the kill are then made again, from
    the same values, because every trial promoted at a rung ranked above every one that was not.
    """

    def __init__(self, size: int, rungs: list[int], reduction_factor: int, metric: str, mode: str):
        self.size, self.rungs, self.rf = size, list(rungs), reduction_factor
        self.metric, self.sign = metric, (1.0 if mode == "max" else -1.0)
        self.trials: dict[str, Any] = {}  # trial id -> Trial, in the order added
        self.values: dict[int, dict[str, float]] = {m: {} for m in self.rungs}  # rung -> id -> value
        self.promoted: dict[int, set[str]] = {}  # decided rung -> ids that went on
        self.gone: set[str] = set()  # ids Tune reported ended (complete, removed, failed for good)

    def _value(self, result: dict) -> float:
        value = result.get(self.metric)
        if result.get("diverged") == 1.0 or value is None or not math.isfinite(float(value)):
            return -math.inf
        return self.sign * float(value)

    def add(self, trial) -> None:
        self.trials[trial.trial_id] = trial
        last = trial.last_result or {}
        epoch = int(last.get("epoch") or 0)
        for m in self.rungs:
            if m < epoch:
                self.values[m][trial.trial_id] = math.inf  # it went on: promoted there
            elif m == epoch:
                self.values[m][trial.trial_id] = self._value(last)
        if trial.status == "PENDING" and epoch in self.rungs and last.get("diverged") != 1.0:
            trial.set_status("PAUSED")  # restored while waiting at a rung: not Tune's to start

    def _ended(self, trial_id: str) -> bool:
        return trial_id in self.gone or self.trials[trial_id].status in ("TERMINATED", "ERROR")

    def waiting(self, trial) -> bool:
        """A paused trial that must not run yet: waiting at an undecided rung, or cut there."""
        epoch = int((trial.last_result or {}).get("epoch") or 0)
        return epoch in self.rungs and trial.trial_id not in self.promoted.get(epoch, ())

    def result(self, trial, result: dict) -> str:
        """Tune's decision for ``trial`` on ``result``."""
        epoch = int(result.get("epoch") or 0)
        if epoch not in self.rungs:
            return TrialScheduler.CONTINUE
        self.values[epoch][trial.trial_id] = self._value(result)
        if result.get("diverged") == 1.0:
            return TrialScheduler.CONTINUE  # it ends on its own, ranked last here
        if epoch not in self.promoted:
            return TrialScheduler.PAUSE  # until the rest of the cell reaches this rung
        return TrialScheduler.CONTINUE if trial.trial_id in self.promoted[epoch] else TrialScheduler.STOP

    def decide(self) -> list[str]:
        """Decide every rung that is complete, in order; return the ids of trials cut there that
        are still live (the caller stops them, or says STOP to the one reporting)."""
        cut = []
        if len(self.trials) < self.size:
            return cut
        order = {t: i for i, t in enumerate(self.trials)}  # ties: the trial added first
        for m in self.rungs:
            if m in self.promoted:
                continue
            reached = self.values[m]
            if not all(t in reached or self._ended(t) for t in self.trials):
                break
            ranked = sorted(reached, key=lambda t: (-reached[t], order[t]))
            keep = max(1, int(len(ranked) // self.rf))
            self.promoted[m] = set(ranked[:keep])
            cut += [t for t in ranked[keep:] if not self._ended(t)]
            logger.debug("successive halving at epoch %d: %d of %d go on", m, keep, len(ranked))
        return cut


class PerCellScheduler(FIFOScheduler):
    """Routes each trial to its own cell's successive halving (keyed by :func:`cell_of` its
    config): synchronous (:class:`SyncHalvingCell`, ``halving="sync"``) or Ray's asynchronous
    ASHA (``halving="async"``)."""

    def __init__(self, cells: list[str], metric: str, mode: str, max_t: int, grace_period: int,
                 reduction_factor: int, *, halving: str, joint: bool = False, cell_size: int = 0):
        super().__init__()
        self._metric, self._mode, self._joint = metric, mode, joint
        if halving == "sync":
            rungs = halving_rungs(max_t, grace_period, reduction_factor)
            self._sync = {cell: SyncHalvingCell(cell_size, rungs, reduction_factor, metric, mode)
                          for cell in cells}
            self._by_cell = {}
        else:
            self._sync = {}
            self._by_cell = {cell: AsyncHyperBandScheduler(time_attr="training_iteration", metric=metric,
                                                            mode=mode, max_t=max_t, grace_period=grace_period,
                                                            reduction_factor=reduction_factor)
                             for cell in cells}
        self._busy = False  # deciding: the stops it makes call back into on_trial_remove

    def _cell(self, trial) -> SyncHalvingCell | None:
        return self._sync.get(cell_of(trial.config, self._joint))

    def _decide(self, tune_controller, cell: SyncHalvingCell, current=None) -> bool:
        """Decide ``cell``'s complete rungs and stop the trials cut there; True when ``current``
        (the trial reporting) is among them, for the caller to say STOP."""
        if self._busy:
            return False
        self._busy = True
        try:
            stop_current = False
            for trial_id in cell.decide():
                trial = cell.trials[trial_id]
                if trial is current:
                    stop_current = True
                else:
                    tune_controller.stop_trial(trial)
                    _mark_for_snapshot(tune_controller, trial)
            return stop_current
        finally:
            self._busy = False

    def choose_trial_to_run(self, tune_controller):
        for cell in self._sync.values():  # a restore, or a trial ended: rungs may be complete now
            self._decide(tune_controller, cell)
        for trial in tune_controller.get_trials():
            if trial.status == "PENDING":
                return trial
        for trial in tune_controller.get_trials():
            if trial.status == "PAUSED":
                cell = self._cell(trial)
                if cell is None or not cell.waiting(trial):
                    return trial
        return None

    def _for(self, trial) -> TrialScheduler:
        return self._by_cell.get(cell_of(trial.config, self._joint), self._fallback)

    @property
    def _fallback(self) -> TrialScheduler:
        return next(iter(self._by_cell.values())) if self._by_cell else FIFOScheduler()

    def set_search_properties(self, metric, mode, **spec) -> bool:
        if (metric, mode) == (self._metric, self._mode):  # TuneConfig names the metric it was built with
            return True
        if self._sync:
            return False
        return all(s.set_search_properties(metric, mode, **spec) for s in self._by_cell.values())

    def on_trial_add(self, tune_controller, trial):
        if self._sync:
            if (cell := self._cell(trial)) is not None:
                cell.add(trial)
        else:
            self._for(trial).on_trial_add(tune_controller, trial)

    def _ended(self, tune_controller, trial) -> None:
        if (cell := self._cell(trial)) is not None:
            cell.gone.add(trial.trial_id)
            self._decide(tune_controller, cell)

    def on_trial_error(self, tune_controller, trial):
        # Tune calls this on a failure it retries too (the trial is then PENDING again): only a
        # trial that stays ERROR has ended, which SyncHalvingCell reads off its status.
        if not self._sync:
            self._for(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        if (cell := self._cell(trial)) is not None:
            decision = cell.result(trial, result)
            if decision == TrialScheduler.PAUSE and self._decide(tune_controller, cell, current=trial):
                return TrialScheduler.STOP
            if decision == TrialScheduler.PAUSE and int(result.get("epoch") or 0) in cell.promoted:
                return TrialScheduler.CONTINUE  # its report completed the rung, and it goes on
            return decision
        if self._sync:
            return TrialScheduler.CONTINUE
        return self._for(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        if self._sync:
            self._ended(tune_controller, trial)
        else:
            self._for(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        if self._sync:
            self._ended(tune_controller, trial)
        else:
            self._for(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        if self._sync:
            return "; ".join(f"{cell}: synchronous halving, rungs decided {sorted(c.promoted)}"
                             for cell, c in self._sync.items())
        return "; ".join(f"{cell}: {s.debug_string()}" for cell, s in self._by_cell.items())


# --------------------------------------------------------------------------------------------
# Building them from the config


def reference_points(cfg: SweepConfig, arm: str | None) -> list[dict[str, Any]]:
    """Joint mode only (``search.reference_point``): the original experiment's values
    (``trainable.train.DEFAULTS``: lr 1e-3, batch 100, no dropout), clipped into the search space."""
    if not cfg.search.reference_point:
        return []
    point: dict[str, Any] = {}
    for p in cfg.search.space:
        v = DEFAULTS[p.name]
        if p.choices is not None:
            v = min(p.choices, key=lambda c: abs(c - v))
        else:
            v = min(max(v, p.low), p.high)
        point[p.name] = int(v) if p.is_int else float(v)
    return [{"arm": arm, **point}] if arm else [point]


def _replicates(cfg: SweepConfig, replicates: Iterable[int] | None) -> list[int]:
    return list(range(cfg.search.replicates) if replicates is None else replicates)


def make_searcher(cfg: SweepConfig, storage: optuna.storages.BaseStorage | None, experiment_id: str = "x",
                  mode: str = "max", replicates: Iterable[int] | None = None) -> StratifiedSearch:
    """One ArmOptunaSearch per cell (arm x replicate, or replicate in joint mode) of the given
    ``replicates`` (default: all) under a StratifiedSearch that gives every cell
    ``search.num_samples`` trials. The cells of a replicate share its design and seeds."""
    s = cfg.search
    settings = {arm.name: arm.settings(cfg.train) for arm in cfg.arms}
    distributions = optuna_distributions(s.space)
    common = dict(metric=s.metric, mode=mode, storage=storage, arm_settings=settings, search_seed=s.seed,
                  objective=s.objective)
    searchers = {}
    for r in _replicates(cfg, replicates):
        extra = {"epochs": cfg.max_epochs(), **seeds.split_keys(cfg, r)}
        if s.mode == JOINT:
            space = {"arm": optuna.distributions.CategoricalDistribution([a.name for a in cfg.arms]),
                     **distributions}
            points = [p for a in cfg.arms for p in reference_points(cfg, a.name)]
            cells = {cell_of({"replicate": r}, joint=True): (space, None, points)}
        else:
            cells = {cell_of({"arm": a.name, "replicate": r}): (dict(distributions), a.name, [])
                     for a in cfg.arms}
        for cell, (space, fixed_arm, points) in cells.items():
            design = sobol_design(space, s.startup_trials, seeds.design_seed(s.seed, r))
            tpe = optuna.samplers.TPESampler(seed=seeds.sampler_seed(s.seed, r),
                                             n_startup_trials=s.startup_trials)
            searchers[cell] = ArmOptunaSearch(
                space, fixed_arm=fixed_arm, replicate=r, extra=extra,
                study_name=study_name(cfg, experiment_id, cell), sampler=DesignSampler(design, tpe),
                points_to_evaluate=points or None, **common)
    return StratifiedSearch(searchers, per_cell=s.num_samples, metric=s.metric, mode=mode)


def total_search_trials(cfg: SweepConfig, replicates: Iterable[int] | None = None) -> int:
    cells = len(cfg.arms) if cfg.search.mode == "stratified" else 1
    return cfg.search.num_samples * cells * len(_replicates(cfg, replicates))


def make_scheduler(cfg: SweepConfig, replicates: Iterable[int] | None = None):
    """Successive halving per cell (arm x replicate, or replicate when joint) toward
    ``search.max_epochs``, synchronous or asynchronous (``search.early_stopping.halving``); FIFO
    when early stopping is off."""
    es = cfg.search.early_stopping
    if not es.enabled:
        return FIFOScheduler()
    joint = cfg.search.mode == JOINT
    cells = [cell_of({"arm": a.name, "replicate": r}, joint) for r in _replicates(cfg, replicates)
             for a in (cfg.arms[:1] if joint else cfg.arms)]
    return PerCellScheduler(cells, metric=cfg.search.metric, mode="max", max_t=cfg.max_epochs(),
                            grace_period=es.grace_period, reduction_factor=es.reduction_factor, joint=joint,
                            halving=es.halving, cell_size=cfg.search.num_samples)
