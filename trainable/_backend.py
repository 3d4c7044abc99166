"""Backend-specific process setup: quiet start-up, thread counts, each trial's share of a GPU.

Everything else in ``trainable/`` is plain Keras 3; only this module looks at which backend
is active, and :func:`configure_process` must run before the backend starts executing ops.

Importing this module sets quiet-logging defaults (``setdefault``: a variable already in the
environment wins, so ``TF_CPP_MIN_LOG_LEVEL=0`` brings every TensorFlow line back).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator

# Before any TensorFlow import: hide TensorFlow's INFO and WARNING lines (the CPU feature notice,
# retracing chatter). Errors still print.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# JAX: allocate GPU memory on demand instead of 75% up front, so trials can share a card.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# TensorFlow >= 2.17 prints these through absl *before* it reads TF_CPP_MIN_LOG_LEVEL, so no
# environment variable hides them; :func:`quiet_stderr` drops exactly these lines.
START_UP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|oneDNN custom operations are on"
    r"|cudart_stub\.cc.*Could not find cuda drivers"
    r"|failed call to cuInit"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT"
)


def _quiet_requested() -> bool:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")) >= 1
    except ValueError:
        return True


@contextlib.contextmanager
def quiet_stderr(pattern: re.Pattern[str] = START_UP_NOISE) -> Iterator[None]:
    """Capture file descriptor 2 for the block, then write back every line but ``pattern``'s.

    A no-op when ``TF_CPP_MIN_LOG_LEVEL`` is 0 (the user asked for everything). Nothing else is
    lost: Python warnings and genuine errors printed in the block come back in order.
    """
    if not _quiet_requested():
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr (some daemons): nothing to filter
        yield
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not pattern.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def gpu_memory_limit_mb(fraction: float, total_mb: float) -> int | None:
    """The memory cap (MiB) of a trial that holds ``fraction`` of a GPU with ``total_mb`` MiB.

    ``None`` means no cap: no GPU (``fraction == 0``) or whole GPUs (``fraction >= 1``).
    """
    if not math.isfinite(fraction) or fraction < 0:
        raise ValueError(f"GPU fraction must be a finite number >= 0, got {fraction}")
    if fraction == 0 or fraction >= 1:
        return None
    if not math.isfinite(total_mb) or total_mb <= 0:
        raise ValueError(f"total GPU memory must be > 0 MiB, got {total_mb}")
    return max(1, int(fraction * total_mb))


def visible_gpu_memory_mb(smi_csv: str, cuda_visible_devices: str | None) -> float | None:
    """Smallest total memory (MiB) among the GPUs this process may use.

    ``smi_csv`` is ``nvidia-smi --query-gpu=index,uuid,memory.total --format=csv,noheader,nounits``
    output; ``cuda_visible_devices`` (indices or UUIDs, as Ray sets it) selects rows. The smallest
    card is the safe cap when the mapping is ambiguous. ``None`` when no row matches.
    """
    rows = []
    for line in smi_csv.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[2].replace(".", "", 1).isdigit():
            rows.append((parts[0], parts[1], float(parts[2])))
    if cuda_visible_devices is not None and cuda_visible_devices.strip() != "all":  # "": no GPU
        wanted = [d.strip() for d in cuda_visible_devices.split(",") if d.strip()]
        rows = [r for r in rows if any(w == r[0] or r[1].startswith(w) for w in wanted)]
    return min((r[2] for r in rows), default=None)


def _total_gpu_memory_mb() -> float | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=index,uuid,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return visible_gpu_memory_mb(out, os.environ.get("CUDA_VISIBLE_DEVICES"))


def configure_process(num_threads: int, gpu_fraction: float = 0.0) -> None:
    """Cap compute threads at ``num_threads`` and this process's GPU memory at ``gpu_fraction``.

    Call before ``import keras`` in a fresh trial process: TensorFlow reads the env vars at
    start-up and refuses thread and device changes after its first op; JAX reads
    ``XLA_PYTHON_CLIENT_MEM_FRACTION`` when it is imported. With ``0 < gpu_fraction < 1`` the
    cap is ``gpu_fraction`` x the card's total memory (TensorFlow: a logical device with that
    ``memory_limit``, growing on demand up to it; JAX: the memory fraction; torch:
    ``set_per_process_memory_fraction``). Otherwise memory grows on demand, uncapped.
    """
    n = max(1, int(num_threads))
    gpu_fraction = float(gpu_fraction)
    gpu_memory_limit_mb(gpu_fraction, 1.0)  # validates the fraction before anything is changed
    capped = 0 < gpu_fraction < 1
    for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1" if n <= 2 else "2"
    if capped:
        if "jax" in sys.modules:
            warnings.warn("jax was imported before configure_process; its GPU memory fraction "
                          "cannot be capped in this process", RuntimeWarning, stacklevel=2)
        os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{gpu_fraction:.4f}"
        # TensorFlow: grow up to the cap instead of reserving it all at the first allocation.
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")

    with quiet_stderr():
        import keras

        backend = keras.backend.backend()
        if backend == "tensorflow":
            _configure_tensorflow(n, gpu_fraction if capped else 0.0)
        else:
            if importlib.util.find_spec("tensorflow") is not None:
                # Keras's data adapters import it on every backend when it is installed: now,
                # while its start-up lines are filtered, rather than in the first fit.
                import tensorflow  # noqa: F401
            if backend == "torch":
                _configure_torch(n, gpu_fraction if capped else 0.0)


def _configure_tensorflow(n: int, gpu_fraction: float) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(int(os.environ["TF_NUM_INTEROP_THREADS"]))
    except RuntimeError:  # already initialised in this process: env vars above still apply
        pass
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return
    total = _total_gpu_memory_mb() if gpu_fraction else None
    limit = gpu_memory_limit_mb(gpu_fraction, total) if total else None
    if gpu_fraction and limit is None:
        warnings.warn(f"could not read the GPU's total memory (nvidia-smi); this trial's "
                      f"{gpu_fraction:g} GPU share is not memory-capped", RuntimeWarning, stacklevel=3)
    for gpu in gpus:
        try:
            if limit is not None:
                tf.config.set_logical_device_configuration(
                    gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit)])
            else:
                tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # devices already initialised in this process
            pass


def _configure_torch(n: int, gpu_fraction: float) -> None:
    import torch

    torch.set_num_threads(n)
    if gpu_fraction and torch.cuda.is_available():
        for device in range(torch.cuda.device_count()):
            torch.cuda.set_per_process_memory_fraction(gpu_fraction, device)


# --------------------------------------------------------------------------------------------
# The training input pipeline: built once per trial, each epoch's order set by the loop


class TrainingBatches:
    """What one trial's single ``fit`` call trains on: ``data`` (passed to ``fit``) yields the
    ``steps`` batches of one epoch, in the order last given to :meth:`set_order`.

    The images stay ``uint8`` (4x smaller than float32) and are gathered batch by batch, then
    normalised by ``prepare`` (a function of backend tensors), so no normalised or shuffled copy
    of the training split is ever made. ``set_order`` must run before each epoch's first batch is
    drawn (the loop calls it from ``on_epoch_begin``; every backend's fit starts drawing an
    epoch's batches only after that hook).
    """

    def __init__(self, data, steps: int, set_order) -> None:
        self.data, self.steps, self._set_order = data, steps, set_order

    def set_order(self, order) -> None:
        """Make the next epoch's batches ``order[0:bs]``, ``order[bs:2 bs]``, ... (the last may be short)."""
        self._set_order(order)


def training_batches(x, y, batch_size: int, prepare, first_order) -> TrainingBatches:
    """The pipeline for ``fit``: TensorFlow: a ``tf.data`` graph gathering from ``uint8`` tensors
    (built once; the order lives in a variable); other backends: a ``keras.utils.PyDataset`` whose
    arrays are backend tensors, so on a GPU (JAX: ``jnp.take``) the images live on the device and
    batches are gathered and normalised there, with nothing copied per step."""
    import keras

    n = len(y)
    steps = -(-n // batch_size)
    if keras.backend.backend() == "tensorflow":
        return _tf_batches(x, y, batch_size, prepare, first_order, steps)
    return _device_batches(x, y, batch_size, prepare, first_order, steps)


def _tf_batches(x, y, batch_size, prepare, first_order, steps) -> TrainingBatches:
    import numpy as np
    import tensorflow as tf

    n = len(y)
    with tf.device("/CPU:0"):  # tf.data runs on the host; Keras copies each batch to the device
        x_t, y_t = tf.constant(x), tf.constant(y)
        order = tf.Variable(np.asarray(first_order, dtype=np.int32), trainable=False)

    def batch(i):
        start = tf.cast(i, tf.int32) * batch_size
        idx = order[start:tf.minimum(start + batch_size, n)]
        return prepare(tf.gather(x_t, idx)), tf.gather(y_t, idx)

    data = tf.data.Dataset.range(steps).map(batch).prefetch(1)
    return TrainingBatches(data, steps, lambda o: order.assign(np.asarray(o, dtype=np.int32)))


def _device_batches(x, y, batch_size, prepare, first_order, steps) -> TrainingBatches:
    import keras

    ops = keras.ops
    n = len(y)

    class DeviceBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.x, self.y = ops.convert_to_tensor(x), ops.convert_to_tensor(y)
            self.order = ops.convert_to_tensor(first_order, dtype="int32")

        def __len__(self) -> int:
            return steps

        def __getitem__(self, i: int):
            if not 0 <= i < steps:
                raise IndexError(i)
            idx = self.order[i * batch_size:min((i + 1) * batch_size, n)]
            return prepare(ops.take(self.x, idx, axis=0)), ops.take(self.y, idx, axis=0)

    batches = DeviceBatches()

    def set_order(order) -> None:
        batches.order = ops.convert_to_tensor(order, dtype="int32")  # one copy per epoch, not per step

    return TrainingBatches(batches, steps, set_order)
