"""analysis/load.py on a real (small) Tune sweep, on damaged copies of it, and on bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.load import STATUSES, AnalysisError, load_results, load_studies


def _snapshot(path: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in path.rglob("*") if p.is_file()}


def test_real_sweep_loads_into_trial_and_epoch_tables(smoke_sweep):
    _, exp, _ = smoke_sweep
    res = load_results([exp])
    t, e = res.trials, res.epochs
    assert t.groupby("stage").size().to_dict() == {"search": 6, "confirm": 4}
    assert set(t["status"]) <= set(STATUSES) and (t["status"] == "finished").all()
    assert {"arm", "lr", "epochs", "seed", "final_val_accuracy", "best_val_accuracy", "final_gap",
            "val_loss_rise", "final_test_accuracy"} <= set(t.columns)
    assert len(e) == t["n_epochs"].sum() == 20  # 10 trials x 2 epochs, none duplicated by the retry
    assert not e.duplicated(["stage", "trial_id", "epoch"]).any()
    assert t[t["stage"] == "confirm"]["final_test_accuracy"].between(0, 1).all()
    studies = load_studies(res)
    assert set(studies) == {"smoke-relu", "smoke-selu"}


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
    assert (res.trials["stage"] == "search").sum() == 5
    assert any("params.json missing" in n for n in res.notes)


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


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "analysis", str(tmp_path / "nope")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "no such directory" in proc.stderr
    assert not (tmp_path / "nope").exists()
