"""Per-arm summaries of a sweep's trials: means with their intervals, divergence rates, the search
stage's counts and best values, Dodge's expected-best curve and Optuna's parameter importances.

The statistical building blocks they use are :mod:`analysis.stats`; the decision rule is
:mod:`analysis.decision`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.contract import DIVERGED, FINISHED, STATUSES, USABLE, replicate_column
from analysis.stats import BOUNDS, CONFIDENCE, clopper_pearson, expected_max, t_interval

SUMMARY_METRICS = ("final_test_accuracy", "final_val_accuracy", "best_val_accuracy", "final_gap",
                   "val_loss_rise", "best_epoch", "min_val_loss_epoch")




def expected_best_curve(trials: pd.DataFrame) -> pd.DataFrame:
    """Per arm: expected best search validation accuracy against the number of trials, from every
    search trial's final val accuracy (stopped early ones count with the value they stopped at:
    that is what the search saw). Columns arm, n, expected, std, pool (trials in the pool); every n
    up to 100, then 60 log-spaced values up to the pool size."""
    t = trials[trials["stage"] == "search"]
    rows = []
    for arm, d in t.groupby("arm", sort=True):
        v = pd.to_numeric(d["final_val_accuracy"], errors="coerce").dropna().to_numpy(float)
        if len(v):
            ns = None if len(v) <= 100 else np.unique(np.r_[np.arange(1, 101),
                                                             np.geomspace(100, len(v), 60).round()])
            rows.append(expected_max(v, ns=ns).assign(arm=arm, pool=len(v)))
    if not rows:
        return pd.DataFrame(columns=["arm", "n", "expected", "std", "pool"])
    return pd.concat(rows, ignore_index=True)[["arm", "n", "expected", "std", "pool"]]


# --------------------------------------------------------------------------- per-arm summaries

def primary_metric(trials: pd.DataFrame, stage: str = "confirm") -> str:
    """Test accuracy where the stage measured it, else final validation accuracy."""
    t = trials[(trials["stage"] == stage) & trials["status"].isin(USABLE)]
    return "final_test_accuracy" if "final_test_accuracy" in t and t["final_test_accuracy"].notna().any() \
        else "final_val_accuracy"


def arm_summary(trials: pd.DataFrame, stage: str = "confirm", metrics=SUMMARY_METRICS,
                confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per arm and metric, over finished (not diverged) runs of ``stage``: the mean, and its t
    interval at the level the data support, truncated to the metric's range.

    With 2+ replicates the unit is the replicate (the mean of its seeds): the interval includes
    the luck of each replicate's search. With one replicate it is over seeds and says so
    (``level`` = "seeds (1 replicate)"): it then covers seed noise only, for that configuration.
    """
    t = trials[(trials["stage"] == stage) & (trials["status"] == FINISHED)]
    t = t.assign(replicate=replicate_column(t))
    rows = []
    for metric in metrics:
        if metric not in t:
            continue
        values = t.assign(v=pd.to_numeric(t[metric], errors="coerce")).dropna(subset=["v"])
        if values.empty:
            continue
        reps = values.groupby(["arm", "replicate"])["v"].agg(["mean", "size"]).reset_index()
        for arm, r in reps.groupby("arm"):
            seeds = values.loc[values["arm"] == arm, "v"]
            if len(r) >= 2:
                unit, v = f"replicates ({len(r)})", r["mean"]
            else:
                unit, v = "seeds (1 replicate)", seeds
            mean, sd = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan
            lo, hi = t_interval(mean, sd, len(v), confidence, BOUNDS.get(metric, (-math.inf, math.inf)))
            rows.append({"arm": arm, "metric": metric, "replicates": len(r), "seeds": len(seeds),
                         "level": unit, "mean": mean, "std": sd, "ci_low": float(lo), "ci_high": float(hi)})
    return pd.DataFrame(rows, columns=["arm", "metric", "replicates", "seeds", "level", "mean", "std",
                                       "ci_low", "ci_high"])


def divergence(trials: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per arm and stage: runs that ran to their end (finished or diverged), how many diverged,
    the rate and its exact (Clopper-Pearson) interval."""
    t = trials[trials["status"].isin(USABLE)]
    if t.empty:  # no run has ended yet
        return pd.DataFrame(columns=["arm", "stage", "runs", "diverged", "rate", "ci_low", "ci_high"])
    g = t.groupby(["arm", "stage"])["status"]
    out = pd.DataFrame({"runs": g.size(), "diverged": g.apply(lambda s: int((s == DIVERGED).sum()))})
    out = out.reset_index()
    out["rate"] = out["diverged"] / out["runs"]
    lo, hi = clopper_pearson(out["diverged"], out["diverged"], out["runs"], confidence)
    out["ci_low"], out["ci_high"] = lo, hi
    return out


def search_summary(trials: pd.DataFrame, top_k: int = 3) -> pd.DataFrame:
    """Search stage per arm: trial counts by status and replicates, best and top-k final
    val_accuracy (per replicate, averaged over replicates)."""
    t = trials[trials["stage"] == "search"]
    t = t.assign(replicate=replicate_column(t))
    rows = []
    for arm in sorted(t["arm"].unique()):
        a = t[t["arm"] == arm]
        done = a[a["status"] == FINISHED].assign(v=lambda d: d["final_val_accuracy"].astype(float))
        per_rep = done.groupby("replicate")["v"]
        row = {"arm": arm, "replicates": a["replicate"].nunique(), "trials": len(a),
               **{s: int((a["status"] == s).sum())
                  for s in STATUSES},
               "best_val_accuracy": per_rep.max().mean() if len(done) else math.nan,
               f"top{top_k}_mean_val_accuracy":
                   per_rep.apply(lambda s: s.nlargest(top_k).mean()).mean() if len(done) else math.nan}
        rows.append(row)
    return pd.DataFrame(rows)


def param_importances(studies: dict) -> pd.DataFrame:
    """Optuna's parameter importances for each study with enough completed trials."""
    import optuna

    rows = []
    for name, study in studies.items():
        complete = [tr for tr in study.get_trials(deepcopy=False)
                    if tr.state == optuna.trial.TrialState.COMPLETE]
        if len(complete) < 2:
            continue
        try:
            importances = optuna.importance.get_param_importances(study)
        except Exception:  # e.g. a single distinct value per parameter
            continue
        rows += [{"study": name, "param": p, "importance": float(v)} for p, v in importances.items()]
    return pd.DataFrame(rows, columns=["study", "param", "importance"])
