"""benchmarks/bench_trainable.py --smoke-test: the table prints and the ratio is a finite positive number."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "bench_trainable.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=ROOT)


def test_smoke_run_prints_both_tables_and_a_finite_positive_ratio():
    out = _run("--smoke-test", "--threads", "1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("| A plain keras fit") == 1 and out.stdout.count("| B trainable loop") == 1
    assert "# both arms: steps_per_execution=8;" in out.stdout  # the baseline is not handicapped
    match = re.search(r"median ratio B/A \(images/s\): ([-+0-9.a-z]+)", out.stdout)
    assert match, out.stdout
    ratio = float(match.group(1))
    assert math.isfinite(ratio) and ratio > 0
    assert re.search(r"\| \d+ \(config\) +\| +[0-9.]+ \|", out.stdout), out.stdout


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    sys.path.insert(0, str(BENCH.parent))
    try:
        import bench_trainable
    finally:
        sys.path.remove(str(BENCH.parent))
    for args, message in [(["--epochs", "0"], "--epochs must be >= 1"),
                          (["--set", "nope=1"], "--set 'nope=1'"),
                          (["--set", "checkpoint_every=0"], "checkpoint_every"),
                          (["--data-dir", str(tmp_path / "missing")], "no such file")]:
        assert bench_trainable.main(args) == 2, args
        out = capsys.readouterr()
        assert out.err.startswith("bench_trainable: error: ") and message in out.err, out.err
        assert out.err.count("\n") == 1 and out.out == ""
