"""Live progress of a stage, printed while Ray Tune runs it (Tune's own output is silenced).

Every ``every_s`` seconds (on a result) and whenever a trial ends, :class:`ProgressTable` prints

* a header: elapsed time, trials done/running/pending, epochs done against the planned budget
  and an ETA from the measured epoch times and the concurrency actually observed;
* one line per arm with its done/running/pending trials;
* one row per trial ("-" where a trial has not reported a value yet, never ``nan``).

When the stage ends it prints one summary line: wall time and trial-hours per arm.
Output is plain text (no ANSI codes, no carriage returns), so a log file reads like the terminal.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ray import tune

from sweeps.search import stopped_early

_COLUMNS = ("trial", "arm", "activation", "lr", "epochs", "epoch", "val_acc", "gap", "status")
_DONE = frozenset({"TERMINATED", "STOPPED_EARLY", "DIVERGED", "ERROR"})
_WAITING = frozenset({"PENDING", "PAUSED"})
_KEPT = ("epoch", "target_epochs", "val_accuracy", "generalization_gap", "diverged", "time_total_s")


@dataclass
class _TrialState:
    arm: str
    activation: str
    lr: float | None
    planned: float | None  # planned epochs: config "epochs"
    tune_status: str = "PENDING"
    result: dict[str, float] = field(default_factory=dict)  # the last result's _KEPT keys
    epoch_seconds: dict[int, float] = field(default_factory=dict)  # epoch -> measured seconds

    @property
    def status(self) -> str:
        if self.tune_status == "ERROR":
            return "ERROR"
        if self.result.get("diverged") == 1.0:
            return "DIVERGED"
        if self.tune_status == "TERMINATED" and stopped_early(self.result):
            return "STOPPED_EARLY"
        return self.tune_status

    @property
    def epochs_done(self) -> float:
        return _finite(self.result.get("epoch")) or 0.0

    @property
    def seconds(self) -> float:
        """The trial's wall time as Tune measured it (kept across restores), else its epoch times."""
        total = _finite(self.result.get("time_total_s"))
        return total if total is not None else sum(self.epoch_seconds.values())


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _fmt(value, spec: str) -> str:
    value = _finite(value)
    return "-" if value is None else format(value, spec)


def _clock_text(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _printable(text: str) -> str:
    """No control characters in a log line, whatever a config value holds."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


class ProgressTable(tune.Callback):
    """Progress of one stage (``total`` trials); see the module docstring.

    ``budget_epochs`` is the stage's planned epochs over all ``total`` trials; it sizes the trials
    Tune has not created yet (``budget_epochs / total`` each). Without it they are sized by the mean
    planned epochs of the trials created so far. ``arms`` lists arms in display order, so an arm
    shows (with zero trials) before its first trial exists.

    Holds no stream and no lambda: Tune pickles callbacks with the experiment. ``clock`` (seconds,
    monotonic) is replaceable for tests; it must stay picklable (a module-level function).
    """

    def __init__(self, stage: str, total: int, budget_epochs: int | None = None, arms: Sequence[str] = (),
                 *, every_s: float = 20.0, clock: Callable[[], float] = time.monotonic):
        if total < 0:
            raise ValueError(f"total must be >= 0 trials, got {total}")
        if budget_epochs is not None and budget_epochs < 0:
            raise ValueError(f"budget_epochs must be >= 0 or None, got {budget_epochs}")
        self.stage, self.total, self.budget_epochs = stage, total, budget_epochs
        self.arms, self.every_s, self.clock = tuple(arms), every_s, clock
        self._start: float | None = None  # clock reading at the stage start; None: not started
        self._last: float | None = None  # clock reading at the last print; None: never printed
        self._max_running = 0  # the most trials seen running at once: the concurrency achieved
        self._trials: dict[str, _TrialState] = {}

    def __setstate__(self, state: dict) -> None:
        # Clock readings from another process (a resumed run) mean nothing here: start afresh.
        self.__dict__.update(state)
        self._start = self._last = None

    # ----------------------------------------------------------------------------------------
    # Bookkeeping

    def _now(self) -> float:
        now = self.clock()
        if self._start is None:
            self._start = now
        return now

    def _observe(self, trial, status: str | None = None, result: dict | None = None) -> None:
        """Record a trial's config, latest result and status (``status`` overrides Tune's; ``result``
        overrides ``trial.last_result``, which Tune updates only after ``on_trial_result``)."""
        st = self._trials.get(trial.trial_id)
        if st is None:
            c = trial.config or {}
            st = self._trials[trial.trial_id] = _TrialState(
                arm=str(c.get("arm", "-")), activation=str(c.get("activation", "relu")),
                lr=_finite(c.get("lr")), planned=_finite(c.get("epochs")))
        r = result if result is not None else trial.last_result or {}
        if r:
            st.result = {k: r[k] for k in _KEPT if k in r}
            epoch, seconds = _finite(r.get("epoch")), _finite(r.get("epoch_seconds"))
            if epoch is not None and seconds is not None:
                st.epoch_seconds[int(epoch)] = seconds
            if st.planned is None:
                st.planned = _finite(r.get("target_epochs"))
        if status is not None:
            st.tune_status = status
        elif st.tune_status not in ("TERMINATED", "ERROR"):  # a listing may lag behind a hook
            st.tune_status = str(trial.status)

    def _observe_all(self, trials, trial=None, status: str | None = None, result: dict | None = None):
        for t in trials or ():
            if trial is None or t.trial_id != trial.trial_id:
                self._observe(t)
        if trial is not None:
            self._observe(trial, status, result)
        running = sum(st.status == "RUNNING" for st in self._trials.values())
        self._max_running = max(self._max_running, running)

    # ----------------------------------------------------------------------------------------
    # What is printed

    def _arm_order(self) -> list[str]:
        seen = dict.fromkeys(self.arms)
        seen.update(dict.fromkeys(st.arm for st in self._trials.values()))
        return list(seen)

    def _counts(self, states) -> tuple[int, int, int]:
        statuses = [st.status for st in states]
        return (sum(s in _DONE for s in statuses), sum(s == "RUNNING" for s in statuses),
                sum(s in _WAITING for s in statuses))

    def _not_created(self) -> int:
        return max(self.total - len(self._trials), 0)

    def _epochs_per_new_trial(self) -> float | None:
        if self.budget_epochs is not None and self.total > 0:
            return self.budget_epochs / self.total
        planned = [st.planned for st in self._trials.values() if st.planned is not None]
        return sum(planned) / len(planned) if planned else None

    def epochs(self) -> tuple[float, float | None, float | None]:
        """(epochs done, planned budget, epochs still to run); None where unknown."""
        new = self._epochs_per_new_trial()
        not_created = self._not_created()
        done = sum(st.epochs_done for st in self._trials.values())
        budget = 0.0 if not_created == 0 else None if new is None else not_created * new
        left = budget
        for st in self._trials.values():
            planned = st.planned if st.planned is not None else new
            if planned is None:
                budget = left = None
                break
            budget += planned
            if st.status not in _DONE:  # a finished trial runs no more epochs, whatever its plan
                left += max(planned - st.epochs_done, 0.0)
        return done, budget, left

    def eta_seconds(self) -> float | None:
        """Epochs still to run x mean measured epoch time / trials running at once; None before a
        first epoch is measured. Early stops make it an upper bound."""
        times = [s for st in self._trials.values() for s in st.epoch_seconds.values()]
        _, _, left = self.epochs()
        if not times or left is None:
            return None
        unfinished = self._not_created() + sum(st.status not in _DONE for st in self._trials.values())
        slots = min(max(self._max_running, 1), max(unfinished, 1))
        return left * (sum(times) / len(times)) / slots

    def _header(self, now: float) -> list[str]:
        done, running, waiting = self._counts(self._trials.values())
        not_created = self._not_created()
        epochs_done, budget, _ = self.epochs()
        eta = self.eta_seconds()
        lines = [f"== {self.stage} | elapsed {_clock_text(now - self._start)} | trials {done}/{self.total}"
                 f" done, {running} running, {waiting + not_created} pending"
                 f" | epochs {epochs_done:.0f}/{'?' if budget is None else f'{budget:.0f}'}"
                 f" | ETA {'--' if eta is None else _clock_text(eta)} =="]
        arms = self._arm_order()
        width = max(len(a) for a in arms) if arms else 0
        for arm in arms:
            d, r, w = self._counts(st for st in self._trials.values() if st.arm == arm)
            lines.append(f"  {arm.ljust(width)}  {d} done, {r} running, {w} pending")
        if not_created:
            lines.append(f"  ({not_created} trial{'s' * (not_created != 1)} not created yet)")
        return lines

    def _cells(self, trial_id: str, st: _TrialState) -> dict[str, str]:
        r = st.result
        return {"trial": trial_id, "arm": st.arm, "activation": st.activation, "lr": _fmt(st.lr, ".2e"),
                "epochs": _fmt(st.planned, ".0f"), "epoch": _fmt(r.get("epoch"), ".0f"),
                "val_acc": _fmt(r.get("val_accuracy"), ".4f"),
                "gap": _fmt(r.get("generalization_gap"), "+.3f"), "status": st.status}

    def print_table(self, force: bool = False) -> None:
        now = self._now()
        if not force and self._last is not None and now - self._last < self.every_s:
            return
        self._last = now
        rows = [self._cells(tid, st) for tid, st in self._trials.items()]
        widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in _COLUMNS}
        lines = self._header(now) + ["  ".join(c.ljust(widths[c]) for c in _COLUMNS).rstrip()]
        lines += ["  ".join(r[c].ljust(widths[c]) for c in _COLUMNS).rstrip() for r in rows]
        print("\n".join(_printable(line) for line in lines), file=sys.stdout, flush=True)

    def summary(self) -> str:
        """One line: wall time, trials done and trial-hours per arm."""
        wall = self._now() - self._start
        done, _, _ = self._counts(self._trials.values())
        parts = []
        for arm in self._arm_order():
            states = [st for st in self._trials.values() if st.arm == arm]
            hours = sum(st.seconds for st in states) / 3600
            parts.append(f"{arm} {hours:.3g} ({len(states)} trial{'s' * (len(states) != 1)})")
        total_h = sum(st.seconds for st in self._trials.values()) / 3600
        return _printable(f"== {self.stage} ended after {_clock_text(wall)} wall: {done}/{self.total} trials"
                          f" done; trial-hours: {', '.join(parts) or '-'}; total {total_h:.3g} ==")

    # ----------------------------------------------------------------------------------------
    # tune.Callback hooks

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        self._start, self._last = None, None
        self._now()

    def on_trial_start(self, iteration, trials, trial, **info):
        self._now()
        self._observe_all(trials, trial, "RUNNING")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._observe_all(trials, trial, str(trial.status))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._observe_all(trials, trial, "RUNNING", result)
        self.print_table()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._observe_all(trials, trial, "TERMINATED")
        self.print_table(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._observe_all(trials, trial, "ERROR")
        self.print_table(force=True)

    def on_experiment_end(self, trials, **info):
        self._observe_all(trials)
        print(self.summary(), file=sys.stdout, flush=True)
