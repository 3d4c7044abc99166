"""Figures (matplotlib, Agg). Each ``_get_*_info`` computes the data; each ``plot_*`` only draws it
and returns the Figure, or None when there is nothing to draw."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _colors(arms) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {arm: cycle[i % len(cycle)] for i, arm in enumerate(sorted(arms))}


def _get_learning_curve_info(epochs: pd.DataFrame, stage: str = "confirm") -> pd.DataFrame:
    """Mean and std over seeds per arm and epoch, for the stage's trials. ``single_epoch`` marks arms
    with one epoch only: a line through one point draws nothing, so those are drawn as markers."""
    e = epochs[epochs["stage"] == stage]
    if e.empty:
        return pd.DataFrame()
    cols = ["train_accuracy", "val_accuracy", "val_loss"]
    g = e.groupby(["arm", "epoch"])[cols]
    info = g.mean().add_suffix("_mean").join(g.std().add_suffix("_std")).join(g.size().rename("n"))
    info = info.reset_index()
    info["single_epoch"] = info.groupby("arm")["epoch"].transform("size") == 1
    return info


def _curve(ax, d: pd.DataFrame, col: str, style: str, color: str, label: str) -> None:
    """One mean curve with a ±std band; a single point gets a marker and an error bar instead."""
    mean, std = d[f"{col}_mean"], d[f"{col}_std"].fillna(0)
    if d["single_epoch"].iloc[0]:
        solid = style == "-"
        ax.errorbar(d["epoch"], mean, yerr=std, fmt="o" if solid else "s", mfc=color if solid else "none",
                    color=color, capsize=3, label=label)
        return
    ax.plot(d["epoch"], mean, style, color=color, label=label)
    ax.fill_between(d["epoch"], mean - std, mean + std, color=color, alpha=0.15)


def plot_learning_curves(epochs: pd.DataFrame, stage: str = "confirm"):
    info = _get_learning_curve_info(epochs, stage)
    if info.empty:
        return None
    colors = _colors(info["arm"].unique())
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for arm, d in info.groupby("arm"):
        c = colors[arm]
        for col, style in (("train_accuracy", "--"), ("val_accuracy", "-")):
            _curve(ax_acc, d, col, style, c, f"{arm} {col.split('_')[0]} (n={d['n'].max()})")
        _curve(ax_loss, d, "val_loss", "-", c, arm)
    lo, hi = float(info["epoch"].min()), float(info["epoch"].max())
    pad = 1.5 if hi == lo else 0.5  # a lone epoch sits mid-axis, not on its edge
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(lo - pad, hi + pad)
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title=f"{stage}: accuracy (mean ± std over seeds)")
    ax_loss.set(xlabel="epoch", ylabel="validation loss", title=f"{stage}: validation loss")
    ax_acc.legend(fontsize=7)
    ax_loss.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_lr_sensitivity(trials: pd.DataFrame):
    t = trials[(trials["stage"] == "search") & trials["final_val_accuracy"].notna()]
    if t.empty:
        return None
    colors = _colors(t["arm"].unique())
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, d in t.groupby("arm"):
        stopped = d["status"] != "finished"
        ax.scatter(d.loc[~stopped, "lr"], d.loc[~stopped, "final_val_accuracy"], color=colors[arm], label=arm)
        ax.scatter(d.loc[stopped, "lr"], d.loc[stopped, "final_val_accuracy"], color=colors[arm],
                   marker="x", alpha=0.6, label=f"{arm} (stopped early/diverged)")
    ax.set(xscale="log", xlabel="learning rate", ylabel="final val_accuracy",
           title="search: val_accuracy vs learning rate")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _get_distribution_info(trials: pd.DataFrame, stage: str) -> dict[str, dict[str, np.ndarray]]:
    t = trials[(trials["stage"] == stage) & trials["status"].isin(["finished", "diverged"])]
    return {m: {arm: d[m].dropna().to_numpy(float) for arm, d in t.groupby("arm")}
            for m in ("final_gap", "val_loss_rise")}


def plot_overfitting(trials: pd.DataFrame, stage: str = "confirm"):
    info = _get_distribution_info(trials, stage)
    if not any(len(v) for per_arm in info.values() for v in per_arm.values()):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (metric, per_arm) in zip(axes, info.items()):
        arms = sorted(per_arm)
        ax.boxplot([per_arm[a] for a in arms], tick_labels=arms)
        for i, a in enumerate(arms, start=1):
            ax.scatter(np.full(len(per_arm[a]), i) + np.linspace(-0.08, 0.08, len(per_arm[a])),
                       per_arm[a], s=14, alpha=0.7)
        ax.set(title=f"{stage}: {metric}", ylabel=metric)
    fig.tight_layout()
    return fig


_TRIAL_KEYS = ("experiment", "stage", "trial_id")


def _seconds(values: pd.Series) -> pd.Series:
    """Times as float seconds: numbers (Ray's ``timestamp``), datetimes, or Ray's ``date`` strings."""
    if pd.api.types.is_numeric_dtype(values):
        return values.astype(float)
    if not pd.api.types.is_datetime64_any_dtype(values):
        as_number = pd.to_numeric(values, errors="coerce")
        if as_number.notna().any():
            return as_number.astype(float)
        parsed = pd.to_datetime(values, format="%Y-%m-%d_%H-%M-%S", errors="coerce", utc=True)
        values = parsed if parsed.notna().any() else pd.to_datetime(values, errors="coerce", utc=True,
                                                                      format="mixed")
    return (pd.to_datetime(values, utc=True) - pd.Timestamp(0, tz="UTC")).dt.total_seconds()


def _trial_start_times(trials: pd.DataFrame, epochs: pd.DataFrame | None) -> tuple[pd.Series | None, str]:
    """Each trial's start time in seconds (aligned with ``trials``) and where it came from, or None."""
    if "start_time" in trials and trials["start_time"].notna().any():
        return _seconds(trials["start_time"]), "start time"
    if epochs is None or epochs.empty:
        return None, ""
    keys = [k for k in _TRIAL_KEYS if k in trials and k in epochs]
    col = next((c for c in ("timestamp", "date") if c in epochs and epochs[c].notna().any()), None)
    if "trial_id" not in keys or col is None:
        return None, ""
    e = epochs[epochs[col].notna()]
    first = e.sort_values("epoch", kind="stable").drop_duplicates(keys) if "epoch" in e else \
        e.drop_duplicates(keys)
    start = _seconds(first[col])
    if "time_this_iter_s" in first:  # Ray's timestamp is when the epoch ended; step back to its start
        start = start - first["time_this_iter_s"].fillna(0).astype(float)
    start = pd.Series(start.to_numpy(), index=pd.MultiIndex.from_frame(first[keys]))
    aligned = start.reindex(pd.MultiIndex.from_frame(trials[keys])).to_numpy()
    return pd.Series(aligned, index=trials.index, dtype=float), f"first epoch's {col}"


def _get_search_progress_info(trials: pd.DataFrame, epochs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Search trials per arm in the order they started, with the best finished score so far.

    Start order comes from a ``start_time`` column of ``trials``, else from each trial's first epoch
    row in ``epochs`` (``timestamp`` or ``date``), else the trials' row order; trial ids are random and
    never used. ``attrs["ordered_by"]`` says which was used.
    """
    t = trials[trials["stage"] == "search"].copy()
    if t.empty:
        return t
    start, source = _trial_start_times(t, epochs)
    if start is None or start.isna().all():
        t["start"] = np.nan
        ordered_by = "row order (no start times recorded)"
    else:
        t["start"] = start
        t = t.sort_values("start", kind="stable", na_position="last")
        ordered_by = source if start.notna().all() else f"{source}; trials without one last"
    t["order"] = t.groupby("arm").cumcount() + 1
    score = t["final_val_accuracy"].where(t["status"] == "finished")
    t["best_so_far"] = score.groupby(t["arm"]).cummax()
    t.attrs["ordered_by"] = ordered_by
    return t


def plot_search_progress(trials: pd.DataFrame, epochs: pd.DataFrame | None = None):
    t = _get_search_progress_info(trials, epochs)
    if t.empty:
        return None
    colors = _colors(t["arm"].unique())
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, d in t.groupby("arm"):
        ax.step(d["order"], d["best_so_far"], where="post", color=colors[arm], label=arm, marker=".")
        ax.scatter(d["order"], d["final_val_accuracy"], color=colors[arm], s=10, alpha=0.5)
    ax.set(xlabel=f"trial per arm, ordered by {t.attrs['ordered_by']}", ylabel="val_accuracy",
           title="search: best finished trial so far")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_param_importance(importances: pd.DataFrame):
    if importances.empty:
        return None
    fig, ax = plt.subplots(figsize=(6, 3))
    pivot = importances.pivot(index="param", columns="study", values="importance").fillna(0)
    pivot.plot.barh(ax=ax)
    ax.set(xlabel="importance (Optuna fANOVA)", title="search: parameter importance")
    fig.tight_layout()
    return fig


def plot_replicate_means(replicates: pd.DataFrame, label: str = "accuracy"):
    """Each arm's replicate means (analysis.decision.replicate_table), one line per replicate
    joining the arms: the paired units the activation-level test compares."""
    r = replicates.dropna(subset=["mean"]) if len(replicates) else replicates
    if r.empty:
        return None
    arms = sorted(r["arm"].unique())
    x = {a: i for i, a in enumerate(arms)}
    fig, ax = plt.subplots(figsize=(max(4, 2 + 1.5 * len(arms)), 4))
    for rep, d in r.groupby("replicate"):
        d = d.sort_values("arm")
        ax.plot([x[a] for a in d["arm"]], d["mean"], "-o", color="0.6", alpha=0.7, ms=4)
        ax.annotate(f"r{rep}", (x[d["arm"].iloc[-1]], d["mean"].iloc[-1]), xytext=(4, 0),
                    textcoords="offset points", fontsize=7, color="0.4")
    means = r.groupby("arm")["mean"].mean()
    ax.scatter([x[a] for a in means.index], means.to_numpy(), marker="_", s=600, color="k", zorder=3,
               label="mean over replicates")
    ax.set(xticks=range(len(arms)), xticklabels=arms, xlim=(-0.5, len(arms) - 0.5), ylabel=label,
           title=f"replicate means ({r.groupby('arm').size().min()} replicates per arm at least)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_overfitting_by_epoch(info: pd.DataFrame):
    """Generalization gap and val loss per epoch with interval bands
    (analysis.overfitting.overfitting_by_epoch): arms compared at matched epochs."""
    if info.empty:
        return None
    colors = _colors(info["arm"].unique())
    fig, (ax_gap, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for arm, d in info.groupby("arm"):
        c = colors[arm]
        unit = f"{d['unit'].iloc[0]}s"
        for ax, m in ((ax_gap, "gap"), (ax_loss, "val_loss")):
            ax.plot(d["epoch"], d[f"{m}_mean"], color=c, marker="o" if len(d) == 1 else None,
                    label=f"{arm} (n={int(d['n'].max())} {unit})")  # one epoch: a marker, not nothing
            ax.fill_between(d["epoch"], d[f"{m}_ci_low"], d[f"{m}_ci_high"], color=c, alpha=0.2)
    source = "train-eval" if (info["gap_source"] == "train_eval").all() else "running train (fallback)"
    ax_gap.axhline(0, color="0.7", lw=0.8)
    ax_gap.set(xlabel="epoch", ylabel="generalization gap",
               title=f"gap = {source} acc - val acc (mean, 95% CI)")
    ax_loss.set(xlabel="epoch", ylabel="validation loss", title="validation loss (mean, 95% CI)")
    ax_gap.legend(fontsize=7)
    ax_loss.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_expected_best(curve: pd.DataFrame):
    """Expected best validation accuracy against the number of search trials, ± one std
    (analysis.stats.expected_best_curve; Dodge et al. 2019)."""
    if curve.empty:
        return None
    colors = _colors(curve["arm"].unique())
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, d in curve.groupby("arm"):
        ax.plot(d["n"], d["expected"], color=colors[arm], label=f"{arm} ({int(d['pool'].iloc[0])} trials)")
        ax.fill_between(d["n"], d["expected"] - d["std"], d["expected"] + d["std"], color=colors[arm],
                        alpha=0.2)
    ax.set(xscale="log", xlabel="number of search trials", ylabel="expected best val accuracy",
           title="expected best validation accuracy (± std)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_replicate_differences(differences: pd.DataFrame, look: dict, label: str = "test accuracy"):
    """The answer at a glance: each replicate's paired difference arm_a - arm_b (points, every run
    counted), their mean with the interval at this look's level, the winner boundary (the mean a
    difference needs to cross it at this R and spread) and the ±margin equivalence band.
    ``differences``: :func:`analysis.decision.replicate_differences`; ``look``:
    :func:`analysis.sequential.look`. None when there is nothing to draw."""
    a, b = look.get("arm_a"), look.get("arm_b")
    if not len(differences):
        return None
    d = differences[(differences["arm_a"] == a) & (differences["arm_b"] == b)]
    if not len(d):
        return None
    y = 100 * d["difference"].to_numpy(float)
    x = d["replicate"].to_numpy(int)
    margin = float(look["margin_points"])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.axhspan(-margin, margin, color="0.5", alpha=0.15, lw=0, label=f"equivalence band ±{margin:g} points")
    ax.axhline(0, color="0.4", lw=0.8)
    ax.scatter(x, y, color="black", zorder=3, label=f"replicate difference (n={len(y)})")
    if look.get("ci") is not None:
        mean, (lo, hi) = look["difference"], look["ci"]
        at = x.max() + 1
        ax.errorbar([at], [mean], yerr=[[mean - lo], [hi - mean]], fmt="D", color="C0", capsize=5, zorder=4,
                    label=f"mean {mean:+.2f}, {look['ci_level']:.1%} CI (this look's level)")
        bound = look["boundary"]["critical_t"] * look["sd_points"] / np.sqrt(look["replicates"])
        for s in (-1, 1):
            ax.axhline(s * bound, color="C3", ls="--", lw=1,
                       label=f"winner boundary for the mean ±{bound:.2f} (|t| > "
                             f"{look['boundary']['critical_t']:.2f})" if s > 0 else None)
        ax.set_xticks(list(x) + [at], [str(v) for v in x] + ["mean"])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("replicate")
    ax.set_ylabel(f"{a} - {b}, {label} (points)")
    ax.set_title(f"{look['decision']}: paired replicate differences, look {look['look']} of "
                 f"{look['looks_planned']}")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
