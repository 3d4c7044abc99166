"""Run a sweep: the search stage (Tune + Optuna, per arm and replicate), then the confirmation
stage (each replicate's best config per arm x K seeds), then the report.

Everything is checked before anything starts (``validate``); the experiment directory lives
in ``sweeps.experiment``, the Optuna studies in ``sweeps.studies``, Ray in ``sweeps.ray_session``;
this module keeps the two stages and Tune's pickling set-up.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from analysis.contract import CONFIRM, REPORT_DIR, SEARCH
from sweeps import seeds, trackers, trust
from sweeps.config import ConfigError, SweepConfig
from sweeps.experiment import Experiment, redact
from sweeps.prepare import (
    RunOptions,
    SweepFailed,
    SweepInterrupted,
    check_directory,
    data_info,
    load_data,
    open_experiment,
    validate,
)
from sweeps.ray_session import quiet_logs, start_ray, wait_for_resources
from sweeps.search import make_scheduler, make_searcher, stopped_early, total_search_trials
from sweeps.seeds import cell_of
from sweeps.studies import optuna_storage, optuna_url

__all__ = ["RunOptions", "SweepFailed", "SweepInterrupted", "run_sweep", "write_report"]

# Save Tune's experiment state at least every second, so a driver killed seconds after a trial
# finished does not lose it on --resume (Tune's default period is 10 s or more).
EXPERIMENT_CHECKPOINT_S = "1"


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
# (sweeps.progress) and the tracker callbacks (sweeps.trackers).
PICKLED_BY_VALUE = ("sweeps.search", "sweeps.seeds", "sweeps.progress", "sweeps.trackers")


def pickle_project_by_value() -> None:
    """Make Ray's cloudpickle store this project's searcher, scheduler and callback classes by
    value (their code, not an import path), so a stage's ``tuner.pkl`` loads without the project.
    (Resuming a sweep then runs these classes as they were when the stage started.)"""
    import importlib

    from ray import cloudpickle

    for name in PICKLED_BY_VALUE:
        cloudpickle.register_pickle_by_value(importlib.import_module(name))


def _run_config(cfg: SweepConfig, exp: Experiment, stage: str, total: int, budget_epochs: int):
    from ray import tune

    from sweeps.progress import ProgressTable

    pickle_project_by_value()  # tuner.pkl readable without this project
    return tune.RunConfig(
        name=stage, storage_path=exp.path, verbose=0,
        callbacks=[ProgressTable(stage, total, budget_epochs, arms=[a.name for a in cfg.arms]),
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


def _fit(cfg: SweepConfig, exp: Experiment, stage: str, trainable, make_tuner, total: int):
    """Fit a stage, restoring it if it was started before; raise if it ends unfinished."""
    from ray import tune

    path = exp.join(stage)
    trust.install()  # Tune signs its experiment state as it saves it
    if tune.Tuner.can_restore(path):
        trust.verify_dir(path)  # before anything in it is unpickled
        try:
            tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        except Exception as exc:  # a damaged experiment state: say so instead of a traceback
            raise ConfigError(f"{redact(path)}: cannot restore the {stage} stage ({exc.__class__.__name__}: "
                              f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); start a new sweep "
                              f"with --name") from None
    else:
        tuner = make_tuner()
        trust.sign_file(f"{path}/tuner.pkl")
    results = tuner.fit()
    finished = results.num_terminated + results.num_errors
    if len(results) < total or finished < total:
        raise SweepInterrupted(f"{stage} stage stopped with {finished}/{total} trials done; continue with: "
                               f"python sweeps/run.py --name {cfg.name} --storage-path "
                               f"{redact(cfg.storage_path)} --resume")
    return results


def run_search(cfg: SweepConfig, exp: Experiment, trainable, exp_id: str):
    from ray import tune

    total = total_search_trials(cfg)

    def make_tuner():
        searcher = make_searcher(cfg, optuna_storage(optuna_url(cfg, exp)), exp_id)
        return tune.Tuner(
            trainable, param_space=cfg.base_trial_config(),
            tune_config=tune.TuneConfig(
                # metric and mode here too, for ResultGrid.get_best_result()
                search_alg=searcher, metric=cfg.search.metric, mode="max",
                trial_dirname_creator=trial_dirname, scheduler=make_scheduler(cfg), num_samples=total,
                max_concurrent_trials=cfg.resources.max_concurrent_trials),
            run_config=_run_config(cfg, exp, SEARCH, total, total * cfg.max_epochs()))

    return _fit(cfg, exp, SEARCH, trainable, make_tuner, total)


def best_configs(cfg: SweepConfig, results) -> dict[str, dict[str, Any]]:
    """Each cell's (arm x replicate) best search trial by the objective; trials stopped early or
    diverged are out. With ``objective: best`` the chosen config trains to its best epoch."""
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
            if cfg.search.objective == "best" and m.get("best_epoch"):
                config["epochs"] = int(m["best_epoch"])
            best[cell] = (score, config)
    wanted = [cell_of({"arm": a.name, "replicate": rep}) for rep in range(cfg.search.replicates)
              for a in cfg.arms]
    missing = [c for c in wanted if c not in best]
    if missing:
        raise SweepFailed(f"{', '.join(missing)}: no finished, non-diverged search trial to confirm; "
                          f"widen search.space or raise search.num_samples")
    return {cell: config for cell, (_, config) in best.items()}


def confirm_configs(cfg: SweepConfig, best: dict[str, dict] | None) -> list[dict[str, Any]]:
    """Confirmation trials: each replicate's chosen config per arm x ``confirm.seeds`` seeds; seed k of
    replicate r is the same for every arm (paired) and never a search seed."""
    base = cfg.base_trial_config()
    out = []
    for rep in range(cfg.search.replicates if best else 1):
        for arm in cfg.arms:
            chosen = dict(best[cell_of({"arm": arm.name, "replicate": rep})]) if best \
                else {**base, **arm.settings(cfg.train), "replicate": 0}
            for k in range(cfg.confirm.seeds):
                out.append({**chosen, "seed": seeds.confirm_trial_seed(cfg.confirm.seed, rep, k),
                            "stage": CONFIRM, "evaluate_test": True})
    return out


def run_confirm(cfg: SweepConfig, exp: Experiment, trainable, best: dict[str, dict] | None):
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    configs = confirm_configs(cfg, best)

    def make_tuner():
        return tune.Tuner(
            trainable,
            # Every key must exist in param_space; each point then replaces all the values.
            param_space={k: v for c in configs for k, v in c.items()},
            tune_config=tune.TuneConfig(
                num_samples=len(configs), trial_dirname_creator=trial_dirname,
                metric="val_accuracy", mode="max",  # for ResultGrid.get_best_result()
                search_alg=BasicVariantGenerator(points_to_evaluate=configs),
                max_concurrent_trials=cfg.resources.max_concurrent_trials),
            run_config=_run_config(cfg, exp, CONFIRM, len(configs), sum(int(c["epochs"]) for c in configs)))

    return _fit(cfg, exp, CONFIRM, trainable, make_tuner, len(configs))


def _search_results(exp: Experiment, trainable):
    from ray import tune

    trust.verify_dir(exp.join(SEARCH))  # before anything in it is unpickled
    return tune.Tuner.restore(exp.join(SEARCH), trainable=trainable).get_results()


def run_sweep(cfg: SweepConfig, options: RunOptions = RunOptions(), dataset=None) -> str:
    """Run (or resume) a whole sweep; returns the experiment directory.

    Raises ConfigError (bad input; nothing written), SweepInterrupted or SweepFailed.
    """
    exp = Experiment(cfg.storage_path, cfg.name)
    validate(cfg, options, exp)
    quiet_logs()
    dataset = load_data(cfg) if dataset is None else dataset
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = EXPERIMENT_CHECKPOINT_S
    start_ray(cfg)
    wait_for_resources(cfg)
    with exp.lock():  # the first write: everything above only reads
        check_directory(cfg, options, exp)  # again, now that no other run can change the directory
        exp_id = open_experiment(cfg, options, exp, dataset)
        info = data_info(dataset)
        print(f"sweep '{cfg.name}': {len(cfg.arms)} arms ({', '.join(a.name for a in cfg.arms)}) x "
              f"{cfg.search.replicates if cfg.search.enabled else 1} replicate(s), data {info['source']} "
              f"(train/val/test {info['train']}/{info['val']}/{info['test']}), results in {exp}", flush=True)
        for warning in info["warnings"]:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
        trainable = _trainable(cfg, dataset, options)
        best = None
        if cfg.search.enabled:
            results = _search_results(exp, trainable) if options.confirm_only else \
                run_search(cfg, exp, trainable, exp_id)
            best = best_configs(cfg, results)
            for cell, config in sorted(best.items()):
                print(f"best {cell}: lr={config.get('lr'):.3g} epochs={config.get('epochs')}", flush=True)
        failed = 0
        if cfg.confirm.enabled and not options.skip_confirm:
            failed = run_confirm(cfg, exp, trainable, best).num_errors
        if options.report:
            write_report(exp)
    if failed:
        raise SweepFailed(f"{failed} confirmation trial(s) failed after {cfg.max_failures} retries; the "
                          f"report leaves them out (error.txt in {exp}/confirm/*/)")
    return exp.path


def write_report(exp: Experiment) -> str | None:
    """Write the analysis report into ``<exp>/report`` (a local dir when ``exp`` is remote)."""
    from analysis.report import write_report as _write

    path, out = exp.path, exp.join(REPORT_DIR)
    if exp.remote:  # analysis reads local files: copy the experiment down first, into a dir of ours
        local = exp.local_copy("results")
        path, out = str(local / "experiment"), str(local / REPORT_DIR)
        old = os.umask(0o077)  # the report of a copy is user-only, as the copy is
        try:
            paths = _write([path], out)
        finally:
            os.umask(old)
        print(f"report: {paths['md']}", flush=True)
        return out
    paths = _write([path], out)
    print(f"report: {paths['md']}", flush=True)
    return out
