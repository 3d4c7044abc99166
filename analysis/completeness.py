"""Whether a sweep's results hold every trial its saved config planned, and what is missing.

A stage is complete when each cell (arm x replicate) holds the trials the config asked for,
each ended: in the search, ``search.num_samples`` trials per cell (per replicate in ``joint``
mode) that finished, were stopped early, diverged or failed; in the confirmation,
``confirm.seeds`` trials per arm and replicate that finished or diverged (a failed confirmation
trial is missing data), and as many runs at the original configuration as ``confirm.original_seeds``
asks (stage ``original``). The replicates expected are ``range(R)`` for a fixed design, and for a
sequential plan (``search.replicates: {min, max}``) every replicate up to the highest one started,
at least ``min``: a sequential sweep that stopped after a decision at R is complete at R.

A report or verdict built from incomplete results must say so and name no winner; this module
only counts (``analysis/`` reads results, it decides nothing about them).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from analysis.contract import CONFIRM, DIVERGED, FAILED, FINISHED, ORIGINAL, SEARCH, STOPPED_EARLY

SEARCH_ENDED = (FINISHED, STOPPED_EARLY, DIVERGED, FAILED)  # a search trial that ended, whatever its outcome
CONFIRM_ENDED = (FINISHED, DIVERGED)                         # a confirmation trial whose result counts


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _section(config: dict, key: str) -> dict:
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def expected_replicates(config: dict, trials: pd.DataFrame) -> list[int]:
    """The replicates a sweep should hold: ``range(R)`` (fixed), or up to the highest replicate
    started and at least ``min`` (sequential)."""
    search = _section(config, "search")
    if search.get("enabled", True) is False:
        return [0]
    plan = search.get("replicates", 1)
    if isinstance(plan, dict):
        low = _int(plan.get("min"), 1)
        seen = trials["replicate"].max() if len(trials) else -1
        return list(range(max(low, int(seen) + 1 if seen == seen else 0)))
    return list(range(max(1, _int(plan, 1))))


def _cells(stage: pd.DataFrame, arms: list[str], replicates: list[int], by_arm: bool):
    for rep in replicates:
        for arm in (arms if by_arm else ["*"]):
            mask = stage["replicate"] == rep
            if by_arm:
                mask &= stage["arm"] == arm
            yield arm, rep, stage[mask]


def _missing(stage_name: str, arm: str, rep: int, cell: pd.DataFrame, expected: int,
             ended: tuple[str, ...]) -> dict | None:
    done = int(cell["status"].isin(ended).sum())
    if done >= expected:
        return None
    short = cell[~cell["status"].isin(ended)]
    return {"stage": stage_name, "arm": arm, "replicate": rep, "expected": expected, "done": done,
            "missing": expected - done,
            "trials": [f"{t} ({s})" for t, s in zip(short["trial_id"], short["status"], strict=True)]}


def completeness(results) -> dict[str, Any]:
    """``{"complete": bool, "missing": [...]}`` for ``analysis.load.load_results(...)``'s results.

    Each ``missing`` entry names a stage, arm (``*`` for a joint search's replicate), replicate,
    the trials expected and ended there, how many are missing, and the trials present that have
    not ended (``"<trial_id> (<status>)"``; status ``incomplete`` or ``failed``). An experiment
    without a saved config cannot be checked: it is reported as missing its config.
    """
    trials = results.trials
    missing: list[dict] = []
    several = len(results.experiments) > 1
    for name in results.experiments:
        config = (results.meta.get(name) or {}).get("config")
        mine = trials[trials["experiment"] == name] if "experiment" in trials else trials
        if not isinstance(config, dict):
            missing.append({"stage": None, "arm": None, "replicate": None, "experiment": name,
                            "missing": "config.yaml (what was planned is unknown)"})
            continue
        arms = [a.get("name") for a in config.get("arms") or [] if isinstance(a, dict)]
        arms = [f"{name}/{a}" for a in arms] if several else arms
        replicates = expected_replicates(config, mine)
        search, confirm = _section(config, "search"), _section(config, "confirm")
        found = []
        if search.get("enabled", True) is not False:
            stage = mine[mine["stage"] == SEARCH]
            per_cell = _int(search.get("num_samples"), 8)
            by_arm = search.get("mode", "stratified") != "joint"
            found += [_missing(SEARCH, arm, rep, cell, per_cell, SEARCH_ENDED)
                      for arm, rep, cell in _cells(stage, arms, replicates, by_arm)]
        if confirm.get("enabled", True) is not False:
            stage = mine[mine["stage"] == CONFIRM]
            seeds = _int(confirm.get("seeds"), 5)
            found += [_missing(CONFIRM, arm, rep, cell, seeds, CONFIRM_ENDED)
                      for arm, rep, cell in _cells(stage, arms, replicates, True)]
            original = _int(confirm.get("original_seeds"), 0)
            if original > 0 and search.get("enabled", True) is not False:
                stage = mine[mine["stage"] == ORIGINAL]
                found += [_missing(ORIGINAL, arm, rep, cell, original, CONFIRM_ENDED)
                          for arm, rep, cell in _cells(stage, arms, replicates, True)]
        for entry in found:
            if entry is not None:
                missing.append({**entry, "experiment": name} if several else entry)
    return {"complete": not missing, "missing": missing}


def first_line(report: dict[str, Any]) -> str | None:
    """The sentence a report opens with when results are incomplete (None when complete)."""
    if report["complete"]:
        return None
    trials = sum(m["missing"] for m in report["missing"] if isinstance(m.get("missing"), int))
    stages = sorted({str(m["stage"]) for m in report["missing"] if m.get("stage")})
    what = f"{trials} planned trial(s) missing in {' and '.join(stages)}" if trials \
        else "its config is missing"
    return (f"INCOMPLETE: this sweep's results are not complete ({what}); no winner is named. "
            f"Finish it with --resume.")


__all__ = ["CONFIRM_ENDED", "SEARCH_ENDED", "completeness", "expected_replicates", "first_line"]
