"""trainable/_backend.py: each trial's GPU memory cap (computed; no GPU here), quiet start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainable._backend import configure_process, gpu_memory_limit_mb, quiet_stderr, visible_gpu_memory_mb

SMI = """0, GPU-aaaa1111-0000, 81559
1, GPU-bbbb2222-0000, 81559
2, GPU-cccc3333-0000, 40960
"""


@pytest.mark.parametrize("fraction, total, expected", [
    (0.25, 81559, 20389), (0.5, 40960, 20480), (0.0, 81559, None), (1.0, 81559, None), (2.0, 81559, None),
])
def test_memory_limit_is_the_trials_fraction_of_the_card(fraction, total, expected):
    assert gpu_memory_limit_mb(fraction, total) == expected


@pytest.mark.parametrize("fraction", [-0.1, float("nan"), float("inf")])
def test_bad_fraction_is_refused(fraction):
    with pytest.raises(ValueError, match="GPU fraction"):
        gpu_memory_limit_mb(fraction, 1000)


@pytest.mark.parametrize("visible, expected", [
    (None, 40960.0), ("0", 81559.0), ("2", 40960.0), ("1,2", 40960.0), ("GPU-bbbb2222", 81559.0),
    ("7", None), ("", None), ("all", 40960.0),
])
def test_total_memory_is_read_for_the_visible_cards(visible, expected):
    assert visible_gpu_memory_mb(SMI, visible) == expected
    assert visible_gpu_memory_mb("NVIDIA-SMI has failed", "0") is None


def test_configure_process_with_a_gpu_share_works_on_cpu(monkeypatch):
    for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "MKL_NUM_THREADS",
                "XLA_PYTHON_CLIENT_MEM_FRACTION", "TF_FORCE_GPU_ALLOW_GROWTH"):
        monkeypatch.delenv(var, raising=False)
    configure_process(1, gpu_fraction=0.25)
    assert os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.2500"
    assert os.environ["OMP_NUM_THREADS"] == "1"
    import keras

    assert float(keras.ops.sum(keras.ops.ones((2, 2)))) == 4.0  # the backend still runs
    with pytest.raises(ValueError, match="GPU fraction"):
        configure_process(1, gpu_fraction=-1)


def test_quiet_stderr_drops_start_up_noise_and_keeps_everything_else(capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_stderr():
        os.write(2, b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on. You may see\n")
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written\n")
        os.write(2, b"E0000 real problem: out of memory\n")
    assert capfd.readouterr().err == "E0000 real problem: out of memory\n"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # the user asked for everything
    with quiet_stderr():
        os.write(2, b"oneDNN custom operations are on\n")
    assert "oneDNN" in capfd.readouterr().err


def test_importing_the_trainable_then_configuring_prints_no_tensorflow_start_up_lines(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "KERAS_BACKEND"))}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    code = "import trainable.train as t; t._backend.configure_process(1); import keras; keras.ops.ones(1)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "oneDNN" not in out.stderr and "absl::InitializeLog" not in out.stderr, out.stderr


def _batches_as_numpy(batches):
    import keras

    data = batches.data
    items = [data[i] for i in range(len(data))] if isinstance(data, keras.utils.PyDataset) else list(data)
    return [(keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y)) for x, y in items]


def test_training_batches_follow_each_epochs_order_and_normalise_uint8_like_the_dataset():
    # The single-fit pipeline: built once, each epoch's batches are order[0:bs], order[bs:2bs], ...
    # of the uint8 images, normalised per batch to exactly what trainable.dataset.normalize gives.
    import numpy as np

    from trainable._backend import training_batches
    from trainable.dataset import normalize
    from trainable.train import epoch_order, normalizer

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(23, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=23)
    mean, std = np.array([120.0, 110.0, 100.0], np.float32), np.array([60.0, 61.0, 62.0], np.float32)
    for method in ("scale", "standardize"):
        batches = training_batches(x, y, 10, normalizer(method, mean, std), epoch_order(1, 0, 23))
        assert batches.steps == 3
        for epoch in (0, 1, 0):
            order = epoch_order(1, epoch, 23)
            batches.set_order(order)
            got = _batches_as_numpy(batches)
            assert [len(b[1]) for b in got] == [10, 10, 3]
            want = normalize(x[order], method, mean, std)
            # Exact on TensorFlow; XLA (JAX) may divide by multiplying with 1/255: 1 float32 ulp.
            np.testing.assert_allclose(np.concatenate([b[0] for b in got]), want, rtol=2.5e-7, atol=0)
            np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), y[order])


def test_an_unknown_normalization_is_refused_by_name():
    from trainable.train import normalizer

    with pytest.raises(ValueError, match="unknown normalization 'zca'"):
        normalizer("zca")
