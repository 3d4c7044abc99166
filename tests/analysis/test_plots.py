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
    assert set(info["arm"]) == {"relu", "selu"} and (info["n"] == 2).all()


def test_plots_return_none_without_data():
    empty = pd.DataFrame(columns=["stage", "arm", "epoch", "train_accuracy", "val_accuracy", "val_loss",
                                  "final_val_accuracy", "status", "lr", "final_gap", "val_loss_rise"])
    assert plots.plot_learning_curves(empty) is None
    assert plots.plot_lr_sensitivity(empty) is None
    assert plots.plot_search_progress(empty) is None
    assert plots.plot_param_importance(pd.DataFrame(columns=["study", "param", "importance"])) is None
