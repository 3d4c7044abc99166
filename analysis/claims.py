"""The verdict in words and as verdict.json, both from the same tests table.

Every sentence that claims something carries n, an interval (at the level of its Holm step) and
the test. Only the activation level (unit: replicate) may name an activation as the winner; the
configuration level names configurations by lr/epochs and says it is about them only.

verdict.json (``Conclusion.record``, schema_version 1; NaN is written as null):

* ``primary_metric`` (e.g. "final_test_accuracy"), ``primary_metric_label``, ``unit`` ("replicate"),
  ``test`` ("paired t-test on replicate means"), ``min_replicates``, ``alpha``;
* ``arms``; ``arm_a``/``arm_b``: the deciding pair (the only pair for two arms);
* ``winner``: an arm name, or null unless the activation-level test names one; ``tested``: the
  activation-level test ran; ``reason``: why not (e.g. "R=1 replicate per arm; at least 3 needed");
* ``equivalent`` (bool: the interval lies within +-``equivalence_margin_points``);
* ``difference`` (arm_a - arm_b, accuracy as a fraction), ``ci`` [low, high] and ``ci_level`` (the
  Holm step's level), ``p_value``, ``p_holm``, ``tests_in_family``;
* ``p_a_better``: P(a tuned arm_a beats a tuned arm_b) over paired replicates, ``p_a_better_ci``;
* ``replicates`` {arm: R}, ``seeds`` {arm: [finished seeds per replicate]}, ``diverged``
  {"arm/stage": {"runs", "diverged"}};
* ``data_source`` ("cifar10" | "synthetic" | "mixed" | "unknown"), ``synthetic_data``,
  ``official_cifar10``, ``data`` (per experiment: source, sizes, digest, official, warnings);
* ``claims``: the verdict's sentences, exactly as in report.md and report.html;
* ``comparisons``: every hypothesis of the Holm family (level, metric, arms or configurations,
  n, estimate, interval, test, p, Holm p, significant, equivalent, reason when untested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.decision import (
    ACTIVATION,
    CONFIGURATION,
    MIN_REPLICATES,
    PAIRED_TEST,
    SENSITIVITY,
    activation_decision,
    decision_tests,
)
from analysis.metrics import GAP_RUNNING
from analysis.provenance import data_sentence, describe_data
from analysis.stats import ALPHA, LABELS
from analysis.summaries import divergence

SCHEMA_VERSION = 1


@dataclass
class Conclusion:
    """What the report concludes: the tests, the per-analysis decision, the sentences, the JSON."""
    tests: pd.DataFrame
    claims: list[str]
    record: dict[str, Any]
    divergence: pd.DataFrame = field(default_factory=pd.DataFrame)


def _pts(v: float) -> str:
    return f"{100 * v:+.1f}"


def _p(v: float) -> str:
    return f"{v:.2g}" if v >= 0.001 else f"{v:.1e}"


def _ci(row, signed: bool = True, flip: bool = False) -> str:
    lo, hi = (-row["ci_high"], -row["ci_low"]) if flip else (row["ci_low"], row["ci_high"])
    fmt = (lambda v: f"{100 * v:+.1f}") if signed else (lambda v: f"{100 * v:.1f}")
    return f"CI {fmt(lo)} to {fmt(hi)} at {row['conf_level']:.1%}"


def _family(row) -> str:
    return f"p={_p(row['p_value'])}, Holm p={_p(row['p_holm'])} over {int(row['family_size'])} tests"


def _paired_n(row, seeds: dict[str, str]) -> str:
    return (f"{PAIRED_TEST}, R={int(row['n'])} replicates per arm, each the mean of "
            f"{seeds.get(row['arm_a'], '?')} ({row['arm_a']}) and {seeds.get(row['arm_b'], '?')} "
            f"({row['arm_b']}) seeds")


def _p_better(row, a: str, b: str, flip: bool) -> str:
    p, lo, hi = row["p_a_better"], row["p_a_better_low"], row["p_a_better_high"]
    if flip:
        p, lo, hi = 1 - p, 1 - hi, 1 - lo
    return (f"P(a tuned {a} beats a tuned {b}) = {p:.2f} (exact binomial CI {lo:.2f} to {hi:.2f}, "
            f"from {int(row['n'])} paired replicates)")


def _activation_sentence(row, margin_points: float, seeds: dict[str, str],
                         head: str = "Activation level") -> str:
    a, b, label = row["arm_a"], row["arm_b"], LABELS.get(row["metric"], row["metric"])
    if not np.isfinite(row["p_value"]):
        observed = ""
        if row["n"] > 0 and np.isfinite(row["estimate"]):
            observed = (f" Observed, not tested: {a} - {b} = {_pts(row['estimate'])} points over "
                        f"{int(row['n'])} replicate{'s' if row['n'] != 1 else ''}.")
        return (f"{head}: the effect of {a} vs {b} on {label} is not established: {row['reason']} "
                f"(a replicate is one whole tuning of an arm plus its confirmation seeds; only "
                f"replicates measure the luck of the search).{observed}")
    if row["significant"]:
        flip = row["estimate"] < 0
        win, lose = (b, a) if flip else (a, b)
        return (f"{head}: {win} beats {lose} on {label} by {abs(100 * row['estimate']):.1f} points "
                f"({_ci(row, signed=False, flip=flip)}; {_paired_n(row, seeds)}; "
                f"{_family(row)}); {_p_better(row, win, lose, flip)}.")
    if row["equivalent"]:
        return (f"{head}: no difference larger than {margin_points:g} point"
                f"{'s' if margin_points != 1 else ''} in {label} between {a} and {b}: {a} - {b} = "
                f"{_pts(row['estimate'])} points ({_ci(row)}, within ±{margin_points:g}; "
                f"{_paired_n(row, seeds)}; {_family(row)}).")
    return (f"{head}: the effect of {a} vs {b} on {label} is not established: {a} - {b} = "
            f"{_pts(row['estimate'])} points ({_ci(row)}; {_paired_n(row, seeds)}; {_family(row)}); "
            f"the interval is not within ±{margin_points:g} point{'s' if margin_points != 1 else ''}, "
            f"so equivalence is not shown either; {_p_better(row, a, b, False)}.")


def _gap_sentence(row, seeds: dict[str, str], head: str = "Activation level") -> str:
    a, b = row["arm_a"], row["arm_b"]
    where = (f"at matched epochs ({row['epochs_note']})" if row["metric"] == "gap_matched_epoch"
             else "at each arm's chosen configuration")
    if not np.isfinite(row["p_value"]):
        return f"{head}, overfitting {where}: not tested: {row['reason']}."
    body = (f"gap {a} - {b} = {_pts(row['estimate'])} points ({_ci(row)}; {_paired_n(row, seeds)}; "
            f"{_family(row)})")
    if row["significant"]:
        more, less = (a, b) if row["estimate"] > 0 else (b, a)
        return f"{head}, overfitting {where}: {more} overfits more than {less}: {body}."
    return f"{head}, overfitting {where}: no established difference: {body}."


def _configuration_sentences(tests: pd.DataFrame) -> list[str]:
    c = tests[tests["level"] == CONFIGURATION]
    if c.empty:
        return []
    out = []
    head = ("Configuration level (seed noise only, within one replicate: about these configurations, "
            "not the activations)")
    for _, r in c[c["significant"]].iterrows():
        flip = r["estimate"] < 0
        win, lose = (r["config_b"], r["config_a"]) if flip else (r["config_a"], r["config_b"])
        label = LABELS.get(r["metric"], r["metric"])
        out.append(f"{head}: in replicate {int(r['replicate'])}, configuration {win} beats {lose} on {label} "
                   f"by {abs(100 * r['estimate']):.1f} points ({_ci(r, signed=False, flip=flip)}; "
                   f"Welch t-test, n={int(r['n_a'])} and {int(r['n_b'])} seeds; {_family(r)}).")
    tested = c[c["p_value"].notna() & ~c["significant"]]
    if len(tested):
        other = " other" if c["significant"].any() else ""
        out.append(f"{head}: {len(tested)}{other} comparison{'s' if len(tested) != 1 else ''} of tuned "
                   f"configurations (replicate{'s' if len(tested) != 1 else ''} "
                   f"{', '.join(str(int(v)) for v in tested['replicate'])}) showed no significant "
                   f"difference (Welch t-test on seeds, Holm-adjusted).")
    untested = c[c["p_value"].isna()]
    if len(untested):
        reasons = sorted(set(untested["reason"]))
        out.append(f"{head}: {len(untested)} comparison{'s' if len(untested) != 1 else ''} not tested: "
                   + "; ".join(reasons) + ".")
    return out


def _sensitivity_sentences(tests: pd.DataFrame) -> list[str]:
    s = tests[(tests["level"] == SENSITIVITY) & tests["significant"]]
    out = []
    for _, r in s.iterrows():
        what = "log10(learning rate)" if r["param"] == "lr" else "epochs"
        direction = "rises" if r["estimate"] > 0 else "falls"
        out.append(f"Search sensitivity: {r['arm_a']}'s final val accuracy {direction} with {what} "
                   f"(Spearman rho={r['estimate']:+.2f}, CI {r['ci_low']:+.2f} to {r['ci_high']:+.2f} at "
                   f"{r['conf_level']:.1%} (Fisher z, approximate); {r['test']}; n={int(r['n'])} finished "
                   f"search trials; {_family(r)}).")
    return out


def _divergence_sentence(div: pd.DataFrame) -> str | None:
    if div.empty or not div["diverged"].any():
        return None
    parts = []
    for _, r in div.sort_values(["stage", "arm"]).iterrows():
        ci = f"95% CI {100 * r['ci_low']:.0f} to {100 * r['ci_high']:.0f}%"
        parts.append(f"{r['arm']} {r['stage']} {int(r['diverged'])} of {int(r['runs'])} "
                     f"({100 * r['rate']:.0f}%, {ci})")
    return ("Diverged runs (divergence rate per arm, exact binomial CI): " + "; ".join(parts)
            + ". They are left out of every accuracy mean and test above.")


def _seed_counts(trials: pd.DataFrame, stage: str) -> dict[str, list[int]]:
    """Per arm, finished runs in each replicate (replicate order)."""
    c = trials[(trials["stage"] == stage) & (trials["status"] == "finished")]
    if c.empty:
        return {}
    rep = c["replicate"].fillna(0) if "replicate" in c else 0
    counts = c.assign(replicate=rep).groupby(["arm", "replicate"]).size()
    return {arm: [int(v) for v in s.to_numpy()] for arm, s in counts.groupby(level=0)}


def _range_text(counts: list[int]) -> str:
    return "?" if not counts else str(min(counts)) if min(counts) == max(counts) \
        else f"{min(counts)}-{max(counts)}"


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(float(v)) else float(v)
    if v is pd.NA or v is None:
        return None
    return v


def conclude(trials: pd.DataFrame, epochs: pd.DataFrame | None = None, meta: dict | None = None, *,
             alpha: float = ALPHA, margin_points: float = 1.0) -> Conclusion:
    """Run the decision rule on one analysis and phrase it: claims (the verdict's sentences) and
    the verdict.json record (schema in this module's docstring)."""
    data = describe_data(meta)
    claims = [data_sentence(data)]
    stage = "confirm"
    has_confirm = bool(((trials["stage"] == stage) & trials["status"].isin(["finished", "diverged"])).any())
    tests = decision_tests(trials, epochs, alpha=alpha, margin_points=margin_points, stage=stage)
    div = divergence(trials)
    seed_counts = _seed_counts(trials, stage)
    seeds = {a: _range_text(v) for a, v in seed_counts.items()}
    dec = activation_decision(tests) if tests["primary"].any() else pd.DataFrame()
    arms = sorted(trials["arm"].dropna().unique())
    reason = None
    if not has_confirm:
        reason = ("no confirmation-stage trials yet: the search alone compares configurations that "
                  "differ in hyperparameters and search luck, not activations")
        claims.append(f"Activation level: the activation effect is not established: {reason}.")
    elif len(arms) < 2 or dec.empty:
        reason = f"only one arm ({', '.join(arms)}) has results: nothing to compare"
        claims.append(f"Activation level: {reason}.")
    prim = tests[tests["primary"]]
    head = "Activation level (on SYNTHETIC data)" if data["synthetic"] else "Activation level"
    for _, row in prim.iterrows():
        claims.append(_activation_sentence(row, margin_points, seeds, head))
    for _, row in tests[(tests["level"] == ACTIVATION) & ~tests["primary"]].iterrows():
        claims.append(_gap_sentence(row, seeds, head))
    claims += _configuration_sentences(tests)
    claims += _sensitivity_sentences(tests)
    if (d := _divergence_sentence(div)) is not None:
        claims.append(d)
    if "gap_source" in trials and (trials.loc[trials["stage"] == stage, "gap_source"] == GAP_RUNNING).any():
        claims.append("Generalization gap: these runs predate train_eval_accuracy, so the gap uses the "
                      "running training accuracy (dropout on, weights changing during the epoch) minus "
                      "val accuracy: not measured like val accuracy; read it as indicative only.")

    d0 = dec.iloc[0].to_dict() if len(dec) else {}
    tested = bool(d0) and bool(np.isfinite(d0.get("p_value", np.nan)))
    metric = prim["metric"].iloc[0] if len(prim) else None
    usable = trials[(trials["stage"] == stage) & (trials["status"] == "finished")]
    reps = usable.assign(replicate=usable["replicate"].fillna(0) if "replicate" in usable else 0)
    record = {
        "schema_version": SCHEMA_VERSION,
        "primary_metric": metric,
        "primary_metric_label": LABELS.get(metric) if metric else None,
        "unit": "replicate",
        "test": PAIRED_TEST,
        "min_replicates": MIN_REPLICATES,
        "alpha": alpha,
        "arms": arms,
        "arm_a": d0.get("arm_a"), "arm_b": d0.get("arm_b"),
        "winner": d0.get("winner"),
        "tested": bool(d0.get("tested", False)),
        "reason": reason or (d0.get("reason") or None),
        "equivalent": bool(d0.get("equivalent", False)),
        "equivalence_margin_points": margin_points,
        "difference": d0.get("estimate"),
        "difference_units": "accuracy (fraction of 1), arm_a - arm_b",
        "ci": [d0.get("ci_low"), d0.get("ci_high")] if tested else None,
        "ci_level": d0.get("conf_level") if tested else None,
        "p_value": d0.get("p_value"), "p_holm": d0.get("p_holm"),
        "tests_in_family": int(tests["p_value"].notna().sum()),
        "p_a_better": d0.get("p_a_better"),
        "p_a_better_ci": [d0.get("p_a_better_low"), d0.get("p_a_better_high")] if d0 else None,
        "replicates": {a: int(reps.loc[reps["arm"] == a, "replicate"].nunique()) for a in arms},
        "seeds": {a: seed_counts.get(a, []) for a in arms},
        "diverged": {f"{r['arm']}/{r['stage']}": {"runs": int(r["runs"]), "diverged": int(r["diverged"])}
                     for _, r in div.iterrows()},
        "data_source": data["source"],
        "synthetic_data": data["synthetic"],
        "official_cifar10": data["official"],
        "data": data["experiments"],
        "claims": claims,
        "comparisons": [
            {k: r[k] for k in ("level", "metric", "arm_a", "arm_b", "replicate", "param", "config_a",
                               "config_b", "n", "estimate", "ci_low", "ci_high", "conf_level", "test",
                               "p_value", "p_holm", "significant", "equivalent", "p_a_better", "reason")}
            for _, r in tests.iterrows()],
    }
    return Conclusion(tests=tests, claims=claims, record=_jsonable(record), divergence=div)


def verdict(trials: pd.DataFrame, epochs: pd.DataFrame | None = None, meta: dict | None = None,
            **kwargs) -> list[str]:
    """The verdict's sentences (see :func:`conclude`)."""
    return conclude(trials, epochs, meta, **kwargs).claims
