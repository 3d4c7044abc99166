"""The hostile and unlucky user's corpus for sweeps/run.py (issue 16): every probe that once crashed,
hung, leaked or deleted is run here through the real CLI, and must end in exit 2 with one line
(no traceback), nothing started and nothing of the user's changed.

Cases that need the sweep to have run (a signed stage, a report) build the experiment directory by
hand: the checks they probe run before Ray starts.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sweeps.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "sweeps" / "configs" / "smoke.yaml"
BOMB = "name: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{n}: &{n} [{', '.join('*' + p for _ in range(9))}]\n" for p, n in zip("abcde", "bcdef"))


def run_cli(*args, env_extra=None, timeout=120, cwd=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT), **(env_extra or {})}
    env.pop("RAY_ADDRESS", None)
    argv = [sys.executable, str(ROOT / "sweeps" / "run.py"),
            *(a if isinstance(a, bytes) else str(a) for a in args)]
    return subprocess.run(argv, capture_output=True, timeout=timeout, env=env, cwd=cwd or ROOT)


def one_line_exit_2(proc, fragment: str) -> str:
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err and len(lines[0]) < 600
    return lines[0]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private config dir for the resume key, in this process and the CLI's."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}


# --------------------------------------------------------------------------------------------
# Command lines that once gave a traceback, a MemoryError or an hour of work: exit 2, one line

DEEP = "[" * 5000 + "]" * 5000
HUGE = "x" * 100_000  # under Linux's 128 KiB limit on one argument


@pytest.mark.parametrize("args, fragment", [
    (["--address", "[::1"], "expected HOST:PORT"),
    (["--address", "ray://[::1"], "expected HOST:PORT"),
    (["--address", "host:99999999"], "expected HOST:PORT"),
    (["--optuna-storage", "sqlite://[x/a.db"], "SQLite has not"),
    (["--optuna-storage", "sqlite://u:pw@//tmp/path"], "SQLite has not"),
    (["--optuna-storage", "postgresql+psycopg://u:pw@[::1/db"], "search.optuna_storage"),
    (["--storage-path", "s3://[bucket/x"], "not a valid URI"),
    (["--storage-path", "gs://b:notaport/x"], "not a valid URI"),
    (["--storage-path", b"res\xffults"], "not valid UTF-8"),
    (["--set", f"name={DEEP}"], "nested deeper than"),
    (["--set", "search.space.lr.choices=" + "[" * 3000 + "1" + "]" * 3000], "nested deeper than"),
    (["--set", ".".join(["a"] * 5000) + "=1"], "not a config key"),
    (["--set", "a.b.c.d.e.f.g.h.i.j=1"], "at most 4 levels deep"),
    (["--set", "data.synthetic.train=100000000000"], "at most 50000"),
    (["--set", "data.synthetic.test=100000000"], "at most 10000"),
    (["--set", "data.val_size=1000000"], "data.val_size"),
    (["--set", "data.train_subset=1000000000"], "at most 50000"),
    (["--set", "search.num_samples=1000000000"], "search.num_samples"),
    (["--set", "search.replicates=100000"], "search.replicates"),
    (["--set", "confirm.seeds=1000000"], "confirm.seeds"),
    (["--set", "train.epochs=1000000000"], "at most 10,000"),
    (["--set", "train.batch_size=1000000000"], "batch_size must be at most"),
    (["--set", "max_failures=1000000000"], "max_failures"),
    (["--set", "resources.cpus_per_trial=1e12"], "cpus_per_trial"),
    (["--set", "resources.wait_for_nodes_s=1e12"], "wait_for_nodes_s"),
    (["--set", "search.early_stopping.grace_period=1000000000"], "grace_period"),
    (["--set", "search.space.lr.choices=[" + ",".join(["0.001"] * 2000) + "]"], "at most 1000 values"),
    (["--set", "arms=[" + ",".join(f"{{name: a{i}, activation: relu}}" for i in range(101)) + "]"],
     "at most 100 arms"),
    (["--set", f"search.mode={HUGE}"], "search.mode"),
    (["--set", f"train.lr={HUGE}"], "train.lr"),
    (["--set", f"data.data_dir={HUGE}"], "longer than 4096"),
    (["--set", f"{HUGE}=1"], "not a config key"),
    (["--set", HUGE], "expected KEY=VALUE"),
])
def test_hostile_command_lines_exit_2_in_one_bounded_line(args, fragment, tmp_path):
    proc = run_cli("--config", SMOKE, "--storage-path", tmp_path / "results", *args)
    line = one_line_exit_2(proc, fragment)
    assert "x" * 500 not in line  # the message never formats the unbounded value
    assert not (tmp_path / "results").exists()


# --------------------------------------------------------------------------------------------
# YAML aliases: a 2 KB "billion laughs" once took 100 s and 4 GB


def test_a_nul_in_the_storage_path_is_refused(tmp_path):
    (tmp_path / "nul.yaml").write_text(SMOKE.read_text() + '\nstorage_path: "res\\0ults"\n')
    one_line_exit_2(run_cli("--config", tmp_path / "nul.yaml"), "NUL")


def test_an_alias_bomb_in_a_config_file_is_refused_at_once(tmp_path):
    (tmp_path / "bomb.yaml").write_text(BOMB)
    t0 = time.monotonic()
    proc = run_cli("--config", tmp_path / "bomb.yaml", "--storage-path", tmp_path / "results")
    one_line_exit_2(proc, "aliases")
    assert time.monotonic() - t0 < 60 and not (tmp_path / "results").exists()


def test_an_alias_bomb_in_set_is_refused_at_once(tmp_path):
    flow = "{a: &a [x,x,x,x,x,x,x,x], b: &b [*a,*a,*a,*a,*a,*a,*a,*a], c: [*b,*b,*b,*b,*b,*b,*b,*b]}"
    proc = run_cli("--config", SMOKE, "--storage-path", tmp_path / "results", "--set", f"name={flow}")
    one_line_exit_2(proc, "aliases")


def test_a_config_nested_5000_deep_is_refused(tmp_path):
    (tmp_path / "deep.yaml").write_text("name: " + DEEP + "\n")
    one_line_exit_2(run_cli("--config", tmp_path / "deep.yaml"), "nested deeper than")


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_a_config_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path, kind):
    path = tmp_path / "cfg.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path = Path("/dev/zero")
    one_line_exit_2(run_cli("--config", path, timeout=60), "cannot read it")


# --------------------------------------------------------------------------------------------
# Names are data


@pytest.mark.parametrize("name", [
    "[SELU is better](https://evil.example/x)<img src=x onerror=alert(1)>",
    "![x](y)",
    '=HYPERLINK("https://evil.example","x")',
    "+1", "-x", "@SUM(A1)", "a`b", "a b", "é", "a\nb", "<b>", "_x_",
])
def test_an_unsafe_arm_name_is_refused_at_parse_time(name, tmp_path):
    arms = json.dumps([{"name": name, "activation": "selu"}, {"name": "relu", "activation": "relu"}])
    proc = run_cli("--config", SMOKE, "--storage-path", tmp_path / "results", "--set", f"arms={arms}")
    one_line_exit_2(proc, "must be letters, digits")


@pytest.mark.parametrize("name", ["#x", "a`b`", "[x](y)", "=cmd", "a b"])
def test_an_unsafe_experiment_name_is_refused_at_parse_time(name, tmp_path):
    one_line_exit_2(run_cli("--config", SMOKE, "--storage-path", tmp_path, "--name", name),
                    "must be letters, digits")


# --------------------------------------------------------------------------------------------
# --resume and --confirm-only: control files, the trust boundary, the saved address


def _saved_sweep(root: Path, name: str = "smoke", **changes) -> Path:
    """A sweep directory as the runner leaves it after starting, with a search stage."""
    from sweeps.config import load_config
    from sweeps.experiment import Experiment
    from sweeps.prepare import _saved_config

    cfg = load_config(SMOKE, flags={"name": name, "storage_path": str(root)})
    exp = Experiment(str(root), name)
    exp.create()
    raw = yaml.safe_load(_saved_config(cfg))
    raw.update(changes)
    exp.write_text("config.yaml", yaml.safe_dump(raw))
    (Path(exp.path) / "search").mkdir()
    return Path(exp.path)


class Payload:
    """Unpickling this runs code: it creates the file named in the pickle."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _tuner_pkl(stage: Path, canary: Path) -> Path:
    path = stage / "tuner.pkl"
    path.write_bytes(pickle.dumps(Payload(canary)))
    return path


@pytest.mark.parametrize("mode", ["--resume", "--confirm-only"])
def test_an_unsigned_tuner_pkl_is_refused_before_it_is_unpickled(tmp_path, home, mode):
    exp = _saved_sweep(tmp_path)
    canary = tmp_path / "pwned"
    _tuner_pkl(exp / "search", canary)
    line = one_line_exit_2(run_cli("--name", "smoke", "--storage-path", tmp_path, mode, env_extra=home),
                           "tuner.pkl: refused: no signature")
    assert "nothing was unpickled" in line
    assert not canary.exists()


def test_a_tampered_tuner_pkl_is_refused_with_the_reason(tmp_path, home):
    from sweeps import trust

    exp = _saved_sweep(tmp_path)
    canary = tmp_path / "pwned"
    path = exp / "search" / "tuner.pkl"
    path.write_bytes(pickle.dumps({"an": "honest tuner"}))
    trust.sign_file(str(path))
    _tuner_pkl(exp / "search", canary)  # replaced after the sweep signed it
    proc = run_cli("--name", "smoke", "--storage-path", tmp_path, "--resume", env_extra=home)
    one_line_exit_2(proc, "tuner.pkl: refused: its signature does not match")
    assert not canary.exists()


def test_a_signature_made_with_another_users_key_is_refused(tmp_path, home, monkeypatch):
    from sweeps import trust

    exp = _saved_sweep(tmp_path)
    path = _tuner_pkl(exp / "search", tmp_path / "pwned")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "attacker"))
    trust.sign_file(str(path))  # the attacker's own key
    proc = run_cli("--name", "smoke", "--storage-path", tmp_path, "--resume", env_extra=home)
    one_line_exit_2(proc, "signature does not match")
    assert not (tmp_path / "pwned").exists()


def test_a_signature_moved_to_another_file_is_refused(tmp_path, home):
    from sweeps import trust

    exp = _saved_sweep(tmp_path)
    good = exp / "search" / "searcher-state-a.pkl"
    good.write_bytes(pickle.dumps({"ok": 1}))
    trust.sign_file(str(good))
    evil = _tuner_pkl(exp / "search", tmp_path / "pwned")
    (exp / "search" / "tuner.pkl.sig").write_bytes((exp / "search" / "searcher-state-a.pkl.sig").read_bytes())
    assert evil.exists()
    one_line_exit_2(run_cli("--name", "smoke", "--storage-path", tmp_path, "--resume", env_extra=home),
                    "signature does not match")


@pytest.mark.parametrize("name", ["searcher-state-2026.pkl", "experiment_state-2026.json",
                                  "basic-variant-state-2026.json", "callback-states-2026.pkl"])
def test_every_file_a_restore_unpickles_needs_a_signature(tmp_path, home, name):
    exp = _saved_sweep(tmp_path)
    (exp / "search" / name).write_bytes(pickle.dumps(Payload(tmp_path / "pwned")))
    one_line_exit_2(run_cli("--name", "smoke", "--storage-path", tmp_path, "--resume", env_extra=home),
                    f"{name}: refused: no signature")


def test_the_resume_key_is_user_only_and_a_too_open_key_is_refused(tmp_path, home):
    from sweeps import trust

    trust.signature("x", b"")
    key = trust.key_path()
    assert key.stat().st_mode & 0o777 == 0o600 and key.parent.stat().st_mode & 0o077 == 0
    key.chmod(0o644)
    exp = _saved_sweep(tmp_path)
    (exp / "search" / "tuner.pkl").write_bytes(b"x")
    one_line_exit_2(run_cli("--name", "smoke", "--storage-path", tmp_path, "--resume", env_extra=home),
                    "mode 0600")


def test_a_signed_stage_verifies(tmp_path, home):
    from sweeps import trust

    exp = _saved_sweep(tmp_path)
    (exp / "search" / "tuner.pkl").write_bytes(pickle.dumps({"ok": 1}))
    (exp / "search" / "experiment_state-x.json").write_text("{}")
    assert trust.sign_dir(str(exp / "search")) == 2
    trust.verify_dir(str(exp / "search"))
    (exp / "search" / "experiment_state-x.json").write_text('{"changed": 1}')
    with pytest.raises(ConfigError, match="experiment_state-x.json: refused"):
        trust.verify_dir(str(exp / "search"))


def test_python_m_sweeps_trust_signs_a_sweep_the_user_checked(tmp_path, home):
    exp = _saved_sweep(tmp_path)
    (exp / "search" / "tuner.pkl").write_bytes(pickle.dumps({"ok": 1}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), **home}
    proc = subprocess.run([sys.executable, "-m", "sweeps.trust", str(exp)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0 and "signed 1 file(s)" in proc.stdout
    from sweeps import trust

    trust.verify_dir(str(exp / "search"))


def test_resume_never_joins_the_address_saved_in_the_config(tmp_path, home, blackhole_address):
    """The saved address would fail validation in 10 s (nothing answers); not named on the command
    line, it is not used: the run gets past the address check to the trust check."""
    exp = _saved_sweep(tmp_path, address=blackhole_address)
    _tuner_pkl(exp / "search", tmp_path / "pwned")
    proc = run_cli("--name", "smoke", "--storage-path", tmp_path, "--resume", env_extra=home)
    line = one_line_exit_2(proc, "refused: no signature")
    assert "no Ray cluster" not in line
    proc = run_cli("--name", "smoke", "--storage-path", tmp_path, "--resume", "--address", blackhole_address,
                   env_extra=home)
    one_line_exit_2(proc, "no Ray cluster answers")


@pytest.mark.parametrize("target", ["config.yaml", ".selu-sweep.json"])
def test_a_fifo_as_a_control_file_on_resume_is_refused_without_hanging(tmp_path, home, target):
    exp = _saved_sweep(tmp_path)
    (exp / target).unlink()
    os.mkfifo(exp / target)
    proc = run_cli("--name", "smoke", "--storage-path", tmp_path, "--resume", env_extra=home, timeout=60)
    one_line_exit_2(proc, "not a regular file")


def test_a_saved_config_linked_out_of_the_experiment_is_not_read(tmp_path, home):
    exp = _saved_sweep(tmp_path)
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text((exp / "config.yaml").read_text())
    (exp / "config.yaml").unlink()
    (exp / "config.yaml").symlink_to(outside)
    one_line_exit_2(run_cli("--name", "smoke", "--storage-path", tmp_path, "--resume", env_extra=home),
                    "symbolic link out of the experiment")


def test_an_alias_bomb_in_a_saved_config_is_refused(tmp_path, home):
    exp = _saved_sweep(tmp_path)
    (exp / "config.yaml").write_text(BOMB)
    t0 = time.monotonic()
    one_line_exit_2(run_cli("--name", "smoke", "--storage-path", tmp_path, "--resume", env_extra=home),
                    "aliases")
    assert time.monotonic() - t0 < 60


def test_resume_without_the_password_is_refused_unless_the_environment_has_it(tmp_path, home):
    exp = _saved_sweep(tmp_path)
    raw = yaml.safe_load((exp / "config.yaml").read_text())
    raw["search"]["optuna_storage"] = "postgresql+psycopg://u:***@127.0.0.1:9/db"
    (exp / "config.yaml").write_text(yaml.safe_dump(raw))
    pytest.importorskip("psycopg", reason="psycopg is in the [cluster] and [dev] extras")
    env = {**home, "PGPASSFILE": str(tmp_path / "none")}
    one_line_exit_2(run_cli("--name", "smoke", "--storage-path", tmp_path, "--resume", env_extra=env),
                    "set PGPASSWORD")
    # With PGPASSWORD the saved URL is used (and the database, which is not there, is the next problem).
    proc = run_cli("--name", "smoke", "--storage-path", tmp_path, "--resume",
                   env_extra={**env, "PGPASSWORD": "from-env-7f3"})
    one_line_exit_2(proc, "cannot connect")
    assert "from-env-7f3" not in proc.stderr.decode()


# --------------------------------------------------------------------------------------------
# --overwrite deletes only the sweep's own entries


def test_overwrite_with_a_copied_marker_deletes_nothing(tmp_path):
    real = _saved_sweep(tmp_path / "a")
    mine = tmp_path / "b" / "smoke"
    mine.mkdir(parents=True)
    (mine / "thesis.tex").write_text("years of work")
    marker = json.loads((real / ".selu-sweep.json").read_text())
    (mine / ".selu-sweep.json").write_text(json.dumps(marker))  # copied, its name already right
    (mine / "config.yaml").write_text((real / "config.yaml").read_text())
    before = sorted(p.name for p in mine.iterdir())
    proc = run_cli("--config", SMOKE, "--storage-path", tmp_path / "b", "--overwrite")
    one_line_exit_2(proc, "names another directory")
    assert sorted(p.name for p in mine.iterdir()) == before


def test_overwrite_of_a_sweep_holding_a_users_file_deletes_nothing(tmp_path):
    exp = _saved_sweep(tmp_path)
    (exp / "notes.txt").write_text("mine")
    before = sorted(p.name for p in exp.iterdir())
    proc = run_cli("--config", SMOKE, "--storage-path", tmp_path, "--overwrite")
    one_line_exit_2(proc, "notes.txt")
    assert sorted(p.name for p in exp.iterdir()) == before


def test_overwrite_with_a_marker_naming_another_sweep_deletes_nothing(tmp_path):
    exp = _saved_sweep(tmp_path)
    marker = json.loads((exp / ".selu-sweep.json").read_text())
    (exp / ".selu-sweep.json").write_text(json.dumps({**marker, "name": "other"}))
    one_line_exit_2(run_cli("--config", SMOKE, "--storage-path", tmp_path, "--overwrite"),
                    "names another directory")
    assert (exp / "config.yaml").exists()


def test_delete_removes_exactly_the_layout(tmp_path):
    from sweeps.experiment import LAYOUT, Experiment

    exp = _saved_sweep(tmp_path)
    for entry in ("data.json", "runs.jsonl", "optuna.db", "optuna.db-journal", ".tmp-abc"):
        (exp / entry).write_text("x")
    for entry in ("confirm", "report", "wandb"):
        (exp / entry).mkdir()
    assert set(LAYOUT) >= {"config.yaml", "search", "confirm", "report", ".selu-sweep.json"}
    Experiment(str(tmp_path), "smoke").delete()
    assert not exp.exists()


# --------------------------------------------------------------------------------------------
# Locks


def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path):
    from sweeps.experiment import Experiment

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".smoke.lock").symlink_to(victim)
    with pytest.raises(ConfigError, match="symbolic link"):
        with Experiment(str(tmp_path), "smoke").lock():
            pass
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("alias", ["file://{root}", "{link}", "{root}/../{rootname}"])
def test_every_alias_of_an_experiment_takes_the_same_lock(tmp_path, alias):
    from sweeps.experiment import Experiment

    root = tmp_path / "store"
    root.mkdir()
    (tmp_path / "link").symlink_to(root)
    other = alias.format(root=root, link=tmp_path / "link", rootname=root.name)
    with Experiment(str(root), "smoke").lock():
        with pytest.raises(ConfigError, match="already running"):
            with Experiment(other, "smoke").lock():
                pass


# --------------------------------------------------------------------------------------------
# Secrets: redacted once, at the edge


@pytest.mark.parametrize("argv", [
    ["--optuna-storage=postgresql+psycopg://u:S3CRET-pw@db.example/optuna"],
    ["--optuna-storage", "postgresql+psycopg://u:S3CRET-pw@db.example/optuna"],
    ["--set", "search.optuna_storage=postgresql+psycopg://u:S3CRET-pw@db.example/optuna"],
    ["--set", "logging.mlflow.tracking_uri=https://user:S3CRET-pw@mlflow.example"],
    ["--set=logging.mlflow.tracking_uri=https://user:S3CRET-pw@mlflow.example"],
    ["--set", "search.optuna_storage=mysql+pymysql://u:S3C@RET-pw@db.example/optuna"],
])
def test_the_recorded_command_and_saved_config_hold_no_password(argv, tmp_path):
    from sweeps.prepare import _saved_config
    from sweeps.run import parse

    cfg, options = parse(["--config", str(SMOKE), "--storage-path", str(tmp_path), *argv])
    assert "S3CRET" not in options.command and "RET-pw" not in options.command
    assert ":***@" in options.command
    saved = _saved_config(cfg)
    assert "S3CRET" not in saved and "RET-pw" not in saved


def test_cloud_credentials_never_enter_a_trials_runtime_env(monkeypatch):
    pytest.importorskip("ray")
    from ray.tune.execution.class_cache import _ActorClassCache

    from sweeps.ray_session import configure_trial_env

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-9d2")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "aws-token-9d2")
    configure_trial_env()

    class T:
        pass

    remote = _ActorClassCache().get(T)
    env_vars = remote._default_options["runtime_env"]["env_vars"]
    assert not any(k.startswith("AWS_") for k in env_vars) and "aws-secret-9d2" not in repr(env_vars)


def test_the_remote_report_copy_writes_only_into_a_directory_of_its_own(tmp_path, monkeypatch):
    """A user's results/<name>/ (not made by the tool) is left whole: the copy goes beside it."""
    import pyarrow.fs

    from sweeps import experiment

    src = tmp_path / "bucket" / "smoke"
    (src / "search").mkdir(parents=True)
    (src / "config.yaml").write_text("name: smoke\n")
    monkeypatch.setattr(experiment, "_fs", lambda p: (pyarrow.fs.LocalFileSystem(),
                                                      str(tmp_path / "bucket" / p.split("/", 3)[-1])))
    exp = experiment.Experiment("s3://bucket", "smoke")
    ours = exp.local_copy(tmp_path / "fresh")  # no results/<name> yet: the tool makes it, and reuses it
    assert ours == tmp_path / "fresh" / "smoke" and exp.local_copy(tmp_path / "fresh") == ours
    assert (ours / "experiment" / "config.yaml").exists()
    assert all(p.stat().st_mode & 0o077 == 0 for p in [ours, *ours.rglob("*")])
    users = tmp_path / "results" / "smoke"
    (users / "experiment").mkdir(parents=True)
    (users / "experiment" / "paper.tex").write_text("mine")
    local = exp.local_copy(tmp_path / "results")
    assert local != users and local.parent == tmp_path / "results"
    assert (users / "experiment" / "paper.tex").read_text() == "mine"
    assert sorted(p.name for p in users.rglob("*")) == ["experiment", "paper.tex"]
    assert (local / "experiment" / "config.yaml").exists()
    assert all(p.stat().st_mode & 0o077 == 0 for p in [local, *local.rglob("*")])
