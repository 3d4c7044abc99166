"""trainable/train.py: the loop on its own (fake report), and under a real local 2-CPU Ray Tune
(reports, resume from the last checkpoint, divergence)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from ray import tune

from tests.conftest import fail_once_callback
from trainable.train import (
    DEFAULTS,
    METRICS,
    check_config,
    epoch_order,
    initial_state,
    train_cnn,
    train_eval_indices,
    train_loop,
    update_bests,
)


def _epochs_ray_may_keep(before: list[float], after: list[float]) -> list[list[float]]:
    """The epoch columns Ray Tune may show for a trial that failed after reporting ``before`` and
    was restored from a checkpoint: on restore it copies the storage's result.json (uploaded at
    most every sync period) over the newer local one, so a tail of ``before`` can be lost
    (ray/tune/logger/json.py, ``_restore_from_remote``). A restart from scratch fits none."""
    return [before[:k] + after for k in range(len(before) + 1)]


def _fit(tmp_path, dataset, param_space, *, callbacks=(), max_failures=0, name="exp"):
    trainable = tune.with_parameters(train_cnn, data=dataset, callbacks=callbacks)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=param_space,
        tune_config=tune.TuneConfig(metric="val_accuracy", mode="max"),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name=name, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=max_failures)),
    )
    return tuner.fit()


def test_two_trials_report_every_metric_every_epoch(ray_local, tiny_dataset, tmp_path):
    results = _fit(tmp_path, tiny_dataset, {"activation": tune.grid_search(["relu", "selu"]),
                                            "epochs": 2, "seed": 1})
    assert len(results) == 2 and not results.errors
    for result in results:
        df = result.metrics_dataframe
        assert df["epoch"].tolist() == [1.0, 2.0]
        for key in METRICS:
            assert key in df and df[key].map(lambda v: isinstance(v, float) and math.isfinite(v)).all(), key
        # The gap is measured in inference mode on the fixed training sample, not on the fit's
        # running averages.
        assert (df["generalization_gap"] == df["train_eval_accuracy"] - df["val_accuracy"]).all()
        assert (df["best_val_accuracy"] == df["val_accuracy"].cummax()).all()
        assert (df["min_val_loss"] == df["val_loss"].cummin()).all()
        assert (df["diverged"] == 0.0).all()
        assert result.checkpoint is not None
        # The synthetic task is learnable: well above chance (0.1) after 2 epochs (He-initialised
        # relu reaches 0.35-0.5 there on 400 images, lecun-initialised selu 0.9).
        assert df["val_accuracy"].iloc[-1] > 0.3


def test_trial_killed_after_epoch_one_resumes_at_epoch_two_from_checkpoint(
        ray_local, tiny_dataset, tmp_path):
    marker = str(tmp_path / "crashed-once")
    results = _fit(tmp_path, tiny_dataset,
                   {"activation": "relu", "epochs": 3, "seed": 2, "checkpoint_every": 1},
                   callbacks=[fail_once_callback(marker, at_epoch=1)], max_failures=1)
    (result,) = results
    assert result.error is None
    epochs = result.metrics_dataframe["epoch"].tolist()
    # After the crash the trial went on at epoch 2, not from scratch (that would read 1, 1, 2, 3).
    assert epochs in (_epochs_ray_may_keep([1.0], [2.0, 3.0])), epochs
    assert result.metrics["training_iteration"] == 3


def test_retry_resumes_from_the_last_checkpoint_and_repeats_the_epochs_after_it_identically(
        ray_local, tiny_dataset, tmp_path):
    marker = str(tmp_path / "crashed-once")
    results = _fit(tmp_path, tiny_dataset,
                   {"activation": "relu", "epochs": 4, "seed": 3, "checkpoint_every": 2},
                   callbacks=[fail_once_callback(marker, at_epoch=3)], max_failures=1, name="every2")
    (result,) = results
    assert result.error is None
    df = result.metrics_dataframe
    # Checkpoints after epochs 2 and 4 only; the crash in epoch 4 resumed from epoch 2's, so
    # epoch 3 ran twice (test_a_run_restored_... checks it repeats identically).
    assert df["epoch"].tolist() in _epochs_ray_may_keep([1.0, 2.0, 3.0], [3.0, 4.0]), df["epoch"].tolist()
    assert len(list(Path(result.path).glob("checkpoint_*"))) == 2


def test_huge_learning_rate_ends_as_diverged_not_failed(ray_local, tiny_dataset, tmp_path):
    results = _fit(tmp_path, tiny_dataset, {"activation": "relu", "epochs": 5, "lr": 1e3})
    (result,) = results
    assert result.error is None, "divergence must not be reported as a crash"
    assert result.metrics["diverged"] == 1.0
    assert result.metrics["epoch"] == 1.0, "the trial must stop at the first diverged epoch"


def test_validate_on_test_measures_the_test_split(ray_local, tiny_dataset, tmp_path):
    results = _fit(tmp_path, tiny_dataset, {"activation": "relu", "epochs": 1, "validate_on": "test"})
    metrics = results[0].metrics
    assert metrics["test_accuracy"] == metrics["val_accuracy"]


@pytest.mark.parametrize("normalization", ["standardize"])
def test_standardised_inputs_with_selu_and_alpha_dropout_train(ray_local, tiny_dataset, tmp_path,
                                                               normalization):
    results = _fit(tmp_path, tiny_dataset, {"activation": "selu", "epochs": 1, "dropout": 0.05,
                                            "normalization": normalization, "evaluate_test": True})
    metrics = results[0].metrics
    assert metrics["diverged"] == 0.0 and 0.0 <= metrics["test_accuracy"] <= 1.0


# ---- the loop without Ray ------------------------------------------------------------------

def _run(dataset, config, callbacks=(), restore_dir=None, keep=None):
    reports = []

    def report(metrics, checkpoint_dir):
        reports.append(dict(metrics, checkpoint=checkpoint_dir is not None))
        if checkpoint_dir is not None:  # valid only during the call: keep what the test needs
            reports[-1]["state"] = json.loads(Path(checkpoint_dir, "state.json").read_text())
            if Path(checkpoint_dir, "model.keras").exists():
                reports[-1]["model"] = keras.models.load_model(Path(checkpoint_dir, "model.keras"))
            if keep is not None:
                shutil.copytree(checkpoint_dir, keep / f"epoch{int(metrics['epoch'])}")

    train_loop({"seed": 4, **config}, dataset, report, callbacks=callbacks, restore_dir=restore_dir)
    return reports


def test_the_test_split_is_measured_once_at_the_last_epoch(tiny_dataset):
    reports = _run(tiny_dataset, {"epochs": 3, "evaluate_test": True})
    assert ["test_accuracy" in r for r in reports] == [False, False, True]
    assert 0.0 <= reports[-1]["test_accuracy"] <= 1.0 and reports[-1]["test_loss"] > 0


def test_a_second_trial_in_the_same_process_gives_the_numbers_of_a_first_one(tiny_dataset):
    # What Tune's reuse_actors relies on (benchmarks/bench_sweep.py overhead): a reused actor runs
    # trial after trial in one process, so nothing of the previous trial may leak into the next.
    config = {"epochs": 2, "dropout": 0.2, "activation": "selu"}
    first = _run(tiny_dataset, config)
    _run(tiny_dataset, {"epochs": 1, "lr": 0.01, "activation": "relu"})  # another trial in between
    again = _run(tiny_dataset, config)
    keys = ("train_loss", "train_eval_loss", "val_loss", "val_accuracy", "test_accuracy")
    assert [[r.get(k) for k in keys] for r in again] == [[r.get(k) for k in keys] for r in first]


def test_train_eval_metrics_are_inference_mode_on_a_fixed_sample_of_train_eval_size(tiny_dataset):
    (rep,) = _run(tiny_dataset, {"epochs": 1, "dropout": 0.5, "train_eval_size": 150})
    idx = train_eval_indices(len(tiny_dataset.y_train), 150)
    assert len(idx) == 150 < len(tiny_dataset.y_train)
    x = tiny_dataset.x_train[idx].astype(np.float32) / 255.0
    out = rep["model"].evaluate(x, tiny_dataset.y_train[idx], batch_size=37, verbose=0, return_dict=True)
    assert rep["train_eval_loss"] == pytest.approx(out["loss"], rel=1e-5)
    assert rep["train_eval_accuracy"] == pytest.approx(out["accuracy"])
    # The fit's running average with dropout 0.5 is a different number.
    assert rep["train_loss"] != pytest.approx(rep["train_eval_loss"], rel=1e-3)
    assert rep["generalization_gap"] == rep["train_eval_accuracy"] - rep["val_accuracy"]


def test_train_eval_sample_is_at_most_1000_images_by_default_and_nested_in_larger_ones():
    # issue 15: the sample no longer grows with the validation split (5,000 images in default.yaml).
    assert DEFAULTS["train_eval_size"] == 1000
    small, large = train_eval_indices(45_000, 1000), train_eval_indices(45_000, 5000)
    assert len(small) == 1000 and set(small) <= set(large)


def test_train_eval_sample_is_seeded_by_a_constant_not_the_trial():
    a, b = train_eval_indices(1000, 100), train_eval_indices(1000, 100)
    assert (a == b).all() and len(np.unique(a)) == 100 and (np.diff(a) > 0).all()
    assert not (train_eval_indices(1000, 100, seed=1) == a).all()
    assert len(train_eval_indices(50, 100)) == 50  # never more than the training split


def test_bests_follow_the_analysis_definitions():
    state = initial_state()
    epochs = [(1, 0.3, math.nan), (2, 0.5, 1.4), (3, 0.5, 1.2), (4, 0.4, math.inf), (5, 0.45, 1.3)]
    for epoch, acc, loss in epochs:
        update_bests(state, float(epoch), acc, loss)
    assert state["best_val_accuracy"] == 0.5 and state["best_epoch"] == 2.0  # first epoch reaching it
    assert state["min_val_loss"] == 1.2 and state["min_val_loss_epoch"] == 3.0  # NaN and inf skipped
    assert state["epoch"] == 5.0
    fresh = initial_state()
    update_bests(fresh, 1.0, 0.0, math.nan)
    assert fresh["best_epoch"] == 1.0 and math.isnan(fresh["min_val_loss"])


def test_checkpoints_every_n_epochs_and_always_after_the_last(tiny_dataset):
    reports = _run(tiny_dataset, {"epochs": 5, "checkpoint_every": 2})
    assert [r["epoch"] for r in reports] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [r["epoch"] for r in reports if r["checkpoint"]] == [2.0, 4.0, 5.0]
    state = reports[3]["state"]
    assert state["epoch"] == 4.0 and state["best_val_accuracy"] == max(r["val_accuracy"] for r in reports[:4])
    for r in reports:
        assert all(isinstance(r[k], float) for k in METRICS)


def test_a_run_restored_from_its_checkpoint_continues_exactly_like_an_uninterrupted_one(tiny_dataset,
                                                                                        tmp_path):
    config = {"epochs": 4, "checkpoint_every": 2, "dropout": 0.2}
    whole = _run(tiny_dataset, config, keep=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch2", "epoch4"]
    assert not (tmp_path / "epoch2" / "model.keras").exists()  # the whole model only at the end
    assert (tmp_path / "epoch4" / "model.keras").exists()
    resumed = _run(tiny_dataset, config, restore_dir=str(tmp_path / "epoch2"))
    assert [r["epoch"] for r in resumed] == [3.0, 4.0]
    for a, b in zip(whole[2:], resumed):  # weights, Adam moments, dropout seeds and order restored
        for key in ("train_loss", "train_eval_loss", "val_loss", "val_accuracy", "best_epoch",
                    "min_val_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key


def test_an_interrupted_and_resumed_trial_ends_with_the_weights_of_an_uninterrupted_one(tiny_dataset,
                                                                                       tmp_path):
    # The single fit of a resumed trial starts at initial_epoch with the same per-epoch orders, so
    # it trains on exactly the same batches: the final model and Adam variables agree to float
    # rounding. A resume that replayed epoch 1's order, or shifted the orders by the restored
    # epoch, ends elsewhere (the last check: another seed's orders do).
    config = {"epochs": 4, "checkpoint_every": 2, "dropout": 0.2}
    _run(tiny_dataset, config, keep=tmp_path / "whole")
    _run(tiny_dataset, config, restore_dir=str(tmp_path / "whole" / "epoch2"), keep=tmp_path / "resumed")

    def final(path):
        with np.load(path / "epoch4" / "variables.npz") as npz:
            return [npz[f"arr_{i}"] for i in range(len(npz.files))]

    whole, resumed = final(tmp_path / "whole"), final(tmp_path / "resumed")
    assert len(whole) == len(resumed) > 10
    for a, b in zip(whole, resumed):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    _run(tiny_dataset, {**config, "seed": 5}, restore_dir=str(tmp_path / "whole" / "epoch2"),
         keep=tmp_path / "other")
    other = final(tmp_path / "other")
    assert not all(np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(whole, other))


def test_one_fit_call_per_trial_whatever_the_epochs(tiny_dataset, monkeypatch):
    calls = []
    fit = keras.Model.fit

    def counting_fit(self, *args, **kwargs):
        calls.append((kwargs.get("initial_epoch"), kwargs.get("epochs")))
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", counting_fit)
    reports = _run(tiny_dataset, {"epochs": 3})
    assert calls == [(0, 3)] and [r["epoch"] for r in reports] == [1.0, 2.0, 3.0]


def test_a_checkpoint_in_the_earlier_model_keras_format_still_resumes(tiny_dataset, tmp_path):
    whole = _run(tiny_dataset, {"epochs": 2, "checkpoint_every": 1}, keep=tmp_path)
    old = tmp_path / "old-format"
    old.mkdir()
    keras.models.load_model(tmp_path / "epoch2" / "model.keras").save(old / "model.keras")
    shutil.copy(tmp_path / "epoch2" / "state.json", old / "state.json")
    model_only = _run(tiny_dataset, {"epochs": 3}, restore_dir=str(old))
    npz = _run(tiny_dataset, {"epochs": 3}, restore_dir=str(tmp_path / "epoch2"))
    assert [r["epoch"] for r in model_only] == [3.0] and whole[-1]["epoch"] == 2.0
    assert model_only[0]["val_loss"] == pytest.approx(npz[0]["val_loss"], rel=1e-5)


def test_restoring_into_a_differently_configured_model_names_the_fix(tiny_dataset, tmp_path):
    _run(tiny_dataset, {"epochs": 2, "checkpoint_every": 2, "dropout": 0.2}, keep=tmp_path)
    with pytest.raises(ValueError, match="resume with the trial's own config"):
        _run(tiny_dataset, {"epochs": 3, "dropout": 0.0}, restore_dir=str(tmp_path / "epoch2"))


def test_divergence_is_checked_at_epoch_end_and_ends_the_trial_without_checkpoint(tiny_dataset):
    # JAX and torch clip probabilities, so a diverged loss saturates near 14.5 there (DEFAULTS).
    limit = 100.0 if keras.backend.backend() == "tensorflow" else 10.0
    reports = _run(tiny_dataset, {"epochs": 3, "lr": 1e3, "divergence_loss": limit})
    assert len(reports) == 1
    assert reports[0]["diverged"] == 1.0 and not reports[0]["checkpoint"]


def test_steps_per_execution_reaches_keras(tiny_dataset):
    import keras

    class CountBatchEnds(keras.callbacks.Callback):
        calls = 0

        def on_train_batch_end(self, batch, logs=None):
            CountBatchEnds.calls += 1

    # 400 images / batch 100 = 4 steps per epoch; 2 steps per execution: 2 batch-end hooks.
    _run(tiny_dataset, {"epochs": 1, "steps_per_execution": 2}, callbacks=[CountBatchEnds()])
    assert CountBatchEnds.calls == 2


def test_epochs_do_not_borrow_batches_when_steps_per_execution_does_not_divide_them(tiny_dataset):
    # 4 steps per epoch, 3 per execution: each epoch must still train on its own 4 batches (its
    # last execution runs 1 step), never pull the next epoch's first batches into it, so the
    # numbers are those of one step per execution.
    keys = ("train_loss", "train_eval_loss", "val_loss")
    one = _run(tiny_dataset, {"epochs": 2, "steps_per_execution": 1})
    three = _run(tiny_dataset, {"epochs": 2, "steps_per_execution": 3})
    for a, b in zip(one, three):
        assert [a[k] for k in keys] == pytest.approx([b[k] for k in keys], rel=1e-5)


def test_xla_stays_off_on_a_cpu_only_tensorflow(tiny_dataset):
    seen = []

    class Look(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append(self.model.jit_compile)

    _run(tiny_dataset, {"epochs": 1}, callbacks=[Look()])
    if keras.backend.backend() == "tensorflow":  # jit_compile=True on CPU was 6x slower (issue 15)
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            assert seen == [False]


def test_defaults_hold_every_key_the_sweep_config_derives_from():
    assert {"activation", "lr", "epochs", "batch_size", "kernel_initializer", "normalization", "dropout",
            "seed", "validate_on", "evaluate_test", "divergence_loss", "steps_per_execution",
            "eval_batch_size", "checkpoint_every", "train_eval_size"} <= set(DEFAULTS)
    assert check_config({}) == DEFAULTS
    assert check_config({"epochs": np.int64(3), "seed": np.int64(7)})["epochs"] == 3  # search spaces


def test_epoch_order_depends_on_seed_and_epoch_only():
    a = epoch_order(5, 2, 1000)
    assert (a == epoch_order(5, 2, 1000)).all() and sorted(a) == list(range(1000))
    assert not (a == epoch_order(5, 3, 1000)).all() and not (a == epoch_order(6, 2, 1000)).all()


@pytest.mark.parametrize("key, value", [("checkpoint_every", 0), ("eval_batch_size", 1.5),
                                        ("steps_per_execution", True), ("epochs", "3"), ("lr", 0.0),
                                        ("train_eval_size", 0),
                                        ("validate_on", "train"), ("seed", -1), ("seed", 0.5)])
def test_bad_trial_config_names_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        check_config({key: value})
