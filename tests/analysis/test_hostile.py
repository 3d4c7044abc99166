"""The hostile and unlucky user's corpus for ``python -m analysis`` (issue 16): names and text from
files are data, never Markdown, HTML or a spreadsheet formula; hostile files cost bounded time and
memory; nothing outside the experiment is read or written through a link.

Each case edits a handmade experiment (tests/analysis/handmade.py) and runs the real CLI.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.load import AnalysisError, _text, load_results, safe_name
from analysis.studies import load_studies
from tests.analysis.handmade import make_experiment

ROOT = Path(__file__).resolve().parents[2]
EVIL_LINK = "https://evil.example/x"


def cli(*args, timeout=300, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "analysis", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture
def exp(tmp_path) -> Path:
    return make_experiment(tmp_path, "exp", search_per_arm=2, replicates=3, epochs=2)


def _rename_arm(exp: Path, old: str, new: str) -> None:
    for params in exp.glob("*/*/params.json"):
        config = json.loads(params.read_text())
        if config.get("arm") == old:
            params.write_text(json.dumps({**config, "arm": new}))


def _report(exp: Path) -> tuple[str, str]:
    out = exp / "report"
    return (out / "report.md").read_text(), (out / "report.html").read_text()


def assert_no_markup(md: str, page: str) -> None:
    """Nothing from a file became a link, an image, raw HTML or a heading of its own."""
    assert EVIL_LINK not in re.findall(r'href="([^"]+)"', page)
    assert not re.search(r'<a href="https?://', page)
    assert not re.search(r"<img src=\"(?!data:image/png)", page)
    assert "<img src=x" not in page and "<script" not in page and "<b>" not in page
    assert not re.search(r"^#+ Verdict \(corrected\)", md, re.MULTILINE)
    assert "<h2>Verdict (corrected)</h2>" not in page


def ok(proc) -> None:
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------------
# Names and text are data


@pytest.mark.parametrize("name", [
    "[SELU is better](https://evil.example/x)<img src=x onerror=alert(1)>",
    "![x](y)",
    "![x](https://evil.example/x)",
    "<script>alert(1)</script>",
    "**bold** _it_ `code`",
    "a|b|c",
    "line\n## Verdict (corrected)\n[click](https://evil.example/x)",
    "=HYPERLINK(\"https://evil.example/x\",\"x\")",
    "é-ü",
    "",
])
def test_an_arm_name_from_a_file_is_shown_as_data(exp, name):
    if name == "":
        pytest.skip("an empty arm is skipped by the loader (tested in test_load)")
    _rename_arm(exp, "selu", name)
    ok(cli(exp))
    md, page = _report(exp)
    assert_no_markup(md, page)
    shown = safe_name(_text(name))  # the loader makes a name one line first, then safe
    assert shown != name and shown in md
    assert (exp / "report" / "verdict.json").exists()


def test_two_unsafe_arm_names_stay_two_arms(exp):
    _rename_arm(exp, "selu", "a b")
    _rename_arm(exp, "relu", "a_b")
    trials = load_results([exp]).trials
    assert trials["arm"].nunique() == 2


@pytest.mark.parametrize("name", ['=HYPERLINK("https://evil.example/x","x")', "+1+1", "-2+3", "@SUM(A1:A2)",
                                  "\tx", "\rx"])
def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised_and_still_readable(exp, name):
    for params in exp.glob("*/*/params.json"):  # a formula where the loader keeps the text as is
        config = json.loads(params.read_text())
        params.write_text(json.dumps({**config, "normalization": name}))
    _rename_arm(exp, "selu", name)
    ok(cli(exp))
    for csv in ("trials.csv", "epochs.csv", "tests.csv"):
        df = pd.read_csv(exp / "report" / csv)
        cells = [v for col in df.columns if df[col].dtype == object for v in df[col].dropna()]
        assert not any(isinstance(v, str) and v[:1] in "=+-@\t\r" for v in cells), csv
    trials = pd.read_csv(exp / "report" / "trials.csv")
    # Still readable: the text is all there (behind a quote, or with a control character spelled out).
    assert all(name.strip() in str(v) for v in trials["normalization"])
    assert pd.api.types.is_numeric_dtype(trials["lr"]) and (trials["final_val_accuracy"] > 0).all()


def test_a_trial_directory_name_cannot_inject_markdown(exp):
    evil = exp / "search" / "x ## Verdict (corrected) [click](javascript:alert(1)) <b>"  # no "/" in a name
    evil.mkdir()
    (evil / "params.json").write_text("not json")  # a note names the directory
    ok(cli(exp))
    md, page = _report(exp)
    assert "Verdict (corrected)" in md  # it is there, as text
    assert_no_markup(md, page)


def test_a_recorded_command_cannot_close_the_code_fence(exp):
    command = "sweeps/run.py ```\n## Verdict (corrected)\n[click](https://evil.example/x)"
    (exp / "runs.jsonl").write_text(json.dumps({"command": command, "mode": "start", "time": "t"}) + "\n")
    ok(cli(exp))
    md, page = _report(exp)
    assert_no_markup(md, page)
    assert "Verdict (corrected)" in page  # inside the code block


def test_a_recorded_command_shows_no_password(exp):
    command = "sweeps/run.py --optuna-storage=postgresql+psycopg://u:S3CRET@db/x"
    (exp / "runs.jsonl").write_text(json.dumps({"command": command, "mode": "start"}) + "\n")
    ok(cli(exp))
    md, page = _report(exp)
    assert "S3CRET" not in md and "S3CRET" not in page and "u:***@db" in md


@pytest.mark.parametrize("field, value", [
    ("version", "1.0 [click](https://evil.example/x)\n## Verdict (corrected)"),
    ("version", "<img src=x onerror=alert(1)>"),
    ("version", "x" * 100_000),
])
def test_the_markers_version_is_data(exp, field, value):
    (exp / ".selu-sweep.json").write_text(json.dumps({"tool": "selu-sweep", field: value}))
    ok(cli(exp))
    md, page = _report(exp)
    assert_no_markup(md, page)
    assert "x" * 1000 not in md


@pytest.mark.parametrize("data", [
    {"source": "[cifar](https://evil.example/x)", "train": 1},
    {"source": "synthetic", "warnings": ["[click](https://evil.example/x)\n## Verdict (corrected)"]},
    {"source": "cifar10", "digest": "<img src=x onerror=alert(1)>", "train": "many"},
])
def test_data_json_strings_are_data(exp, data):
    (exp / "data.json").write_text(json.dumps(data))
    ok(cli(exp))
    assert_no_markup(*_report(exp))


def test_an_experiment_directory_name_is_data(tmp_path):
    exp = make_experiment(tmp_path, "e`x` [y](evil.example) <b>#", search_per_arm=2, replicates=3, epochs=2)
    ok(cli(exp))
    assert_no_markup(*_report(exp))


# --------------------------------------------------------------------------------------------
# Bounded work


BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{n}: &{n} [{', '.join('*' + p for _ in range(9))}]\n" for p, n in zip("abcdefgh", "bcdefghi"))


def test_an_alias_bomb_in_config_yaml_is_refused_at_once(exp):
    (exp / "config.yaml").write_text(BOMB)
    t0 = time.monotonic()
    proc = cli(exp)
    ok(proc)
    assert time.monotonic() - t0 < 120
    assert "aliases" in _report(exp)[0]


@pytest.mark.parametrize("target, what", [
    ("config.yaml", "config"), (".selu-sweep.json", "marker"), ("runs.jsonl", "runs"),
    ("data.json", "data"), ("final-look.json", "final look"), ("optuna.db", "optuna"),
    ("search/{trial}/params.json", "params"),
    ("search/{trial}/result.json", "result"),
])
def test_a_fifo_as_a_control_file_never_blocks(exp, target, what):
    trial = next((exp / "search").iterdir()).name
    path = exp / target.format(trial=trial)
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    ok(cli(exp, timeout=120))


@pytest.mark.parametrize("target", ["config.yaml", "data.json", "final-look.json", "runs.jsonl",
                                    ".selu-sweep.json", "search/{trial}/params.json",
                                    "search/{trial}/result.json"])
def test_a_control_file_linked_out_of_the_experiment_is_not_read(exp, tmp_path, target):
    secret = tmp_path / "outside.txt"
    secret.write_text(json.dumps({"command": "OUTSIDE-SECRET", "source": "OUTSIDE-SECRET",
                                  "arm": "OUTSIDE-SECRET", "version": "OUTSIDE-SECRET"}) + "\n")
    trial = next((exp / "search").iterdir()).name
    path = exp / target.format(trial=trial)
    path.unlink(missing_ok=True)
    path.symlink_to(secret)
    ok(cli(exp))
    md, page = _report(exp)
    assert "OUTSIDE-SECRET" not in md and "OUTSIDE-SECRET" not in page


def test_a_report_symlink_out_of_the_experiment_is_never_followed(exp, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "report.md").write_text("precious")
    (exp / "report").symlink_to(victim)
    proc = cli(exp)
    assert proc.returncode == 2 and "symbolic link out of the experiment" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (victim / "report.md").read_text() == "precious"
    assert sorted(victim.iterdir()) == [victim / "report.md"]


def test_deeply_nested_json_is_skipped_not_a_crash(exp):
    trial = next((exp / "search").iterdir())
    (trial / "params.json").write_text("[" * 100_000 + "]" * 100_000)
    with open(trial / "result.json", "a") as fh:
        fh.write("[" * 100_000 + "]" * 100_000 + "\n")
    ok(cli(exp))


def _recursive_view_db(path: Path) -> None:
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE VIEW studies AS WITH RECURSIVE r(study_id, study_name) AS (
            SELECT 1, 'x' UNION ALL SELECT study_id + 1, 'x' FROM r) SELECT * FROM r;
        CREATE TABLE version_info (version_info_id INTEGER PRIMARY KEY, schema_version INTEGER,
                                   library_version TEXT);
        CREATE TABLE alembic_version (version_num TEXT);
    """)
    con.commit()
    con.close()


def test_the_sqlite_budget_interrupts_a_query_that_never_ends():
    """The progress handler load_studies puts on every SQLite connection of an Optuna database."""
    from analysis._files import sqlite_budget

    con = sqlite3.connect(":memory:")
    state: dict = {}
    con.set_progress_handler(sqlite_budget(1.0, state), 10_000)
    t0 = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        con.execute("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) "
                    "SELECT count(*) FROM r").fetchall()
    assert state["out"] and time.monotonic() - t0 < 30


def test_an_optuna_db_with_a_recursive_view_never_hangs_the_analysis(exp):
    (exp / "optuna.db").unlink()
    _recursive_view_db(exp / "optuna.db")
    results = load_results([exp])
    t0 = time.monotonic()
    try:
        assert load_studies(results, budget_s=1.0) == {}
    except AnalysisError as exc:  # the budget ran out: exit 2
        assert "took over 1 s" in str(exc)
    assert time.monotonic() - t0 < 60


def test_an_optuna_db_linked_out_of_the_experiment_is_not_opened(exp, tmp_path):
    outside = tmp_path / "outside.db"
    (exp / "optuna.db").rename(outside)
    (exp / "optuna.db").symlink_to(outside)
    results = load_results([exp])
    assert load_studies(results) == {}
    assert any("symbolic link out of the experiment" in n for n in results.notes)


# --------------------------------------------------------------------------------------------
# The sweep's own study database


def test_a_database_that_cannot_be_reached_is_a_note(exp):
    pytest.importorskip("psycopg", reason="psycopg is in the [cluster] and [dev] extras")
    import yaml

    raw = yaml.safe_load((exp / "config.yaml").read_text())
    raw["search"] = {"optuna_storage": "postgresql+psycopg://u:S3CRET@127.0.0.1:9/db"}
    (exp / "config.yaml").write_text(yaml.safe_dump(raw))
    ok(cli(exp))
    md = _report(exp)[0]
    assert "could not be read" in md and "S3CRET" not in md


def test_a_saved_url_without_its_password_says_how_to_give_it(exp, tmp_path):
    import yaml

    raw = yaml.safe_load((exp / "config.yaml").read_text())
    raw["search"] = {"optuna_storage": "postgresql+psycopg://u:***@127.0.0.1:9/db"}
    (exp / "config.yaml").write_text(yaml.safe_dump(raw))
    env = {"PGPASSWORD": "", "PGPASSFILE": str(tmp_path / "none")}
    ok(cli(exp, env_extra=env))
    assert "set PGPASSWORD" in _report(exp)[0]
