"""Before the stages: validate everything (no writes, no Ray), load the data, and open the
experiment directory (replace, create or reopen it; record config, data and the run).
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from analysis._files import redact_tree
from analysis.contract import CONFIG_FILE, DATA_FILE, FINAL_LOOK_FILE, MARKER, RUNS_FILE, SEARCH
from sweeps import seeds, trackers
from sweeps.config import ConfigError, SweepConfig
from sweeps.experiment import Experiment, check_storage_path, redact
from sweeps.ray_session import check_address
from sweeps.studies import check_database_url, check_study_database, delete_studies, optuna_url


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
    command: str = ""                                        # the command line, recorded in runs.jsonl


def validate(cfg: SweepConfig, options: RunOptions, exp: Experiment) -> None:
    """Every check that needs no Ray and writes nothing; ConfigError (exit 2) on the first problem."""
    if options.resume and options.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; pass one of them")
    if options.confirm_only and options.skip_confirm:
        raise ConfigError("--confirm-only and --skip-confirm contradict each other; pass one of them")
    if options.confirm_only and options.overwrite:
        raise ConfigError("--confirm-only --overwrite would delete the search it confirms; drop --overwrite")
    if options.skip_confirm and not cfg.search.enabled:
        raise ConfigError("--skip-confirm with search.enabled: false leaves nothing to run; drop the flag")
    check_storage_path(cfg.storage_path)
    if exp.remote and not cfg.search.optuna_storage and cfg.search.enabled:
        raise ConfigError("search.optuna_storage: a remote storage_path needs a database URL for the "
                          "Optuna study (e.g. --optuna-storage postgresql+psycopg://user@host/db)")
    if cfg.search.optuna_storage:
        check_database_url(cfg.search.optuna_storage)
    check_address(cfg.address)
    trackers.check(cfg)
    check_directory(cfg, options, exp)


def check_directory(cfg: SweepConfig, options: RunOptions, exp: Experiment, database: bool = True) -> None:
    """The experiment directory's state against the run mode: part of ``validate``, and repeated
    under the experiment's lock, where no other run can change it (then with ``database=False``:
    the study database was checked once, by ``validate``)."""
    exists = exp.has_sweep()
    if exists and not (options.resume or options.overwrite or options.confirm_only):
        raise ConfigError(f"{exp} already holds a sweep named '{cfg.name}'; pass --resume to continue "
                          f"it, --overwrite to replace it, or --name NEW_NAME")
    if not exists and not exp.remote and exp.exists() and any(Path(exp.path).iterdir()):
        # Someone else's directory: never adopted, never deleted, whatever the flags.
        raise ConfigError(f"{exp} exists and is not a sweep (no {MARKER}); nothing changed: "
                          f"choose another --name or --storage-path")
    if exists and (options.resume or options.confirm_only or options.overwrite) and exp.marker() is None:
        _refuse_foreign(exp, options)
    if options.resume and not exists:
        raise ConfigError(f"--resume: no sweep named '{cfg.name}' under {redact(cfg.storage_path)}; "
                          f"check --name and --storage-path")
    if options.confirm_only:
        if not cfg.search.enabled:
            raise ConfigError("--confirm-only needs a search stage to take the best configs from; "
                              "this config has search.enabled: false (just run it without the flag)")
        if not exp.has_stage(SEARCH):
            raise ConfigError(f"--confirm-only: {exp}/search does not exist; run the search first")
    if exists and (options.resume or options.confirm_only):
        final_look_record(exp)  # a damaged record is refused here, before Ray starts
    if database and (options.resume or options.confirm_only) and cfg.search.enabled:
        check_study_database(optuna_url(cfg, exp))


def final_look_record(exp: Experiment) -> dict | None:
    """The sweep's ``final-look.json`` (the look its budget made the last), or None; ConfigError
    (one line with the fix) when it is damaged."""
    from analysis._files import parse_json
    from analysis.sequential import final_look_record as checked

    text = exp.read_text(FINAL_LOOK_FILE)
    if text is None:
        return None
    try:
        value = parse_json(text)
    except ValueError as exc:
        why = f"invalid JSON ({exc})"
    else:
        try:
            return checked(value)
        except ValueError as exc:
            why = str(exc).removeprefix(f"{FINAL_LOOK_FILE}: ")
    raise ConfigError(f"{redact(exp.join(FINAL_LOOK_FILE))}: {why}; it records the look the budget made "
                      f"the last: restore it, or start a new sweep with --name")


def _refuse_foreign(exp: Experiment, options: RunOptions) -> None:
    flag = "--overwrite" if options.overwrite else "--resume" if options.resume else "--confirm-only"
    raise ConfigError(f"{flag}: {exp} was not created by selu-sweep (no {MARKER}); nothing "
                      f"changed: move it away or choose another --name")


def load_data(cfg: SweepConfig):
    """The dataset (or, with ``data.vary_split``, one per replicate's split seed)."""
    from trainable import make_dataset
    from trainable.cifar10 import DataWarning

    d = cfg.data

    def make(split_seed: int):
        with warnings.catch_warnings():  # run_sweep prints data_warnings once, in its own words
            warnings.simplefilter("ignore", DataWarning)
            return make_dataset(d.source, data_dir=d.data_dir, val_size=d.val_size, split_seed=split_seed,
                            train_subset=d.train_subset, synthetic_size=(d.synthetic.train, d.synthetic.test),
                            synthetic_seed=d.synthetic.seed)
    if not d.vary_split:
        return make(d.split_seed)
    return {s: make(s) for s in sorted({seeds.split_seed(d.split_seed, r, True)  # up to the plan's max
                                        for r in range(int(cfg.search.replicates))})}


def data_info(dataset) -> dict[str, Any]:
    ds = next(iter(dataset.values())) if isinstance(dataset, dict) else dataset
    kind = "synthetic" if str(ds.source).startswith("synthetic") else "cifar10"
    return {"source": kind, "detail": ds.source, **ds.sizes,
            "digest": getattr(ds, "digest", None), "official": getattr(ds, "official", None),
            "warnings": list(getattr(ds, "data_warnings", ()))}


def _saved_config(cfg: SweepConfig) -> str:
    """The resolved config, every URL in it (storage, database, tracker URIs) without its password."""
    return yaml.safe_dump(redact_tree(cfg.to_dict()), sort_keys=False)


def open_experiment(cfg: SweepConfig, options: RunOptions, exp: Experiment, dataset) -> str:
    """Replace (``--overwrite``), create or reopen the directory; record config, data and the run."""
    marker = exp.marker() if exp.has_sweep() else None
    if options.overwrite and marker is not None:
        if cfg.search.optuna_storage:
            delete_studies(cfg, exp, marker["experiment_id"])
        exp.delete()
        marker = None
    exp_id = marker["experiment_id"] if marker else exp.create()
    exp.write_text(CONFIG_FILE, _saved_config(cfg))
    exp.write_text(DATA_FILE, json.dumps(data_info(dataset), indent=1))
    exp.append_line(RUNS_FILE, json.dumps({
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(), "pid": os.getpid(),
        "mode": "resume" if options.resume else "confirm-only" if options.confirm_only else "start",
        "command": redact(options.command)}))
    return exp_id
