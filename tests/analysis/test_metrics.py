"""analysis/metrics.py on hand-built curves with hand-checked answers."""

import math

import pandas as pd
import pytest

from analysis.metrics import epoch_gap, trial_metrics


def _curve(trial_id, val_acc, val_loss, train_acc, test_acc=None, diverged=None, train_eval=None,
           seconds=None):
    n = len(val_acc)
    df = pd.DataFrame({
        "experiment": "e", "stage": "confirm", "trial_id": trial_id, "arm": "relu",
        "epoch": [float(i + 1) for i in range(n)], "val_accuracy": val_acc, "val_loss": val_loss,
        "train_accuracy": train_acc, "test_accuracy": test_acc or [None] * n,
        "diverged": diverged or [0.0] * n,
    })
    if train_eval is not None:
        df["train_eval_accuracy"] = train_eval
    if seconds is not None:
        df["epoch_seconds"] = seconds
    return df


def test_overfitting_curve_metrics_match_hand_computation():
    epochs = _curve("a", val_acc=[0.30, 0.50, 0.60, 0.58, 0.55],
                    val_loss=[2.0, 1.5, 1.2, 1.3, 1.6],
                    train_acc=[0.30, 0.55, 0.70, 0.80, 0.90],
                    test_acc=[0.29, 0.49, 0.61, 0.57, 0.54])
    m = trial_metrics(epochs.sample(frac=1, random_state=0)).iloc[0]  # row order must not matter
    assert m["n_epochs"] == 5
    assert m["final_val_accuracy"] == 0.55 and m["best_val_accuracy"] == 0.60 and m["best_epoch"] == 3
    assert m["final_gap"] == pytest.approx(0.35)
    assert m["min_val_loss"] == 1.2 and m["min_val_loss_epoch"] == 3
    assert m["val_loss_rise"] == pytest.approx(0.4)
    assert m["final_test_accuracy"] == 0.54 and not m["diverged"]


def test_monotone_curve_has_no_rise_and_best_is_last():
    m = trial_metrics(_curve("b", [0.2, 0.4], [2.0, 1.0], [0.1, 0.3])).iloc[0]
    assert m["val_loss_rise"] == 0 and m["best_epoch"] == 2 and m["min_val_loss_epoch"] == 2
    assert m["final_gap"] == pytest.approx(-0.1) and math.isnan(m["final_test_accuracy"])


def test_best_epoch_is_the_first_to_reach_the_best():
    m = trial_metrics(_curve("c", [0.5, 0.7, 0.7], [1.0, 0.9, 0.95], [0.5, 0.7, 0.8])).iloc[0]
    assert m["best_epoch"] == 2


def test_diverged_trial_with_nan_loss_keeps_finite_metrics():
    epochs = _curve("d", [0.3, 0.1], [1.9, float("nan")], [0.3, 0.1], diverged=[0.0, 1.0])
    m = trial_metrics(epochs).iloc[0]
    assert m["diverged"] and m["min_val_loss"] == 1.9 and math.isnan(m["val_loss_rise"])


def test_trials_are_kept_apart():
    epochs = pd.concat([_curve("a", [0.1, 0.2], [2, 1], [0.1, 0.2]), _curve("b", [0.9], [0.3], [0.95])])
    m = trial_metrics(epochs).set_index("trial_id")
    assert m.loc["a", "n_epochs"] == 2 and m.loc["b", "final_val_accuracy"] == 0.9


def test_empty_input_gives_an_empty_table():
    assert trial_metrics(pd.DataFrame(columns=["experiment", "stage", "trial_id", "epoch"])).empty


def test_gap_uses_train_eval_accuracy_when_measured():
    """The gap compares like with like: inference-mode train accuracy minus val accuracy."""
    epochs = _curve("e", [0.5, 0.6], [1.2, 1.1], train_acc=[0.55, 0.70], train_eval=[0.58, 0.75],
                    seconds=[3.0, 4.5])
    m = trial_metrics(epochs).iloc[0]
    assert m["final_gap"] == pytest.approx(0.15) and m["gap_source"] == "train_eval"
    assert m["final_train_eval_accuracy"] == 0.75 and m["compute_seconds"] == 7.5


def test_gap_falls_back_to_running_train_accuracy_and_says_so():
    m = trial_metrics(_curve("f", [0.5, 0.6], [1.2, 1.1], train_acc=[0.55, 0.70])).iloc[0]
    assert m["final_gap"] == pytest.approx(0.10) and m["gap_source"] == "train_running"
    assert math.isnan(m["final_train_eval_accuracy"]) and math.isnan(m["compute_seconds"])


def test_epoch_gap_mixes_sources_row_by_row():
    epochs = _curve("g", [0.5, 0.6], [1.2, 1.1], train_acc=[0.55, 0.70], train_eval=[float("nan"), 0.8])
    g = epoch_gap(epochs)
    assert list(g["gap_source"]) == ["train_running", "train_eval"]
    assert g["gap"].tolist() == pytest.approx([0.05, 0.2])
