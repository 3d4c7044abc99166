"""sweeps/progress.py: what a user watches (or finds in a log file) while a stage runs.

The callback is driven with fake trials and an injected clock; no Ray instance is needed.
"""

import pickle
import re

from sweeps.progress import ProgressTable


class FakeClock:
    """A monotonic clock the test moves by hand (module-level, so a table holding it pickles)."""

    def __init__(self, now: float = 5.0):  # 5 s: a machine booted moments ago
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeTrial:
    """The attributes of ray.tune.experiment.Trial that the table reads."""

    def __init__(self, trial_id, arm="selu-done-right", epochs=5, status="PENDING", lr=1e-3):
        self.trial_id, self.status = trial_id, status
        self.config = {"arm": arm, "activation": "selu" if "selu" in arm else "relu", "lr": lr,
                       "epochs": epochs}
        self.last_result: dict = {}

    def report(self, epoch, seconds=10.0, diverged=0.0, **extra) -> dict:
        """The result the trainable reports for ``epoch``; stored as Tune does after the callback."""
        result = {"epoch": float(epoch), "target_epochs": float(self.config["epochs"]),
                  "val_accuracy": 0.5, "generalization_gap": 0.1, "diverged": diverged,
                  "epoch_seconds": seconds, **extra}
        self.last_result = result
        return result


def _table(**kwargs):
    clock = FakeClock()
    kwargs.setdefault("every_s", 3600)
    return ProgressTable(clock=clock, **kwargs), clock


def _start(table, listing, trial):
    trial.status = "RUNNING"  # as Tune has set it when on_trial_start runs
    table.on_trial_start(0, listing, trial)


def _header(out: str, stage: str) -> str:
    return [line for line in out.splitlines() if line.startswith(f"== {stage} |")][-1]


def _rows(out: str) -> dict[str, list[str]]:
    """Table rows of the last printed table, by trial id."""
    block = out.split("\ntrial ")[-1].splitlines()[1:]
    return {line.split()[0]: line.split() for line in block if line and not line.startswith("==")}


def test_table_counts_done_trials_and_names_how_each_ended(capsys):
    table, _ = _table(stage="search", total=4)
    a, b, c = FakeTrial("a", epochs=5), FakeTrial("b", epochs=9), FakeTrial("c", epochs=9)
    a.report(5), b.report(2), c.report(1, diverged=1.0)
    _start(table, [], a)
    for t in (a, b, c):
        table.on_trial_complete(0, [], t)
    out = capsys.readouterr().out
    assert "trials 3/4 done, 0 running, 1 pending" in _header(out, "search")
    assert out.splitlines()[-4].split() == ["trial", "arm", "activation", "lr", "epochs", "epoch", "val_acc",
                                            "gap", "status"]
    rows = _rows(out)
    assert rows["a"][-1] == "TERMINATED" and rows["b"][-1] == "STOPPED_EARLY" and rows["c"][-1] == "DIVERGED"
    assert rows["a"][1:3] == ["selu-done-right", "selu"]


def test_a_failed_trial_shows_error_and_counts_as_done(capsys):
    table, _ = _table(stage="search", total=1)
    t = FakeTrial("a")
    t.report(2)
    table.on_trial_error(0, [t], t)
    out = capsys.readouterr().out
    assert _rows(out)["a"][-1] == "ERROR" and "trials 1/1 done" in out


def test_results_print_at_most_every_period_even_just_after_boot(capsys):
    table, clock = _table(stage="confirm", total=1, every_s=20)
    t = FakeTrial("a")
    table.on_trial_result(0, [t], t, t.report(1))  # first result: printed although the clock reads 5 s
    clock.now += 10
    table.on_trial_result(0, [t], t, t.report(2))  # 10 s later: within the period, not printed
    assert capsys.readouterr().out.count("== confirm") == 1
    clock.now += 10
    table.on_trial_result(0, [t], t, t.report(3))  # 20 s after the first print: printed
    assert capsys.readouterr().out.count("== confirm") == 1
    clock.now += 1
    table.on_trial_complete(0, [t], t)  # a trial ending always prints
    assert capsys.readouterr().out.count("== confirm") == 1


def test_eta_uses_mean_epoch_time_and_observed_concurrency(capsys):
    # 4 trials of 10 epochs (budget 40); 2 run at once, 2 not created yet.
    table, clock = _table(stage="search", total=4, budget_epochs=40, every_s=0)
    clock.now = 100.0
    a, b = FakeTrial("a", epochs=10), FakeTrial("b", epochs=10)
    table.setup()
    _start(table, [a], a)
    table.print_table(force=True)
    assert "ETA --" in _header(capsys.readouterr().out, "search")  # nothing measured yet
    _start(table, [a, b], b)
    clock.now = 190.0
    for trial, seconds in ((a, 20.0), (b, 30.0), (a, 40.0), (b, 30.0)):
        epoch = 1 if trial.last_result == {} else 2
        table.on_trial_result(0, [a, b], trial, trial.report(epoch, seconds))
    # left: (10-2) + (10-2) + 2 trials x 10 = 36 epochs; 36 x 30 s mean / 2 running = 540 s
    assert _header(capsys.readouterr().out, "search") == (
        "== search | elapsed 0:01:30 | trials 0/4 done, 2 running, 2 pending | epochs 4/40 | ETA 0:09:00 ==")


def test_eta_concurrency_is_capped_by_the_trials_left(capsys):
    table, _ = _table(stage="confirm", total=3, every_s=0)
    trials = [FakeTrial(t, epochs=4) for t in "abc"]
    for t in trials:
        _start(table, trials, t)
    for t in trials[:2]:
        t.report(4, seconds=60.0)
        table.on_trial_complete(0, trials, t)
    c = trials[2]
    table.on_trial_result(0, trials, c, c.report(1, seconds=60.0))
    # 3 epochs left on 1 trial: 3 x 60 s, not divided by the 3 trials that ran at once earlier
    assert "| epochs 9/12 | ETA 0:03:00 ==" in capsys.readouterr().out


def test_counts_per_arm_include_pending_and_not_created_trials(capsys):
    table, _ = _table(stage="search", total=6, arms=("relu-baseline", "selu-done-right", "selu-naive"))
    r1, r2 = FakeTrial("r1", arm="relu-baseline"), FakeTrial("r2", arm="relu-baseline")
    s1, s2 = FakeTrial("s1"), FakeTrial("s2")
    listing = [r1, r2, s1, s2]
    _start(table, listing, r1)
    _start(table, listing, r2)
    r1.report(5)
    table.on_trial_complete(0, listing, r1)
    out = capsys.readouterr().out.splitlines()
    assert "trials 1/6 done, 1 running, 4 pending" in out[-10]
    assert out[-9:-5] == ["  relu-baseline    1 done, 1 running, 0 pending",
                          "  selu-done-right  0 done, 0 running, 2 pending",
                          "  selu-naive       0 done, 0 running, 0 pending",
                          "  (2 trials not created yet)"]


def test_a_trial_without_results_shows_dashes_not_nan(capsys):
    table, _ = _table(stage="search", total=2)
    waiting, broken = FakeTrial("waiting"), FakeTrial("broken", status="RUNNING")
    broken.report(1, val_accuracy=float("nan"), generalization_gap=float("nan"))
    table.on_trial_complete(0, [waiting, broken], broken)
    out = capsys.readouterr().out
    assert "nan" not in out.lower()
    assert _rows(out)["waiting"][5:] == ["-", "-", "-", "PENDING"]
    assert _rows(out)["broken"][5:] == ["1", "-", "-", "STOPPED_EARLY"]


def test_the_result_being_reported_is_shown_not_the_previous_one(capsys):
    # Tune calls on_trial_result before it stores the result in trial.last_result.
    table, _ = _table(stage="search", total=1)
    t = FakeTrial("a")
    t.report(1)
    table.on_trial_result(0, [t], t, {**t.last_result, "epoch": 2.0, "val_accuracy": 0.75})
    assert _rows(capsys.readouterr().out)["a"][5:7] == ["2", "0.7500"]


def test_a_finished_trial_stays_finished_when_the_listing_lags(capsys):
    table, _ = _table(stage="search", total=2, every_s=0)
    a, b = FakeTrial("a", status="RUNNING"), FakeTrial("b", status="RUNNING")
    a.report(5)
    table.on_trial_complete(0, [a, b], a)  # Tune still lists a as RUNNING while it stops
    table.on_trial_result(0, [a, b], b, b.report(1))
    assert _rows(capsys.readouterr().out)["a"][-1] == "TERMINATED"


def test_output_has_no_control_characters(capsys):
    table, clock = _table(stage="search", total=3, every_s=0)
    a, b = FakeTrial("a", arm="relu\x1b[31m\r"), FakeTrial("b")
    table.setup()
    _start(table, [a, b], a)
    table.on_trial_result(0, [a, b], a, a.report(1))
    clock.now += 30
    table.on_trial_complete(0, [a, b], a)
    table.on_experiment_end([a, b])
    out = capsys.readouterr().out
    assert out.count("== search") == 3
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", out)


def test_summary_line_gives_wall_time_and_trial_hours_per_arm(capsys):
    table, clock = _table(stage="confirm", total=3, arms=("relu-baseline", "selu-done-right"))
    table.setup()
    r1, r2, s1 = FakeTrial("r1", arm="relu-baseline"), FakeTrial("r2", arm="relu-baseline"), FakeTrial("s1")
    for t in (r1, r2, s1):
        _start(table, [r1, r2, s1], t)
    # Tune's cumulative trial time when reported (it survives restores), else the summed epoch times
    r1.report(5, seconds=300.0, time_total_s=1800.0)
    r2.report(5, seconds=300.0, time_total_s=3600.0)
    table.on_trial_result(0, [r1, r2, s1], s1, s1.report(1, seconds=900.0))
    s1.report(2, seconds=900.0)
    clock.now += 2 * 3600 + 5
    for t in (r1, r2, s1):
        t.status = "TERMINATED"
    table.on_experiment_end([r1, r2, s1])
    assert capsys.readouterr().out.splitlines()[-1] == (
        "== confirm ended after 2:00:05 wall: 3/3 trials done; trial-hours: relu-baseline 1.5 (2 trials), "
        "selu-done-right 0.5 (1 trial); total 2 ==")


def test_summary_wall_time_starts_at_the_stage_start_not_at_boot(capsys):
    table, clock = _table(stage="search", total=0)
    clock.now = 1000.0
    table.setup()
    clock.now = 1065.0
    table.on_experiment_end([])
    assert "ended after 0:01:05 wall: 0/0 trials done" in capsys.readouterr().out


def test_table_pickles_with_its_state_and_prints_after_unpickling(capsys):
    table = ProgressTable("search", 2, budget_epochs=10, arms=("relu-baseline",))  # the real clock
    t = FakeTrial("a", arm="relu-baseline")
    _start(table, [t], t)
    table.on_trial_result(0, [t], t, t.report(1, seconds=12.0))
    capsys.readouterr()
    restored = pickle.loads(pickle.dumps(table))
    restored.on_trial_result(0, [t], t, t.report(2, seconds=12.0))  # never printed in this process: prints
    out = capsys.readouterr().out
    assert "trials 0/2 done, 1 running, 1 pending | epochs 2/10" in out

    injected, _ = _table(stage="confirm", total=1)  # an injected module-level clock pickles too
    assert pickle.loads(pickle.dumps(injected)).clock.now == 5.0
