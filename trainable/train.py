"""The Ray Tune function trainable: trains the CNN epoch by epoch and reports every epoch.

Trial config keys (all optional but ``activation``; see ``DEFAULTS``):
    activation, lr, epochs, batch_size, kernel_initializer, normalization, dropout, seed,
    validate_on ("val" or "test": which split the val_* metrics are measured on),
    evaluate_test (also report test_loss/test_accuracy every epoch).

Each epoch reports a flat dict of floats (``METRICS``) with a checkpoint holding the model,
its optimizer state and the epoch, so a retried or resumed trial continues where it stopped.
A NaN, infinite or exploded (> ``divergence_loss``) training loss ends the trial at once
with ``diverged = 1.0``: a result of the search, not a crash.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from trainable.data import Dataset, normalize

DEFAULTS: dict[str, Any] = {
    "activation": "relu",
    "lr": 1e-3,
    "epochs": 50,
    "batch_size": 100,
    "kernel_initializer": "auto",
    "normalization": "scale",
    "dropout": 0.0,
    "seed": 0,
    "validate_on": "val",
    "evaluate_test": False,
    # Training loss (nats) above which a trial counts as diverged. The untrained CNN starts
    # near ln(10) = 2.3; Adam at lr 1e3 reaches ~1e13 without ever producing a NaN.
    "divergence_loss": 100.0,
}

METRICS: tuple[str, ...] = (
    "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "generalization_gap",
    "epoch_seconds", "images_per_second", "best_val_accuracy", "target_epochs", "diverged",
)
CHECKPOINT_MODEL = "model.keras"
CHECKPOINT_STATE = "state.json"


def _trial_cpus() -> int:
    try:
        from ray import tune

        resources = tune.get_context().get_trial_resources().required_resources
        return max(1, int(resources.get("CPU", 1)))
    except Exception:  # outside Tune
        return os.cpu_count() or 1


def _diverged(loss: float, limit: float) -> bool:
    return not math.isfinite(loss) or loss > limit


def _divergence_callback(limit: float):
    import keras

    class StopOnDivergence(keras.callbacks.Callback):
        """Stop within the epoch once a batch loss is non-finite or above ``limit``."""

        def on_train_batch_end(self, batch, logs=None):
            loss = float((logs or {}).get("loss", 0.0))
            if _diverged(loss, limit):
                self.model.stop_training = True

    return StopOnDivergence()


def train_cnn(config: dict[str, Any], data: Dataset, callbacks: Sequence[Any] = ()) -> None:
    """Ray Tune function trainable. Use with ``tune.with_parameters(train_cnn, data=dataset)``.

    ``callbacks`` are extra Keras callbacks passed to every ``fit`` call (they see the
    trial's true epoch index, also after a restore).
    """
    cfg = {**DEFAULTS, **config}
    from trainable._backend import configure_process

    configure_process(_trial_cpus())

    import keras
    from ray import tune

    from trainable.model import build_model

    seed = int(cfg["seed"])
    limit = float(cfg["divergence_loss"])
    epochs = int(cfg["epochs"])
    batch_size = int(cfg["batch_size"])

    def prep(x):
        return normalize(x, cfg["normalization"], data.channel_mean, data.channel_std)

    x_train, y_train = prep(data.x_train), data.y_train
    if cfg["validate_on"] == "test":
        x_val, y_val = prep(data.x_test), data.y_test
    else:
        if len(data.y_val) == 0:
            raise ValueError("validate_on='val' needs a validation split (val_size > 0)")
        x_val, y_val = prep(data.x_val), data.y_val
    x_test = prep(data.x_test) if cfg["evaluate_test"] and cfg["validate_on"] != "test" else None

    start_epoch, best_val = 0, 0.0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            model = keras.models.load_model(os.path.join(ckpt_dir, CHECKPOINT_MODEL))
            with open(os.path.join(ckpt_dir, CHECKPOINT_STATE)) as fh:
                state = json.load(fh)
        start_epoch, best_val = int(state["epoch"]), float(state["best_val_accuracy"])
    else:
        keras.utils.set_random_seed(seed)
        model = build_model(cfg["activation"], cfg["kernel_initializer"], float(cfg["dropout"]),
                            seed=seed)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=float(cfg["lr"])),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    for epoch in range(start_epoch, epochs):
        # Re-seed per epoch so a resumed trial shuffles exactly as an uninterrupted one.
        keras.utils.set_random_seed((seed * 100_003 + epoch) % 2**31)
        t0 = time.perf_counter()
        hist = model.fit(x_train, y_train, batch_size=batch_size, epochs=epoch + 1,
                         initial_epoch=epoch, shuffle=True, verbose=0,
                         callbacks=[_divergence_callback(limit), *callbacks])
        train_seconds = time.perf_counter() - t0
        train_loss = float(hist.history["loss"][-1])
        train_acc = float(hist.history["accuracy"][-1])
        val_loss, val_acc = (float(v) for v in model.evaluate(x_val, y_val, batch_size=1000, verbose=0))
        diverged = _diverged(train_loss, limit) or not math.isfinite(val_loss)
        best_val = max(best_val, val_acc)
        metrics = {
            "epoch": float(epoch + 1),
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "generalization_gap": train_acc - val_acc,
            "epoch_seconds": time.perf_counter() - t0,
            "images_per_second": len(y_train) / train_seconds,
            "best_val_accuracy": best_val,
            "target_epochs": float(epochs),
            "diverged": float(diverged),
        }
        if x_test is not None:
            test_loss, test_acc = (float(v) for v in model.evaluate(x_test, data.y_test,
                                                                     batch_size=1000, verbose=0))
            metrics.update(test_loss=test_loss, test_accuracy=test_acc)
        elif cfg["validate_on"] == "test":
            metrics.update(test_loss=val_loss, test_accuracy=val_acc)
        if diverged:
            tune.report(metrics)  # no checkpoint of NaN weights; the trial ends here
            return
        with tempfile.TemporaryDirectory() as tmp:
            model.save(os.path.join(tmp, CHECKPOINT_MODEL))
            with open(os.path.join(tmp, CHECKPOINT_STATE), "w") as fh:
                json.dump({"epoch": epoch + 1, "best_val_accuracy": best_val}, fh)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
