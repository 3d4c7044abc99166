"""Write the SELU-vs-ReLU report: report.md, a self-contained report.html, CSV/Parquet, figures.

``build_report(results, studies)`` computes everything (no I/O); ``write_report(paths, out)``
loads, builds, draws and writes. The sweep calls ``write_report`` when it ends.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from analysis import html as html_page
from analysis import plots
from analysis.load import Results, load_results, load_studies
from analysis.stats import (
    LABELS,
    arm_summary,
    compare_arms,
    param_importances,
    primary_metric,
    search_summary,
    verdict,
)


@dataclass
class Report:
    verdict: list[str]
    confirm_summary: pd.DataFrame
    comparisons: pd.DataFrame
    search_summary: pd.DataFrame
    importances: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    primary_metric: str = "final_val_accuracy"


def build_report(results: Results, studies: dict | None = None) -> Report:
    trials = results.trials
    stage = "confirm" if (trials["stage"] == "confirm").any() else "search"
    metric = primary_metric(trials, stage)
    notes = list(results.notes)
    if stage == "search":
        notes.append("No confirmation-stage trials: the verdict below compares search trials, which "
                      "differ in hyperparameters as well as seeds; treat it as exploratory.")
    on_test = sorted(trials.loc[trials["validate_on"] == "test", "experiment"].unique()) \
        if "validate_on" in trials else []
    for name in on_test:
        notes.append(f"`{name}` measured its validation metrics on the test set (validate_on: test), "
                     f"as the original experiment did; nothing was selected on them (no search).")
    comparisons = pd.concat([compare_arms(trials, m, stage) for m in (metric, "final_gap", "val_loss_rise")],
                            ignore_index=True)
    return Report(verdict=verdict(trials, stage), confirm_summary=arm_summary(trials, stage),
                  comparisons=comparisons, search_summary=search_summary(trials),
                  importances=param_importances(studies or {}), notes=notes, primary_metric=metric)


def _table(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    return html_page.markdown_table(df, floatfmt)


def _environment() -> str:
    import numpy
    import scipy

    return (f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} on {platform.node()} "
            f"({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"pandas {pd.__version__}, numpy {numpy.__version__}, scipy {scipy.__version__}).")


def render_markdown(report: Report, results: Results, figures: dict[str, str]) -> str:
    t = results.trials
    counts = t.groupby(["experiment", "stage", "status"]).size().rename("trials").reset_index()
    parts = [
        "# SELU vs ReLU: sweep report", "",
        f"Experiments: {', '.join(f'`{n}` ({p})' for n, p in results.experiments.items())}.  ",
        _environment(), "",
        "## Verdict", "",
        *[f"- {line}" for line in report.verdict], "",
        f"Primary metric: {LABELS[report.primary_metric]} at each trial's final epoch. Intervals are "
        f"95% t intervals; differences use Welch's t-test (unequal variances) and its 95% CI; "
        f"effect size is Hedges' g. A difference is called significant only when p < 0.05 (Holm-"
        f"adjusted across pairs when there are more than two arms) and the CI excludes 0.", "",
        "## Confirmation: per-arm summary (n, mean, std, 95% CI)", "",
        _table(report.confirm_summary), "",
        "## Pairwise comparisons (a - b)", "",
        _table(report.comparisons.drop(columns=["t"])), "",
        "## Search stage", "",
        _table(report.search_summary), "",
        "Spearman correlations are of final val_accuracy with log10(lr) and with epochs, over "
        "finished trials: a measure of sensitivity, not of cause.", "",
        "### Parameter importance (Optuna)", "",
        _table(report.importances), "",
        "## Trials by status", "",
        _table(counts), "",
    ]
    if figures:
        parts += ["## Figures", ""]
        parts += [f"![{name}](figures/{Path(path).name})" for name, path in figures.items()]
        parts.append("")
    if report.notes:
        parts += ["## Notes: what was skipped, missing or special", "", *[f"- {n}" for n in report.notes], ""]
    return "\n".join(parts)


def render_html(markdown: str, figures: dict[str, str]) -> str:
    """A self-contained HTML page: ``figures`` maps a figure's name to its file, linked in the markdown
    as ``figures/<file name>``."""
    return html_page.render_html(markdown, {f"figures/{Path(p).name}": p for p in figures.values()})


def draw_figures(results: Results, report: Report, out: Path) -> dict[str, str]:
    stage = "confirm" if (results.trials["stage"] == "confirm").any() else "search"
    figs = {
        "learning_curves": plots.plot_learning_curves(results.epochs, stage),
        "lr_sensitivity": plots.plot_lr_sensitivity(results.trials),
        "overfitting": plots.plot_overfitting(results.trials, stage),
        "search_progress": plots.plot_search_progress(results.trials),
        "param_importance": plots.plot_param_importance(report.importances),
    }
    paths = {}
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for name, fig in figs.items():
        if fig is None:
            continue
        path = out / "figures" / f"{name}.png"
        fig.savefig(path, dpi=100)
        plots.plt.close(fig)
        paths[name] = str(path)
    return paths


def write_report(paths: list[str | os.PathLike], out: str | os.PathLike) -> dict[str, str]:
    """Load ``paths``, write the report files into ``out``; returns {kind: path}."""
    results = load_results(paths)
    report = build_report(results, load_studies(results))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = draw_figures(results, report, out)
    written = {"trials_csv": out / "trials.csv", "epochs_csv": out / "epochs.csv",
               "md": out / "report.md", "html": out / "report.html"}
    results.trials.to_csv(written["trials_csv"], index=False)
    results.epochs.to_csv(written["epochs_csv"], index=False)
    try:
        results.trials.to_parquet(out / "trials.parquet", index=False)
        results.epochs.to_parquet(out / "epochs.parquet", index=False)
        written.update(trials_parquet=out / "trials.parquet", epochs_parquet=out / "epochs.parquet")
    except ImportError:  # pyarrow is a declared dependency; tolerate its absence in odd envs
        report.notes.append("Parquet files not written: pyarrow is not installed")
    markdown = render_markdown(report, results, figures)
    written["md"].write_text(markdown)
    written["html"].write_text(render_html(markdown, figures))
    return {k: str(v) for k, v in {**written, **figures}.items()}
