"""analysis/claims.py: the verdict's sentences and verdict.json say only what the tests support."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

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
                "p_a_better", "claims", "data_source", "equivalent"):
        assert key in rec, key
    assert rec["unit"] == "replicate" and rec["winner"] == "selu" and rec["data_source"] == "cifar10"
    assert rec["replicates"] == {"relu": 5, "selu": 5} and all(len(v) == 5 for v in rec["seeds"].values())
    assert rec["ci"][1] < 0 < 1 and 0 <= rec["p_a_better"] <= 1 and rec["equivalent"] is False
    assert rec["tests_in_family"] == len([c for c in rec["comparisons"] if c["p_value"] is not None])
    json.loads(json.dumps(rec, allow_nan=False))  # no NaN sneaks into the file


def test_winner_sentence_carries_n_interval_and_test():
    t, e = _sweep(5, 5.0)
    claims = conclude(t, e, CIFAR).claims
    line = next(c for c in claims if "beats relu" in c)
    assert line.startswith("Activation level: selu beats relu on test accuracy by ")
    assert "paired t-test on replicate means, R=5 replicates" in line and "CI " in line
    assert "Holm p=" in line and "P(a tuned selu beats a tuned relu)" in line
    assert claims[0].startswith("Data: `sim`: the official CIFAR-10 release (45,000 train")


def test_one_replicate_names_no_activation_winner_and_says_why():
    t, e = _sweep(1, 5.0)
    c = conclude(t, e, CIFAR)
    assert c.record["winner"] is None and c.record["ci"] is None and c.record["tested"] is False
    assert c.record["reason"] == "R=1 replicate per arm; at least 3 needed"
    line = next(s for s in c.claims if s.startswith("Activation level: the effect of relu vs selu"))
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
    assert winner.startswith("Activation level (on SYNTHETIC data): selu beats relu")
    assert c.record["data_source"] == "synthetic" and c.record["synthetic_data"] is True


def test_unknown_data_source_is_said_not_guessed():
    t, e = _sweep(1, 0.0)
    c = conclude(t, e, None)
    assert c.claims[0].startswith("Data: source not recorded") and c.record["data_source"] == "unknown"


def test_equivalence_is_stated_as_no_difference_larger_than_the_margin():
    t, e = _sweep(5, 0.0, rng=8, curvature_lr=0.0, curvature_epochs=0.0, seed_sd=0.001, split_sd=0.0)
    c = conclude(t, e, CIFAR, margin_points=1.0)
    line = next(s for s in c.claims if s.startswith("Activation level: no difference"))
    assert line.startswith("Activation level: no difference larger than 1 point in test accuracy between "
                           "relu and selu") and "within ±1" in line
    assert c.record["equivalent"] is True and c.record["winner"] is None


def test_divergence_is_reported_per_arm_with_n_and_left_out():
    t, e = _sweep(3, 0.0, p_diverge=0.2)
    c = conclude(t, e, CIFAR)
    line = next(s for s in c.claims if s.startswith("Diverged runs"))
    n = int((t[(t["arm"] == "relu") & (t["stage"] == "confirm")]["status"] == "diverged").sum())
    assert f"relu confirm {n} of 15" in line and "left out of every accuracy mean and test" in line
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
