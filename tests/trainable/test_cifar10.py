"""trainable/cifar10.py: every source loads, bad files are refused clearly, the release is recognised."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import tarfile
import warnings

import numpy as np
import pytest

from tests.conftest import make_batches_dir, py2_batch_bytes, write_batch
from trainable import _safe_pickle
from trainable import cifar10 as data_mod
from trainable.cifar10 import (
    DataError,
    DataWarning,
    load_cifar10,
    read_cifar10,
    resolve_data_dir,
)

# The fake copies below are not the official release; tests that care assert the warning.
pytestmark = pytest.mark.filterwarnings("ignore::trainable.cifar10.DataWarning")


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
    ("truncate", "not a valid CIFAR-10 batch pickle .*runs past the end of the file"),
    ("garbage", "not a valid CIFAR-10 batch pickle"),
    ("wrong_shape", r"shape \(N, 3072\)"),
    ("wrong_dtype", "dtype 'f4' is not allowed"),
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
        target.write_bytes(np.random.default_rng(7).integers(0, 256, 5000, dtype=np.uint8).tobytes())
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
    assert str(info.value).startswith(f"{batches_dir / 'data_batch_2'}: ")
    assert "\n" not in str(info.value) and "; " in str(info.value)  # one line: path, problem; fix


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


def test_no_network_and_empty_cache_says_how_to_supply_data(monkeypatch, tmp_path):
    import keras

    def offline(**kwargs):
        assert kwargs["fname"] == "cifar-10-batches-py-target_archive"  # Keras's own cache name
        assert kwargs["file_hash"] == data_mod.KERAS_SHA256
        raise Exception("URL fetch failure on https://www.cs.toronto.edu: Name or service not known")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(DataError) as info:
        load_cifar10(None)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'datasets' / 'cifar-10-batches-py-target_archive'}: ")
    assert "--data-dir" in message and "make smoke" in message and "\n" not in message


def _keras_home(tmp_path, monkeypatch):
    import keras

    def no_download(**kwargs):
        raise AssertionError("the cached copy must be read, not downloaded again")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(keras.utils, "get_file", no_download)
    datasets = tmp_path / "keras" / "datasets"
    datasets.mkdir(parents=True)
    return datasets


def test_keras_cache_archive_goes_through_the_same_reader(tmp_path, monkeypatch, archive):
    datasets = _keras_home(tmp_path, monkeypatch)
    cached = datasets / "cifar-10-batches-py-target_archive"
    cached.write_bytes(archive.read_bytes())
    with pytest.warns(DataWarning, match="differ from the official CIFAR-10 release"):
        loaded = load_cifar10(None)
    _check_shapes(loaded)
    assert read_cifar10(None).digest == read_cifar10(archive).digest

    # A hostile cache file is refused like any other: one line naming it and how to recover.
    with tarfile.open(cached, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(DataError) as err:
        load_cifar10(None)
    assert str(err.value).startswith(f"{cached}:cifar-10-batches-py/data_batch_1: is a symbolic link")
    assert f"delete {cached} so the next run downloads a fresh copy" in str(err.value)


def test_keras_cache_extracted_dir_is_read_when_the_archive_is_gone(tmp_path, monkeypatch):
    datasets = _keras_home(tmp_path, monkeypatch)
    make_batches_dir(datasets / "cifar-10-batches-py-target")
    _check_shapes(load_cifar10(None))


def test_every_pickle_protocol_and_the_python2_layout_load_the_same_arrays(tmp_path):
    reference = None
    for variant in [*range(6), "py2"]:
        out = make_batches_dir(tmp_path / str(variant), n_per_batch=3)
        for i, name in enumerate((*data_mod.TRAIN_BATCHES, data_mod.TEST_BATCH)):
            rng = np.random.default_rng(i)
            rows = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
            labels = [int(v) for v in rng.integers(0, 10, 3)]
            if variant == "py2":
                (out / name).write_bytes(py2_batch_bytes(rows, labels))
            else:
                (out / name).write_bytes(pickle.dumps({b"data": rows, b"labels": labels}, protocol=variant))
        loaded = read_cifar10(out)
        if reference is None:
            reference = loaded
            assert reference.train[0].shape == (15, 32, 32, 3) and reference.train[1].dtype == np.int64
        assert loaded.digest == reference.digest, f"protocol {variant} loads different arrays"


def test_labels_may_be_an_integer_array_and_data_fortran_ordered(tmp_path, batches_dir):
    rows = np.asfortranarray(np.arange(2 * 3072, dtype=np.int64).reshape(2, 3072).astype(np.uint8))
    with open(batches_dir / "test_batch", "wb") as fh:
        pickle.dump({"data": rows, "labels": np.array([7, 2], dtype=np.int32)}, fh, protocol=5)
    (_, _), (x_test, y_test) = load_cifar10(batches_dir)
    assert y_test.tolist() == [7, 2] and y_test.dtype == np.int64
    assert np.array_equal(x_test, np.ascontiguousarray(rows).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def test_official_release_is_recognised_by_size_and_md5_and_anything_else_warns(batches_dir, monkeypatch):
    names = (*data_mod.TRAIN_BATCHES, data_mod.TEST_BATCH)
    sizes = {n: (batches_dir / n).stat().st_size for n in names}
    md5s = {n: hashlib.md5((batches_dir / n).read_bytes()).hexdigest() for n in names}
    monkeypatch.setattr(data_mod, "OFFICIAL_SIZES", sizes)  # pretend this copy is the release
    monkeypatch.setattr(data_mod, "OFFICIAL_MD5", md5s)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        copy = read_cifar10(batches_dir)
    assert copy.official is True and copy.data_warnings == ()

    blob = bytearray((batches_dir / "data_batch_4").read_bytes())
    blob[-200] ^= 0x01  # one pixel: same size, loads fine, different MD5
    (batches_dir / "data_batch_4").write_bytes(bytes(blob))
    changed = read_cifar10(batches_dir)
    assert changed.official is False and changed.digest != copy.digest
    (note,) = changed.data_warnings
    assert note.startswith(f"{batches_dir}: 1 of 6 batch files differ") and "(data_batch_4)" in note
    with pytest.warns(DataWarning, match="data_batch_4"):
        load_cifar10(batches_dir)


def test_safe_pickle_rebuilds_numpy_arrays_at_every_protocol():
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    for protocol in range(6):
        out = _safe_pickle.load(pickle.dumps(arr, protocol=protocol))
        assert isinstance(out, _safe_pickle.PickledArray) and np.array_equal(out.array, arr)
