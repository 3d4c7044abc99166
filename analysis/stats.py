"""Statistical building blocks of the comparison, vectorised over many tests at once.

Distributions come from scipy.stats (t, beta, the permutation test); the small formulas on top
(Welch's standard error and degrees of freedom from group moments, Holm's step-down, the exact
Spearman null by enumeration, Dodge et al.'s expected maximum) are written out because scipy has
no batched form of them. ``tests/analysis/test_stats.py`` checks each against scipy's own.

The decision rule that uses them (which tests, at which level, who wins) is
:mod:`analysis.decision`; the per-arm summaries built on them are :mod:`analysis.summaries`.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05
MIN_SPEARMAN_N = 5        # fewer points: no rank test
EXACT_SPEARMAN_MAX_N = 9  # up to 9! = 362,880 orderings: the exact null by enumeration
PERMUTATIONS = 9999       # above that: scipy.stats.permutation_test with this many resamples
BOUNDS = {"final_test_accuracy": (0.0, 1.0), "final_val_accuracy": (0.0, 1.0),
          "best_val_accuracy": (0.0, 1.0), "final_gap": (-1.0, 1.0), "gap_matched_epoch": (-1.0, 1.0),
          "val_loss_rise": (0.0, math.inf), "best_epoch": (1.0, math.inf),
          "min_val_loss_epoch": (1.0, math.inf)}
LABELS = {"final_test_accuracy": "test accuracy", "final_val_accuracy": "validation accuracy",
          "best_val_accuracy": "best-epoch validation accuracy", "final_gap": "generalization gap",
          "gap_matched_epoch": "generalization gap at matched epochs", "val_loss_rise": "val-loss rise",
          "best_epoch": "epoch of best val accuracy", "min_val_loss_epoch": "epoch of minimum val loss"}
# --------------------------------------------------------------------------- intervals and tests

def t_interval(mean, sd, n, confidence: float = CONFIDENCE, bounds=(-math.inf, math.inf)):
    """t interval of a mean from (mean, sd, n), truncated to ``bounds`` (the parameter cannot lie
    outside them, so truncation only removes impossible values). NaN where n < 2 or sd is 0:
    no spread is no estimate of error."""
    mean, sd, n = (np.asarray(v, dtype=float) for v in (mean, sd, n))
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = (n >= 2) & (sd > 0)
        half = stats.t.ppf(0.5 + confidence / 2, np.where(ok, n - 1, 1)) * sd / np.sqrt(np.where(ok, n, 1))
    lo = np.where(ok, np.clip(mean - half, *bounds), np.nan)
    hi = np.where(ok, np.clip(mean + half, *bounds), np.nan)
    return lo, hi


def welch(mean_a, var_a, n_a, mean_b, var_b, n_b):
    """Welch's unequal-variance t-test from group moments: (diff, se, df, t, p two-sided)."""
    mean_a, var_a, n_a, mean_b, var_b, n_b = (np.asarray(v, dtype=float)
                                              for v in (mean_a, var_a, n_a, mean_b, var_b, n_b))
    with np.errstate(invalid="ignore", divide="ignore"):
        va, vb = var_a / n_a, var_b / n_b
        se = np.sqrt(va + vb)
        df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
        diff = mean_a - mean_b
        t = diff / se
        p = 2 * stats.t.sf(np.abs(t), df)
    return diff, se, df, t, p


def paired_t(mean_d, sd_d, n):
    """One-sample t-test of paired differences against 0: (se, df, t, p two-sided)."""
    mean_d, sd_d, n = (np.asarray(v, dtype=float) for v in (mean_d, sd_d, n))
    with np.errstate(invalid="ignore", divide="ignore"):
        se = sd_d / np.sqrt(n)
        t = mean_d / se
        df = n - 1
        p = 2 * stats.t.sf(np.abs(t), df)
    return se, df, t, p


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN: an untested hypothesis is not counted)."""
    adjusted, _ = holm_levels(p_values)
    return adjusted


def holm_levels(p_values, alpha: float = ALPHA, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """Holm-adjusted p-values and, per test, the significance level its interval must use so that
    the interval excludes 0 exactly when the adjusted p < ``alpha``.

    Sorted p_(1) <= ... <= p_(m): Holm rejects while p_(j) < alpha / (m - j + 1). A test at rank j
    before the first acceptance s gets level alpha / (m - j + 1); from s on every test gets
    alpha / (m - s + 1), stricter than its own step, so none of them can exclude 0. ``groups``
    (one label per test) runs independent families side by side; NaN p-values are not tested.
    """
    p = np.asarray(p_values, dtype=float)
    g = np.zeros(len(p), dtype=np.int64) if groups is None else pd.factorize(np.asarray(groups))[0]
    adjusted = np.full(len(p), np.nan)
    levels = np.full(len(p), np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if not len(ok):
        return adjusted, levels
    order = ok[np.lexsort((p[ok], g[ok]))]
    gs = pd.Series(g[order])
    rank = gs.groupby(gs).cumcount().to_numpy()           # 0-based rank within the family
    m = gs.map(gs.value_counts()).to_numpy()
    adj = pd.Series(np.minimum(1.0, (m - rank) * p[order])).groupby(gs.to_numpy()).cummax().to_numpy()
    accepted_rank = pd.Series(np.where(adj >= alpha, rank, np.iinfo(np.int64).max))
    first_accept = accepted_rank.groupby(gs.to_numpy()).transform("min").to_numpy()
    adjusted[order] = adj
    levels[order] = alpha / (m - np.minimum(rank, first_accept))
    return adjusted, levels


def clopper_pearson(k_low, k_high, n, confidence: float = CONFIDENCE):
    """Exact binomial interval: lower bound from ``k_low`` successes, upper from ``k_high``
    (ties counted as losses for the lower bound and as wins for the upper). Always within [0, 1]."""
    k_low, k_high, n = (np.asarray(v, dtype=float) for v in (k_low, k_high, n))
    a = (1 - np.asarray(confidence, dtype=float)) / 2
    with np.errstate(invalid="ignore"):
        lo = np.where(k_low > 0, stats.beta.ppf(a, k_low, n - k_low + 1), 0.0)
        hi = np.where(k_high < n, stats.beta.ppf(1 - a, k_high + 1, n - k_high), 1.0)
    bad = ~(n > 0)
    return np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


# --------------------------------------------------------------------------- Spearman, exact

@lru_cache(maxsize=EXACT_SPEARMAN_MAX_N + 1)
def _orderings(n: int) -> np.ndarray:
    """All n! orderings of range(n) (9! x 9 int8: 3.3 MB)."""
    return np.array(list(itertools.permutations(range(n))), dtype=np.int8)


@lru_cache(maxsize=EXACT_SPEARMAN_MAX_N + 1)
def _untied_null(n: int) -> np.ndarray:
    """Sorted null distribution of sum(rx * ry) for untied ranks 1..n (shared by every such test)."""
    r = np.arange(1, n + 1, dtype=float)
    return np.sort(r[_orderings(n)] @ r)


def _rho(xr: np.ndarray, yr: np.ndarray) -> np.ndarray:
    xc = xr - xr.mean(-1, keepdims=True)
    yc = yr - yr.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * yc).sum(-1) / np.sqrt((xc ** 2).sum(-1) * (yc ** 2).sum(-1))


_RTOL = np.finfo(float).eps * 100  # scipy.stats.permutation_test's tolerance for equal statistics


def _two_sided(null: np.ndarray, observed, adjustment: int = 0):
    """scipy.stats.permutation_test's two-sided p: 2 * min(P(null <= obs), P(null >= obs)),
    clipped to 1; ``adjustment`` = 1 for a random (not exact) null, as scipy does."""
    obs = np.atleast_1d(np.asarray(observed, dtype=float))
    gamma = np.abs(_RTOL * obs)
    ge = ((null[None, :] >= (obs - gamma)[:, None]).sum(1) + adjustment) / (len(null) + adjustment)
    le = ((null[None, :] <= (obs + gamma)[:, None]).sum(1) + adjustment) / (len(null) + adjustment)
    return np.minimum(1.0, 2 * np.minimum(ge, le))


def _exact_spearman_p(xr: np.ndarray, yr: np.ndarray) -> float:
    n = len(xr)
    if len(np.unique(xr)) == n and len(np.unique(yr)) == n:
        null = _untied_null(n)
        observed = float(xr @ yr)
    else:  # ties: the null depends on the tie pattern; enumerate this pair's orderings
        null = xr[_orderings(n)] @ yr
        observed = float(xr @ yr)
    return float(_two_sided(null, observed)[0])


def spearman_batch(x: np.ndarray, y: np.ndarray, rng: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """Spearman's rho and its two-sided p for each row of ``x``/``y`` (same length n per call).

    n <= 9: exact, by enumerating all n! pairings (ties included). n > 9:
    ``scipy.stats.permutation_test`` (pairings, 9,999 resamples). Returns (rho, p, test name).
    """
    x, y = np.atleast_2d(np.asarray(x, float)), np.atleast_2d(np.asarray(y, float))
    n = x.shape[1]
    xr, yr = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    rho = _rho(xr, yr)
    if n <= EXACT_SPEARMAN_MAX_N:
        p = np.array([_exact_spearman_p(a, b) for a, b in zip(xr, yr)])
        return rho, p, f"Spearman, exact permutation p (all {math.factorial(n):,} orderings)"
    xc, yc = xr - xr.mean(1, keepdims=True), yr - yr.mean(1, keepdims=True)
    p = np.empty(len(x))
    untied = (np.sort(xr, 1) == np.arange(1, n + 1)).all(1) & (np.sort(yr, 1) == np.arange(1, n + 1)).all(1)
    # Rows without ties share one null distribution (that of ranks 1..n): draw it once and read
    # each row's p-value off it with permutation_test's own conventions; tied rows get their own.
    if untied.any():
        r = np.arange(1, n + 1, dtype=float) - (n + 1) / 2
        null = np.ravel(_permutation_test(r[None], r[None], n, rng).null_distribution)
        p[untied] = _two_sided(null, (xc[untied] * yc[untied]).sum(1), adjustment=1)
    if (~untied).any():
        p[~untied] = np.atleast_1d(_permutation_test(xc[~untied], yc[~untied], n, rng).pvalue)
    return rho, p, f"Spearman, permutation p ({PERMUTATIONS:,} resamples)"


def _permutation_test(xc: np.ndarray, yc: np.ndarray, n: int, rng: int):
    return stats.permutation_test((xc, yc), lambda a, b, axis=-1: (a * b).sum(axis), vectorized=True,
                                  permutation_type="pairings", n_resamples=PERMUTATIONS, axis=1,
                                  batch=max(1, 2_000_000 // (n * len(xc))), rng=rng)


def spearman_test(x, y) -> tuple[float, float, str]:
    """Spearman's rho of two 1-d samples with an exact (n <= 9) or permutation p-value."""
    rho, p, name = spearman_batch(np.asarray(x, float)[None], np.asarray(y, float)[None])
    return float(rho[0]), float(p[0]), name


def fisher_z_interval(rho, n, confidence=CONFIDENCE):
    """Approximate interval of Spearman's rho: Fisher z with Bonett & Wright's (2000) variance
    (1 + rho^2 / 2) / (n - 3). Within [-1, 1] by construction."""
    rho, n, confidence = (np.asarray(v, dtype=float) for v in (rho, n, confidence))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.arctanh(np.clip(rho, -0.999999, 0.999999))
        half = stats.norm.ppf(0.5 + confidence / 2) * np.sqrt((1 + rho ** 2 / 2) / (n - 3))
        ok = n > 3
    return np.where(ok, np.tanh(z - half), np.nan), np.where(ok, np.tanh(z + half), np.nan)


# --------------------------------------------------------------------------- expected max (Dodge)

def expected_max(values, n_max: int | None = None, ns=None) -> pd.DataFrame:
    """Expected best of n draws (with replacement) from the empirical distribution of ``values``
    (Dodge et al. 2019, "Show your work"): with v_(1) <= ... <= v_(N),
    E[max_n] = sum_i v_(i) [(i/N)^n - ((i-1)/N)^n], exactly; ``std`` is sqrt(E[max^2] - E[max]^2).
    One row per n = 1..n_max (default N), or per n in ``ns``."""
    v = np.sort(np.asarray(values, dtype=float))
    v = v[np.isfinite(v)]
    big_n = len(v)
    if big_n == 0:
        return pd.DataFrame(columns=["n", "expected", "std"])
    ns = np.arange(1, (n_max or big_n) + 1) if ns is None else np.asarray(ns, dtype=int)
    i = np.arange(1, big_n + 1)
    w = (i[None, :] / big_n) ** ns[:, None] - ((i[None, :] - 1) / big_n) ** ns[:, None]
    mean = w @ v
    var = np.maximum(w @ v ** 2 - mean ** 2, 0.0)
    return pd.DataFrame({"n": ns, "expected": mean, "std": np.sqrt(var)})
