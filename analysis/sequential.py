"""Replicates until the question is decided: the group-sequential primary test.

A sweep plans ``search.replicates``: a fixed R (one look, at full alpha) or a sequential plan
``{min, max}`` (a look after every complete replicate pair from ``min`` to ``max``). At each look
the primary question (the activation-level paired comparison on ``analysis.primary``, every run
counted: :func:`analysis.decision.replicate_differences`) is tested against boundaries that spend
alpha across the planned looks:

* **winner**: the paired t-test's two-sided p is below the nominal level ``alpha_look`` of a
  Pocock-type boundary: the same nominal level at every look, chosen so that the chance of
  crossing it at ANY of the looks R = first..max, when the arms do not differ, is ``alpha``;
* **equivalent**: both one-sided tests of TOST (difference <= -margin, difference >= +margin)
  reject at the one-sided nominal level ``alpha_equivalence``, the Pocock-type level of a one-sided
  test at ``alpha`` over the same looks; the chance of declaring equivalence at any look when the
  true difference is exactly +-margin is then at most ``alpha``. Equivalently: the
  ``1 - 2 * alpha_equivalence`` interval lies within +-margin.

The nominal levels are a property of the t statistics of normal paired differences at the planned
numbers of replicates, which do not depend on the unknown spread. They are computed by Monte Carlo
(``BOUNDARY_DRAWS`` draws from a fixed seed), so they are a deterministic function of the plan:
``--resume`` recomputes the same boundaries, and a look is identified by R alone, so alpha is
never spent twice on one look. Looks skipped (a resumed run that looks first at R=6) only make the
rule more conservative. ``benchmarks/bench_calibration.py`` measures the whole rule, optional
stopping included, on simulated sweeps.

A fixed design (``min == max``) is one look at ``alpha`` (and a TOST at ``alpha``).

**The budget's last look spends the alpha left.** A plan with ``budget_minutes`` may end before
``max``: after the look at R, the next replicate would not finish within the budget. That look
is then the final one (``Plan.final_look``, recorded by the runner in ``final-look.json``), and
its nominal level is the one that brings the chance of crossing at ANY look (the earlier ones at
the Pocock level, this one at its own) to exactly ``alpha``: ``alpha`` itself when it is the
first look, the Pocock level when it is the planned last. This keeps the error rate at
``alpha`` because the budget's stop depends on the clock alone (the time replicates took), never
on the differences observed (an alpha-spending design whose last look comes at a time fixed
independently of the data; Lan & DeMets 1983). Without it, a budget that holds 3 replicates would
test its only look at the 6-look Pocock level (0.0145; critical t 8.2 at 2 df), spending alpha
on five looks that never happen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from analysis.contract import FINAL_LOOK_FILE
from analysis.stats import ALPHA

MIN_LOOK = 3          # a paired t-test on replicate differences needs df >= 2
POWER = 0.80          # the power of the minimum detectable effect
BOUNDARY_DRAWS = 400_000
BOUNDARY_SEED = 20261206
SEQUENTIAL_TEST = "paired t-test on replicate means (every run counted), group-sequential"
FIXED_TEST = "paired t-test on replicate means (every run counted)"
DECISIONS = ("winner", "equivalent", "continue", "undecided")
MAX_EXTRA = 10_000    # replicates-for-power searches stop here
POINTS_UNITS = "percentage points of accuracy, arm_a - arm_b"


@dataclass(frozen=True)
class Plan:
    min_replicates: int      # first look (>= 3 for a test; a fixed R < 3 is a plan that never tests)
    max_replicates: int      # last look; == min_replicates for a fixed design (one look, full alpha)
    alpha: float = ALPHA
    final_look: int | None = None  # R of a look the budget made the last (it spends the alpha left)

    def __post_init__(self):
        if not (isinstance(self.min_replicates, int) and isinstance(self.max_replicates, int)):
            raise ValueError("Plan: min_replicates and max_replicates must be integers")
        if self.min_replicates < 1 or self.max_replicates < self.min_replicates:
            raise ValueError(f"Plan: need 1 <= min_replicates <= max_replicates, got "
                             f"{self.min_replicates} and {self.max_replicates}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"Plan: alpha must be in (0, 1), got {self.alpha}")
        f = self.final_look
        if f is not None and (isinstance(f, bool) or not isinstance(f, int)
                              or not self.first_look <= f <= self.last_look):
            raise ValueError(f"Plan: final_look must be an integer R in {self.first_look}..{self.last_look} "
                             f"(a look the plan makes), got {f!r}")

    @property
    def first_look(self) -> int:
        """R of the first look: ``min_replicates``, but never below ``MIN_LOOK``."""
        return max(self.min_replicates, MIN_LOOK)

    @property
    def last_look(self) -> int:
        """R of the last look (a plan whose max is below ``MIN_LOOK`` looks once, at ``MIN_LOOK``)."""
        return max(self.max_replicates, self.first_look)

    @property
    def sequential(self) -> bool:
        return self.last_look > self.first_look

    @property
    def looks_planned(self) -> int:
        return self.last_look - self.first_look + 1

    @property
    def cut_short(self) -> bool:
        """True when the budget made a look before the planned last one the final look."""
        return self.final_look is not None and self.final_look < self.last_look

    def look_index(self, replicates: int) -> int:
        """1-based index of the look made at ``replicates`` complete pairs (0: before the first;
        more pairs than planned count as the last look, at its boundary)."""
        if replicates < self.first_look:
            return 0
        return min(replicates, self.last_look) - self.first_look + 1


def plan_from_config(config: dict | None) -> Plan:
    """The plan of a saved config.yaml mapping: ``search.replicates`` is an int R (``Plan(R, R)``)
    or a mapping with ``min`` and ``max`` (a missing ``max`` is ``min``); no search: one replicate.
    Raises ValueError on anything else."""
    search = (config or {}).get("search") or {}
    if search.get("enabled", True) is False:
        return Plan(1, 1)
    reps = search.get("replicates", 1)
    if isinstance(reps, dict):
        lo = reps.get("min")
        hi = reps.get("max", lo)
        if isinstance(lo, bool) or isinstance(hi, bool) or not isinstance(lo, int) or not isinstance(hi, int):
            raise ValueError(f"search.replicates: min and max must be integers, got {reps!r}")
        return Plan(lo, hi)
    if isinstance(reps, bool) or not isinstance(reps, int):
        raise ValueError(f"search.replicates: an integer or a mapping {{min, max}}, got {reps!r}")
    return Plan(reps, reps)


def final_look_record(record: Any) -> dict:
    """A ``final-look.json`` object checked: ``{"replicates": R >= 1, "reason": text}``; ValueError
    (saying what is wrong) otherwise."""
    if not isinstance(record, dict):
        raise ValueError(f"{FINAL_LOOK_FILE}: not a JSON object")
    r, reason = record.get("replicates"), record.get("reason")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"{FINAL_LOOK_FILE}: 'replicates' must be an integer >= 1, got {r!r}")
    if not isinstance(reason, str):
        raise ValueError(f"{FINAL_LOOK_FILE}: 'reason' must be text")
    return {"replicates": r, "reason": reason}


def with_final_look(plan: Plan, record: Any) -> Plan:
    """``plan`` whose look at the record's R is the last (a fixed design is unchanged: its one
    look already spends all of alpha). ValueError when the record is malformed or names a look
    the plan does not make."""
    r = final_look_record(record)["replicates"]
    return replace(plan, final_look=r) if plan.sequential else plan


# --------------------------------------------------------------------------- boundaries

@lru_cache(maxsize=2)  # 38 MB each at the default plan
def _null_p_values(first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
    """(two-sided, one-sided) p-values of the paired t-test at R = first..last (columns) on
    normal paired differences with no true difference; Monte Carlo from a fixed seed."""
    g = np.random.default_rng(BOUNDARY_SEED)
    draws = max(50_000, min(BOUNDARY_DRAWS, 8_000_000 // last))
    x = g.standard_normal((draws, last))
    s1, s2 = np.cumsum(x, axis=1), np.cumsum(x * x, axis=1)
    r = np.arange(1, last + 1, dtype=float)
    looks = slice(first - 1, last)
    mean = s1[:, looks] / r[looks]
    var = (s2[:, looks] - s1[:, looks] ** 2 / r[looks]) / (r[looks] - 1)
    t = mean / np.sqrt(var / r[looks])
    df = r[looks] - 1
    return 2 * stats.t.sf(np.abs(t), df), stats.t.sf(t, df)


@lru_cache(maxsize=64)
def _pocock(first: int, last: int, alpha: float) -> tuple[float, float]:
    """(two-sided, one-sided) constant nominal levels for t-tests at R = first..last whose chance
    of rejecting at any look under the null is ``alpha``."""
    if last <= first:
        return alpha, alpha
    two, one = _null_p_values(first, last)
    return float(np.quantile(two.min(axis=1), alpha)), float(np.quantile(one.min(axis=1), alpha))


@lru_cache(maxsize=64)
def _spend_rest(first: int, last: int, final: int, alpha: float) -> tuple[float, float]:
    """(two-sided, one-sided) nominal levels of a final look at R = ``final`` after looks at
    first..final-1 at the Pocock levels of the plan first..last: the levels at which the chance of
    crossing at any of the looks made, under the null, is ``alpha`` (the alpha the looks that will
    not happen would have spent). ``alpha`` for a first look, the Pocock level for the last."""
    pocock = _pocock(first, last, alpha)
    if final <= first:
        return alpha, alpha
    if final >= last:
        return pocock
    out = []
    for p, level in zip(_null_p_values(first, last), pocock):
        earlier = (p[:, :final - first] < level).any(axis=1)
        # a path that crossed earlier counts as rejected (p 0); the rest reject when p_final < level
        out.append(float(np.quantile(np.where(earlier, 0.0, p[:, final - first]), alpha)))
    return out[0], out[1]


def _levels(plan: Plan, replicates: int) -> tuple[float, float]:
    """(two-sided, one-sided) nominal levels of the look at ``replicates`` complete pairs."""
    if not plan.sequential:
        return plan.alpha, plan.alpha
    if plan.final_look is not None and replicates >= plan.final_look:
        return _spend_rest(plan.first_look, plan.last_look, plan.final_look, plan.alpha)
    return _pocock(plan.first_look, plan.last_look, plan.alpha)


def boundary(plan: Plan, replicates: int, margin_points: float) -> dict[str, Any]:
    """What a look at ``replicates`` complete pairs compares against (JSON-able)."""
    a2, a1 = _levels(plan, replicates)
    df = max(replicates - 1, 1)
    method = ("Pocock-type: the same nominal level at every look, alpha spent across "
              f"{plan.looks_planned} looks (R = {plan.first_look}..{plan.last_look})"
              if plan.sequential else "fixed design: one look at full alpha")
    if plan.cut_short and replicates >= plan.final_look:
        method += (f"; the budget made R = {plan.final_look} the last look, which spends the alpha "
                   f"the looks not made would have spent")
    return {
        "method": method,
        "final_look": plan.final_look,
        "alpha": plan.alpha,
        "nominal_alpha": a2,
        "critical_t": float(stats.t.isf(a2 / 2, df)),
        "equivalence_alpha": a1,
        "equivalence_critical_t": float(stats.t.isf(a1, df)),
        "margin_points": float(margin_points),
        "ci_level": 1 - a2,
        "equivalence_ci_level": 1 - 2 * a1,
    }


# --------------------------------------------------------------------------- the rule, vectorised

def decide(diffs: np.ndarray, plan: Plan, margin_points: float) -> dict[str, np.ndarray]:
    """The rule on many paired-difference matrices at once: ``diffs`` is (n, R) in points (NaN
    pads a row that has fewer pairs), one look per row at its own R. Returns arrays: ``R``,
    ``mean``, ``sd``, ``t``, ``p`` (nominal, two-sided), ``winner_sign`` (+1: arm a, -1: arm b,
    0: none), ``equivalent``, ``lo``/``hi`` (the interval at 1 - nominal alpha), ``eq_lo``/``eq_hi``
    (at 1 - 2 * equivalence alpha). The same code decides a real sweep (:func:`look`) and the
    calibration benchmark's simulated ones."""
    d = np.atleast_2d(np.asarray(diffs, dtype=float))
    ok = np.isfinite(d)
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.nansum(d, axis=1) / np.maximum(n, 1), np.nan)
        var = np.nansum((d - mean[:, None]) ** 2, axis=1) / (n - 1)
        sd = np.where(n >= 2, np.sqrt(var), np.nan)
        se = sd / np.sqrt(n)
        t = mean / se
    a2 = np.full(len(d), np.nan)
    a1 = np.full(len(d), np.nan)
    for r in np.unique(n):
        b = boundary(plan, int(r), margin_points)
        a2[n == r], a1[n == r] = b["nominal_alpha"], b["equivalence_alpha"]
    df = np.maximum(n - 1, 1)
    testable = (n >= plan.first_look) & (sd > 1e-12)
    with np.errstate(invalid="ignore"):
        p = np.where(testable, 2 * stats.t.sf(np.abs(t), df), np.nan)
        q2, q1 = stats.t.isf(a2 / 2, df), stats.t.isf(a1, df)
    lo, hi = mean - q2 * se, mean + q2 * se
    eq_lo, eq_hi = mean - q1 * se, mean + q1 * se
    win = testable & (p < a2)
    equivalent = testable & (eq_lo > -margin_points) & (eq_hi < margin_points)
    return {"R": n, "mean": mean, "sd": sd, "se": se, "t": np.where(testable, t, np.nan), "p": p,
            "winner_sign": np.where(win, np.sign(mean), 0).astype(int), "equivalent": equivalent & ~win,
            "lo": np.where(testable, lo, np.nan), "hi": np.where(testable, hi, np.nan),
            "eq_lo": np.where(testable, eq_lo, np.nan), "eq_hi": np.where(testable, eq_hi, np.nan),
            "nominal_alpha": a2, "equivalence_alpha": a1}


def run_sequential(diffs: np.ndarray, plan: Plan, margin_points: float) -> dict[str, np.ndarray]:
    """Optional stopping on many simulated sweeps: ``diffs`` is (n, >= max) paired differences in
    replicate order; each row looks at R = first..max and stops at its first winner or
    equivalence (or at ``plan.final_look``, where a budget ended it). Returns ``decision`` (0
    undecided, +1/-1 winner a/b, 2 equivalent) and ``replicates`` used."""
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    last = plan.final_look or plan.max_replicates
    decision = np.zeros(n, dtype=int)
    used = np.full(n, last)
    open_ = np.ones(n, dtype=bool)
    for r in range(plan.first_look, last + 1):
        if not open_.any():
            break
        res = decide(d[open_, :r], plan, margin_points)
        idx = np.flatnonzero(open_)
        stop = (res["winner_sign"] != 0) | res["equivalent"]
        decision[idx] = np.where(res["winner_sign"] != 0, res["winner_sign"],
                                 np.where(res["equivalent"], 2, 0))
        used[idx[stop]] = r
        open_[idx[stop]] = False
    return {"decision": decision, "replicates": used}


def mde(sd: float, replicates: int, nominal_alpha: float, power: float = POWER) -> float:
    """Smallest true difference (same units as ``sd``) a two-sided paired t-test at
    ``nominal_alpha`` detects with ``power`` from ``replicates`` pairs (central-t approximation)."""
    if not (replicates >= 2 and math.isfinite(sd) and sd > 0):
        return math.nan
    df = replicates - 1
    return float((stats.t.isf(nominal_alpha / 2, df) + stats.t.ppf(power, df)) * sd / math.sqrt(replicates))


def replicates_for_power(effect: float, sd: float, nominal_alpha: float, power: float = POWER,
                         start: int = MIN_LOOK) -> int | None:
    """Smallest R >= ``start`` at which :func:`mde` <= |effect|; None if none up to ``MAX_EXTRA``."""
    if not (math.isfinite(effect) and math.isfinite(sd) and sd > 0 and effect != 0):
        return None
    r = np.arange(max(start, 2), MAX_EXTRA + 1)
    m = (stats.t.isf(nominal_alpha / 2, r - 1) + stats.t.ppf(power, r - 1)) * sd / np.sqrt(r)
    hit = np.flatnonzero(m <= abs(effect))
    return int(r[hit[0]]) if len(hit) else None


# --------------------------------------------------------------------------- one look at a sweep

def look(trials: pd.DataFrame, plan: Plan, *, margin_points: float, metric: str | None = None,
         final: bool = False) -> dict:
    """The sequential look at a sweep's loaded trials (all stages; uses the confirmation stage).

    ``decision`` is "winner", "equivalent", "continue" (only when not ``final`` and R is below
    max and below ``plan.final_look``) or "undecided"; ``winner`` the winning arm or None;
    ``replicates`` the complete pairs used; ``look`` this look's 1-based index (0 before the first),
    ``looks_planned``, ``final_look`` (R of the look the budget made the last, or None); ``boundary`` (see
    :func:`boundary`); ``difference`` (arm_a - arm_b, points), ``ci`` [low, high] and
    ``ci_level`` (1 - nominal alpha of this look), ``equivalence_ci`` at ``equivalence_ci_level``,
    ``p_value`` (nominal), ``sd_points``, ``mde_points``, ``replicates_for_power`` (R at which
    the observed difference would be found with 80% power at the observed spread), ``test``,
    ``reason`` (why no test). More than two arms: every pair is tested at alpha / pairs and a
    winner must beat every other arm."""
    from analysis.decision import replicate_differences  # decision imports this module's names

    d = replicate_differences(trials, metric)
    arms = sorted(set(d["arm_a"]) | set(d["arm_b"])) if len(d) else sorted(
        trials.loc[trials["stage"] == "confirm", "arm"].dropna().unique())
    pairs = d.groupby(["arm_a", "arm_b"], sort=True) if len(d) else []
    n_pairs = max(1, len(arms) * (len(arms) - 1) // 2)
    p = plan if n_pairs == 1 else replace(plan, alpha=plan.alpha / n_pairs)
    rows = []
    for (a, b), g in pairs:
        res = decide(g["difference"].to_numpy(float)[None] * 100, p, margin_points)
        rows.append((a, b, {k: v[0] for k, v in res.items()}))
    r_min = min((int(r["R"]) for *_, r in rows), default=0)
    metric_used = d.attrs.get("metric", metric)
    out: dict[str, Any] = {
        "decision": "undecided", "winner": None, "replicates": r_min, "look": plan.look_index(r_min),
        "looks_planned": plan.looks_planned, "final_look": plan.final_look,
        "min_replicates": plan.min_replicates, "max_replicates": plan.max_replicates, "alpha": plan.alpha,
        "metric": metric_used,
        "margin_points": float(margin_points), "boundary": boundary(p, max(r_min, 1), margin_points),
        "arm_a": None, "arm_b": None, "difference": None, "units": POINTS_UNITS, "ci": None, "ci_level": None,
        "equivalence_ci": None, "equivalence_ci_level": None, "p_value": None, "sd_points": None,
        "mde_points": None, "replicates_for_power": None,
        "test": SEQUENTIAL_TEST if plan.sequential else FIXED_TEST, "reason": None}
    if len(arms) < 2 or not rows:
        out["reason"] = "fewer than two arms with confirmation results: nothing to compare"
        return _finish(out, plan, final)
    # the deciding pair: the only one, or the pair whose difference is largest in size
    a, b, r = max(rows, key=lambda x: (abs(x[2]["mean"]) if np.isfinite(x[2]["mean"]) else -1))
    winners = _winner(rows, arms)
    out.update(arm_a=a, arm_b=b, difference=_num(r["mean"]), p_value=_num(r["p"]), sd_points=_num(r["sd"]))
    if np.isfinite(r["p"]):
        out.update(ci=[_num(r["lo"]), _num(r["hi"])], ci_level=1 - float(r["nominal_alpha"]),
                   equivalence_ci=[_num(r["eq_lo"]), _num(r["eq_hi"])],
                   equivalence_ci_level=1 - 2 * float(r["equivalence_alpha"]))
    nominal = out["boundary"]["nominal_alpha"]
    out["mde_points"] = _num(mde(float(r["sd"]), int(r["R"]), nominal))
    out["replicates_for_power"] = replicates_for_power(float(r["mean"]), float(r["sd"]), nominal,
                                                       start=int(r["R"]))
    if r_min < plan.first_look:
        out["reason"] = (f"R={r_min} complete replicate pair{'s' if r_min != 1 else ''}; the first look "
                         f"is at R={plan.first_look}")
    elif not np.isfinite(r["p"]):
        out["reason"] = f"the {int(r['R'])} replicate differences have no spread: no claim from zero variance"
    elif winners is not None:
        out.update(decision="winner", winner=winners)
    elif all(bool(x[2]["equivalent"]) for x in rows):
        out["decision"] = "equivalent"
    return _finish(out, plan, final)


def _winner(rows, arms) -> str | None:
    for arm in arms:
        beats = [(r["winner_sign"] > 0 and a == arm) or (r["winner_sign"] < 0 and b == arm)
                 for a, b, r in rows if arm in (a, b)]
        if beats and len(beats) == len(arms) - 1 and all(beats):
            return arm
    return None


def _finish(out: dict, plan: Plan, final: bool) -> dict:
    last = plan.final_look or plan.max_replicates
    if out["decision"] == "undecided" and not final and out["replicates"] < last:
        out["decision"] = "continue"
    return out


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None
