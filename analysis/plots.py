"""Figures (matplotlib, Agg). Each ``_get_*_info`` computes the data, and the figure's caption (what
it shows and its n) in ``attrs["caption"]``; each ``plot_*`` only draws it and returns the Figure, or
None when there is nothing to draw. A figure's caption is :func:`caption` (its label).

Every figure colours an arm the same way: ``colors`` (from :func:`arm_colors`, one mapping for the
whole report) is passed to each ``plot_*``; without it a figure maps its own arms the same way.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from analysis.contract import CONFIRM, DIVERGED, FINISHED, SEARCH, STOPPED_EARLY, replicate_column  # noqa: E402

# Colour-blind-safe (Okabe-Ito) without orange-vs-red look-alikes; the first two arms are blue and
# vermillion. Matplotlib's default orange is never used for anything but an arm here.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#000000", "#F0E442")
MIN_BAND_N = 3  # no ± band (std or interval) is drawn from fewer runs than this
ACCURACY_RANGE, LOSS_RANGE = (0.0, 1.0), (0.0, np.inf)


def arm_colors(arms) -> dict[str, str]:
    """The one arm -> colour mapping: arms in sorted order take PALETTE's colours in turn."""
    return {arm: PALETTE[i % len(PALETTE)] for i, arm in enumerate(sorted({str(a) for a in arms}))}


def caption(fig) -> str:
    """The caption a ``plot_*`` function gave its figure."""
    return fig.get_label()


def _finish(fig, info_caption: str):
    fig.set_label(info_caption)
    fig.tight_layout()
    return fig


def _integer_axis(axis) -> None:
    axis.set_major_locator(MaxNLocator(integer=True))


def _n_text(counts: pd.Series) -> str:
    """'relu n=4, selu n=3' from a per-arm count."""
    return ", ".join(f"{arm} n={int(n)}" for arm, n in counts.items())


# ------------------------------------------------------------------------------------------- curves

def _get_learning_curve_info(epochs: pd.DataFrame, stage: str = CONFIRM) -> pd.DataFrame:
    """Mean and std over the stage's runs per arm and epoch. Train accuracy and loss are the
    inference-mode ones measured on a fixed training sample (``train_eval_*``, what the
    generalization gap is computed from); runs without them fall back to the running training
    metrics, and ``attrs["train_source"]`` says which. ``single_epoch`` marks arms with one epoch
    only: a line through one point draws nothing, so those are drawn as markers."""
    e = epochs[epochs["stage"] == stage] if len(epochs) else epochs
    if e.empty:
        return pd.DataFrame()
    e = e.copy()
    source = "train_eval"
    for m in ("accuracy", "loss"):
        evald = pd.to_numeric(e[f"train_eval_{m}"], errors="coerce") if f"train_eval_{m}" in e else None
        running = pd.to_numeric(e[f"train_{m}"], errors="coerce") if f"train_{m}" in e else np.nan
        if evald is None or evald.isna().all():
            source = "train_running"
            e[f"train_{m}_curve"] = running
        else:
            e[f"train_{m}_curve"] = evald
    cols = ["train_accuracy_curve", "val_accuracy", "train_loss_curve", "val_loss"]
    for c in ("val_accuracy", "val_loss"):
        e[c] = pd.to_numeric(e[c], errors="coerce") if c in e else np.nan
    g = e.groupby(["arm", "epoch"])
    info = g[cols].mean().add_suffix("_mean").join(g[cols].std().add_suffix("_std"))
    info = info.join(g["val_accuracy"].count().rename("n"))
    info = info.reset_index()
    info["single_epoch"] = info.groupby("arm")["epoch"].transform("size") == 1
    what = ("inference-mode train accuracy/loss on a fixed training sample (what the gap uses)"
            if source == "train_eval" else "running train accuracy/loss (no train-eval metrics recorded)")
    info.attrs["train_source"] = source
    info.attrs["caption"] = (
        f"{stage} stage, per epoch: validation (solid) and {what} (dashed), mean over runs "
        f"(seeds x replicates) with a ±1 std band clipped to the metric's range; no band where fewer "
        f"than {MIN_BAND_N} runs reached the epoch. Runs per arm: "
        f"{_n_text(info.groupby('arm')['n'].max())}.")
    return info


def _band(ax, x, mean, spread_low, spread_high, n, color, bounds) -> None:
    """A shaded band, clipped to ``bounds``, only where ``n >= MIN_BAND_N``."""
    ok = (np.asarray(n, dtype=float) >= MIN_BAND_N) & np.isfinite(np.asarray(spread_low, dtype=float)) \
        & np.isfinite(np.asarray(spread_high, dtype=float))
    if not ok.any():
        return
    lo = np.clip(np.asarray(spread_low, dtype=float), *bounds)
    hi = np.clip(np.asarray(spread_high, dtype=float), *bounds)
    ax.fill_between(np.asarray(x, dtype=float), lo, hi, where=ok, color=color, alpha=0.15, linewidth=0,
                    interpolate=False)


def _curve(ax, d: pd.DataFrame, col: str, style: str, color: str, label: str, bounds) -> None:
    """One mean curve with a ±std band; a single point gets a marker (and an error bar where n >= 3)."""
    mean, std = d[f"{col}_mean"], d[f"{col}_std"]
    if mean.isna().all():
        return
    if d["single_epoch"].iloc[0]:
        solid = style == "-"
        show = (d["n"] >= MIN_BAND_N) & std.notna()
        err = np.vstack([(mean - np.clip(mean - std, *bounds)).where(show, 0),
                         (np.clip(mean + std, *bounds) - mean).where(show, 0)])
        ax.errorbar(d["epoch"], mean, yerr=err, fmt="o" if solid else "s", mfc=color if solid else "none",
                    color=color, capsize=3, label=label)
        return
    ax.plot(d["epoch"], mean, style, color=color, label=label)
    _band(ax, d["epoch"], mean, mean - std, mean + std, d["n"], color, bounds)


def _epoch_axes(axes, epochs: pd.Series) -> None:
    lo, hi = float(epochs.min()), float(epochs.max())
    pad = 1.5 if hi == lo else 0.5  # a lone epoch sits mid-axis, not on its edge
    for ax in axes:
        _integer_axis(ax.xaxis)
        ax.set_xlim(lo - pad, hi + pad)


def plot_learning_curves(epochs: pd.DataFrame, stage: str = CONFIRM, colors: dict | None = None):
    info = _get_learning_curve_info(epochs, stage)
    if info.empty:
        return None
    colors = colors or arm_colors(info["arm"].unique())
    train = "train (inference mode)" if info.attrs["train_source"] == "train_eval" else "train (running)"
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for arm, d in info.groupby("arm"):
        c = colors[arm]
        n = int(d["n"].max())
        _curve(ax_acc, d, "train_accuracy_curve", "--", c, f"{arm} {train} (n={n})", ACCURACY_RANGE)
        _curve(ax_acc, d, "val_accuracy", "-", c, f"{arm} val (n={n})", ACCURACY_RANGE)
        _curve(ax_loss, d, "train_loss_curve", "--", c, f"{arm} {train}", LOSS_RANGE)
        _curve(ax_loss, d, "val_loss", "-", c, f"{arm} val", LOSS_RANGE)
    _epoch_axes((ax_acc, ax_loss), info["epoch"])
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title=f"{stage}: accuracy (mean ± std over runs)")
    ax_loss.set(xlabel="epoch", ylabel="loss", title=f"{stage}: loss (mean ± std over runs)")
    ax_loss.set_ylim(bottom=0)
    ax_acc.legend(fontsize=7)
    ax_loss.legend(fontsize=7)
    return _finish(fig, info.attrs["caption"])


def _get_lr_sensitivity_info(trials: pd.DataFrame) -> pd.DataFrame:
    t = trials[(trials["stage"] == SEARCH) & trials["final_val_accuracy"].notna()] if len(trials) else trials
    if t.empty:
        return pd.DataFrame()
    t = t.assign(stopped=t["status"] != FINISHED)
    t.attrs["caption"] = (
        "Search stage: each trial's final validation accuracy against its learning rate (log scale); "
        "crosses are trials stopped early or diverged (their last value). Trials per arm: "
        f"{_n_text(t.groupby('arm').size())}.")
    return t


def plot_lr_sensitivity(trials: pd.DataFrame, colors: dict | None = None):
    t = _get_lr_sensitivity_info(trials)
    if t.empty:
        return None
    colors = colors or arm_colors(t["arm"].unique())
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, d in t.groupby("arm"):
        done = d[~d["stopped"]]
        stopped = d[d["stopped"]]
        ax.scatter(done["lr"], done["final_val_accuracy"], color=colors[arm], label=arm)
        if len(stopped):
            ax.scatter(stopped["lr"], stopped["final_val_accuracy"], color=colors[arm], marker="x",
                       alpha=0.6, label=f"{arm} (stopped early/diverged)")
    ax.set(xscale="log", xlabel="learning rate", ylabel="final val_accuracy",
           title="search: val_accuracy vs learning rate")
    ax.legend(fontsize=7)
    return _finish(fig, t.attrs["caption"])


# ------------------------------------------------------------------------------------- distributions

def _get_distribution_info(trials: pd.DataFrame, stage: str) -> dict[str, dict[str, np.ndarray]]:
    t = trials[(trials["stage"] == stage) & trials["status"].isin([FINISHED, DIVERGED])] if len(trials) \
        else trials
    return {m: {arm: d[m].dropna().to_numpy(float) for arm, d in t.groupby("arm")} if m in t else {}
            for m in ("final_gap", "val_loss_rise")}


def plot_overfitting(trials: pd.DataFrame, stage: str = CONFIRM, colors: dict | None = None):
    info = _get_distribution_info(trials, stage)
    if not any(len(v) for per_arm in info.values() for v in per_arm.values()):
        return None
    colors = colors or arm_colors({a for per_arm in info.values() for a in per_arm})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (metric, per_arm) in zip(axes, info.items()):
        arms = [a for a in sorted(per_arm) if len(per_arm[a])]
        if not arms:
            ax.set_axis_off()
            continue
        box = ax.boxplot([per_arm[a] for a in arms], tick_labels=arms, patch_artist=True)
        for i, a in enumerate(arms):
            c = colors[a]
            box["boxes"][i].set(facecolor="none", edgecolor=c)
            box["medians"][i].set(color=c, linewidth=2)
            for part in ("whiskers", "caps"):
                for line in box[part][2 * i:2 * i + 2]:
                    line.set_color(c)
            box["fliers"][i].set(markeredgecolor=c)
            ax.scatter(np.full(len(per_arm[a]), i + 1) + np.linspace(-0.08, 0.08, len(per_arm[a])),
                       per_arm[a], s=14, alpha=0.7, color=c)
        ax.set(title=f"{stage}: {metric}", ylabel=metric)
    n = {a: len(v) for a, v in info["final_gap"].items()}
    text = (f"{stage} stage, finished and diverged runs: the final generalization gap (train-eval minus "
            f"val accuracy at the last epoch) and the rise of validation loss above its minimum, one dot per "
            f"run; box = quartiles, line = median. Runs per arm: {_n_text(pd.Series(n))}.")
    return _finish(fig, text)


# ---------------------------------------------------------------------------------- search progress

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
    """Search trials per (arm, replicate) in the order they started, with the best score so far.

    Each replicate is its own search, so each (arm, replicate) gets its own sequence (``order``
    from 1) and its own best-so-far line; nothing is pooled across replicates. A trial's score is
    its final validation accuracy if it finished or was stopped early (the value it reached);
    diverged, failed and unfinished trials have no score, and the best so far carries on past them
    (no gap). Start order comes from a ``start_time`` column of ``trials``, else from each trial's
    first epoch row in ``epochs`` (``timestamp`` or ``date``), else the trials' row order; trial
    ids are random and never used. ``attrs["ordered_by"]`` says which was used.
    """
    t = trials[trials["stage"] == SEARCH].copy() if len(trials) else trials.copy()
    if t.empty:
        return t
    t["replicate"] = replicate_column(t)
    start, source = _trial_start_times(t, epochs)
    if start is None or start.isna().all():
        t["start"] = np.nan
        ordered_by = "row order (no start times recorded)"
    else:
        t["start"] = start
        t = t.sort_values("start", kind="stable", na_position="last")
        ordered_by = source if start.notna().all() else f"{source}; trials without one last"
    cell = [t["arm"], t["replicate"]]
    t["order"] = t.groupby(cell).cumcount() + 1
    t["score"] = pd.to_numeric(t["final_val_accuracy"], errors="coerce").where(
        t["status"].isin([FINISHED, STOPPED_EARLY]))
    t["best_so_far"] = t["score"].fillna(-np.inf).groupby(cell).cummax().replace(-np.inf, np.nan)
    t.attrs["ordered_by"] = ordered_by
    per_arm = t.groupby("arm")
    t.attrs["caption"] = (
        "Search stage, one line per arm and replicate (each replicate is its own search): the best "
        "final validation accuracy so far among finished and early-stopped trials (an early-stopped "
        "trial counts with the value it reached; diverged or failed ones are skipped), trials in the "
        f"order they started ({ordered_by}); dots are single trials. Trials per arm: "
        f"{_n_text(per_arm.size())}; replicates per arm: {_n_text(per_arm['replicate'].nunique())}.")
    return t


_REPLICATE_STYLES = ("-", "--", ":", "-.")
_REPLICATE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def plot_search_progress(trials: pd.DataFrame, epochs: pd.DataFrame | None = None,
                         colors: dict | None = None):
    t = _get_search_progress_info(trials, epochs)
    if t.empty:
        return None
    colors = colors or arm_colors(t["arm"].unique())
    fig, ax = plt.subplots(figsize=(7, 4))
    for (arm, rep), d in t.groupby(["arm", "replicate"]):
        c = colors[arm]
        style = _REPLICATE_STYLES[rep % len(_REPLICATE_STYLES)]
        marker = _REPLICATE_MARKERS[rep % len(_REPLICATE_MARKERS)]
        line = d[d["best_so_far"].notna()]
        ax.step(line["order"], line["best_so_far"], where="post", color=c, linestyle=style,
                label=f"{arm} r{rep}")
        ax.scatter(d["order"], d["score"], color=c, marker=marker, s=14, alpha=0.5)
    _integer_axis(ax.xaxis)
    ax.set(xlabel=f"trial of the replicate's search, ordered by {t.attrs['ordered_by']}",
           ylabel="val_accuracy", title="search: best trial so far, per replicate")
    ax.legend(fontsize=7, ncol=2)
    return _finish(fig, t.attrs["caption"])


def plot_param_importance(importances: pd.DataFrame):
    if importances.empty:
        return None
    fig, ax = plt.subplots(figsize=(6, 3))
    pivot = importances.pivot(index="param", columns="study", values="importance").fillna(0)
    pivot.plot.barh(ax=ax, color=[PALETTE[i % len(PALETTE)] for i in range(pivot.shape[1])])
    ax.set(xlabel="importance (Optuna fANOVA)", title="search: parameter importance")
    ax.legend(fontsize=7)
    text = (f"Optuna's fANOVA importance of each searched parameter, one bar per study (arm and "
            f"replicate): n={pivot.shape[1]} studies, {pivot.shape[0]} parameters. Importance is relative "
            f"within a study and sums to 1 there.")
    return _finish(fig, text)


# ------------------------------------------------------------------------------- replicate level

def _get_replicate_means_info(replicates: pd.DataFrame, label: str) -> pd.DataFrame:
    """The replicate means to draw, with ``unit`` = the paired unit a line may join: (experiment,
    replicate) where an ``experiment`` column says where each came from, else the replicate."""
    r = replicates.dropna(subset=["mean"]) if len(replicates) else replicates
    if r.empty:
        return pd.DataFrame()
    r = r.copy()
    r["replicate"] = replicate_column(r)
    experiments = r["experiment"].astype(str) if "experiment" in r else pd.Series("", index=r.index)
    r["unit"] = experiments + "/r" + r["replicate"].astype(str)
    own = r["replicate"]
    if "source_replicate" in r:  # several experiments: each unit's number in its own experiment
        own = replicate_column(r.assign(replicate=r["source_replicate"]))
    r["unit_label"] = (experiments + " " if "experiment" in r and experiments.nunique() > 1 else "") + \
        "r" + own.astype(str)
    # Arms joined by a line must share the unit; across experiments nothing is paired.
    shared = r.groupby("unit")["arm"].nunique()
    r["paired"] = r["unit"].map(shared) > 1
    n = r.groupby("arm").size()
    several = "experiment" in r and experiments.nunique() > 1
    r.attrs["caption"] = (
        f"{label}: each dot one replicate's mean over its finished confirmation seeds; the black bar "
        f"is the mean over replicates. " + (
            "Grey lines join the arms of one replicate of one experiment (the paired unit); replicates "
            "of different experiments are not paired and are never joined. " if several else
            "Grey lines join the arms of one replicate (the paired unit of the activation test). ")
        + f"Replicates per arm: {_n_text(n)}.")
    return r


def plot_replicate_means(replicates: pd.DataFrame, label: str = "accuracy", colors: dict | None = None):
    """Each arm's replicate means (analysis.decision.replicate_table), one line per paired unit
    joining the arms: the paired units the activation-level test compares."""
    r = _get_replicate_means_info(replicates, label)
    if r.empty:
        return None
    colors = colors or arm_colors(r["arm"].unique())
    arms = sorted(r["arm"].unique())
    x = {a: i for i, a in enumerate(arms)}
    fig, ax = plt.subplots(figsize=(max(4, 2 + 1.5 * len(arms)), 4))
    for _, d in r[r["paired"]].groupby("unit"):
        d = d.sort_values("arm")
        ax.plot([x[a] for a in d["arm"]], d["mean"], "-", color="0.6", alpha=0.7)
        ax.annotate(d["unit_label"].iloc[-1], (x[d["arm"].iloc[-1]], d["mean"].iloc[-1]), xytext=(4, 0),
                    textcoords="offset points", fontsize=7, color="0.4")
    for arm, d in r.groupby("arm"):
        ax.scatter(np.full(len(d), x[arm]), d["mean"], color=colors[arm], s=20, zorder=3)
    means = r.groupby("arm")["mean"].mean()
    ax.scatter([x[a] for a in means.index], means.to_numpy(), marker="_", s=600, color="k", zorder=4,
               label="mean over replicates")
    ax.set(xticks=range(len(arms)), xticklabels=arms, xlim=(-0.5, len(arms) - 0.5), ylabel=label,
           title=f"replicate means ({r.groupby('arm').size().min()} replicates per arm at least)")
    ax.legend(fontsize=7)
    return _finish(fig, r.attrs["caption"])


def _get_overfitting_by_epoch_info(info: pd.DataFrame) -> pd.DataFrame:
    if info.empty:
        return info
    d = info.copy()
    source = "train-eval" if (d["gap_source"] == "train_eval").all() else "running train (fallback)"
    units = d.groupby("arm").agg(n=("n", "max"), unit=("unit", "first"))
    d.attrs["source"] = source
    d.attrs["caption"] = (
        f"Confirmation stage, per epoch: generalization gap ({source} accuracy minus validation accuracy) "
        f"and validation loss, mean over units with a 95% t interval clipped to the metric's range; no "
        f"interval where fewer than {MIN_BAND_N} units reached the epoch. Units per arm: "
        + ", ".join(f"{arm} n={int(u.n)} {u.unit}s" for arm, u in units.iterrows()) + ".")
    return d


def plot_overfitting_by_epoch(info: pd.DataFrame, colors: dict | None = None):
    """Generalization gap and val loss per epoch with interval bands
    (analysis.overfitting.overfitting_by_epoch): arms compared at matched epochs."""
    info = _get_overfitting_by_epoch_info(info)
    if info.empty:
        return None
    colors = colors or arm_colors(info["arm"].unique())
    fig, (ax_gap, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for arm, d in info.groupby("arm"):
        c = colors[arm]
        unit = f"{d['unit'].iloc[0]}s"
        for ax, m, bounds in ((ax_gap, "gap", (-1.0, 1.0)), (ax_loss, "val_loss", LOSS_RANGE)):
            ax.plot(d["epoch"], d[f"{m}_mean"], color=c, marker="o" if len(d) == 1 else None,
                    label=f"{arm} (n={int(d['n'].max())} {unit})")  # one epoch: a marker, not nothing
            _band(ax, d["epoch"], d[f"{m}_mean"], d[f"{m}_ci_low"], d[f"{m}_ci_high"], d["n"], c, bounds)
    ax_gap.axhline(0, color="0.7", lw=0.8)
    _epoch_axes((ax_gap, ax_loss), info["epoch"])
    ax_gap.set(xlabel="epoch", ylabel="generalization gap",
               title=f"gap = {info.attrs['source']} acc - val acc (mean, 95% CI)")
    ax_loss.set(xlabel="epoch", ylabel="validation loss", title="validation loss (mean, 95% CI)")
    ax_loss.set_ylim(bottom=0)
    ax_gap.legend(fontsize=7)
    ax_loss.legend(fontsize=7)
    return _finish(fig, info.attrs["caption"])


def plot_expected_best(curve: pd.DataFrame, colors: dict | None = None):
    """Expected best validation accuracy against the number of search trials, ± one std
    (analysis.stats.expected_best_curve; Dodge et al. 2019)."""
    if curve.empty:
        return None
    colors = colors or arm_colors(curve["arm"].unique())
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, d in curve.groupby("arm"):
        ax.plot(d["n"], d["expected"], color=colors[arm], label=f"{arm} ({int(d['pool'].iloc[0])} trials)")
        ax.fill_between(d["n"], np.clip(d["expected"] - d["std"], *ACCURACY_RANGE),
                        np.clip(d["expected"] + d["std"], *ACCURACY_RANGE), color=colors[arm], alpha=0.2)
    ax.set(xscale="log", xlabel="number of search trials", ylabel="expected best val accuracy",
           title="expected best validation accuracy (± std)")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%d"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=7)
    pools = curve.groupby("arm")["pool"].first()
    text = ("Search stage: the expected best validation accuracy among n trials drawn from each arm's "
            "search trials (all replicates pooled; Dodge et al. 2019), ± 1 std clipped to [0, 1]. "
            f"Descriptive only: the trials of an adaptive search are not independent. Trials per arm: "
            f"{_n_text(pools)}.")
    return _finish(fig, text)


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
    text = (f"The primary comparison ({label}): each dot is one replicate's paired difference {a} - {b} "
            f"(every confirmation run counted, a diverged one at its recorded accuracy), n={len(y)} "
            f"replicate pairs. The diamond is their mean with its interval at this look's level; the "
            f"dashed red lines are the winner boundary at this R and spread; the grey band is the "
            f"±{margin:g}-point equivalence margin.")
    return _finish(fig, text)
