"""analysis/plots.py: figures are drawn from data, and nothing is drawn from nothing."""

import numpy as np
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


def _curve_epochs(n_runs: int, *, acc: float = 0.97, spread: float = 0.2, loss: float = 0.05) -> pd.DataFrame:
    """Confirmation epochs of one arm: accuracy near 1 and loss near 0 with a large spread, so a
    ±std band would leave the metric's range unless clipped. train_eval_* differ from train_*."""
    rows = []
    for s in range(n_runs):
        sign = 1 if s % 2 else -1
        for e in (1, 2, 3):
            rows.append({"stage": "confirm", "arm": "relu", "trial_id": f"t{s}", "epoch": e,
                         "train_accuracy": 0.41, "train_loss": 1.9,  # running metrics: never drawn
                         "train_eval_accuracy": min(acc + sign * spread, 1.0), "train_eval_loss": loss,
                         "val_accuracy": min(acc + sign * spread, 1.0),
                         "val_loss": max(loss + sign * 0.3, 0)})
    return pd.DataFrame(rows)


def _bands(ax) -> list:
    from matplotlib.collections import PolyCollection

    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_learning_curves_draw_the_inference_mode_train_accuracy_the_gap_uses():
    info = plots._get_learning_curve_info(_curve_epochs(4))
    assert info.attrs["train_source"] == "train_eval"
    assert info["train_accuracy_curve_mean"].between(0.8, 1.0).all(), "train_eval_accuracy, not 0.41"
    fig = plots.plot_learning_curves(_curve_epochs(4))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("train (inference mode)" in t for t in labels), labels
    assert "inference-mode" in plots.caption(fig) and "relu n=4" in plots.caption(fig)
    plots.plt.close(fig)


def test_bands_stay_within_each_metrics_range_and_need_three_runs():
    fig = plots.plot_learning_curves(_curve_epochs(4))
    ax_acc, ax_loss = fig.axes
    for ax, (lo, hi) in ((ax_acc, (0.0, 1.0)), (ax_loss, (0.0, float("inf")))):
        bands = _bands(ax)
        assert bands, "n=4 runs: a band is drawn"
        for band in bands:
            ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
            assert ys.min() >= lo - 1e-12 and ys.max() <= hi + 1e-12, (ax.get_title(), ys.min(), ys.max())
    assert ax_loss.get_ylim()[0] == 0
    plots.plt.close(fig)
    fig = plots.plot_learning_curves(_curve_epochs(2))
    assert all(not _bands(ax) for ax in fig.axes), "no band from n=2 runs"
    plots.plt.close(fig)


def test_overfitting_by_epoch_draws_no_interval_from_fewer_than_three_units():
    info = pd.DataFrame({"arm": "relu", "epoch": [1, 2, 3], "unit": "replicate", "n": [2, 3, 3],
                         "gap_source": "train_eval", "gap_mean": 0.1, "gap_ci_low": [-5.0, 0.0, 0.05],
                         "gap_ci_high": [5.0, 0.2, 0.15], "val_loss_mean": 1.0,
                         "val_loss_ci_low": [-30.0, 0.5, 0.8], "val_loss_ci_high": [40.0, 1.5, 1.2]})
    fig = plots.plot_overfitting_by_epoch(info)
    for ax in fig.axes:
        ys = np.concatenate([p.vertices[:, 1] for band in _bands(ax) for p in band.get_paths()])
        assert ys.max() < 5 and ys.min() > -1, "the n=2 epoch's interval is not drawn"
        assert ax.get_ylim()[1] < 5, "and does not stretch the axis"
    assert "n=3 replicates" in plots.caption(fig)
    plots.plt.close(fig)


SEARCH = pd.DataFrame({
    "experiment": "e", "stage": "search", "arm": "relu", "lr": 1e-3,
    "trial_id": [f"t{i}" for i in range(8)], "replicate": [0, 0, 0, 0, 1, 1, 1, 1],
    "start_time": [1, 2, 3, 4, 1.5, 2.5, 3.5, 4.5],
    "status": ["finished", "stopped_early", "diverged", "finished", "diverged", "finished", "stopped_early",
               "finished"],
    "final_val_accuracy": [0.50, 0.55, 0.10, 0.52, 0.10, 0.40, 0.45, 0.43]})


def test_best_so_far_is_per_replicate_without_gaps_and_counts_early_stopped_trials():
    info = plots._get_search_progress_info(SEARCH)
    r0, r1 = (info[info["replicate"] == r] for r in (0, 1))
    assert r0["order"].tolist() == r1["order"].tolist() == [1, 2, 3, 4], "each replicate is its own search"
    assert r0["best_so_far"].tolist() == [0.50, 0.55, 0.55, 0.55], "stopped early counts; diverged carries on"
    assert r1["best_so_far"].isna().tolist() == [True, False, False, False]
    assert r1["best_so_far"].tolist()[1:] == [0.40, 0.45, 0.45], "not pooled with replicate 0"
    fig = plots.plot_search_progress(SEARCH)
    lines = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) > 1]
    assert len(lines) == 2, "one line per replicate"
    for ln in lines:
        assert np.isfinite(np.asarray(ln.get_ydata(), dtype=float)).all(), "no gap"
    assert all(float(t).is_integer() for t in fig.axes[0].get_xticks())
    assert "relu n=8" in plots.caption(fig) and "replicates per arm: relu n=2" in plots.caption(fig)
    plots.plt.close(fig)


def test_one_colour_per_arm_boxplot_medians_included():
    colors = plots.arm_colors(["selu", "relu"])
    assert colors == plots.arm_colors(["relu", "selu"]) and colors["relu"] != colors["selu"]
    trials = pd.DataFrame({"stage": "confirm", "arm": ["relu"] * 3 + ["selu"] * 3, "status": "finished",
                           "final_gap": [0.1, 0.2, 0.3, 0.0, 0.1, 0.2], "val_loss_rise": 0.1})
    fig = plots.plot_overfitting(trials, colors=colors)
    import matplotlib.colors as mcolors

    for ax in fig.axes:
        medians = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 2 and ln.get_linewidth() == 2]
        assert [mcolors.to_hex(m.get_color()) for m in medians] == [colors["relu"].lower(),
                                                                    colors["selu"].lower()]
    plots.plt.close(fig)
    selu_only = trials[trials["arm"] == "selu"]
    fig = plots.plot_overfitting(selu_only, colors=colors)  # the report's mapping, not the figure's own
    assert {mcolors.to_hex(c) for c in fig.axes[0].collections[0].get_facecolor()} == {colors["selu"].lower()}
    plots.plt.close(fig)


def test_epoch_axes_have_integer_ticks_and_every_figure_a_caption_with_its_n():
    fig = plots.plot_learning_curves(_curve_epochs(4))
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    plots.plt.close(fig)
    curve = pd.DataFrame({"arm": "relu", "n": [1, 2, 3], "expected": [0.5, 0.6, 0.65], "std": [0.6, 0.1, 0.0],
                          "pool": 3})
    imp = pd.DataFrame({"study": "s-relu-r0", "param": ["lr", "epochs"], "importance": [0.7, 0.3]})
    reps = pd.DataFrame({"arm": ["relu", "selu"] * 3, "replicate": [0, 0, 1, 1, 2, 2],
                         "mean": [0.5, 0.52, 0.51, 0.5, 0.49, 0.53]})
    for fig in (plots.plot_expected_best(curve), plots.plot_param_importance(imp),
                plots.plot_replicate_means(reps), plots.plot_lr_sensitivity(SEARCH),
                plots.plot_search_progress(SEARCH)):
        assert "n=" in plots.caption(fig), plots.caption(fig)
        plots.plt.close(fig)


def test_replicates_of_different_experiments_are_never_joined():
    reps = pd.DataFrame({"experiment": ["a", "a", "b", "b"], "arm": ["relu", "relu", "selu", "selu"],
                         "replicate": [0, 1, 0, 1], "mean": [0.5, 0.52, 0.51, 0.5]})
    fig = plots.plot_replicate_means(reps)
    joined = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) > 1]
    assert joined == [], "relu of a and selu of b share replicate numbers but were never paired"
    assert "never joined" in plots.caption(fig)
    plots.plt.close(fig)
    paired = pd.concat([reps, reps.assign(arm=reps["arm"].map({"relu": "selu", "selu": "relu"}))])
    fig = plots.plot_replicate_means(paired)
    assert len([ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) > 1]) == 4  # 2 exps x 2 reps
    plots.plt.close(fig)
