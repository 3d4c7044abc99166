"""analysis/claims.py: the verdict's sentences and verdict.json say only what the tests support."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.claims import conclude
from benchmarks.simulate import simulate

SYNTHETIC = {"sim": {"config": {"data": {"source": "synthetic"}},
                     "data": {"source": "synthetic", "train": 500, "val": 100, "test": 100, "digest": "d1",
                              "official": False, "warnings": []}}}
CIFAR = {"sim": {"config": {"data": {"source": "cifar10"}},
                 "data": {"source": "cifar10", "train": 45000, "val": 5000, "test": 10000,
                          "digest": "c58f30108f718f92721af3b95e74349a", "official": True, "warnings": []}}}


def _sweep(replicates: int, effect: float, rng: int = 3, **kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    t, e = simulate(1, replicates, effect_points=effect, rng=rng, derive_metrics=True, **kw)
    return t.drop(columns="sim"), e.drop(columns="sim")


def test_verdict_json_has_every_field_and_is_valid_json():
    t, e = _sweep(5, 5.0)
    rec = conclude(t, e, CIFAR).record
    for key in ("primary_metric", "winner", "unit", "replicates", "seeds", "difference", "ci", "p_value",
                "p_a_better", "claims", "data_source", "equivalent", "answer", "decision", "mde_points",
                "looks", "looks_planned", "boundary", "replicates_run", "complete", "ci_level"):
        assert key in rec, key
    assert rec["unit"] == "replicate" and rec["winner"] == "selu" and rec["data_source"] == "cifar10"
    assert rec["decision"] == "winner" and rec["replicates_run"] == 5 and rec["looks"] == 1
    assert rec["complete"] is True and rec["mde_points"] > 0 and rec["boundary"]["nominal_alpha"] == 0.05
    assert rec["replicates"] == {"relu": 5, "selu": 5} and all(len(v) == 5 for v in rec["seeds"].values())
    assert rec["ci"][1] < 0 < 1 and 0 <= rec["p_a_better"] <= 1 and rec["equivalent"] is False
    secondary = [c for c in rec["comparisons"] if c["p_value"] is not None and c["family"] == "secondary"]
    assert rec["secondary_tests"] == len(secondary) > 0
    assert rec["answer"].startswith("Answer: selu beats relu on test accuracy by ")
    json.loads(json.dumps(rec, allow_nan=False))  # no NaN sneaks into the file


def test_winner_sentence_carries_n_interval_and_test():
    t, e = _sweep(5, 5.0)
    claims = conclude(t, e, CIFAR).claims
    line = next(c for c in claims if "beats relu" in c)
    assert line.startswith("Activation level (primary): selu beats relu on test accuracy by ")
    assert "paired t-test on replicate means, every run counted, R=5 replicates" in line
    assert "95.0% CI " in line and "the primary test, alone at its level" in line
    assert "P(a tuned selu beats a tuned relu)" in line
    assert claims[0].startswith("Data: `sim`: the official CIFAR-10 release (45,000 train")


def test_one_replicate_names_no_activation_winner_and_says_why():
    t, e = _sweep(1, 5.0)
    c = conclude(t, e, CIFAR)
    assert c.record["winner"] is None and c.record["ci"] is None and c.record["tested"] is False
    assert c.record["reason"] == "R=1 replicate per arm; at least 3 needed"
    line = next(s for s in c.claims if s.startswith("Activation level (primary): the effect of relu vs selu"))
    assert "not established: R=1 replicate per arm; at least 3 needed" in line
    # the seed-level result may still call one *configuration* better, named by lr/epochs
    for s in c.claims:
        if "beats" in s:
            assert s.startswith("Configuration level") and "configuration selu (lr " in s


def test_synthetic_data_is_flagged_in_the_verdict_itself():
    t, e = _sweep(5, 5.0)
    c = conclude(t, e, SYNTHETIC)
    assert "SYNTHETIC" in c.claims[0] and "say nothing about SELU or ReLU on CIFAR-10" in c.claims[0]
    winner = next(s for s in c.claims if "beats relu" in s)
    assert winner.startswith("Activation level (primary, on SYNTHETIC data): selu beats relu")
    assert c.record["answer"].startswith("Answer (on SYNTHETIC data: says nothing about CIFAR-10): "
                                         "selu beats")
    assert c.record["data_source"] == "synthetic" and c.record["synthetic_data"] is True


def test_unknown_data_source_is_said_not_guessed():
    t, e = _sweep(1, 0.0)
    c = conclude(t, e, None)
    assert c.claims[0].startswith("Data: source not recorded") and c.record["data_source"] == "unknown"


def test_equivalence_is_stated_as_no_difference_larger_than_the_margin():
    t, e = _sweep(5, 0.0, rng=8, curvature_lr=0.0, curvature_epochs=0.0, seed_sd=0.001, split_sd=0.0)
    c = conclude(t, e, CIFAR, margin_points=1.0)
    line = next(s for s in c.claims if s.startswith("Activation level (primary): no difference"))
    assert line.startswith("Activation level (primary): no difference larger than 1 point in test accuracy "
                           "between relu and selu") and "within ±1" in line and "TOST" in line
    assert c.record["equivalent"] is True and c.record["winner"] is None
    assert c.record["decision"] == "equivalent" and "are equivalent on test accuracy" in c.record["answer"]


def test_divergence_is_reported_per_arm_with_n_and_left_out():
    t, e = _sweep(3, 0.0, p_diverge=0.2)
    c = conclude(t, e, CIFAR)
    line = next(s for s in c.claims if s.startswith("Diverged runs"))
    n = int((t[(t["arm"] == "relu") & (t["stage"] == "confirm")]["status"] == "diverged").sum())
    assert f"relu confirm {n} of 15" in line and "counts each diverged confirmation run" in line
    assert c.record["diverged"]["relu/confirm"] == {"runs": 15, "diverged": n}


def test_running_train_accuracy_fallback_is_said():
    t, e = _sweep(3, 0.0)
    t["gap_source"] = "train_running"
    assert any("predate train_eval_accuracy" in s for s in conclude(t, e, CIFAR).claims)


def test_search_only_sweep_concludes_nothing_about_activations():
    t, e = _sweep(3, 5.0)
    c = conclude(t[t["stage"] == "search"], e.iloc[:0], CIFAR)
    assert c.record["winner"] is None and "no confirmation-stage trials" in c.record["reason"]
    assert not any("beats" in s for s in c.claims)


def test_claims_never_name_an_activation_winner_from_seeds_alone():
    """Across many single-replicate sweeps of identical arms, no sentence says 'relu beats' or
    'selu beats' outside the configuration level."""
    for rng in range(6):
        t, e = _sweep(1, 0.0, rng=rng)
        for s in conclude(t, e, CIFAR).claims:
            if "beats" in s:
                assert s.startswith("Configuration level") and np.char.find(s, "configuration ") >= 0


def test_a_sequential_plan_sets_the_boundary_and_says_what_more_replicates_would_buy():
    t, e = _sweep(4, 0.5, rng=5)
    meta = {"sim": {**CIFAR["sim"], "config": {"search": {"replicates": {"min": 3, "max": 8}},
                                               "analysis": {"primary": "final_val_accuracy"}}}}
    c = conclude(t, e, meta)
    rec = c.record
    assert rec["primary_metric"] == "final_val_accuracy" and rec["looks"] == 2 and rec["looks_planned"] == 6
    assert rec["boundary"]["nominal_alpha"] < 0.05 and rec["ci_level"] == pytest.approx(
        1 - rec["boundary"]["nominal_alpha"])
    assert rec["decision"] in ("winner", "equivalent", "undecided")
    if rec["decision"] == "undecided":
        line = next(s for s in c.claims if s.startswith("Detectable:"))
        assert "80% power" in line and "would take" in line


def test_secondary_claims_say_what_was_tested_and_are_exploratory_without_a_primary_rejection():
    t, e = _sweep(5, 0.0, rng=6)
    c = conclude(t, e, CIFAR, margin_points=0.1)
    assert c.record["winner"] is None
    gap = [s for s in c.claims if "train-validation accuracy gap" in s]
    assert gap and all("(secondary, exploratory)" in s for s in gap)
    assert all("overfits" not in s for s in c.claims)
    assert any("has the smaller train-validation gap" in s for s in gap)


def test_a_lone_outlying_replicate_difference_raises_the_skew_warning():
    t, e = _sweep(6, 0.0, rng=7, seed_sd=0.001, split_sd=0.0, curvature_lr=0.0, curvature_epochs=0.0)
    m = (t["stage"] == "confirm") & (t["arm"] == "selu") & (t["replicate"] == 2)
    t.loc[m, "final_test_accuracy"] -= 0.05
    assert any(s.startswith("Skew warning: replicate 2's difference") for s in conclude(t, e, CIFAR).claims)


def test_a_chosen_lr_at_the_edge_of_the_range_is_warned_about():
    t, e = _sweep(3, 0.0)
    t.loc[(t["stage"] == "confirm") & (t["arm"] == "selu"), "lr"] = 1.1e-4
    meta = {"sim": {**CIFAR["sim"], "config": {"search": {"replicates": 3,
                                                          "space": {"lr": {"low": 1e-4, "high": 1e-2}}}}}}
    line = next(s for s in conclude(t, e, meta).claims if s.startswith("Search range warning"))
    assert "selu (replicate 0: lr 0.00011)" in line and "the range, not the activation, may decide" in line


def _search_epoch_1(t: pd.DataFrame, e: pd.DataFrame, slope: float, rng: int = 0) -> pd.DataFrame:
    """``e`` plus one epoch-1 row per search trial of ``t``: val accuracy 0.35 + ``slope`` x
    log10(lr / 1e-3) plus noise (the shape of the 2026-12-07 real run: epoch-1 accuracy rose with lr)."""
    s = t[t["stage"] == "search"]
    noise = np.random.default_rng(rng).normal(0, 0.005, len(s))
    rows = pd.DataFrame({"experiment": s["experiment"].to_numpy(), "stage": "search",
                         "trial_id": s["trial_id"].to_numpy(), "epoch": 1.0,
                         "val_accuracy": 0.35 + slope * np.log10(s["lr"].to_numpy(float) / 1e-3) + noise})
    return pd.concat([e, rows], ignore_index=True)


@pytest.mark.parametrize("slope", [0.05, 0.0])
def test_early_stopping_that_ranked_learning_rates_by_speed_is_warned_about(slope):
    """The 2026-12-07 run: halving cut trials at epoch 1, where val accuracy rose with lr (rho +0.75);
    relu's slow-starting optimum was cut. A warning when trials were cut and the rise is significant;
    none when accuracy does not depend on lr there."""
    t, e = _sweep(3, 0.0)
    assert (t.loc[t["stage"] == "search", "status"] == "stopped_early").any()
    c = conclude(t, _search_epoch_1(t, e, slope), CIFAR)
    lines = [s for s in c.claims if s.startswith("Early stopping warning")]
    if slope:
        assert len(lines) == 1 and "ranked learning rates by how fast they start" in lines[0]
        assert "enabled: false" in lines[0] and "relu rho +" in lines[0] and "selu rho +" in lines[0]
    else:
        assert not lines
    t.loc[t["stage"] == "search", "status"] = "finished"
    assert not any(s.startswith("Early stopping warning") for s in conclude(t, _search_epoch_1(t, e, slope),
                                                                           CIFAR).claims), "nothing was cut"


def _with_original(t: pd.DataFrame, selu_ahead: float, rng: int = 0) -> pd.DataFrame:
    """``t`` plus one run per arm and replicate at the original configuration (stage ``original``,
    lr 1e-3, 20 epochs): selu ``selu_ahead`` ahead, with run noise shared within a replicate's pair."""
    g = np.random.default_rng(rng)
    first = t[t["stage"] == "confirm"].drop_duplicates(["arm", "replicate"])
    noise = dict(zip(sorted(first["replicate"].unique()), g.normal(0, 0.01, first["replicate"].nunique())))
    base = 0.60 + first["replicate"].map(noise) + g.normal(0, 0.002, len(first))
    o = first.assign(stage="original", lr=1e-3, epochs=20.0, source_trial="", seed=first["seed"] + 7000,
                     trial_id=first["trial_id"].astype(str) + "-original",
                     final_test_accuracy=base + np.where(first["arm"] == "selu", selu_ahead, 0.0))
    return pd.concat([t, o], ignore_index=True)


def test_the_original_configuration_is_a_secondary_estimand_that_never_decides_the_primary():
    t, e = _sweep(5, 0.0, rng=6)
    plain = conclude(t, e, CIFAR)
    c = conclude(_with_original(t, selu_ahead=0.03), e, CIFAR)
    oc = c.record["original_configuration"]
    # tested apart: every run counted, paired by replicate, in the secondary family (Holm), its level printed
    assert oc["n"] == 5 and oc["difference"] == pytest.approx(-0.03, abs=0.003) and oc["arm_a"] == "relu"
    assert oc["counting"].startswith("every run") and oc["ci"][1] < 0 and oc["significant"] is True
    assert oc["exploratory"] is True  # the primary (tuned arms, no effect here) is not rejected
    row = next(r for r in c.record["comparisons"] if r["stage"] == "original")
    assert row["family"] == "secondary" and row["level"] == "activation"
    line = next(s for s in c.claims if s.startswith("Original configuration"))
    assert line.startswith(
        "Original configuration (lr 0.001, 20 epochs, no search) (secondary, exploratory): selu scores "
        "higher than relu on test accuracy by 2.9 points (99.4% CI 2.2 to 3.6; paired t-test on replicate "
        "means, every run counted, R=5 replicates")
    assert "secondary tests" in line and "P(selu beats relu at the original configuration) = 1.00" in line
    assert "tuned" not in line
    # the primary, the look and the decision are those of the tuned runs alone
    for key in ("decision", "winner", "difference", "p_value", "replicates_run", "seeds", "ci"):
        assert c.record[key] == plain.record[key], key
    assert c.record["secondary_tests"] == plain.record["secondary_tests"] + 1
    assert plain.record["original_configuration"] is None
    assert not any(s.startswith("Original configuration") for s in plain.claims)


def test_a_look_the_budget_made_final_is_tested_at_the_alpha_left_and_says_so():
    """The report reads final-look.json (meta "final_look"): R = 3 of a 3..8 plan, the last look the
    budget allowed, is tested at full alpha and the answer says why; a damaged record is ignored
    with a note, and the look keeps the plan's level."""
    t, e = _sweep(3, 2.0, rng=11, seed_sd=0.002, split_sd=0.002, curvature_lr=0.0, curvature_epochs=0.0)
    config = {"search": {"replicates": {"min": 3, "max": 8, "budget_minutes": 55}}}
    record = {"replicates": 3, "reason": "budget: ..."}
    cut = {"sim": {**CIFAR["sim"], "config": config, "final_look": record}}
    rec = conclude(t, e, cut).record
    assert rec["plan"] == {"min": 3, "max": 8, "final_look": 3}
    assert rec["boundary"]["nominal_alpha"] == 0.05 and rec["boundary"]["final_look"] == 3
    assert "look 1 of 6 planned, the last the budget allowed, R=3 replicate pairs" in rec["answer"]
    damaged = {"sim": {**cut["sim"], "final_look": {"replicates": "three"}}}
    c = conclude(t, e, damaged)
    assert c.record["boundary"]["nominal_alpha"] == pytest.approx(0.0145, abs=5e-4)
    assert c.record["plan"]["final_look"] is None
    assert any("ignored: every look is tested at the plan's level" in n for n in c.claims)
