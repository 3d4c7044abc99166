"""sweeps/run.py as a user runs it: bad input exits 2 with one line, no traceback, no writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted((Path(__file__).parent / "bad_configs").glob("*.yaml"))
SMOKE = ROOT / "sweeps" / "configs" / "smoke.yaml"


def run_cli(*args, timeout=120):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, str(ROOT / "sweeps" / "run.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def assert_one_line_error(proc, fragment: str):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_bad_config_exits_2_with_one_line_and_writes_nothing(path, tmp_path):
    proc = run_cli("--config", path, "--storage-path", tmp_path / "results")
    expected = path.read_text().splitlines()[0].removeprefix("# expect:").strip()
    assert_one_line_error(proc, expected)
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--config", "/nonexistent.yaml"], "no such file"),
    (["--bogus-flag"], "unrecognized arguments"),
    (["--set", "search.num_samples"], "expected KEY=VALUE"),
    (["--set", "search.num_samples=-1"], "must be at least 1"),
    (["--data-dir", "/nonexistent/cifar"], "does not exist"),
    (["--config", SMOKE, "--resume", "--overwrite"], "contradict"),
    (["--config", SMOKE, "--skip-confirm", "--confirm-only"], "contradict"),
    (["--config", SMOKE, "--name", "never-ran", "--resume"], "no sweep named 'never-ran'"),
])
def test_bad_command_lines_exit_2(args, fragment, tmp_path):
    proc = run_cli(*args, "--storage-path", tmp_path / "results")
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "results").exists()


def test_existing_sweep_is_not_overwritten_without_a_flag(tmp_path):
    exp = tmp_path / "results" / "smoke"
    exp.mkdir(parents=True)
    (exp / "config.yaml").write_text("precious: true\n")
    proc = run_cli("--config", SMOKE, "--storage-path", tmp_path / "results")
    assert_one_line_error(proc, "--resume")
    assert (exp / "config.yaml").read_text() == "precious: true\n"


def test_gpu_request_on_a_gpu_less_cluster_fails_fast(tmp_path):
    proc = run_cli("--config", SMOKE, "--storage-path", tmp_path / "results",
                   "--set", "resources.gpus_per_trial=1")
    assert_one_line_error(proc, "1 GPU")
    assert not (tmp_path / "results").exists()


def test_help_documents_every_flag():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for flag in ("--config", "--name", "--storage-path", "--data-dir", "--address", "--resume",
                 "--overwrite", "--set", "--skip-confirm", "--confirm-only", "--optuna-storage"):
        assert flag in proc.stdout


def test_skip_confirm_without_a_search_is_refused(tmp_path):
    proc = run_cli("--config", ROOT / "sweeps" / "configs" / "blog.yaml", "--skip-confirm",
                   "--storage-path", tmp_path / "results")
    assert_one_line_error(proc, "nothing to run")


def test_joint_search_then_confirm_only_continues_the_same_sweep(tmp_path):
    common = ["--config", SMOKE, "--storage-path", tmp_path, "--name", "joint",
              "--set", "search.mode=joint", "--set", "search.num_samples=3",
              "--set", "search.space.epochs.high=1", "--set", "confirm.seeds=1"]
    first = run_cli(*common, "--skip-confirm", "--no-report", timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    exp = tmp_path / "joint"
    assert (exp / "search").is_dir() and not (exp / "confirm").exists()
    # Seeded TPE (search.seed 0) samples both arms within its 3 random start-up trials.
    second = run_cli("--name", "joint", "--storage-path", tmp_path, "--confirm-only", timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    from analysis.load import load_results

    trials = load_results([exp]).trials
    assert (trials["stage"] == "search").sum() == 3
    assert trials[trials["stage"] == "confirm"].groupby("arm").size().to_dict() == {"relu": 1, "selu": 1}
    import optuna

    storage = optuna.storages.RDBStorage(f"sqlite:///{exp}/optuna.db")
    assert [s.study_name for s in optuna.study.get_all_study_summaries(storage)] == ["joint-joint"]


def test_resume_with_a_corrupt_saved_config_is_refused(tmp_path):
    exp = tmp_path / "results" / "broken"
    exp.mkdir(parents=True)
    (exp / "config.yaml").write_text("name: [unclosed\n")
    proc = run_cli("--name", "broken", "--storage-path", tmp_path / "results", "--resume")
    assert_one_line_error(proc, "not a sweep config")
    assert (exp / "config.yaml").read_text() == "name: [unclosed\n"
