"""A compact progress table printed while a stage runs (Tune's own output is silenced)."""

from __future__ import annotations

import sys
import time

from ray import tune

from sweeps.search import stopped_early

_COLUMNS = ("trial", "arm", "activation", "lr", "epochs", "epoch", "val_acc", "gap", "status")


class ProgressTable(tune.Callback):
    """Prints every ``every_s`` seconds, and when a trial ends, one row per trial."""

    def __init__(self, stage: str, total: int, every_s: float = 20.0):
        # No stream attribute: Tune pickles callbacks with the experiment, and streams don't pickle.
        self.stage, self.total, self.every_s = stage, total, every_s
        self._last = 0.0
        self._rows: dict[str, dict] = {}

    def _row(self, trial, status: str | None = None) -> dict:
        c, r = trial.config, trial.last_result or {}
        row = self._rows.setdefault(trial.trial_id, {})
        row.update(trial=trial.trial_id, arm=c.get("arm", "-"), activation=c.get("activation", "relu"),
                   lr=f"{c.get('lr', float('nan')):.2e}", epochs=str(c.get("epochs", "?")),
                   epoch=f"{r.get('epoch', 0):.0f}", val_acc=f"{r.get('val_accuracy', float('nan')):.4f}",
                   gap=f"{r.get('generalization_gap', float('nan')):+.3f}", status=status or trial.status)
        if r.get("diverged") == 1.0:
            row["status"] = "DIVERGED"
        elif status == "TERMINATED" and stopped_early(r):
            row["status"] = "STOPPED_EARLY"
        return row

    def print_table(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        done = sum(r["status"] in ("TERMINATED", "STOPPED_EARLY", "DIVERGED", "ERROR")
                   for r in self._rows.values())
        widths = {c: max([len(c)] + [len(r[c]) for r in self._rows.values()]) for c in _COLUMNS}
        lines = [f"== {self.stage}: {done}/{self.total} trials done ==",
                 "  ".join(c.ljust(widths[c]) for c in _COLUMNS)]
        lines += ["  ".join(r[c].ljust(widths[c]) for c in _COLUMNS) for r in self._rows.values()]
        print("\n".join(lines), file=sys.stdout, flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._row(trial, "RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._row(trial, "RUNNING")
        self.print_table()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._row(trial, "TERMINATED")
        self.print_table(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._row(trial, "ERROR")
        self.print_table(force=True)
