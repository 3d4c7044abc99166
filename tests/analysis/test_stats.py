"""analysis/stats.py: each building block agrees with scipy (or with brute force) and respects
the ranges of what it estimates."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.stats import (
    clopper_pearson,
    expected_max,
    holm,
    holm_levels,
    paired_t,
    spearman_batch,
    spearman_test,
    t_interval,
    welch,
)
from analysis.summaries import arm_summary, divergence, expected_best_curve, search_summary

A = [0.712, 0.705, 0.718, 0.709, 0.714]
B = [0.662, 0.671, 0.659, 0.668, 0.665]


def _confirm(values: dict[str, list[list[float]]], status: dict | None = None) -> pd.DataFrame:
    """Confirmation trials: values[arm][replicate] = accuracies of its seeds."""
    rows = []
    for arm, reps in values.items():
        for r, seeds in enumerate(reps):
            for k, v in enumerate(seeds):
                rows.append({"experiment": "e", "stage": "confirm", "trial_id": f"{arm}-{r}-{k}", "arm": arm,
                             "replicate": r, "seed": k, "lr": 1e-3, "epochs": 10,
                             "status": (status or {}).get((arm, r, k), "finished"),
                             "final_test_accuracy": v, "final_val_accuracy": v, "final_gap": 0.05})
    return pd.DataFrame(rows)


def test_t_interval_matches_scipy_when_inside_the_range():
    lo, hi = t_interval(np.mean(A), np.std(A, ddof=1), 5, 0.95, (0, 1))
    ref = stats.t.interval(0.95, 4, loc=np.mean(A), scale=stats.sem(A))
    assert (float(lo), float(hi)) == pytest.approx(ref)


def test_accuracy_interval_never_leaves_zero_to_one():
    """Two seeds at 0.2 and 0.98: the raw t interval spans -4.6 to 5.8; an accuracy cannot."""
    lo, hi = t_interval(0.59, np.std([0.2, 0.98], ddof=1), 2, 0.95, (0, 1))
    assert float(lo) == 0.0 and float(hi) == 1.0
    s = arm_summary(_confirm({"relu": [[0.2, 0.98]]}), metrics=["final_test_accuracy"]).iloc[0]
    assert 0 <= s["ci_low"] <= s["ci_high"] <= 1


def test_zero_spread_gives_no_interval_rather_than_a_zero_width_one():
    lo, hi = t_interval(0.7, 0.0, 3)
    assert math.isnan(float(lo)) and math.isnan(float(hi))


def test_arm_summary_uses_replicates_as_the_unit_and_says_so():
    t = _confirm({"relu": [[0.70, 0.72], [0.60, 0.62], [0.65, 0.67]], "selu": [[0.5, 0.52, 0.9]]},
                 status={("relu", 0, 1): "diverged"})
    s = arm_summary(t, metrics=["final_test_accuracy"]).set_index("arm")
    relu_reps = [0.70, 0.61, 0.66]  # the diverged seed is left out of replicate 0's mean
    assert s.loc["relu", "replicates"] == 3 and s.loc["relu", "seeds"] == 5
    assert s.loc["relu", "level"] == "replicates (3)"
    assert s.loc["relu", "mean"] == pytest.approx(np.mean(relu_reps))
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean(relu_reps), scale=stats.sem(relu_reps))
    assert (s.loc["relu", "ci_low"], s.loc["relu", "ci_high"]) == pytest.approx((max(lo, 0), min(hi, 1)))
    assert s.loc["selu", "level"] == "seeds (1 replicate)" and s.loc["selu", "seeds"] == 3


def test_welch_from_moments_matches_scipy():
    diff, se, df, t, p = welch(np.mean(A), np.var(A, ddof=1), 5, np.mean(B), np.var(B, ddof=1), 5)
    ref = stats.ttest_ind(A, B, equal_var=False)
    assert float(t) == pytest.approx(ref.statistic) and float(p) == pytest.approx(ref.pvalue)
    assert float(df) == pytest.approx(ref.df)
    ci = ref.confidence_interval(0.95)
    q = stats.t.ppf(0.975, df)
    assert (float(diff - q * se), float(diff + q * se)) == pytest.approx((ci.low, ci.high))


def test_paired_t_matches_scipy_ttest_rel():
    d = np.subtract(A, B)
    se, df, t, p = paired_t(d.mean(), d.std(ddof=1), len(d))
    ref = stats.ttest_rel(A, B)
    assert float(t) == pytest.approx(ref.statistic) and float(p) == pytest.approx(ref.pvalue) and df == 4


def test_holm_matches_hand_computation():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = holm([0.2, float("nan")])
    assert out[0] == 0.2 and np.isnan(out[1])


def test_holm_runs_independent_families_side_by_side():
    adj, _ = holm_levels([0.01, 0.04, 0.03, 0.01, 0.04], groups=["x", "x", "x", "y", "y"])
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02, 0.04])


def test_holm_levels_make_intervals_agree_with_adjusted_p():
    """For t-tests, an interval at the returned level excludes 0 exactly when Holm rejects."""
    rng = np.random.default_rng(1)
    for _ in range(100):
        m = rng.integers(1, 8)
        t = rng.normal(0, 3, m)
        df = rng.integers(2, 10, m).astype(float)
        p = 2 * stats.t.sf(np.abs(t), df)
        adj, level = holm_levels(p, 0.05)
        half = stats.t.ppf(1 - level / 2, df)  # se = 1: the interval is t +- half
        excludes = (t - half > 0) | (t + half < 0)
        assert (excludes == (adj < 0.05)).all()
        assert (level <= 0.05 + 1e-15).all() and (level >= 0.05 / m - 1e-15).all()


def test_clopper_pearson_matches_scipy_binomtest():
    for k, n in [(0, 5), (3, 5), (5, 5), (7, 20)]:
        lo, hi = clopper_pearson(k, k, n, 0.95)
        ref = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
        assert (float(lo), float(hi)) == pytest.approx((ref.low, ref.high))


def test_spearman_exact_p_where_the_asymptotic_one_is_wrong_by_orders_of_magnitude():
    """n=5, a perfect rank correlation: spearmanr says 1.4e-24; only 2 of 120 orderings are as
    extreme, so the exact p is 1/60."""
    rho, p, test = spearman_test([1, 2, 3, 4, 5], [0.5, 0.6, 0.61, 0.7, 0.72])
    assert rho == 1 and p == pytest.approx(2 / 120) and "exact" in test
    assert stats.spearmanr([1, 2, 3, 4, 5], [0.5, 0.6, 0.61, 0.7, 0.72]).pvalue < 1e-20


def _scipy_spearman_p(x, y, n_resamples, rng=None) -> float:
    """scipy.stats.permutation_test on Spearman's rho (Pearson's r of the ranks, vectorised)."""
    xr, yr = stats.rankdata(x), stats.rankdata(y)

    def rho(a, axis=-1):
        return stats.pearsonr(a, np.broadcast_to(yr, a.shape), axis=axis).statistic

    return float(stats.permutation_test((xr,), rho, vectorized=True, permutation_type="pairings",
                                        n_resamples=n_resamples, batch=5000, rng=rng).pvalue)


@pytest.mark.parametrize("x, y", [
    ([3.0, 1.0, 4.0, 1.5, 5.0, 9.0], [0.2, 0.1, 0.5, 0.3, 0.35, 0.9]),
    ([5, 5, 10, 20, 20, 30, 40], [0.5, 0.6, 0.55, 0.7, 0.7, 0.8, 0.75]),  # ties on both sides
    ([1, 2, 3, 4, 5, 6, 7, 8], [8, 1, 6, 3, 5, 4, 7, 2]),
])
def test_spearman_exact_matches_scipy_permutation_test(x, y):
    rho, p, _ = spearman_test(x, y)
    assert rho == pytest.approx(stats.spearmanr(x, y).statistic)
    assert p == pytest.approx(_scipy_spearman_p(x, y, np.inf))


def test_spearman_above_nine_is_a_permutation_test_within_monte_carlo_error():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 14))
    y = x + rng.normal(0, 2, size=(4, 14))
    y[0, :3] = y[0, 3]  # one row with ties takes scipy's own per-row path
    rho, p, test = spearman_batch(x, y)
    assert "permutation" in test
    for i in range(4):
        ref = _scipy_spearman_p(x[i], y[i], 99_999, rng=7)
        assert rho[i] == pytest.approx(stats.spearmanr(x[i], y[i]).statistic)
        # two Monte Carlo estimates of 2 * min(one-sided p): 5 standard errors of their difference
        se = 2 * math.sqrt(ref / 2 * (1 - ref / 2) / 9999)
        assert abs(p[i] - ref) < 5 * se + 1e-3


def test_expected_max_matches_brute_force_enumeration():
    v = np.array([0.61, 0.55, 0.66, 0.40])
    curve = expected_max(v, n_max=3).set_index("n")
    for n in (1, 2, 3):
        draws = [max(c) for c in itertools.product(v, repeat=n)]
        assert curve.loc[n, "expected"] == pytest.approx(np.mean(draws))
        assert curve.loc[n, "std"] == pytest.approx(np.std(draws))
    assert expected_max(v, n_max=200)["expected"].iloc[-1] == pytest.approx(0.66, abs=1e-6)


def test_expected_best_curve_pools_every_search_trial_per_arm():
    t = pd.DataFrame({"stage": ["search"] * 5 + ["confirm"], "arm": ["relu"] * 3 + ["selu"] * 3,
                      "final_val_accuracy": [0.5, 0.6, np.nan, 0.4, 0.45, 0.99]})
    c = expected_best_curve(t)
    assert set(c["arm"]) == {"relu", "selu"}
    assert c[c["arm"] == "relu"]["pool"].iloc[0] == 2 and c[c["arm"] == "selu"]["n"].max() == 2
    assert c[(c["arm"] == "selu") & (c["n"] == 1)]["expected"].iloc[0] == pytest.approx(0.425)


def test_divergence_rate_has_n_and_an_exact_interval():
    t = _confirm({"relu": [[0.7, 0.7, 0.7, 0.7]], "selu": [[0.6, 0.6, 0.6, 0.6]]},
                 status={("selu", 0, 0): "diverged"})
    d = divergence(t).set_index("arm")
    assert d.loc["selu", "runs"] == 4 and d.loc["selu", "diverged"] == 1 and d.loc["selu", "rate"] == 0.25
    ref = stats.binomtest(1, 4).proportion_ci(0.95, method="exact")
    assert (d.loc["selu", "ci_low"], d.loc["selu", "ci_high"]) == pytest.approx((ref.low, ref.high))
    assert d.loc["relu", "ci_low"] == 0 and d.loc["relu", "ci_high"] < 1


def test_search_summary_counts_statuses_per_replicate():
    rows = [{"stage": "search", "arm": "relu", "replicate": r, "status": s, "final_val_accuracy": v}
            for r, (s, v) in enumerate([("finished", 0.6), ("finished", 0.7), ("stopped_early", 0.3)])]
    s = search_summary(pd.DataFrame(rows)).set_index("arm")
    assert s.loc["relu", "trials"] == 3 and s.loc["relu", "replicates"] == 3
    assert s.loc["relu", "stopped_early"] == 1 and s.loc["relu", "best_val_accuracy"] == pytest.approx(0.65)
