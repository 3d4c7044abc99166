"""trainable/dataset.py: the split is stratified, held out and seeded; normalising copies; synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from trainable.cifar10 import read_cifar10
from trainable.dataset import (
    DataError,
    DataWarning,
    dataset_digest,
    make_dataset,
    normalize,
    stratified_split,
    synthetic_cifar10,
)

pytestmark = pytest.mark.filterwarnings("ignore::trainable.cifar10.DataWarning")


def test_make_dataset_fills_digest_official_and_warnings(batches_dir):
    with pytest.warns(DataWarning):
        ds = make_dataset("cifar10", data_dir=batches_dir, val_size=20)
    copy = read_cifar10(batches_dir)
    assert ds.digest == copy.digest and len(ds.digest) == 64 and int(ds.digest, 16) >= 0
    assert ds.digest == dataset_digest(*copy.train, *copy.test)  # before the split
    assert ds.official is False and ds.data_warnings == copy.data_warnings and len(ds.data_warnings) == 1
    synthetic = make_dataset("synthetic", val_size=10, synthetic_size=(50, 20))
    assert synthetic.official is None and synthetic.data_warnings == ()
    assert synthetic.digest == dataset_digest(*synthetic_cifar10(50, 20, seed=0)[0],
                                              *synthetic_cifar10(50, 20, seed=0)[1])
    assert synthetic.digest != make_dataset("synthetic", val_size=10, synthetic_size=(50, 20),
                                            synthetic_seed=1).digest


def test_split_is_stratified_disjoint_complete_and_seeded():
    labels = np.repeat(np.arange(10), [100, 200, 100, 100, 100, 100, 100, 100, 100, 100])
    train_idx, val_idx = stratified_split(labels, 110, seed=3)
    assert len(val_idx) == 110 and len(np.intersect1d(train_idx, val_idx)) == 0
    assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(len(labels)))
    counts = np.bincount(labels[val_idx], minlength=10)
    assert counts[1] == 20 and all(counts[i] == 10 for i in (0, 2, 3, 9))
    again, val_again = stratified_split(labels, 110, seed=3)
    assert np.array_equal(val_idx, val_again)
    assert not np.array_equal(val_idx, stratified_split(labels, 110, seed=4)[1])
    with pytest.raises(DataError, match="val_size"):
        stratified_split(labels, len(labels), 0)


def test_dataset_validation_is_held_out_of_training(batches_dir):
    ds = make_dataset("cifar10", data_dir=batches_dir, val_size=20, split_seed=0)
    assert ds.sizes == {"train": 80, "val": 20, "test": 20}
    train_rows = {x.tobytes() for x in ds.x_train}
    assert not any(x.tobytes() in train_rows for x in ds.x_val)


def test_normalize_scales_or_standardises_without_touching_readonly_input():
    x = (np.arange(2 * 32 * 32 * 3) % 251).astype(np.uint8).reshape(2, 32, 32, 3)
    x.setflags(write=False)
    scaled = normalize(x, "scale")
    assert scaled.dtype == np.float32 and scaled.max() <= 1.0 and np.isclose(scaled.max(), x.max() / 255)
    flat = x.reshape(-1, 3).astype(np.float64)
    z = normalize(x, "standardize", flat.mean(0), flat.std(0))
    assert np.allclose(z.reshape(-1, 3).mean(0), 0, atol=1e-5)
    assert np.allclose(z.reshape(-1, 3).std(0), 1, atol=1e-4)
    with pytest.raises(ValueError, match="unknown normalization"):
        normalize(x, "minmax")


def test_synthetic_data_has_cifar_shapes_and_is_seeded():
    (x_tr, y_tr), (x_te, y_te) = synthetic_cifar10(50, 20, seed=1)
    assert x_tr.shape == (50, 32, 32, 3) and x_tr.dtype == np.uint8 and set(y_tr) == set(range(10))
    assert x_te.shape == (20, 32, 32, 3)
    (x2, _), _ = synthetic_cifar10(50, 20, seed=1)
    (x3, _), _ = synthetic_cifar10(50, 20, seed=2)
    assert np.array_equal(x_tr, x2) and not np.array_equal(x_tr, x3)


def test_unknown_source_is_refused():
    with pytest.raises(DataError, match="unknown data source"):
        make_dataset("mnist")
