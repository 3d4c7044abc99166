"""analysis/overfitting.py: gap and val-loss curves per epoch, over the right unit, with bands."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.overfitting import overfitting_by_epoch


def _runs(replicates: int, seeds: int, train_eval: bool = True):
    trials, epochs = [], []
    for r in range(replicates):
        for k in range(seeds):
            tid = f"t{r}{k}"
            key = {"experiment": "e", "stage": "confirm", "trial_id": tid}
            trials.append({**key, "arm": "relu", "replicate": r, "status": "finished"})
            for e in (1, 2):
                row = {**key, "epoch": e, "val_accuracy": 0.5, "val_loss": 1.0, "train_accuracy": 0.9}
                if train_eval:
                    row["train_eval_accuracy"] = 0.5 + 0.01 * e * (r + 1) + 0.001 * k
                epochs.append(row)
    return pd.DataFrame(trials), pd.DataFrame(epochs)


def test_bands_are_over_replicate_means_when_there_are_replicates():
    info = overfitting_by_epoch(*_runs(3, 2)).set_index("epoch")
    reps = [0.02 * (r + 1) + 0.0005 for r in range(3)]  # replicate means of the gap at epoch 2
    assert info.loc[2, "unit"] == "replicate" and info.loc[2, "n"] == 3
    assert info.loc[2, "gap_mean"] == pytest.approx(np.mean(reps))
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean(reps), scale=stats.sem(reps))
    assert (info.loc[2, "gap_ci_low"], info.loc[2, "gap_ci_high"]) == pytest.approx((lo, hi))
    assert info.loc[2, "gap_source"] == "train_eval"


def test_one_replicate_falls_back_to_seeds_and_old_runs_to_running_accuracy():
    info = overfitting_by_epoch(*_runs(1, 3, train_eval=False))
    assert (info["unit"] == "seed").all() and (info["gap_source"] == "train_running").all()
    assert info["gap_mean"].tolist() == pytest.approx([0.4, 0.4])
    assert info["gap_ci_low"].isna().all()  # no spread: no interval
