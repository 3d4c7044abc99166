"""Live progress of a stage, printed while Ray Tune runs it (Tune's own output is silenced).

:class:`ProgressTable` prints

* one status line per update (whenever a trial ends, and at most every ``every_s`` seconds on a
  result): elapsed time, ETA, trials done/total per arm and per replicate, and the best
  validation accuracy so far per arm (with its replicate);
* with the periodic updates only, a table of the running trials, capped at ``MAX_ROWS`` rows
  ("+N more running"), with their replicate and seed.

Trials are named ``#n`` (the n-th trial the stage created) in both stages, whatever form Tune's
ids take. When the stage ends it prints one summary line: wall time and trial-hours per arm.
Output is plain text (no ANSI codes, no carriage returns), so a log file reads like the terminal.

The ETA counts each trial's start-up (process, imports, data: the time from the trial's start to
its first result, less that first epoch) as well as its epochs, both measured in this run, and the
rate at which this run gets through that work (so idle slots and scheduling gaps count too).

Ray's callback-latency warnings ("The `callbacks.on_trial_result` operation took 0.6 s ...") are
about Tune's own bookkeeping, not the user's sweep: :func:`hide_callback_latency_warnings` drops
those records (only those, see CALLBACK_LATENCY_PREFIXES) from Ray's logger.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ray import tune

from sweeps.search import stopped_early

MAX_ROWS = 8  # running trials shown per table; the rest are counted
_COLUMNS = ("trial", "arm", "rep", "seed", "lr", "epochs", "epoch", "val_acc", "gap")
_DONE = frozenset({"TERMINATED", "STOPPED_EARLY", "DIVERGED", "ERROR"})
_WAITING = frozenset({"PENDING", "PAUSED"})
_HOW_ENDED = (("STOPPED_EARLY", "stopped early"), ("DIVERGED", "diverged"), ("ERROR", "failed"))
_KEPT = ("epoch", "target_epochs", "val_accuracy", "generalization_gap", "diverged", "time_total_s")
SLOW_CALLBACK_LOGGER = "ray.tune.utils.util"  # ray.tune.utils.util.warn_if_slow logs here


# How Tune's warn_if_slow words the time it spent handing a result to the callbacks (the trackers'
# callbacks dominate it: a W&B logging actor's start-up blocks on_trial_result for 30 s on a
# loaded machine): "The `callbacks.on_trial_result` operation took ...", "The
# `process_trial_result` operation took ...", "Processing trial results took ...".
CALLBACK_LATENCY_PREFIXES = ("The `callbacks.", "The `process_trial_result` operation",
                             "Processing trial results took")


class CallbackLatencyFilter(logging.Filter):
    """Drops Tune's callback-latency warnings (CALLBACK_LATENCY_PREFIXES); passes everything else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(CALLBACK_LATENCY_PREFIXES)


def hide_callback_latency_warnings() -> None:
    """Install :class:`CallbackLatencyFilter` on Ray's logger once (idempotent)."""
    logger = logging.getLogger(SLOW_CALLBACK_LOGGER)
    if not any(isinstance(f, CallbackLatencyFilter) for f in logger.filters):
        logger.addFilter(CallbackLatencyFilter())


@dataclass
class _TrialState:
    number: int  # the n-th trial of the stage: its label, #n
    arm: str
    replicate: int | None
    seed: int | None
    lr: float | None
    planned: float | None  # planned epochs: config "epochs"
    tune_status: str = "PENDING"
    result: dict[str, float] = field(default_factory=dict)  # the last result's _KEPT keys
    epoch_seconds: dict[int, float] = field(default_factory=dict)  # epoch -> measured seconds
    started: float | None = None  # clock reading at on_trial_start (this process)
    startup: float | None = None  # start to first result, less the first epoch: measured once

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


def _int(value) -> int | None:
    value = _finite(value)
    return None if value is None else int(value)


def _fmt(value, spec: str) -> str:
    value = _finite(value)
    return "-" if value is None else format(value, spec)


def _clock_text(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _printable(text: str) -> str:
    """No control characters in a log line, whatever a config value holds."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


class ProgressTable(tune.Callback):
    """Progress of one stage (``total`` trials); see the module docstring.

    ``budget_epochs`` is the stage's planned epochs over all ``total`` trials; it sizes the trials
    Tune has not created yet (``budget_epochs / total`` each). Without it they are sized by the mean
    planned epochs of the trials created so far. ``arms`` lists arms in display order, so an arm
    shows (with zero trials) before its first trial exists. ``replicates`` (the stage's number of
    replicates, when fixed) sizes each (arm, replicate) cell: ``total / (arms x replicates)``;
    without it a replicate's done count is shown alone.

    Holds no stream and no lambda: Tune pickles callbacks with the experiment. ``clock`` (seconds,
    monotonic) is replaceable for tests; it must stay picklable (a module-level function).
    """

    def __init__(self, stage: str, total: int, budget_epochs: int | None = None, arms: Sequence[str] = (),
                 *, replicates: int | None = None, every_s: float = 20.0,
                 clock: Callable[[], float] = time.monotonic):
        if total < 0:
            raise ValueError(f"total must be >= 0 trials, got {total}")
        if budget_epochs is not None and budget_epochs < 0:
            raise ValueError(f"budget_epochs must be >= 0 or None, got {budget_epochs}")
        self.stage, self.total, self.budget_epochs = stage, total, budget_epochs
        self.arms, self.replicates, self.every_s, self.clock = tuple(arms), replicates, every_s, clock
        self._start: float | None = None  # clock reading at the stage start; None: not started
        self._last: float | None = None  # clock reading at the last table; None: never printed
        self._trials: dict[str, _TrialState] = {}

    def __setstate__(self, state: dict) -> None:
        # Clock readings from another process (a resumed run) mean nothing here: start afresh.
        self.__dict__.update(state)
        self._start = self._last = None
        for st in self._trials.values():
            st.started = None

    # ----------------------------------------------------------------------------------------
    # Bookkeeping

    def _now(self) -> float:
        now = self.clock()
        if self._start is None:
            self._start = now
        return now

    def _observe(self, trial, status: str | None = None, result: dict | None = None) -> _TrialState:
        """Record a trial's config, latest result and status (``status`` overrides Tune's; ``result``
        overrides ``trial.last_result``, which Tune updates only after ``on_trial_result``)."""
        st = self._trials.get(trial.trial_id)
        if st is None:
            c = trial.config or {}
            st = self._trials[trial.trial_id] = _TrialState(
                number=len(self._trials) + 1, arm=str(c.get("arm", "-")), replicate=_int(c.get("replicate")),
                seed=_int(c.get("seed")), lr=_finite(c.get("lr")), planned=_finite(c.get("epochs")))
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
        return st

    def _observe_all(self, trials, trial=None, status: str | None = None,
                     result: dict | None = None) -> _TrialState | None:
        for t in trials or ():  # in Tune's order of creation, so #n numbers trials as Tune made them
            if trial is None or t.trial_id != trial.trial_id:
                self._observe(t)
            else:
                self._observe(trial, status, result)
        return None if trial is None else self._observe(trial, status, result)

    # ----------------------------------------------------------------------------------------
    # Estimates

    def _not_created(self) -> int:
        return max(self.total - len(self._trials), 0)

    def _epochs_per_new_trial(self) -> float | None:
        if self.budget_epochs is not None and self.total > 0:
            return self.budget_epochs / self.total
        planned = [st.planned for st in self._trials.values() if st.planned is not None]
        return sum(planned) / len(planned) if planned else None

    def epochs(self) -> tuple[float, float | None, float | None]:
        """(epochs done, planned budget, planned epochs still to run); None where unknown."""
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

    def _completion_ratio(self) -> float:
        """The share of its planned epochs an ended trial ran (early stopping), 1.0 before any ended."""
        ended = [st for st in self._trials.values() if st.status in _DONE and st.status != "ERROR"
                 and st.planned]
        if not ended:
            return 1.0
        return min(sum(st.epochs_done for st in ended) / sum(st.planned for st in ended), 1.0)

    def _work(self, now: float) -> tuple[float, float] | None:
        """(work done, work left) in trial-seconds: each trial costs the measured start-up plus its
        (expected) epochs at the measured mean epoch time. None before a first measurement."""
        startup = _mean(st.startup for st in self._trials.values() if st.startup is not None)
        epoch = _mean(s for st in self._trials.values() for s in st.epoch_seconds.values())
        new = self._epochs_per_new_trial()
        if startup is None or epoch is None or new is None:
            return None
        ratio = self._completion_ratio()
        done = left = 0.0
        left += self._not_created() * (startup + new * ratio * epoch)
        for st in self._trials.values():
            planned = (st.planned if st.planned is not None else new) * ratio
            if st.status in _WAITING:  # not started, or paused at a rung with epochs behind it
                left += startup + max(planned - st.epochs_done, 0.0) * epoch  # a restore starts it again
                done += st.epochs_done * epoch + (startup if st.startup is not None else 0.0)
                continue
            if st.startup is not None or st.status in _DONE:
                done += startup
            else:  # running, no result yet: part of its start-up is behind it
                behind = min(max(now - st.started, 0.0), startup) if st.started is not None else 0.0
                done += behind
                left += startup - behind
            done += st.epochs_done * epoch
            if st.status not in _DONE:
                left += max(planned - st.epochs_done, 0.0) * epoch
        return done, left

    def eta_seconds(self) -> float | None:
        """Work left / the rate this run has got through work so far (work done / elapsed); None
        before a trial's first result. The rate includes concurrency, idle slots and scheduling."""
        now = self._now()
        work = self._work(now)
        elapsed = now - self._start
        if work is None or elapsed <= 0:
            return None
        done, left = work
        if done <= 0:
            return None
        return left / (done / elapsed)

    # ----------------------------------------------------------------------------------------
    # What is printed

    def _arm_order(self) -> list[str]:
        seen = dict.fromkeys(self.arms)
        seen.update(dict.fromkeys(st.arm for st in self._trials.values()))
        return list(seen)

    def _per_cell_total(self, arms: list[str]) -> int | None:
        cells = len(arms) * (self.replicates or 0)
        return self.total // cells if cells and self.total % cells == 0 else None

    def _arm_text(self, arm: str, replicates: list[int]) -> str:
        states = [st for st in self._trials.values() if st.arm == arm]
        done = sum(st.status in _DONE for st in states)
        arms = self._arm_order()
        per_arm = self.total // len(arms) if arms and self.total % len(arms) == 0 else None
        text = f"{arm} {done}/{per_arm if per_arm is not None else '?'}"
        if len(replicates) > 1 or (self.replicates or 0) > 1:
            per_cell = self._per_cell_total(arms)
            cells = []
            for r in replicates:
                d = sum(st.status in _DONE for st in states if st.replicate == r)
                cells.append(f"r{r} {d}" + (f"/{per_cell}" if per_cell is not None else ""))
            text += f" ({', '.join(cells)})"
        return text

    def _best_text(self) -> str:
        best = []
        for arm in self._arm_order():
            scored = [(v, st) for st in self._trials.values() if st.arm == arm
                      for v in [_finite(st.result.get("val_accuracy"))] if v is not None]
            if scored:
                v, st = max(scored, key=lambda p: p[0])
                where = f" (r{st.replicate})" if st.replicate is not None else ""
                best.append(f"{arm} {v:.4f}{where}")
        return f"best val_acc {', '.join(best)}" if best else "best val_acc -"

    def status_line(self) -> str:
        now = self._now()
        states = list(self._trials.values())
        done = sum(st.status in _DONE for st in states)
        running = sum(st.status == "RUNNING" for st in states)
        eta = self.eta_seconds()
        replicates = sorted({st.replicate for st in states if st.replicate is not None})
        arms = " | ".join(self._arm_text(a, replicates) for a in self._arm_order())
        ended = [st.status for st in states]
        how = ", ".join(f"{ended.count(s)} {word}" for s, word in _HOW_ENDED if ended.count(s))
        return _printable(f"== {self.stage} | elapsed {_clock_text(now - self._start)} | ETA "
                          f"{'--' if eta is None else _clock_text(eta)} | done {done}/{self.total}"
                          + (f" ({how})" if how else "") + f", {running} running"
                          + (f" | {arms}" if arms else "") + f" | {self._best_text()}")

    def _cells(self, st: _TrialState) -> dict[str, str]:
        r = st.result
        width = len(str(max(self.total, len(self._trials))))
        return {"trial": f"#{st.number:0{width}d}", "arm": st.arm,
                "rep": "-" if st.replicate is None else f"r{st.replicate}",
                "seed": "-" if st.seed is None else str(st.seed), "lr": _fmt(st.lr, ".2e"),
                "epochs": _fmt(st.planned, ".0f"), "epoch": _fmt(r.get("epoch"), ".0f"),
                "val_acc": _fmt(r.get("val_accuracy"), ".4f"),
                "gap": _fmt(r.get("generalization_gap"), "+.3f")}

    def running_table(self) -> list[str]:
        """The running trials, at most MAX_ROWS rows ("+N more running")."""
        running = [st for st in self._trials.values() if st.status == "RUNNING"]
        if not running:
            return []
        rows = [self._cells(st) for st in running[:MAX_ROWS]]
        widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in _COLUMNS}
        lines = ["  " + "  ".join(c.ljust(widths[c]) for c in _COLUMNS).rstrip()]
        lines += ["  " + "  ".join(r[c].ljust(widths[c]) for c in _COLUMNS).rstrip() for r in rows]
        if len(running) > MAX_ROWS:
            lines.append(f"  +{len(running) - MAX_ROWS} more running")
        return [_printable(line) for line in lines]

    def print_table(self, force: bool = False) -> None:
        """The status line; with the running trials' table when ``every_s`` has passed (or ``force``)."""
        now = self._now()
        lines = [self.status_line()]
        if force or self._last is None or now - self._last >= self.every_s:
            self._last = now
            lines += self.running_table()
        print("\n".join(lines), file=sys.stdout, flush=True)

    def summary(self) -> str:
        """One line: wall time, trials done and trial-hours per arm."""
        wall = self._now() - self._start
        done = sum(st.status in _DONE for st in self._trials.values())
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
        hide_callback_latency_warnings()
        self._start, self._last = None, None
        self._now()

    def on_trial_start(self, iteration, trials, trial, **info):
        now = self._now()
        st = self._observe_all(trials, trial, "RUNNING")
        st.started = now

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._observe_all(trials, trial, str(trial.status))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        now = self._now()
        st = self._observe_all(trials, trial, "RUNNING", result)
        if st.startup is None and st.started is not None:
            first = _finite(result.get("epoch_seconds")) or 0.0
            st.startup = max(now - st.started - first, 0.0)
        if self._last is None or now - self._last >= self.every_s:
            self.print_table()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._observe_all(trials, trial, "TERMINATED")
        self._print_line()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._observe_all(trials, trial, "ERROR")
        self._print_line()

    def _print_line(self) -> None:
        print(self.status_line(), file=sys.stdout, flush=True)

    def on_experiment_end(self, trials, **info):
        self._observe_all(trials)
        print(self.summary(), file=sys.stdout, flush=True)
