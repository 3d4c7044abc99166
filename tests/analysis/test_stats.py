"""analysis/stats.py agrees with scipy, finds planted differences and declares none where none is."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.stats import arm_summary, compare_arms, holm, search_summary, verdict


def _trials(samples: dict[str, list[float]], gaps: dict[str, list[float]] | None = None,
            stage="confirm") -> pd.DataFrame:
    rows = []
    for arm, values in samples.items():
        for i, v in enumerate(values):
            rows.append({"experiment": "e", "stage": stage, "trial_id": f"{arm}{i}", "arm": arm,
                         "status": "finished", "final_test_accuracy": v, "final_val_accuracy": v,
                         "best_val_accuracy": v, "final_gap": (gaps or {}).get(arm, [0.1] * 99)[i],
                         "val_loss_rise": 0.0, "lr": 10 ** -(2 + i % 3), "epochs": 5 + i})
    return pd.DataFrame(rows)


A = [0.712, 0.705, 0.718, 0.709, 0.714]
B = [0.662, 0.671, 0.659, 0.668, 0.665]


def test_summary_matches_scipy_t_interval():
    s = arm_summary(_trials({"relu": A, "selu": B}), metrics=["final_test_accuracy"]).set_index("arm")
    lo, hi = stats.t.interval(0.95, 4, loc=np.mean(A), scale=stats.sem(A))
    assert s.loc["relu", "n"] == 5 and s.loc["relu", "mean"] == pytest.approx(np.mean(A))
    assert s.loc["relu", "std"] == pytest.approx(np.std(A, ddof=1))
    assert (s.loc["relu", "ci_low"], s.loc["relu", "ci_high"]) == pytest.approx((lo, hi))


def test_comparison_matches_scipy_welch():
    c = compare_arms(_trials({"relu": A, "selu": B}), "final_test_accuracy").iloc[0]
    ref = stats.ttest_ind(A, B, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert c["p_value"] == pytest.approx(ref.pvalue) and c["t"] == pytest.approx(ref.statistic)
    assert (c["ci_low"], c["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert c["diff"] == pytest.approx(np.mean(A) - np.mean(B))
    pooled = np.sqrt((np.var(A, ddof=1) + np.var(B, ddof=1)) / 2)
    assert c["hedges_g"] == pytest.approx((np.mean(A) - np.mean(B)) / pooled * (1 - 3 / (4 * 10 - 9)))


def test_planted_difference_is_detected_in_plain_words():
    lines = verdict(_trials({"relu": A, "selu": B}, gaps={"relu": [0.15] * 5,
                                                          "selu": [0.20, 0.21, 0.22, 0.21, 0.20]}))
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith("relu beats selu on test accuracy by 4.7 points (95% CI")
    assert "Welch p=" in line and "n=5 seeds each" in line
    assert "selu overfits more: train-val gap 0.208 vs 0.150" in line


def test_identical_arms_are_not_declared_different():
    lines = verdict(_trials({"relu": A, "selu": list(A)}))
    assert lines[0].startswith("No significant difference in test accuracy between relu and selu at n=5")
    assert "beats" not in lines[0] and "overfits more" not in lines[0]


def test_same_distribution_at_small_n_is_not_declared_different():
    rng = np.random.default_rng(0)
    false_alarms = sum(
        "beats" in verdict(_trials({"relu": list(rng.normal(0.7, 0.01, 3)),
                                    "selu": list(rng.normal(0.7, 0.01, 3))}))[0]
        for _ in range(40))
    assert false_alarms <= 6  # ~5% expected; far below what a wrong test would give


def test_single_seed_per_arm_makes_no_claim():
    line = verdict(_trials({"relu": [0.7], "selu": [0.6]}))[0]
    assert line.startswith("Cannot test relu vs selu") and "n=1" in line


def test_three_arms_use_holm_adjustment():
    t = _trials({"relu": A, "selu": B, "selu-done-right": [v + 0.001 for v in A]})
    comp = compare_arms(t, "final_test_accuracy")
    assert len(comp) == 3 and (comp["p_holm"] >= comp["p_value"]).all()
    assert "Holm-adjusted" in verdict(t)[0]


def test_holm_matches_hand_computation():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = holm([0.2, float("nan")])
    assert out[0] == 0.2 and np.isnan(out[1])


def test_search_summary_counts_statuses_and_sensitivity():
    t = _trials({"relu": [0.5, 0.6, 0.7, 0.65, 0.55], "selu": [0.4, 0.5, 0.45, 0.3, 0.35]}, stage="search")
    t.loc[t["trial_id"] == "selu3", "status"] = "stopped_early"
    s = search_summary(t).set_index("arm")
    assert s.loc["relu", "trials"] == 5 and s.loc["selu", "stopped_early"] == 1
    assert s.loc["relu", "best_val_accuracy"] == 0.7
    assert s.loc["relu", "top3_mean_val_accuracy"] == pytest.approx((0.7 + 0.65 + 0.6) / 3)
    assert s.loc["relu", "spearman_epochs"] == pytest.approx(stats.spearmanr([5, 6, 7, 8, 9],
                                                                             [0.5, 0.6, 0.7, 0.65, 0.55])[0])
    assert np.isnan(s.loc["selu", "spearman_lr"]), "4 finished trials are too few for a rank test"


def test_verdict_names_each_arms_config_when_they_differ():
    t = _trials({"relu": A, "selu": B})
    assert len(verdict(t)) == 1, "same configs: nothing to add"
    t.loc[t["arm"] == "selu", "epochs"] = 13
    t.loc[t["arm"] == "relu", "epochs"] = 30
    line = verdict(t)[-1]
    assert "relu: lr 0.01, 30 epochs; selu: lr 0.01, 13 epochs" in line
