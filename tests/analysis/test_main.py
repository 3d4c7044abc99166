"""``python -m analysis`` on a corpus of damaged and wrong inputs: never a traceback, never a write.

Every case ends in exit 2 with one line on stderr (what is wrong and the fix), or in exit 0 with a
report whose notes name the damage; and nothing under the experiment directory changes (the tree
is hashed before and after, ``report/`` excluded). Cases run ``main()`` in-process (fast); a few
run the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from analysis import load
from analysis import studies as study_reader
from analysis.__main__ import main
from tests.analysis.handmade import make_experiment, tree_digest


def _permissions_bite() -> bool:
    """Whether chmod 000 stops this process (not for root with CAP_DAC_OVERRIDE)."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe"
        probe.write_text("x")
        probe.chmod(0)
        try:
            probe.read_text()
            return False
        except PermissionError:
            return True


needs_non_root = pytest.mark.skipif(not _permissions_bite(), reason="running as root: chmod 000 does not "
                                    "stop root from reading, so the permission case cannot happen")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return make_experiment(tmp_path_factory.mktemp("template"))


@pytest.fixture
def exp(template, tmp_path) -> Path:
    dest = tmp_path / "exp"
    shutil.copytree(template, dest, symlinks=True)
    return dest


def run_checked(argv: list[str], exp: Path, capsys) -> tuple[int, str, str]:
    """Run the CLI in-process and check the invariants every input must satisfy."""
    before = tree_digest(exp)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code in (0, 2), f"exit {code}: {err}"
    assert "Traceback" not in err and "Traceback" not in out
    if code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, f"not one line: {err!r}"
        assert not out
    assert tree_digest(exp) == before, "analysis changed the experiment directory"
    return code, out, err


# --- the corpus: each case damages a copy of the handmade sweep and returns the argv -----------------

def _trial(exp: Path, stage: str = "confirm", k: int = 0) -> Path:
    return sorted(p for p in (exp / stage).iterdir() if p.is_dir())[k]


def _rewrite_rows(tdir: Path, change: Callable[[dict], None]) -> None:
    rows = [json.loads(line) for line in (tdir / "result.json").read_text().splitlines()]
    for r in rows:
        change(r)
    (tdir / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _set_params(tdir: Path, **changes) -> None:
    config = json.loads((tdir / "params.json").read_text())
    config.update(changes)
    (tdir / "params.json").write_text(json.dumps(config))


def _args(exp: Path, *extra: str) -> list[str]:
    return [str(exp), *extra]


def result_truncated(exp, tmp):
    f = _trial(exp) / "result.json"
    f.write_bytes(f.read_bytes()[:-40])  # a write cut short by a crash
    return _args(exp)


def result_binary(exp, tmp):
    (_trial(exp) / "result.json").write_bytes(bytes(range(256)) * 40)
    return _args(exp)


def result_non_utf8_line(exp, tmp):
    with open(_trial(exp) / "result.json", "ab") as fh:
        fh.write(b'{"epoch": 4.0, "note": "\xff\xfe caf\xe9"}\n')
    return _args(exp)


def result_not_objects(exp, tmp):
    with open(_trial(exp) / "result.json", "a") as fh:
        fh.write('[1, 2]\n42\n"text"\nnull\n')
    return _args(exp)


def result_empty(exp, tmp):
    (_trial(exp) / "result.json").write_bytes(b"")
    return _args(exp)


def result_is_directory(exp, tmp):
    f = _trial(exp) / "result.json"
    f.unlink()
    f.mkdir()
    return _args(exp)


def result_deep_nesting(exp, tmp):
    with open(_trial(exp) / "result.json", "a") as fh:
        fh.write("[" * 200_000 + "]" * 200_000 + "\n")
    return _args(exp)


def result_fifo(exp, tmp):
    f = _trial(exp) / "result.json"
    f.unlink()
    os.mkfifo(f)  # reading it would block forever
    return _args(exp)


def metrics_nan(exp, tmp):
    _rewrite_rows(_trial(exp), lambda r: r.update(val_accuracy=float("nan"), val_loss=float("nan")))
    return _args(exp)


def metrics_inf(exp, tmp):
    _rewrite_rows(_trial(exp), lambda r: r.update(val_loss=float("inf"), train_loss=float("-inf")))
    _rewrite_rows(_trial(exp, "search"), lambda r: r.update(test_loss=float("inf")))
    return _args(exp)


def metrics_strings(exp, tmp):
    _rewrite_rows(_trial(exp), lambda r: r.update(val_accuracy="high", epoch_seconds="fast"))
    return _args(exp)


def metrics_containers(exp, tmp):
    _rewrite_rows(_trial(exp), lambda r: r.update(val_loss=[1.0], train_accuracy={"v": 0.5}, diverged=None))
    return _args(exp)


def metrics_percent_accuracy(exp, tmp):
    _rewrite_rows(_trial(exp), lambda r: r.update(val_accuracy=r["val_accuracy"] * 100))
    return _args(exp)


def metrics_huge_integer(exp, tmp):
    f = _trial(exp) / "result.json"
    f.write_text(f.read_text().replace('"val_loss": ', '"val_loss": 1' + "0" * 400 + ', "x": ', 1))
    return _args(exp)


def epoch_missing(exp, tmp):
    _rewrite_rows(_trial(exp), lambda r: [r.pop("epoch"), r.pop("training_iteration")])
    return _args(exp)


def epoch_string(exp, tmp):
    _rewrite_rows(_trial(exp), lambda r: r.update(epoch="one"))
    return _args(exp)


def trial_id_not_a_string(exp, tmp):
    _rewrite_rows(_trial(exp), lambda r: r.update(trial_id=[1, 2]))
    return _args(exp)


def every_confirm_result_corrupt(exp, tmp):
    for f in (exp / "confirm").glob("*/result.json"):
        f.write_text("{not json\n")
    return _args(exp)


def no_results_yet(exp, tmp):
    for f in exp.glob("*/*/result.json"):
        f.unlink()
    return _args(exp)


def params_list(exp, tmp):
    (_trial(exp) / "params.json").write_text("[1, 2, 3]")
    return _args(exp)


def params_missing(exp, tmp):
    (_trial(exp) / "params.json").unlink()
    return _args(exp)


def params_invalid_json(exp, tmp):
    (_trial(exp) / "params.json").write_text('{"arm": relu,')
    return _args(exp)


def params_huge(exp, tmp):
    (_trial(exp) / "params.json").write_text(json.dumps({"arm": "relu", "pad": "x" * (2 << 20)}))
    return _args(exp)


def params_non_utf8(exp, tmp):
    (_trial(exp) / "params.json").write_bytes(b'{"arm": "rel\xff"}')
    return _args(exp)


def params_arm_dict(exp, tmp):
    _set_params(_trial(exp), arm={"name": "relu"})
    return _args(exp)


def params_replicate_text(exp, tmp):
    _set_params(_trial(exp), replicate="first")
    return _args(exp)


def params_lr_text(exp, tmp):
    _set_params(_trial(exp, "search"), lr="fast", seed=[1])
    return _args(exp)


def params_unknown_stage_bare(exp, tmp):
    _set_params(_trial(exp, "search"), stage="final")  # a bare Tune experiment takes stage from the config
    return [str(exp / "search"), "--out", str(tmp / "out")]


def params_directory(exp, tmp):
    f = _trial(exp) / "params.json"
    f.unlink()
    f.mkdir()
    return _args(exp)


def params_lone_surrogate(exp, tmp):
    _set_params(_trial(exp), arm="relu\udc80", kernel_initializer="\ud800")  # valid JSON escapes
    return _args(exp)


def state_corrupt(exp, tmp):
    f = next((exp / "search").glob("experiment_state-*.json"))
    f.write_text(f.read_text()[:100])
    return _args(exp)


def state_wrong_layout(exp, tmp):
    next((exp / "search").glob("experiment_state-*.json")).write_text('{"trial_data": {"a": 1}}')
    next((exp / "confirm").glob("experiment_state-*.json")).write_text('{"trial_data": [[5, 6], []]}')
    return _args(exp)


def state_binary(exp, tmp):
    next((exp / "search").glob("experiment_state-*.json")).write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    return _args(exp)


def state_directory(exp, tmp):
    (exp / "search" / "experiment_state-2030-01-01_00-00-00.json").mkdir()  # the newest name
    return _args(exp)


def optuna_corrupt(exp, tmp):
    db = exp / "optuna.db"
    data = bytearray(db.read_bytes())
    data[100:] = bytes(len(data) - 100)  # header intact, every page zeroed
    db.write_bytes(bytes(data))
    return _args(exp)


def optuna_truncated(exp, tmp):
    db = exp / "optuna.db"
    db.write_bytes(db.read_bytes()[:4096])
    return _args(exp)


def optuna_empty(exp, tmp):
    (exp / "optuna.db").write_bytes(b"")
    return _args(exp)


def optuna_not_sqlite(exp, tmp):
    (exp / "optuna.db").write_text("this is not a database\n")
    return _args(exp)


def optuna_directory(exp, tmp):
    (exp / "optuna.db").unlink()
    (exp / "optuna.db").mkdir()
    return _args(exp)


def optuna_foreign_schema(exp, tmp):
    (exp / "optuna.db").unlink()
    con = sqlite3.connect(exp / "optuna.db")
    con.execute("create table notes (x text)")
    con.commit()
    con.close()
    return _args(exp)


def config_not_yaml(exp, tmp):
    (exp / "config.yaml").write_text("arms: [relu, {selu\n  : - ]")
    return _args(exp)


def config_a_list(exp, tmp):
    (exp / "config.yaml").write_text("- relu\n- selu\n")
    return _args(exp)


def config_binary(exp, tmp):
    (exp / "config.yaml").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    return _args(exp)


def config_missing(exp, tmp):
    (exp / "config.yaml").unlink()
    return _args(exp)


def data_json_corrupt(exp, tmp):
    (exp / "data.json").write_text('{"train": 400,')
    return _args(exp)


def symlink_loop_trial(exp, tmp):
    (exp / "search" / "loop").symlink_to("loop")
    return _args(exp)


def symlink_loop_params(exp, tmp):
    f = _trial(exp) / "params.json"
    f.unlink()
    f.symlink_to("params.json")
    return _args(exp)


def non_utf8_trial_dir(exp, tmp):
    t = _trial(exp)
    (t / "result.json").unlink()
    os.rename(t, os.path.join(os.fsencode(t.parent), b"train_cnn_\xff\xfe"))
    return _args(exp)


def newline_in_trial_dir(exp, tmp):
    t = _trial(exp)
    (t / "result.json").unlink()
    t.rename(t.parent / "train\nrelu")
    return _args(exp)


def duplicate_trial(exp, tmp):
    t = _trial(exp)
    shutil.copytree(t, t.parent / "zz_copy_of_a_trial")
    return _args(exp)


def unreadable_trial_dir(exp, tmp):
    _trial(exp).chmod(0)
    return _args(exp)


def unreadable_stage_dir(exp, tmp):
    (exp / "confirm").chmod(0)
    return _args(exp)


def unreadable_experiment(exp, tmp):
    exp.chmod(0)
    return _args(exp)


def unreadable_params(exp, tmp):
    (_trial(exp) / "params.json").chmod(0)
    return _args(exp)


def symlink_loop_experiment(exp, tmp):
    (tmp / "loop").symlink_to("loop")
    return [str(tmp / "loop")]


def non_utf8_experiment_path(exp, tmp):
    bad = os.path.join(os.fsencode(tmp), b"exp\xff")
    os.symlink(os.fsencode(exp), bad)
    return [os.fsdecode(bad)]


def empty_dir(exp, tmp):
    (tmp / "empty").mkdir()
    return [str(tmp / "empty")]


def empty_stage_dirs(exp, tmp):
    (tmp / "bare" / "search").mkdir(parents=True)
    (tmp / "bare" / "confirm").mkdir()
    return [str(tmp / "bare")]


def every_params_corrupt(exp, tmp):
    for f in exp.glob("*/*/params.json"):
        f.write_text("not json")
    return _args(exp)


def file_as_experiment(exp, tmp):
    return [str(exp / "config.yaml")]


def missing_dir(exp, tmp):
    return [str(tmp / "does-not-exist")]


def empty_argument(exp, tmp):
    return [""]


def no_arguments(exp, tmp):
    return []


def unknown_option(exp, tmp):
    return _args(exp, "--colour")


def out_is_a_file(exp, tmp):
    (tmp / "out.txt").write_text("keep me")
    return _args(exp, "--out", str(tmp / "out.txt"))


def out_under_a_file(exp, tmp):
    (tmp / "out.txt").write_text("keep me")
    return _args(exp, "--out", str(tmp / "out.txt" / "report"))


def out_inside_experiment(exp, tmp):
    return _args(exp, "--out", str(exp / "search"))


def out_is_the_experiment(exp, tmp):
    return _args(exp, "--out", str(exp))


def report_path_is_a_file(exp, tmp):
    (exp / "report").write_text("not a directory")
    return _args(exp)


def report_links_into_experiment(exp, tmp):
    (exp / "report").symlink_to("search")
    return _args(exp)


def out_symlink_loop(exp, tmp):
    (tmp / "outloop").symlink_to("outloop")
    return _args(exp, "--out", str(tmp / "outloop"))


# (setup, exit code, text expected in stderr (exit 2) or in report.md (exit 0); None: only the invariants)
CASES = [
    (result_truncated, 0, "not valid JSON"),
    (result_binary, 0, "not valid JSON"),
    (result_non_utf8_line, 0, "not valid JSON"),
    (result_not_objects, 0, "4 line(s) not valid JSON"),
    (result_empty, 0, "no results yet"),
    (result_is_directory, 0, "is a directory"),
    (result_deep_nesting, 0, "not valid JSON"),
    (result_fifo, 0, "not a regular file"),
    (metrics_nan, 0, None),
    (metrics_inf, 0, None),
    (metrics_strings, 0, "val_accuracy (not a number in [0, 1]), epoch_seconds (not a number)"),
    (metrics_containers, 0, "train_accuracy (not a number in [0, 1]), val_loss (not a number)"),
    (metrics_percent_accuracy, 0, "val_accuracy (not a number in [0, 1])"),
    (metrics_huge_integer, 0, None),
    (epoch_missing, 0, "3 row(s) without a valid epoch dropped"),
    (epoch_string, 0, "epoch (not a number)"),
    (trial_id_not_a_string, 0, None),
    (every_confirm_result_corrupt, 0, "not valid JSON"),
    (no_results_yet, 0, "no results yet"),
    (params_list, 0, "params.json: not valid JSON object; trial skipped"),
    (params_missing, 0, "params.json: missing; trial skipped"),
    (params_invalid_json, 0, "params.json: not valid JSON object"),
    (params_huge, 0, "over the 1.0 MB"),
    (params_non_utf8, 0, "params.json: not UTF-8"),
    (params_arm_dict, 0, "'arm' is dict, expected a string; trial skipped"),
    (params_replicate_text, 0, "'replicate' is 'first', expected an integer >= 0"),
    (params_lr_text, 0, "'lr' is str, expected a number"),
    (params_unknown_stage_bare, 0, "'stage' is 'final', expected one of 'search', 'confirm', 'original'"),
    (params_directory, 0, "params.json: is a directory"),
    (params_lone_surrogate, 0, None),
    (state_corrupt, 0, "not valid JSON; trial statuses taken from an older state file"),
    (state_wrong_layout, 0, "unexpected layout"),
    (state_binary, 0, "not UTF-8"),
    (state_directory, 0, "is a directory, not a file"),
    (optuna_corrupt, 0, "optuna.db: could not be read"),
    (optuna_truncated, 0, "optuna.db: could not be read"),
    (optuna_empty, 0, "optuna.db: empty file"),
    (optuna_not_sqlite, 0, "optuna.db: not an SQLite database"),
    (optuna_directory, 0, "optuna.db: is a directory, not a file"),
    (optuna_foreign_schema, 0, "optuna.db: could not be read"),
    (config_not_yaml, 0, "config.yaml: not valid YAML mapping; ignored"),
    (config_a_list, 0, "config.yaml: not valid YAML mapping"),
    (config_binary, 0, "config.yaml: not UTF-8"),
    (config_missing, 0, "no config.yaml"),
    (data_json_corrupt, 0, "data.json: not valid JSON object; ignored"),
    (symlink_loop_trial, 0, None),
    (symlink_loop_params, 0, "symbolic links"),
    (non_utf8_trial_dir, 0, "no results yet"),
    (newline_in_trial_dir, 0, "train\\nrelu: no results yet"),
    (duplicate_trial, 0, "same trial_id"),
    pytest.param(unreadable_trial_dir, 0, "Permission denied", marks=needs_non_root),
    pytest.param(unreadable_stage_dir, 0, "cannot list", marks=needs_non_root),
    pytest.param(unreadable_params, 0, "Permission denied", marks=needs_non_root),
    pytest.param(unreadable_experiment, 2, "cannot list its contents", marks=needs_non_root),
    (symlink_loop_experiment, 2, "cannot be opened (Too many levels of symbolic links)"),
    (non_utf8_experiment_path, 2, "not valid UTF-8"),
    (empty_dir, 2, "not an experiment"),
    (empty_stage_dirs, 2, "no trials with results yet"),
    (every_params_corrupt, 2, "no readable trials"),
    (file_as_experiment, 2, "not a directory"),
    (missing_dir, 2, "no such directory"),
    (empty_argument, 2, "empty path"),
    (no_arguments, 2, "required: EXPERIMENT_DIR"),
    (unknown_option, 2, "unrecognized arguments: --colour"),
    (out_is_a_file, 2, "exists and is not a directory"),
    (out_under_a_file, 2, "is a file, not a directory"),
    (out_inside_experiment, 2, "inside the experiment"),
    (out_is_the_experiment, 2, "inside the experiment"),
    (report_path_is_a_file, 2, "exists and is not a directory"),
    (report_links_into_experiment, 2, "inside the experiment"),
    (out_symlink_loop, 2, "cannot be resolved"),
]


def _case_id(case) -> str:
    return (case.values[0] if hasattr(case, "values") else case[0]).__name__


# Cases whose odd values reach the plots draw real figures; the others skip the rendering (most of
# a report's time) so that the corpus stays fast.
DRAWN = {no_results_yet, metrics_nan, metrics_inf, metrics_strings, metrics_percent_accuracy,
         every_confirm_result_corrupt, params_lone_surrogate, non_utf8_trial_dir, params_unknown_stage_bare}


@pytest.mark.parametrize("setup, code, expected", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_exits_cleanly_and_changes_nothing(setup, code, expected, exp, tmp_path, capsys,
                                                     monkeypatch):
    if setup not in DRAWN:
        import matplotlib.figure

        monkeypatch.setattr(matplotlib.figure.Figure, "tight_layout", lambda self, **kw: None)
        monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                            lambda self, fname, **kw: Path(fname).write_bytes(b"\x89PNG\r\n\x1a\n"))
    argv = setup(exp, tmp_path)
    try:
        got, out, err = run_checked(argv, exp, capsys)
    finally:  # let pytest clean up what the permission cases locked
        for p in [tmp_path, *tmp_path.rglob("*")]:
            if not p.is_symlink() and p.exists():
                p.chmod(p.stat().st_mode | stat.S_IRWXU)
    assert got == code, f"expected exit {code}, got {got}: {err}"
    if code == 2:
        assert expected in err
        return
    report = Path(out.split()[1])
    assert report.name == "report.md" and not str(report).startswith(str(exp / "search"))
    # The notes are Markdown-escaped in the report (file-controlled text is data): compare unescaped.
    text = re.sub(r"\\([\\`*_{}\[\]()#+\-.!|<>~])", r"\1", report.read_text())
    assert expected is None or expected in text, f"{expected!r} not among the report's notes"
    assert "## Verdict" in text


@pytest.mark.parametrize("mode, readable", [("EXCLUSIVE", False), ("IMMEDIATE", True)])
def test_optuna_db_held_by_a_writer(exp, capsys, monkeypatch, mode, readable):
    """A sweep writing to optuna.db: an exclusive lock makes the studies unreadable (noted after
    SQLITE_TIMEOUT_S; the report is still written); a reserved one (a pending write) lets the
    committed studies be read."""
    monkeypatch.setattr(study_reader, "SQLITE_TIMEOUT_S", 0.2)
    writer = sqlite3.connect(exp / "optuna.db", isolation_level=None)
    try:
        writer.execute(f"BEGIN {mode}")
        writer.execute("UPDATE studies SET study_name = study_name || '-renamed'")
        res = load.load_results([exp])
        studies = study_reader.load_studies(res)
        code, _, _ = run_checked([str(exp)], exp, capsys)  # digests taken while the lock is held
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert code == 0
    assert set(studies) == ({"exp-relu", "exp-selu"} if readable else set())
    assert any("locked by a writer" in n for n in res.notes) is not readable
    text = (exp / "report" / "report.md").read_text()
    assert ("locked by a writer" in text) is not readable


def test_optuna_db_is_opened_read_only(exp):
    """The database's bytes and mtime are unchanged, no journal is created, and the studies load."""
    db = exp / "optuna.db"
    before = (db.read_bytes(), db.stat().st_mtime_ns, sorted(os.listdir(exp)))
    res = load.load_results([exp])
    studies = study_reader.load_studies(res)
    assert set(studies) == {"exp-relu", "exp-selu"}
    assert all(len(s.trials) == 6 for s in studies.values())
    assert (db.read_bytes(), db.stat().st_mtime_ns, sorted(os.listdir(exp))) == before


def test_readonly_url_refuses_writes_and_never_creates(tmp_path):
    import optuna

    missing = tmp_path / "dir with spaces #1" / "optuna.db"
    missing.parent.mkdir()
    with pytest.raises(optuna.exceptions.StorageInternalError):
        optuna.storages.RDBStorage(study_reader.readonly_sqlite_url(missing), skip_table_creation=True,
                                   skip_compatibility_check=True)
    assert not missing.exists()
    url = f"sqlite:///{missing}"
    optuna.create_study(study_name="s", storage=url)
    storage = optuna.storages.RDBStorage(study_reader.readonly_sqlite_url(missing), skip_table_creation=True,
                                         skip_compatibility_check=True)
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["s"]
    with pytest.raises(optuna.exceptions.StorageInternalError) as err:
        optuna.create_study(study_name="t", storage=storage)
    chain, exc = [], err.value
    while exc is not None:  # Optuna wraps sqlite3's error
        chain.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    assert any("readonly database" in m for m in chain), chain


def test_default_out_is_the_experiments_report_folder(exp, capsys):
    code, out, _ = run_checked([str(exp)], exp, capsys)
    assert code == 0 and out.split()[1] == str(exp / "report" / "report.md")
    assert sorted(p.name for p in exp.iterdir()) == ["config.yaml", "confirm", "data.json", "optuna.db",
                                                     "report", "search"]


# --- the real CLI, in a subprocess -------------------------------------------------------------------

def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-m", "analysis", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def test_cli_subprocess_damaged_sweep_writes_report_with_notes(exp, tmp_path):
    result_truncated(exp, tmp_path)
    optuna_not_sqlite(exp, tmp_path)
    before = tree_digest(exp)
    proc = _cli(str(exp), "--out", str(tmp_path / "r"))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    md = (tmp_path / "r" / "report.md").read_text()
    assert "not valid JSON" in md and "not an SQLite database" in md
    assert tree_digest(exp) == before


@pytest.mark.parametrize("args, message", [
    (["{tmp}/nope"], "no such directory"),
    (["{exp}", "--out", "{exp}/confirm"], "inside the experiment"),
    (["--out"], "expected one argument"),
])
def test_cli_subprocess_bad_input_exits_2_with_one_line(exp, tmp_path, args, message):
    before = tree_digest(exp)
    proc = _cli(*(a.format(tmp=tmp_path, exp=exp) for a in args))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert not proc.stdout and tree_digest(exp) == before
    assert not (tmp_path / "nope").exists()


def test_a_bug_is_one_line_exit_1_and_debug_shows_the_traceback(exp, capsys, monkeypatch):
    import analysis.report

    def broken(paths, out, optuna_storage=None):
        raise KeyError("final_val_accuracy")

    monkeypatch.setattr(analysis.report, "write_report", broken)
    assert main([str(exp)]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("internal error: KeyError") and err.count("\n") == 1 and "--debug" in err
    with pytest.raises(KeyError):
        main([str(exp), "--debug"])


def test_two_experiments_and_their_reports(exp, tmp_path, capsys, monkeypatch):
    """Several experiments: the report goes to ./report; an experiment's own report/ is fine as --out."""
    other = tmp_path / "other"
    shutil.copytree(exp, other)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_checked([str(exp), str(other)], exp, capsys)
    assert code == 0 and Path(out.split()[1]) == Path("report") / "report.md"
    code, out, _ = run_checked([str(exp), str(other), "--out", str(other / "report")], exp, capsys)
    assert code == 0 and (other / "report" / "report.md").exists()
    code, _, err = run_checked([str(exp), str(other), "--out", str(other / "confirm")], exp, capsys)
    assert code == 2 and f"inside the experiment {other}" in err
