"""The Ray Tune function trainable: trains the CNN in one ``fit`` call and reports every epoch.

Trial config keys: see ``DEFAULTS`` (every key optional; the sweep config derives its own
training defaults from it).

Each epoch reports a flat dict of floats (``METRICS``). Every ``checkpoint_every`` epochs, and
always after the last one, the report carries a checkpoint (model and optimizer variables, the
epoch and the running bests; the last one also the whole model as ``model.keras``), so a retried
or resumed trial continues from the last checkpoint.

The input pipeline is built once per trial (``uint8`` images, gathered and normalised batch by
batch; on a GPU, on the device) and each epoch's order is a function of (seed, epoch) alone, so a
resumed trial sees exactly the batches of an uninterrupted one. The per-epoch work below runs in
an epoch-end Keras callback.

Overfitting is measured in inference mode: at each epoch end the model is evaluated on a fixed
sample of ``train_eval_size`` training images (``train_eval_*``; the same images in every epoch
and every trial), and ``generalization_gap`` = train_eval_accuracy -
val_accuracy. ``train_loss``/``train_accuracy`` stay the running averages of the fit, which mix
weights from the whole epoch and include dropout.

A NaN, infinite or exploded (> ``divergence_loss``) epoch training loss ends the trial after
that epoch with ``diverged = 1.0``: a result of the search, not a crash. The check runs once
per epoch, on the loss the fit returns, so training never waits on the device per batch.

``train_loop`` is the training loop itself, independent of Ray (the benchmark calls it with a
plain ``report`` function); ``train_cnn`` is its Ray Tune wrapper.
"""

from __future__ import annotations

import gc
import json
import math
import numbers
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from trainable import _backend  # noqa: F401  (quiet TensorFlow start-up: before any keras import)
from trainable.dataset import NORMALIZATIONS, Dataset

DEFAULTS: dict[str, Any] = {
    # Activation of both conv layers; one of trainable.model.ACTIVATIONS.
    "activation": "relu",
    # Adam learning rate.
    "lr": 1e-3,
    # Training epochs (the trial's budget; schedulers such as ASHA may stop it earlier).
    "epochs": 50,
    # Training batch size (images per optimizer step).
    "batch_size": 100,
    # "auto" = each activation's recommended init (trainable.model.resolve_initializer), or a name.
    "kernel_initializer": "auto",
    # Input scaling: "scale" (x/255) or "standardize" (per-channel z-scores of the training split).
    "normalization": "scale",
    # Dropout rate after each pooling layer (AlphaDropout for selu); 0 disables it.
    "dropout": 0.0,
    # Seeds weights, dropout and shuffling (whole number >= 0). Each epoch's order depends only on
    # (seed, epoch), so a resumed trial shuffles exactly like an uninterrupted one.
    "seed": 0,
    # Split measured by the val_* metrics: "val" (held out from training) or "test".
    "validate_on": "val",
    # Also measure the test split (test_loss/test_accuracy), once: at the trial's last epoch.
    "evaluate_test": False,
    # Epoch training loss (nats) above which a trial counts as diverged. The untrained CNN starts
    # near ln(10) = 2.3; on TensorFlow (loss from the softmax's logits) Adam at lr 1e3 reaches
    # ~1e13 without ever producing a NaN. JAX and torch clip probabilities at 1e-7, so there a
    # diverged loss saturates near 16 x error rate (14.5 measured): use <= 10 on those backends.
    "divergence_loss": 100.0,
    # Training batches per compiled call (Keras steps_per_execution): fewer Python round trips
    # and device syncs. On 2 CPUs, 8 cut a 5,000-image fit's wall time by 12% (CPU time 3%);
    # 32 gained no more. Batch-level callback hooks then fire once per 8 batches.
    "steps_per_execution": 8,
    # Batch size of every evaluation (training sample, validation, test). Inference only, so far
    # larger than the training batch: 2000 evaluated 5,000 images 20% faster than 250 on 2 CPUs,
    # and large batches keep a GPU busy.
    "eval_batch_size": 2000,
    # Images of the fixed training sample evaluated in inference mode each epoch (train_eval_*,
    # generalization_gap); the whole training split if smaller. 1,000 instead of the validation
    # split's size (5,000 in default.yaml, where that evaluation was ~30% of an epoch): the
    # binomial sd of train_eval_accuracy is then ~1.4 points at 70% accuracy against gaps of
    # 10-15 points (README.md, "The trainable").
    "train_eval_size": 1000,
    # Save a checkpoint every this many epochs, and always after the last one. A retried trial
    # repeats at most checkpoint_every - 1 epochs. A checkpoint (one .npz of the variables)
    # adds ~8 ms to a report in Tune: 0.3% of a 5,000-image epoch on 2 CPUs at 1
    # (benchmarks/README.md), so every epoch is checkpointed and a retried trial repeats no
    # epoch (after a killed driver, those since Tune's last snapshot: sweeps.completion).
    "checkpoint_every": 1,
}

METRICS: tuple[str, ...] = (
    "epoch", "train_loss", "train_accuracy", "train_eval_loss", "train_eval_accuracy",
    "val_loss", "val_accuracy", "generalization_gap", "epoch_seconds", "images_per_second",
    "best_val_accuracy", "best_epoch", "min_val_loss", "min_val_loss_epoch", "target_epochs",
    "diverged",
)
CHECKPOINT_VARIABLES = "variables.npz"  # model + optimizer variables, in their (deterministic) order
CHECKPOINT_STATE = "state.json"
CHECKPOINT_MODEL = "model.keras"  # the whole trained model, in the last epoch's checkpoint only
# The training sample evaluated for train_eval_* is drawn with this seed, never the trial's:
# every trial of a sweep measures overfitting on the same images.
TRAIN_EVAL_SEED = 20_170_608

Report = Callable[[dict[str, float], "str | None"], None]

_POSITIVE_INTS = ("epochs", "batch_size", "steps_per_execution", "eval_batch_size", "checkpoint_every",
                  "train_eval_size")


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """``DEFAULTS`` updated with ``config``; a ``ValueError`` naming the key and the fix if invalid."""
    cfg = {**DEFAULTS, **config}

    def number(value: Any) -> bool:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)

    for key, low in (*((k, 1) for k in _POSITIVE_INTS), ("seed", 0)):
        value = cfg[key]
        if not number(value) or not float(value).is_integer() or value < low:
            raise ValueError(f"trial config {key}={value!r}: must be a whole number >= {low}")
    for key in ("lr", "divergence_loss"):
        value = cfg[key]
        if not number(value) or not value > 0:
            raise ValueError(f"trial config {key}={value!r}: must be a number > 0")
    if cfg["validate_on"] not in ("val", "test"):
        raise ValueError(f"trial config validate_on={cfg['validate_on']!r}: use 'val' or 'test'")
    return cfg


def train_eval_indices(n_train: int, k: int, seed: int = TRAIN_EVAL_SEED) -> np.ndarray:
    """Sorted indices of the fixed training sample: the first ``k`` of a seeded permutation."""
    return np.sort(np.random.default_rng(seed).permutation(n_train)[:min(k, n_train)])


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the ``n`` training images in ``epoch`` (0-based): a function of both alone.

    The loop shuffles with this instead of ``fit(shuffle=True)`` + ``keras.utils.set_random_seed``
    per epoch: on TensorFlow, reseeding clears the kernel caches, which cost 1.5-2 s of wall time
    (0.15 s of CPU time) per 5,000-image epoch on 2 busy CPUs (benchmarks/README.md).
    """
    return np.random.default_rng([seed, epoch]).permutation(n)


def _diverged(loss: float, limit: float) -> bool:
    return not math.isfinite(loss) or loss > limit


def initial_state() -> dict[str, float]:
    """The loop's state before epoch 1 (saved with every checkpoint as ``state.json``)."""
    return {"epoch": 0.0, "best_val_accuracy": -math.inf, "best_epoch": 0.0,
            "min_val_loss": math.nan, "min_val_loss_epoch": math.nan}


def update_bests(state: dict[str, float], epoch: float, val_accuracy: float, val_loss: float) -> None:
    """Fold one epoch into the running bests, the way ``analysis.metrics`` reads them back:
    ``best_epoch`` is the first epoch reaching the best val_accuracy; ``min_val_loss`` ignores
    non-finite losses and stays NaN (with its epoch) until a finite one arrives."""
    if val_accuracy > state["best_val_accuracy"]:
        state.update(best_val_accuracy=val_accuracy, best_epoch=epoch)
    if math.isfinite(val_loss) and not val_loss >= state["min_val_loss"]:  # true against NaN
        state.update(min_val_loss=val_loss, min_val_loss_epoch=epoch)
    state["epoch"] = epoch


def save_checkpoint(model: Any, state: dict[str, float], directory: str, *, full_model: bool = False) -> None:
    """Write the model's and its optimizer's variables and the loop's ``state`` into ``directory``.

    The variables go into one ``.npz`` (~10 ms; ``model.save`` takes ~5-10x as long, which
    per epoch would cost several % of a small epoch). ``full_model`` also writes ``model.keras``,
    the trained model that ``keras.models.load_model`` opens (the loop does this at the end).
    """
    import keras

    arrays = [keras.ops.convert_to_numpy(v.value) for v in [*model.variables, *model.optimizer.variables]]
    np.savez(os.path.join(directory, CHECKPOINT_VARIABLES), *arrays)
    with open(os.path.join(directory, CHECKPOINT_STATE), "w") as fh:
        json.dump(state, fh)
    if full_model:
        model.save(os.path.join(directory, CHECKPOINT_MODEL))


def load_checkpoint(directory: str, model: Any) -> dict[str, float]:
    """Restore a checkpoint of :func:`save_checkpoint` into ``model``, built and compiled from the
    same trial config (so its variables line up); return the loop's state."""
    model.optimizer.build(model.trainable_variables)
    if not os.path.exists(os.path.join(directory, CHECKPOINT_VARIABLES)):  # written before the .npz
        model.load_weights(os.path.join(directory, CHECKPOINT_MODEL))
        with open(os.path.join(directory, CHECKPOINT_STATE)) as fh:
            return json.load(fh)
    variables = [*model.variables, *model.optimizer.variables]
    with np.load(os.path.join(directory, CHECKPOINT_VARIABLES), allow_pickle=False) as npz:
        arrays = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    shapes = [tuple(v.shape) for v in variables]
    if [a.shape for a in arrays] != shapes:
        raise ValueError(f"checkpoint {directory} holds variables of shapes {[a.shape for a in arrays]}, "
                         f"but this trial's model and optimizer have {shapes}; resume with the trial's "
                         "own config")
    for variable, value in zip(variables, arrays):
        variable.assign(value)
    with open(os.path.join(directory, CHECKPOINT_STATE)) as fh:
        return json.load(fh)


def evaluate(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[float, float]:
    """(loss, accuracy) of ``model`` in inference mode, as ``model.evaluate`` computes them.

    Batch by batch with ``test_on_batch``, weighting each batch by its size: the same numbers
    as ``evaluate`` without its per-call input pipeline, which costs ~0.2 s per call on a CPU
    (a tenth of a 5,000-image epoch). One device sync per evaluation batch, at epoch end only.
    """
    if len(y) == 0:
        return math.nan, math.nan
    loss = correct = 0.0
    for start in range(0, len(y), batch_size):
        yb = y[start:start + batch_size]
        out = model.test_on_batch(x[start:start + batch_size], yb, return_dict=True)
        loss += float(out["loss"]) * len(yb)
        correct += float(out["accuracy"]) * len(yb)
    return loss / len(y), correct / len(y)


def normalizer(method: str, mean: np.ndarray | None = None, std: np.ndarray | None = None):
    """``trainable.dataset.normalize`` as a function of backend tensors (``keras.ops``), so that
    ``uint8`` images are normalised where they live (on a GPU: on the device), batch by batch.
    The same float32 operations in the same order: the same numbers as ``normalize`` (exactly on
    TensorFlow; XLA may turn the division into a multiplication by 1/255, 1 ulp off)."""
    import keras

    ops = keras.ops
    if method == "scale":
        return lambda x: ops.divide(ops.cast(x, "float32"), np.float32(255.0))
    if method == "standardize":
        if mean is None or std is None:
            raise ValueError("standardize needs the training split's channel mean and std")
        m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        return lambda x: ops.divide(ops.subtract(ops.cast(x, "float32"), m), s)
    raise ValueError(f"unknown normalization {method!r}; use one of {NORMALIZATIONS}")


_frozen = False


def _freeze_imports() -> None:
    """``gc.freeze()`` once per process, after the heavy imports: the ~357k objects of the
    TensorFlow/Ray imports then never take part in a collection again, so ``clear_session``'s
    ``gc.collect()`` costs 13-49 ms instead of 0.2 s CPU (0.6 s wall) per trial (issue 15).
    Only once: a later freeze would also pin the previous trial's garbage in a reused actor."""
    global _frozen
    if not _frozen:
        gc.freeze()
        _frozen = True


def train_loop(config: dict[str, Any], data: Dataset, report: Report, *, restore_dir: str | None = None,
               callbacks: Sequence[Any] = ()) -> None:
    """Train the CNN ``config`` describes on ``data``, calling ``report(metrics, checkpoint_dir)``
    after every epoch (``checkpoint_dir`` is ``None`` between checkpoints and is only valid
    during the call). ``restore_dir`` continues from a checkpoint written by this loop.

    One ``model.fit(epochs=..., initial_epoch=...)`` call per trial over an input pipeline built
    once (``trainable._backend.training_batches``); each epoch's order is set at its start from
    :func:`epoch_order`, so a resumed trial sees exactly the batches of an uninterrupted one. The
    per-epoch work (evaluation, bests, divergence, checkpoint, report) runs in an epoch-end
    callback; a diverged epoch stops the fit there.

    Call ``trainable._backend.configure_process`` first in a fresh process. ``callbacks`` are
    extra Keras callbacks for the ``fit`` call (they see the trial's true epoch index; their
    ``on_epoch_end`` runs before the epoch is evaluated and reported).
    """
    cfg = check_config(config)
    import keras

    from trainable._backend import training_batches
    from trainable.model import build_model

    _freeze_imports()
    ops = keras.ops
    seed = int(cfg["seed"])
    limit = float(cfg["divergence_loss"])
    epochs = int(cfg["epochs"])
    eval_bs = int(cfg["eval_batch_size"])
    every = int(cfg["checkpoint_every"])
    prepare = normalizer(cfg["normalization"], data.channel_mean, data.channel_std)

    def on_device(x):  # evaluation arrays: normalised once per trial, where the model runs
        return prepare(ops.convert_to_tensor(x))

    n_train = len(data.y_train)
    if cfg["validate_on"] == "test":
        x_val, y_val = data.x_test, data.y_test
    else:
        if len(data.y_val) == 0:
            raise ValueError("validate_on='val' needs a validation split (val_size > 0)")
        x_val, y_val = data.x_val, data.y_val
    sample = train_eval_indices(n_train, int(cfg["train_eval_size"]))
    x_sample, y_sample = on_device(data.x_train[sample]), data.y_train[sample]
    x_val = on_device(x_val)
    measure_test = cfg["evaluate_test"] and cfg["validate_on"] != "test"
    x_test = on_device(data.x_test) if measure_test else None

    # Keras's global state (layer-name counters, the backend's graph caches) would otherwise grow
    # with every trial that a reused Tune actor runs; the numbers do not depend on it.
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = build_model(cfg["activation"], cfg["kernel_initializer"], float(cfg["dropout"]), seed=seed)
    # jit_compile stays "auto": Keras turns XLA off on a CPU-only TensorFlow (6x slower there,
    # issue 15) and on where a GPU is visible; JAX always compiles.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=float(cfg["lr"])),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=int(cfg["steps_per_execution"]))
    state = initial_state()
    if restore_dir is not None:
        state.update(load_checkpoint(restore_dir, model))
    first = int(state["epoch"])
    if first >= epochs:
        return
    batches = training_batches(data.x_train, data.y_train, int(cfg["batch_size"]), prepare,
                               epoch_order(seed, first, n_train))

    class EpochStart(keras.callbacks.Callback):
        """First in the list: sets the epoch's order and seeds before any other callback runs."""

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()
            # Re-seeded per epoch: a resumed trial sees exactly the batches an uninterrupted one would.
            batches.set_order(epoch_order(seed, epoch, n_train))
            random.seed(seed * 100_003 + epoch)  # global generators, for callbacks that draw from them
            np.random.seed((seed * 100_003 + epoch) % 2**32)

    class EpochEnd(keras.callbacks.Callback):
        """Last in the list: evaluates, folds the bests, checks divergence, checkpoints, reports."""

        def on_epoch_end(self, epoch, logs=None):
            train_seconds = time.perf_counter() - start.t0
            logs = logs or {}
            train_loss = float(logs.get("loss", math.nan))
            train_acc = float(logs.get("accuracy", math.nan))
            train_eval_loss, train_eval_acc = evaluate(self.model, x_sample, y_sample, eval_bs)
            val_loss, val_acc = evaluate(self.model, x_val, y_val, eval_bs)
            diverged = _diverged(train_loss, limit) or not math.isfinite(val_loss)
            final = epoch + 1 == epochs
            # The test set is measured once, at the trial's last epoch: that is the number compared,
            # and the per-epoch curves then hold nothing that selection could peek at (it also
            # saves an evaluation of the test split per epoch: 2.6 s of a 10.5 s epoch in default.yaml).
            test = None  # (loss, accuracy) on the test split, when measured this epoch
            if x_test is not None and (final or diverged):
                test = evaluate(self.model, x_test, data.y_test, eval_bs)
            elif cfg["validate_on"] == "test":
                test = val_loss, val_acc

            done = float(epoch + 1)
            update_bests(state, done, val_acc, val_loss)
            metrics = {
                "epoch": done,
                "train_loss": train_loss,
                "train_accuracy": train_acc,
                "train_eval_loss": train_eval_loss,
                "train_eval_accuracy": train_eval_acc,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "generalization_gap": train_eval_acc - val_acc,
                "epoch_seconds": time.perf_counter() - start.t0,
                "images_per_second": n_train / train_seconds,
                "best_val_accuracy": float(state["best_val_accuracy"]),
                "best_epoch": float(state["best_epoch"]),
                "min_val_loss": float(state["min_val_loss"]),
                "min_val_loss_epoch": float(state["min_val_loss_epoch"]),
                "target_epochs": float(epochs),
                "diverged": float(diverged),
            }
            if test is not None:
                metrics.update(test_loss=test[0], test_accuracy=test[1])
            if diverged:
                self.model.stop_training = True  # the fit ends after this epoch
                report(metrics, None)  # no checkpoint of exploded weights; the trial ends here
            elif (epoch + 1) % every and not final:
                report(metrics, None)
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    save_checkpoint(self.model, state, tmp, full_model=final)
                    report(metrics, tmp)

    start = EpochStart()
    model.fit(batches.data, epochs=epochs, initial_epoch=first, shuffle=False, verbose=0,
              callbacks=[start, *callbacks, EpochEnd()])


def _trial_resources() -> tuple[int, float]:
    """(CPUs, GPUs) this Tune trial asked for; outside Tune, all CPUs and no GPU."""
    try:
        from ray import tune

        resources = tune.get_context().get_trial_resources().required_resources
    except Exception:  # outside Tune
        return os.cpu_count() or 1, 0.0
    return max(1, int(resources.get("CPU", 1))), float(resources.get("GPU", 0.0))


def train_cnn(config: dict[str, Any], data: Dataset | dict[int, Dataset],
              callbacks: Sequence[Any] = ()) -> None:
    """Ray Tune function trainable. Use with ``tune.with_parameters(train_cnn, data=dataset)``.

    ``data`` may map split seeds to datasets (a sweep with ``data.vary_split``): the trial then
    trains on ``data[config["split_seed"]]``.

    Threads and the GPU memory cap follow the trial's resources (``cpu``, fractional ``gpu``).
    ``callbacks`` are extra Keras callbacks passed to the trial's ``fit`` call (they see the trial's
    true epoch index, also after a restore).
    """
    check_config(config)  # a bad config fails before the backend starts
    if isinstance(data, dict):
        if config.get("split_seed") not in data:
            raise ValueError(f"trial config split_seed={config.get('split_seed')!r}: no such split; "
                             f"the sweep made {sorted(data)}")
        data = data[config["split_seed"]]
    from trainable._backend import configure_process

    configure_process(*_trial_resources())

    from ray import tune

    def report(metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        train_loop(config, data, report, callbacks=callbacks)
        return
    with checkpoint.as_directory() as ckpt_dir:
        train_loop(config, data, report, restore_dir=ckpt_dir, callbacks=callbacks)
