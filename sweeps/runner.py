"""Run a sweep: search stage (Tune + Optuna), confirmation stage (best config x K seeds), report.

Experiment directory layout (``<storage_path>/<name>/``)::

    config.yaml   the resolved config this sweep runs with (written before any trial starts)
    optuna.db     the Optuna studies (SQLite; or search.optuna_storage)
    search/       the Ray Tune experiment of the search stage
    confirm/      the Ray Tune experiment of the confirmation stage
    report/       report.md, report.html, trials.csv, epochs.csv, figures/ (analysis package)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sweeps.config import ConfigError, SweepConfig
from sweeps.search import make_scheduler, make_searcher, stopped_early, total_search_trials

# Save Tune's experiment state at least every second, so a driver killed seconds after a trial
# finished does not lose it on --resume (Tune's default period is 10 s or more).
EXPERIMENT_CHECKPOINT_S = "1"


class SweepFailed(RuntimeError):
    """The sweep started but could not finish (exit code 1)."""


class SweepInterrupted(RuntimeError):
    """The sweep was interrupted; it can be continued with --resume (exit code 1)."""


@dataclass(frozen=True)
class RunOptions:
    """How to run (not what): modes from the command line."""

    resume: bool = False
    overwrite: bool = False
    skip_confirm: bool = False
    confirm_only: bool = False
    report: bool = True
    callbacks: Sequence[Any] = field(default_factory=tuple)  # extra Keras callbacks for every trial


def is_remote(path: str) -> bool:
    return "://" in path


def experiment_dir(cfg: SweepConfig) -> str:
    return _join(cfg.storage_path, cfg.name)


def _join(storage_path: str, name: str) -> str:
    return f"{storage_path.rstrip('/')}/{name}" if is_remote(storage_path) \
        else str(Path(storage_path).expanduser().resolve() / name)


def read_saved_config(storage_path: str, name: str) -> dict | None:
    """The resolved config a sweep saved when it started (local or remote), or None."""
    path = f"{_join(storage_path, name)}/config.yaml"
    if not _exists(path):
        return None
    fs, p = _fs(path)
    try:
        with fs.open_input_stream(p) as fh:
            raw = yaml.safe_load(fh.read().decode())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raw = None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a sweep config; pass --config FILE explicitly")
    return raw


def _fs(path: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(path if is_remote(path) else os.path.abspath(path))


def _exists(path: str) -> bool:
    import pyarrow.fs

    fs, p = _fs(path)
    return fs.get_file_info(p).type != pyarrow.fs.FileType.NotFound


def _write_text(path: str, text: str) -> None:
    fs, p = _fs(path)
    fs.create_dir(os.path.dirname(p), recursive=True)
    with fs.open_output_stream(p) as fh:
        fh.write(text.encode())


def _rmtree(path: str) -> None:
    fs, p = _fs(path)
    fs.delete_dir(p)


def optuna_url(cfg: SweepConfig) -> str:
    if cfg.search.optuna_storage:
        return cfg.search.optuna_storage
    return f"sqlite:///{experiment_dir(cfg)}/optuna.db"


def check_experiment_dir(cfg: SweepConfig, options: RunOptions) -> str:
    """Refuse to clobber or to resume what is not there; returns the experiment dir. No writes."""
    exp = experiment_dir(cfg)
    exists = _exists(f"{exp}/config.yaml") or _exists(f"{exp}/search") or _exists(f"{exp}/confirm")
    if options.resume and options.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; pass one of them")
    if options.confirm_only and options.skip_confirm:
        raise ConfigError("--confirm-only and --skip-confirm contradict each other; pass one of them")
    if options.skip_confirm and not cfg.search.enabled:
        raise ConfigError("--skip-confirm with search.enabled: false leaves nothing to run; drop the flag")
    if exists and not (options.resume or options.overwrite or options.confirm_only):
        raise ConfigError(f"{exp} already holds a sweep named '{cfg.name}'; pass --resume to continue "
                          f"it, --overwrite to replace it, or --name NEW_NAME")
    if options.resume and not exists:
        raise ConfigError(f"--resume: no sweep named '{cfg.name}' under {cfg.storage_path}; "
                          f"check --name and --storage-path")
    if options.confirm_only:
        if not cfg.search.enabled:
            raise ConfigError("--confirm-only needs a search stage to take the best configs from; "
                              "this config has search.enabled: false (just run it without the flag)")
        if not _exists(f"{exp}/search"):
            raise ConfigError(f"--confirm-only: {exp}/search does not exist; run the search first")
    if is_remote(cfg.storage_path) and not cfg.search.optuna_storage and cfg.search.enabled:
        raise ConfigError("search.optuna_storage: a remote storage_path needs a database URL for the "
                          "Optuna study (e.g. --optuna-storage postgresql://user@host/db)")
    return exp


# --------------------------------------------------------------------------------------------
# Ray


def start_ray(cfg: SweepConfig):
    """Join the cluster the user named (``address`` or RAY_ADDRESS), else start a private one."""
    import ray

    if ray.is_initialized():  # e.g. a test or notebook that started Ray itself
        return ray
    address = cfg.address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False}
    if address == "local":
        # Our private instance keeps Ray's default token auth; its notice about that is noise here.
        import logging

        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    else:
        # Ship this checkout's packages, so workers run the same code as the driver.
        import sweeps
        import trainable

        kwargs.update(include_dashboard=None, runtime_env={
            "py_modules": [os.path.dirname(trainable.__file__), os.path.dirname(sweeps.__file__)]})
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise ConfigError(f"--address {address}: no Ray cluster there ({exc}); start one with "
                          f"`ray up cluster.yaml` or omit --address for a local run") from None
    return ray


def check_resources(cfg: SweepConfig, nodes: list[dict] | None = None) -> None:
    """Fail fast if no node can ever hold one trial: Tune would otherwise wait forever."""
    import ray

    nodes = [n for n in (ray.nodes() if nodes is None else nodes) if n.get("Alive", True)]
    need_cpu, need_gpu = cfg.resources.cpus_per_trial, cfg.resources.gpus_per_trial
    fits = [n for n in nodes
            if n["Resources"].get("CPU", 0) >= need_cpu and n["Resources"].get("GPU", 0) >= need_gpu]
    if fits:
        return
    most_cpu = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
    most_gpu = max((n["Resources"].get("GPU", 0) for n in nodes), default=0)
    raise ConfigError(
        f"resources: a trial asks for {need_cpu:g} CPU and {need_gpu:g} GPU, but the largest node "
        f"has {most_cpu:g} CPU and {most_gpu:g} GPU; lower resources.cpus_per_trial/gpus_per_trial "
        f"or add such a node")


# --------------------------------------------------------------------------------------------
# Stages


def trial_dirname(trial) -> str:
    """Short trial directory names: ``<arm>_<trial_id>`` instead of every config value."""
    return f"{trial.config.get('arm', 'trial')}_{trial.trial_id}"


def _quiet_tune_logs() -> None:
    import logging

    # Expected, harmless warnings: preset confirm values replace param_space placeholders, and
    # per-checkpoint experiment snapshots (wanted: they make --resume lose nothing).
    for name in ("ray.tune.search.variant_generator", "ray.tune.execution.experiment_state",
                 "ray.tune.search.optuna.optuna_search"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _run_config(cfg: SweepConfig, exp: str, stage: str, total: int):
    from ray import tune

    from sweeps.progress import ProgressTable

    return tune.RunConfig(
        name=stage,
        storage_path=exp,
        verbose=0,
        callbacks=[ProgressTable(stage, total)],
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


def _fit(cfg: SweepConfig, exp: str, stage: str, trainable, make_tuner, total: int):
    """Fit a stage, restoring it if it was started before; raise if it ends unfinished."""
    from ray import tune

    path = f"{exp}/{stage}"
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = make_tuner()
    results = tuner.fit()
    finished = results.num_terminated + results.num_errors
    if len(results) < total or finished < total:
        raise SweepInterrupted(f"{stage} stage stopped with {finished}/{total} trials done; "
                               f"continue with: python sweeps/run.py --name {cfg.name} "
                               f"--storage-path {cfg.storage_path} --resume")
    return results


def run_search(cfg: SweepConfig, exp: str, trainable):
    import optuna
    from ray import tune

    storage = optuna.storages.RDBStorage(optuna_url(cfg))
    total = total_search_trials(cfg)

    def make_tuner():
        searcher = make_searcher(cfg, storage)
        return tune.Tuner(
            trainable,
            param_space=cfg.base_trial_config(),
            tune_config=tune.TuneConfig(
                search_alg=searcher,  # metric and mode live in the searcher and scheduler
                trial_dirname_creator=trial_dirname,
                scheduler=make_scheduler(cfg), num_samples=total,
                max_concurrent_trials=cfg.resources.max_concurrent_trials),
            run_config=_run_config(cfg, exp, "search", total),
        )

    return _fit(cfg, exp, "search", trainable, make_tuner, total)


def best_configs(cfg: SweepConfig, results) -> dict[str, dict[str, Any]]:
    """Each arm's best search trial by the objective; trials stopped early or diverged are out."""
    best: dict[str, tuple[float, dict]] = {}
    for r in results:
        m = r.metrics or {}
        if r.error is not None or m.get("diverged") == 1.0 or stopped_early(m):
            continue
        score, arm = m.get(cfg.search.metric), r.config.get("arm")
        if score is None or arm is None:
            continue
        if arm not in best or score > best[arm][0]:
            best[arm] = (score, {**r.config, "source_trial": r.metrics.get("trial_id", "")})
    missing = [a.name for a in cfg.arms if a.name not in best]
    if missing:
        raise SweepFailed(f"arm(s) {', '.join(missing)} have no finished, non-diverged search trial to "
                          f"confirm; widen search.space or raise search.num_samples")
    return {arm: config for arm, (_, config) in best.items()}


def confirm_configs(cfg: SweepConfig, best: dict[str, dict] | None) -> list[dict[str, Any]]:
    """The confirmation trials: each arm's chosen config x ``confirm.seeds`` fresh seeds."""
    base = cfg.base_trial_config()
    out = []
    for arm in cfg.arms:
        chosen = dict(best[arm.name]) if best else {**base, **arm.settings(cfg.train)}
        for k in range(cfg.confirm.seeds):
            out.append({**chosen, "seed": cfg.confirm.seed_offset + k, "stage": "confirm",
                        "evaluate_test": True})
    return out


def run_confirm(cfg: SweepConfig, exp: str, trainable, best: dict[str, dict] | None):
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
                search_alg=BasicVariantGenerator(points_to_evaluate=configs),
                max_concurrent_trials=cfg.resources.max_concurrent_trials),
            run_config=_run_config(cfg, exp, "confirm", len(configs)),
        )

    return _fit(cfg, exp, "confirm", trainable, make_tuner, len(configs))


def _search_results(exp: str, trainable):
    from ray import tune

    return tune.Tuner.restore(f"{exp}/search", trainable=trainable).get_results()


def run_sweep(cfg: SweepConfig, options: RunOptions = RunOptions(), dataset=None) -> str:
    """Run (or resume) a whole sweep; returns the experiment directory.

    Raises ConfigError (bad input; nothing written), SweepInterrupted or SweepFailed.
    """
    from trainable import make_dataset

    exp = check_experiment_dir(cfg, options)
    if dataset is None:
        d = cfg.data
        dataset = make_dataset(d.source, data_dir=d.data_dir, val_size=d.val_size, split_seed=d.split_seed,
                               train_subset=d.train_subset,
                               synthetic_size=(d.synthetic_train, d.synthetic_test),
                               synthetic_seed=d.synthetic_seed)
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = EXPERIMENT_CHECKPOINT_S
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    start_ray(cfg)
    check_resources(cfg)
    _quiet_tune_logs()

    if options.overwrite and _exists(exp):
        _rmtree(exp)
        if cfg.search.optuna_storage:
            _delete_studies(cfg)
    if not options.resume and not options.confirm_only:
        _write_text(f"{exp}/config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    print(f"sweep '{cfg.name}': {len(cfg.arms)} arms ({', '.join(a.name for a in cfg.arms)}), "
          f"data {dataset.source} {dataset.sizes}, results in {exp}", flush=True)
    trainable = _trainable(cfg, dataset, options)
    best = None
    if cfg.search.enabled:
        results = _search_results(exp, trainable) if options.confirm_only else \
            run_search(cfg, exp, trainable)
        best = best_configs(cfg, results)
        for arm, config in best.items():
            print(f"best {arm}: lr={config.get('lr'):.3g} epochs={config.get('epochs')}", flush=True)
    failed = 0
    if cfg.confirm.enabled and not options.skip_confirm:
        failed = run_confirm(cfg, exp, trainable, best).num_errors
    if options.report:
        write_report(exp)
    if failed:
        raise SweepFailed(f"{failed} confirmation trial(s) failed after {cfg.max_failures} retries; the "
                          f"report leaves them out (error.txt in {exp}/confirm/*/)")
    return exp


def _delete_studies(cfg: SweepConfig) -> None:
    import optuna

    storage = optuna.storages.RDBStorage(optuna_url(cfg))
    names = [f"{cfg.name}-joint"] + [f"{cfg.name}-{a.name}" for a in cfg.arms]
    for s in optuna.study.get_all_study_summaries(storage):
        if s.study_name in names:
            optuna.delete_study(study_name=s.study_name, storage=storage)


def write_report(exp: str) -> str | None:
    """Write the analysis report into ``<exp>/report`` (a local dir when ``exp`` is remote)."""
    from analysis.report import write_report as _write

    out = exp + "/report"
    if is_remote(exp):  # analysis reads local files: copy the experiment down first
        import pyarrow.fs

        out = str(Path("results") / Path(exp).name / "report")
        local = Path(out).parent / "experiment"
        if local.exists():
            shutil.rmtree(local)
        fs, p = _fs(exp)
        pyarrow.fs.copy_files(p, str(local), source_filesystem=fs)
        exp = str(local)
    paths = _write([exp], out)
    print(f"report: {paths['md']}", flush=True)
    return out
