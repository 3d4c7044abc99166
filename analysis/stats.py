"""Statistics of the comparison: per-arm summaries, pairwise Welch tests, a plain-words verdict.

Everything takes and returns DataFrames; the statistics are scipy.stats (t intervals, Welch's
t-test and its confidence interval, Spearman correlation), not hand-written formulas, except
Hedges' g and the Holm adjustment, which scipy does not provide.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05
SUMMARY_METRICS = ("final_test_accuracy", "final_val_accuracy", "best_val_accuracy", "final_gap",
                   "val_loss_rise")
LABELS = {"final_test_accuracy": "test accuracy", "final_val_accuracy": "validation accuracy",
          "best_val_accuracy": "best-epoch validation accuracy", "final_gap": "generalization gap",
          "val_loss_rise": "val-loss rise"}


def _values(trials: pd.DataFrame, arm: str, metric: str) -> np.ndarray:
    v = trials.loc[trials["arm"] == arm, metric].astype(float).to_numpy()
    return v[np.isfinite(v)]


def _stage_trials(trials: pd.DataFrame, stage: str) -> pd.DataFrame:
    """Trials of ``stage`` that ran to their planned end (diverged ones count: they are outcomes)."""
    t = trials[trials["stage"] == stage]
    return t[t["status"].isin(["finished", "diverged"])]


def primary_metric(trials: pd.DataFrame, stage: str = "confirm") -> str:
    """Test accuracy where the stage measured it, else final validation accuracy."""
    t = _stage_trials(trials, stage)
    return "final_test_accuracy" if "final_test_accuracy" in t and t["final_test_accuracy"].notna().any() \
        else "final_val_accuracy"


def arm_summary(trials: pd.DataFrame, stage: str = "confirm", metrics=SUMMARY_METRICS,
                confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per arm and metric: n, mean, std and a t confidence interval of the mean."""
    t = _stage_trials(trials, stage)
    rows = []
    for arm in sorted(t["arm"].unique()):
        for metric in metrics:
            if metric not in t:
                continue
            v = _values(t, arm, metric)
            n = len(v)
            if n == 0:
                continue
            mean = float(v.mean())
            std = float(v.std(ddof=1)) if n > 1 else math.nan
            if n > 1 and std > 0:
                lo, hi = stats.t.interval(confidence, n - 1, loc=mean, scale=stats.sem(v))
            elif n > 1:
                lo = hi = mean
            else:
                lo = hi = math.nan
            rows.append({"arm": arm, "metric": metric, "n": n, "mean": mean, "std": std,
                         "ci_low": float(lo), "ci_high": float(hi), "interval": f"t, {confidence:.0%}"})
    return pd.DataFrame(rows, columns=["arm", "metric", "n", "mean", "std", "ci_low", "ci_high", "interval"])


def _hedges_g(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = len(a), len(b)
    pooled = math.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    if pooled == 0:
        return math.nan
    correction = 1 - 3 / (4 * (na + nb) - 9)
    return float((a.mean() - b.mean()) / pooled * correction)


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def compare_arms(trials: pd.DataFrame, metric: str, stage: str = "confirm",
                 confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Every pair of arms on ``metric``: difference of means (a - b) with its Welch CI, Welch's
    t-test p-value (Holm-adjusted across the pairs), and Hedges' g."""
    t = _stage_trials(trials, stage)
    arms = sorted(t["arm"].unique())
    rows = []
    for a, b in itertools.combinations(arms, 2):
        va, vb = _values(t, a, metric), _values(t, b, metric)
        row = {"metric": metric, "arm_a": a, "arm_b": b, "n_a": len(va), "n_b": len(vb),
               "mean_a": va.mean() if len(va) else math.nan, "mean_b": vb.mean() if len(vb) else math.nan,
               "diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "t": math.nan,
               "df": math.nan, "p_value": math.nan, "hedges_g": math.nan, "test": "Welch t-test"}
        if len(va) and len(vb):
            row["diff"] = row["mean_a"] - row["mean_b"]
        if len(va) >= 2 and len(vb) >= 2:
            if va.var() == 0 and vb.var() == 0:
                # No spread at all: equal means are no evidence of a difference; unequal are certain.
                same = va[0] == vb[0]
                row.update(p_value=1.0 if same else 0.0, ci_low=row["diff"], ci_high=row["diff"])
            else:
                with warnings.catch_warnings():  # near-identical samples: precision notice only
                    warnings.simplefilter("ignore", RuntimeWarning)
                    res = stats.ttest_ind(va, vb, equal_var=False)
                ci = res.confidence_interval(confidence)
                row.update(t=float(res.statistic), df=float(res.df), p_value=float(res.pvalue),
                           ci_low=float(ci.low), ci_high=float(ci.high), hedges_g=_hedges_g(va, vb))
        rows.append(row)
    df = pd.DataFrame(rows, columns=["metric", "arm_a", "arm_b", "n_a", "n_b", "mean_a", "mean_b", "diff",
                                     "ci_low", "ci_high", "t", "df", "p_value", "hedges_g", "test"])
    df["p_holm"] = holm(df["p_value"]) if len(df) else []
    return df


def significant(row, alpha: float = ALPHA) -> bool:
    p = row["p_holm"] if "p_holm" in row and np.isfinite(row["p_holm"]) else row["p_value"]
    return bool(np.isfinite(p) and p < alpha and (row["ci_low"] > 0 or row["ci_high"] < 0))


def _n_text(row) -> str:
    if row["n_a"] == row["n_b"]:
        return f"n={row['n_a']} seed{'s' if row['n_a'] != 1 else ''} each"
    return f"n={row['n_a']} and {row['n_b']} seeds"


def _p_text(row, pairs: int) -> str:
    if pairs > 1:
        return f"Welch p={row['p_value']:.3g}, Holm-adjusted p={row['p_holm']:.3g} over {pairs} pairs"
    return f"Welch p={row['p_value']:.3g}"


def verdict(trials: pd.DataFrame, stage: str = "confirm", alpha: float = ALPHA) -> list[str]:
    """Plain-words conclusions that never outrun the evidence: one sentence per arm pair for the
    primary metric, and one for overfitting (generalization gap)."""
    t = _stage_trials(trials, stage)
    if t.empty:
        return [f"No finished {stage}-stage trials: nothing to conclude yet."]
    if t["arm"].nunique() < 2:
        return [f"Only one arm ({t['arm'].iloc[0]}) has finished {stage}-stage trials: nothing to compare."]
    metric = primary_metric(trials, stage)
    label = LABELS[metric]
    out = []
    comp = compare_arms(trials, metric, stage)
    gaps = compare_arms(trials, "final_gap", stage)
    for (_, row), (_, gap) in zip(comp.iterrows(), gaps.iterrows()):
        a, b = row["arm_a"], row["arm_b"]
        if row["n_a"] < 2 or row["n_b"] < 2:
            out.append(f"Cannot test {a} vs {b} on {label}: {_n_text(row)} (at least 2 per arm needed); "
                       f"observed {row['mean_a']:.4f} vs {row['mean_b']:.4f}.")
            continue
        ci = f"95% CI {100 * row['ci_low']:.1f} to {100 * row['ci_high']:.1f}"
        if significant(row, alpha):
            win, lose = (a, b) if row["diff"] > 0 else (b, a)
            lo, hi = sorted((abs(100 * row["ci_low"]), abs(100 * row["ci_high"])))
            sentence = (f"{win} beats {lose} on {label} by {abs(100 * row['diff']):.1f} points "
                        f"(95% CI {lo:.1f} to {hi:.1f}, {_p_text(row, len(comp))}, {_n_text(row)}; "
                        f"Hedges' g={abs(row['hedges_g']):.2f}).")
        else:
            sentence = (f"No significant difference in {label} between {a} and {b} at {_n_text(row)} "
                        f"({a} - {b} = {100 * row['diff']:+.1f} points, {ci}, {_p_text(row, len(comp))}).")
        gap_ci = (f"{a} - {b} = {gap['diff']:+.3f}, 95% CI {gap['ci_low']:+.3f} to {gap['ci_high']:+.3f}, "
                  f"{_p_text(gap, len(gaps))}, {_n_text(gap)}")
        if significant(gap, alpha):
            first = gap["diff"] > 0
            more, less = (a, b) if first else (b, a)
            g_more, g_less = (gap["mean_a"], gap["mean_b"]) if first else (gap["mean_b"], gap["mean_a"])
            sentence += f" {more} overfits more: train-val gap {g_more:.3f} vs {g_less:.3f} ({gap_ci})."
        elif np.isfinite(gap["p_value"]):
            sentence += (f" Overfitting (train-val gap) is not significantly different: "
                         f"{gap['mean_a']:.3f} vs {gap['mean_b']:.3f} ({gap_ci}).")
        out.append(sentence)
    configs = _config_text(t)
    if configs:
        out.append(f"Each arm is compared at its own configuration ({configs}); differences in "
                   f"overfitting partly reflect the training length each arm's search chose.")
    return out


def _config_text(t: pd.DataFrame) -> str:
    """'relu: lr 2.69e-03, 30 epochs; selu: ...' when the arms' configs differ, else ''."""
    if not {"lr", "epochs"} <= set(t.columns):
        return ""
    per_arm = t.groupby("arm")[["lr", "epochs"]].first()
    if len(per_arm.drop_duplicates()) <= 1:
        return ""
    return "; ".join(f"{arm}: lr {row['lr']:.3g}, {int(row['epochs'])} epochs"
                     for arm, row in per_arm.iterrows())


def search_summary(trials: pd.DataFrame, top_k: int = 3) -> pd.DataFrame:
    """Search stage per arm: trial counts by status, best and top-k final val_accuracy, and the
    Spearman correlation of final val_accuracy with log learning rate and with epochs."""
    t = trials[trials["stage"] == "search"]
    rows = []
    for arm in sorted(t["arm"].unique()):
        a = t[t["arm"] == arm]
        done = a[a["status"] == "finished"]
        scores = done["final_val_accuracy"].astype(float).sort_values(ascending=False)
        row = {"arm": arm, "trials": len(a), **{s: int((a["status"] == s).sum())
                                                for s in ("finished", "stopped_early", "diverged",
                                                          "failed", "incomplete")},
               "best_val_accuracy": scores.iloc[0] if len(scores) else math.nan,
               f"top{top_k}_mean_val_accuracy": scores.head(top_k).mean() if len(scores) else math.nan}
        for param in ("lr", "epochs"):
            x, y = done[param].astype(float), done["final_val_accuracy"].astype(float)
            if len(done) >= 5 and x.nunique() > 1 and y.nunique() > 1:  # fewer: no meaningful rank test
                rho, p = stats.spearmanr(np.log10(x) if param == "lr" else x, y)
                row[f"spearman_{param}"], row[f"spearman_{param}_p"] = float(rho), float(p)
            else:
                row[f"spearman_{param}"] = row[f"spearman_{param}_p"] = math.nan
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
