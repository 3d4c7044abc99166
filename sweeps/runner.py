"""Run a sweep: for each batch of replicates, the search stage (Tune + Optuna, per arm and
replicate), then the confirmation stage (each replicate's best config per arm x K seeds); a
sequential plan (``search.replicates: {min, max, budget_minutes}``) looks after each batch from
``min`` on and stops when decided. Then the report.

Everything is checked before anything starts (``validate``, once per invocation); the experiment
directory lives in ``sweeps.experiment``, the Optuna studies in ``sweeps.studies``, Ray in
``sweeps.ray_session``; this module keeps the stages, their interruption and resume, and Tune's
pickling set-up.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.contract import (
    CONFIRM,
    FINAL_LOOK_FILE,
    ORIGINAL,
    REPLICATE_DIR_PREFIX,
    REPORT_DIR,
    RUNS_FILE,
    SEARCH,
)
from sweeps import seeds, trackers, trust
from sweeps.completion import (
    CompletionRecords,
    install_atomic_sync,
    restore_snapshot,
    roll_back_unfinished_results,
    trust_completion_records,
)
from sweeps.config import ConfigError, Replicates, SweepConfig
from sweeps.experiment import Experiment, redact
from sweeps.prepare import (
    RunOptions,
    SweepFailed,
    SweepInterrupted,
    check_directory,
    data_info,
    final_look_record,
    load_data,
    open_experiment,
    validate,
)
from sweeps.ray_session import quiet_logs, start_ray, wait_for_resources
from sweeps.search import chosen_epochs, make_scheduler, make_searcher, stopped_early, total_search_trials
from sweeps.seeds import cell_of
from sweeps.studies import optuna_storage, optuna_url

__all__ = ["RunOptions", "SweepFailed", "SweepInterrupted", "run_sweep", "write_report"]

# Save Tune's experiment state at least every second. Tune's adaptive period (10 s or more) is not
# enough for --resume after a killed driver: a search trial created after the last snapshot is
# unknown to the restored experiment (its study trial is failed and a new trial runs in its place),
# which the SIGKILL tests of tests/sweeps/test_runner.py catch. A trial's end is safe either way
# (CompletionRecords).
EXPERIMENT_CHECKPOINT_S = "1"

# Warm actors: a trial's actor (process, TensorFlow import, dataset) runs the next trial. A
# function trainable reports synchronously, so a trial that ends or that ASHA stops is parked in
# tune.report when Tune resets the actor (``session.finish()`` releases it); see README.md.
REUSE_ACTORS = True


# --------------------------------------------------------------------------------------------
# Stages


# Short trial directory names, ``<arm>_<trial_id>`` instead of every config value. A bound
# ``str.format`` (not a function of this module) because Tune pickles it into every trial's
# state: ExperimentAnalysis and Tuner.restore then read the results without this project.
trial_dirname = "{0.config[arm]}_{0.trial_id}".format


# Tune pickles the searcher, the scheduler and the callbacks into ``<stage>/tuner.pkl``.
# :func:`pickle_project_by_value` stores this project's classes there by value, so
# ``tune.Tuner.restore(path, trainable=train_cnn).get_results()`` also works where the project is
# not installed (any function named ``train_cnn`` will do as the trainable). The modules: the
# searcher and scheduler (sweeps.search, using sweeps.seeds), the progress callback
# (sweeps.progress), the tracker callbacks (sweeps.trackers) and the completion records
# (sweeps.completion).
PICKLED_BY_VALUE = ("sweeps.search", "sweeps.seeds", "sweeps.progress", "sweeps.trackers",
                    "sweeps.completion")


def pickle_project_by_value() -> None:
    """Make Ray's cloudpickle store this project's searcher, scheduler and callback classes by
    value (their code, not an import path), so a stage's ``tuner.pkl`` loads without the project.
    (Resuming a sweep then runs these classes as they were when the stage started.)"""
    import importlib

    from ray import cloudpickle

    for name in PICKLED_BY_VALUE:
        cloudpickle.register_pickle_by_value(importlib.import_module(name))


def _run_config(cfg: SweepConfig, exp: Experiment, batch: Batch, total: int, budget_epochs: int):
    from ray import tune

    from sweeps.progress import ProgressTable

    pickle_project_by_value()  # tuner.pkl readable without this project
    storage, name = batch.tune_location(exp)
    return tune.RunConfig(
        name=name, storage_path=storage, verbose=0,
        callbacks=[ProgressTable(batch.label, total, budget_epochs, arms=[a.name for a in cfg.arms]),
                   CompletionRecords(),
                   *trackers.make_callbacks(cfg, exp)],  # TensorBoard, MLflow, W&B
        failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
    )


def _trainable(cfg: SweepConfig, dataset, options: RunOptions):
    from ray import tune

    from trainable import train_cnn

    fn = tune.with_parameters(train_cnn, data=dataset, callbacks=tuple(options.callbacks))
    resources = {"cpu": cfg.resources.cpus_per_trial}
    if cfg.resources.gpus_per_trial:
        resources["gpu"] = cfg.resources.gpus_per_trial
    return tune.with_resources(fn, resources)


# --------------------------------------------------------------------------------------------
# Batches: which replicates one Tune experiment of a stage holds, and where it lives


@dataclass(frozen=True)
class Batch:
    """The replicates one Tune experiment of a stage runs. The first batch of a sweep (every
    replicate of a fixed design, or the first ``min`` of a sequential plan) is ``<exp>/<stage>/``;
    each later replicate ``r`` of a sequential plan is ``<exp>/<stage>/replicate-<r>/``."""

    stage: str
    replicates: tuple[int, ...]
    first: bool

    @property
    def label(self) -> str:
        if self.first:
            return self.stage
        return f"{self.stage} {REPLICATE_DIR_PREFIX}{self.replicates[0]}"

    def tune_location(self, exp: Experiment) -> tuple[str, str]:
        """(storage_path, name) of this batch's Tune experiment."""
        if self.first:
            return exp.path, self.stage
        return exp.join(self.stage), f"{REPLICATE_DIR_PREFIX}{self.replicates[0]}"

    def path(self, exp: Experiment) -> str:
        storage, name = self.tune_location(exp)
        return f"{storage.rstrip('/')}/{name}"


def replicate_batches(cfg: SweepConfig) -> list[tuple[int, ...]]:
    """The replicates in the order they run: a fixed design's R together; a sequential plan's first
    ``min`` together, then one at a time up to ``max`` (each followed by a look)."""
    plan = cfg.search.replicates if cfg.search.enabled else Replicates(1)
    first = tuple(range(plan.min if plan.sequential else int(plan)))
    return [first] + [(r,) for r in range(len(first), int(plan))]


# --------------------------------------------------------------------------------------------
# Interruptions: SIGINT (Ctrl-C), a second SIGINT and SIGTERM end the sweep the same way


class _StopRequest:
    """What the signal handler saw: the first stop signal's name, and whether Tune is running a stage."""

    signal: str | None = None
    in_fit: bool = False


STOP = _StopRequest()


def _on_stop_signal(signum, frame) -> None:
    if STOP.signal is not None:
        return  # the first signal's stop is under way (Tune saving, the stage unwinding): let it finish
    STOP.signal = signal.Signals(signum).name
    if STOP.in_fit:
        if callable(signal.getsignal(signal.SIGUSR1)):
            # Tune's own graceful stop (its handler of SIGUSR1): the loop ends, the experiment state
            # is saved with the unfinished trials still unfinished, and fit() returns.
            os.kill(os.getpid(), signal.SIGUSR1)
            return
    raise KeyboardInterrupt  # outside a stage (or before Tune listens): stop right here


@contextmanager
def stop_signals():
    """SIGINT and SIGTERM stop the sweep gracefully while this is active: during a stage, Tune
    saves its state and returns (the stage then raises SweepInterrupted); elsewhere,
    KeyboardInterrupt. Tune's own SIGINT handler stays off (``TUNE_DISABLE_SIGINT_HANDLER``),
    and Ray's SIGTERM handler (``sys.exit`` in the middle of Tune: a C++ abort) is replaced."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    old_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    STOP.signal, STOP.in_fit = None, False
    try:
        yield install_stop_handlers
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if old_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = old_env


def install_stop_handlers() -> None:
    """(Re)install the handlers: after ``ray.init``, which sets its own SIGTERM handler."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _on_stop_signal)


# --------------------------------------------------------------------------------------------
# Stages


def _ended(trial, stage: str, cfg: SweepConfig) -> bool:
    """Whether a trial of a finished ``fit`` has really ended: it errored, or its last epoch is
    recorded (its planned last epoch, a divergence, or in a search with early stopping a
    scheduler stop). Tune's TERMINATED alone is not enough: its stop marks pending trials so."""
    if trial.status == "ERROR":
        return True
    if trial.status != "TERMINATED":
        return False
    last = trial.last_result or {}
    if last.get("diverged") == 1.0:
        return True
    epoch, target = last.get("epoch"), last.get("target_epochs")
    if epoch is None or target is None:
        return False
    if epoch >= target:
        return True
    return stage == SEARCH and cfg.search.early_stopping.enabled


def _interrupted(batch: Batch, cfg: SweepConfig, detail: str) -> SweepInterrupted:
    return SweepInterrupted(f"{batch.label} stage {detail}; continue with: python sweeps/run.py --name "
                            f"{cfg.name} --storage-path {redact(cfg.storage_path)} --resume")


def _fit(cfg: SweepConfig, exp: Experiment, batch: Batch, trainable, make_tuner, total: int):
    """Fit one batch of a stage, restoring it if it was started before; raise SweepInterrupted if
    a stop signal came or any trial has not ended (see :func:`_ended`)."""
    from ray import tune

    path = batch.path(exp)
    trust.install()  # Tune signs its experiment state as it saves it
    install_atomic_sync()  # and copies it, and every trial's logs, to local storage whole or not at all
    if tune.Tuner.can_restore(path):
        try:
            if not exp.remote:
                restore_snapshot(path)  # Tune's own copy may be cut short by a kill
        except Exception as exc:  # a damaged copy: the verification below decides
            print(f"warning: {redact(path)}: the last snapshot could not be put back "
                  f"({exc.__class__.__name__})", file=sys.stderr, flush=True)
        trust.verify_dir(path)  # before anything in it is unpickled
        try:
            if trust_completion_records(path):
                trust.sign_dir(path)  # our own edit of the state just verified
            if cut := roll_back_unfinished_results(path):  # each epoch logged once (sweeps.completion)
                print(f"{batch.label}: {cut} unfinished trial(s) had logged epochs after their last saved "
                      f"checkpoint; those epochs are trained again", flush=True)
            tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        except Exception as exc:  # a damaged experiment state: say so instead of a traceback
            first_line = str(exc).splitlines()[0][:120] if str(exc) else ""
            raise ConfigError(f"{redact(path)}: cannot restore the {batch.label} stage "
                              f"({exc.__class__.__name__}: {first_line}); start a new sweep with "
                              f"--name") from None
    else:
        tuner = make_tuner()
        trust.sign_file(f"{path}/tuner.pkl")  # written by the Tuner, straight into the storage path
    STOP.in_fit = True
    try:
        results = tuner.fit()
    finally:
        STOP.in_fit = False
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGUSR1"):
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # Tune's handler belongs to the run that ended
    if STOP.signal:
        raise _interrupted(batch, cfg, f"stopped by {STOP.signal}")
    trials = results._experiment_analysis.trials
    ended = sum(_ended(t, batch.stage, cfg) for t in trials)
    if len(trials) < total or ended < total:
        raise _interrupted(batch, cfg, f"stopped with {ended}/{total} trials done")
    return results


def run_search(cfg: SweepConfig, exp: Experiment, trainable, exp_id: str, batch: Batch | None = None):
    from ray import tune

    batch = batch or Batch(SEARCH, replicate_batches(cfg)[0], True)
    reps = batch.replicates
    total = total_search_trials(cfg, replicates=reps)

    def make_tuner():
        searcher = make_searcher(cfg, optuna_storage(optuna_url(cfg, exp)), exp_id, replicates=reps)
        return tune.Tuner(
            trainable, param_space=cfg.base_trial_config(),
            tune_config=tune.TuneConfig(
                # metric and mode here too, for ResultGrid.get_best_result()
                search_alg=searcher, metric=cfg.search.metric, mode="max", reuse_actors=REUSE_ACTORS,
                trial_dirname_creator=trial_dirname, scheduler=make_scheduler(cfg, replicates=reps),
                num_samples=total, max_concurrent_trials=cfg.resources.max_concurrent_trials),
            run_config=_run_config(cfg, exp, batch, total, total * cfg.max_epochs()))

    return _fit(cfg, exp, batch, trainable, make_tuner, total)


def best_configs(cfg: SweepConfig, results, replicates=None) -> dict[str, dict[str, Any]]:
    """Each cell's (arm x replicate) best search trial by the objective; trials stopped early or
    diverged are out. With ``objective: best`` the chosen config trains to its best epoch.
    ``replicates``: the cells that must be there (default: every replicate of the sweep)."""
    best: dict[str, tuple[float, dict]] = {}
    for r in results:
        m = r.metrics or {}
        if r.error is not None or m.get("diverged") == 1.0 or stopped_early(m):
            continue
        score, arm = m.get(cfg.search.metric), r.config.get("arm")
        if score is None or arm is None:
            continue
        cell = cell_of(r.config)
        if cell not in best or score > best[cell][0]:
            config = {**r.config, "source_trial": m.get("trial_id", "")}
            epochs = chosen_epochs(m, cfg.search.objective)  # with objective best: its best epoch
            if epochs:
                config["epochs"] = epochs
            best[cell] = (score, config)
    reps = range(int(cfg.search.replicates)) if replicates is None else replicates
    wanted = [cell_of({"arm": a.name, "replicate": rep}) for rep in reps for a in cfg.arms]
    missing = [c for c in wanted if c not in best]
    if missing:
        raise SweepFailed(f"{', '.join(missing)}: no finished, non-diverged search trial to confirm; "
                          f"widen search.space or raise search.num_samples")
    return {cell: config for cell, (_, config) in best.items()}


def original_config(cfg: SweepConfig, arm, chosen: dict[str, Any]) -> dict[str, Any]:
    """The original experiment's configuration for ``arm`` in ``chosen``'s replicate: the train
    settings (lr, batch size, dropout: no searched value) and the most epochs a search trial may
    train (``train.epochs``, at most ``search.max_epochs``), with the replicate's data split."""
    return {**chosen, **cfg.base_trial_config(), **arm.settings(cfg.train),
            "epochs": min(cfg.train.epochs, cfg.max_epochs()), "source_trial": ""}


def confirm_configs(cfg: SweepConfig, best: dict[str, dict] | None, replicates=None) -> list[dict[str, Any]]:
    """Confirmation trials: each replicate's chosen config per arm x ``confirm.seeds`` seeds; seed k of
    replicate r is the same for every arm (paired) and never a search seed. Then, with
    ``confirm.original_seeds``, that many runs per arm and replicate at the original configuration
    (:func:`original_config`; ``"stage": ORIGINAL``, their own paired seeds): a secondary estimand."""
    base = cfg.base_trial_config()
    out = []
    reps = (range(int(cfg.search.replicates)) if replicates is None else replicates) if best else (0,)
    for rep in reps:
        for arm in cfg.arms:
            chosen = dict(best[cell_of({"arm": arm.name, "replicate": rep})]) if best \
                else {**base, **arm.settings(cfg.train), "replicate": 0, **seeds.split_keys(cfg, 0)}
            for k in range(cfg.confirm.seeds):
                out.append({**chosen, "seed": seeds.confirm_trial_seed(cfg.confirm.seed, rep, k),
                            "stage": CONFIRM, "evaluate_test": True})
            original = original_config(cfg, arm, chosen) if best else {}
            for k in range(cfg.confirm.original_seeds if best else 0):
                out.append({**original, "evaluate_test": True, "stage": ORIGINAL,
                            "seed": seeds.original_trial_seed(cfg.confirm.seed, rep, k)})
    return out


def run_confirm(cfg: SweepConfig, exp: Experiment, trainable, best: dict[str, dict] | None,
                batch: Batch | None = None):
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    batch = batch or Batch(CONFIRM, replicate_batches(cfg)[0], True)
    configs = confirm_configs(cfg, best, batch.replicates)

    def make_tuner():
        return tune.Tuner(
            trainable,
            # Every key must exist in param_space; each point then replaces all the values.
            param_space={k: v for c in configs for k, v in c.items()},
            tune_config=tune.TuneConfig(
                num_samples=len(configs), trial_dirname_creator=trial_dirname, reuse_actors=REUSE_ACTORS,
                metric="val_accuracy", mode="max",  # for ResultGrid.get_best_result()
                search_alg=BasicVariantGenerator(points_to_evaluate=configs),
                max_concurrent_trials=cfg.resources.max_concurrent_trials),
            run_config=_run_config(cfg, exp, batch, len(configs), sum(int(c["epochs"]) for c in configs)))

    return _fit(cfg, exp, batch, trainable, make_tuner, len(configs))


def _search_results(exp: Experiment, trainable, batch: Batch):
    from ray import tune

    path = batch.path(exp)
    if not tune.Tuner.can_restore(path):
        return None
    trust.verify_dir(path)  # before anything in it is unpickled
    return tune.Tuner.restore(path, trainable=trainable).get_results()


# --------------------------------------------------------------------------------------------
# Replicates until decided


def look(cfg: SweepConfig, exp: Experiment, final: bool, final_look: dict | None = None) -> dict:
    """The sequential look after the completed replicate pairs (``analysis.sequential.look`` on the
    loaded results). Looks are a deterministic function of the completed pairs, so a resumed
    sweep repeats the earlier looks' boundaries and spends no alpha twice."""
    from analysis import sequential
    from analysis.load import load_results

    plan = sequential.plan_from_config(cfg.to_dict())
    if final_look is not None:  # the sweep's final-look.json, as final_look_record read it
        plan = sequential.with_final_look(plan, final_look)
    trials = load_results([_local_copy(exp)]).trials
    return sequential.look(trials, plan, margin_points=cfg.analysis.equivalence_margin,
                           metric=cfg.analysis.primary, final=final)


def look_line(decision: dict) -> str:
    """One line for a look's decision (``analysis.sequential.look``'s dict)."""
    head = (f"look {decision.get('look', '?')}/{decision.get('looks_planned', '?')} after "
            f"{decision.get('replicates', '?')} replicate pair(s): {decision.get('decision')}")
    if decision.get("winner"):
        head += f" ({decision['winner']})"
    parts = [head]
    diff, ci, level = decision.get("difference"), decision.get("ci"), decision.get("ci_level")
    if isinstance(diff, (int, float)):
        pair = f" ({decision['arm_a']} - {decision['arm_b']})" if decision.get("arm_a") else ""
        text = f"difference{pair} {diff:+.2f} points"
        if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
            shown = f"{level:.1%} " if isinstance(level, float) else ""
            text += f", {shown}CI [{ci[0]:+.2f}, {ci[1]:+.2f}]"
        parts.append(text)
    if isinstance(decision.get("p_value"), (int, float)):
        parts.append(f"p {decision['p_value']:.3g}")
    boundary = decision.get("boundary")
    if isinstance(boundary, dict):
        shown = [f"{key} {boundary[key]:.3g}" for key in ("nominal_alpha", "critical_t")
                 if isinstance(boundary.get(key), (int, float))]
        if shown:
            parts.append("boundary " + ", ".join(shown))
    if decision.get("reason"):
        parts.append(str(decision["reason"]))
    return "; ".join(parts)


def _sweep_started(exp: Experiment) -> float:
    """When the sweep first started (``runs.jsonl``), as a Unix time; now if unknown."""
    from datetime import datetime

    text = exp.read_text(RUNS_FILE) or ""
    for line in text.splitlines():
        try:
            return datetime.strptime(json.loads(line)["time"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
        except (ValueError, KeyError, TypeError):
            continue
    return time.time()


def _over_budget(cfg: SweepConfig, started: float, completed: int, now: float) -> str | None:
    """Why the next replicate is not started (it would end after ``budget_minutes``), else None.
    Its cost is estimated as the mean wall time per completed replicate since the sweep started."""
    budget = cfg.search.replicates.budget_minutes
    if budget is None or completed == 0:
        return None
    elapsed = now - started
    per_replicate = elapsed / completed
    if elapsed + per_replicate <= budget * 60:
        return None
    return (f"budget: another replicate (about {per_replicate / 60:.1f} min) would end at "
            f"{(elapsed + per_replicate) / 60:.1f} of search.replicates.budget_minutes {budget:g}; stopping "
            f"at {completed} replicates")


def _started(exp: Experiment, batch: Batch) -> bool:
    from ray import tune

    return tune.Tuner.can_restore(batch.path(exp))


def _run_stages(cfg: SweepConfig, options: RunOptions, exp: Experiment, trainable, exp_id: str,
                clock=time.time) -> int:
    """Search and confirm each batch of replicates in turn (a sequential plan looks after each
    batch from ``min`` on and stops when decided); returns the number of failed confirmation trials."""
    confirming = cfg.confirm.enabled and not options.skip_confirm
    if not cfg.search.enabled:
        return run_confirm(cfg, exp, trainable, None).num_errors if confirming else 0
    plan = cfg.search.replicates
    started = _sweep_started(exp)
    failed = 0
    batches = replicate_batches(cfg)
    for i, reps in enumerate(batches):
        first = i == 0
        search = Batch(SEARCH, reps, first)
        if not first:
            if not confirming:
                print(f"search.replicates: a sequential plan looks at confirmed replicates; without the "
                      f"confirmation it stops at {reps[0]}", flush=True)
                break
        if options.confirm_only:
            results = _search_results(exp, trainable, search)
            if results is None:
                break
        else:
            results = run_search(cfg, exp, trainable, exp_id, search)
        best = best_configs(cfg, results, reps)
        for cell, config in sorted(best.items()):
            print(f"best {cell}: lr={config.get('lr'):.3g} epochs={config.get('epochs')}", flush=True)
        if not confirming:
            continue
        failed += run_confirm(cfg, exp, trainable, best, Batch(CONFIRM, reps, first)).num_errors
        if plan.sequential:
            completed = reps[-1] + 1
            # The budget's stop depends on the clock alone, so it is decided before the look: a look
            # after which no replicate can be added is the final one and spends the alpha left
            # (recorded first, for the report and for --resume). A replicate already started (a
            # resumed sweep) is finished whatever the budget says.
            nxt = batches[i + 1] if i + 1 < len(batches) else None
            recorded, why = final_look_record(exp), None
            if recorded is None and nxt is not None and not _started(exp, Batch(SEARCH, nxt, False)):
                why = _over_budget(cfg, started, completed, clock())
                if why:
                    recorded = {"replicates": completed, "reason": why}
                    exp.write_text(FINAL_LOOK_FILE, json.dumps(recorded) + "\n")
            last = recorded is not None and recorded["replicates"] <= completed
            decision = look(cfg, exp, final=nxt is None or last, final_look=recorded)
            print(look_line(decision), flush=True)
            if decision.get("decision") in ("winner", "equivalent"):
                break
            if last:
                print(why or f"the look at R = {completed} was the last ({FINAL_LOOK_FILE}: "
                      f"{recorded['reason']}); its alpha is spent, so no replicate is added", flush=True)
                break
    return failed


def run_sweep(cfg: SweepConfig, options: RunOptions = RunOptions(), dataset=None, *,
              exp: Experiment | None = None, validated: bool = False) -> str:
    """Run (or resume) a whole sweep; returns the experiment directory.

    ``exp`` and ``validated``: the caller built the Experiment and ran ``validate`` already (the CLI
    does, before Ray is imported), so neither the checks nor the database connection repeat.
    Raises ConfigError (bad input; nothing written), SweepInterrupted or SweepFailed.
    """
    exp = Experiment(cfg.storage_path, cfg.name) if exp is None else exp
    if not validated:
        validate(cfg, options, exp)
    with stop_signals() as reinstall:
        if reinstall:
            reinstall()
        quiet_logs()
        dataset = load_data(cfg) if dataset is None else dataset
        os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = EXPERIMENT_CHECKPOINT_S
        start_ray(cfg)
        if reinstall:
            reinstall()  # ray.init set its own SIGTERM handler
        wait_for_resources(cfg)
        with exp.lock():  # the first write: everything above only reads
            # again, now that no other run can change the directory (no database connection this time)
            check_directory(cfg, options, exp, database=False)
            exp_id = open_experiment(cfg, options, exp, dataset)
            info = data_info(dataset)
            plan = cfg.search.replicates if cfg.search.enabled else Replicates(1)
            reps = f"{plan.min}..{int(plan)} replicates (sequential)" if plan.sequential else \
                f"{int(plan)} replicate(s)"
            print(f"sweep '{cfg.name}': {len(cfg.arms)} arms ({', '.join(a.name for a in cfg.arms)}) x "
                  f"{reps}, data {info['source']} (train/val/test {info['train']}/{info['val']}/"
                  f"{info['test']}), results in {exp}", flush=True)
            for warning in info["warnings"]:
                print(f"warning: {warning}", file=sys.stderr, flush=True)
            trainable = _trainable(cfg, dataset, options)
            failed = _run_stages(cfg, options, exp, trainable, exp_id)
            if options.report:
                write_report(exp)
    if failed:
        raise SweepFailed(f"{failed} confirmation trial(s) failed after {cfg.max_failures} retries; the "
                          f"report leaves them out (error.txt in {exp}/confirm/*/)")
    return exp.path


def _local_copy(exp: Experiment) -> str:
    """A local directory holding the experiment: itself, or a fresh copy of a remote one inside a
    directory this tool made (``Experiment.local_copy``: never a user's own ``results/<name>``)."""
    if not exp.remote:
        return exp.path
    return str(exp.local_copy("results") / "experiment")


def write_report(exp: Experiment) -> str | None:
    """Write the analysis report into ``<exp>/report`` (a local dir when ``exp`` is remote)."""
    from analysis.report import write_report as _write

    if not exp.remote:
        paths = _write([exp.path], exp.join(REPORT_DIR))
        print(f"report: {paths['md']}", flush=True)
        return exp.join(REPORT_DIR)
    # analysis reads local files: copy the experiment down first, into a directory of ours
    local = _local_copy(exp)
    out = str(Path(local).parent / REPORT_DIR)
    old = os.umask(0o077)  # the report of a copy is user-only, as the copy is
    try:
        paths = _write([local], out)
    finally:
        os.umask(old)
    print(f"report: {paths['md']}", flush=True)
    return out
