"""Finding and reading a copy of CIFAR-10, as untrusted input.

Three sources, all read by the same hardened reader:

* the Keras download cache (``~/.keras/datasets/cifar-10-batches-py-target*``, the default;
  downloaded once with Keras's SHA-256 check when it is empty),
* a local ``cifar-10-batches-py`` directory (or a directory that contains one),
* a local ``cifar-10-python.tar.gz`` (or a directory that contains one), read in place.

Every file is untrusted input. Pickle batches are parsed by :mod:`trainable._safe_pickle`, which
runs no code, rebuilds only integer numpy arrays and checks each declared size against the bytes
in the file before anything is allocated; then every batch is checked against the CIFAR-10 layout
(keys, dtype, shape, label range, counts). File sizes are bounded (:data:`MAX_BATCH_BYTES`), tar
members are read only under their expected names and only as regular files, and the decompressed
stream is bounded (:data:`MAX_TAR_BYTES`) and read to its end so gzip's CRC is checked. Any
problem is a one-line :class:`DataError`: ``"<path>: what is wrong; how to fix"``.

Each load also reports whether the six batches are byte-identical to the official release
(per-file MD5s, as torchvision lists them) and a SHA-256 digest of the loaded arrays
(:func:`dataset_digest`). A copy that differs is loaded with a :class:`DataWarning`, not refused.

The split, normalisation and synthetic stand-in are :mod:`trainable.dataset`.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import os
import stat
import tarfile
import warnings
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from trainable import _safe_pickle

NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
BATCH_DIR = "cifar-10-batches-py"
ARCHIVE_NAME = "cifar-10-python.tar.gz"

# The official release (https://www.cs.toronto.edu/~kriz/cifar.html): per-file MD5s as
# torchvision's datasets/cifar.py lists them, and file sizes (a size mismatch skips the MD5).
OFFICIAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
OFFICIAL_SIZES = {
    "data_batch_1": 31035704, "data_batch_2": 31035320, "data_batch_3": 31035999,
    "data_batch_4": 31035696, "data_batch_5": 31035623, "test_batch": 31035526,
}

# Bounds on untrusted files. An official batch is ~31 MB (10,000 rows); a protocol-2 re-pickle
# from Python 3 spells the pixels as UTF-8 text and can reach ~1.5x that.
MAX_BATCH_BYTES = 64 * 2**20
MAX_ROWS_PER_BATCH = 10_000
MAX_ARCHIVE_BYTES = 256 * 2**20  # the official .tar.gz is 163 MiB
MAX_TAR_BYTES = 256 * 2**20  # ... and 178 MiB decompressed
MAX_TAR_MEMBERS = 1000  # it has 9
MAX_TAR_HEADER_BYTES = 64 * 2**10  # pax / GNU long-name headers (it has none)

# The Keras cache (keras.datasets.cifar10.load_data() in Keras 3.15 uses the same names and hash).
KERAS_CACHE_NAME = "cifar-10-batches-py-target"
KERAS_ORIGIN = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
KERAS_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"

OFFLINE_HINT = (
    "Supply a local copy with --data-dir PATH (a 'cifar-10-batches-py' directory or "
    "'cifar-10-python.tar.gz'), or run `make smoke`, which works offline on synthetic data."
)
FIX_LOCAL = "replace it with an intact copy of the official cifar-10-python.tar.gz (or its files)"


class DataError(ValueError):
    """Raised when a dataset cannot be loaded or fails validation (one line: path, problem, fix)."""


class DataWarning(UserWarning):
    """The data loaded but is not the official CIFAR-10 release."""


@dataclass(frozen=True)
class Cifar10Copy:
    """What :func:`read_cifar10` loaded: arrays as :func:`load_cifar10` returns them, plus provenance."""

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    source: str
    digest: str
    official: bool
    data_warnings: tuple[str, ...] = ()


def _clean(text: object, limit: int = 200) -> str:
    """``text`` as one printable line (tar member names and library messages are untrusted)."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text)[:limit])
    return out + ("..." if len(str(text)) > limit else "")


def _fail(name: str, problem: str, fix: str) -> DataError:
    return DataError(f"{_clean(name, 300)}: {problem}; {fix}")


def dataset_digest(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                   y_test: np.ndarray) -> str:
    """SHA-256 (hex) of the arrays: uint8 NHWC images and int64 little-endian labels, with shapes."""
    h = hashlib.sha256(b"cifar10-arrays-v1\n")
    for arr, dtype in ((x_train, "u1"), (y_train, "<i8"), (x_test, "u1"), (y_test, "<i8")):
        arr = np.ascontiguousarray(arr, dtype=dtype)
        h.update(f"{arr.dtype.str}{arr.shape}\n".encode())
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# One batch


@dataclass(frozen=True)
class _Batch:
    rows: np.ndarray  # (N, 3072) uint8 channel-major rows, a view into the file's bytes
    labels: np.ndarray  # (N,) int64
    md5: Future[str] | None  # the file's MD5, computed only when its size is the official one


def _parse_batch(buf: bytes, name: str, fix: str, batch: str, hasher: ThreadPoolExecutor) -> _Batch:
    """Parse and validate one CIFAR-10 pickle batch held in ``buf``.

    The MD5 for the official-release check runs on ``hasher``'s thread (hashlib releases the
    GIL), overlapping the parse, the next file's read and the decompression.
    """
    md5 = hasher.submit(_md5, buf) if len(buf) == OFFICIAL_SIZES.get(batch) else None
    try:
        obj = _safe_pickle.load(buf)
    except _safe_pickle.PickleRefused as exc:
        raise _fail(name, f"not a valid CIFAR-10 batch pickle ({_clean(exc)})", fix) from None
    if not isinstance(obj, dict):
        raise _fail(name, f"expected a dict batch, found {type(obj).__name__}", fix)
    keys = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in keys or "labels" not in keys:
        raise _fail(name, f"missing 'data' or 'labels' (keys: {_clean(sorted(map(str, keys))[:8])})", fix)
    data, labels = keys["data"], keys["labels"]
    if not isinstance(data, _safe_pickle.PickledArray) or data.array is None:
        raise _fail(name, f"'data' must be a uint8 array, found {type(data).__name__}", fix)
    data = data.array
    if data.dtype != np.uint8:
        raise _fail(name, f"'data' must be a uint8 array, found {data.dtype}", fix)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise _fail(name, f"'data' must have shape (N, 3072), found {data.shape}", fix)
    if not 1 <= len(data) <= MAX_ROWS_PER_BATCH:
        raise _fail(name, f"a batch holds 1 to {MAX_ROWS_PER_BATCH} images, found {len(data)}", fix)
    if isinstance(labels, _safe_pickle.PickledArray) and labels.array is not None \
            and labels.array.ndim == 1:
        labels = labels.array.astype(np.int64)
    elif isinstance(labels, list) and all(type(v) is int for v in labels):
        labels = np.array(labels, dtype=np.int64)
    else:
        raise _fail(name, "'labels' must be a list of integers", fix)
    if len(labels) != len(data):
        raise _fail(name, f"{len(data)} images but {len(labels)} labels", fix)
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= NUM_CLASSES:
        raise _fail(name, f"labels must be in 0..9, found {lo}..{hi}", fix)
    return _Batch(data, labels, md5)


def _md5(buf: bytes) -> str:
    return hashlib.md5(buf, usedforsecurity=False).hexdigest()


def _open_regular(path: Path, limit: int, fix: str) -> tuple[IO[bytes], int]:
    """An open regular file of at most ``limit`` bytes, and its size (FIFOs/devices are refused)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise _fail(str(path), f"cannot be opened ({_clean(exc.strerror)})", fix) from None
    info = os.fstat(fd)
    problem = None if stat.S_ISREG(info.st_mode) else "not a regular file"
    if problem is None and info.st_size > limit:
        problem = f"{info.st_size} bytes, more than the {limit} a CIFAR-10 file can have"
    if problem is not None:
        os.close(fd)
        raise _fail(str(path), problem, fix)
    return os.fdopen(fd, "rb"), info.st_size


def _read_file(path: Path, limit: int, fix: str) -> bytes:
    fh, size = _open_regular(path, limit, fix)
    with fh:
        try:
            buf = fh.read(size + 1)
        except OSError as exc:
            raise _fail(str(path), f"cannot be read ({_clean(exc)})", fix) from None
    if len(buf) != size:
        raise _fail(str(path), "changed size while being read", fix)
    return buf


# --------------------------------------------------------------------------------------------
# A whole copy: directory or archive


def _to_images(parts: list[np.ndarray]) -> np.ndarray:
    """Channel-major (N, 3072) rows of several batches -> one (N, 32, 32, 3) array.

    Filled one colour plane at a time: about 3x faster than copying a 4-D transpose.
    """
    out = np.empty((sum(len(p) for p in parts), 1024, 3), dtype=np.uint8)
    start = 0
    for rows in parts:
        planes = rows.reshape(-1, 3, 1024)
        for c in range(3):
            out[start:start + len(rows), :, c] = planes[:, c]
        start += len(rows)
    return out.reshape(-1, *IMAGE_SHAPE)


def _assemble(batches: dict[str, _Batch], source: str) -> Cifar10Copy:
    train = [batches[n] for n in TRAIN_BATCHES]
    x_train = _to_images([b.rows for b in train])
    y_train = np.concatenate([b.labels for b in train])
    x_test = _to_images([batches[TEST_BATCH].rows])
    y_test = batches[TEST_BATCH].labels
    differ = [n for n, b in batches.items() if b.md5 is None or b.md5.result() != OFFICIAL_MD5[n]]
    notes: tuple[str, ...] = ()
    if differ:
        notes = (f"{_clean(source, 300)}: {len(differ)} of 6 batch files differ from the official "
                 f"CIFAR-10 release ({', '.join(differ)}); results are not comparable with published "
                 f"CIFAR-10 numbers; use the official cifar-10-python.tar.gz for those",)
    return Cifar10Copy(train=(x_train, y_train), test=(x_test, y_test), source=source,
                       digest=dataset_digest(x_train, y_train, x_test, y_test),
                       official=not differ, data_warnings=notes)


def _load_batch_dir(path: Path, fix: str = FIX_LOCAL) -> Cifar10Copy:
    batches = {}
    with ThreadPoolExecutor(max_workers=1) as hasher:
        for name in (*TRAIN_BATCHES, TEST_BATCH):
            fpath = path / name
            if not fpath.exists() and not fpath.is_symlink():
                raise _fail(str(fpath), f"missing; a {BATCH_DIR} directory holds "
                            f"{', '.join(TRAIN_BATCHES)} and {TEST_BATCH}", fix)
            buf = _read_file(fpath, MAX_BATCH_BYTES, fix)
            batches[name] = _parse_batch(buf, str(fpath), fix, name, hasher)
        return _assemble(batches, str(path))


class _TooBig(Exception):
    pass


class _TarRefused(Exception):
    pass


class _BoundedReader:
    """A read-only stream that refuses to yield more than ``limit`` bytes (decompression bombs)."""

    def __init__(self, inner: IO[bytes], limit: int) -> None:
        self.inner, self.limit, self.count = inner, limit, 0

    def read(self, n: int = -1) -> bytes:
        room = self.limit - self.count + 1
        data = self.inner.read(room if n is None or n < 0 or n > room else n)
        self.count += len(data)
        if self.count > self.limit:
            raise _TooBig()
        return data


def _decompressed(fh: IO[bytes]) -> IO[bytes]:
    """gzip (the official format), bzip2 or none. Not xz: its header can make the decoder
    allocate a dictionary of up to 1.5 GiB before the first byte comes out."""
    magic = fh.read(6)
    fh.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=fh, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(fh)  # bounded memory: blocks are at most 900 kB
    if magic.startswith(b"\xfd7zXZ\x00"):
        raise _TarRefused("xz-compressed archives are not supported (use .tar.gz, .tar.bz2 or .tar)")
    return fh  # an uncompressed tar


class _StrictTarInfo(tarfile.TarInfo):
    """tarfile's header parser with bounds: tarfile itself would read a pax header or GNU long
    name of any declared size into memory, build a dict/list entry per record (millions from a
    small gzip), recurse once per chained extended header, and expand sparse maps."""

    def _proc_gnulong(self, tarfile):
        return self._extended(super()._proc_gnulong, tarfile)

    def _proc_pax(self, tarfile):
        return self._extended(super()._proc_pax, tarfile)

    def _extended(self, parse, tarfile):
        if self.size > MAX_TAR_HEADER_BYTES:
            raise _TarRefused(f"an extended tar header of {self.size} bytes (at most "
                              f"{MAX_TAR_HEADER_BYTES} allowed)")
        depth = getattr(tarfile, "_strict_header_depth", 0)
        if depth >= 4:
            raise _TarRefused("more than 4 chained extended tar headers")
        tarfile._strict_header_depth = depth + 1
        try:
            return parse(tarfile)
        finally:
            tarfile._strict_header_depth = depth

    def _refuse_sparse(self, *args):
        raise _TarRefused(f"member {_clean(self.name)} is a sparse file; sparse members are not allowed")

    _proc_sparse = _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _refuse_sparse


def _member_kind(member: tarfile.TarInfo) -> str | None:
    """None for a plain regular file, else what the member is."""
    if member.issparse():
        return "a sparse file"
    if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE):
        return None
    kinds = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link",
             tarfile.DIRTYPE: "a directory", tarfile.CHRTYPE: "a character device",
             tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a FIFO"}
    return kinds.get(member.type, f"of tar type {_clean(member.type)}")


def _load_archive(path: Path, fix: str = f"download the official {ARCHIVE_NAME} again") -> Cifar10Copy:
    """Read the six batches from a .tar(.gz|.bz2) by their expected member names only."""
    expected = {f"{BATCH_DIR}/{n}": n for n in (*TRAIN_BATCHES, TEST_BATCH)}
    batches: dict[str, _Batch] = {}
    elsewhere: list[str] = []
    fh, _ = _open_regular(path, MAX_ARCHIVE_BYTES, fix)
    with fh, ThreadPoolExecutor(max_workers=1) as hasher:
        try:
            stream = _BoundedReader(_decompressed(fh), MAX_TAR_BYTES)
            with tarfile.open(fileobj=stream, mode="r|", tarinfo=_StrictTarInfo, bufsize=2**20) as tar:
                for count, member in enumerate(tar, 1):
                    if count > MAX_TAR_MEMBERS:
                        raise _fail(str(path), f"more than {MAX_TAR_MEMBERS} members; not a CIFAR-10 "
                                    f"archive", fix)
                    key = member.name[2:] if member.name.startswith("./") else member.name
                    batch = expected.get(key)
                    if batch is None:
                        if os.path.basename(key) in expected.values():
                            elsewhere.append(member.name)
                        continue
                    where = f"{path}:{member.name}"
                    if batch in batches:
                        raise _fail(where, "appears twice in the archive", fix)
                    kind = _member_kind(member)
                    if kind is not None:
                        raise _fail(where, f"is {kind}, not a regular file", fix)
                    if member.size > MAX_BATCH_BYTES:
                        raise _fail(where, f"{member.size} bytes, more than the {MAX_BATCH_BYTES} "
                                    f"allowed", fix)
                    buf = tar.extractfile(member).read()
                    if len(buf) != member.size:
                        raise _fail(where, "truncated member", fix)
                    batches[batch] = _parse_batch(buf, where, fix, batch, hasher)
                while stream.read(2**20):  # to the end, so gzip checks its CRC and length
                    pass
        except _TarRefused as exc:
            raise _fail(str(path), str(exc), fix) from None
        except _TooBig:
            raise _fail(str(path), f"decompresses to more than {MAX_TAR_BYTES} bytes; not a CIFAR-10 "
                        f"archive", fix) from None
        except DataError:
            raise
        except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError,
                UnicodeError, OverflowError, IndexError, KeyError, RecursionError) as exc:
            detail = _clean(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 120)
            raise _fail(str(path), f"not a readable tar.gz archive ({detail})", fix) from None
    missing = [m for m, n in expected.items() if n not in batches]
    if missing:
        hint = f" (found {_clean(', '.join(elsewhere[:3]))} at other paths)" if elsewhere else ""
        raise _fail(str(path), f"archive lacks {', '.join(missing)}{hint}", fix)
    return _assemble(batches, str(path))


# --------------------------------------------------------------------------------------------
# Finding the copy


def _keras_dataset_dirs() -> list[Path]:
    """Where Keras 3 keeps downloads: $KERAS_HOME or ~/.keras (/tmp/.keras when not writable)."""
    if "KERAS_HOME" in os.environ:
        home = Path(os.environ["KERAS_HOME"]).expanduser()
    else:
        base = Path.home() if os.access(Path.home(), os.W_OK) else Path("/tmp")
        home = base / ".keras"
    dirs = [home / "datasets"]
    if not os.access(home, os.W_OK):  # keras.utils.get_file falls back to /tmp/.keras
        dirs.append(Path("/tmp/.keras/datasets"))
    return dirs


def _load_keras_cache() -> Cifar10Copy:
    """The Keras cache through the same reader; downloads (SHA-256 checked by Keras) when empty."""
    for datasets in _keras_dataset_dirs():
        archive = datasets / f"{KERAS_CACHE_NAME}_archive"
        if archive.exists() or archive.is_symlink():
            return _load_archive(archive, f"delete {archive} so the next run downloads a fresh copy")
        extracted = datasets / KERAS_CACHE_NAME / BATCH_DIR
        if extracted.is_dir():
            return _load_batch_dir(extracted, f"delete {extracted.parent} so the next run downloads a "
                                              f"fresh copy")
    import keras

    target = _keras_dataset_dirs()[0] / f"{KERAS_CACHE_NAME}_archive"
    try:
        path = Path(keras.utils.get_file(fname=target.name, origin=KERAS_ORIGIN, file_hash=KERAS_SHA256))
    except Exception as exc:  # urllib/HTTP/SSL/hash errors all mean "no usable download"
        detail = _clean(str(exc).splitlines()[0] if str(exc) else "", 160)
        raise DataError(f"{_clean(target)}: CIFAR-10 is not in the Keras cache and could not be downloaded "
                        f"({type(exc).__name__}: {detail}); {OFFLINE_HINT}") from None
    return _load_archive(path, f"delete {path} so the next run downloads a fresh copy")


def resolve_data_dir(data_dir: str | os.PathLike) -> Path:
    """Find the CIFAR-10 copy that ``--data-dir`` names; raises DataError if there is none.

    Accepts a ``cifar-10-batches-py`` directory, a directory containing one, a
    ``.tar.gz`` file, or a directory containing ``cifar-10-python.tar.gz``.
    """
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise DataError(f"--data-dir {_clean(path)}: no such file or directory; point it at a "
                        f"'{BATCH_DIR}' directory or '{ARCHIVE_NAME}'")
    if path.is_file():
        return path
    for candidate in (path, path / BATCH_DIR):
        if (candidate / TEST_BATCH).exists() or (candidate / TRAIN_BATCHES[0]).exists():
            return candidate
    if (path / ARCHIVE_NAME).is_file():
        return path / ARCHIVE_NAME
    raise DataError(f"--data-dir {_clean(path)}: holds neither '{BATCH_DIR}' nor '{ARCHIVE_NAME}'; "
                    f"point it at one of them")


def read_cifar10(data_dir: str | os.PathLike | None = None) -> Cifar10Copy:
    """Load CIFAR-10 with provenance: the arrays, a SHA-256 digest, and whether it is official.

    ``data_dir=None`` reads Keras's download cache (downloading once); without network and an
    empty cache it raises a DataError that says how to supply a local copy. It never falls back
    silently to other data. A copy that is not the official release loads with a warning line
    in ``data_warnings`` (not an error).
    """
    if data_dir is None:
        return _load_keras_cache()
    path = resolve_data_dir(data_dir)
    return _load_archive(path) if path.is_file() else _load_batch_dir(path)


def load_cifar10(data_dir: str | os.PathLike | None = None):
    """Return ``(x_train, y_train), (x_test, y_test)`` as uint8 (N,32,32,3) / int64 (N,).

    See :func:`read_cifar10` (which this wraps) for the sources; a non-official copy emits a
    :class:`DataWarning`.
    """
    copy = read_cifar10(data_dir)
    for note in copy.data_warnings:
        warnings.warn(note, DataWarning, stacklevel=2)
    return copy.train, copy.test


