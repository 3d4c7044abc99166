"""Turn sweep results into SELU-vs-ReLU reports: accuracy, overfitting, statistics, plots.

Only reads experiment directories; analysis functions take and return DataFrames and plotting
is separate (``analysis.plots``). The decision rule is :mod:`analysis.decision` (one primary test,
a secondary family); the group-sequential looks a sweep makes between replicates are
:mod:`analysis.sequential`; the verdict's words and verdict.json are :mod:`analysis.claims`.

Any Ray Tune experiment can be analysed, not only those of ``sweeps/``: each trial's config
(``params.json``) carries ``arm`` (the side of the comparison), ``stage`` (``"search"`` or
``"confirm"``), ``seed`` and ``replicate`` (the index of an independent repeat of an arm's whole
tuning; 0 when absent), and its per-epoch results report the trainable's metric names
(``trainable.train.METRICS``: ``epoch``, ``val_accuracy``, ``train_eval_accuracy``, ...; plus
``test_accuracy`` at the last epoch of a confirmation trial). The full contract, with every
optional key, is in :mod:`analysis.load`. An experiment directory may add ``config.yaml`` (the
sweep config) and ``data.json`` (the data's source, sizes and digest); the report says what it
could not find.
"""

from analysis.claims import Conclusion, conclude, verdict
from analysis.decision import (
    activation_decision,
    activation_tests,
    configuration_table,
    configuration_tests,
    decision_tests,
    matched_epoch_gap_tests,
    replicate_differences,
    replicate_table,
    sensitivity_tests,
)
from analysis.load import AnalysisError, Results, load_results
from analysis.metrics import trial_metrics
from analysis.overfitting import overfitting_by_epoch
from analysis.provenance import describe_data, run_summary
from analysis.report import Report, build_report, save_report, write_report
from analysis.sequential import Plan, look, plan_from_config, with_final_look
from analysis.stats import expected_max, holm, holm_levels, spearman_test
from analysis.studies import load_studies
from analysis.summaries import (
    arm_summary,
    divergence,
    expected_best_curve,
    param_importances,
    primary_metric,
    search_summary,
)

__all__ = [
    "AnalysisError", "Conclusion", "Plan", "Report", "Results", "activation_decision", "activation_tests",
    "arm_summary", "build_report", "conclude", "configuration_table", "configuration_tests",
    "decision_tests", "describe_data", "divergence", "expected_best_curve", "expected_max", "holm",
    "holm_levels", "load_results", "load_studies", "look", "matched_epoch_gap_tests",
    "overfitting_by_epoch", "param_importances", "plan_from_config", "primary_metric",
    "replicate_differences", "replicate_table", "run_summary", "save_report", "search_summary",
    "sensitivity_tests", "spearman_test", "trial_metrics", "verdict", "with_final_look", "write_report",
]
