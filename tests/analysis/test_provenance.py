"""analysis/provenance.py: what was run, stated from the experiment's own records."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.contract import MARGIN_POINTS
from analysis.provenance import data_sentence, describe_data, equivalence_margin, run_summary, sweep_settings


def test_synthetic_and_unofficial_data_are_named_as_such():
    meta = {"a": {"data": {"source": "synthetic", "train": 600, "val": 100, "test": 100, "digest": "x",
                           "official": False, "warnings": []}},
            "b": {"data": {"source": "cifar10", "train": 45000, "val": 5000, "test": 10000,
                           "digest": "ff" * 16, "official": False,
                           "warnings": ["3 corrupt images replaced"]}}}
    info = describe_data(meta)
    assert info["source"] == "mixed" and info["synthetic"] and info["official"] is False
    text = data_sentence(info)
    assert "`a`: SYNTHETIC images (600 train / 100 val / 100 test images)" in text
    assert "`b`: CIFAR-10 from a copy that does NOT match the official release" in text
    assert "say nothing about SELU or ReLU on CIFAR-10" in text and "3 corrupt images replaced" in text


def test_config_source_is_used_when_data_json_is_missing():
    info = describe_data({"old": {"config": {"data": {"source": "cifar10"}}, "data": None}})
    assert info["source"] == "cifar10" and info["official"] is None
    assert "not checked against the official release" in data_sentence(info)


def test_equivalence_margin_takes_the_strictest_valid_value():
    meta = {"a": {"config": {"analysis": {"equivalence_margin": 2.0}}},
            "b": {"config": {"analysis": {"equivalence_margin": 0.5}}},
            "c": {"config": {"analysis": {"equivalence_margin": -1}}}}
    margin, notes = equivalence_margin(meta)
    assert margin == 0.5 and len(notes) == 1 and "`c`" in notes[0]
    assert equivalence_margin({}) == (MARGIN_POINTS, [])


def test_the_planned_replicates_read_as_a_plan_not_as_the_saved_mapping():
    meta = {"seq": {"config": {"search": {"replicates": {"min": 3, "max": 8, "budget_minutes": 55}}}},
            "fixed": {"config": {"search": {"replicates": 5}}},
            "one": {"config": {"search": {"replicates": {"min": 4}}}}}
    settings = sweep_settings(meta)
    assert settings["seq"]["replicates"] == "3..8 sequential, budget 55 min"
    assert settings["fixed"]["replicates"] == 5 and settings["one"]["replicates"] == "4"


def test_run_summary_counts_replicates_trials_epochs_and_compute():
    trials = pd.DataFrame({
        "arm": ["relu"] * 4 + ["selu"] * 2, "activation": ["relu"] * 4 + ["selu"] * 2,
        "kernel_initializer": ["auto"] * 4 + ["he_normal"] * 2, "replicate": [0, 0, 1, 0, 0, 0],
        "stage": ["search", "search", "search", "confirm", "search", "confirm"],
        "trial_id": list("abcdef")})
    epochs = pd.DataFrame({"arm": ["relu"] * 3 + ["selu"], "epoch_seconds": [1800.0, 1800.0, np.nan, 36.0]})
    s = run_summary(trials, epochs).set_index("arm")
    assert s.loc["relu", "replicates"] == 2 and s.loc["relu", "search_trials"] == 3
    assert s.loc["relu", "search_trials_per_replicate"] == "1-2" and s.loc["relu", "epochs_trained"] == 3
    assert s.loc["relu", "compute_hours"] == 1.0
    assert s.loc["relu", "kernel_initializer"] == "auto = he_normal"
    assert s.loc["selu", "kernel_initializer"] == "he_normal"
    assert s.loc["selu", "confirm_seeds_per_replicate"] == "1"


def test_reproduce_info_gives_the_commands_the_config_hash_and_versions(tmp_path):
    import hashlib
    import json

    from analysis.provenance import reproduce_info

    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "config.yaml").write_text("name: exp\n")
    (exp / ".selu-sweep.json").write_text(json.dumps({"tool": "selu-sweep", "version": "0.1.0"}))
    (exp / "runs.jsonl").write_text(
        json.dumps({"mode": "start", "time": "t0", "command": "sweeps/run.py --name exp"}) + "\n{broken\n"
        + json.dumps({"mode": "resume", "time": "t1", "command": "sweeps/run.py --name exp --resume"}) + "\n")
    (info,) = reproduce_info({"exp": exp})
    assert info["config_sha256"] == hashlib.sha256(b"name: exp\n").hexdigest()
    assert info["commands"] == ["sweeps/run.py --name exp  # start t0",
                                "sweeps/run.py --name exp --resume  # resume t1"]
    assert info["created_with"] == "0.1.0" and info["installed"]["optuna"] != "not installed"
    (bare,) = reproduce_info({"bare": tmp_path / "missing"})
    assert bare["commands"] == [] and bare["config_sha256"] is None
