"""The experiment directory ``<storage_path>/<name>/``, local or remote (s3://, gs://, ...).

Layout::

    .selu-sweep.json  ownership marker: tool, version, name, creation time, experiment id
    config.yaml       the resolved config (passwords redacted), user-readable only
    data.json         the data: source (cifar10 | synthetic), detail, sizes, digest, official or not
    runs.jsonl        one line per start or resume: time, host, command line
    optuna.db         the Optuna studies (SQLite; or search.optuna_storage; see sweeps.studies)
    search/ confirm/  the Ray Tune experiments of the two stages
    report/           the analysis report

Only a directory holding the marker is ever deleted (``--overwrite``), and then only the
entries of this layout (``LAYOUT``): a directory holding anything else, or whose marker names
another directory (a copied marker), is refused and left whole. Only the Optuna studies whose
names carry its experiment id are deleted. One lock per experiment stops a second run of it; its
key is the directory's canonical path, so ``file:///dir``, ``/dir`` and a symlinked alias share it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import stat
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from analysis._files import redact_text
from analysis.contract import (
    CONFIG_FILE,
    DATA_FILE,
    FINAL_LOOK_FILE,
    MARKER,
    OPTUNA_DB,
    REDACTED,
    REPORT_DIR,
    RUNS_FILE,
    STAGES,
)
from sweeps.config import ConfigError, show

REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss")
# What a sweep puts in its directory, and so all that --overwrite deletes: the files and stage
# directories of the contract, W&B's offline runs (sweeps.trackers writes them here), the SQLite
# side files of optuna.db, and the temporary files of an interrupted atomic write.
LAYOUT = (MARKER, CONFIG_FILE, DATA_FILE, RUNS_FILE, FINAL_LOOK_FILE, OPTUNA_DB, REPORT_DIR, *STAGES, "wandb")
LAYOUT_PREFIXES = (f"{OPTUNA_DB}-", ".tmp-")
COPY_MARKER = ".selu-sweep-copy.json"  # in a local copy of a remote experiment (Experiment.local_copy)


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def local_path(path: str) -> str:
    """A ``file://`` URI as the local path it names; any other string unchanged."""
    if path.startswith("file://"):
        from urllib.parse import unquote

        return unquote(urlsplit(path).path) or "/"
    return path


def redact(url: str | None) -> str | None:
    """``scheme://user:secret@host/...`` -> ``scheme://user:***@host/...``; other strings unchanged.
    Never raises, whatever the string (see ``analysis._files.redact_text``)."""
    return redact_text(url) if url else url


def has_redacted_password(url: str | None) -> bool:
    if not url or "://" not in url:
        return False
    try:
        return urlsplit(url).password == REDACTED
    except ValueError:
        return False


def _fs(path: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(path if is_remote(path) else os.path.abspath(path))


def check_storage_path(storage_path: str) -> None:
    """A remote URI must parse; a local path must be (under) a writable directory. No writes."""
    if "\0" in storage_path:
        raise ConfigError("storage_path: holds a NUL character; give a plain directory or URI")
    try:
        storage_path.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"storage_path: {show(storage_path)} is not valid UTF-8; choose a path whose name "
                          f"is text") from None
    if is_remote(storage_path):
        try:
            parts = urlsplit(storage_path)
            parts.port  # noqa: B018  (parses the port too)
        except ValueError:
            raise ConfigError(f"storage_path: {show(redact(storage_path))} is not a valid URI; use e.g. "
                              f"s3://my-bucket/sweeps") from None
        if parts.scheme not in REMOTE_SCHEMES:
            raise ConfigError(f"storage_path: unsupported scheme '{parts.scheme}://'; use a local path or "
                              f"one of {', '.join(s + '://' for s in REMOTE_SCHEMES)}")
        if parts.scheme != "file" and not parts.netloc:
            raise ConfigError(f"storage_path: {redact(storage_path)} names no bucket; use e.g. "
                              f"s3://my-bucket/sweeps")
        return
    path = Path(local_path(storage_path)).expanduser().absolute()
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            raise ConfigError(f"storage_path: {probe} is a dangling link; fix or remove it")
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"storage_path: {probe} is a file, not a directory; choose another --storage-path")
    try:  # an unnamed temporary file (O_TMPFILE on Linux): a real test that leaves no trace, also for root
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError:
        raise ConfigError(f"storage_path: {probe} is not writable; choose a directory you can write "
                          f"with --storage-path") from None


def _atomic_local_write(path: str, data: bytes, mode: int) -> None:
    """Write to a temp file beside ``path``, fsync, rename: a crash or full disk leaves the old file."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Experiment:
    """One experiment directory; every read and write of it goes through here."""

    def __init__(self, storage_path: str, name: str):
        self.storage_path, self.name = storage_path, name
        self.remote = is_remote(storage_path)
        self.path = f"{storage_path.rstrip('/')}/{name}" if self.remote \
            else str(Path(local_path(storage_path)).expanduser().absolute() / name)

    def canonical(self) -> str:
        """The one name of this directory: symbolic links resolved (local), or the URI (remote)."""
        return self.path if self.remote else os.path.realpath(self.path)

    def __str__(self) -> str:
        return redact(self.path) or self.path

    def join(self, rel: str) -> str:
        return f"{self.path}/{rel}"

    def _exists(self, rel: str = "") -> bool:
        import pyarrow.fs

        fs, p = _fs(self.join(rel) if rel else self.path)
        try:
            return fs.get_file_info(p).type != pyarrow.fs.FileType.NotFound
        except OSError as exc:
            why = str(exc).splitlines()[0][:160] if str(exc) else exc.__class__.__name__
            raise ConfigError(f"storage_path: cannot reach {self} ({why})") from None

    def exists(self) -> bool:
        """Whether anything is there (a sweep or not)."""
        return self._exists()

    def has_sweep(self) -> bool:
        return any(self._exists(rel) for rel in (MARKER, CONFIG_FILE, *STAGES))

    def has_stage(self, stage: str) -> bool:
        return self._exists(stage)

    def read_text(self, rel: str, limit: int = 1_000_000) -> str | None:
        if not self._exists(rel):
            return None
        if not self.remote:  # only a regular file inside the directory: never a FIFO, never a link out
            from analysis._files import Unreadable, read_text

            try:
                return read_text(self.join(rel), limit, inside=self.path)
            except Unreadable as exc:
                raise ConfigError(f"{self.join(rel)}: {exc}; not written by selu-sweep: restore it or "
                                  f"start a new sweep with --name") from None
        fs, p = _fs(self.join(rel))
        try:
            with fs.open_input_stream(p) as fh:
                data = fh.read(limit + 1)
            if len(data) > limit:
                raise ConfigError(f"{self.join(rel)}: larger than {limit} bytes; not written by selu-sweep")
            return data.decode()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{redact(self.join(rel))}: unreadable ({exc.__class__.__name__}); "
                              f"restore it or start a new sweep with --name") from None

    def write_text(self, rel: str, text: str) -> None:
        """Atomic (local) write, readable by the user only."""
        if self.remote:
            fs, p = _fs(self.join(rel))
            fs.create_dir(os.path.dirname(p), recursive=True)
            with fs.open_output_stream(p) as fh:
                fh.write(text.encode())
            return
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        _atomic_local_write(self.join(rel), text.encode(), 0o600)

    def append_line(self, rel: str, line: str) -> None:
        old = self.read_text(rel) or ""
        self.write_text(rel, old + line.rstrip("\n") + "\n")

    # ---------------------------------------------------------------------------------------
    # Ownership

    def marker(self) -> dict | None:
        text = self.read_text(MARKER)
        if text is None:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict) or data.get("tool") != "selu-sweep" or \
                not isinstance(data.get("experiment_id"), str):
            raise ConfigError(f"{self.join(MARKER)}: damaged ownership marker; this directory is left "
                              f"alone: move it away or use another --name")
        return data

    def create(self) -> str:
        """Make the directory (user-only) with a new marker; returns the new experiment id."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            ver = version("selu-sweep")
        except PackageNotFoundError:
            ver = "unknown"
        exp_id = uuid.uuid4().hex[:12]
        if not self.remote:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        self.write_text(MARKER, json.dumps({"tool": "selu-sweep", "version": ver, "name": self.name,
                                            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                            "experiment_id": exp_id, "path": self.canonical()}, indent=1))
        return exp_id

    def _entries(self) -> list[str]:
        import pyarrow.fs

        if not self.remote:
            return sorted(os.listdir(self.path))
        fs, p = _fs(self.path)
        infos = fs.get_file_info(pyarrow.fs.FileSelector(p, recursive=False))
        return sorted(os.path.basename(i.path.rstrip("/")) for i in infos)

    def delete(self) -> None:
        """Delete the sweep's entries (``LAYOUT``), only if the directory holds our marker, that
        marker names this directory, and nothing else is there (else ConfigError, nothing touched)."""
        self.check_deletable()
        if self.remote:
            fs, p = _fs(self.path)
            fs.delete_dir(p)
            return
        import shutil

        for entry in self._entries():  # the marker last, so an interrupted delete can be repeated
            if entry == MARKER:
                continue
            full = os.path.join(self.path, entry)
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.unlink(full)
        os.unlink(os.path.join(self.path, MARKER))
        os.rmdir(self.path)

    def check_deletable(self) -> None:
        """What ``delete`` checks first: ConfigError unless the directory is this sweep's alone."""
        marker = self.marker()
        if marker is None:
            raise ConfigError(f"--overwrite: {self} was not created by selu-sweep (no {MARKER}); "
                              f"nothing deleted: move it away or choose another --name")
        named = marker.get("path", self.canonical())  # markers before 0.x recorded no path
        if marker.get("name") != self.name or named != self.canonical():
            raise ConfigError(f"--overwrite: the {MARKER} in {self} names another directory "
                              f"({show(redact(str(named)), 120)}); a copied marker: nothing deleted")
        foreign = [e for e in self._entries() if e not in LAYOUT and not e.startswith(LAYOUT_PREFIXES)]
        if foreign:
            raise ConfigError(f"--overwrite: {self} also holds {len(foreign)} entries a sweep does not "
                              f"write (first: {show(foreign[0], 60)}); nothing deleted: move them away "
                              f"or choose another --name")

    def local_copy(self, root: str | os.PathLike) -> Path:
        """Copy this (remote) experiment down for the analysis, into ``<root>/<name>/experiment``;
        returns ``<root>/<name>``. That directory is one this tool made (user-only, holding a copy
        marker that names this experiment): an existing directory of anyone else's is never written
        or deleted; the copy then goes into a new directory ``<root>/<name>-XXXXXX`` instead."""
        import shutil

        import pyarrow.fs

        root = Path(root)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        local = root / self.name
        stamp = json.dumps({"tool": "selu-sweep", "copy_of": self.path})
        try:
            local.mkdir(mode=0o700)
            _atomic_local_write(str(local / COPY_MARKER), stamp.encode(), 0o600)
        except FileExistsError:
            from analysis._files import Unreadable, read_text

            try:
                ours = not local.is_symlink() and read_text(local / COPY_MARKER, 4096) == stamp
            except Unreadable:
                ours = False
            if not ours:
                local = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=root))  # 0700, new
                _atomic_local_write(str(local / COPY_MARKER), stamp.encode(), 0o600)
        dest = local / "experiment"
        if dest.exists() or dest.is_symlink():
            if dest.is_symlink() or not dest.is_dir():
                dest.unlink()
            else:
                shutil.rmtree(dest)
        old = os.umask(0o077)  # every file of the copy user-only, as in the experiment
        try:
            fs, p = _fs(self.path)
            pyarrow.fs.copy_files(p, str(dest), source_filesystem=fs)
        finally:
            os.umask(old)
        return local

    # ---------------------------------------------------------------------------------------
    # Concurrency

    def _lock_path(self) -> Path:
        """Beside the directory, named after it: the canonical path, so every alias (``file://``, a
        symlinked storage path, ``..``) finds the same lock. Remote: a per-user lock on this host."""
        if self.remote:  # no atomic lock on object stores: guard against a second run on this host
            digest = hashlib.sha256(self.path.encode()).hexdigest()[:16]
            return Path.home() / ".cache" / "selu-sweep" / "locks" / f"{digest}.lock"
        canonical = Path(os.path.realpath(self.path))
        return canonical.parent / f".{canonical.name}.lock"

    @contextlib.contextmanager
    def lock(self):
        """Hold the experiment's lock for the ``with`` block; a second holder gets exit 2. The lock
        file is opened with O_NOFOLLOW: a symbolic link planted there is refused, never followed."""
        path = self._lock_path()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(f"{path}: the lock file is a symbolic link; remove it (it is not "
                                  f"followed)") from None
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError(f"{path}: the lock file is not a regular file; remove it")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                raise ConfigError(f"sweep '{self.name}' is already running ({holder}); wait for it, or "
                                  f"stop it before resuming") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"host {socket.gethostname()} pid {os.getpid()}".encode(), 0)
            yield
        finally:
            os.close(fd)  # closing releases the flock
