"""Completion records: a trial's end, written durably into its own directory before the driver
moves on, and trusted by ``--resume``.

Tune saves its experiment state in the background, at most once a second, and copies it to
storage with a sync that skips a round while the previous copy runs: a driver killed in between
leaves a trial that had ended as RUNNING in the newest saved state, and ``--resume`` would train
it again. :class:`CompletionRecords` (a Tune callback) writes ``done.json`` with the trial's last
result when it ends; :func:`trust_completion_records` marks such trials ended in Tune's newest
state before the restore.

A trial still running at the kill is restored from the newest checkpoint in that state, which can
be older than the epochs its ``result.json`` (written by the driver as each result arrives)
already holds: the restored trial trains those epochs again and Tune appends them a second time
(``[1, 2, 2, 3]``, seen in the SIGKILL test). :func:`roll_back_unfinished_results` cuts such a
``result.json`` back to the restored checkpoint first, so each epoch is recorded once, by the run
that goes on (at most the epochs since Tune's last snapshot, about a second, are trained again).

This module is pickled by value into ``tuner.pkl`` (see
``sweeps.runner.PICKLED_BY_VALUE``), so it imports nothing else of this project at call time.
"""

from __future__ import annotations

import json
import logging
import os

from ray.tune import Callback

from analysis.contract import DONE_FILE, SNAPSHOT_DIR

logger = logging.getLogger(__name__)


class CompletionRecords(Callback):
    """Tune callback: when a trial ends (its last epoch, a scheduler stop or a divergence; Tune
    calls ``on_trial_complete`` after the searcher's own, before it marks the trial TERMINATED),
    write ``done.json`` (atomically) with its last result into the trial's directory.

    It also keeps a consistent copy of Tune's latest experiment snapshot (``on_step_end``: after
    the step's snapshot was written, in the same thread), which :func:`restore_snapshot` puts back
    before a restore. Tune's own copy in a local storage path is written file by file in the
    background: once truncated in place (an empty ``experiment_state-*.json`` seen in the SIGKILL
    test under load; now :func:`install_atomic_sync`), and still a possible mix of two snapshots.
    """

    def __init__(self):
        self._copied: int | None = None  # st_mtime_ns of the staging state file last copied

    def on_trial_complete(self, iteration, trials, trial, **info):
        write_completion_record(trial)

    def on_step_end(self, iteration, trials, **info):
        if trials:
            self._copied = copy_snapshot(trials[0].storage, self._copied)

    def on_experiment_end(self, trials, **info):  # after Tune's last snapshot of the run
        if trials:
            self._copied = copy_snapshot(trials[0].storage, self._copied)


def _snapshot_files(directory: str) -> list[str]:
    """Tune's experiment snapshot in a stage directory: the top-level .json/.pkl files that
    ``sync_down_experiment_state`` restores and their signatures (``sweeps.trust``), except
    ``tuner.pkl`` (written once, at the start)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(n for n in names if n.endswith((".json", ".pkl", ".json.sig", ".pkl.sig"))
                  and n not in ("tuner.pkl", "tuner.pkl.sig")
                  and not n.startswith(".") and os.path.isfile(os.path.join(directory, n)))


def _newest_state(names: list[str]) -> str | None:
    """The newest experiment state among a snapshot's names, matched as Tune's own restore matches
    it (``_find_newest_experiment_checkpoint``: ``fnmatch`` on ``CKPT_FILE_TMPL``), so never its
    ``.json.sig``, which sorts after it and is not JSON; None if there is none."""
    import fnmatch

    from ray.tune.execution.tune_controller import TuneController

    states = fnmatch.filter(names, TuneController.CKPT_FILE_TMPL.format("*"))
    return max(states) if states else None


def copy_snapshot(storage, copied: int | None) -> int | None:
    """Copy the staging directory's snapshot into ``<stage>/.last-snapshot/`` when it changed;
    returns the state file's mtime copied (local storage only; an object store's PUT is whole)."""
    import pyarrow.fs

    if not isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
        return copied
    staging, target = storage.experiment_driver_staging_path, storage.experiment_fs_path
    names = _snapshot_files(staging)
    state = _newest_state(names)
    if state is None or os.path.realpath(staging) == os.path.realpath(target):
        return copied
    try:
        mtime = os.stat(os.path.join(staging, state)).st_mtime_ns
        if mtime == copied:
            return copied
        blobs = {}
        for name in names:
            with open(os.path.join(staging, name), "rb") as f:
                blobs[name] = f.read()
        json.loads(blobs[state])  # written by this thread just before: whole, but check
    except (OSError, ValueError) as exc:
        logger.warning("could not keep a copy of the experiment snapshot (%s); the previous "
                       "copy stays", exc)
        return copied
    _write_slot(os.path.join(target, SNAPSHOT_DIR), blobs, _iteration(blobs[state]))
    return mtime


# The copy is kept in two slots, <stage>/.last-snapshot/{a,b}/, each closed by a manifest (the
# snapshot's step and a SHA-256 of every file) written last: a new copy goes into the slot not
# holding the newest whole one, so a kill while copying leaves that one intact. Tune's snapshot is
# several files (the trials, the searcher's state, its trial counter) written and copied one by
# one; a mix of two snapshots restored Tune's trial counter ahead of its trial list, and the
# resumed search ended 2 trials short (the SIGKILL loop, reuse on, run 10).
_SLOTS = ("a", "b")
_MANIFEST = "manifest.json"


def _manifest(slot: str, verify: bool = True) -> dict | None:
    """A slot's manifest if every file it lists is there with its hash (a whole, consistent copy).
    ``verify=False`` only reads the manifest: enough to tell which slot :func:`_write_slot` closed
    last (it removes a slot's manifest before writing into it and writes it after the files)."""
    import hashlib

    try:
        with open(os.path.join(slot, _MANIFEST), "rb") as f:
            manifest = json.loads(f.read())
        for name, digest in manifest["files"].items() if verify else ():
            with open(os.path.join(slot, os.path.basename(name)), "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != digest:
                    return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return manifest if isinstance(manifest.get("step"), int) else None


def _newest_slot(snap: str, verify: bool = True) -> tuple[str, dict] | None:
    """The slot holding the newest whole copy, with its manifest; None if neither is whole."""
    whole = [(m["step"], os.path.join(snap, s), m) for s in _SLOTS
             if (m := _manifest(os.path.join(snap, s), verify)) is not None]
    if not whole:
        return None
    _, slot, manifest = max(whole, key=lambda t: t[0])
    return slot, manifest


def _write_slot(snap: str, blobs: dict[str, bytes], step: int | None) -> None:
    import hashlib

    if step is None:
        return
    newest = _newest_slot(snap, verify=False)  # once a second on the driver: no re-hashing here
    slot = os.path.join(snap, _SLOTS[0] if newest is None or newest[0].endswith(f"/{_SLOTS[1]}")
                        else _SLOTS[1])
    os.makedirs(slot, exist_ok=True)
    try:
        os.remove(os.path.join(slot, _MANIFEST))  # open the slot first: it is not whole while written
    except FileNotFoundError:
        pass
    for name in _snapshot_files(slot):
        if name not in blobs:
            os.remove(os.path.join(slot, name))
    for name, data in blobs.items():
        _write_local(os.path.join(slot, name), data)
    manifest = {"step": step, "files": {n: hashlib.sha256(d).hexdigest() for n, d in blobs.items()}}
    _write_local(os.path.join(slot, _MANIFEST), json.dumps(manifest).encode())


def _iteration(data: bytes | None) -> int | None:
    """The controller step a snapshot was taken at (its ``runner_data._iteration``); None if the
    file is missing or not whole."""
    try:
        value = json.loads(data)["runner_data"]["_iteration"] if data else None
    except (ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) else None


def restore_snapshot(stage_path: str) -> list[str]:
    """Before a restore: put the newest whole copy of Tune's snapshot (``<stage>/.last-snapshot/``,
    consistent by its manifest) back over Tune's own files where they differ. Tune's own copy in
    storage is written file by file in the background: after a kill it can be cut short, or a mix
    of two snapshots, even when its state file is a step newer; the copy is one consistent
    snapshot (at most the step being copied at the kill is lost: a trial that ended in it has its
    completion record, one that ran on is cut back to its checkpoint). Returns the names restored."""
    found = _newest_slot(os.path.join(stage_path, SNAPSHOT_DIR))
    if found is None:
        return []
    slot, manifest = found

    def read(path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError:
            return None

    names = sorted(n for n in manifest["files"] if n in _snapshot_files(slot))  # plain names only
    restored = []
    for name in names:
        data = read(os.path.join(slot, os.path.basename(name)))
        if data is not None and read(os.path.join(stage_path, name)) != data:
            _write_local(os.path.join(stage_path, name), data)
            restored.append(name)
    return restored


def _atomic_upload(local_path: str, fs, fs_path: str, exclude=None, *, _tune=None) -> None:
    """Tune's staging-to-storage copy (``ray.train._internal.storage._upload_to_fs_path``) for a
    local storage path, made kill-safe: each file is copied to a temporary name and renamed over
    the old one, so a SIGKILL mid-copy leaves the previous whole file, never an empty one. Tune's
    own copy (``pyarrow.fs.copy_files``) truncates and rewrites every file of every trial in place
    at every snapshot: the SIGKILL test found a finished trial's ``result.json`` empty (0 bytes)
    after a kill, which no resume would rewrite. A file whose size and mtime match the copy's
    (stamped from the source, as rsync's quick check) is not copied again; each directory's
    ``.sig`` files go before the files they sign. Other filesystems
    (an object store writes each object whole) and uploads with ``exclude`` go to Tune's own."""
    import pyarrow.fs

    if not isinstance(fs, pyarrow.fs.LocalFileSystem) or exclude or not os.path.isdir(local_path):
        return _tune(local_path=local_path, fs=fs, fs_path=fs_path, exclude=exclude)
    for root, _dirs, files in os.walk(local_path):
        rel = os.path.relpath(root, local_path)
        target = fs_path if rel == "." else os.path.join(fs_path, rel)
        os.makedirs(target, exist_ok=True)
        # Signatures first (sweeps.trust): a .sig lists its file's previous versions too, so a kill
        # between the two leaves a pair that verifies; the other order would not.
        for name in sorted(files, key=lambda n: not n.endswith(".sig")):
            src, dst = os.path.join(root, name), os.path.join(target, name)
            try:
                st = os.stat(src)
                old = os.stat(dst) if os.path.exists(dst) else None
                if old is not None and (old.st_size, old.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
                    continue
                with open(src, "rb") as f:
                    data = f.read()
            except FileNotFoundError:  # removed while walking (Tune deletes old snapshots)
                continue
            tmp = os.path.join(target, f".{name}.tmp-{os.getpid()}")  # hidden: never taken for a snapshot
            with open(tmp, "wb") as f:
                f.write(data)
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))  # changed during the read: copied again
            os.replace(tmp, dst)


def install_atomic_sync() -> None:
    """Make this driver's Tune copy its staging directory to a local storage path with
    :func:`_atomic_upload` (once per process)."""
    import functools

    from ray.train._internal import storage

    if getattr(storage._upload_to_fs_path, "_selu_atomic", False):
        return
    upload = functools.partial(_atomic_upload, _tune=storage._upload_to_fs_path)
    upload._selu_atomic = True
    storage._upload_to_fs_path = upload


def _write_local(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fs_and_path(path: str):
    from ray.train._internal.storage import get_fs_and_path

    return get_fs_and_path(path)


def _write_atomic(fs, path: str, data: bytes) -> None:
    import pyarrow.fs

    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        _write_local(path, data)
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


def _newest_state_of(stage_path: str):
    """(fs, stage fs path, path of Tune's newest state file, its parsed JSON) of a stage; the
    last two None if it has none (matched as Tune's own restore matches it)."""
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    fs, fs_path = _fs_and_path(stage_path)
    state_path = _find_newest_experiment_checkpoint(fs_path, fs=fs)
    raw = _read(fs, state_path) if state_path else None
    return fs, fs_path, state_path, (json.loads(raw) if raw is not None else None)


def trust_completion_records(stage_path: str) -> int:
    """Mark as TERMINATED, in the newest experiment state of a stage, every unfinished trial whose
    ``done.json`` says it ended (with its last result), and append that result to its
    ``result.json`` if the snapshot of that file predates it. Returns how many trials it marked.

    Tune's state file is JSON; each trial is a JSON string (status, trial_id, relative_logdir) and
    its run metadata another (last_result). Nothing else is changed.
    """
    from ray.tune.utils.util import SafeFallbackEncoder

    fs, fs_path, state_path, state = _newest_state_of(stage_path)
    if state is None:
        return 0
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
        lines = [ln for ln in (_read(fs, f"{tdir}/result.json") or b"").splitlines()
                 if ln.strip() and _iteration_of(ln) is not None]  # not a line cut short by a kill
        logged = _iteration_of(lines[-1]) if lines else 0
        if logged < last.get("training_iteration", 0):
            lines.append(json.dumps(last, cls=SafeFallbackEncoder).encode())
            _write_atomic(fs, f"{tdir}/result.json", b"\n".join(lines) + b"\n")
        marked += 1
    if marked:
        _write_atomic(fs, state_path, json.dumps(state).encode())
    return marked


def _restored_iteration(run_metadata: str) -> int:
    """The ``training_iteration`` of the checkpoint Tune restores a trial from (the latest one its
    run metadata holds: ``Trial.checkpoint``), 0 when it has none (it starts again)."""
    from ray.tune.utils.serialization import _loads_with_cloudpickle

    manager = _loads_with_cloudpickle(run_metadata).get("checkpoint_manager")
    latest = getattr(manager, "latest_checkpoint_result", None)
    metrics = getattr(latest, "metrics", None) or {}
    value = metrics.get("training_iteration", 0)
    return int(value) if isinstance(value, (int, float)) else 0


def _iteration_of(line: bytes) -> float | None:
    """A ``result.json`` line's ``training_iteration`` (0 if it has none); None if the line is not
    a whole JSON object (cut short by a kill)."""
    try:
        value = json.loads(line).get("training_iteration", 0)
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, (int, float)) else 0


def _kept_json_lines(data: bytes, restored: int) -> list[bytes]:
    return [ln for ln in data.splitlines() if ln.strip()
            and (it := _iteration_of(ln)) is not None and it <= restored]


def _kept_csv_lines(data: bytes, restored: int) -> list[bytes]:
    """``progress.csv`` (Tune's CSV logger, also restored from storage and appended): the header
    and the rows whose ``training_iteration`` is at most ``restored``."""
    import csv
    import io

    lines = [ln for ln in data.splitlines() if ln.strip()]
    if not lines:
        return []
    header = next(csv.reader([lines[0].decode("utf-8", "replace")]))
    if "training_iteration" not in header:
        return lines
    col, kept = header.index("training_iteration"), [lines[0]]
    for ln in lines[1:]:
        row = next(csv.reader(io.StringIO(ln.decode("utf-8", "replace"))), [])
        try:
            if len(row) == len(header) and float(row[col]) <= restored:
                kept.append(ln)
        except ValueError:
            continue
    return kept


_LOGS = (("result.json", _kept_json_lines), ("progress.csv", _kept_csv_lines))  # Tune's per-epoch logs


def _cut_logs(fs, tdir: str, restored: int) -> bool:
    """Cut the per-epoch logs in ``tdir`` (on ``fs``) back to ``restored``; whether one changed."""
    changed = False
    for name, keep in _LOGS:
        data = _read(fs, f"{tdir}/{name}")
        if not data:
            continue
        kept = keep(data, restored)
        if len(kept) < len([ln for ln in data.splitlines() if ln.strip()]):
            _write_atomic(fs, f"{tdir}/{name}", b"".join(ln + b"\n" for ln in kept))
            changed = True
    return changed


def _staging_dir(trial_json: str) -> str | None:
    """The trial's directory in this driver's staging area, if it exists: Tune's loggers append to
    it and copy it over the storage's (a stage restored in the same Ray session, e.g. on a cluster
    that outlived the killed driver, still finds the old lines there)."""
    from ray.tune.utils.serialization import _loads_with_cloudpickle

    try:
        path = _loads_with_cloudpickle(trial_json)["storage"].trial_driver_staging_path
    except Exception:  # no Ray session, no trial directory name: nothing staged here
        return None
    return path if os.path.isdir(path) else None


def roll_back_unfinished_results(stage_path: str) -> int:
    """Cut the per-epoch logs (``result.json``, ``progress.csv``) of every trial Tune's newest
    state will run again (RUNNING, PENDING, PAUSED, ERROR: ``resume_unfinished``,
    ``resume_errored``) back to the checkpoint it is restored from: rows with a larger
    ``training_iteration`` are dropped (they are trained and logged again), in the storage and in
    this driver's staging copy. Call it after :func:`trust_completion_records`, on a verified state
    (it unpickles the trials' run metadata, as the restore does). Returns how many trials it cut."""
    import pyarrow.fs

    fs, fs_path, _, state = _newest_state_of(stage_path)
    if state is None:
        return 0
    cut = 0
    for item in state.get("trial_data", []):
        trial = json.loads(item[0])
        if trial.get("status") not in ("RUNNING", "PENDING", "PAUSED", "ERROR"):
            continue
        restored = _restored_iteration(item[1])
        tdir = f"{fs_path}/{os.path.basename(str(trial.get('relative_logdir', '')))}"
        changed = _cut_logs(fs, tdir, restored)
        staging = _staging_dir(item[0])
        if staging is not None:
            changed = _cut_logs(pyarrow.fs.LocalFileSystem(), staging, restored) or changed
        cut += changed
    return cut
