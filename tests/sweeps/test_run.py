"""sweeps/run.py as a user runs it: bad input exits 2 with one line, no traceback, no writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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
    (["--config", SMOKE, "--overwrite", "--confirm-only"], "would delete the search it confirms"),
    (["--data-dir", ""], "data.data_dir: empty"),
    (["--config", SMOKE, "--set", "search.seed=-1"], "0 <= seed < 2**31"),
    (["--config", SMOKE, "--set", "search.seed=2147483648"], "0 <= seed < 2**31"),
    (["--config", SMOKE, "--set", "confirm.seed=-5"], "0 <= seed < 2**31"),
    (["--config", SMOKE, "--set", "train.lr=.inf"], "finite"),
    (["--config", SMOKE, "--set", "train.lr=.nan"], "finite"),
    (["--config", SMOKE, "--set", "search.space.lr.high=.inf"], "finite"),
    (["--config", SMOKE, "--set", "resources.wait_for_nodes_s=-1"], "at least 0"),
    (["--config", SMOKE, "--set", "search.replicates=0"], "at least 1"),
    (["--config", SMOKE, "--set", "analysis.equivalence_margin=0"], "equivalence_margin"),
    (["--config", SMOKE, "--name", "x" * 300], "at most 100"),
    (["--config", SMOKE, "--name", ".."], "must be letters"),
    (["--config", SMOKE, "--name", "a/b"], "must be letters"),
    (["--config", SMOKE, "--optuna-storage", "not-a-url"], "not a database URL"),
    (["--config", SMOKE, "--optuna-storage", "oracle+nosuch://u@h/db"], "unknown database"),
    (["--config", SMOKE, "--address", "host:notaport"], "--address"),
    (["--config", SMOKE, "--set", "logging.wandb.mode=sideways"], "logging.wandb.mode"),
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


def test_overwrite_of_a_directory_that_is_not_a_sweep_deletes_nothing(tmp_path):
    docs = tmp_path / "Documents"
    (docs / "photos").mkdir(parents=True)
    (docs / "thesis.tex").write_text("years of work")
    (docs / "photos" / "a.jpg").write_bytes(b"\xff\xd8")
    (docs / "config.yaml").write_text("mine: true\n")  # even a config.yaml of the user's own
    proc = run_cli("--config", SMOKE, "--storage-path", tmp_path, "--name", "Documents", "--overwrite")
    assert_one_line_error(proc, "not created by selu-sweep")
    assert (docs / "thesis.tex").read_text() == "years of work" and (docs / "photos" / "a.jpg").exists()
    assert (docs / "config.yaml").read_text() == "mine: true\n"


@pytest.mark.parametrize("flags", [[], ["--overwrite"]])
def test_a_non_sweep_directory_is_not_adopted_either(tmp_path, flags):
    (tmp_path / "Documents").mkdir()
    (tmp_path / "Documents" / "thesis.tex").write_text("x")
    proc = run_cli("--config", SMOKE, "--storage-path", tmp_path, "--name", "Documents", *flags)
    assert_one_line_error(proc, "is not a sweep")
    assert [p.name for p in (tmp_path / "Documents").iterdir()] == ["thesis.tex"]


def test_an_unreachable_address_exits_2_within_15_seconds(tmp_path, blackhole_address):
    t0 = time.monotonic()
    proc = run_cli("--config", SMOKE, "--storage-path", tmp_path / "results", "--address", blackhole_address)
    assert time.monotonic() - t0 < 15
    assert_one_line_error(proc, f"no Ray cluster answers at {blackhole_address}")
    assert not (tmp_path / "results").exists()


def test_a_database_password_appears_in_no_output(tmp_path, blackhole_address):
    pytest.importorskip("psycopg", reason="psycopg is in the [cluster] and [dev] extras")
    url = f"postgresql+psycopg://alice:s3cret-pw@{blackhole_address}/optuna"
    proc = run_cli("--config", SMOKE, "--storage-path", tmp_path / "results", "--optuna-storage", url)
    assert_one_line_error(proc, "cannot connect to 'postgresql+psycopg://alice:***@")
    assert "s3cret-pw" not in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_flag_values_are_taken_literally_not_as_yaml(tmp_path):
    from sweeps.run import parse

    cfg, _ = parse(["--config", str(SMOKE), "--storage-path", f"{tmp_path}/x #2", "--name", "007"])
    assert cfg.storage_path == f"{tmp_path}/x #2" and cfg.name == "007"


def test_resume_reads_the_saved_config_of_the_name_given_by_set(tmp_path):
    from sweeps.run import parse

    for name, samples in (("smoke", 5), ("other", 7)):
        (tmp_path / name).mkdir()
        raw = SMOKE.read_text().replace("name: smoke ", f"name: {name} ").replace(
            "num_samples: 2 ", f"num_samples: {samples} ")
        (tmp_path / name / "config.yaml").write_text(raw)
    cfg, options = parse(["--storage-path", str(tmp_path), "--set", "name=other", "--resume",
                          "--set", "confirm.seeds=4"])
    assert cfg.name == "other" and cfg.search.num_samples == 7 and cfg.confirm.seeds == 4
    assert options.resume and "--set confirm.seeds=4" in options.command


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
              "--set", "search.replicates=1", "--set", "search.mode=joint", "--set", "search.num_samples=3",
              "--set", "search.max_epochs=1", "--set", "confirm.seeds=1"]
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
    exp_id = json.loads((exp / ".selu-sweep.json").read_text())["experiment_id"]
    assert [s.study_name for s in optuna.study.get_all_study_summaries(storage)] == [f"joint-{exp_id}-r0"]


def test_resume_with_a_corrupt_saved_config_is_refused(tmp_path):
    exp = tmp_path / "results" / "broken"
    exp.mkdir(parents=True)
    (exp / "config.yaml").write_text("name: [unclosed\n")
    proc = run_cli("--name", "broken", "--storage-path", tmp_path / "results", "--resume")
    assert_one_line_error(proc, "config.yaml (saved config): invalid YAML")
    assert (exp / "config.yaml").read_text() == "name: [unclosed\n"


def test_python_m_sweeps_is_the_same_cli(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "sweeps", "--config", str(SMOKE), "--set", "search.seed=-1",
                           "--storage-path", str(tmp_path / "results")], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)
    assert_one_line_error(proc, "0 <= seed < 2**31")


# --------------------------------------------------------------------------------------------
# Interruptions (issue 16): never reported as done, always resumable to the same result

INTERRUPT_ARGS = ["--config", SMOKE, "--set", "search.replicates=1", "--set", "search.num_samples=1",
                  "--set", "search.early_stopping.enabled=false", "--set", "search.max_epochs=2",
                  "--set", "confirm.seeds=3",
                  "--set", "train.checkpoint_every=1"]


def _confirm_results(exp: Path) -> dict:
    """(arm, seed) -> test accuracy of every confirmation trial, through the analysis loader."""
    from analysis.load import load_results

    trials = load_results([exp]).trials
    confirm = trials[trials["stage"] == "confirm"]
    return {(a, int(s)): round(float(v), 6)
            for a, s, v in zip(confirm["arm"], confirm["seed"], confirm["final_test_accuracy"], strict=True)}


def _verdict(exp: Path) -> dict:
    """verdict.json with the experiment's name (which differs between two runs by design, and is
    chosen not to occur in the report's prose) made neutral."""
    text = (exp / "report" / "verdict.json").read_text()
    return json.loads(text.replace(json.dumps(exp.name)[1:-1], "EXPERIMENT").replace(str(exp.parent), "ROOT"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    proc = run_cli(*INTERRUPT_ARGS, "--storage-path", root, "--name", "uncut7", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "uncut7"


def _interrupt(tmp_path: Path, name: str, stage: str, signals: list[int],
               repeat_until_exit: bool = False) -> subprocess.CompletedProcess:
    """Start the CLI, send ``signals`` to the driver (only) once a trial of ``stage`` reported an
    epoch, and return the finished process (stdout, stderr, returncode). ``repeat_until_exit``:
    then send the last signal again every 0.2 s until the process ends (every phase of the stop:
    Tune saving, the stage unwinding, Ray stopping, the last line)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, str(ROOT / "sweeps" / "run.py"), *map(str, INTERRUPT_ARGS),
           "--storage-path", str(tmp_path), "--name", name]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    stage_dir = tmp_path / name / stage
    while time.time() < deadline and proc.poll() is None:
        if any(p.stat().st_size for p in stage_dir.glob("*/result.json")):
            break
        time.sleep(0.3)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.5)
    while repeat_until_exit and time.time() < deadline and proc.poll() is None:
        proc.send_signal(signals[-1])
        time.sleep(0.2)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _assert_interrupted(proc: subprocess.CompletedProcess):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert lines and lines[-1] == "interrupted; resume with --resume", proc.stderr[-3000:]
    assert "done:" not in proc.stdout
    for crash in ("Traceback", "*** SIGTERM", "Aborted", "core dumped", "Stack trace", "raylet_client"):
        assert crash not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("signals", [[signal.SIGINT], [signal.SIGTERM]], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_confirmation_exits_1_and_resumes_to_the_uninterrupted_result(
        tmp_path, uninterrupted, signals):
    proc = _interrupt(tmp_path, "cut7", "confirm", signals)
    _assert_interrupted(proc)
    exp = tmp_path / "cut7"
    assert not (exp / "report").exists(), "no report from an interrupted stage"
    from analysis.completeness import completeness
    from analysis.load import load_results

    assert completeness(load_results([exp]))["complete"] is False
    resumed = run_cli("--name", "cut7", "--storage-path", tmp_path, "--resume", timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.splitlines()[-1].startswith("done: ")
    assert completeness(load_results([exp]))["complete"] is True
    assert _confirm_results(exp) == _confirm_results(uninterrupted)
    assert _verdict(exp) == _verdict(uninterrupted)


def test_a_second_ctrl_c_in_the_search_still_exits_1_without_a_crash(tmp_path):
    proc = _interrupt(tmp_path, "twice", "search", [signal.SIGINT, signal.SIGINT])
    _assert_interrupted(proc)


def test_ctrl_c_pressed_again_and_again_until_the_exit_still_ends_on_the_interrupted_line(tmp_path):
    """A Ctrl-C that lands while Ray stops (it did, in CI: Ray's atexit hook printed a
    KeyboardInterrupt traceback after the last line) changes nothing."""
    proc = _interrupt(tmp_path, "storm", "search", [signal.SIGINT], repeat_until_exit=True)
    _assert_interrupted(proc)
