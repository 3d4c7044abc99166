"""Write the SELU-vs-ReLU report: report.md, a self-contained report.html, verdict.json,
CSV/Parquet, figures.

``build_report(results, studies)`` computes everything (no I/O); ``save_report(results, out)``
draws and writes; ``write_report(paths, out)`` loads, then saves. The sweep calls ``write_report``
when it ends. The report opens with the answer: one sentence (``record["answer"]``), one figure
(the paired replicate differences with their interval, the boundary and the ±margin band) and what
the run could have detected. report.md, report.html and verdict.json carry the same answer and
claims (``Report.verdict`` is ``Report.record["claims"]``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import html as html_page
from analysis import plots
from analysis.claims import conclude
from analysis.compare import UNPAIRED_TEST, separate_replicates, unpaired_tests
from analysis.completeness import completeness
from analysis.contract import CONFIRM, ORIGINAL, SEARCH
from analysis.decision import (
    ACTIVATION,
    CONFIGURATION,
    MARGIN_POINTS,
    SENSITIVITY,
    configuration_table,
    replicate_table,
)
from analysis.load import Results, load_results
from analysis.overfitting import overfitting_by_epoch
from analysis.provenance import (
    describe_data,
    equivalence_margin,
    reproduce_info,
    run_summary,
    sweep_settings,
)
from analysis.stats import LABELS
from analysis.studies import load_studies
from analysis.summaries import (
    arm_summary,
    expected_best_curve,
    param_importances,
    primary_metric,
    search_summary,
)


@dataclass
class Report:
    verdict: list[str]
    confirm_summary: pd.DataFrame
    comparisons: pd.DataFrame  # every hypothesis, all levels (analysis.decision.decision_tests)
    search_summary: pd.DataFrame
    importances: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    primary_metric: str = "final_val_accuracy"
    record: dict = field(default_factory=dict)  # verdict.json
    replicates: pd.DataFrame = field(default_factory=pd.DataFrame)
    configurations: pd.DataFrame = field(default_factory=pd.DataFrame)
    divergence: pd.DataFrame = field(default_factory=pd.DataFrame)
    run_summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    data: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    expected_best: pd.DataFrame = field(default_factory=pd.DataFrame)
    overfitting: pd.DataFrame = field(default_factory=pd.DataFrame)
    margin_points: float = MARGIN_POINTS
    captions: dict = field(default_factory=dict)  # figure name -> caption (draw_figures fills it)
    unpaired: pd.DataFrame = field(default_factory=pd.DataFrame)  # arms of different experiments
    differences: pd.DataFrame = field(default_factory=pd.DataFrame)  # the primary's replicate pairs
    look: dict = field(default_factory=dict)  # analysis.sequential.look at the replicates reached


def build_report(results: Results, studies: dict | None = None) -> Report:
    trials, epochs = results.trials, results.epochs
    meta = getattr(results, "meta", None) or {}
    margin, notes = equivalence_margin(meta)
    notes = list(results.notes) + notes
    state = completeness(results)  # what the saved config planned against what ended
    trials.attrs["complete"], trials.attrs["missing"] = state["complete"], state["missing"]
    conclusion = conclude(trials, epochs, meta, margin_points=margin)
    metric = conclusion.record["primary_metric"] or primary_metric(trials)
    if not meta:
        notes.append("No experiment metadata (config.yaml, data.json) was loaded: data source, sizes and "
                     "planned replicates are unknown to this report.")
    if "replicate" not in trials:
        notes.append("The trials carry no `replicate` column (an older sweep): each arm counts as one "
                     "replicate, so the activation effect cannot be tested.")
    on_test = sorted(trials.loc[trials["validate_on"] == "test", "experiment"].unique()) \
        if "validate_on" in trials else []
    for name in on_test:
        notes.append(f"`{name}` measured its validation metrics on the test set (validate_on: test), "
                     f"as the original experiment did; nothing was selected on them (no search).")
    importances = param_importances(studies or {})
    skipped = sorted(set(studies or {}) - set(importances["study"]))
    if skipped:
        notes.append(f"Parameter importance is not computed for {len(skipped)} of {len(studies)} studies "
                     f"({', '.join(skipped)}): each has fewer than 2 completed trials, or one value per "
                     f"parameter (Optuna's importance reads completed trials only, not pruned ones).")
    return Report(
        verdict=conclusion.claims, confirm_summary=arm_summary(trials), comparisons=conclusion.tests,
        search_summary=search_summary(trials), importances=importances, notes=notes,
        primary_metric=metric, record=conclusion.record,
        replicates=replicate_table(trials, metric, itt=True).drop(columns="_analysis"),
        configurations=configuration_table(trials, metric).drop(columns="_analysis"),
        divergence=conclusion.divergence, run_summary=run_summary(trials, epochs),
        data=describe_data(meta), settings=sweep_settings(meta),
        expected_best=expected_best_curve(trials), overfitting=overfitting_by_epoch(trials, epochs),
        margin_points=margin, unpaired=unpaired_tests(trials, metric),
        differences=conclusion.differences, look=conclusion.look)


def _table(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    return html_page.markdown_table(df, floatfmt)


def _environment() -> str:
    import numpy
    import scipy

    return (f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} on {platform.node()} "
            f"({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"pandas {pd.__version__}, numpy {numpy.__version__}, scipy {scipy.__version__}).")


def _points(v) -> str:
    return "" if v is None or not np.isfinite(v) else f"{100 * v:+.2f}"


def _interval(lo, hi, scale: float = 100, fmt: str = "+.2f", missing: str = "") -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return missing
    return f"{scale * lo:{fmt}} to {scale * hi:{fmt}}"


def _p_cell(v) -> str:
    return "" if not np.isfinite(v) else f"{v:.3g}"


def _tests_table(tests: pd.DataFrame, level: str) -> pd.DataFrame:
    """The tests of one level as display strings (differences in points, rho as is)."""
    t = tests[tests["level"] == level]
    rows = []
    for _, r in t.iterrows():
        scale, fmt = (1, "+.2f") if level == SENSITIVITY else (100, "+.2f")
        row = {"metric": LABELS.get(r["metric"], r["metric"])}
        if level == SENSITIVITY:
            row.update(arm=r["arm_a"], param=r["param"], n=int(r["n"]), rho=f"{r['estimate']:+.2f}"
                       if np.isfinite(r["estimate"]) else "")
        elif level == CONFIGURATION:
            row.update(replicate=int(r["replicate"]), a=r["config_a"], b=r["config_b"],
                       seeds=f"{int(r['n_a'])} / {int(r['n_b'])}",
                       **{"a - b (points)": _points(r["estimate"])})
        else:
            note = f" ({r['epochs_note']})" if isinstance(r["epochs_note"], str) and r["epochs_note"] else ""
            if r.get("stage") == ORIGINAL:
                note += " (at the original configuration, no search)"
            row.update(metric=row["metric"] + note, a=r["arm_a"], b=r["arm_b"], replicates=int(r["n"]),
                       **{"a - b (points)": _points(r["estimate"])})
        row.update(CI=_interval(r["ci_low"], r["ci_high"], scale, fmt),
                   level=f"{r['conf_level']:.2%}" if np.isfinite(r["p_value"]) else "",
                   test=r["test"], p=_p_cell(r["p_value"]), **{"Holm p": _p_cell(r["p_holm"])},
                   verdict=("significant" if r["significant"] else
                            "equivalent" if r["equivalent"] else
                            "not significant" if np.isfinite(r["p_value"]) else f"not tested: {r['reason']}"))
        if level == ACTIVATION:
            row.update(family=r["family"] + (", exploratory" if r["exploratory"] else ""),
                       counting=r["counting"])
            row["P(a > b in a replicate)"] = (f"{r['p_a_better']:.2f} ({r['p_a_better_low']:.2f} to "
                                   f"{r['p_a_better_high']:.2f})" if np.isfinite(r["p_a_better"]) else "")
        rows.append(row)
    return pd.DataFrame(rows)


def _data_table(report: Report) -> pd.DataFrame:
    rows = []
    for name, v in report.data.get("experiments", {}).items():
        s = report.settings.get(name, {})
        rows.append({"experiment": name, "source": v["source"], "official CIFAR-10": v["official"],
                     "train": v["train"], "val": v["val"], "test": v["test"],
                     "digest": (str(v["digest"])[:16] if v["digest"] else None),
                     "replicates (planned)": s.get("replicates"), "trials per cell": s.get("trials_per_cell"),
                     "seeds (planned)": s.get("confirm_seeds")})
    return pd.DataFrame(rows)


def _expected_best_table(curve: pd.DataFrame) -> pd.DataFrame:
    if curve.empty:
        return curve
    big = int(curve["n"].max())
    ns = sorted({1, 2, 3, 5, 10, 20, 50, big} & set(range(1, big + 1)))
    c = curve[curve["n"].isin(ns)]
    cell = c.apply(lambda r: f"{r['expected']:.4f} ± {r['std']:.4f}", axis=1)
    return c.assign(cell=cell).pivot(index="n", columns="arm", values="cell").reset_index()


def _overfitting_table(info: pd.DataFrame) -> pd.DataFrame:
    if info.empty:
        return info
    last = int(info["epoch"].max())
    step = max(1, last // 8)
    keep = set(range(step, last + 1, step)) | {1, last}
    d = info[info["epoch"].isin(keep)]
    cell = d.apply(lambda r: f"{100 * r['gap_mean']:+.1f} "
                   f"[{_interval(r['gap_ci_low'], r['gap_ci_high'], fmt='+.1f', missing='no interval')}] "
                   f"(n={int(r['n'])} {r['unit']}{'s' if r['n'] != 1 else ''})", axis=1)
    table = d.assign(cell=cell, epoch=d["epoch"].astype(int))
    table = table.pivot(index="epoch", columns="arm", values="cell")
    return table.fillna("not trained").reset_index()


ANSWER_FIGURE = "replicate_differences"


def _answer_figure(report: Report, figures: dict[str, str]) -> list[str]:
    return ["", *_figure(report, figures, ANSWER_FIGURE)] if ANSWER_FIGURE in figures else []


def _detectable(report: Report) -> list[str]:
    line = next((c for c in report.verdict if c.startswith("Detectable:")), None)
    return ["", line] if line else []


def _how_to_read(report: Report) -> str:
    rec, margin = report.record, report.margin_points
    b = rec.get("boundary") or {}
    plan = rec.get("plan") or {}
    seq = (f"a sequential plan (looks after every replicate pair from R={plan.get('min')} to "
           f"R={plan.get('max')}: {b.get('method')}; nominal level "
           f"{b.get('nominal_alpha', float('nan')):.4f} at the look reported)"
           if rec.get("looks_planned", 0) > 1 else
           f"a fixed design (one look at alpha={rec.get('alpha')})")
    return (f"How to read it. The question, declared before the run (analysis.primary), is the activation "
            f"effect on {LABELS.get(report.primary_metric, report.primary_metric)}. Its unit is the "
            f"replicate: one whole tuning of an arm plus its confirmation seeds, paired across arms by "
            f"replicate (same candidates, trial seeds and data split). Its value is the mean over ALL the "
            f"replicate's confirmation runs, a diverged run at its recorded accuracy (intention to treat), "
            f"so it carries the luck of the search as well as seed noise. It is tested alone by a "
            f"{rec.get('test')} under {seq}; only it can name a winner. Equivalence within ±{margin:g} "
            f"point{'s' if margin != 1 else ''} (analysis.equivalence_margin) is TOST at the same "
            f"boundaries. The t-test assumes roughly symmetric replicate differences (see the skew warning "
            f"when one stands out). Every other test ({rec.get('secondary_tests')} here) is secondary: "
            f"Holm-adjusted within its own family, each interval at its Holm step's level, and exploratory "
            f"unless the primary test is rejected. The original configuration, when run "
            f"(confirm.original_seeds), is another question: both activations at the original "
            f"experiment's lr and epochs, untuned, with no search luck. The configuration level compares "
            f"two tuned configurations over seeds within one replicate: it is about those configurations "
            f"only. Every interval prints its level. Machine-readable: verdict.json.")


def render_markdown(report: Report, results: Results, figures: dict[str, str]) -> str:
    t = results.trials
    counts = t.groupby(["experiment", "stage", "status"]).size().rename("trials").reset_index()
    rec = report.record
    parts = [
        *([rec["incomplete"], ""] if rec.get("incomplete") else []),
        "# SELU vs ReLU: sweep report", "",
        f"Experiments: {', '.join(f'`{n}` ({_esc(p)})' for n, p in results.experiments.items())}.  ",
        _environment(), "",
        "## Answer", "",
        rec.get("answer", ""), "",
        *_answer_figure(report, figures), *_detectable(report), "",
        "## Verdict", "",
        *[f"- {line}" for line in report.verdict], "",
        _how_to_read(report), "",
        "## What was run", "",
        _table(_data_table(report)), "",
        _table(report.run_summary, ".3f"), "",
        "Epochs trained and compute hours (sum of each epoch's `epoch_seconds`) count every trial of "
        "both stages. `auto` initializer = each activation's recommended one: he_normal for the ReLU "
        "family, lecun_normal for selu, glorot_uniform otherwise.", "",
        "## Activation level (unit: replicate)", "",
        _table(_tests_table(report.comparisons, ACTIVATION)), "",
        "Replicate means of the primary metric (each the mean over ALL that replicate's confirmation "
        "runs, a diverged run at its recorded accuracy):", "",
        _table(report.replicates), "",
        *_figure(report, figures, "replicate_means"),
        "## Configuration level (unit: seed, within one replicate)", "",
        "These compare the tuned configurations (named by lr and epochs) over seed noise only: a "
        "difference here can come from the search's luck, so it says nothing about the activations.", "",
        _table(_tests_table(report.comparisons, CONFIGURATION)), "",
        _table(report.configurations), "",
        "## Per-arm summary (finished runs; intervals within each metric's range)", "",
        _table(report.confirm_summary), "",
        "## Overfitting", "",
        "Generalization gap = train-eval accuracy (inference mode, on a fixed training sample the "
        "size of the validation split) - val accuracy; older runs fall back to running train "
        "accuracy (see the verdict). Gap in points [95% CI] at matched epochs (every epoch: "
        "overfitting_by_epoch.csv, with val loss and val accuracy):", "",
        _table(_overfitting_table(report.overfitting)), "",
        *_figure(report, figures, "overfitting_by_epoch", "learning_curves", "overfitting"),
        "## Diverged runs", "",
        _table(report.divergence), "",
        "Diverged runs are outcomes, counted here with an exact (Clopper-Pearson) 95% interval of the "
        "rate, and left out of every accuracy mean and test.", "",
        "## Search stage", "",
        _table(report.search_summary), "",
        "Sensitivity (Spearman of final val accuracy with log10(lr) and with epochs over finished "
        "search trials, all replicates pooled; exact p for n <= 9, permutation p above; rho intervals "
        "by Fisher z, approximate): a measure of sensitivity, not of cause.", "",
        _table(_tests_table(report.comparisons, SENSITIVITY)), "",
        *_figure(report, figures, "lr_sensitivity"),
        "Expected best validation accuracy against the number of search trials (Dodge et al. 2019, "
        "exact over the empirical distribution of each arm's search trials, all replicates pooled; "
        "mean ± std). Trials of an adaptive search are not independent draws: read it as descriptive.", "",
        _table(_expected_best_table(report.expected_best)), "",
        *_figure(report, figures, "expected_best", "search_progress"),
        "### Parameter importance (Optuna)", "",
        _table(report.importances), "",
        *_figure(report, figures, "param_importance"),
        "## Trials by status", "",
        _table(counts), "",
    ]
    if len(results.experiments) > 1:
        parts += _unpaired_section(report)
    parts += _reproduce_section(reproduce_info(results.experiments))
    unplaced = [name for name in figures if name not in PLACED_FIGURES]
    if unplaced:  # a figure without a home in the sections above still shows, with its caption
        parts += ["## Other figures", "", *_figure(report, figures, *unplaced)]
    if report.notes:
        parts += ["## Notes: what was skipped, missing or special", "",
                  *[f"- {_esc(n)}" for n in report.notes], ""]
    return "\n".join(parts)


def _unpaired_section(report: Report) -> list[str]:
    """Arms of different experiments: an unpaired comparison, said so."""
    u = report.unpaired
    parts = ["## Across experiments (unpaired)", "",
             f"Replicates of different experiments share no sampler seed or data split: they are not "
             f"paired, and no test or figure here pairs them. Arms that ran in different experiments are "
             f"compared by a {UNPAIRED_TEST}, in points, with a 95% interval; this comparison is not "
             f"part of the Holm family above. Arms that ran in the same experiment are compared paired, "
             f"in the sections above.", ""]
    if u.empty:
        return parts + ["_(no two arms ran only in different experiments)_", ""]
    table = pd.DataFrame({
        "a": u["arm_a"] + " (" + u["experiments_a"] + ")", "replicates a": u["n_a"],
        "b": u["arm_b"] + " (" + u["experiments_b"] + ")", "replicates b": u["n_b"],
        "a - b (points)": u["estimate"].map(_points),
        "95% CI": [_interval(lo, hi) for lo, hi in zip(u["ci_low"], u["ci_high"])],
        "p": u["p_value"].map(_p_cell), "test": "Welch (unpaired)"})
    return parts + [_table(table), ""]


def _reproduce_section(infos: list[dict]) -> list[str]:
    """"How to reproduce": the exact commands, a hash of each config, and the package versions."""
    parts = ["## How to reproduce", ""]
    for info in infos:
        sha = info["config_sha256"]
        version = _esc(info["created_with"]) if info["created_with"] else "version not recorded"
        parts += [f"`{info['experiment']}`: config.yaml SHA-256 "
                  f"{'`' + sha + '`' if sha else 'not recorded (no config.yaml)'}; created with selu-sweep "
                  f"{version}.", ""]
        if info["commands"]:
            fence = _fence(info["commands"])
            parts += [fence, *info["commands"], fence, ""]
        else:
            parts += ["The command line was not recorded (no runs.jsonl).", ""]
    if infos:
        versions = ", ".join(f"{k} {v}" for k, v in infos[0]["installed"].items())
        parts += [f"Packages where this report was made: {versions}.", ""]
    return parts


def _esc(text) -> str:
    """File- or user-controlled text as literal Markdown (one line; nothing in it becomes markup)."""
    return html_page.escape_markdown(str(text))


def _fence(lines: list[str]) -> str:
    """A code fence longer than any run of backticks in ``lines``: none of them can close it."""
    runs = [len(m) for line in lines for m in re.findall(r"`+", line)]
    return "`" * max([3, *(r + 1 for r in runs)])


# OWASP's CSV injection rule: a cell beginning with one of these is a formula to a spreadsheet.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every text cell that a spreadsheet would run as a formula prefixed by a single
    quote (OWASP); numbers (also negative ones) stay numbers."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(lambda v: "'" + v if isinstance(v, str) and v.startswith(_FORMULA_START)
                                    else v)
    out.columns = [("'" + c) if isinstance(c, str) and c.startswith(_FORMULA_START) else c
                   for c in out.columns]
    return out


def render_html(markdown: str, figures: dict[str, str]) -> str:
    """A self-contained HTML page: ``figures`` maps a figure's name to its file, linked in the markdown
    as ``figures/<file name>``."""
    return html_page.render_html(markdown, {f"figures/{Path(p).name}": p for p in figures.values()})


def draw_figures(results: Results, report: Report, out: Path) -> dict[str, str]:
    """Draw every figure into ``out/figures``; returns {name: path} and fills ``report.captions``.
    One arm -> colour mapping (plots.arm_colors over every arm of the sweep) serves every figure."""
    t = results.trials
    stage = CONFIRM if (t["stage"] == CONFIRM).any() else SEARCH
    colors = plots.arm_colors(t["arm"].dropna().unique()) if len(t) else {}
    figs = {
        ANSWER_FIGURE: plots.plot_replicate_differences(report.differences, report.look,
                                                        LABELS.get(report.primary_metric,
                                                                   report.primary_metric)),
        "learning_curves": plots.plot_learning_curves(results.epochs, stage, colors=colors),
        "lr_sensitivity": plots.plot_lr_sensitivity(t, colors=colors),
        "overfitting": plots.plot_overfitting(t, stage, colors=colors),
        "search_progress": plots.plot_search_progress(t, results.epochs, colors=colors),
        "param_importance": plots.plot_param_importance(report.importances),
        "replicate_means": plots.plot_replicate_means(_replicate_means_by_experiment(results, report),
                                                      LABELS[report.primary_metric], colors=colors),
        "overfitting_by_epoch": plots.plot_overfitting_by_epoch(report.overfitting, colors=colors),
        "expected_best": plots.plot_expected_best(report.expected_best, colors=colors),
    }
    paths = {}
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for name, fig in figs.items():
        if fig is None:
            continue
        path = out / "figures" / f"{name}.png"
        fig.savefig(path, dpi=100)
        report.captions[name] = plots.caption(fig)
        plots.plt.close(fig)
        paths[name] = str(path)
    return paths


def _replicate_means_by_experiment(results: Results, report: Report) -> pd.DataFrame:
    """The replicate means with the experiment each came from, when several experiments are read:
    replicates of different experiments were never paired, so no figure may join them."""
    if len(results.experiments) < 2:
        return report.replicates
    table = replicate_table(results.trials, report.primary_metric, by="experiment")
    if "experiment" not in table:  # replicate_table names the analysis column by its key
        table = table.rename(columns={"_analysis": "experiment"})
    if "source_replicate" in results.trials:  # label each unit with its experiment's own number
        units = ["experiment", "replicate"]
        own = results.trials.drop_duplicates(units).set_index(units)
        table["source_replicate"] = own["source_replicate"].reindex(
            pd.MultiIndex.from_frame(table[units])).to_numpy()
    return table.drop(columns="_analysis", errors="ignore")


# Figures placed next to their section's table in render_markdown (any other drawn figure goes to
# "Other figures" at the end).
PLACED_FIGURES = (ANSWER_FIGURE, "replicate_means", "overfitting_by_epoch", "learning_curves", "overfitting",
                  "lr_sensitivity", "expected_best", "search_progress", "param_importance")


def _figure(report: Report, figures: dict[str, str], *names: str) -> list[str]:
    """Markdown for the named figures that were drawn: the image, then its caption beneath it."""
    lines = []
    for name in names:
        if name in figures:
            text = html_page.escape_markdown(report.captions.get(name, ""))
            lines += [f"![{name}](figures/{Path(figures[name]).name})", "", f"*Figure: {text}*", ""]
    return lines


def save_report(results: Results, out: str | os.PathLike, studies: dict | None = None) -> dict[str, str]:
    """Build the report of already loaded ``results`` and write every file into ``out``."""
    report = build_report(results, studies)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = draw_figures(results, report, out)
    written = {"trials_csv": out / "trials.csv", "epochs_csv": out / "epochs.csv",
               "tests_csv": out / "tests.csv", "overfitting_csv": out / "overfitting_by_epoch.csv",
               "md": out / "report.md", "html": out / "report.html", "verdict_json": out / "verdict.json"}
    csv_safe(results.trials).to_csv(written["trials_csv"], index=False)
    csv_safe(results.epochs).to_csv(written["epochs_csv"], index=False)
    csv_safe(report.comparisons).to_csv(written["tests_csv"], index=False)
    csv_safe(report.overfitting).to_csv(written["overfitting_csv"], index=False)
    try:
        results.trials.to_parquet(out / "trials.parquet", index=False)
        results.epochs.to_parquet(out / "epochs.parquet", index=False)
        written.update(trials_parquet=out / "trials.parquet", epochs_parquet=out / "epochs.parquet")
    except ImportError:  # pyarrow is a declared dependency; tolerate its absence in odd envs
        report.notes.append("Parquet files not written: pyarrow is not installed")
    markdown = render_markdown(report, results, figures)
    written["md"].write_text(markdown)
    written["html"].write_text(render_html(markdown, figures))
    written["verdict_json"].write_text(json.dumps(report.record, indent=2, allow_nan=False) + "\n")
    return {k: str(v) for k, v in {**written, **figures}.items()}


def write_report(paths: list[str | os.PathLike], out: str | os.PathLike,
                 optuna_storage: str | None = None) -> dict[str, str]:
    """Load ``paths``, write the report files into ``out``; returns {kind: path}. The Optuna studies
    come from each sweep's own database (``optuna_storage`` overrides it, with its password)."""
    results = load_results(paths)
    if len(results.experiments) > 1:  # replicates of different experiments are never paired
        trials, epochs = separate_replicates(results.trials, results.epochs)
        results = dataclasses.replace(results, trials=trials, epochs=epochs, notes=[*results.notes, (
            "Several experiments: each (experiment, replicate) is its own replicate here (numbered in "
            "turn; `source_replicate` in trials.csv keeps the experiment's own), so only arms of one "
            "experiment are paired; arms of different experiments are compared unpaired (see "
            "'Across experiments').")])
    return save_report(results, out, load_studies(results, optuna_storage))
