"""analysis/plots.py: figures are drawn from data, and nothing is drawn from nothing."""

import pandas as pd

from analysis import plots
from analysis.load import load_results


def test_every_plot_draws_from_a_real_sweep(smoke_sweep):
    _, exp, _ = smoke_sweep
    res = load_results([exp])
    for fig in (plots.plot_learning_curves(res.epochs), plots.plot_lr_sensitivity(res.trials),
                plots.plot_overfitting(res.trials), plots.plot_search_progress(res.trials)):
        assert fig is not None and fig.axes
        plots.plt.close(fig)
    info = plots._get_learning_curve_info(res.epochs)
    assert set(info["arm"]) == {"relu", "selu"} and (info["n"] == 4).all()  # 2 replicates x 2 seeds


def test_plots_return_none_without_data():
    empty = pd.DataFrame(columns=["stage", "arm", "epoch", "train_accuracy", "val_accuracy", "val_loss",
                                  "final_val_accuracy", "status", "lr", "final_gap", "val_loss_rise"])
    assert plots.plot_learning_curves(empty) is None
    assert plots.plot_lr_sensitivity(empty) is None
    assert plots.plot_search_progress(empty) is None
    assert plots.plot_param_importance(pd.DataFrame(columns=["study", "param", "importance"])) is None


def _search_trials(ids, scores, **extra) -> pd.DataFrame:
    return pd.DataFrame({"experiment": "e", "stage": "search", "trial_id": ids, "arm": "relu",
                         "status": "finished", "final_val_accuracy": scores, **extra})


# Optuna-via-Tune trial ids are random hex: loading sorts by them, which is not the order trials ran in.
IDS = ["0a1b2c3d", "5e6f7a8b", "c9d0e1f2"]
SCORES = [0.50, 0.40, 0.60]


def test_search_progress_orders_trials_by_start_time_not_by_trial_id():
    info = plots._get_search_progress_info(_search_trials(IDS, SCORES, start_time=[300.0, 100.0, 200.0]))
    assert info["trial_id"].tolist() == ["5e6f7a8b", "c9d0e1f2", "0a1b2c3d"]
    assert info["order"].tolist() == [1, 2, 3]
    assert info["best_so_far"].tolist() == [0.40, 0.60, 0.60], "best so far follows the order trials ran"
    assert info.attrs["ordered_by"] == "start time"


def test_search_progress_takes_start_times_from_each_trials_first_epoch():
    epochs = pd.DataFrame({"experiment": "e", "stage": "search",
                           "trial_id": ["0a1b2c3d", "0a1b2c3d", "5e6f7a8b", "c9d0e1f2"],
                           "epoch": [2, 1, 1, 1],  # the first epoch, not the first row, marks the start
                           "timestamp": [1000, 50, 30, 40], "time_this_iter_s": [10.0, 10.0, 5.0, 25.0]})
    info = plots._get_search_progress_info(_search_trials(IDS, SCORES), epochs)
    assert info["trial_id"].tolist() == ["c9d0e1f2", "5e6f7a8b", "0a1b2c3d"]  # started at 15, 25, 40
    assert info["start"].tolist() == [15.0, 25.0, 40.0]
    assert info.attrs["ordered_by"] == "first epoch's timestamp"


def test_search_progress_reads_ray_date_strings():
    epochs = pd.DataFrame({"experiment": "e", "stage": "search", "trial_id": IDS, "epoch": 1,
                           "date": ["2025-01-02_10-00-00", "2025-01-02_09-00-00", "2025-01-01_23-59-59"]})
    info = plots._get_search_progress_info(_search_trials(IDS, SCORES), epochs)
    assert info["trial_id"].tolist() == ["c9d0e1f2", "5e6f7a8b", "0a1b2c3d"]


def test_search_progress_without_start_times_keeps_row_order_and_says_so():
    epochs = pd.DataFrame({"experiment": "e", "stage": "search", "trial_id": IDS, "epoch": 1})
    for e in (None, epochs):
        info = plots._get_search_progress_info(_search_trials(IDS, SCORES), e)
        assert info["trial_id"].tolist() == IDS
        assert info.attrs["ordered_by"] == "row order (no start times recorded)"
    fig = plots.plot_search_progress(_search_trials(IDS, SCORES), epochs)
    assert "no start times recorded" in fig.axes[0].get_xlabel()
    plots.plt.close(fig)


def _epochs(arm_epochs: dict[str, int], seeds: int = 2) -> pd.DataFrame:
    rows = [{"stage": "confirm", "arm": arm, "trial_id": f"{arm}{s}", "epoch": e,
             "train_accuracy": 0.3 + e / 10, "val_accuracy": 0.25 + e / 10 + s / 100, "val_loss": 2 - e / 10}
            for arm, n in arm_epochs.items() for s in range(seeds) for e in range(1, n + 1)]
    return pd.DataFrame(rows)


def test_single_epoch_arm_is_kept_and_drawn_as_markers():
    info = plots._get_learning_curve_info(_epochs({"relu": 3, "selu": 1}))
    assert info.groupby("arm")["single_epoch"].all().to_dict() == {"relu": False, "selu": True}
    assert info.loc[info["arm"] == "selu", "n"].tolist() == [2]
    fig = plots.plot_learning_curves(_epochs({"relu": 3, "selu": 1}))
    ax_acc, ax_loss = fig.axes
    for ax, expected in ((ax_acc, 2), (ax_loss, 1)):  # selu: train and val on the left, val loss on the right
        points = [ln for ln in ax.get_lines()
                  if len(ln.get_xdata()) == 1 and ln.get_marker() in ("o", "s")]  # not error-bar caps
        assert len(points) == expected, "a one-epoch arm shows as visible markers"
        lo, hi = ax.get_xlim()
        assert lo < 1 < hi
    plots.plt.close(fig)
