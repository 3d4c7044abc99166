"""The data a trial trains on: a stratified validation split of CIFAR-10 (or of a synthetic
stand-in), and normalisation.

Arrays are kept as ``uint8`` until a trial normalises its own copy (:func:`normalize`), so the
copy that travels through Ray's object store is 4x smaller than float32. Reading CIFAR-10 itself
is :mod:`trainable.cifar10`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from trainable.cifar10 import (
    IMAGE_SHAPE,
    NUM_CLASSES,
    DataError,
    DataWarning,
    dataset_digest,
    read_cifar10,
)

Normalization = Literal["scale", "standardize"]
NORMALIZATIONS: tuple[str, ...] = ("scale", "standardize")


@dataclass(frozen=True)
class Dataset:
    """Train/validation/test arrays, ``uint8`` images (N, 32, 32, 3) and ``int64`` labels (N,).

    ``channel_mean``/``channel_std`` are computed on the training split only, so
    standardisation never sees validation or test pixels. ``digest`` is
    :func:`dataset_digest` of the loaded train+test arrays before the split; ``official`` says
    whether they are the official CIFAR-10 files (None for synthetic data); ``data_warnings``
    holds one line per problem that did not stop the load.
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
    digest: str = ""
    official: bool | None = None
    data_warnings: tuple[str, ...] = ()

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


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
        copy = read_cifar10(data_dir)
        (x_train, y_train), (x_test, y_test) = copy.train, copy.test
        name = f"cifar10:{data_dir}" if data_dir else "cifar10:keras-cache"
        digest, official, notes = copy.digest, copy.official, copy.data_warnings
        for note in notes:
            warnings.warn(note, DataWarning, stacklevel=2)
    elif source == "synthetic":
        (x_train, y_train), (x_test, y_test) = synthetic_cifar10(*synthetic_size, seed=synthetic_seed)
        name = f"synthetic:{synthetic_size[0]}+{synthetic_size[1]}:seed{synthetic_seed}"
        digest, official, notes = dataset_digest(x_train, y_train, x_test, y_test), None, ()
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
        source=name, digest=digest, official=official, data_warnings=notes,
    )
