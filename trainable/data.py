"""CIFAR-10 loading, validation split, normalisation and a synthetic stand-in.

Three sources of real data:

* the Keras download cache (``keras.datasets.cifar10.load_data()``, the default),
* a local ``cifar-10-batches-py`` directory (or a directory that contains one),
* a local ``cifar-10-python.tar.gz`` (or a directory that contains one), read in place.

Pickle batches are untrusted input: they are read with :class:`_RestrictedUnpickler`, which
rebuilds numpy arrays and nothing else, and every batch is checked (keys, dtype, shape, label
range, counts) before it is used. Any problem is a :class:`DataError` naming the file.

Arrays are kept as ``uint8`` until a trial normalises its own copy (:func:`normalize`), so the
copy that travels through Ray's object store is 4x smaller than float32.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray

NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
BATCH_DIR = "cifar-10-batches-py"
ARCHIVE_NAME = "cifar-10-python.tar.gz"

Normalization = Literal["scale", "standardize"]
NORMALIZATIONS: tuple[str, ...] = ("scale", "standardize")

OFFLINE_HINT = (
    "Supply a local copy with --data-dir PATH (a 'cifar-10-batches-py' directory or "
    "'cifar-10-python.tar.gz'), or run `make smoke`, which works offline on synthetic data."
)


class DataError(ValueError):
    """Raised when a dataset cannot be loaded or fails validation."""


@dataclass(frozen=True)
class Dataset:
    """Train/validation/test arrays, ``uint8`` images (N, 32, 32, 3) and ``int64`` labels (N,).

    ``channel_mean``/``channel_std`` are computed on the training split only, so
    standardisation never sees validation or test pixels.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    channel_mean: np.ndarray
    channel_std: np.ndarray
    source: str

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


# --------------------------------------------------------------------------------------------
# Safe pickle reading


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays/dtypes (plus builtin containers).

    Anything else (``os.system``, ``builtins.eval``, arbitrary classes) raises
    ``pickle.UnpicklingError`` instead of executing.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol <= 2; no side effects
    }

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) not in self._ALLOWED:
            raise _ForbiddenGlobal(f"forbidden global {module}.{name}")
        if module == "_codecs":
            import codecs

            return codecs.encode
        if name in ("_reconstruct", "scalar"):
            return getattr(_multiarray, name)
        return getattr(np, name)


def _read_batch(fh: IO[bytes], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate one CIFAR-10 pickle batch; returns (N, 32, 32, 3) uint8 and (N,) labels."""
    try:
        batch = _RestrictedUnpickler(fh, encoding="bytes").load()
    except _ForbiddenGlobal as exc:
        raise DataError(f"{name}: refused to load ({exc}); it is not a CIFAR-10 batch") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            OSError) as exc:
        raise DataError(f"{name}: truncated or corrupt pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{name}: expected a dict batch, found {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{name}: missing 'data' or 'labels' (keys: {sorted(map(str, batch))})")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise DataError(f"{name}: 'data' must be a uint8 array, found "
                        f"{getattr(data, 'dtype', type(data).__name__)}")
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{name}: 'data' must have shape (N, 3072), found {data.shape}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{name}: 'labels' must be a list of integers") from None
    if len(labels) != len(data):
        raise DataError(f"{name}: {len(data)} images but {len(labels)} labels")
    if len(data) == 0:
        raise DataError(f"{name}: batch is empty")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DataError(f"{name}: labels must be in 0..9, found {labels.min()}..{labels.max()}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _concat(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _load_batch_dir(path: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    parts = []
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        fpath = path / name
        if not fpath.is_file():
            raise DataError(f"{fpath}: missing; a cifar-10-batches-py directory holds "
                            f"{', '.join(TRAIN_BATCHES)} and {TEST_BATCH}")
        with open(fpath, "rb") as fh:
            parts.append(_read_batch(fh, str(fpath)))
    return _concat(parts[:5]), parts[5]


def _load_archive(path: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = os.path.basename(member.name)
                if member.isfile() and base in (*TRAIN_BATCHES, TEST_BATCH):
                    fh = tar.extractfile(member)
                    # Read fully first so a truncated archive fails here, naming the member.
                    found[base] = _read_batch(io.BytesIO(fh.read()), f"{path}:{member.name}")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{path}: not a readable tar.gz archive ({exc})") from None
    missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH) if n not in found]
    if missing:
        raise DataError(f"{path}: archive lacks {', '.join(missing)}; expected the official "
                        f"{ARCHIVE_NAME}")
    return _concat([found[n] for n in TRAIN_BATCHES]), found[TEST_BATCH]


def resolve_data_dir(data_dir: str | os.PathLike) -> Path:
    """Find the CIFAR-10 copy that ``--data-dir`` names; raises DataError if there is none.

    Accepts a ``cifar-10-batches-py`` directory, a directory containing one, a
    ``.tar.gz`` file, or a directory containing ``cifar-10-python.tar.gz``.
    """
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise DataError(f"--data-dir {path}: no such file or directory")
    if path.is_file():
        return path
    for candidate in (path, path / BATCH_DIR):
        if (candidate / TEST_BATCH).exists() or (candidate / TRAIN_BATCHES[0]).exists():
            return candidate
    if (path / ARCHIVE_NAME).is_file():
        return path / ARCHIVE_NAME
    raise DataError(f"--data-dir {path}: holds neither '{BATCH_DIR}' nor '{ARCHIVE_NAME}'; "
                    f"point it at one of them")


def load_cifar10(data_dir: str | os.PathLike | None = None):
    """Return ``(x_train, y_train), (x_test, y_test)`` as uint8 (N,32,32,3) / int64 (N,).

    With ``data_dir=None`` this uses Keras's download cache (downloading once); without
    network and an empty cache it raises a DataError that says how to supply a local copy.
    It never falls back silently to other data.
    """
    if data_dir is not None:
        path = resolve_data_dir(data_dir)
        return _load_archive(path) if path.is_file() else _load_batch_dir(path)

    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as exc:  # urllib/HTTP/SSL/hash errors all mean "no usable download"
        raise DataError(f"CIFAR-10 is not in the Keras cache and could not be downloaded "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
                        f"{OFFLINE_HINT}") from None
    return ((np.asarray(x_train), np.asarray(y_train, dtype=np.int64).reshape(-1)),
            (np.asarray(x_test), np.asarray(y_test, dtype=np.int64).reshape(-1)))


# --------------------------------------------------------------------------------------------
# Synthetic data


def synthetic_cifar10(n_train: int = 1000, n_test: int = 200, seed: int = 0):
    """A small, seeded, learnable dataset with CIFAR-10's shapes, dtypes and 10 classes.

    Each class is a smooth random colour pattern (a 4x4 grid upsampled to 32x32); an image is
    its class pattern, randomly shifted by up to 2 pixels, plus pixel noise. The CNN separates
    the classes well above chance within one or two epochs, yet not trivially at once.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(NUM_CLASSES, 4, 4, 3))
    patterns = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)  # (10, 32, 32, 3)

    def sample(n: int):
        labels = np.arange(n) % NUM_CLASSES
        rng.shuffle(labels)
        shifts = rng.integers(-2, 3, size=(n, 2))
        images = np.empty((n, *IMAGE_SHAPE), dtype=np.float32)
        for i, (label, (dy, dx)) in enumerate(zip(labels, shifts)):
            images[i] = np.roll(patterns[label], (dy, dx), axis=(0, 1))
        images = 0.45 * images + 0.55 * rng.uniform(0, 255, size=images.shape)
        return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)

    return sample(n_train), sample(n_test)


# --------------------------------------------------------------------------------------------
# Split and normalisation


def stratified_split(labels: np.ndarray, val_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train_idx, val_idx)``: ``val_size`` examples held out, class proportions kept.

    Per-class quotas use the largest-remainder rule so they sum to exactly ``val_size``.
    """
    labels = np.asarray(labels).reshape(-1)
    n = len(labels)
    if not 0 <= val_size < n:
        raise DataError(f"val_size must be in [0, {n - 1}] for {n} training images, got {val_size}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * val_size / n
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: val_size - quota.sum()]:
        quota[i] += 1
    val_parts = []
    for cls, q in zip(classes, quota):
        members = np.flatnonzero(labels == cls)
        val_parts.append(rng.permutation(members)[:q])
    val_idx = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, dtype=int)
    mask = np.ones(n, dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


def normalize(x: np.ndarray, method: str, mean: np.ndarray | None = None,
              std: np.ndarray | None = None) -> np.ndarray:
    """Return a new float32 array: ``x/255`` (``scale``) or per-channel z-scores (``standardize``).

    Never modifies ``x`` (arrays from Ray's object store are read-only).
    """
    if method == "scale":
        return x.astype(np.float32) / np.float32(255.0)
    if method == "standardize":
        if mean is None or std is None:
            raise ValueError("standardize needs the training split's channel mean and std")
        return (x.astype(np.float32) - mean.astype(np.float32)) / std.astype(np.float32)
    raise ValueError(f"unknown normalization {method!r}; use one of {NORMALIZATIONS}")


def make_dataset(source: str = "cifar10", *, data_dir: str | os.PathLike | None = None,
                 val_size: int = 5000, split_seed: int = 0, train_subset: int | None = None,
                 synthetic_size: tuple[int, int] = (1000, 200), synthetic_seed: int = 0) -> Dataset:
    """Load a source (``cifar10`` or ``synthetic``), hold out a stratified validation split.

    ``train_subset`` keeps only the first N training images after the split (for quick runs;
    the validation and test sets are untouched).
    """
    if source == "cifar10":
        (x_train, y_train), (x_test, y_test) = load_cifar10(data_dir)
        name = f"cifar10:{data_dir}" if data_dir else "cifar10:keras-cache"
    elif source == "synthetic":
        (x_train, y_train), (x_test, y_test) = synthetic_cifar10(*synthetic_size, seed=synthetic_seed)
        name = f"synthetic:{synthetic_size[0]}+{synthetic_size[1]}:seed{synthetic_seed}"
    else:
        raise DataError(f"unknown data source {source!r}; use 'cifar10' or 'synthetic'")
    train_idx, val_idx = stratified_split(y_train, val_size, split_seed)
    if train_subset is not None:
        train_idx = train_idx[:train_subset]
    x_tr = x_train[train_idx]
    flat = x_tr.reshape(-1, 3).astype(np.float64)
    std = flat.std(axis=0)
    return Dataset(
        x_train=x_tr, y_train=y_train[train_idx],
        x_val=x_train[val_idx], y_val=y_train[val_idx],
        x_test=x_test, y_test=y_test,
        channel_mean=flat.mean(axis=0).astype(np.float32),
        channel_std=np.where(std > 0, std, 1.0).astype(np.float32),
        source=name,
    )
