"""analysis/compare.py: several experiments in one report are never paired across experiments."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.compare import UNPAIRED_TEST, separate_replicates, unpaired_tests


def _trials(experiment: str, arm: str, means: list[float]) -> pd.DataFrame:
    """Confirmation trials: 2 seeds per replicate, whose mean is means[replicate]."""
    rows = [{"experiment": experiment, "stage": "confirm", "trial_id": f"{experiment}{arm}{r}{s}", "arm": arm,
             "replicate": r, "status": "finished", "final_test_accuracy": m + (0.01 if s else -0.01)}
            for r, m in enumerate(means) for s in (0, 1)]
    return pd.DataFrame(rows)


RELU_A, SELU_B = [0.50, 0.55, 0.52, 0.58], [0.60, 0.57, 0.62]


def test_arms_of_different_experiments_get_welch_on_replicate_means():
    trials = pd.concat([_trials("a", "relu", RELU_A), _trials("b", "selu", SELU_B)], ignore_index=True)
    [row] = unpaired_tests(trials, "final_test_accuracy").to_dict("records")
    expected = stats.ttest_ind(RELU_A, SELU_B, equal_var=False)
    assert row["test"] == UNPAIRED_TEST and (row["n_a"], row["n_b"]) == (4, 3)
    assert row["estimate"] == pytest.approx(np.mean(RELU_A) - np.mean(SELU_B))
    assert row["p_value"] == pytest.approx(expected.pvalue)
    ci = expected.confidence_interval(0.95)
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_arms_that_share_an_experiment_are_left_to_the_paired_analysis():
    both = pd.concat([_trials("a", "relu", RELU_A), _trials("a", "selu", RELU_A),
                      _trials("b", "relu", SELU_B), _trials("b", "selu", SELU_B)], ignore_index=True)
    assert unpaired_tests(both, "final_test_accuracy").empty


def test_replicates_are_renumbered_so_no_two_experiments_share_one():
    trials = pd.concat([_trials("a", "relu", RELU_A), _trials("b", "selu", SELU_B)], ignore_index=True)
    out, _ = separate_replicates(trials, pd.DataFrame())
    units = out.groupby(["experiment", "source_replicate"])["replicate"].unique()
    assert sorted(units.map(lambda v: v[0])) == list(range(7)), "one number per (experiment, replicate)"
    single = _trials("a", "relu", RELU_A)
    assert separate_replicates(single, pd.DataFrame())[0] is single


def test_a_report_of_two_experiments_pairs_only_within_each(tmp_path):
    from analysis.report import write_report
    from tests.analysis.handmade import make_experiment

    a, b = make_experiment(tmp_path / "a", "a"), make_experiment(tmp_path / "b", "b")
    written = write_report([a, b], tmp_path / "report")
    md = open(written["md"]).read()
    assert "## Across experiments (unpaired)" in md and "are not paired" in md
    trials = pd.read_csv(written["trials_csv"])
    confirm = trials[trials["stage"] == "confirm"]
    per_unit = confirm.groupby("replicate")["experiment"].nunique()
    assert (per_unit == 1).all(), "no replicate number holds trials of two experiments"
    own = confirm.groupby("experiment")["source_replicate"].nunique()
    assert confirm["replicate"].nunique() == own.sum() == 2 * own.iloc[0]
