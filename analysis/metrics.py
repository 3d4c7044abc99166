"""Per-trial metrics computed from the per-epoch table (vectorised: 100k epochs in well under 1 s).

Overfitting is measured like accuracy: the generalization gap is ``train_eval_accuracy -
val_accuracy``, both in inference mode (the trainable evaluates a fixed training sample the size of
the validation split after each epoch). Experiments that predate ``train_eval_accuracy`` only have
the running training accuracy of the epoch (dropout on, weights changing), so their gap falls back
to ``train_accuracy - val_accuracy`` and ``gap_source`` says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KEYS = ["experiment", "stage", "trial_id"]
TRIAL_METRICS = ("n_epochs", "final_val_accuracy", "best_val_accuracy", "best_epoch",
                 "final_train_accuracy", "final_train_eval_accuracy", "final_gap", "gap_source",
                 "final_val_loss", "min_val_loss", "min_val_loss_epoch", "val_loss_rise",
                 "final_test_accuracy", "diverged", "compute_seconds")
GAP_EVAL, GAP_RUNNING = "train_eval", "train_running"


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    """``df[name]`` as floats, or all-NaN when the column is absent (older experiments)."""
    if name in df:
        return pd.to_numeric(df[name], errors="coerce").astype(float)
    return pd.Series(np.nan, index=df.index, dtype=float)


def epoch_gap(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per epoch row: ``gap`` (train_eval_accuracy - val_accuracy where measured, else the
    running train_accuracy - val_accuracy) and ``gap_source`` (``train_eval`` | ``train_running``)."""
    val = _col(epochs, "val_accuracy")
    train_eval = _col(epochs, "train_eval_accuracy")
    measured = train_eval.notna()
    gap = (train_eval - val).where(measured, _col(epochs, "train_accuracy") - val)
    source = pd.Series(np.where(measured, GAP_EVAL, GAP_RUNNING), index=epochs.index)
    return pd.DataFrame({"gap": gap, "gap_source": source}, index=epochs.index)


def trial_metrics(epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per trial (``KEYS``) with:

    * ``final_val_accuracy``/``final_train_accuracy``/``final_train_eval_accuracy``/
      ``final_val_loss``: at the last reported epoch,
    * ``best_val_accuracy`` and ``best_epoch`` (first epoch reaching it),
    * ``final_gap``: the generalization gap at the last epoch (see :func:`epoch_gap`) and its
      ``gap_source``,
    * ``min_val_loss``, ``min_val_loss_epoch`` and ``val_loss_rise`` = final - min val_loss
      (how far validation loss climbed after its best point: 0 if it never rose),
    * ``final_test_accuracy`` where the trial measured the test set, ``diverged``, and
      ``compute_seconds`` (sum of ``epoch_seconds``).
    """
    if epochs.empty:
        return pd.DataFrame(columns=[*KEYS, *TRIAL_METRICS])
    df = epochs.sort_values([*KEYS, "epoch"], kind="stable").reset_index(drop=True)
    df = df.join(epoch_gap(df))
    group_keys = [df[k] for k in KEYS]
    g = df.groupby(KEYS, sort=False)
    last = g.tail(1).set_index(KEYS)
    out = pd.DataFrame(index=last.index)
    out["n_epochs"] = g.size()
    out["final_val_accuracy"] = _col(last, "val_accuracy")
    out["final_train_accuracy"] = _col(last, "train_accuracy")
    out["final_train_eval_accuracy"] = _col(last, "train_eval_accuracy")
    out["final_gap"] = last["gap"]
    out["gap_source"] = last["gap_source"]
    out["final_val_loss"] = _col(last, "val_loss")
    out["final_test_accuracy"] = _col(last, "test_accuracy")
    out["diverged"] = _col(last, "diverged").fillna(0) == 1.0
    out["compute_seconds"] = _col(df, "epoch_seconds").groupby(group_keys, sort=False).sum(min_count=1)

    val_acc = _col(df, "val_accuracy").fillna(-np.inf)
    best_idx = val_acc.groupby(group_keys, sort=False).idxmax()
    best = df.loc[best_idx.values].set_index(KEYS)
    out["best_val_accuracy"] = _col(best, "val_accuracy")
    out["best_epoch"] = best["epoch"]

    val_loss = _col(df, "val_loss")
    val_loss = val_loss.where(np.isfinite(val_loss))
    has_loss = val_loss.notna()
    if has_loss.any():
        sub = df[has_loss]
        min_idx = val_loss[has_loss].groupby([sub[k] for k in KEYS], sort=False).idxmin()
        mins = df.loc[min_idx.values].set_index(KEYS)
        out["min_val_loss"] = mins["val_loss"].astype(float)
        out["min_val_loss_epoch"] = mins["epoch"]
    else:
        out["min_val_loss"] = np.nan
        out["min_val_loss_epoch"] = np.nan
    out["val_loss_rise"] = out["final_val_loss"] - out["min_val_loss"]
    return out.reset_index()[[*KEYS, *TRIAL_METRICS]]
