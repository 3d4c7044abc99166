"""Overfitting at matched epochs: per arm and epoch, the generalization gap, val loss and val
accuracy with intervals over replicates (or over seeds when there is one replicate).

The tests of the gap (at each arm's chosen configuration and at matched epochs) are in
:mod:`analysis.decision`; this module gives the curves and their bands that the report shows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.contract import FINISHED, replicate_column
from analysis.metrics import GAP_RUNNING, epoch_gap
from analysis.stats import CONFIDENCE, t_interval

CURVE_METRICS = {"gap": (-1.0, 1.0), "val_loss": (0.0, np.inf), "val_accuracy": (0.0, 1.0)}


def overfitting_by_epoch(trials: pd.DataFrame, epochs: pd.DataFrame, stage: str = "confirm",
                         confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per (arm, epoch) over the stage's finished runs: ``unit`` (replicate or seed),
    ``n`` units, and for gap, val_loss and val_accuracy the mean and a t interval (truncated to
    the metric's range). ``gap_source`` is ``train_running`` if any run lacked train-eval metrics."""
    cols = ["arm", "epoch", "unit", "n", "gap_source"] + [f"{m}_{s}" for m in CURVE_METRICS
                                                          for s in ("mean", "ci_low", "ci_high")]
    t = trials[(trials["stage"] == stage) & (trials["status"] == FINISHED)]
    e = epochs[epochs["stage"] == stage] if len(epochs) else epochs
    if t.empty or e.empty:
        return pd.DataFrame(columns=cols)
    t = t.assign(replicate=replicate_column(t))[["experiment", "stage", "trial_id", "arm", "replicate"]]
    keep = ["experiment", "stage", "trial_id", "epoch"] + [c for c in ("val_loss", "val_accuracy") if c in e]
    e = e[keep].join(epoch_gap(e)).merge(t, on=["experiment", "stage", "trial_id"])
    for c in ("val_loss", "val_accuracy"):
        e[c] = pd.to_numeric(e[c], errors="coerce") if c in e else np.nan
    per_rep = e.groupby(["arm", "replicate", "epoch"])[list(CURVE_METRICS)].mean().reset_index()
    n_reps = per_rep.groupby("arm")["replicate"].nunique()
    running = e.groupby("arm")["gap_source"].agg(lambda s: bool((s == GAP_RUNNING).any()))
    rows = []
    for arm, d in e.groupby("arm", sort=True):
        by_rep = n_reps[arm] >= 2
        units = per_rep[per_rep["arm"] == arm] if by_rep else d
        g = units.groupby("epoch")
        out = pd.DataFrame({"n": g.size()})
        for m, bounds in CURVE_METRICS.items():
            mean, sd, n = g[m].mean(), g[m].std(ddof=1), g[m].count()
            lo, hi = t_interval(mean, sd, n, confidence, bounds)
            out[f"{m}_mean"], out[f"{m}_ci_low"], out[f"{m}_ci_high"] = mean, lo, hi
        out = out.reset_index().assign(arm=arm, unit="replicate" if by_rep else "seed",
                                       gap_source=GAP_RUNNING if running[arm] else "train_eval")
        rows.append(out)
    return pd.concat(rows, ignore_index=True)[cols]
