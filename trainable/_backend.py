"""Backend-specific process setup: thread counts and GPU memory growth.

Everything else in ``trainable/`` is plain Keras 3; only this module looks at which backend
is active, and it must run before the backend starts executing ops.
"""

from __future__ import annotations

import os


def configure_process(num_threads: int) -> None:
    """Cap compute threads at ``num_threads`` and let several trials share one GPU.

    Call before ``import keras`` in a fresh trial process: TensorFlow reads the env vars at
    start-up and refuses thread changes after its first op.
    """
    n = str(max(1, int(num_threads)))
    for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = n
    os.environ["TF_NUM_INTEROP_THREADS"] = "1" if int(n) <= 2 else "2"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # JAX: allocate GPU memory on demand instead of 75% up front, so trials can share a card.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(n))
            tf.config.threading.set_inter_op_parallelism_threads(int(os.environ["TF_NUM_INTEROP_THREADS"]))
        except RuntimeError:  # already initialised in this process: env vars above still apply
            pass
        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:
                pass
    elif backend == "torch":
        import torch

        torch.set_num_threads(int(n))
