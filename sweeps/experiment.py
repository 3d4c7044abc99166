"""The experiment directory ``<storage_path>/<name>/``, local or remote (s3://, gs://, ...).

Layout::

    .selu-sweep.json  ownership marker: tool, version, name, creation time, experiment id
    config.yaml       the resolved config (passwords redacted), user-readable only
    data.json         the data: source (cifar10 | synthetic), detail, sizes, digest, official or not
    runs.jsonl        one line per start or resume: time, host, command line
    optuna.db         the Optuna studies (SQLite; or search.optuna_storage; see sweeps.studies)
    search/ confirm/  the Ray Tune experiments of the two stages
    report/           the analysis report

Only a directory holding the marker is ever deleted (``--overwrite``), and only the Optuna
studies whose names carry its experiment id. One lock per experiment stops a second run of it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from analysis.contract import CONFIG_FILE, MARKER, STAGES
from sweeps.config import ConfigError

REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss")


def is_remote(path: str) -> bool:
    return "://" in path


def redact(url: str | None) -> str | None:
    """``scheme://user:secret@host/...`` -> ``scheme://user:***@host/...``; other strings unchanged."""
    if not url or "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def has_redacted_password(url: str | None) -> bool:
    return bool(url) and "://" in url and urlsplit(url).password == "***"


def _fs(path: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(path if is_remote(path) else os.path.abspath(path))


def check_storage_path(storage_path: str) -> None:
    """A remote URI must parse; a local path must be (under) a writable directory. No writes."""
    if is_remote(storage_path):
        parts = urlsplit(storage_path)
        if parts.scheme not in REMOTE_SCHEMES + ("file",):
            raise ConfigError(f"storage_path: unsupported scheme '{parts.scheme}://'; use a local path or "
                              f"one of {', '.join(s + '://' for s in REMOTE_SCHEMES)}")
        if parts.scheme != "file" and not parts.netloc:
            raise ConfigError(f"storage_path: {redact(storage_path)} names no bucket; use e.g. "
                              f"s3://my-bucket/sweeps")
        return
    path = Path(storage_path).expanduser().absolute()
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
            else str(Path(storage_path).expanduser().absolute() / name)

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
        self.write_text(MARKER, json.dumps({"tool": "selu-sweep", "version": ver, "name": self.name,
                                            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                            "experiment_id": exp_id}, indent=1))
        return exp_id

    def delete(self) -> None:
        """Delete the directory, only if it holds our marker (else ConfigError, nothing touched)."""
        if self.marker() is None:
            raise ConfigError(f"--overwrite: {self} was not created by selu-sweep (no {MARKER}); "
                              f"nothing deleted: move it away or choose another --name")
        if self.remote:
            fs, p = _fs(self.path)
            fs.delete_dir(p)
        else:
            import shutil

            shutil.rmtree(self.path)

    def copy_to_local(self, dest: Path) -> Path:
        import pyarrow.fs

        fs, p = _fs(self.path)
        pyarrow.fs.copy_files(p, str(dest), source_filesystem=fs)
        return dest

    # ---------------------------------------------------------------------------------------
    # Concurrency

    def _lock_path(self) -> Path:
        if self.remote:  # no atomic lock on object stores: guard against a second run on this host
            digest = hashlib.sha256(self.path.encode()).hexdigest()[:16]
            return Path.home() / ".cache" / "selu-sweep" / "locks" / f"{digest}.lock"
        return Path(self.path).parent / f".{self.name}.lock"

    @contextlib.contextmanager
    def lock(self):
        """Hold the experiment's lock for the ``with`` block; a second holder gets exit 2."""
        path = self._lock_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
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
