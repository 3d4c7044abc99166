"""analysis/decision.py: the activation level names a winner only where replicates support one;
the configuration level stays about configurations; every test shares one Holm family."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.contract import MARGIN_POINTS, PRIMARY_METRIC, PRIMARY_METRICS
from analysis.decision import (
    ACTIVATION,
    CONFIGURATION,
    SENSITIVITY,
    activation_decision,
    activation_tests,
    configuration_tests,
    decision_tests,
    matched_epoch_gap_tests,
    replicate_table,
    sensitivity_tests,
)
from benchmarks.simulate import simulate


def _trials(values: dict[str, list[list[float]]], lr=None, epochs=None, status=None) -> pd.DataFrame:
    """Tune-shaped confirmation trials: values[arm][replicate] = the accuracies of its seeds."""
    rows = []
    for arm, reps in values.items():
        for r, seeds in enumerate(reps):
            for k, v in enumerate(seeds):
                rows.append({"experiment": "e", "stage": "confirm", "trial_id": f"{arm}-{r}-{k}", "arm": arm,
                             "activation": "relu", "replicate": r, "seed": 10_000 + k,
                             "lr": (lr or {}).get(arm, 1e-3 * (r + 1)),
                             "epochs": (epochs or {}).get(arm, 10 + r),
                             "status": (status or {}).get((arm, r, k), "finished"),
                             "final_test_accuracy": v, "final_val_accuracy": v, "final_gap": 0.05 + v / 10})
    return pd.DataFrame(rows)


def _planted(effect: float, replicates: int = 5, seeds: int = 5, rng: int = 0) -> pd.DataFrame:
    """Replicate r's tuned config falls short of the peak by a random amount (search luck)."""
    g = np.random.default_rng(rng)
    values = {}
    for arm, bonus in (("relu", 0.0), ("selu", effect)):
        values[arm] = [list(0.66 + bonus - g.exponential(0.01) + g.normal(0, 0.006, seeds))
                       for _ in range(replicates)]
    return _trials(values)


def test_planted_effect_over_five_replicates_names_the_planted_winner():
    tests = decision_tests(_planted(0.05))
    dec = activation_decision(tests).iloc[0]
    assert dec["winner"] == "selu" and dec["tested"] and not dec["equivalent"]
    row = tests[tests["primary"]].iloc[0]
    assert row["test"] == "paired t-test on replicate means" and row["n"] == 5
    assert row["ci_high"] < 0 and row["p_holm"] < 0.05  # relu - selu < 0
    assert row["p_a_better"] == 0 and 0 <= row["p_a_better_low"] <= row["p_a_better_high"] <= 1


def test_paired_test_is_scipy_ttest_rel_on_replicate_means():
    t = _planted(0.01, rng=4)
    row = activation_tests(t, "final_test_accuracy").iloc[0]
    reps = replicate_table(t, "final_test_accuracy").pivot(index="replicate", columns="arm", values="mean")
    ref = stats.ttest_rel(reps["relu"], reps["selu"])
    assert row["p_value"] == pytest.approx(ref.pvalue) and row["statistic"] == pytest.approx(ref.statistic)
    assert row["estimate"] == pytest.approx((reps["relu"] - reps["selu"]).mean())


def test_identical_arms_name_no_winner():
    """relu vs relu under two names, the same numbers: the differences have no spread."""
    t = _planted(0.0)
    twin = t[t["arm"] == "relu"].assign(arm="relu_twin", trial_id=lambda d: d["trial_id"] + "b")
    tests = decision_tests(pd.concat([t[t["arm"] == "relu"], twin]))
    dec = activation_decision(tests).iloc[0]
    assert dec["winner"] is None and not dec["tested"]
    assert "no spread" in dec["reason"] and "no claim from zero variance" in dec["reason"]
    assert not tests["significant"].any()


def test_identical_activations_rarely_name_a_winner_where_the_old_rule_often_does():
    """200 simulated sweeps of relu against relu (R=3): the decision rule's false-winner rate is
    within 5% (+ Monte Carlo error), while Welch across one tuned config's seeds (the old rule)
    names a winner far more often on the same data."""
    trials, epochs = simulate(200, 3, trials=6, activations=("relu", "relu"), arms=("relu", "relu_b"), rng=11)
    tests = decision_tests(trials, epochs, by="sim")
    dec = activation_decision(tests, by="sim")
    assert len(dec) == 200 and dec["winner"].notna().mean() <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 200)
    conf = tests[tests["level"] == CONFIGURATION]
    old = (conf["p_value"] < 0.05).groupby(conf["sim"]).any().mean()  # any replicate "significant"
    assert old > 0.2


def test_batched_analyses_give_the_same_answer_as_one_at_a_time():
    trials, epochs = simulate(3, 3, trials=6, effect_points=2.0, rng=5)
    together = decision_tests(trials, epochs, by="sim")
    for s in range(3):
        alone = decision_tests(trials[trials["sim"] == s], epochs[epochs["sim"] == s])
        mine = together[together["sim"] == s].drop(columns="sim").reset_index(drop=True)
        cols = ["level", "metric", "arm_a", "estimate", "p_value", "p_holm", "ci_low", "ci_high",
                "significant"]
        pd.testing.assert_frame_equal(mine[cols], alone.reset_index(drop=True)[cols])


@pytest.mark.parametrize("replicates", [1, 2])
def test_too_few_replicates_is_no_test_and_says_why(replicates):
    tests = decision_tests(_planted(0.05, replicates=replicates))
    dec = activation_decision(tests).iloc[0]
    assert dec["winner"] is None and not dec["tested"]
    plural = "" if replicates == 1 else "s"
    assert dec["reason"] == f"R={replicates} replicate{plural} per arm; at least 3 needed"


def test_unequal_replicates_are_paired_on_the_common_ones():
    t = _planted(0.05, replicates=4)
    t = t[~((t["arm"] == "selu") & (t["replicate"] == 3))]
    row = activation_tests(t, "final_test_accuracy").iloc[0]
    assert row["n"] == 3 and row["n_a"] == 4 and row["n_b"] == 3 and np.isfinite(row["p_value"])


def test_zero_spread_seeds_make_no_configuration_claim():
    t = _trials({"relu": [[0.7, 0.7, 0.7]], "selu": [[0.6, 0.6, 0.6]]})
    row = configuration_tests(t, "final_test_accuracy").iloc[0]
    assert np.isnan(row["p_value"]) and "no spread" in row["reason"]


def test_two_seeds_are_below_the_minimum_for_a_configuration_test():
    """Zero spread at n=2 used to become p=0 and 'beats'; now it is not a test at all."""
    t = _trials({"relu": [[0.7, 0.7]], "selu": [[0.2, 0.2]]})
    tests = decision_tests(t)
    assert tests["p_value"].isna().all() and not tests["significant"].any()
    conf = tests[tests["level"] == CONFIGURATION].iloc[0]
    assert conf["reason"] == "n=2 and 2 seeds; at least 3 per configuration needed"


def test_configuration_level_names_configurations_and_uses_welch_on_seeds():
    t = _trials({"relu": [[0.71, 0.70, 0.72]], "selu": [[0.65, 0.66, 0.64]]},
                lr={"relu": 2.69e-3, "selu": 1e-3}, epochs={"relu": 30, "selu": 13})
    row = configuration_tests(t, "final_test_accuracy").iloc[0]
    assert row["config_a"] == "relu (lr 0.00269, 30 epochs)"
    assert row["config_b"] == "selu (lr 0.001, 13 epochs)"
    ref = stats.ttest_ind([0.71, 0.70, 0.72], [0.65, 0.66, 0.64], equal_var=False)
    assert row["p_value"] == pytest.approx(ref.pvalue)


def test_diverged_runs_stay_out_of_the_finished_runs_means():
    t = _trials({"relu": [[0.7, 0.72, 0.1]]}, status={("relu", 0, 2): "diverged"})
    rep = replicate_table(t, "final_test_accuracy").iloc[0]
    assert rep["mean"] == pytest.approx(0.71) and rep["n"] == 2 and rep["diverged"] == 1 and rep["runs"] == 3


def test_primary_is_tested_alone_and_the_rest_is_one_holm_family_with_consistent_intervals():
    trials, epochs = simulate(1, 5, effect_points=2.0, rng=2, derive_metrics=True)
    tests = decision_tests(trials, epochs)
    tested = tests[tests["p_value"].notna()]
    prim, sec = tested[tested["primary"]], tested[~tested["primary"]]
    assert len(prim) == 1 and prim["family"].iloc[0] == "primary" and prim["family_size"].iloc[0] == 1
    assert prim["p_holm"].iloc[0] == prim["p_value"].iloc[0]
    assert prim["conf_level"].iloc[0] == pytest.approx(0.95)
    assert {ACTIVATION, CONFIGURATION} <= set(sec["level"]) and (sec["family"] == "secondary").all()
    assert (sec["family_size"] == len(sec)).all() and (sec["p_holm"] >= sec["p_value"]).all()
    t_rows = tested[tested["level"] != SENSITIVITY]
    excludes = (t_rows["ci_low"] > 0) | (t_rows["ci_high"] < 0)
    assert (excludes == t_rows["significant"]).all()
    assert (sec["conf_level"] >= 0.95).all() and (sec["conf_level"] <= 1 - 0.05 / len(sec) + 1e-12).all()


def test_a_sequential_look_level_is_used_for_the_primary_only():
    trials, epochs = simulate(1, 5, effect_points=2.0, rng=2, derive_metrics=True)
    tests = decision_tests(trials, epochs, primary_alpha=0.0145, equivalence_alpha=0.0159)
    prim = tests[tests["primary"]].iloc[0]
    assert prim["conf_level"] == pytest.approx(1 - 0.0145)
    assert prim["significant"] == (prim["p_value"] < 0.0145)
    assert prim["equivalence_level"] == pytest.approx(1 - 2 * 0.0159)


def test_secondary_tests_are_exploratory_unless_the_primary_is_rejected():
    for effect, rejected in ((0.05, True), (0.0, False)):
        tests = decision_tests(_planted(effect, rng=4))
        assert bool(tests.loc[tests["primary"], "significant"].iloc[0]) is rejected
        assert (tests.loc[~tests["primary"], "exploratory"] == (not rejected)).all()


def test_diverged_runs_count_in_the_primary_at_their_recorded_accuracy():
    """Issue 14's reproduction: selu diverging in 1 of 3 seeds of every replicate made selu the
    winner when diverged runs were dropped. Counted at their recorded accuracy, they cannot."""
    g = np.random.default_rng(1)
    values = {"relu": [list(0.55 + g.normal(0, 0.005, 3)) for _ in range(5)],
              "selu": [[0.10] + list(0.57 + g.normal(0, 0.005, 2)) for _ in range(5)]}
    status = {("selu", r, 0): "diverged" for r in range(5)}
    tests = decision_tests(_trials(values, status=status))
    prim = tests[tests["primary"]].iloc[0]
    survivors = tests[~tests["primary"] & (tests["level"] == ACTIVATION)
                      & (tests["metric"] == "final_test_accuracy")].iloc[0]
    assert prim["counting"].startswith("every run") and prim["estimate"] > 0.1  # relu ahead
    assert survivors["estimate"] < 0  # the survivors-only view would favour the diverging arm
    assert activation_decision(tests).iloc[0]["winner"] != "selu"


def test_a_replicate_whose_seeds_all_diverged_stays_paired():
    values = {"relu": [[0.6, 0.61]] * 3, "selu": [[0.62, 0.6], [0.1, 0.1], [0.6, 0.62]]}
    status = {("selu", 1, 0): "diverged", ("selu", 1, 1): "diverged"}
    tests = decision_tests(_trials(values, status=status))
    assert tests[tests["primary"]].iloc[0]["n"] == 3
    assert replicate_table(_trials(values, status=status), "final_test_accuracy", itt=True)["n"].tolist() == \
        [2, 2, 2, 2, 2, 2]


def _search(n_trials: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Search trials whose val accuracy rises with lr at every epoch; ASHA-like: trials stop after 1,
    3 or 9 epochs, and the survivors (which ran longer) are the low-lr ones."""
    trials, rows = [], []
    for arm in ("relu", "selu"):
        for i in range(n_trials):
            lr = 10 ** (-4 + 2 * i / (n_trials - 1))
            last = (1, 3, 9)[i % 3]
            tid = f"{arm}-{i}"
            trials.append({"experiment": "e", "stage": "search", "trial_id": tid, "arm": arm, "replicate": 0,
                           "lr": lr, "status": "stopped_early" if last < 9 else "finished",
                           "final_val_accuracy": 0.3 + 0.01 * i + 0.01 * last})
            for e in range(1, last + 1):
                rows.append({"experiment": "e", "stage": "search", "trial_id": tid, "epoch": e,
                             "val_accuracy": 0.3 + 0.01 * i + 0.01 * e})
    return pd.DataFrame(trials), pd.DataFrame(rows)


def test_search_sensitivity_uses_every_trial_at_the_epoch_all_reached():
    trials, epochs = _search()
    out = sensitivity_tests(trials, epochs)
    assert len(out) == 2 and (out["n"] == 8).all() and (out["param"] == "lr").all()
    assert out["estimate"].tolist() == pytest.approx([1.0, 1.0]) and "epoch 1," in out["epochs_note"].iloc[0]
    untested = sensitivity_tests(trials)
    assert untested["p_value"].isna().all()
    assert untested["reason"].str.contains("early stopping's selection").all()


def test_config_defaults_are_the_analysis_defaults():
    from sweeps.config import AnalysisConfig

    cfg = AnalysisConfig()
    assert cfg.equivalence_margin == MARGIN_POINTS and cfg.primary == PRIMARY_METRIC
    assert AnalysisConfig.PRIMARY_METRICS == PRIMARY_METRICS


def test_equivalence_when_the_interval_lies_within_the_margin():
    g = np.random.default_rng(0)
    shifts = (0.0, 0.001, -0.001, 0.0005, 0.0)
    values = {arm: [list(0.66 + s + g.normal(0, 0.0005, 5)) for s in shifts] for arm in ("relu", "selu")}
    tests = decision_tests(_trials(values), margin_points=1.0)
    row = tests[tests["primary"]].iloc[0]
    assert row["equivalent"] and not row["significant"] and -0.01 < row["ci_low"] < row["ci_high"] < 0.01
    assert activation_decision(tests).iloc[0]["equivalent"]
    narrow = decision_tests(_trials(values), margin_points=0.01)
    assert not narrow.loc[narrow["primary"], "equivalent"].any()


def test_matched_epoch_gap_compares_at_the_last_epoch_both_arms_trained():
    rows, trials = [], []
    for arm, n_ep, slope in (("relu", 4, 0.02), ("selu", 2, 0.01)):
        for r in range(3):
            for k in range(2):
                tid = f"{arm}{r}{k}"
                key = {"experiment": "e", "stage": "confirm", "trial_id": tid}
                trials.append({**key, "arm": arm, "replicate": r, "status": "finished"})
                for e in range(1, n_ep + 1):
                    rows.append({**key, "arm": arm, "epoch": e, "val_accuracy": 0.5,
                                 "train_eval_accuracy": 0.5 + slope * e + 0.001 * (r + k)})
    out = matched_epoch_gap_tests(pd.DataFrame(trials), pd.DataFrame(rows)).iloc[0]
    # at epoch 2: relu gap 0.04 + 0.001(r + k), selu 0.02 + 0.001(r + k): difference 0.02 exactly
    assert out["estimate"] == pytest.approx(0.02) and out["epochs_note"].startswith("epoch 2:")
    assert out["metric"] == "gap_matched_epoch" and out["n"] == 3


def test_missing_replicate_column_counts_as_one_replicate():
    t = _planted(0.05, replicates=1).drop(columns="replicate")
    assert "R=1 replicate per arm" in activation_tests(t, "final_test_accuracy").iloc[0]["reason"]
