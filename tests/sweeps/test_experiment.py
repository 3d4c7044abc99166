"""sweeps/experiment.py: ownership marker, user-only atomic writes, locks, redaction, storage paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sweeps.config import ConfigError
from sweeps.experiment import (
    MARKER,
    Experiment,
    check_storage_path,
    has_redacted_password,
    redact,
)

ROOT = Path(__file__).resolve().parents[2]


def test_create_writes_a_marker_and_a_user_only_directory(tmp_path):
    exp = Experiment(str(tmp_path), "demo")
    exp_id = exp.create()
    marker = json.loads((tmp_path / "demo" / MARKER).read_text())
    assert marker["tool"] == "selu-sweep" and marker["name"] == "demo" and marker["experiment_id"] == exp_id
    assert "created" in marker and "version" in marker
    assert (tmp_path / "demo").stat().st_mode & 0o077 == 0
    assert (tmp_path / "demo" / MARKER).stat().st_mode & 0o077 == 0


def test_delete_refuses_a_directory_without_the_marker_and_touches_nothing(tmp_path):
    docs = tmp_path / "Documents"
    (docs / "sub").mkdir(parents=True)
    (docs / "thesis.tex").write_text("years of work")
    (docs / "sub" / "notes.txt").write_text("more")
    with pytest.raises(ConfigError, match="not created by selu-sweep"):
        Experiment(str(tmp_path), "Documents").delete()
    assert (docs / "thesis.tex").read_text() == "years of work" and (docs / "sub" / "notes.txt").exists()


def test_delete_removes_a_marked_sweep(tmp_path):
    exp = Experiment(str(tmp_path), "demo")
    exp.create()
    exp.write_text("config.yaml", "name: demo\n")
    exp.write_text("final-look.json", '{"replicates": 3, "reason": "budget"}\n')  # a budget-ended sweep
    exp.delete()
    assert not (tmp_path / "demo").exists()


def test_a_damaged_marker_is_refused_not_trusted(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / MARKER).write_text('{"tool": "something-else"}')
    with pytest.raises(ConfigError, match="damaged ownership marker"):
        Experiment(str(tmp_path), "demo").delete()
    assert (tmp_path / "demo" / MARKER).exists()


def test_a_second_holder_of_the_lock_is_refused_naming_the_first(tmp_path):
    exp = Experiment(str(tmp_path), "demo")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from sweeps.experiment import Experiment
        with Experiment({str(tmp_path)!r}, "demo").lock():
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=rf"already running \(host .* pid {holder.pid}\)"):
            with exp.lock():
                pass
    finally:
        holder.kill()
        holder.wait()
    with exp.lock():  # released when its holder died
        pass


def test_a_full_disk_during_the_config_write_leaves_the_old_config_whole(tmp_path):
    """RLIMIT_FSIZE makes the write fail part-way, as a full disk would."""
    exp_dir = tmp_path / "demo"
    exp_dir.mkdir()
    (exp_dir / "config.yaml").write_text("name: demo\n")
    script = textwrap.dedent(f"""
        import resource, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
        from sweeps.experiment import Experiment
        try:
            Experiment({str(tmp_path)!r}, "demo").write_text("config.yaml", "x: 1\\n" * 10000)
        except OSError as exc:
            print("failed", exc.errno)
        """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("failed"), out.stdout + out.stderr
    assert (exp_dir / "config.yaml").read_text() == "name: demo\n"
    assert sorted(p.name for p in exp_dir.iterdir()) == ["config.yaml"], "no temp file left behind"


@pytest.mark.parametrize("url, shown", [
    ("postgresql+psycopg://alice:s3cret@db.example:5432/optuna", "postgresql+psycopg://alice:***@db.example:5432/optuna"),
    ("s3://KEY:SECRET@bucket/path", "s3://KEY:***@bucket/path"),
    ("sqlite:///x/optuna.db", "sqlite:///x/optuna.db"),
    ("results", "results"),
])
def test_passwords_in_urls_are_redacted(url, shown):
    assert redact(url) == shown
    assert "s3cret" not in redact(url) and "SECRET" not in redact(url)
    assert has_redacted_password(redact(url)) == (shown != url)


@pytest.mark.parametrize("path, fragment", [
    ("/proc/selu", "not writable"),
    ("{tmp}/file/sub", "is a file"),
    ("ftp://host/x", "unsupported scheme"),
    ("s3:///nobucket", "names no bucket"),
])
def test_unusable_storage_paths_are_refused_before_anything_starts(path, fragment, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=fragment):
        check_storage_path(path.format(tmp=tmp_path))


def test_a_writable_or_creatable_path_and_remote_uris_are_accepted(tmp_path):
    check_storage_path(str(tmp_path / "new" / "deeper"))
    check_storage_path("s3://bucket/sweeps")


def test_remote_locks_live_in_the_users_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with Experiment("s3://bucket/sweeps", "demo").lock():
        assert list((tmp_path / ".cache" / "selu-sweep" / "locks").glob("*.lock"))
    assert os.path.isdir(tmp_path / ".cache")
