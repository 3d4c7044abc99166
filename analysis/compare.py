"""Several experiments in one report (``python -m analysis A B``): nothing is paired across them.

Within one experiment, replicate r of every arm shares its sampler seed and data split: the paired
unit of the activation test. Replicate r of experiment A and replicate r of experiment B share
nothing but a number. So before any analysis :func:`separate_replicates` gives every
(experiment, replicate) its own replicate number (pairs inside one experiment stay pairs; nothing
pairs across experiments), and :func:`unpaired_tests` compares arms whose replicates come from
different experiments by Welch's t-test on replicate means (unpaired), never by a paired test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis.contract import CONFIRM, FINISHED, replicate_column
from analysis.stats import welch

CONFIDENCE = 0.95
UNPAIRED_TEST = "Welch t-test on replicate means (unpaired: different experiments)"


def separate_replicates(trials: pd.DataFrame, epochs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Number replicates so no two experiments share one: (experiment i, replicate r) becomes
    ``offset_i + r`` (offset_i: the replicates of the experiments before it). ``source_replicate``
    keeps the experiment's own number. One experiment: returned unchanged."""
    if trials.empty or trials["experiment"].nunique() < 2:
        return trials, epochs
    rep = replicate_column(trials)
    sizes = rep.groupby(trials["experiment"]).max() + 1
    offsets = sizes.shift(fill_value=0).cumsum()
    new = rep + trials["experiment"].map(offsets).astype(np.int64)
    out = trials.assign(source_replicate=rep, replicate=new)
    if len(epochs) and "replicate" in epochs:
        keys = ["experiment", "stage", "trial_id"]
        epochs = epochs.drop(columns="replicate").merge(out[keys + ["replicate"]], on=keys, how="left")
    return out, epochs


def replicate_means(trials: pd.DataFrame, metric: str, stage: str = CONFIRM) -> pd.DataFrame:
    """One row per (experiment, arm, replicate): the mean of ``metric`` over its finished seeds."""
    t = trials[(trials["stage"] == stage) & (trials["status"] == FINISHED)]
    if t.empty or metric not in t:
        return pd.DataFrame(columns=["experiment", "arm", "replicate", "mean"])
    t = t.assign(replicate=replicate_column(t), value=pd.to_numeric(t[metric], errors="coerce"))
    return t.groupby(["experiment", "arm", "replicate"])["value"].mean().rename("mean").reset_index()


def unpaired_tests(trials: pd.DataFrame, metric: str, stage: str = CONFIRM) -> pd.DataFrame:
    """Every arm pair whose replicates come from different experiments (no experiment holds
    both): Welch's t-test on the replicate means, with a 95% interval of the difference a - b."""
    cols = ["arm_a", "experiments_a", "n_a", "mean_a", "arm_b", "experiments_b", "n_b", "mean_b",
            "estimate", "ci_low", "ci_high", "df", "p_value", "test"]
    means = replicate_means(trials, metric, stage).dropna(subset=["mean"])
    if means.empty or means["experiment"].nunique() < 2:
        return pd.DataFrame(columns=cols)
    per_arm = means.groupby("arm").agg(n=("mean", "size"), mean=("mean", "mean"), var=("mean", "var"),
                                      experiments=("experiment", lambda s: ", ".join(sorted(set(s)))))
    where = means.groupby("arm")["experiment"].agg(set)
    rows = []
    arms = sorted(per_arm.index)
    for i, a in enumerate(arms):
        for b in arms[i + 1:]:
            if where[a] & where[b]:
                continue  # both arms in one experiment: the paired analysis of that experiment applies
            pa, pb = per_arm.loc[a], per_arm.loc[b]
            moments = (pa["mean"], pa["var"], pa["n"], pb["mean"], pb["var"], pb["n"])
            diff, se, df, _, p = (float(v) for v in welch(*moments))
            half = float(sps.t.ppf(0.5 + CONFIDENCE / 2, df)) * se if np.isfinite(df) else np.nan
            rows.append({"arm_a": a, "experiments_a": pa["experiments"], "n_a": int(pa["n"]),
                         "mean_a": pa["mean"], "arm_b": b, "experiments_b": pb["experiments"],
                         "n_b": int(pb["n"]), "mean_b": pb["mean"], "estimate": diff, "ci_low": diff - half,
                         "ci_high": diff + half, "df": df, "p_value": p, "test": UNPAIRED_TEST})
    return pd.DataFrame(rows, columns=cols)
