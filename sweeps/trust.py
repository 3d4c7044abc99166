"""The resume trust boundary: what the sweep unpickles carries an HMAC that only this user can make.

``--resume`` and ``--confirm-only`` restore a stage with ``tune.Tuner.restore``, which unpickles
``tuner.pkl``, the searcher's state (``searcher-state-*.pkl``), the callbacks' state and Tune's
experiment state (``experiment_state-*.json``, whose values may be cloudpickled). Unpickling runs
code: anyone who can write to the experiment directory (a shared bucket, a shared disk) could run
code on the head node. So each of these files gets a signature file beside it, ``<file>.sig``: an
HMAC-SHA256 of the file's name and bytes, keyed by a per-user secret, ``~/.config/selu-sweep/
resume.key`` (``$XDG_CONFIG_HOME`` honoured; mode 0600, created on first use). A stage is restored
only when every such file verifies; otherwise the run stops with exit 2 and says which file and why.

Signing happens where the files are written: right after Tune saves its experiment state (before
it is copied to the storage path, so the signatures travel with the files), and after the tuner's
``tuner.pkl`` is written. Trusted, then: this user's key, and the code installed where the sweep
runs. Not trusted: every file in the experiment directory. To resume on another host, copy the
key there (same mode). To resume a sweep you did not run, or one made before signatures existed,
check it first and then sign it yourself: ``python -m sweeps.trust DIR``.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import secrets
import stat
import sys
from pathlib import Path

from sweeps.config import ConfigError

SUFFIX = ".sig"
KEY_NAME = "resume.key"
MAX_SIGNED_BYTES = 1 << 30  # a tuner.pkl or experiment state is kilobytes to megabytes
_DOMAIN = b"selu-sweep resume v1\0"


def key_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "selu-sweep" / KEY_NAME


def _key() -> bytes:
    """This user's secret: read, or made on first use (0600, in a 0700 directory)."""
    path = key_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        why = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise ConfigError(f"{path}: cannot read the resume key ({why}); remove it to make a new "
                          f"one") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise ConfigError(f"{path}: the resume key must be a regular file of yours with mode 0600 "
                              f"(chmod 600 {path})")
        key = fh.read(200).strip()
    if len(key) < 32:
        raise ConfigError(f"{path}: the resume key is too short; remove it to make a new one")
    return key


def signature(name: str, data: bytes, key: bytes | None = None) -> str:
    """HMAC-SHA256 over the file's base name and bytes (a signature cannot move to another file)."""
    mac = hmac.new(key or _key(), _DOMAIN + name.encode() + b"\0", hashlib.sha256)
    mac.update(data)
    return mac.hexdigest()


def is_signed_file(name: str) -> bool:
    """The files of a stage that Tune's restore unpickles (or decodes with pickled values)."""
    return name.endswith(".pkl") or (name.endswith(".json") and "state" in name)


# --------------------------------------------------------------------------------------------
# Files, local or remote


def _fs(path: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(path if "://" in path else os.path.abspath(path))


def _list(directory: str) -> list[str]:
    import pyarrow.fs

    fs, p = _fs(directory)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(p, recursive=False))
    except (FileNotFoundError, OSError):
        return []
    return sorted(os.path.basename(i.path.rstrip("/")) for i in infos if i.type == pyarrow.fs.FileType.File)


def _read(path: str, limit: int = MAX_SIGNED_BYTES) -> bytes:
    if "://" not in path:
        from analysis._files import Unreadable, read_bytes

        try:
            return read_bytes(path, limit)
        except Unreadable as exc:
            raise ConfigError(f"{path}: {exc}; the stage cannot be trusted: start a new sweep with "
                              f"--name") from None
    fs, p = _fs(path)
    with fs.open_input_stream(p) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ConfigError(f"{path}: larger than {limit} bytes; not written by selu-sweep")
    return data


def _write(path: str, data: bytes) -> None:
    if "://" not in path:
        from sweeps.experiment import _atomic_local_write

        _atomic_local_write(path, data, 0o600)
        return
    fs, p = _fs(path)
    with fs.open_output_stream(p) as fh:
        fh.write(data)


# --------------------------------------------------------------------------------------------
# Sign and verify


KEEP_SIGNATURES = 3  # a .sig lists the newest versions' signatures, newest first (see sign_file)
MAX_SIG_BYTES = 200 * KEEP_SIGNATURES  # what is read of a .sig: its signatures, with room to spare


def _signatures(path: str) -> list[str]:
    """The signatures listed in ``<path>.sig`` (none if it is missing or unreadable)."""
    try:
        text = _read(path + SUFFIX, MAX_SIG_BYTES).decode(errors="replace")
    except (ConfigError, OSError):
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def sign_file(path: str, key: bytes | None = None) -> str:
    """Write ``<path>.sig`` for the file as it is now, keeping the previous versions' signatures
    after it (``KEEP_SIGNATURES`` in all). Tune uploads a new experiment state and its .sig to
    remote storage as separate files, in the background: a driver killed between the two leaves
    a state one version older or newer than the .sig's first line, and the list still holds it.
    Returns the .sig's text."""
    name = os.path.basename(path)
    new = signature(name, _read(path), key)
    kept = [new, *[old for old in _signatures(path) if old != new]][:KEEP_SIGNATURES]
    text = "\n".join(kept) + "\n"
    _write(path + SUFFIX, text.encode())
    return text


def sign_dir(directory: str) -> int:
    """Sign every file of a stage directory that a restore unpickles; returns how many."""
    key = _key()
    names = [n for n in _list(directory) if is_signed_file(n)]
    for n in names:
        sign_file(f"{directory.rstrip('/')}/{n}", key)
    return len(names)


def verify_dir(directory: str) -> None:
    """ConfigError (exit 2) unless every file of the stage that a restore would unpickle carries
    a valid signature of this user's key. Reads the files; unpickles nothing."""
    from sweeps.experiment import redact

    key = _key()
    names = _list(directory)
    signed = [n for n in names if is_signed_file(n)]
    shown = redact(directory.rstrip("/"))
    fix = (f"it was changed after the sweep wrote it, or written by someone else (or before "
           f"selu-sweep signed its files); nothing was unpickled. If you trust it, sign it with "
           f"`python -m sweeps.trust {shown}`, else start a new sweep with --name")
    for n in signed:
        path = f"{directory.rstrip('/')}/{n}"
        if n + SUFFIX not in names:
            raise ConfigError(f"{shown}/{n}: refused: no signature ({n}{SUFFIX}); {fix}")
        actual = signature(n, _read(path), key)
        if not any(hmac.compare_digest(expected, actual) for expected in _signatures(path)):
            raise ConfigError(f"{shown}/{n}: refused: its signature does not match ({n}{SUFFIX}); {fix}")


def _push_signatures(staging: str, storage) -> None:
    """Write the staging directory's .sig files to remote storage now, before Tune's background
    upload of the state they sign: with the previous versions listed in each, whichever of a
    state and its .sig arrives first, the pair in storage verifies. (Local storage needs no
    push: the staging directory is copied whole, and a cut-short copy is put back from the
    completion records' snapshot.)"""
    import pyarrow.fs

    if isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
        return
    target = storage.experiment_fs_path
    for n in _list(staging):
        if n.endswith(SUFFIX) and is_signed_file(n[: -len(SUFFIX)]):
            with open(os.path.join(staging, n), "rb") as fh:
                data = fh.read(MAX_SIG_BYTES + 1)
            with storage.storage_filesystem.open_output_stream(f"{target.rstrip('/')}/{n}") as out:
                out.write(data)


def install() -> None:
    """Make Tune sign its experiment state each time it saves it, in the driver's staging
    directory, before the copy to the storage path (so each snapshot travels with its signatures)."""
    from ray.tune.execution.tune_controller import TuneController

    if getattr(TuneController.save_to_dir, "_selu_signs", False):
        return
    original = TuneController.save_to_dir

    def save_to_dir(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        staging = self._storage.experiment_driver_staging_path
        sign_dir(staging)
        _push_signatures(staging, self._storage)
        return result

    save_to_dir._selu_signs = True
    save_to_dir.__wrapped__ = original  # Tune's own, for a test that needs an unsigned stage
    TuneController.save_to_dir = save_to_dir


def main(argv: list[str] | None = None) -> int:
    """``python -m sweeps.trust EXPERIMENT_OR_STAGE_DIR``: sign a sweep you have checked and trust."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m sweeps.trust EXPERIMENT_DIR  (sign a sweep you trust, so --resume "
              "accepts it)", file=sys.stderr)
        return 2
    from analysis.contract import STAGES

    target = argv[0].rstrip("/")
    stages = [f"{target}/{s}" for s in STAGES if _list(f"{target}/{s}")] or [target]
    try:
        count = sum(sign_dir(d) for d in stages)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"signed {count} file(s) under {target} with {key_path()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
