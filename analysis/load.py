"""Read sweep results (Ray Tune trial directories) into two tidy DataFrames.

Only reads: nothing under an experiment directory is created or modified, and no Ray cluster is
needed. Optuna databases are opened read-only (SQLite ``mode=ro``) and copied into memory.
Works on a sweep that is still running or was interrupted: it uses what is there.

Experiment directories
----------------------
Either a whole sweep made by ``sweeps/run.py`` (``config.yaml``, ``data.json``, ``optuna.db``,
``search/``, ``confirm/``; the sub-directory names the stage) or a single Ray Tune experiment
(trial directories holding ``params.json`` and ``result.json``, plus Tune's
``experiment_state-*.json``).

The contract: any Ray Tune experiment can be analysed
-------------------------------------------------------
A trial directory is one holding ``params.json`` or ``result.json``.

``params.json`` (the trial's config, a JSON object of at most ``MAX_PARAMS_BYTES``):

* required: ``arm`` (string; ``activation`` is used when ``arm`` is absent) and ``seed``
  (integer; NaN with a note when absent);
* ``stage``: ``"search"``, ``"confirm"`` or ``"original"``; required in a bare Tune experiment
  (absent: counted as ``"search"`` with a note); under ``search/``/``confirm/`` the directory's name
  wins, except that a trial under ``confirm/`` naming ``"original"`` (a run at the original
  configuration, ``confirm.original_seeds``) is loaded as stage ``"original"``;
* ``replicate``: integer >= 0, the index of a repeated run of one configuration (0 when absent);
* optional: ``activation``, ``kernel_initializer``, ``normalization``, ``validate_on``,
  ``source_trial`` (strings), ``lr``, ``epochs``, ``batch_size``, ``dropout`` (numbers).

A trial whose ``arm``, ``stage`` or ``replicate`` has the wrong type or value is skipped with a
note; an optional key of the wrong type becomes missing (None/NaN) with a note.

``result.json`` (one JSON object per line, one line per epoch, as Tune writes it): ``EPOCH_COLUMNS``
are read, each a number (JSON ``NaN``/``Infinity`` allowed for losses; accuracies must lie in
[0, 1]); missing ones are NaN. ``epoch`` (1-based) identifies the row (``training_iteration``
stands in when ``epoch`` is absent); ``trial_id``, ``timestamp`` (unix seconds when the row was
written) and ``time_total_s`` are Tune's own keys. The trainable's per-epoch names are
``trainable.train.METRICS`` plus ``test_loss``/``test_accuracy``.

Damaged input never raises beyond :class:`AnalysisError`: an unreadable line, a non-numeric
metric or a corrupt file is skipped and described in ``Results.notes``. ``AnalysisError`` (one
line saying what is wrong and how to fix it) is raised only when nothing can be analysed.

Results
-------
``load_results(paths)`` returns :class:`Results` with

* ``trials``: one row per trial: ``experiment, stage, trial_id, arm``, the config columns
  (``CONFIG_COLUMNS``; ``replicate`` an int, ``source_trial`` a string or None), ``status``
  (one of ``STATUSES``), ``time_total_s``, ``start_time`` (unix seconds: ``timestamp -
  time_total_s`` of the trial's first result row; NaN if unknown) and the metrics of
  :func:`analysis.metrics.trial_metrics`;
* ``epochs``: one row per trial-epoch: ``experiment, stage, trial_id, arm, replicate`` and
  ``EPOCH_COLUMNS`` (floats; a retried epoch counts once, its last report);
* ``notes``: what was skipped, missing or damaged;
* ``experiments``: experiment name -> directory;
* ``meta``: experiment name -> ``{"config": dict | None, "data": dict | None}``: the experiment's
  ``config.yaml`` (``yaml.safe_load``) and ``data.json`` (at the experiment root); None when
  absent or corrupt (a corrupt one, or a sweep without ``config.yaml``, gets a note).

Names are data: an arm or experiment name that is not of the contract's safe characters
(``analysis.contract.NAME_PATTERN``, what sweeps/run.py accepts) is replaced by a safe form with a
note, so no name from a file can become Markdown, HTML or a spreadsheet formula downstream.
Every file is read through ``analysis._files`` (regular files inside the experiment only, sizes
and nesting bounded).

``analysis.studies.load_studies(results)`` reads the Optuna studies.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis._files import MAX_YAML_BYTES, Unreadable, load_yaml, parse_json, read_bytes
from analysis.contract import (
    ACCURACY_COLUMNS,
    CONFIG_FILE,
    CONFIRM,
    DATA_FILE,
    DIVERGED,
    EPOCH_COLUMNS,
    FAILED,
    FINAL_LOOK_FILE,
    FINISHED,
    INCOMPLETE,
    MAX_NAME,
    NAME_CHARS,
    NAME_PATTERN,
    ORIGINAL,
    REPLICATE_DIR_PREFIX,
    SEARCH,
    STAGES,
    STOPPED_EARLY,
    TRIAL_STAGES,
)
from analysis.metrics import trial_metrics

STR_CONFIG = ("activation", "kernel_initializer", "normalization", "validate_on", "source_trial")
NUM_CONFIG = ("lr", "epochs", "batch_size", "seed", "dropout")
CONFIG_COLUMNS = ("arm", "activation", "lr", "epochs", "batch_size", "seed", "kernel_initializer",
                  "normalization", "dropout", "validate_on", "replicate", "source_trial")
MAX_PARAMS_BYTES = 1 << 20  # a trial config is a few hundred bytes
MAX_META_BYTES = MAX_YAML_BYTES  # config.yaml, data.json
MAX_STATE_BYTES = 1 << 30  # experiment_state-*.json: ~5 KB per trial
MAX_RESULT_BYTES = 1 << 30  # result.json: ~1 KB per epoch
_ESCAPES = {0x0A: "\\n", 0x0D: "\\r"}
_SAFE_NAME = re.compile(NAME_PATTERN)
_UNSAFE_CHARS = re.compile(f"[^{NAME_CHARS}]+")
_RAW_KEYS = (*EPOCH_COLUMNS, "training_iteration")  # what is read from each result line


class AnalysisError(ValueError):
    """Input that cannot be analysed at all; the message is one line with the fix."""


_Unreadable = Unreadable  # a file that cannot be used; the message says why (becomes part of a note)


@dataclass
class Results:
    trials: pd.DataFrame
    epochs: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    experiments: dict[str, Path] = field(default_factory=dict)  # name -> directory
    meta: dict[str, dict] = field(default_factory=dict)  # name -> {"config": ..., "data": ...}


def _text(value: object) -> str:
    """``str(value)`` fit for a one-line UTF-8 message (undecodable names, lone surrogates, newlines)."""
    return str(value).encode("utf-8", "replace").decode("utf-8").translate(_ESCAPES)


def safe_name(name: str) -> str:
    """``name`` if it is of the contract's safe characters; else a safe form: unsafe runs replaced by
    '_', cut to fit, and a short hash of the original so two unsafe names stay apart."""
    if _SAFE_NAME.match(name) and len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    stem = _UNSAFE_CHARS.sub("_", name).strip("._-")[:MAX_NAME - 10] or "name"
    if not stem[0].isalnum():
        stem = "x" + stem
    return f"{stem}-{digest}"


def _why(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


# The experiment directory of the file being read: no file is read through a link out of it.
_ROOT: list[Path] = []


def _read_bytes(path: Path, limit: int | None = None) -> bytes:
    """A regular file's bytes inside the experiment; raises ``_Unreadable(reason)`` otherwise."""
    return read_bytes(path, limit, inside=_ROOT[-1] if _ROOT else None)


def _parse_file(path: Path, limit: int, parse: Callable[[str], Any], what: str) -> Any:
    """Parse a small text file; raises ``_Unreadable(reason)``."""
    data = _read_bytes(path, limit)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Unreadable("not UTF-8 text (binary or damaged)") from None
    try:
        return parse(text)
    except Unreadable:  # the YAML loader's own bounds (aliases, depth): say which
        raise
    except Exception:  # a parser of untrusted bytes: any failure means the file is not `what`
        raise _Unreadable(f"not valid {what}") from None


def _json_object(text: str) -> dict:
    value = parse_json(text)
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


def _yaml_mapping(text: str) -> dict:
    value = load_yaml(text, MAX_META_BYTES)
    if not isinstance(value, dict):
        raise ValueError("not a mapping")
    return value


def _is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except OSError:
        return False


def _exists(p: Path) -> bool:
    try:
        return p.exists() or p.is_symlink()
    except OSError:
        return False


def _stage_dirs(path: Path) -> list[tuple[str, Path]]:
    """(stage, tune experiment dir) pairs under an experiment directory: ``<stage>/`` and, for the
    later replicates of a sequential plan, ``<stage>/replicate-<r>/``."""
    stages = [(s, path / s) for s in STAGES if _is_dir(path / s)]
    if stages:
        return stages + [(s, sub) for s, d in stages for sub in _replicate_dirs(d)]
    if _trial_dirs(path, []) or _state_files(path):
        return [("", path)]  # a bare Tune experiment; stage comes from each trial's config
    return []


def _replicate_dirs(stage_dir: Path) -> list[Path]:
    try:
        return sorted((p for p in stage_dir.glob(f"{REPLICATE_DIR_PREFIX}*") if _is_dir(p)),
                      key=lambda p: (len(p.name), p.name))
    except OSError:
        return []


def _state_files(stage_dir: Path) -> list[Path]:
    try:
        return sorted(stage_dir.glob("experiment_state-*.json"), reverse=True)  # newest first
    except OSError:
        return []


def _trial_dirs(stage_dir: Path, notes: list[str]) -> list[Path]:
    try:
        entries = sorted(stage_dir.iterdir())
    except OSError as exc:
        notes.append(f"{_text(stage_dir)}: cannot list ({_why(exc)}); its trials are skipped")
        return []
    out = []
    for p in entries:
        try:
            if _is_dir(p) and _is_trial_dir(p):
                out.append(p)
        except OSError as exc:
            notes.append(f"{_text(p)}: cannot be read ({_why(exc)}); skipped")
    return out


def _is_trial_dir(p: Path) -> bool:
    """Whether ``p`` holds params.json or result.json; OSError if it cannot be looked into."""
    for name in ("params.json", "result.json"):
        try:
            os.lstat(p / name)
            return True
        except FileNotFoundError:
            continue
    return False


def _statuses(stage_dir: Path, notes: list[str]) -> dict[str, tuple[str, str | None]]:
    """Trial dir name -> (Tune status, trial id), from the newest readable experiment_state file."""
    for state_file in _state_files(stage_dir):
        try:
            state = _parse_file(state_file, MAX_STATE_BYTES, _json_object, "JSON")
            out = {}
            for item in state["trial_data"]:
                trial = parse_json(item[0])
                status, logdir = trial["status"], trial["relative_logdir"]
                if not isinstance(status, str) or not isinstance(logdir, str):
                    raise TypeError("status and relative_logdir must be strings")
                tid = trial.get("trial_id")
                out[os.path.basename(logdir)] = (status, tid if isinstance(tid, str) else None)
            return out
        except _Unreadable as exc:
            notes.append(f"{_text(state_file)}: {exc}; trial statuses taken from an older state file "
                         f"or inferred from the results")
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError):
            notes.append(f"{_text(state_file)}: not a Ray Tune experiment state (unexpected layout); "
                         f"trial statuses taken from an older state file or inferred from the results")
    return {}


def _read_result_lines(path: Path, notes: list[str]) -> tuple[list[dict], bool]:
    """Parsed result lines, and whether any line was unreadable (a damaged file)."""
    try:
        data = _read_bytes(path, MAX_RESULT_BYTES)
    except _Unreadable as exc:
        notes.append(f"{_text(path)}: {exc}; its results are skipped")
        return [], True
    rows: list[dict] = []
    bad: list[int] = []
    for i, line in enumerate(data.split(b"\n")):
        if not line.strip():
            continue
        try:
            row = parse_json(line)  # bytes: UTF-8 is checked by the parser
        except ValueError:
            bad.append(i + 1)
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad.append(i + 1)
    if bad:
        notes.append(f"{_text(path)}: {len(bad)} line(s) not valid JSON objects (partial write or damage; "
                     f"first: line {bad[0]}); skipped")
    return rows, bool(bad)


def _status(tune_status: str | None, last: dict, has_error_file: bool, damaged: bool = False) -> str:
    if last.get("diverged") == 1.0:
        return DIVERGED
    if tune_status == "ERROR" or has_error_file and tune_status != "TERMINATED":
        return FAILED
    epoch, target = last.get("epoch"), last.get("target_epochs")
    if epoch is not None and target is not None and epoch >= target:
        return FINISHED
    if tune_status == "TERMINATED" and epoch is not None and not damaged:
        return STOPPED_EARLY  # ended short of its epochs without error: a scheduler stop
    return INCOMPLETE


def _number(value: object) -> float | None:
    """A JSON number (or bool) as float; None for anything else."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:  # a huge JSON integer
            return math.inf if value > 0 else -math.inf
    return None


def _trial_config(config: dict, dir_stage: str) -> tuple[dict | None, str | None, list[str]]:
    """(config columns, or None if the trial must be skipped; why skipped; soft problems)."""
    problems: list[str] = []
    arm = config.get("arm", config.get("activation"))
    if isinstance(arm, (int, float)) and not isinstance(arm, bool):
        arm = str(arm)
    if not isinstance(arm, str) or not arm:
        return None, ("no 'arm' (or 'activation') string in params.json" if arm is None
                      else f"'arm' is {type(arm).__name__}, expected a string"), problems
    stage = dir_stage or config.get("stage", SEARCH)
    if dir_stage == CONFIRM and config.get("stage") == ORIGINAL:
        stage = ORIGINAL  # a run at the original configuration, inside the confirmation's experiment
    if stage not in TRIAL_STAGES:
        return None, (f"'stage' is {_text(repr(stage))[:40]}, expected one of "
                      f"{', '.join(repr(s) for s in TRIAL_STAGES)}"), problems
    replicate = config.get("replicate", 0)
    rep = _number(replicate) if not isinstance(replicate, bool) else None
    if rep is None or not math.isfinite(rep) or rep != int(rep) or rep < 0:
        return None, f"'replicate' is {_text(repr(replicate))[:40]}, expected an integer >= 0", problems
    row: dict[str, Any] = {"stage": stage, "arm": _text(arm), "replicate": int(rep)}
    if safe_name(row["arm"]) != row["arm"]:  # data, never markup: a safe form, and say so
        problems.append(f"arm name {_text(repr(arm))[:60]} is not of letters, digits, '.', '_', '-'; "
                        f"shown as '{safe_name(row['arm'])}'")
        row["arm"] = safe_name(row["arm"])
    for key in STR_CONFIG:
        v = config.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)
        if v is not None and not isinstance(v, str):
            problems.append(f"'{key}' is {type(v).__name__}, expected a string")
            v = None
        row[key] = None if v is None else _text(v)
    for key in NUM_CONFIG:
        v = config.get(key)
        num = None if isinstance(v, bool) else _number(v)
        if v is not None and num is None:
            problems.append(f"'{key}' is {type(v).__name__}, expected a number")
        row[key] = v if num is not None and isinstance(v, int) and abs(v) < 2**53 else num
    return row, None, problems


def _coerce(col: pd.Series) -> tuple[pd.Series, pd.Series]:
    """A result column as float64, and a mask of the values that were present but not numbers."""
    if col.dtype.kind in "fiub":
        return col.astype(float), pd.Series(False, index=col.index)
    nums = col.map(_number)
    bad = nums.isna() & col.notna()
    return nums.astype(float), bad


@dataclass
class _Rows:
    """What the experiments' files yield, before the tables are built; index t = one trial."""

    trials: list[dict] = field(default_factory=list)  # config columns, ids, times
    raw: list[list] = field(default_factory=list)  # result values (``_RAW_KEYS``), one list per line
    row_trial: list[int] = field(default_factory=list)  # the trial index t of each raw row
    damaged: list[bool] = field(default_factory=list)  # t -> some result line was unusable
    tune: list[tuple[str | None, bool]] = field(default_factory=list)  # t -> (Tune status, error.txt?)


def _load_experiment(name: str, path: Path, notes: list[str], rows: _Rows) -> None:
    """Append one experiment's trials and result lines to ``rows``."""
    seen: dict[tuple[str, str], Path] = {}
    no_stage = no_seed = 0
    for dir_stage, stage_dir in _stage_dirs(path):
        statuses = _statuses(stage_dir, notes)
        for tdir in _trial_dirs(stage_dir, notes):
            where = _text(tdir)
            try:
                config = _parse_file(tdir / "params.json", MAX_PARAMS_BYTES, _json_object, "JSON object")
            except _Unreadable as exc:
                notes.append(f"{where}/params.json: {exc}; trial skipped")
                continue
            row, skip, problems = _trial_config(config, dir_stage)
            if row is None:
                notes.append(f"{where}/params.json: {skip}; trial skipped")
                continue
            if problems:
                notes.append(f"{where}/params.json: {'; '.join(problems)}; treated as missing")
            no_stage += not dir_stage and "stage" not in config
            no_seed += config.get("seed") is None
            has_results = _exists(tdir / "result.json")
            results, bad_lines = _read_result_lines(tdir / "result.json", notes) if has_results \
                else ([], False)
            tune_status, known_id = statuses.get(tdir.name, (None, None))
            rid = results[-1].get("trial_id") if results else None
            trial_id = _text(rid if isinstance(rid, (str, int)) and not isinstance(rid, bool) and rid != ""
                             else known_id or tdir.name)
            key = (row["stage"], trial_id)
            if key in seen:
                notes.append(f"{where}: same trial_id '{trial_id}' as {_text(seen[key])}; trial skipped")
                continue
            seen[key] = tdir
            if not results:
                notes.append(f"{where}: no results yet (Tune status {_text(tune_status or 'unknown')})")
            first = results[0] if results else {}
            ts, tt = _number(first.get("timestamp")), _number(first.get("time_total_s"))
            last_total = _number(results[-1].get("time_total_s")) if results else None
            start = ts - tt if ts is not None and tt is not None else math.nan
            t_index = len(rows.trials)
            rows.trials.append({"experiment": name, "trial_id": trial_id, **row,
                                "time_total_s": math.nan if last_total is None else last_total,
                                "start_time": start if math.isfinite(start) else math.nan, "_dir": where})
            rows.raw += [[r.get(k) for k in _RAW_KEYS] for r in results]
            rows.row_trial += [t_index] * len(results)
            rows.damaged.append(bad_lines)
            rows.tune.append((tune_status if isinstance(tune_status, str) else None,
                              _exists(tdir / "error.txt")))
    if no_stage:
        notes.append(f"`{name}`: {no_stage} trial(s) have no 'stage' in their config; counted as search")
    if no_seed:
        notes.append(f"`{name}`: {no_seed} trial(s) have no 'seed' in their config (left empty)")


def _epoch_table(raw_rows: list[list], row_trial: list[int], trials: pd.DataFrame,
                 notes: list[str], damaged: list[bool]) -> pd.DataFrame:
    """The per-epoch table from raw result values: numbers checked, rows without an epoch dropped."""
    raw = pd.DataFrame(raw_rows, columns=list(_RAW_KEYS)) if raw_rows \
        else pd.DataFrame({k: pd.Series(dtype=float) for k in _RAW_KEYS})
    raw["_t"] = np.asarray(row_trial, dtype=np.int64)
    problems: dict[int, list[str]] = {}
    for key in _RAW_KEYS:
        values, bad = _coerce(raw[key])
        if key in ACCURACY_COLUMNS:
            outside = values.notna() & ~values.between(0.0, 1.0)
            values = values.mask(outside)
            bad = bad | outside
        raw[key] = values
        if bad.any():
            label = f"{key} (not a number{' in [0, 1]' if key in ACCURACY_COLUMNS else ''})"
            for t in raw.loc[bad, "_t"].unique():
                problems.setdefault(int(t), []).append(label)
    epoch = raw["epoch"].where(raw["epoch"].notna(), raw["training_iteration"]).to_numpy(dtype=float)
    no_epoch = ~np.isfinite(epoch) | (epoch < 0)
    raw["epoch"] = epoch
    dropped = raw.loc[no_epoch, "_t"].value_counts().to_dict()
    dirs = trials["_dir"].tolist()
    for t in sorted(set(problems) | set(dropped)):
        parts = [f"{', '.join(dict.fromkeys(problems[t]))} set to NaN"] if t in problems else []
        if t in dropped:
            parts.append(f"{dropped[t]} row(s) without a valid epoch dropped")
            damaged[t] = True
        notes.append(f"{dirs[t]}/result.json: {'; '.join(parts)}")
    return raw[~no_epoch].drop(columns=["training_iteration"])


def _read_meta(name: str, path: Path, is_sweep: bool, notes: list[str]) -> dict:
    meta: dict[str, dict | None] = {}
    for key, fname, parse, what in (("config", CONFIG_FILE, _yaml_mapping, "YAML mapping"),
                                    ("data", DATA_FILE, _json_object, "JSON object"),
                                    ("final_look", FINAL_LOOK_FILE, _json_object, "JSON object")):
        f = path / fname
        meta[key] = None
        if not _exists(f):
            if key == "config" and is_sweep:
                notes.append(f"`{name}`: no {CONFIG_FILE}; the sweep's settings are unknown")
            continue
        try:
            meta[key] = _parse_file(f, MAX_META_BYTES, parse, what)
        except _Unreadable as exc:
            notes.append(f"{_text(f)}: {exc}; ignored")
    return meta


def check_experiment(raw: str | os.PathLike) -> Path:
    """The experiment directory ``raw`` as a Path; AnalysisError (one line with the fix) if it is
    missing, not a directory, unreadable or holds no Tune experiment."""
    path = Path(raw).expanduser()
    shown = _text(path)
    if os.fsencode(path) != _text(path).encode():
        raise AnalysisError(f"{shown}: the path is not valid UTF-8; rename the directory (or link to it "
                            f"from a UTF-8 name)")
    try:
        path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise AnalysisError(f"{shown}: a broken symbolic link; point it at an experiment directory "
                                f"such as results/NAME") from None
        raise AnalysisError(f"{shown}: no such directory; pass an experiment dir such as results/NAME") \
            from None
    except OSError as exc:
        raise AnalysisError(f"{shown}: cannot be opened ({_why(exc)}); fix the path or its permissions, "
                            f"or pass an experiment dir such as results/NAME") from None
    if not path.is_dir():
        raise AnalysisError(f"{shown}: not a directory; pass an experiment dir such as results/NAME")
    try:
        next(path.iterdir(), None)
    except OSError as exc:
        raise AnalysisError(f"{shown}: cannot list its contents ({_why(exc)}); fix its permissions") from None
    if not _stage_dirs(path):
        raise AnalysisError(f"{shown}: not an experiment (no search/, confirm/ or Ray Tune trial "
                            f"directories); pass the directory that sweeps/run.py created")
    return path


def load_results(paths: list[str | os.PathLike]) -> Results:
    """Load one or more experiment directories; raises AnalysisError if none holds any trial."""
    if not paths:
        raise AnalysisError("no experiment directory given; pass e.g. results/default")
    notes: list[str] = []
    experiments: dict[str, Path] = {}
    meta: dict[str, dict] = {}
    rows = _Rows()
    for path in [check_experiment(raw) for raw in paths]:
        name = safe_name(_text(path.resolve().name or path.resolve()))
        while name in experiments:
            name += "_"
        experiments[name] = path
        is_sweep = any(_is_dir(path / s) for s in STAGES)
        _ROOT.append(path)
        try:
            meta[name] = _read_meta(name, path, is_sweep, notes)
            before = len(rows.trials)
            _load_experiment(name, path, notes, rows)
        finally:
            _ROOT.pop()
        if len(rows.trials) == before:
            notes.append(f"{_text(path)}: holds no readable trials yet")
    if not rows.trials:
        shown = ", ".join(_text(p) for p in paths)
        damage = [n for n in notes if "skipped" in n]
        if damage:
            raise AnalysisError(f"{shown}: no readable trials ({len(damage)} problem(s); first: "
                                f"{damage[0]}); repair or remove the damaged files")
        raise AnalysisError(f"{shown}: no trials with results yet; wait for the first epoch or check the "
                            f"run's logs")
    trials = pd.DataFrame(rows.trials)
    raw = _epoch_table(rows.raw, rows.row_trial, trials, notes, rows.damaged)

    last = raw.groupby("_t", sort=False).tail(1).set_index("_t")
    last_rows = last[["diverged", "epoch", "target_epochs"]].to_dict("index")
    trials["status"] = [_status(status, {k: v for k, v in last_rows.get(t, {}).items() if v == v},
                                error_file, rows.damaged[t])
                        for t, (status, error_file) in enumerate(rows.tune)]

    for key in ("experiment", "stage", "trial_id", "arm", "replicate"):
        raw[key] = trials[key].to_numpy()[raw["_t"].to_numpy()]
    epochs = raw[["experiment", "stage", "trial_id", "arm", "replicate", *EPOCH_COLUMNS]]
    epochs = epochs.drop_duplicates(["experiment", "stage", "trial_id", "epoch"], keep="last")
    epochs = epochs.reset_index(drop=True)
    trials = trials[["experiment", "stage", "trial_id", *CONFIG_COLUMNS, "status", "time_total_s",
                     "start_time"]]
    if len(experiments) > 1:  # the same arm name in two experiments is two different arms
        trials = trials.assign(arm=trials["experiment"] + "/" + trials["arm"])
        epochs = epochs.assign(arm=epochs["experiment"] + "/" + epochs["arm"])
    metrics = trial_metrics(epochs)
    trials = trials.merge(metrics, on=["experiment", "stage", "trial_id"], how="left")
    for col in metrics.columns:  # no epochs anywhere: metric columns of only NaN are floats, not objects
        if trials[col].dtype == object and trials[col].isna().all():
            trials[col] = trials[col].astype(float)
    return Results(trials=trials, epochs=epochs, notes=notes, experiments=experiments, meta=meta)
