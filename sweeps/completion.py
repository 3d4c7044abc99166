"""Completion records: a trial's end, written durably into its own directory before the driver
moves on, and trusted by ``--resume``.

Tune saves its experiment state in the background, at most once a second, and copies it to
storage with a sync that skips a round while the previous copy runs: a driver killed in between
leaves a trial that had ended as RUNNING in the newest saved state, and ``--resume`` would train
it again. :class:`CompletionRecords` (a Tune callback) writes ``done.json`` with the trial's last
result when it ends; :func:`trust_completion_records` marks such trials ended in Tune's newest
state before the restore. This module is pickled by value into ``tuner.pkl`` (see
``sweeps.runner.PICKLED_BY_VALUE``), so it imports nothing else of this project at call time.
"""

from __future__ import annotations

import json
import os

from ray.tune import Callback

from analysis.contract import DONE_FILE


class CompletionRecords(Callback):
    """Tune callback: when a trial ends (its last epoch, a scheduler stop or a divergence; Tune
    calls ``on_trial_complete`` after the searcher's own, before it marks the trial TERMINATED),
    write ``done.json`` (atomically) with its last result into the trial's directory."""

    def on_trial_complete(self, iteration, trials, trial, **info):
        write_completion_record(trial)


def _fs_and_path(path: str):
    from ray.train._internal.storage import get_fs_and_path

    return get_fs_and_path(path)


def _write_atomic(fs, path: str, data: bytes) -> None:
    import pyarrow.fs

    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:  # an object store writes an object whole or not at all
        with fs.open_output_stream(path) as f:
            f.write(data)


def _read(fs, path: str) -> bytes | None:
    try:
        with fs.open_input_stream(path) as f:
            return f.readall()
    except (FileNotFoundError, OSError):
        return None


def write_completion_record(trial) -> None:
    from ray.tune.utils.util import SafeFallbackEncoder

    result = dict(trial.last_result or {})
    if not result:
        return
    record = {"trial_id": trial.trial_id, "epoch": result.get("epoch"), "last_result": result}
    fs, path = trial.storage.storage_filesystem, trial.storage.trial_fs_path
    fs.create_dir(path, recursive=True)
    _write_atomic(fs, f"{path}/{DONE_FILE}", json.dumps(record, cls=SafeFallbackEncoder).encode())


def trust_completion_records(stage_path: str) -> int:
    """Mark as TERMINATED, in the newest experiment state of a stage, every unfinished trial whose
    ``done.json`` says it ended (with its last result), and append that result to its
    ``result.json`` if the snapshot of that file predates it. Returns how many trials it marked.

    Tune's state file is JSON; each trial is a JSON string (status, trial_id, relative_logdir) and
    its run metadata another (last_result). Nothing else is changed.
    """
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint
    from ray.tune.utils.util import SafeFallbackEncoder

    fs, fs_path = _fs_and_path(stage_path)
    state_path = _find_newest_experiment_checkpoint(fs_path, fs=fs)
    raw = _read(fs, state_path) if state_path else None
    if raw is None:
        return 0
    state = json.loads(raw)
    marked = 0
    for item in state.get("trial_data", []):
        trial = json.loads(item[0])
        if trial.get("status") not in ("RUNNING", "PENDING", "PAUSED"):
            continue
        tdir = f"{fs_path}/{os.path.basename(str(trial.get('relative_logdir', '')))}"
        data = _read(fs, f"{tdir}/{DONE_FILE}")
        if data is None:
            continue
        try:
            record = json.loads(data)
        except ValueError:
            continue
        if record.get("trial_id") != trial.get("trial_id") or not isinstance(record.get("last_result"), dict):
            continue
        last = record["last_result"]
        meta = json.loads(item[1])
        meta["last_result"] = last
        trial["status"] = "TERMINATED"
        item[0], item[1] = json.dumps(trial, indent=2), json.dumps(meta, indent=2)
        lines = [ln for ln in (_read(fs, f"{tdir}/result.json") or b"").splitlines() if ln.strip()]
        try:
            logged = json.loads(lines[-1]).get("training_iteration", 0) if lines else 0
        except ValueError:
            logged = 0
        if logged < last.get("training_iteration", 0):
            lines.append(json.dumps(last, cls=SafeFallbackEncoder).encode())
            _write_atomic(fs, f"{tdir}/result.json", b"\n".join(lines) + b"\n")
        marked += 1
    if marked:
        _write_atomic(fs, state_path, json.dumps(state).encode())
    return marked
