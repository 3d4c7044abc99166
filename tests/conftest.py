"""Shared fixtures: a local 2-CPU Ray instance, tiny synthetic data, fake CIFAR-10 copies."""

from __future__ import annotations

import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Never attach to a cluster that happens to be running on the test machine.
os.environ.pop("RAY_ADDRESS", None)


@pytest.fixture(scope="session")
def ray_local():
    """A private local Ray instance (2 CPUs, no dashboard) for the whole test session."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_dataset():
    """400 train / 100 val / 100 test synthetic images: learnable in 1-2 epochs."""
    from trainable import make_dataset

    return make_dataset("synthetic", val_size=100, synthetic_size=(500, 100), synthetic_seed=0)


def write_batch(path: Path, n: int, seed: int = 0, *, data=None, labels=None) -> None:
    """Write one CIFAR-10 pickle batch the way the official archive does (bytes keys)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8) if data is None else data
    labels = [int(v) for v in rng.integers(0, 10, size=n)] if labels is None else labels
    with open(path, "wb") as fh:
        pickle.dump({b"batch_label": b"fake", b"data": data, b"labels": labels,
                     b"filenames": [b"x.png"] * len(labels)}, fh, protocol=2)


def py2_batch_bytes(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch laid out like the official files: Python 2 cPickle at protocol 2, ``str`` keys as
    SHORT_BINSTRING, the pixels as one BINSTRING, ``numpy.core.multiarray._reconstruct``."""
    def sbs(text: bytes) -> bytes:
        return b"U" + bytes([len(text)]) + text

    def m(value: int) -> bytes:
        return b"M" + struct.pack("<H", value)

    raw = np.ascontiguousarray(data, dtype=np.uint8).tobytes()
    return b"".join([
        b"\x80\x02}q\x01(", sbs(b"batch_label"), b"q\x02", sbs(b"training batch 1 of 5"), b"q\x03",
        sbs(b"data"), b"q\x04cnumpy.core.multiarray\n_reconstruct\nq\x05cnumpy\nndarray\nq\x06",
        b"K\x00\x85q\x07", sbs(b"b"), b"q\x08\x87q\tRq\n(K\x01", m(len(data)), m(3072),
        b"\x86q\x0bcnumpy\ndtype\nq\x0c", sbs(b"u1"), b"K\x00K\x01\x87q\rRq\x0e(K\x03", sbs(b"|"),
        b"q\x0fNNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x10b\x89T", struct.pack("<i", len(raw)), raw,
        b"q\x11tq\x12b", sbs(b"labels"), b"q\x13]q\x14(", b"".join(b"K" + bytes([v]) for v in labels),
        b"eu.",
    ])


def make_batches_dir(root: Path, n_per_batch: int = 20) -> Path:
    """A tiny but complete ``cifar-10-batches-py`` directory under ``root``."""
    out = root / "cifar-10-batches-py"
    out.mkdir(parents=True)
    for i in range(1, 6):
        write_batch(out / f"data_batch_{i}", n_per_batch, seed=i)
    write_batch(out / "test_batch", n_per_batch, seed=99)
    with open(out / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [b"c"] * 10}, fh)
    return out


def make_archive(root: Path, n_per_batch: int = 20) -> Path:
    """A tiny ``cifar-10-python.tar.gz`` with the official member layout."""
    batches = make_batches_dir(root / "src", n_per_batch)
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(batches, arcname="cifar-10-batches-py")
    return archive


@pytest.fixture
def batches_dir(tmp_path) -> Path:
    return make_batches_dir(tmp_path)


@pytest.fixture
def archive(tmp_path) -> Path:
    return make_archive(tmp_path)


def fail_once_callback(marker_path: str, at_epoch: int):
    """A Keras callback that raises at the start of ``at_epoch`` (0-based) the first time only,
    across all trials (a marker file remembers): a simulated worker crash mid-training."""
    import keras

    class FailOnce(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == at_epoch and not os.path.exists(marker_path):
                open(marker_path, "w").close()
                raise RuntimeError("simulated worker crash")

    return FailOnce()


def kill_once_callback(marker_path: str, at_epoch: int):
    """A Keras callback that SIGKILLs its own process at the start of ``at_epoch`` the first time
    only (a marker file remembers): a trial process killed outright, not an exception."""
    import signal

    import keras

    class KillOnce(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == at_epoch and not os.path.exists(marker_path):
                open(marker_path, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)

    return KillOnce()


@pytest.fixture(scope="session")
def smoke_sweep(ray_local, tmp_path_factory):
    """One small stratified sweep (2 replicates x 2 search trials per arm, 2 confirmation seeds per
    arm and replicate) on synthetic data, with one trial raising once and one killed outright once.
    Returns (cfg, exp_dir, root)."""
    from sweeps.config import CONFIG_DIR, load_config
    from sweeps.runner import RunOptions, run_sweep

    root = tmp_path_factory.mktemp("sweep")
    cfg = load_config(CONFIG_DIR / "smoke.yaml", [f"storage_path={root}", "search.num_samples=2",
                                                  "search.replicates=2", "confirm.seeds=2", "max_failures=2",
                                                  "train.checkpoint_every=1",
                                                  "search.max_epochs=2",
                                                  "search.early_stopping.enabled=false"])
    crash = fail_once_callback(str(root / "crashed-once"), at_epoch=1)
    kill = kill_once_callback(str(root / "killed-once"), at_epoch=1)
    exp = run_sweep(cfg, RunOptions(callbacks=(crash, kill)))
    return cfg, Path(exp), root


@pytest.fixture
def blackhole_address():
    """HOST:PORT on loopback that accepts TCP connections never: a listener whose backlog is full,
    so the kernel drops further SYNs and a connect hangs, as to a host that is down."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    for _ in range(8):  # fill the accept queue (its size is backlog + 1)
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(server.getsockname())
        fillers.append(c)
    import time

    time.sleep(0.2)
    yield f"127.0.0.1:{server.getsockname()[1]}"
    for c in fillers:
        c.close()
    server.close()


@pytest.fixture(autouse=True)
def _no_leaked_database_password(monkeypatch):
    """``sweeps.run.main`` moves a database URL's password into PGPASSWORD / MYSQL_PWD for the
    driver's clients (once, at the edge): a test that calls it in-process must not hand that
    password to every later test's subprocesses."""
    for name in ("PGPASSWORD", "MYSQL_PWD"):
        monkeypatch.delenv(name, raising=False)
