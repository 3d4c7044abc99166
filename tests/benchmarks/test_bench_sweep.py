"""benchmarks/bench_sweep.py --smoke-test: each benchmark's table prints with finite positive numbers."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "bench_sweep.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("RAY_ADDRESS", None)  # the benchmark starts its own local Ray; never a cluster's
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True,
                          timeout=900, env=env, cwd=ROOT)


def _cells(stdout: str, label: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in stdout.splitlines()
            if line.startswith(f"| {label}")]


def _positive(text: str) -> float:
    value = float(text)
    assert math.isfinite(value) and value > 0, text
    return value


def test_overhead_smoke_prints_fixed_cost_and_duty_cycle_for_both_arms():
    out = _run("overhead", "--smoke-test")
    assert out.returncode == 0, out.stderr[-3000:]
    for label in ("A fresh actors", "B reuse_actors"):
        (row,) = _cells(out.stdout, label)
        wall, busy, _, duty, fixed = (_positive(v) for v in row[2:7])
        assert duty <= 1.0 and busy < wall * 2, row  # 2 trials at once: busy time fits in 2 x wall
        assert int(row[7]) >= 1  # actors
        assert float(row[9]) < 0.02, row  # same seed, same metrics with or without actor reuse
    # Fresh actors: one process per trial (4 trials).
    assert int(_cells(out.stdout, "A fresh actors")[0][7]) == 4
    assert re.search(r"median fixed cost per trial: A [0-9.]+ s, B [0-9.]+ s; ratio B/A [0-9.]+", out.stdout)


def test_asha_smoke_prints_epochs_and_best_accuracy_with_and_without_early_stopping():
    """Both halvings against one run without early stopping (3 trials per arm, a rung at epoch 1)."""
    out = _run("asha", "--smoke-test", "--schedule", "sync,1,3", "--schedule", "async,1,3",
               "--replay", "sync,1,3", "--confirm", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    def search_row(label):  # the search table's row (12 cells; the retrained table's have 7)
        (row,) = [r for r in _cells(out.stdout, label) if len(r) == 12]
        return row

    off, sync = search_row("no early stopping"), search_row("sync g1 rf3")
    asynchronous = search_row("async g1 rf3")
    assert int(off[3]) == 0  # nothing stopped early without a scheduler
    for on in (sync, asynchronous):
        assert int(on[4]) <= int(off[4])  # early stopping never trains more epochs than the search without it
    # Synchronous: per arm, the best of 3 at epoch 1 goes on to 4 epochs, the other 2 stop: 2 x (4 + 1 + 1).
    assert int(sync[3]) == 4 and int(sync[4]) == 12, sync
    for row in (off, sync, asynchronous):
        _positive(row[1]), _positive(row[4])
        accs = [float(v) for v in row[6:8]]
        assert all(0 <= a <= 1 for a in accs), row
    # The replay of the run without early stopping cuts what the real synchronous run cut, and picks
    # the same configurations with the same accuracy: a trial's curve depends only on its lr and seed.
    replay = search_row("replay sync g1 rf3")
    assert replay[1] == "-" and replay[2:] == sync[2:], (replay, sync)
    match = re.search(r"^sync g1 rf3 trained ([0-9.]+) of the epochs", out.stdout, re.MULTILINE)
    assert match and float(match.group(1)) == round(12 / 24, 2)
    # --confirm 1: each real run's chosen configurations retrained on the same fresh seed, test accuracy
    retrained = [r for r in _cells(out.stdout, "") if len(r) == 7 and "±" in r[1]]
    assert [r[0] for r in retrained] == ["no early stopping", "sync g1 rf3", "async g1 rf3"], out.stdout
    assert all(0 <= float(r[i].split("±")[0]) <= 1 for r in retrained for i in (1, 2))
    assert [float(v) for v in retrained[0][3:5]] == [0.0, 0.0]  # the baseline against itself
    assert "worst confirmed test-acc change" in out.stdout


@pytest.mark.parametrize("flags,message", [(("--schedule", "sync,0,3"), "--schedule 'sync,0,3'"),
                                           (("--replay", "async,1,3"), "--replay: only synchronous"),
                                           (("--confirm", "-1"), "--confirm must be >= 0")])
def test_asha_refuses_bad_flags_before_ray_starts(flags, message):
    out = _run("asha", "--smoke-test", *flags)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_gpu_packing_smoke_runs_on_cpu_with_one_and_two_loops_per_backend():
    import importlib.util

    out = _run("gpu-packing", "--smoke-test")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {(r[0], int(r[1])): r for r in _cells(out.stdout, "") if len(r) > 2 and r[1].isdigit()}
    backends = [b for b in ("jax", "tensorflow") if importlib.util.find_spec(b) is not None]
    assert sorted(rows) == sorted((b, k) for b in backends for k in (1, 2)), out.stdout
    for row in rows.values():
        _positive(row[2]), _positive(row[3]), _positive(row[4])
        assert row[5] == "n/a" or 0 <= float(row[5]) <= 100  # no nvidia-smi on a CPU machine
    for backend in backends:
        assert float(rows[backend, 1][4]) == 1.0
    for backend in {"jax", "tensorflow"} - set(backends):
        assert f"# {backend}: not installed, not measured" in out.stdout


def test_replicate_smoke_runs_one_replicate_in_each_tree_and_prints_the_ratio():
    """Both "trees" are this checkout here: the table has one old and one new row with positive wall
    times, and the ratio line is their quotient."""
    out = _run("replicate", "--smoke-test", "--old-tree", str(ROOT))
    assert out.returncode == 0, out.stderr[-3000:]
    walls = {}
    for tag in ("old", "new"):
        (row,) = _cells(out.stdout, tag)
        walls[tag] = _positive(row[3])
    ratio = float(re.search(r"ratio new/old ([0-9.]+)", out.stdout).group(1))
    assert abs(ratio - walls["new"] / walls["old"]) < 0.01, out.stdout


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    sys.path.insert(0, str(BENCH.parent))
    try:
        import bench_sweep
    finally:
        sys.path.remove(str(BENCH.parent))
    for args, message in [(["overhead", "--trials", "0"], "--trials must be >= 1"),
                          (["asha", "--max-epochs", "0"], "--max-epochs must be >= 1"),
                          (["gpu-packing", "--k", "1,x"], "--k '1,x'"),
                          (["gpu-packing", "--k", "0"], "every count must be >= 1"),
                          (["gpu-packing", "--set", "nope=1"], "--set 'nope=1'"),
                          (["gpu-packing", "--backends", "mxnet"], "--backends ['mxnet']"),
                          (["overhead", "--data-dir", str(tmp_path / "missing")], "no such file"),
                          (["replicate", "--old-tree", str(tmp_path)], "no sweeps/run.py there"),
                          (["replicate", "--old-tree", str(ROOT), "--pairs", "0"], "--pairs must be >= 1"),
                          (["replicate", "--old-tree", str(ROOT), "--config", "../x.yaml"], "not a file in"),
                          (["replicate", "--old-tree", str(ROOT), "--config", "nope.yaml"], "not a file in")]:
        assert bench_sweep.main(args) == 2, args
        out = capsys.readouterr()
        assert out.err.startswith("bench_sweep: error: ") and message in out.err, out.err
        assert out.err.count("\n") == 1 and out.out == ""
