"""Simulated sweeps with known truth, shaped like :func:`analysis.load.load_results`' output.

Used by ``benchmarks/bench_calibration.py`` (thousands of experiments at once, one ``sim`` column
naming each) and by the tests. The model, per simulated experiment:

* a response surface over the search space: accuracy(lr, epochs) = peak - curvature_lr *
  (log10 lr - log10 lr*)^2 - curvature_epochs * ((epochs - epochs*) / 45)^2, the same for every
  arm except that arm ``arms[1]`` has its peak raised by ``effect_points``;
* each replicate's search draws ``trials`` configurations per arm (log-uniform lr, integer
  epochs), observes each with seed noise, lets the best third finish (ASHA-like: the rest are
  ``stopped_early`` at a lower value) and tunes to the best observed one. The tuned
  configuration's true accuracy is then the surface peak minus a random shortfall: the luck of
  the search;
* confirmation retrains the tuned configuration over ``seeds`` seeds; seed k is shared across
  arms within a replicate (a correlated seed effect) and so is the replicate's data split (a
  common offset). A run diverges with probability ``p_diverge``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.metrics import KEYS, TRIAL_METRICS, trial_metrics

LR_STAR, EPOCHS_STAR = 2e-3, 20.0


def surface(lr, epochs, peak: float, curvature_lr: float, curvature_epochs: float):
    return (peak - curvature_lr * (np.log10(lr) - np.log10(LR_STAR)) ** 2
            - curvature_epochs * ((epochs - EPOCHS_STAR) / 45) ** 2)


def simulate(n_experiments: int, replicates: int, seeds: int = 5, trials: int = 12,
             effect_points: float = 0.0, arms: tuple[str, str] = ("relu", "selu"), peak: float = 0.66,
             curvature_lr: float = 0.06, curvature_epochs: float = 0.08, seed_sd: float = 0.006,
             seed_corr: float = 0.3, split_sd: float = 0.003, p_diverge: float = 0.02,
             with_epochs: bool = True, derive_metrics: bool = False, rng: int | np.random.Generator = 0,
             activations: tuple[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, epochs) of ``n_experiments`` simulated sweeps (column ``sim``), each with
    ``replicates`` replicates of a ``trials``-trial search per arm and ``seeds`` confirmation seeds.
    ``epochs`` holds the confirmation runs' per-epoch rows (gap and val-loss curves), or is empty.
    ``derive_metrics`` recomputes the confirmation trials' metrics from ``epochs`` with
    :func:`analysis.metrics.trial_metrics`, exactly as the loader does (slower: for small runs)."""
    g = np.random.default_rng(rng)
    E, R, K, T, A = n_experiments, replicates, seeds, trials, len(arms)
    peaks = peak + np.array([0.0, effect_points / 100])[:A]
    acts = activations or arms

    # search: shape (E, R, A, T)
    lr = 10 ** g.uniform(-4, -2, (E, R, A, T))
    ep = g.integers(5, 51, (E, R, A, T)).astype(float)
    true = surface(lr, ep, peaks[None, None, :, None], curvature_lr, curvature_epochs)
    split = g.normal(0, split_sd, (E, R, 1, 1))
    observed = true + split + g.normal(0, seed_sd, true.shape)
    order = np.argsort(-observed, axis=-1)
    rank = np.argsort(order, axis=-1)
    finished = rank < max(1, T // 3)
    best = order[..., 0]
    stop_penalty = g.uniform(0.02, 0.15, true.shape)
    final_val = np.where(finished, observed, observed - stop_penalty)
    idx = np.indices(best.shape)
    tuned_lr, tuned_ep = lr[(*idx, best)], ep[(*idx, best)]
    tuned_true = true[(*idx, best)]  # (E, R, A)

    # confirmation: shape (E, R, A, K)
    shared_seed = g.normal(0, seed_sd * np.sqrt(seed_corr), (E, R, 1, K))
    own = g.normal(0, seed_sd * np.sqrt(1 - seed_corr), (E, R, A, K))
    test_acc = tuned_true[..., None] + split + shared_seed + own
    val_acc = test_acc + g.normal(0, seed_sd / 2, test_acc.shape)
    gap_final = 0.002 * tuned_ep[..., None] + g.normal(0, 0.01, test_acc.shape)
    diverged = g.random(test_acc.shape) < p_diverge

    def frame(shape, stage, extra):
        e_i, r_i, a_i, j_i = (x.ravel() for x in np.indices(shape))
        sim = e_i.astype(str)
        arm = np.asarray(arms, dtype=object)[a_i]
        tid = np.char.add(np.char.add(np.char.add(sim, f"-{stage[0]}"), (r_i * shape[3] + j_i).astype(str)),
                          np.asarray(arms)[a_i])
        base = {"sim": e_i, "experiment": "sim", "stage": stage, "trial_id": tid, "arm": arm,
                "activation": np.asarray(acts, dtype=object)[a_i], "replicate": r_i,
                "batch_size": 100, "kernel_initializer": "auto", "normalization": "scale", "dropout": 0.0,
                "validate_on": "val"}
        return pd.DataFrame({**base, **{k: v.ravel() for k, v in extra.items()}})

    s_status = np.where(finished, "finished", "stopped_early")
    search = frame((E, R, A, T), "search", {
        "status": s_status, "lr": lr, "epochs": ep, "seed": np.broadcast_to(np.arange(T), lr.shape),
        "final_val_accuracy": final_val, "n_epochs": np.where(finished, ep, np.minimum(ep, 5.0))})
    cshape = (E, R, A, K)
    bc = lambda v: np.broadcast_to(v[..., None], cshape)  # noqa: E731
    confirm = frame(cshape, "confirm", {
        "status": np.where(diverged, "diverged", "finished"), "lr": bc(tuned_lr), "epochs": bc(tuned_ep),
        "seed": np.broadcast_to(10_000 + np.arange(K), cshape),
        "final_val_accuracy": np.where(diverged, 0.1, val_acc), "final_test_accuracy": np.where(diverged, 0.1,
                                                                                                test_acc),
        "final_gap": np.where(diverged, np.nan, gap_final), "n_epochs": bc(tuned_ep)})
    confirm["source_trial"] = (confirm["sim"].astype(str) + "-s" + confirm["replicate"].astype(str) + "-"
                               + confirm["arm"])
    confirm["gap_source"] = "train_eval"
    trials_df = pd.concat([search, confirm], ignore_index=True)
    trials_df["diverged"] = trials_df["status"] == "diverged"
    trials_df["best_val_accuracy"] = trials_df["final_val_accuracy"]
    shortfall = peaks[None, None, :] - tuned_true  # the luck of each replicate's search
    trials_df.attrs.update(shortfall_mean=float(shortfall.mean()), shortfall_sd=float(shortfall.std()))
    trials_df["start_time"] = np.nan
    trials_df["time_total_s"] = trials_df["n_epochs"] * 6.0
    trials_df["compute_seconds"] = trials_df["time_total_s"]
    for col in TRIAL_METRICS:
        if col not in trials_df:
            trials_df[col] = np.nan
    if not with_epochs:
        return trials_df, pd.DataFrame(columns=["sim", "experiment", "stage", "trial_id", "arm", "replicate",
                                                "epoch"])
    c = confirm[confirm["status"] == "finished"]
    n_ep = c["epochs"].to_numpy(int)
    rows = np.repeat(np.arange(len(c)), n_ep)
    epoch = (np.arange(len(rows)) - np.repeat(np.cumsum(n_ep) - n_ep, n_ep) + 1).astype(float)
    frac = epoch / n_ep[rows]
    final_val = c["final_val_accuracy"].to_numpy()[rows]
    gap_end = c["final_gap"].to_numpy()[rows]
    val = final_val * (1 - 0.5 * np.exp(-5 * frac)) / (1 - 0.5 * np.exp(-5))
    gap = gap_end * frac + g.normal(0, 0.003, len(rows)) * (frac < 1)
    epochs_df = pd.DataFrame({
        "sim": c["sim"].to_numpy()[rows], "experiment": "sim", "stage": "confirm",
        "trial_id": c["trial_id"].to_numpy()[rows], "arm": c["arm"].to_numpy()[rows],
        "replicate": c["replicate"].to_numpy()[rows], "epoch": epoch, "val_accuracy": val,
        "train_eval_accuracy": val + gap, "train_accuracy": val + gap - 0.01,
        "train_loss": 1.4 - 0.6 * frac,
        "val_loss": 1.5 - 0.5 * frac + 0.02 * n_ep[rows] * np.maximum(frac - 0.6, 0),
        "test_accuracy": np.where(frac == 1, c["final_test_accuracy"].to_numpy()[rows], np.nan),
        "diverged": 0.0, "epoch_seconds": 6.0, "target_epochs": n_ep[rows].astype(float)})
    if derive_metrics:
        derived = trial_metrics(epochs_df.drop(columns=["sim", "arm", "replicate"]))
        cols = [c for c in TRIAL_METRICS if c != "diverged"]
        idx = trials_df.set_index(KEYS).index
        fresh = derived.set_index(KEYS)[cols].reindex(idx)
        has = fresh["n_epochs"].notna().to_numpy()
        trials_df.loc[has, cols] = fresh[has].to_numpy()
    return trials_df, epochs_df
