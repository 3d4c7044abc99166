"""trainable/train.py under a real (local, 2-CPU) Ray Tune: reports, resume, divergence."""

from __future__ import annotations

import math

import pytest
from ray import tune

from tests.conftest import fail_once_callback
from trainable.train import METRICS, train_cnn


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
        assert (df["generalization_gap"] == df["train_accuracy"] - df["val_accuracy"]).all()
        assert (df["diverged"] == 0.0).all()
        assert result.checkpoint is not None
        # The synthetic task is learnable: well above chance (0.1) after 2 epochs.
        assert df["val_accuracy"].iloc[-1] > 0.4


def test_trial_killed_after_epoch_one_resumes_at_epoch_two_from_checkpoint(
        ray_local, tiny_dataset, tmp_path):
    marker = str(tmp_path / "crashed-once")
    results = _fit(tmp_path, tiny_dataset, {"activation": "relu", "epochs": 3, "seed": 2},
                   callbacks=[fail_once_callback(marker, at_epoch=1)], max_failures=1)
    (result,) = results
    assert result.error is None
    epochs = result.metrics_dataframe["epoch"].tolist()
    # Epoch 1 ran once; after the crash the trial went on at epoch 2, not from scratch.
    assert epochs == [1.0, 2.0, 3.0], epochs
    assert result.metrics["training_iteration"] == 3


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
