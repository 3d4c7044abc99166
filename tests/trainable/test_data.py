"""trainable/data.py: every source loads, bad files are refused clearly, the split is honest."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest

from tests.conftest import write_batch
from trainable import data as data_mod
from trainable.data import (
    DataError,
    load_cifar10,
    make_dataset,
    normalize,
    resolve_data_dir,
    stratified_split,
    synthetic_cifar10,
)


def _check_shapes(loaded, n_train=100, n_test=20):
    (x_train, y_train), (x_test, y_test) = loaded
    assert x_train.shape == (n_train, 32, 32, 3) and x_train.dtype == np.uint8
    assert y_train.shape == (n_train,) and y_test.shape == (n_test,)
    assert x_test.shape == (n_test, 32, 32, 3)
    assert 0 <= y_train.min() and y_train.max() <= 9


def test_batches_dir_loads_from_the_dir_itself_and_its_parent(batches_dir):
    _check_shapes(load_cifar10(batches_dir))
    _check_shapes(load_cifar10(batches_dir.parent))


def test_channel_major_rows_become_hwc_images(tmp_path, batches_dir):
    row = np.zeros((1, 3072), dtype=np.uint8)
    row[0, :1024] = 200  # red plane
    write_batch(batches_dir / "test_batch", 1, data=row, labels=[3])
    (_, _), (x_test, y_test) = load_cifar10(batches_dir)
    assert (x_test[0, :, :, 0] == 200).all() and (x_test[0, :, :, 1:] == 0).all()
    assert y_test.tolist() == [3]


def test_tar_gz_archive_loads_from_file_and_from_its_directory(archive):
    _check_shapes(load_cifar10(archive))
    _check_shapes(load_cifar10(archive.parent))  # the directory holding the archive


def test_missing_path_and_unrelated_dir_are_refused(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        resolve_data_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds neither"):
        resolve_data_dir(tmp_path / "empty")


def test_missing_batch_is_named(batches_dir):
    os.remove(batches_dir / "data_batch_3")
    with pytest.raises(DataError, match="data_batch_3: missing"):
        load_cifar10(batches_dir)


@pytest.mark.parametrize("damage, message", [
    ("truncate", "truncated or corrupt"),
    ("garbage", "truncated or corrupt|refused"),
    ("wrong_shape", r"shape \(N, 3072\)"),
    ("wrong_dtype", "uint8"),
    ("label_range", "labels must be in 0..9"),
    ("count_mismatch", "images but"),
    ("not_a_dict", "expected a dict"),
])
def test_damaged_batch_is_refused_naming_the_file(batches_dir, damage, message):
    target = batches_dir / "data_batch_2"
    if damage == "truncate":
        blob = target.read_bytes()
        target.write_bytes(blob[: len(blob) // 2])
    elif damage == "garbage":
        target.write_bytes(os.urandom(5000))
    elif damage == "wrong_shape":
        write_batch(target, 4, data=np.zeros((4, 1024), np.uint8), labels=[0] * 4)
    elif damage == "wrong_dtype":
        write_batch(target, 4, data=np.zeros((4, 3072), np.float32), labels=[0] * 4)
    elif damage == "label_range":
        write_batch(target, 4, labels=[0, 1, 2, 10])
    elif damage == "count_mismatch":
        write_batch(target, 4, labels=[0, 1, 2])
    elif damage == "not_a_dict":
        target.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match=message) as info:
        load_cifar10(batches_dir)
    assert "data_batch_2" in str(info.value)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_malicious_pickle_is_refused_without_running_code(batches_dir, tmp_path):
    marker = str(tmp_path / "pwned")
    (batches_dir / "test_batch").write_bytes(pickle.dumps({b"data": _Exploit(marker), b"labels": []}))
    with pytest.raises(DataError, match="forbidden global posix.mkdir|forbidden global os.mkdir"):
        load_cifar10(batches_dir)
    assert not os.path.exists(marker)


def test_corrupt_archive_is_refused(tmp_path):
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(gzip.compress(b"not a tar file at all" * 10))
    with pytest.raises(DataError, match="not a readable tar.gz"):
        load_cifar10(bad)


def test_no_network_and_empty_cache_says_how_to_supply_data(monkeypatch):
    import keras

    def offline():
        raise Exception("URL fetch failure on https://www.cs.toronto.edu: Name or service not known")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(DataError) as info:
        load_cifar10(None)
    assert "--data-dir" in str(info.value) and "make smoke" in str(info.value)


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


def test_restricted_unpickler_still_reads_numpy_arrays():
    import io

    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    out = data_mod._RestrictedUnpickler(io.BytesIO(pickle.dumps(arr, protocol=2))).load()
    assert np.array_equal(out, arr)
