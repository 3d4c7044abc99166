"""sweeps/prepare.py and the CLI's use of it: every check runs once per invocation."""

from __future__ import annotations

import pytest

from sweeps import prepare, run, runner
from sweeps.config import CONFIG_DIR, load_config
from sweeps.experiment import Experiment


def test_the_cli_validates_once_builds_one_experiment_and_hands_both_to_the_runner(monkeypatch, tmp_path):
    calls = {"validate": 0, "experiments": 0}
    real_validate, real_experiment = prepare.validate, Experiment

    def validate(cfg, options, exp):
        calls["validate"] += 1
        real_validate(cfg, options, exp)

    class Counted(real_experiment):
        def __init__(self, *args, **kwargs):
            calls["experiments"] += 1
            super().__init__(*args, **kwargs)

    seen = {}

    def run_sweep(cfg, options, *, exp, validated):
        seen.update(exp=exp, validated=validated)
        return exp.path

    monkeypatch.setattr(prepare, "validate", validate)
    monkeypatch.setattr("sweeps.experiment.Experiment", Counted)
    monkeypatch.setattr(runner, "run_sweep", run_sweep)
    rc = run.main(["--config", str(CONFIG_DIR / "smoke.yaml"), "--storage-path", str(tmp_path),
                   "--name", "once"])
    assert rc == 0
    assert calls == {"validate": 1, "experiments": 1}
    assert isinstance(seen["exp"], Counted) and seen["validated"] is True


def test_run_sweep_does_not_validate_again_when_told_the_caller_did(monkeypatch, tmp_path):
    cfg = load_config(CONFIG_DIR / "smoke.yaml", [f"storage_path={tmp_path}"])

    def validate(*args):
        raise AssertionError("validated twice")

    class Stop(Exception):
        pass

    def load_data(cfg):
        raise Stop

    monkeypatch.setattr(runner, "validate", validate)
    monkeypatch.setattr(runner, "load_data", load_data)
    with pytest.raises(Stop):
        runner.run_sweep(cfg, exp=Experiment(cfg.storage_path, cfg.name), validated=True)
    with pytest.raises(AssertionError, match="validated twice"):
        runner.run_sweep(cfg)


def test_the_directory_check_under_the_lock_does_not_connect_to_the_database_again(monkeypatch, tmp_path):
    cfg = load_config(CONFIG_DIR / "smoke.yaml", [f"storage_path={tmp_path}"])
    exp = Experiment(cfg.storage_path, cfg.name)
    exp.create()
    connected = []
    monkeypatch.setattr(prepare, "check_study_database", lambda url: connected.append(url))
    options = prepare.RunOptions(resume=True)
    prepare.check_directory(cfg, options, exp)
    assert len(connected) == 1
    prepare.check_directory(cfg, options, exp, database=False)
    assert len(connected) == 1


@pytest.mark.parametrize("text, why", [
    ("{not json", "invalid JSON"),
    ('{"replicates": "3", "reason": "budget"}', "'replicates' must be an integer"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_resume_refuses_a_damaged_final_look_record_before_anything_starts(monkeypatch, tmp_path, capsys,
                                                                          text, why):
    """final-look.json says which look the budget made the last (it sets that look's level): a
    damaged one stops --resume at validation, one line, exit 2, the file left as it was."""
    cfg = load_config(CONFIG_DIR / "smoke.yaml", [f"storage_path={tmp_path}"])
    exp = Experiment(cfg.storage_path, cfg.name)
    exp.create()
    exp.write_text("config.yaml", prepare._saved_config(cfg))
    (tmp_path / cfg.name / "final-look.json").write_text(text)
    monkeypatch.setattr(runner, "run_sweep", lambda *a, **k: pytest.fail("the sweep started"))
    monkeypatch.setattr(prepare, "check_study_database", lambda url: None)
    rc = run.main(["--storage-path", str(tmp_path), "--name", cfg.name, "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "final-look.json" in err and why in err and "restore it, or start a new sweep with --name" in err
    assert (tmp_path / cfg.name / "final-look.json").read_text() == text
