"""analysis/load.py on a real (small) Tune sweep, on damaged copies of it, on handmade experiments
(the data contract), and on bad input. The CLI's bad-input corpus is in test_main.py."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis.contract import EPOCH_COLUMNS, STATUSES
from analysis.load import AnalysisError, load_results
from analysis.studies import load_studies
from tests.analysis.handmade import T0, make_experiment, result_rows, write_state, write_trial


def _snapshot(path: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in path.rglob("*") if p.is_file()}


def test_real_sweep_loads_into_trial_and_epoch_tables(smoke_sweep):
    _, exp, _ = smoke_sweep
    res = load_results([exp])
    t, e = res.trials, res.epochs
    assert t.groupby("stage").size().to_dict() == {"search": 8, "confirm": 8}  # 2 arms x 2 replicates x 2
    assert set(t["status"]) <= set(STATUSES) and (t["status"] == "finished").all()
    assert {"arm", "lr", "epochs", "seed", "final_val_accuracy", "best_val_accuracy", "final_gap",
            "val_loss_rise", "final_test_accuracy"} <= set(t.columns)
    assert len(e) == t["n_epochs"].sum() == 32  # 16 trials x 2 epochs, none duplicated by the retries
    assert not e.duplicated(["stage", "trial_id", "epoch"]).any()
    assert t[t["stage"] == "confirm"]["final_test_accuracy"].between(0, 1).all()
    # the columns the statistics rely on, as the real trainable and runner write them
    search_ids = set(t.loc[t["stage"] == "search", "trial_id"])
    assert set(t.loc[t["stage"] == "confirm", "source_trial"]) <= search_ids
    assert t.loc[t["stage"] == "search", "source_trial"].isna().all()
    assert set(t["replicate"]) == {0, 1} and t["replicate"].dtype.kind == "i"
    first_ts = e.groupby("trial_id")["timestamp"].min()
    assert (t["start_time"] < t["trial_id"].map(first_ts)).all()  # started before its first report
    assert (t["start_time"] > first_ts.min() - 3600).all()
    assert {"replicate", *EPOCH_COLUMNS} <= set(e.columns)
    assert res.meta[exp.name]["config"]["name"] == exp.name
    assert res.meta[exp.name]["data"]["source"] == "synthetic"
    studies = load_studies(res)
    exp_id = json.loads((exp / ".selu-sweep.json").read_text())["experiment_id"]
    assert set(studies) == {f"smoke-{exp_id}-{a}-r{r}" for a in ("relu", "selu") for r in (0, 1)}


def test_loading_only_reads(smoke_sweep, tmp_path):
    _, exp, _ = smoke_sweep
    before = _snapshot(exp)
    res = load_results([exp])
    load_studies(res)
    assert _snapshot(exp) == before


@pytest.fixture
def copy_of_sweep(smoke_sweep, tmp_path) -> Path:
    _, exp, _ = smoke_sweep
    dest = tmp_path / exp.name
    shutil.copytree(exp, dest, ignore=shutil.ignore_patterns("report"))
    return dest


def test_partial_last_line_is_skipped_and_reported(copy_of_sweep):
    result = next((copy_of_sweep / "confirm").glob("*/result.json"))
    text = result.read_text()
    result.write_text(text[: len(text) - 40])  # a write cut short by a crash
    res = load_results([copy_of_sweep])
    trial = res.trials[res.trials["trial_id"] == result.parent.name.split("_", 1)[1]].iloc[0]
    assert trial["n_epochs"] == 1 and trial["status"] == "incomplete"
    assert any("not valid JSON" in n for n in res.notes)


def test_missing_params_skips_the_trial_with_a_note(copy_of_sweep):
    params = next((copy_of_sweep / "search").glob("*/params.json"))
    params.unlink()
    res = load_results([copy_of_sweep])
    assert (res.trials["stage"] == "search").sum() == 7  # 8 in the fixture, one skipped
    assert any("params.json: missing; trial skipped" in n for n in res.notes)


def test_interrupted_sweep_without_confirmation_still_loads(copy_of_sweep):
    shutil.rmtree(copy_of_sweep / "confirm")
    res = load_results([copy_of_sweep])
    assert set(res.trials["stage"]) == {"search"}


def test_unfinished_trial_without_results_is_listed_as_incomplete(copy_of_sweep):
    trial = next((copy_of_sweep / "search").glob("*/result.json")).parent
    (trial / "result.json").unlink()
    (trial / "progress.csv").unlink()
    res = load_results([copy_of_sweep])
    row = res.trials[res.trials["trial_id"] == trial.name.split("_", 1)[1]].iloc[0]
    assert row["status"] == "incomplete" and row["n_epochs"] != row["n_epochs"]  # NaN: no epochs
    assert any("no results yet" in n for n in res.notes)


def test_two_experiments_are_compared_with_prefixed_arms(smoke_sweep, copy_of_sweep):
    _, exp, _ = smoke_sweep
    res = load_results([exp, copy_of_sweep])
    assert len(res.experiments) == 2
    assert res.trials["arm"].str.contains("/").all()


def _file(p: Path) -> Path:
    (p / "file.txt").write_text("x")
    return p / "file.txt"


def _not_experiment(p: Path) -> Path:
    (p / "notexp" / "stuff").mkdir(parents=True)
    return p / "notexp"


def _empty_experiment(p: Path) -> Path:
    (p / "empty" / "search").mkdir(parents=True)
    return p / "empty"


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "no such directory"),
    (_file, "not a directory"),
    (_not_experiment, "not an experiment"),
    (_empty_experiment, "no trials with results"),
])
def test_bad_input_is_one_clear_error(tmp_path, make, message):
    with pytest.raises(AnalysisError, match=message):
        load_results([make(tmp_path)])


# --- the data contract, on handmade experiments -------------------------------------------------------

@pytest.fixture(scope="module")
def handmade(tmp_path_factory) -> Path:
    return make_experiment(tmp_path_factory.mktemp("handmade"))


def test_meta_holds_the_experiments_config_and_data(handmade):
    res = load_results([handmade])
    assert set(res.meta) == {"exp"}
    assert res.meta["exp"]["config"]["confirm"] == {"seeds": 3}
    assert res.meta["exp"]["data"] == {"dataset": "synthetic", "train": 400, "val": 100, "test": 100}
    assert res.notes == []


def test_corrupt_or_absent_meta_is_none_with_a_note(handmade, tmp_path):
    exp = tmp_path / "exp"
    shutil.copytree(handmade, exp)
    (exp / "config.yaml").write_text("arms: [relu")
    (exp / "data.json").unlink()
    (exp / "final-look.json").write_text('{"replicates": 3')
    res = load_results([exp])
    assert res.meta["exp"] == {"config": None, "data": None, "final_look": None}
    assert [n for n in res.notes if "final-look.json" in n] == [
        f"{exp / 'final-look.json'}: not valid JSON object; ignored"]
    assert [n for n in res.notes if "config.yaml" in n] == [f"{exp / 'config.yaml'}: not valid YAML mapping; "
                                                            f"ignored"]
    assert not any("data.json" in n for n in res.notes)  # data.json is optional: absent is not damage
    (exp / "config.yaml").unlink()
    assert any("no config.yaml" in n for n in load_results([exp]).notes)


def test_trials_carry_replicate_source_trial_and_start_time(handmade):
    t = load_results([handmade]).trials.set_index("trial_id")
    confirm = t[t["stage"] == "confirm"]
    assert sorted(confirm["replicate"]) == [0, 0, 1, 1, 2, 2] and t["replicate"].dtype.kind == "i"
    assert (t.loc[t["stage"] == "search", "replicate"] == 0).all()
    for arm in ("relu", "selu"):  # each arm's replicates re-run the arm's best search trial
        source = confirm.loc[confirm["arm"] == arm, "source_trial"].unique()
        assert len(source) == 1 and t.loc[source[0], "arm"] == arm and t.loc[source[0], "stage"] == "search"
    assert t.loc[t["stage"] == "search", "source_trial"].isna().all()
    # the handmade trials start every 20 s from T0; start = first row's timestamp - time_total_s
    assert sorted(t["start_time"]) == [T0 + 20 * k for k in range(12)]


def test_epochs_carry_the_new_metric_columns_and_replicate(handmade):
    e = load_results([handmade]).epochs
    assert list(e.columns) == ["experiment", "stage", "trial_id", "arm", "replicate", *EPOCH_COLUMNS]
    assert {"train_eval_loss", "train_eval_accuracy", "best_epoch", "min_val_loss", "min_val_loss_epoch",
            "timestamp"} <= set(EPOCH_COLUMNS)
    confirm = e[e["stage"] == "confirm"]
    assert sorted(confirm["replicate"].unique()) == [0, 1, 2]
    assert e[list(EPOCH_COLUMNS)].notna().sum().to_dict() == {
        **{c: len(e) for c in EPOCH_COLUMNS}, "test_loss": len(confirm), "test_accuracy": len(confirm)}
    assert (e["train_eval_accuracy"] < e["train_accuracy"]).all()  # read as written, not recomputed


def _bare(tmp_path: Path, configs: list[dict], rows: list[list[dict]] | None = None) -> Path:
    """A bare Ray Tune experiment (no sweep layout): stage and replicate come from each config."""
    exp = tmp_path / "tune_exp"
    state = []
    for i, config in enumerate(configs):
        tid = f"cccc{i:04d}"
        r = rows[i] if rows else result_rows(tid, config, 2, quality=0.6, test=False, start=T0 + 100 * i)
        state.append((tid, write_trial(exp, tid, {"lr": 0.001, **config}, r), "TERMINATED"))
    write_state(exp, state)
    return exp


def test_any_ray_tune_experiment_with_the_contract_keys_loads(tmp_path):
    exp = _bare(tmp_path, [{"arm": "a", "stage": "confirm", "seed": 1, "replicate": 1},
                           {"arm": "b", "stage": "confirm", "seed": 2, "replicate": 2.0},
                           {"activation": "selu", "seed": 3},  # old style: activation names the arm
                           {"arm": "c", "stage": "search"}])
    res = load_results([exp])
    t = res.trials.set_index("trial_id")
    assert t["stage"].tolist() == ["confirm", "confirm", "search", "search"]
    assert t["arm"].tolist() == ["a", "b", "selu", "c"] and t["replicate"].tolist() == [1, 2, 0, 0]
    assert t["seed"].tolist()[:3] == [1, 2, 3] and math.isnan(t["seed"].iloc[3])
    assert (t["status"] == "finished").all()
    assert res.meta["tune_exp"] == {"config": None, "data": None, "final_look": None}
    assert any("1 trial(s) have no 'stage'" in n for n in res.notes)
    assert any("1 trial(s) have no 'seed'" in n for n in res.notes)
    assert not any("config.yaml" in n for n in res.notes)  # not a sweep: no config.yaml expected


def test_minimal_results_with_training_iteration_for_epoch(tmp_path):
    rows = [{"training_iteration": k, "val_accuracy": 0.5 + k / 10, "trial_id": "cccc0000"} for k in (1, 2)]
    res = load_results([_bare(tmp_path, [{"arm": "a", "stage": "search", "seed": 0}], [rows])])
    e = res.epochs
    assert e["epoch"].tolist() == [1.0, 2.0] and e["val_accuracy"].tolist() == [0.6, 0.7]
    assert e["train_eval_loss"].isna().all() and res.trials["start_time"].isna().all()
    assert res.trials["final_val_accuracy"].tolist() == [0.7]


def test_damaged_values_are_nan_with_one_note_per_trial(tmp_path):
    good = result_rows("cccc0000", {}, 3, quality=0.6, test=False, start=T0)
    bad = result_rows("cccc0001", {}, 3, quality=0.6, test=False, start=T0)
    bad[1].update(val_accuracy="0.5", val_loss=None, train_accuracy=75.0, diverged=False)
    bad[2].update(epoch="three", training_iteration=None)  # training_iteration would stand in for it
    exp = _bare(tmp_path, [{"arm": "a", "stage": "search", "seed": 0}, {"arm": "b", "stage": "search",
                                                                         "seed": 1}], [good, bad])
    res = load_results([exp])
    e = res.epochs.set_index(["trial_id", "epoch"])
    assert e.loc[("cccc0001", 2.0), ["val_accuracy", "val_loss", "train_accuracy", "diverged"]].tolist()[:3] \
        == pytest.approx([np.nan] * 3, nan_ok=True)
    assert e.loc[("cccc0001", 2.0), "diverged"] == 0.0  # a JSON bool is a number
    assert ("cccc0001", 3.0) not in e.index and len(e.loc["cccc0000"]) == 3
    notes = [n for n in res.notes if "result.json" in n]
    assert len(notes) == 1 and "cccc0001" in notes[0]
    assert "train_accuracy (not a number in [0, 1]), val_accuracy (not a number in [0, 1])" in notes[0]
    assert notes[0].endswith("set to NaN; 1 row(s) without a valid epoch dropped")
    t = res.trials.set_index("trial_id")
    assert t.loc["cccc0001", "status"] == "incomplete" and t.loc["cccc0000", "status"] == "finished"


def test_retried_epoch_counts_once_with_its_last_report(tmp_path):
    rows = result_rows("cccc0000", {}, 3, quality=0.6, test=False, start=T0)
    retry = dict(rows[1], val_accuracy=0.99)
    exp = _bare(tmp_path, [{"arm": "a", "stage": "search", "seed": 0}], [rows[:2] + [retry, rows[2]]])
    e = load_results([exp]).epochs
    assert e["epoch"].tolist() == [1.0, 2.0, 3.0] and e["val_accuracy"].iloc[1] == 0.99


def test_diverged_trial_keeps_its_infinite_loss(tmp_path):
    rows = result_rows("cccc0000", {}, 3, quality=0.6, test=False, start=T0)[:2]
    rows[1].update(train_loss=float("inf"), val_loss=float("nan"), diverged=1.0)
    exp = tmp_path / "x"
    exp.mkdir()
    tdir = write_trial(exp, "cccc0000", {"arm": "a", "stage": "search", "seed": 0, "lr": 1.0}, [])
    (tdir / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))  # Infinity, NaN
    res = load_results([exp])
    assert res.trials["status"].tolist() == ["diverged"] and math.isinf(res.epochs["train_loss"].iloc[1])
    assert res.notes == []


def test_sweep_whose_trials_have_not_reported_yet(handmade, tmp_path):
    exp = tmp_path / "exp"
    shutil.copytree(handmade, exp)
    for f in exp.glob("*/*/result.json"):
        f.unlink()
    res = load_results([exp])
    assert len(res.trials) == 12 and (res.trials["status"] == "incomplete").all()
    assert res.epochs.empty and list(res.epochs.columns)[:5] == ["experiment", "stage", "trial_id", "arm",
                                                                 "replicate"]
    assert res.trials["start_time"].isna().all()
    assert res.trials["final_val_accuracy"].dtype == float  # numeric even with no value at all
    assert sum("no results yet" in n for n in res.notes) == 12
