"""Turn sweep results into SELU-vs-ReLU reports: accuracy, overfitting, statistics, plots.

Only reads experiment directories; analysis functions take and return DataFrames and plotting
is separate (``analysis.plots``).
"""

from analysis.load import AnalysisError, Results, load_results, load_studies
from analysis.metrics import trial_metrics
from analysis.report import Report, build_report, write_report
from analysis.stats import (
    arm_summary,
    compare_arms,
    holm,
    param_importances,
    primary_metric,
    search_summary,
    verdict,
)

__all__ = [
    "AnalysisError", "Report", "Results", "arm_summary", "build_report", "compare_arms", "holm",
    "load_results", "load_studies", "param_importances", "primary_metric", "search_summary",
    "trial_metrics", "verdict", "write_report",
]
