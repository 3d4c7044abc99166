"""analysis/completeness.py: what a sweep's saved config planned against the trials it holds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.completeness import completeness, first_line
from analysis.load import Results, load_results
from tests.analysis.handmade import make_experiment

ARMS = ("relu", "selu")


def _config(replicates=2, num_samples=2, seeds=2, mode="stratified") -> dict:
    return {"name": "x", "arms": [{"name": a, "activation": a} for a in ARMS],
            "search": {"num_samples": num_samples, "replicates": replicates, "mode": mode},
            "confirm": {"seeds": seeds}}


def _trials(replicates=2, num_samples=2, seeds=2, drop=(), status=None) -> pd.DataFrame:
    rows = []
    for r in range(replicates):
        for arm in ARMS:
            for i in range(num_samples):
                rows.append({"experiment": "x", "stage": "search", "trial_id": f"s-{arm}-{r}-{i}", "arm": arm,
                             "replicate": r, "status": "stopped_early" if i else "finished"})
            for k in range(seeds):
                rows.append({"experiment": "x", "stage": "confirm", "trial_id": f"c-{arm}-{r}-{k}",
                             "arm": arm, "replicate": r, "status": "finished"})
    df = pd.DataFrame(rows)
    df = df[~df["trial_id"].isin(drop)].reset_index(drop=True)
    for tid, s in (status or {}).items():
        df.loc[df["trial_id"] == tid, "status"] = s
    return df


def _results(trials: pd.DataFrame, config: dict | None) -> Results:
    return Results(trials=trials, epochs=pd.DataFrame(), experiments={"x": Path("x")},
                   meta={"x": {"config": config, "data": None}})


def test_a_sweep_with_every_planned_trial_ended_is_complete():
    report = completeness(_results(_trials(), _config()))
    assert report == {"complete": True, "missing": []}
    assert first_line(report) is None


def test_an_interrupted_confirmation_names_the_missing_and_unfinished_trials():
    """The Ctrl-C case of issue 16: 2 of 8 confirmation trials done, the rest pending or cut short."""
    trials = _trials(drop=("c-selu-0-1", "c-relu-1-0", "c-relu-1-1", "c-selu-1-0", "c-selu-1-1"),
                     status={"c-selu-0-0": "incomplete"})
    report = completeness(_results(trials, _config()))
    assert report["complete"] is False
    missing = {(m["stage"], m["arm"], m["replicate"]): m for m in report["missing"]}
    assert set(missing) == {("confirm", "selu", 0), ("confirm", "relu", 1), ("confirm", "selu", 1)}
    assert missing[("confirm", "selu", 0)]["missing"] == 2
    assert missing[("confirm", "selu", 0)]["trials"] == ["c-selu-0-0 (incomplete)"]
    assert missing[("confirm", "relu", 1)] == {"stage": "confirm", "arm": "relu", "replicate": 1,
                                               "expected": 2, "done": 0, "missing": 2, "trials": []}
    assert first_line(report).startswith("INCOMPLETE") and "6 planned trial(s)" in first_line(report)


def test_a_failed_confirmation_trial_is_missing_but_a_failed_search_trial_has_ended():
    trials = _trials(status={"c-relu-0-1": "failed", "s-relu-0-1": "failed", "c-selu-0-0": "diverged"})
    report = completeness(_results(trials, _config()))
    assert [(m["stage"], m["arm"], m["replicate"], m["trials"]) for m in report["missing"]] == \
        [("confirm", "relu", 0, ["c-relu-0-1 (failed)"])]


def test_an_unfinished_search_trial_is_missing():
    report = completeness(_results(_trials(status={"s-selu-1-0": "incomplete"}), _config()))
    assert [(m["stage"], m["arm"], m["replicate"]) for m in report["missing"]] == [("search", "selu", 1)]


def test_a_sequential_plan_is_complete_at_the_replicates_it_reached_and_at_least_min():
    plan = {"min": 3, "max": 8}
    assert completeness(_results(_trials(replicates=5), _config(replicates=plan)))["complete"]
    # Stopped (interrupted) before the third replicate: min is still owed.
    report = completeness(_results(_trials(replicates=2), _config(replicates=plan)))
    assert {(m["stage"], m["replicate"]) for m in report["missing"]} == {("search", 2), ("confirm", 2)}
    # A replicate started but unfinished counts as expected.
    fourth = _trials(replicates=4).query("replicate == 3 and stage == 'search'").head(1)
    started = pd.concat([_trials(replicates=3), fourth], ignore_index=True)
    report = completeness(_results(started, _config(replicates=plan)))
    assert {(m["stage"], m["arm"], m["replicate"]) for m in report["missing"]} == \
        {("search", "relu", 3), ("search", "selu", 3), ("confirm", "relu", 3), ("confirm", "selu", 3)}


def test_a_joint_search_counts_trials_per_replicate_not_per_arm():
    """Joint mode: the sampler picks the arm, so only the count per replicate is planned."""
    trials = _trials()
    relu_only = trials[~((trials["stage"] == "search") & (trials["arm"] == "selu"))]  # TPE picked relu twice
    assert completeness(_results(relu_only, _config(num_samples=2, mode="joint")))["complete"]
    one_each = trials[~trials["trial_id"].str.match(r"s-.*-1$")]  # 1 relu + 1 selu trial per replicate
    assert completeness(_results(one_each, _config(num_samples=2, mode="joint")))["complete"]
    short = relu_only[relu_only["trial_id"] != "s-relu-1-1"]
    report = completeness(_results(short, _config(num_samples=2, mode="joint")))
    assert [(m["stage"], m["arm"], m["replicate"], m["missing"]) for m in report["missing"]] == \
        [("search", "*", 1, 1)]


def test_results_without_a_saved_config_cannot_be_called_complete():
    report = completeness(_results(_trials(), None))
    assert report["complete"] is False and "config.yaml" in report["missing"][0]["missing"]


def test_completeness_reads_a_real_loaded_experiment(tmp_path):
    """Through load_results: the handmade sweep (2 search trials per arm, one confirmation trial per
    arm in each of replicates 0..2); its config is set here to plan replicate 0 only."""
    exp = make_experiment(tmp_path, search_per_arm=2, replicates=3)
    results = load_results([exp])
    config = results.meta["exp"]["config"]
    config["search"] = {"num_samples": 2, "replicates": 1}
    config["confirm"] = {"seeds": 1}
    assert completeness(results)["complete"]
    config["confirm"] = {"seeds": 2}
    report = completeness(results)
    assert {(m["arm"], m["replicate"], m["missing"]) for m in report["missing"]} == \
        {("relu", 0, 1), ("selu", 0, 1)}


def test_runs_at_the_original_configuration_are_counted_apart_when_the_config_plans_them(tmp_path):
    """Through load_results: a run under confirm/ whose config names stage "original" is loaded as
    stage "original" (never as a confirmation seed), and confirm.original_seeds plans one per arm and
    replicate: the missing one is named under its own stage."""
    from tests.analysis.handmade import result_rows, write_state, write_trial

    exp = make_experiment(tmp_path, search_per_arm=2, replicates=1)
    config = {"arm": "relu", "activation": "relu", "lr": 1e-3, "epochs": 3, "batch_size": 100, "seed": 77,
              "stage": "original", "replicate": 0, "source_trial": "", "evaluate_test": True}
    tdir = write_trial(exp / "confirm", "cccc0000", config, result_rows("cccc0000", config, 3, quality=0.6,
                                                                        test=True, start=0.0))
    states = sorted((exp / "confirm").glob("experiment_state-*.json"))
    write_state(exp / "confirm", [(p.parent.name.split("_")[2], p.parent, "TERMINATED")
                                  for p in (exp / "confirm").glob("*/params.json")])
    assert len(states) == 1 and tdir.is_dir()
    results = load_results([exp])
    t = results.trials
    assert t.loc[t["trial_id"] == "cccc0000", "stage"].tolist() == ["original"]
    assert (t["stage"] == "confirm").sum() == 2 and (t["stage"] == "original").sum() == 1
    meta = results.meta["exp"]["config"]
    meta["search"] = {"num_samples": 2, "replicates": 1}
    meta["confirm"] = {"seeds": 1}
    assert completeness(results)["complete"]  # not planned: extra runs are not missing anything
    meta["confirm"] = {"seeds": 1, "original_seeds": 1}
    report = completeness(results)
    assert [(m["stage"], m["arm"], m["replicate"], m["missing"]) for m in report["missing"]] == \
        [("original", "selu", 0, 1)]
