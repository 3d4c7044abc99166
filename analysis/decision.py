"""The decision rule: one primary test at full alpha, every other test in one secondary family.

A sweep tunes each arm R times (``replicate`` 0..R-1; replicate r of every arm shares its trial
candidates, seeds and data split) and retrains each replicate's tuned configuration over K seeds
(seed k shared across arms within a replicate).

* **primary** (declared before the run: ``analysis.primary``, default final test accuracy; unit:
  the replicate). Each replicate's value is the mean over ALL its confirmation runs, a diverged run
  counted at its recorded accuracy (intention to treat: dropping them favours the arm that
  diverges), and a replicate whose seeds all diverged stays in the pairing. Arms are compared by a
  paired t-test on the replicate means, tested alone at its own level (``alpha``, or the
  group-sequential look's nominal level: :mod:`analysis.sequential`). Only this test can name a
  winner. Equivalence is TOST at the same level: both one-sided tests of |difference| >= margin
  reject. Fewer than ``MIN_REPLICATES`` replicates, or differences without spread: no test.
* **secondary family** (Holm within it; exploratory unless the primary is rejected): the same
  comparison over finished runs only (survivors); the comparison at the original experiment's
  configuration (train lr and the most epochs, no search: runs of stage ``original``, when the
  sweep ran them), a different estimand: the activations at one fixed setting, not tuned; the
  train-validation gap (at each arm's chosen
  configuration and at matched epochs), the configuration level (Welch's t-test between two tuned
  configurations over seeds, within one replicate: a claim about those configurations only) and
  search sensitivity (Spearman's rho of validation accuracy with log10(lr), over EVERY search trial
  at the last epoch all of them reached, so early stopping's selection of which trials ran on does not enter).

Every interval is drawn at the level its decision uses (the primary's nominal level; a secondary
test's Holm step level, :func:`analysis.stats.holm_levels`), and the level is printed with it.

Everything is vectorised over ``by`` (a column naming independent analyses), so the calibration
benchmark runs thousands of simulated experiments through this exact code in one pass.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.contract import (
    DIVERGED,
    FINISHED,
    MARGIN_POINTS,
    ORIGINAL,
    STOPPED_EARLY,
    USABLE,
    replicate_column,
)
from analysis.metrics import epoch_gap
from analysis.stats import (
    ALPHA,
    MIN_SPEARMAN_N,
    clopper_pearson,
    fisher_z_interval,
    holm_levels,
    paired_t,
    spearman_batch,
    welch,
)
from analysis.summaries import primary_metric

MIN_REPLICATES = 3  # paired t on replicate means needs df >= 2 (see benchmarks/README.md)
MIN_SEEDS = 3       # per configuration, for a seed-level Welch test
KEY = "_analysis"
ACTIVATION, CONFIGURATION, SENSITIVITY = "activation", "configuration", "sensitivity"
PRIMARY, SECONDARY = "primary", "secondary"
PAIRED_TEST = "paired t-test on replicate means"
ITT = "every run (diverged ones at their recorded accuracy)"
SURVIVORS = "finished runs only"
WELCH_TEST = "Welch t-test on seeds"
DIFFERENCE_METRICS = ("final_test_accuracy", "final_val_accuracy", "best_val_accuracy", "final_gap",
                      "gap_matched_epoch")
TEST_COLUMNS = [KEY, "level", "metric", "counting", "arm_a", "arm_b", "replicate", "param", "config_a",
                "config_b", "n", "n_a", "n_b", "mean_a", "mean_b", "estimate", "se", "df", "statistic",
                "p_value", "test", "reason", "wins", "ties", "epochs_note"]


def _keyed(df: pd.DataFrame, by: str | None) -> pd.DataFrame:
    return df.assign(**{KEY: df[by] if by else 0})


def _config_labels(t: pd.DataFrame) -> pd.DataFrame:
    """``config`` (identity: source trial, else lr/epochs) and ``config_label`` (arm, lr, epochs)."""
    lr = pd.to_numeric(t["lr"], errors="coerce") if "lr" in t else pd.Series(np.nan, index=t.index)
    ep = pd.to_numeric(t["epochs"], errors="coerce") if "epochs" in t else pd.Series(np.nan, index=t.index)
    text = ("lr " + lr.map(lambda v: f"{v:.3g}").astype(str) + ", " + ep.map(lambda v: f"{v:.0f}").astype(str)
            + " epochs")
    ident = text
    if "source_trial" in t:
        src = t["source_trial"].astype("string")
        ident = src.where(src.notna() & (src != ""), text).astype(str)
    return t.assign(config=ident, config_label=t["arm"].astype(str) + " (" + text + ")")


def _itt_values(t: pd.DataFrame, metric: str) -> pd.Series:
    """``metric`` of each run; a diverged run without it falls back to its final validation
    accuracy (the trainable measures the test set at the epoch a run diverges, so this is rare)."""
    v = pd.to_numeric(t[metric], errors="coerce") if metric in t else pd.Series(np.nan, index=t.index)
    if metric != "final_val_accuracy" and "final_val_accuracy" in t and metric.endswith("accuracy"):
        fallback = pd.to_numeric(t["final_val_accuracy"], errors="coerce")
        v = v.where(v.notna() | (t["status"] != DIVERGED), fallback)
    return v


def configuration_table(trials: pd.DataFrame, metric: str, stage: str = "confirm",
                        by: str | None = None, itt: bool = False) -> pd.DataFrame:
    """One row per tuned configuration (arm, replicate, config) of ``stage``: ``runs`` (finished or
    diverged), ``diverged``, and the mean/var of ``metric`` over its ``n`` runs: finished runs only,
    or with ``itt`` every run, a diverged one at its recorded value (intention to treat)."""
    t = _keyed(trials[(trials["stage"] == stage) & trials["status"].isin(USABLE)], by)
    t = _config_labels(t.assign(replicate=replicate_column(t)))
    v = _itt_values(t, metric) if itt else \
        (pd.to_numeric(t[metric], errors="coerce") if metric in t else pd.Series(np.nan, index=t.index))
    t = t.assign(v=v if itt else v.where(t["status"] == FINISHED), is_div=t["status"] == DIVERGED)
    g = t.groupby([KEY, "arm", "replicate", "config"], sort=True)
    out = g.agg(config_label=("config_label", "first"), runs=("v", "size"), diverged=("is_div", "sum"),
                n=("v", "count"), mean=("v", "mean"), var=("v", "var"))
    return out.reset_index()


def replicate_table(trials: pd.DataFrame, metric: str, stage: str = "confirm",
                    by: str | None = None, itt: bool = False) -> pd.DataFrame:
    """One row per (arm, replicate): ``mean`` = the mean over its configurations' seed means (one
    configuration per replicate in a standard sweep), ``n`` seeds averaged (finished ones, or with
    ``itt`` every run), ``diverged``."""
    c = configuration_table(trials, metric, stage, by, itt)
    g = c.groupby([KEY, "arm", "replicate"], sort=True)
    out = g.agg(mean=("mean", "mean"), n=("n", "sum"), runs=("runs", "sum"), diverged=("diverged", "sum"),
                configs=("config", "size"), config_label=("config_label", "first")).reset_index()
    more = out["configs"] > 1
    out.loc[more, "config_label"] += " and " + (out.loc[more, "configs"] - 1).astype(str) + " more"
    return out


def _arm_pairs(arms: pd.DataFrame) -> pd.DataFrame:
    """Every pair (arm_a < arm_b) within each analysis, from a frame with KEY and arm."""
    a = arms[[KEY, "arm"]].drop_duplicates()
    p = a.merge(a, on=KEY, suffixes=("_a", "_b"))
    return p[p["arm_a"] < p["arm_b"]].reset_index(drop=True)


def _paired(pairs: pd.DataFrame, units: pd.DataFrame, metric: str, epochs_note=None) -> pd.DataFrame:
    """Activation-level rows from per-replicate pairs (KEY, arm_a, arm_b, replicate, mean_a, mean_b);
    ``pairs`` lists every arm pair (tested or not); ``units`` holds each arm's usable replicates."""
    if pairs.empty:
        return pd.DataFrame(columns=TEST_COLUMNS)
    d = units["mean_a"] - units["mean_b"]
    units = units.assign(d=d, win=(d > 0).astype(int), tie=(d == 0).astype(int))
    g = units.groupby([KEY, "arm_a", "arm_b"], sort=False)
    agg = g.agg(n=("d", "size"), mean_a=("mean_a", "mean"), mean_b=("mean_b", "mean"),
                estimate=("d", "mean"), sd=("d", "std"), wins=("win", "sum"), ties=("tie", "sum"))
    out = pairs.merge(agg.reset_index(), on=[KEY, "arm_a", "arm_b"], how="left")
    out["n"] = out["n"].fillna(0).astype(int)
    se, df, t, p = paired_t(out["estimate"], out["sd"], out["n"])
    too_few = out["n"] < MIN_REPLICATES
    flat = ~too_few & ~(out["sd"] > 1e-12)
    tested = ~too_few & ~flat
    reps_each = (out["n_a"] == out["n"]) & (out["n_b"] == out["n"])
    few = np.where(reps_each,
                   "R=" + out["n"].astype(str) + " replicate" + np.where(out["n"] == 1, "", "s")
                   + " per arm",
                   "R=" + out["n"].astype(str) + " replicate(s) with results in both arms ("
                   + out["arm_a"] + ": " + out["n_a"].astype(str) + ", "
                   + out["arm_b"] + ": " + out["n_b"].astype(str) + ")")
    flat_text = ("the " + out["n"].astype(str) + " replicate differences have no spread (all "
                 + (100 * out["estimate"]).map(lambda v: f"{v:+.2f}")
                 + " points): no claim from zero variance")
    out["reason"] = np.where(too_few, few + f"; at least {MIN_REPLICATES} needed",
                             np.where(flat, flat_text, ""))
    out = out.assign(level=ACTIVATION, metric=metric, se=np.where(tested, se, np.nan),
                     df=np.where(tested, df, np.nan), statistic=np.where(tested, t, np.nan),
                     p_value=np.where(tested, p, np.nan), test=PAIRED_TEST,
                     epochs_note="" if epochs_note is None else epochs_note)
    return out


def _arm_counts(rep: pd.DataFrame) -> pd.DataFrame:
    """Pairs of arms with each arm's number of usable replicates (n_a, n_b)."""
    pairs = _arm_pairs(rep)
    r = rep[rep["n"] > 0].groupby([KEY, "arm"]).size().rename("R")
    pairs = pairs.join(r.rename("n_a"), on=[KEY, "arm_a"]).join(r.rename("n_b"), on=[KEY, "arm_b"])
    return pairs.assign(n_a=pairs["n_a"].fillna(0).astype(int), n_b=pairs["n_b"].fillna(0).astype(int))


def _replicate_pairs(trials: pd.DataFrame, metric: str, stage: str, by: str | None,
                     itt: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    rep = replicate_table(trials, metric, stage, by, itt)
    usable = rep[rep["n"] > 0]
    m = usable.merge(usable, on=[KEY, "replicate"], suffixes=("_a", "_b"))
    return rep, m[m["arm_a"] < m["arm_b"]]


def activation_tests(trials: pd.DataFrame, metric: str, stage: str = "confirm",
                     by: str | None = None, itt: bool = False) -> pd.DataFrame:
    """Activation-level rows for ``metric``: per arm pair, the paired t-test on replicate means
    (finished runs only, or with ``itt`` every run)."""
    rep, m = _replicate_pairs(trials, metric, stage, by, itt)
    return _paired(_arm_counts(rep), m, metric).assign(counting=ITT if itt else SURVIVORS)


def replicate_differences(trials: pd.DataFrame, metric: str | None = None, stage: str = "confirm",
                          by: str | None = None) -> pd.DataFrame:
    """The primary question's data: one row per arm pair (arm_a < arm_b) and replicate with results
    in both arms: ``mean_a``, ``mean_b`` (every run counted) and ``difference`` = a - b (fraction
    of 1). ``attrs["metric"]`` names the metric (default :func:`analysis.summaries.primary_metric`)."""
    metric = metric or primary_metric(trials, stage)
    _, m = _replicate_pairs(trials, metric, stage, by, itt=True)
    cols = ([KEY] if by else []) + ["arm_a", "arm_b", "replicate", "mean_a", "mean_b"]
    out = m[cols].assign(difference=m["mean_a"] - m["mean_b"]).sort_values(cols[:-2])
    out = out.rename(columns={KEY: by}) if by else out
    out = out.reset_index(drop=True)
    out.attrs["metric"] = metric
    return out


def matched_epoch_gap_tests(trials: pd.DataFrame, epochs: pd.DataFrame, stage: str = "confirm",
                            by: str | None = None) -> pd.DataFrame:
    """Activation-level test of the generalization gap at matched epochs: in each replicate, both
    arms' gap (mean over seeds) at the last epoch both trained, compared as in
    :func:`activation_tests`. No row when both arms trained equally long in every replicate (then
    it is the final-gap test)."""
    t = _keyed(trials[(trials["stage"] == stage) & (trials["status"] == FINISHED)], by)
    t = t.assign(replicate=replicate_column(t))[[KEY, "experiment", "stage", "trial_id", "arm", "replicate"]]
    e = epochs[epochs["stage"] == stage]
    if t.empty or e.empty:
        return pd.DataFrame(columns=TEST_COLUMNS)
    e = e[["experiment", "stage", "trial_id", "epoch"]].join(epoch_gap(e)[["gap"]])
    e = e.merge(t, on=["experiment", "stage", "trial_id"]).dropna(subset=["gap"])
    curve = e.groupby([KEY, "arm", "replicate", "epoch"], sort=False)["gap"].mean().reset_index()
    last = curve.groupby([KEY, "arm", "replicate"])["epoch"].max().rename("last")
    m = curve.merge(curve, on=[KEY, "replicate", "epoch"], suffixes=("_a", "_b"))
    m = m[m["arm_a"] < m["arm_b"]]
    if m.empty:
        return pd.DataFrame(columns=TEST_COLUMNS)
    m = m.loc[m.groupby([KEY, "arm_a", "arm_b", "replicate"], sort=False)["epoch"].idxmax()]
    m = m.join(last.rename("last_a"), on=[KEY, "arm_a", "replicate"])
    m = m.join(last.rename("last_b"), on=[KEY, "arm_b", "replicate"])
    m = m.rename(columns={"gap_a": "mean_a", "gap_b": "mean_b"})
    differs = (m["last_a"] != m["last_b"]).groupby([m[KEY], m["arm_a"], m["arm_b"]]).transform("any")
    m = m[differs]
    if m.empty:
        return pd.DataFrame(columns=TEST_COLUMNS)
    note = m.groupby([KEY, "arm_a", "arm_b"])["epoch"].agg(["min", "max"])
    note = (np.where(note["min"] == note["max"], "epoch ", "epochs ") + note["min"].map("{:.0f}".format)
            + np.where(note["min"] == note["max"], "", "-" + note["max"].map("{:.0f}".format))
            + ": the last epoch both arms trained, per replicate").rename("epochs_note")
    rep = curve.groupby([KEY, "arm", "replicate"]).size().rename("n").reset_index()
    pairs = _arm_counts(rep).merge(note.reset_index(), on=[KEY, "arm_a", "arm_b"])
    out = _paired(pairs.drop(columns="epochs_note"), m, "gap_matched_epoch")
    out["epochs_note"] = pairs["epochs_note"].to_numpy()
    return out


def configuration_tests(trials: pd.DataFrame, metric: str, stage: str = "confirm",
                        by: str | None = None) -> pd.DataFrame:
    """Configuration-level rows: within each replicate, Welch's t-test between every two
    configurations of different arms, over their finished seeds."""
    c = configuration_table(trials, metric, stage, by)
    m = c.merge(c, on=[KEY, "replicate"], suffixes=("_a", "_b"))
    m = m[m["arm_a"] < m["arm_b"]].reset_index(drop=True)
    if m.empty:
        return pd.DataFrame(columns=TEST_COLUMNS)
    diff, se, df, t, p = welch(m["mean_a"], m["var_a"], m["n_a"], m["mean_b"], m["var_b"], m["n_b"])
    too_few = (m["n_a"] < MIN_SEEDS) | (m["n_b"] < MIN_SEEDS)
    flat = ~too_few & ~((m["var_a"] > 0) & (m["var_b"] > 0))
    tested = ~too_few & ~flat
    reason = np.where(too_few, "n=" + m["n_a"].astype(str) + " and " + m["n_b"].astype(str)
                      + f" seeds; at least {MIN_SEEDS} per configuration needed",
                      np.where(flat, "a configuration's seeds have no spread: no claim from zero variance",
                               ""))
    out = pd.DataFrame({
        KEY: m[KEY], "level": CONFIGURATION, "metric": metric, "arm_a": m["arm_a"], "arm_b": m["arm_b"],
        "replicate": m["replicate"], "config_a": m["config_label_a"], "config_b": m["config_label_b"],
        "n": m["n_a"] + m["n_b"], "n_a": m["n_a"], "n_b": m["n_b"], "mean_a": m["mean_a"],
        "mean_b": m["mean_b"], "estimate": diff, "se": np.where(tested, se, np.nan),
        "df": np.where(tested, df, np.nan), "statistic": np.where(tested, t, np.nan),
        "p_value": np.where(tested, p, np.nan), "test": WELCH_TEST, "reason": reason})
    return out


SENSITIVITY_EPOCH_NOTE = ("val accuracy of every search trial at epoch {epoch}, the last epoch all of "
                          "this arm's search trials reached (so early stopping's choice of which trials "
                          "ran on does not enter)")


def sensitivity_tests(trials: pd.DataFrame, epochs: pd.DataFrame | None = None,
                      by: str | None = None) -> pd.DataFrame:
    """Search-stage rows: Spearman's rho of validation accuracy with log10(lr), per arm over EVERY
    search trial that ran (all replicates pooled), each at the last epoch all of that arm's trials
    reached. Early stopping lets only trials that look good train on, so a test over the finished trials (or
    of accuracy against epochs trained) would test its selection; this one does not. Without
    per-epoch rows it cannot be made: the row says so. n >= 5 and both sides varying."""
    t = _keyed(trials[(trials["stage"] == "search")
                      & trials["status"].isin([FINISHED, STOPPED_EARLY, DIVERGED])], by)
    if t.empty or "lr" not in t:
        return pd.DataFrame(columns=TEST_COLUMNS)
    e = epochs[epochs["stage"] == "search"] if epochs is not None and len(epochs) and "stage" in epochs \
        else None
    if e is None or e.empty or "val_accuracy" not in e:
        arms = t[[KEY, "arm"]].drop_duplicates()
        return pd.DataFrame({KEY: arms[KEY], "arm_a": arms["arm"], "param": "lr", "n": 0,
                             "estimate": np.nan, "p_value": np.nan, "test": "Spearman",
                             "reason": "no per-epoch rows of the search: accuracy at a common epoch, the "
                                       "only comparison free of early stopping's selection, cannot be "
                                       "computed",
                             "level": SENSITIVITY, "metric": "val_accuracy", "n_a": 0})
    e = e[["experiment", "stage", "trial_id", "epoch", "val_accuracy"]].merge(
        t[[KEY, "experiment", "stage", "trial_id", "arm", "lr"]], on=["experiment", "stage", "trial_id"])
    e = e.assign(epoch=pd.to_numeric(e["epoch"], errors="coerce"),
                 y=pd.to_numeric(e["val_accuracy"], errors="coerce")).dropna(subset=["epoch", "y"])
    last = e.groupby([KEY, "arm", "trial_id"])["epoch"].max().groupby(level=[0, 1]).min().rename("common")
    e = e.join(last, on=[KEY, "arm"])
    e = e[e["epoch"] == e["common"]].drop_duplicates([KEY, "arm", "trial_id"])
    d = pd.DataFrame({KEY: e[KEY], "arm": e["arm"], "x": np.log10(pd.to_numeric(e["lr"], errors="coerce")),
                      "y": e["y"]}).dropna()
    rows = []
    for n, grp in _by_size(d):
        keys, xs, ys = grp
        varies = (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)
        rho = np.full(len(keys), np.nan)
        p = np.full(len(keys), np.nan)
        test = "Spearman"
        if n >= MIN_SPEARMAN_N and varies.any():
            rho[varies], p[varies], test = spearman_batch(xs[varies], ys[varies])
        reason = np.where(n < MIN_SPEARMAN_N, f"n={n} search trials; at least {MIN_SPEARMAN_N} needed",
                          np.where(varies, "", "lr or accuracy does not vary"))
        rows.append(pd.DataFrame({KEY: [k[0] for k in keys], "arm_a": [k[1] for k in keys],
                                  "param": "lr", "n": n, "estimate": rho, "p_value": p,
                                  "test": test, "reason": reason,
                                  "epochs_note": [SENSITIVITY_EPOCH_NOTE.format(epoch=f"{last[k]:.0f}")
                                                  for k in keys]}))
    if not rows:
        return pd.DataFrame(columns=TEST_COLUMNS)
    out = pd.concat(rows, ignore_index=True)
    return out.assign(level=SENSITIVITY, metric="val_accuracy", n_a=out["n"])


def _by_size(d: pd.DataFrame):
    """Groups (KEY, arm) of ``d`` bucketed by size: yields (n, (keys, x matrix, y matrix))."""
    d = d.sort_values([KEY, "arm"], kind="stable")
    sizes = d.groupby([KEY, "arm"], sort=False).size()
    pos = np.concatenate([[0], np.cumsum(sizes.to_numpy())])
    x, y = d["x"].to_numpy(float), d["y"].to_numpy(float)
    keys = list(sizes.index)
    for n in np.unique(sizes.to_numpy()):
        idx = np.flatnonzero(sizes.to_numpy() == n)
        take = pos[idx][:, None] + np.arange(n)[None, :]
        yield int(n), ([keys[i] for i in idx], x[take], y[take])


def finalize(tests: pd.DataFrame, alpha: float = ALPHA, margin_points: float = MARGIN_POINTS,
             primary_alpha: float | None = None, equivalence_alpha: float | None = None) -> pd.DataFrame:
    """Test the primary row(s) (``primary`` column) alone at ``primary_alpha`` (default ``alpha``)
    and Holm-adjust the other rows of each analysis together (the secondary family); draw every
    interval at the level its decision uses. Adds ``family``, ``family_size``, ``p_holm`` (the
    primary's own p), ``conf_level``, ``ci_low``/``ci_high``, ``significant``, ``exploratory``
    (secondary rows while the primary is not rejected), ``equivalent`` (TOST at one-sided
    ``equivalence_alpha`` for the primary, default ``alpha``; at its Holm level for a secondary
    difference) and P(a beats b) with its interval."""
    t = tests.reset_index(drop=True)
    prim = t["primary"].fillna(False).astype(bool).to_numpy() if "primary" in t else np.zeros(len(t), bool)
    pa = alpha if primary_alpha is None else primary_alpha
    ea = alpha if equivalence_alpha is None else equivalence_alpha
    t["family"] = np.where(prim, PRIMARY, SECONDARY)
    pv = t["p_value"].to_numpy(float)
    p_holm, level = holm_levels(np.where(prim, np.nan, pv), alpha, t[KEY])
    tested = np.isfinite(pv)
    t["family_size"] = np.where(prim, 1, t.assign(_s=np.where(prim, np.nan, pv)).groupby(KEY)["_s"]
                                .transform("count").to_numpy())
    t["p_holm"] = np.where(prim, pv, p_holm)
    sig_level = np.where(prim, pa, level)
    conf = np.where(tested, 1 - sig_level, 1 - alpha)
    t["conf_level"] = conf
    is_t = (t["level"] != SENSITIVITY).to_numpy() & tested
    df, est, se = t["df"].to_numpy(float), t["estimate"].to_numpy(float), t["se"].to_numpy(float)
    with np.errstate(invalid="ignore"):
        q = stats.t.ppf(0.5 + conf / 2, df)
        q_eq = stats.t.isf(np.where(prim, ea, sig_level), df)
    lo, hi = est - q * se, est + q * se
    r_lo, r_hi = fisher_z_interval(est, t["n"].to_numpy(float), conf)
    sens = (t["level"] == SENSITIVITY).to_numpy() & tested
    t["ci_low"] = np.where(is_t, lo, np.where(sens, r_lo, np.nan))
    t["ci_high"] = np.where(is_t, hi, np.where(sens, r_hi, np.nan))
    t["significant"] = tested & np.where(prim, pv < pa, t["p_holm"].to_numpy(float) < alpha)
    primary_rejected = pd.Series(t["significant"] & prim).groupby(t[KEY]).transform("any").to_numpy()
    t["exploratory"] = ~prim & ~primary_rejected
    margin = margin_points / 100
    diff_metric = t["metric"].isin(DIFFERENCE_METRICS).to_numpy()
    t["equivalent"] = is_t & diff_metric & (est - q_eq * se > -margin) & (est + q_eq * se < margin)
    t["equivalence_margin"] = margin
    t["equivalence_level"] = np.where(is_t & diff_metric, 1 - 2 * np.where(prim, ea, sig_level), np.nan)
    act = (t["level"] == ACTIVATION).to_numpy()
    n = t["n"].to_numpy(float)
    wins, ties = t["wins"].to_numpy(float), t["ties"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t["p_a_better"] = np.where(act & (n > 0), (wins + ties / 2) / n, np.nan)
    pb_lo, pb_hi = clopper_pearson(wins, wins + ties, n, conf)
    t["p_a_better_low"] = np.where(act & (n > 0), pb_lo, np.nan)
    t["p_a_better_high"] = np.where(act & (n > 0), pb_hi, np.nan)
    return t


def decision_tests(trials: pd.DataFrame, epochs: pd.DataFrame | None = None, *, metric: str | None = None,
                   alpha: float = ALPHA, margin_points: float = MARGIN_POINTS, stage: str = "confirm",
                   by: str | None = None, primary_alpha: float | None = None,
                   equivalence_alpha: float | None = None) -> pd.DataFrame:
    """Every hypothesis the report states, one row each (untested ones carry their ``reason``).

    The primary row (``primary`` True): the activation-level paired t-test on ``metric`` with every
    run counted, alone at ``primary_alpha`` (default ``alpha``; a group-sequential look passes its
    nominal level, :mod:`analysis.sequential`), equivalence by TOST at ``equivalence_alpha``.
    ``metric`` defaults to :func:`analysis.summaries.primary_metric`. The secondary family, Holm-
    adjusted together: the same test on finished runs only, the same test (every run counted) on
    the runs at the original configuration when there are any (``stage`` ``"original"``: a
    different estimand, no search), the train-validation gap (at each arm's
    chosen configuration, and at matched epochs when ``epochs`` is given and the arms trained for
    different lengths), the configuration level and search sensitivity (needs the search's
    per-epoch rows in ``epochs``). ``by`` names a column of independent analyses.
    """
    metric = metric or primary_metric(trials, stage)
    primary = activation_tests(trials, metric, stage, by, itt=True).assign(primary=True)
    parts = [primary, activation_tests(trials, metric, stage, by)]
    if (trials["stage"] == ORIGINAL).any():
        parts.append(activation_tests(trials, metric, ORIGINAL, by, itt=True).assign(stage=ORIGINAL))
    parts.append(activation_tests(trials, "final_gap", stage, by))
    if epochs is not None and not epochs.empty:
        parts.append(matched_epoch_gap_tests(trials, epochs, stage, by))
    parts += [configuration_tests(trials, metric, stage, by), sensitivity_tests(trials, epochs, by)]
    cols = TEST_COLUMNS + ["primary", "stage"]
    parts = [p.reindex(columns=cols) for p in parts if len(p)]
    tests = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    tests["reason"] = tests["reason"].fillna("")
    tests["primary"] = tests["primary"].fillna(False).astype(bool)
    tests["stage"] = tests["stage"].fillna(stage)
    out = finalize(tests, alpha, margin_points, primary_alpha, equivalence_alpha)
    if by:
        out = out.rename(columns={KEY: by})
    return out.drop(columns=[KEY], errors="ignore")


def activation_decision(tests: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """Per analysis, from :func:`decision_tests`: ``winner`` (the arm that significantly beats
    every other arm on the primary metric at the activation level, else None), ``equivalent``
    (every pair within the margin), ``tested`` (every pair tested), and the deciding pair's
    row (for two arms, the only pair; else the two arms with the highest replicate means)."""
    key = by or KEY
    prim = tests[tests["primary"]]
    if not by:
        prim = prim.assign(**{KEY: 0})
    if prim.empty:
        return pd.DataFrame(columns=[key, "winner", "equivalent", "tested"])
    sides = pd.concat([
        pd.DataFrame({key: prim[key], "arm": prim["arm_a"], "score": prim["mean_a"],
                      "won": prim["significant"] & (prim["estimate"] > 0)}),
        pd.DataFrame({key: prim[key], "arm": prim["arm_b"], "score": prim["mean_b"],
                      "won": prim["significant"] & (prim["estimate"] < 0)})], ignore_index=True)
    per_arm = sides.groupby([key, "arm"], sort=False).agg(score=("score", "mean"), won=("won", "all"))
    per_arm = per_arm.reset_index()
    winners = per_arm[per_arm["won"]].groupby(key)["arm"].first()  # at most one arm can beat all others
    top = per_arm.sort_values([key, "score", "arm"], ascending=[True, False, True], na_position="last")
    top2 = top.groupby(key, sort=False)["arm"].agg(lambda a: tuple(sorted(a.iloc[:2])))
    pair = prim[key].map(top2)
    chosen = prim[(pair.str[0] == prim["arm_a"]) & (pair.str[-1] == prim["arm_b"])]
    chosen = chosen.drop_duplicates(key).set_index(key)
    g = prim.groupby(key, sort=False)
    out = pd.DataFrame({"equivalent": g["equivalent"].all(), "tested": g["p_value"].count() == g.size()})
    out["winner"] = winners.reindex(out.index).astype(object).where(lambda w: w.notna(), None)
    cols = ["arm_a", "arm_b", "n", "n_a", "n_b", "mean_a", "mean_b", "estimate", "ci_low", "ci_high",
            "conf_level", "p_value", "p_holm", "family_size", "p_a_better", "p_a_better_low",
            "p_a_better_high", "reason", "test"]
    out = out.join(chosen[cols]).reset_index()
    out = out[[key, "winner", "equivalent", "tested", *cols]]
    return out if by else out.drop(columns=[KEY])
