"""The verdict in words and as verdict.json, both from the same tests table and sequential look.

The answer comes first: one sentence (``record["answer"]``) saying what the primary test decided
(winner, equivalent or undecided), with n, the interval and its level, and the boundary. Every
other sentence that claims something carries n, an interval with its level and the test. Only the
primary test (activation level, every run counted, alone at its level) may name a winner; every
other test is secondary (Holm within its family) and is labelled exploratory unless the primary is
rejected. The configuration level names configurations by lr/epochs and says it is about them only.

verdict.json (``Conclusion.record``, schema_version 2; NaN is written as null):

* ``answer``: the opening sentence; ``decision``: "winner" | "equivalent" | "undecided";
  ``winner``: an arm name or null; ``complete``: false when the loader says a stage is incomplete;
* ``primary_metric`` (``analysis.primary``), ``primary_metric_label``, ``unit`` ("replicate"),
  ``counting`` (every run, diverged ones at their recorded accuracy), ``test``, ``alpha``;
* ``replicates_run`` (complete replicate pairs used), ``looks`` (looks made, 1-based index of the
  last), ``looks_planned``, ``plan`` {min, max, final_look: the R at which the budget made a look
  the last, or null}, ``boundary`` (method, final_look, nominal alpha and critical t of this look,
  TOST's one-sided alpha and critical t, the margin, the interval levels);
* ``mde_points`` (smallest difference this run detects with 80% power at the observed spread and
  this look's level), ``sd_points`` (sd of the replicate differences), ``replicates_for_power`` (R
  at which the observed difference would be detected with 80% power; null: none up to 10,000);
* ``arms``; ``arm_a``/``arm_b`` (the deciding pair); ``tested``; ``reason`` (why no test);
  ``equivalent``, ``equivalence_margin_points``; ``difference`` (arm_a - arm_b, accuracy as a
  fraction), ``ci`` [low, high], ``ci_level``, ``equivalence_ci``, ``equivalence_ci_level``,
  ``p_value``; ``secondary_tests`` (the size of the secondary family);
* ``original_configuration``: the secondary comparison at the original experiment's configuration
  (arm_a, arm_b, n, difference, ci, ci_level, test, counting, p_value, p_holm, significant,
  exploratory, equivalent, reason), or null when the sweep ran no runs there (``confirm.original_seeds``);
* ``p_a_better``: P(a tuned arm_a beats a tuned arm_b) over paired replicates, ``p_a_better_ci``
  (at ``ci_level``);
* ``replicates`` {arm: R}, ``seeds`` {arm: [runs per replicate]}, ``diverged``
  {"arm/stage": {"runs", "diverged"}};
* ``data_source`` ("cifar10" | "synthetic" | "mixed" | "unknown"), ``synthetic_data``,
  ``official_cifar10``, ``data`` (per experiment: source, sizes, digest, official, warnings);
* ``claims``: the verdict's sentences, exactly as in report.md and report.html;
* ``comparisons``: every hypothesis (family, level, stage, metric, counting, arms or configurations, n,
  estimate, interval and its level, test, p, Holm p, significant, exploratory, equivalent, reason).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from analysis import sequential
from analysis.completeness import first_line
from analysis.contract import FINISHED, ORIGINAL, STOPPED_EARLY, USABLE, replicate_column
from analysis.decision import (
    ACTIVATION,
    CONFIGURATION,
    ITT,
    MARGIN_POINTS,
    MIN_REPLICATES,
    PAIRED_TEST,
    SENSITIVITY,
    activation_decision,
    decision_tests,
    replicate_differences,
)
from analysis.metrics import GAP_RUNNING
from analysis.provenance import data_sentence, describe_data
from analysis.stats import ALPHA, LABELS
from analysis.summaries import divergence, primary_metric

SCHEMA_VERSION = 2
EDGE_FRACTION = 0.1  # a chosen lr within this fraction of the log-lr range from an end is "at the edge"
OUTLIER_P = 0.01     # skew warning: Bonferroni-adjusted prediction p of the most outlying replicate


@dataclass
class Conclusion:
    """What the report concludes: the tests, the per-analysis decision, the sentences, the JSON."""
    tests: pd.DataFrame
    claims: list[str]
    record: dict[str, Any]
    divergence: pd.DataFrame = field(default_factory=pd.DataFrame)
    differences: pd.DataFrame = field(default_factory=pd.DataFrame)
    look: dict = field(default_factory=dict)


def _pts(v: float) -> str:
    return f"{100 * v:+.1f}"


def _p(v: float) -> str:
    return f"{v:.2g}" if v >= 0.001 else f"{v:.1e}"


def _ci(row, signed: bool = True, flip: bool = False) -> str:
    lo, hi = (-row["ci_high"], -row["ci_low"]) if flip else (row["ci_low"], row["ci_high"])
    fmt = (lambda v: f"{100 * v:+.1f}") if signed else (lambda v: f"{100 * v:.1f}")
    return f"{row['conf_level']:.1%} CI {fmt(lo)} to {fmt(hi)}"


def _family(row) -> str:
    if row.get("family") == "primary":
        return f"p={_p(row['p_value'])}, the primary test, alone at its level"
    return (f"p={_p(row['p_value'])}, Holm p={_p(row['p_holm'])} over {int(row['family_size'])} "
            f"secondary tests")


def _head(row, head: str, tag: str = "") -> str:
    """``head (primary[, tag])``; secondary rows read "exploratory" while the primary test is not
    rejected."""
    if row.get("family") == "primary":
        return f"{head} (primary{', ' + tag if tag else ''})"
    return f"{head} (secondary{', exploratory' if row.get('exploratory') else ''}{', ' + tag if tag else ''})"


def _paired_n(row, seeds: dict[str, str]) -> str:
    counting = "every run counted" if row.get("counting") == ITT else "finished runs only"
    return (f"{PAIRED_TEST}, {counting}, R={int(row['n'])} replicates per arm, each the mean of "
            f"{seeds.get(row['arm_a'], '?')} ({row['arm_a']}) and {seeds.get(row['arm_b'], '?')} "
            f"({row['arm_b']}) seeds")


def _p_better(row, a: str, b: str, flip: bool, what: str = "P(a tuned {a} beats a tuned {b})") -> str:
    p, lo, hi = row["p_a_better"], row["p_a_better_low"], row["p_a_better_high"]
    if flip:
        p, lo, hi = 1 - p, 1 - hi, 1 - lo
    return (f"{what.format(a=a, b=b)} = {p:.2f} ({row['conf_level']:.1%} exact binomial CI {lo:.2f} to "
            f"{hi:.2f}, from {int(row['n'])} paired replicates)")


TUNED_UNIT = ("a replicate is one whole tuning of an arm plus its confirmation seeds; only replicates "
              "measure the luck of the search")
ORIGINAL_UNIT = "a replicate is one data split, with its runs at the original configuration"


def _activation_sentence(row, margin_points: float, seeds: dict[str, str],
                         head: str = "Activation level", tag: str = "", unit: str = TUNED_UNIT,
                         better: str = "P(a tuned {a} beats a tuned {b})") -> str:
    a, b, label = row["arm_a"], row["arm_b"], LABELS.get(row["metric"], row["metric"])
    head = _head(row, head, tag)
    plural = "s" if margin_points != 1 else ""
    if not np.isfinite(row["p_value"]):
        observed = ""
        if row["n"] > 0 and np.isfinite(row["estimate"]):
            observed = (f" Observed, not tested: {a} - {b} = {_pts(row['estimate'])} points over "
                        f"{int(row['n'])} replicate{'s' if row['n'] != 1 else ''}.")
        return (f"{head}: the effect of {a} vs {b} on {label} is not established: {row['reason']} "
                f"({unit}).{observed}")
    if row["significant"]:
        flip = row["estimate"] < 0
        win, lose = (b, a) if flip else (a, b)
        verb = "beats" if row.get("family") == "primary" else "scores higher than"
        return (f"{head}: {win} {verb} {lose} on {label} by {abs(100 * row['estimate']):.1f} points "
                f"({_ci(row, signed=False, flip=flip)}; {_paired_n(row, seeds)}; "
                f"{_family(row)}); {_p_better(row, win, lose, flip, better)}.")
    if row["equivalent"]:
        return (f"{head}: no difference larger than {margin_points:g} point{plural} in {label} between "
                f"{a} and {b}: {a} - {b} = {_pts(row['estimate'])} points (TOST: the "
                f"{row['equivalence_level']:.1%} interval lies within ±{margin_points:g}; {_ci(row)}; "
                f"{_paired_n(row, seeds)}; {_family(row)}).")
    return (f"{head}: the effect of {a} vs {b} on {label} is not established: {a} - {b} = "
            f"{_pts(row['estimate'])} points ({_ci(row)}; {_paired_n(row, seeds)}; {_family(row)}); "
            f"equivalence within ±{margin_points:g} point{plural} is not shown either (TOST); "
            f"{_p_better(row, a, b, False, better)}.")


def _gap_sentence(row, seeds: dict[str, str], head: str = "Activation level", tag: str = "") -> str:
    a, b = row["arm_a"], row["arm_b"]
    head = _head(row, head, tag)
    where = (f"at matched epochs ({row['epochs_note']})" if row["metric"] == "gap_matched_epoch"
             else "at each arm's chosen configuration")
    what = f"train-validation accuracy gap {where}"
    if not np.isfinite(row["p_value"]):
        return f"{head}, {what}: not tested: {row['reason']}."
    body = (f"gap {a} - {b} = {_pts(row['estimate'])} points ({_ci(row)}; {_paired_n(row, seeds)}; "
            f"{_family(row)}); "
            + _p_better(row, a, b, False, "P({b} has the smaller train-validation gap than {a})"))
    if row["significant"]:
        more, less = (a, b) if row["estimate"] > 0 else (b, a)
        return f"{head}, {what}: {more} has a larger train-validation gap than {less}: {body}."
    return f"{head}, {what}: no established difference: {body}."


def _configuration_sentences(tests: pd.DataFrame) -> list[str]:
    c = tests[tests["level"] == CONFIGURATION]
    if c.empty:
        return []
    out = []
    explore = ", exploratory" if c["exploratory"].any() else ""
    head = (f"Configuration level (secondary{explore}; seed noise only, within one replicate: about these "
            "configurations, not the activations)")
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
    s = tests[tests["level"] == SENSITIVITY]
    out = []
    for _, r in s[s["significant"]].iterrows():
        direction = "rises" if r["estimate"] > 0 else "falls"
        out.append(f"Search sensitivity (secondary{', exploratory' if r['exploratory'] else ''}): "
                   f"{r['arm_a']}'s {r['epochs_note']}, {direction} with log10(learning rate) "
                   f"(Spearman rho={r['estimate']:+.2f}, {r['conf_level']:.1%} CI {r['ci_low']:+.2f} to "
                   f"{r['ci_high']:+.2f} (Fisher z, approximate: it may disagree with the exact p); "
                   f"{r['test']}; n={int(r['n'])} search trials; {_family(r)}).")
    untested = s[s["p_value"].isna() & s["reason"].str.startswith("no per-epoch rows")]
    if len(untested):
        out.append(f"Search sensitivity: not tested: {untested['reason'].iloc[0]}.")
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
            + ". The primary test counts each diverged confirmation run at its recorded accuracy "
              "(intention to treat); the finished-runs-only comparison leaves them out.")


def _outlier_sentence(diffs: pd.DataFrame) -> str | None:
    """A replicate difference far from the others: the t-test assumes roughly symmetric differences.
    Each difference is compared with a t prediction interval of the others (its studentized
    deletion residual); a warning when the smallest p, times R (Bonferroni), is below
    ``OUTLIER_P``: about 1% of normal samples warn."""
    from scipy import stats

    for (a, b), g in diffs.groupby(["arm_a", "arm_b"]):
        d = 100 * g["difference"].to_numpy(float)
        n = len(d)
        if n < 4:
            continue
        best = None
        for i, v in enumerate(d):
            rest = np.delete(d, i)
            sd = rest.std(ddof=1)
            if not sd > 0:
                continue
            z = abs(v - rest.mean()) / (sd * math.sqrt(1 + 1 / len(rest)))
            p = 2 * stats.t.sf(z, len(rest) - 1)
            if best is None or p < best[0]:
                best = (p, i, v, rest)
        if best is not None and best[0] * n < OUTLIER_P:
            p, i, v, rest = best
            r = int(g["replicate"].iloc[i])
            return (f"Skew warning: replicate {r}'s difference {a} - {b} = {v:+.1f} points lies outside the "
                    f"others' range (the other {len(rest)}: mean {rest.mean():+.1f}, sd "
                    f"{rest.std(ddof=1):.2f}; prediction p={p:.1e}, x{n} = {p * n:.1e}): the paired t-test "
                    f"assumes roughly symmetric replicate differences, and with skewed search luck a "
                    f"fixed-R t-test named a false winner up to 3 times as often as alpha in the calibration "
                    f"(benchmarks/README.md).")
    return None


def _edge_sentence(trials: pd.DataFrame, meta: dict | None) -> str | None:
    """A chosen learning rate near an end of the searched range: the range may decide."""
    lo = hi = None
    for m in (meta or {}).values():
        space = (((m or {}).get("config") or {}).get("search") or {}).get("space") or {}
        lr = space.get("lr") if isinstance(space, dict) else None
        ends = (lr.get("low"), lr.get("high")) if isinstance(lr, dict) else (None, None)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ends):
            lo, hi = float(ends[0]), float(ends[1])
    c = trials[(trials["stage"] == "confirm")]
    if lo is None or not (0 < lo < hi) or "lr" not in c or c.empty:
        return None
    x = np.log10(pd.to_numeric(c["lr"], errors="coerce"))
    span = np.log10(hi) - np.log10(lo)
    near = c[(x - np.log10(lo) < EDGE_FRACTION * span) | (np.log10(hi) - x < EDGE_FRACTION * span)]
    if near.empty:
        return None
    cells = near.drop_duplicates(["arm", "replicate"]) if "replicate" in near else near.drop_duplicates("arm")
    parts = [f"{r['arm']} (replicate {int(r['replicate']) if 'replicate' in r else 0}: lr {r['lr']:.2g})"
             for _, r in cells.iterrows()]
    return (f"Search range warning: chosen learning rates within {EDGE_FRACTION:.0%} of an end of the "
            f"searched range [{lo:g}, {hi:g}] (log scale): {', '.join(parts)}. An optimum at or beyond the "
            f"edge is found less well than one inside it, so the range, not the activation, may decide.")


def _halving_sentence(trials: pd.DataFrame, tests: pd.DataFrame) -> str | None:
    """Early stopping cut search trials while validation accuracy, at the epoch every trial of an arm
    reached, still rose with the learning rate: its rungs ranked by speed, which need not be the
    ranking at the epochs the confirmation trains (on CIFAR-10 it moved the comparison by about 3
    points, benchmarks/README.md)."""
    search = trials[trials["stage"] == "search"]
    cut = int((search["status"] == STOPPED_EARLY).sum())
    s = tests[tests["level"] == SENSITIVITY]  # as _sensitivity_sentences reads them
    rising = s[(s["estimate"] > 0) & (s["p_value"] < ALPHA)]
    if not cut or rising.empty:
        return None
    parts = [f"{r['arm_a']} rho {r['estimate']:+.2f} (p={r['p_value']:.2g}, n={int(r['n'])})"
             for _, r in rising.iterrows()]
    return (f"Early stopping warning: early stopping cut {cut} of {len(search)} search trials while "
            f"validation accuracy at the epoch all of an arm's trials reached rose with the learning rate "
            f"({'; '.join(parts)}): its rungs ranked learning rates by how fast they start, not by where "
            f"they end. If one activation's good configurations start slower, that tilts the comparison "
            f"against it (on CIFAR-10 it cost relu about 3 points: benchmarks/README.md); rerun with "
            f"search.early_stopping.enabled: false to check.")


def _original_head(trials: pd.DataFrame) -> str:
    """"Original configuration (lr 0.001, 20 epochs, no search)": what its runs trained."""
    t = trials[trials["stage"] == ORIGINAL]
    parts = []
    epochs = lambda x: f"{x:.0f} epoch{'' if x == 1 else 's'}"  # noqa: E731
    for col, fmt in (("lr", "lr {:.3g}".format), ("epochs", epochs)):
        v = pd.to_numeric(t[col], errors="coerce").dropna().unique() if col in t else []
        if len(v):
            parts.append(" or ".join(fmt(x) for x in sorted(v)))
    return f"Original configuration ({', '.join(parts + ['no search'])})"


def original_configuration(tests: pd.DataFrame) -> dict[str, Any] | None:
    """The secondary comparison at the original configuration (verdict.json's
    ``original_configuration``), or None when the sweep ran no such runs."""
    rows = tests[tests["stage"] == ORIGINAL]
    if rows.empty:
        return None
    r = rows.iloc[0]
    tested = bool(np.isfinite(r["p_value"]))
    return {"arm_a": r["arm_a"], "arm_b": r["arm_b"], "n": int(r["n"]), "difference": r["estimate"],
            "ci": [r["ci_low"], r["ci_high"]] if tested else None,
            "ci_level": r["conf_level"] if tested else None,
            "test": r["test"], "counting": r["counting"], "p_value": r["p_value"], "p_holm": r["p_holm"],
            "significant": bool(r["significant"]), "exploratory": bool(r["exploratory"]),
            "equivalent": bool(r["equivalent"]), "reason": r["reason"] or None}


def _seed_counts(trials: pd.DataFrame, stage: str, statuses=(FINISHED,)) -> dict[str, list[int]]:
    """Per arm, runs of ``statuses`` in each replicate (replicate order)."""
    c = trials[(trials["stage"] == stage) & trials["status"].isin(statuses)]
    if c.empty:
        return {}
    counts = c.assign(replicate=replicate_column(c)).groupby(["arm", "replicate"]).size()
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


def declared_primary(meta: dict | None) -> tuple[str | None, list[str]]:
    """``analysis.primary`` of the experiments' configs (None: not declared) and notes on conflicts."""
    values = {name: (((m or {}).get("config") or {}).get("analysis") or {}).get("primary")
              for name, m in (meta or {}).items()}
    declared = sorted({v for v in values.values() if isinstance(v, str) and v})
    if len(declared) > 1:
        return declared[0], [f"The experiments declare different primary metrics ({', '.join(declared)}); "
                             f"the report tests {declared[0]}."]
    return (declared[0] if declared else None), []


def declared_plan(meta: dict | None) -> tuple[sequential.Plan | None, list[str]]:
    """The replicate plan of the first experiment with a config (None without one), with the
    look its budget made the last (``final-look.json``), if it recorded one."""
    for name, m in (meta or {}).items():
        cfg = (m or {}).get("config")
        if cfg:
            try:
                plan = sequential.plan_from_config(cfg)
            except ValueError as e:
                return None, [f"`{name}`: {e}; the report treats the replicates run as a fixed design"]
            record = (m or {}).get("final_look")
            if record is None:
                return plan, []
            try:
                return sequential.with_final_look(plan, record), []
            except ValueError as e:  # the planned levels: what the sweep spent before its last look
                return plan, [f"`{name}`: {e}; ignored: every look is tested at the plan's level"]
    return None, []


def stages_complete(trials: pd.DataFrame) -> bool | None:
    """False when the loader marks a stage incomplete (a boolean ``stage_complete`` column or a
    ``complete`` attribute of the trials table); None when it gives no such signal."""
    if "stage_complete" in trials and len(trials):
        return bool(trials["stage_complete"].fillna(True).astype(bool).all())
    if "complete" in trials.attrs:
        return bool(trials.attrs["complete"])
    return None


def _answer(look: dict, label: str, margin_points: float, synthetic: bool) -> str:
    """The report's opening sentence."""
    where = " (on SYNTHETIC data: says nothing about CIFAR-10)" if synthetic else ""
    r, plural = look["replicates"], "s" if look["replicates"] != 1 else ""
    b = look["boundary"]
    cut = (" planned, the last the budget allowed"
           if look.get("final_look") == r and look["look"] < look["looks_planned"] else "")
    at = (f"look {look['look']} of {look['looks_planned']}{cut}, R={r} replicate pair{plural}"
          if look["looks_planned"] > 1 else f"R={r} replicate pair{plural}")
    if look["decision"] == "winner":
        a, l_ = (look["arm_a"], look["arm_b"]) if look["difference"] > 0 else (look["arm_b"], look["arm_a"])
        lo, hi = sorted(abs(v) for v in look["ci"]) if look["ci"][0] * look["ci"][1] > 0 else look["ci"]
        return (f"Answer{where}: {a} beats {l_} on {label} by {abs(look['difference']):.1f} points "
                f"({look['ci_level']:.1%} CI {lo:.1f} to {hi:.1f}; {at}; p={_p(look['p_value'])} below "
                f"the boundary {b['nominal_alpha']:.3g}).")
    if look["decision"] == "equivalent":
        lo, hi = look["equivalence_ci"]
        return (f"Answer{where}: {look['arm_a']} and {look['arm_b']} are equivalent on {label} within "
                f"±{margin_points:g} points: {look['arm_a']} - {look['arm_b']} = {look['difference']:+.1f} "
                f"points ({look['equivalence_ci_level']:.1%} CI {lo:+.1f} to {hi:+.1f} inside the margin: "
                f"TOST at one-sided {b['equivalence_alpha']:.3g}; {at}).")
    if look["ci"] is None:
        return f"Answer{where}: undecided: {look['reason'] or 'no test could be made'}."
    lo, hi = look["ci"]
    return (f"Answer{where}: undecided: {look['arm_a']} - {look['arm_b']} = {look['difference']:+.1f} points "
            f"on {label} ({look['ci_level']:.1%} CI {lo:+.1f} to {hi:+.1f}; {at}): neither a winner "
            f"(p={_p(look['p_value'])}, boundary {b['nominal_alpha']:.3g}) nor equivalence within "
            f"±{margin_points:g} points is shown.")


def _power_sentence(look: dict) -> str | None:
    if look["mde_points"] is None:
        return None
    text = (f"Detectable: with R={look['replicates']} replicate pairs and the observed spread (sd of the "
            f"replicate differences {look['sd_points']:.2f} points), this run finds a true difference of "
            f"{look['mde_points']:.1f} points with 80% power at this look's level.")
    if look["decision"] in ("undecided", "continue"):
        need = look["replicates_for_power"]
        text += (f" To find the observed {abs(look['difference']):.1f} points with 80% power would take "
                 + (f"{need} replicate pairs ({need - look['replicates']} more)." if need is not None
                    else f"more than {sequential.MAX_EXTRA:,} replicate pairs."))
    return text


def conclude(trials: pd.DataFrame, epochs: pd.DataFrame | None = None, meta: dict | None = None, *,
             alpha: float = ALPHA, margin_points: float = MARGIN_POINTS, metric: str | None = None,
             plan: sequential.Plan | None = None) -> Conclusion:
    """Run the decision rule on one analysis and phrase it: the answer, the claims and the
    verdict.json record (schema in this module's docstring). ``metric`` defaults to the config's
    ``analysis.primary``, else :func:`analysis.summaries.primary_metric`; ``plan`` to the config's
    ``search.replicates``."""
    data = describe_data(meta)
    notes: list[str] = []
    stage = "confirm"
    declared, n1 = declared_primary(meta)
    metric = metric or declared or primary_metric(trials, stage)
    if plan is None:
        plan, n2 = declared_plan(meta)
        notes += n2
        if plan is None:  # no recorded plan: the replicates run, as a fixed design (one look)
            r = max(1, len(replicate_differences(trials, metric, stage).groupby("replicate")))
            plan = sequential.Plan(r, r)
            notes.append(f"No replicate plan was recorded (no config.yaml): the {r} replicate(s) run are "
                         f"tested as a fixed design, one look at alpha={alpha}.")
    notes += n1
    plan = replace(plan, alpha=alpha)
    has_confirm = bool(((trials["stage"] == stage) & trials["status"].isin(USABLE)).any())
    look = sequential.look(trials, plan, margin_points=margin_points, metric=metric, final=True)
    b = look["boundary"]
    tests = decision_tests(trials, epochs, metric=metric, alpha=alpha, margin_points=margin_points,
                           stage=stage, primary_alpha=b["nominal_alpha"],
                           equivalence_alpha=b["equivalence_alpha"])
    diffs = replicate_differences(trials, metric, stage)
    div = divergence(trials)
    seed_counts = _seed_counts(trials, stage, USABLE)
    seeds = {a: _range_text(v) for a, v in seed_counts.items()}
    dec = activation_decision(tests) if tests["primary"].any() else pd.DataFrame()
    arms = sorted(trials["arm"].dropna().unique())
    label = LABELS.get(metric, metric)
    answer = _answer(look, label, margin_points, data["synthetic"])
    claims = [data_sentence(data)]
    reason = None
    if not has_confirm:
        reason = ("no confirmation-stage trials yet: the search alone compares configurations that "
                  "differ in hyperparameters and search luck, not activations")
        claims.append(f"Activation level: the activation effect is not established: {reason}.")
        answer = f"Answer: undecided: {reason}."
    elif len(arms) < 2 or dec.empty:
        reason = f"only one arm ({', '.join(arms)}) has results: nothing to compare"
        claims.append(f"Activation level: {reason}.")
        answer = f"Answer: undecided: {reason}."
    prim = tests[tests["primary"]]
    head, tag = "Activation level", ("on SYNTHETIC data" if data["synthetic"] else "")
    for _, row in prim.iterrows():
        claims.append(_activation_sentence(row, margin_points, seeds, head, tag))
    if (p := _power_sentence(look)) is not None and has_confirm:
        claims.append(p)
    original_head, original_seeds = _original_head(trials), \
        {a: _range_text(v) for a, v in _seed_counts(trials, ORIGINAL, USABLE).items()}
    for _, row in tests[(tests["level"] == ACTIVATION) & ~tests["primary"]].iterrows():
        if row.get("stage") == ORIGINAL:
            claims.append(_activation_sentence(
                row, margin_points, original_seeds, original_head, tag, ORIGINAL_UNIT,
                "P({a} beats {b} at the original configuration)"))
        elif row["metric"] == metric:
            claims.append(_activation_sentence(row, margin_points, seeds, head, tag))
        else:
            claims.append(_gap_sentence(row, seeds, head, tag))
    claims += _configuration_sentences(tests)
    claims += _sensitivity_sentences(tests)
    for extra in (_divergence_sentence(div), _outlier_sentence(diffs), _edge_sentence(trials, meta),
                  _halving_sentence(trials, tests)):
        if extra is not None:
            claims.append(extra)
    if "gap_source" in trials and (trials.loc[trials["stage"] == stage, "gap_source"] == GAP_RUNNING).any():
        claims.append("Train-validation gap: these runs predate train_eval_accuracy, so the gap uses the "
                      "running training accuracy (dropout on, weights changing during the epoch) minus "
                      "val accuracy: not measured like val accuracy; read it as indicative only.")
    claims += notes
    complete = stages_complete(trials)
    incomplete = None
    if complete is False:
        incomplete = first_line({"complete": False, "missing": trials.attrs.get("missing") or []})
        look = {**look, "decision": "undecided", "winner": None}  # an unfinished stage decides nothing
        answer = "Answer: undecided: the results are incomplete; finish the sweep with --resume."
        claims.insert(0, incomplete)

    d0 = dec.iloc[0].to_dict() if len(dec) else {}
    tested = bool(d0) and bool(np.isfinite(d0.get("p_value", np.nan)))
    usable = trials[(trials["stage"] == stage) & trials["status"].isin(USABLE)]
    reps = usable.assign(replicate=replicate_column(usable))
    decision = look["decision"] if look["decision"] in ("winner", "equivalent") else "undecided"
    record = {
        "schema_version": SCHEMA_VERSION,
        "answer": answer,
        "decision": decision,
        "winner": look["winner"],
        "complete": True if complete is None else complete,
        "incomplete": incomplete,
        "missing": (trials.attrs.get("missing") or []) if complete is False else [],
        "complete_signal": "loader" if complete is not None else "none (the loader gives no incomplete-stage "
                                                                  "signal: assumed complete)",
        "primary_metric": metric,
        "primary_metric_label": label,
        "unit": "replicate",
        "counting": ITT,
        "test": look["test"],
        "alpha": alpha,
        "min_replicates": MIN_REPLICATES,
        "plan": {"min": plan.min_replicates, "max": plan.max_replicates, "final_look": plan.final_look},
        "replicates_run": look["replicates"],
        "looks": look["look"],
        "looks_planned": look["looks_planned"],
        "boundary": b,
        "mde_points": look["mde_points"],
        "sd_points": look["sd_points"],
        "replicates_for_power": look["replicates_for_power"],
        "arms": arms,
        "arm_a": d0.get("arm_a"), "arm_b": d0.get("arm_b"),
        "tested": tested,
        "reason": reason or (d0.get("reason") or None),
        "equivalent": decision == "equivalent",
        "equivalence_margin_points": margin_points,
        "difference": d0.get("estimate"),
        "difference_units": "accuracy (fraction of 1), arm_a - arm_b",
        "ci": [d0.get("ci_low"), d0.get("ci_high")] if tested else None,
        "ci_level": d0.get("conf_level") if tested else None,
        "equivalence_ci": ([v / 100 for v in look["equivalence_ci"]] if tested and look["equivalence_ci"]
                           else None),
        "equivalence_ci_level": look["equivalence_ci_level"] if tested else None,
        "p_value": d0.get("p_value"),
        "secondary_tests": int((~tests["primary"] & tests["p_value"].notna()).sum()),
        "original_configuration": original_configuration(tests),
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
            {k: r[k] for k in ("family", "level", "stage", "metric", "counting", "arm_a", "arm_b",
                               "replicate", "param", "config_a", "config_b", "n", "estimate", "ci_low",
                               "ci_high", "conf_level", "test", "p_value", "p_holm", "significant",
                               "exploratory", "equivalent", "p_a_better", "reason")}
            for _, r in tests.iterrows()],
    }
    return Conclusion(tests=tests, claims=claims, record=_jsonable(record), divergence=div,
                      differences=diffs, look=look)


def verdict(trials: pd.DataFrame, epochs: pd.DataFrame | None = None, meta: dict | None = None,
            **kwargs) -> list[str]:
    """The verdict's sentences (see :func:`conclude`)."""
    return conclude(trials, epochs, meta, **kwargs).claims
