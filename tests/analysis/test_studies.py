"""analysis/studies.py: the Optuna studies come from the sweep's own database, PostgreSQL included."""

from __future__ import annotations

import json

import yaml

from analysis._files import redact_text
from analysis.load import load_results
from analysis.studies import load_studies
from tests.analysis.handmade import make_experiment
from tests.sweeps.conftest import postgres  # noqa: F401  (the session's PostgreSQL server)


def _pg_sweep(tmp_path, url: str, exp_id: str = "abc123"):
    import optuna

    exp = make_experiment(tmp_path, "pgsweep", search_per_arm=2, replicates=3, epochs=2, optuna_db=False)
    (exp / ".selu-sweep.json").write_text(json.dumps({"tool": "selu-sweep", "name": "pgsweep",
                                                      "experiment_id": exp_id}))
    raw = yaml.safe_load((exp / "config.yaml").read_text())
    raw["search"] = {"optuna_storage": redact_text(url)}  # as the sweep saves it
    (exp / "config.yaml").write_text(yaml.safe_dump(raw))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in (f"pgsweep-{exp_id}-selu-r0", f"pgsweep-{exp_id}-relu-r0", "pgsweep-otherid-selu-r0"):
        study = optuna.create_study(study_name=name, storage=url, direction="maximize", load_if_exists=True)
        study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-2, log=True), n_trials=3)
    return exp


def test_studies_are_read_from_the_sweeps_postgresql_with_the_environments_password(
        postgres, tmp_path, monkeypatch):  # noqa: F811
    exp = _pg_sweep(tmp_path, postgres.url())
    assert postgres.password not in (exp / "config.yaml").read_text()
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    results = load_results([exp])
    studies = load_studies(results)
    assert sorted(studies) == ["pgsweep-abc123-relu-r0", "pgsweep-abc123-selu-r0"]  # its own only
    assert all(len(s.trials) == 3 for s in studies.values())


def test_without_the_password_the_report_says_how_to_give_it(postgres, tmp_path, monkeypatch):  # noqa: F811
    exp = _pg_sweep(tmp_path, postgres.url())
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    results = load_results([exp])
    assert load_studies(results) == {}
    assert any("set PGPASSWORD" in n for n in results.notes)
    studies = load_studies(results, optuna_storage=postgres.url())  # python -m analysis --optuna-storage
    assert len(studies) == 2
    assert not any(postgres.password in n for n in results.notes)


def test_a_wrong_password_is_a_note_without_the_password(postgres, tmp_path, monkeypatch):  # noqa: F811
    exp = _pg_sweep(tmp_path, postgres.url())
    results = load_results([exp])
    assert load_studies(results, optuna_storage=postgres.url(password="wrong-pw-81")) == {}
    note = next(n for n in results.notes if "could not be read" in n)
    assert "wrong-pw-81" not in note and postgres.password not in note
