"""analysis/report.py: every report file is written; report.md, report.html and verdict.json say
the same thing; the report says what was run; the CLI works."""

from __future__ import annotations

import html as html_lib
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.contract import MARGIN_POINTS
from analysis.load import Results
from analysis.report import build_report, save_report, write_report
from benchmarks.simulate import simulate

META = {"sim": {"config": {"search": {"replicates": 5, "num_samples": 12}, "confirm": {"seeds": 5},
                           "analysis": {"equivalence_margin": 1.0}, "data": {"source": "synthetic"}},
                "data": {"source": "synthetic", "train": 500, "val": 100, "test": 100, "digest": "abc123",
                         "official": False, "warnings": []}}}


def _results(replicates: int = 5, effect: float = 5.0, meta: dict | None = META) -> Results:
    t, e = simulate(1, replicates, effect_points=effect, rng=3, derive_metrics=True)
    res = Results(trials=t.drop(columns="sim"), epochs=e.drop(columns="sim"), notes=[],
                  experiments={"sim": Path("/tmp/sim")})
    res.meta = meta or {}
    return res


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, save_report(_results(), out)


def test_md_html_and_verdict_json_carry_the_same_claims(written):
    out, paths = written
    record = json.loads(Path(paths["verdict_json"]).read_text())
    md = Path(paths["md"]).read_text()
    page = html_lib.unescape(Path(paths["html"]).read_text())
    verdict_md = md.split("## Verdict\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert verdict_md == [f"- {c}" for c in record["claims"]]
    text = re.sub(r"<[^>]+>", "", page)  # the page's text: inline code is <code>, not backticks
    for claim in record["claims"]:
        assert claim.replace("`", "") in text
    assert record["winner"] == "selu" and "selu beats relu" in md
    # the answer first: the same sentence and figure in report.md and report.html, then the MDE
    answer = md.split("## Answer\n\n", 1)[1].split("\n", 1)[0]
    assert answer == record["answer"] and answer.replace("`", "") in text
    assert md.index("## Answer") < md.index("![replicate_differences](figures/replicate_differences.png)") \
        < md.index("## Verdict")
    assert "Detectable: with R=5 replicate pairs" in md.split("## Verdict", 1)[0]
    assert record["decision"] == "winner" and record["replicates_run"] == 5 and record["looks"] == 1


def test_report_says_what_was_run(written):
    out, paths = written
    md = Path(paths["md"]).read_text()
    assert "## What was run" in md
    assert "| sim | synthetic | False | 500 | 100 | 100 | abc123 | 5 | 12 | 5 |" in md
    assert "auto = lecun_normal" in md and "auto = he_normal" in md
    assert "compute_hours" in md and "epochs_trained" in md
    assert "Expected best validation accuracy" in md and (out / "figures" / "expected_best.png").exists()
    for name in ("replicate_means", "overfitting_by_epoch", "learning_curves"):
        assert (out / "figures" / f"{name}.png").exists()


def test_report_keeps_the_two_levels_apart(written):
    _, paths = written
    md = Path(paths["md"]).read_text()
    activation = md.split("## Activation level (unit: replicate)", 1)[1].split("## Configuration level", 1)[0]
    configuration = md.split("## Configuration level (unit: seed, within one replicate)", 1)[1]
    assert "paired t-test on replicate means" in activation and "Welch" not in activation
    assert "Welch t-test on seeds" in configuration and "selu (lr " in configuration


def test_tests_table_is_written_with_holm_columns(written):
    _, paths = written
    tests = pd.read_csv(paths["tests_csv"])
    cols = {"level", "p_value", "p_holm", "conf_level", "ci_low", "ci_high", "significant"}
    assert cols <= set(tests.columns)


def test_per_arm_accuracy_intervals_stay_within_zero_and_one():
    rep = build_report(_results(replicates=1, effect=0.0))
    acc = rep.confirm_summary[rep.confirm_summary["metric"].str.contains("accuracy")]
    assert ((acc["ci_low"] >= 0) & (acc["ci_high"] <= 1)).all()


def test_missing_metadata_is_a_note_not_a_guess():
    rep = build_report(_results(meta=None))
    assert rep.record["data_source"] == "unknown"
    assert any("No experiment metadata" in n for n in rep.notes)


def test_bad_equivalence_margin_falls_back_with_a_note():
    meta = json.loads(json.dumps(META))
    meta["sim"]["config"]["analysis"]["equivalence_margin"] = "wide"
    rep = build_report(_results(meta=meta))
    assert rep.margin_points == MARGIN_POINTS and any("equivalence_margin='wide'" in n for n in rep.notes)


def test_studies_without_a_parameter_importance_are_named_in_a_note():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = {}
    for name, completed in (("s-relu-r0", 4), ("s-selu-r0", 1)):
        study = optuna.create_study(study_name=name, direction="maximize",
                                    sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-2, log=True) + t.suggest_int("epochs", 3, 30),
                       n_trials=completed)
        pruned = study.ask()
        pruned.suggest_float("lr", 1e-4, 1e-2, log=True)
        pruned.suggest_int("epochs", 3, 30)
        study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
        studies[name] = study
    rep = build_report(_results(), studies)
    assert set(rep.importances["study"]) == {"s-relu-r0"}
    (note,) = [n for n in rep.notes if "Parameter importance" in n]
    assert "1 of 2 studies (s-selu-r0)" in note


def test_report_files_exist_and_html_embeds_its_images(smoke_sweep, tmp_path):
    _, exp, _ = smoke_sweep
    out = tmp_path / "report"
    written = write_report([exp], out)
    for name in ("report.md", "report.html", "verdict.json", "trials.csv", "epochs.csv", "tests.csv",
                 "trials.parquet", "epochs.parquet"):
        assert (out / name).stat().st_size > 0, name
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert {"learning_curves.png", "overfitting.png", "lr_sensitivity.png",
            "search_progress.png"} <= set(figures)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(figures)
    assert not re.search(r'src="(?!data:)', html), "every image is embedded, none linked"
    md = (out / "report.md").read_text()
    record = json.loads((out / "verdict.json").read_text())
    # two replicates, two seeds per arm: no activation claim, and no seed-level test either
    assert record["winner"] is None and record["tested"] is False
    assert "at least 3 needed" in record["reason"] and "at least 3 needed" in md
    trials = pd.read_csv(written["trials_csv"])
    assert len(trials) == 16 and len(pd.read_parquet(out / "epochs.parquet")) == 32


def test_cli_writes_the_report(smoke_sweep, tmp_path):
    _, exp, _ = smoke_sweep
    proc = subprocess.run([sys.executable, "-m", "analysis", str(exp), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r" / "report.html").exists() and (tmp_path / "r" / "verdict.json").exists()


def test_the_activation_table_marks_the_original_configurations_row():
    from analysis.claims import conclude
    from analysis.decision import ACTIVATION
    from analysis.report import _tests_table
    from tests.analysis.test_claims import CIFAR, _sweep, _with_original

    t, e = _sweep(5, 0.0, rng=6)
    table = _tests_table(conclude(_with_original(t, selu_ahead=0.03), e, CIFAR).tests, ACTIVATION)
    marked = table[table["metric"].str.endswith("(at the original configuration, no search)")]
    assert len(marked) == 1 and marked.iloc[0]["family"] == "secondary, exploratory"
    assert marked.iloc[0]["counting"].startswith("every run") and marked.iloc[0]["verdict"] == "significant"
