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
             seed_corr: float = 0.3, split_sd: float = 0.003, p_diverge: float = 0.0,
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


# --------------------------------------------------------------------------- the stratified search design
#
# The search of design.md section 1, per simulated experiment, replicate and arm (a "cell"):
# T trials whose log10(lr) candidates are a scrambled one-dimensional Sobol design over the search
# range (one point in each of T equal strata: what an Owen-scrambled 1-D Sobol sequence of 2^m
# points is), shared by both arms of a replicate (common random numbers), as is each trial's seed
# (a trial-level offset of validation accuracy, correlated across arms). Every trial trains toward
# ``max_epochs`` under successive halving on the best validation accuracy so far (``objective:
# best``): ``halving="sync"`` (what default.yaml runs: every trial of a cell waits at each rung for
# the rest, exactly as the sweep's ``SyncHalvingCell``) or ``"async"`` (Ray's ASHA, results arriving
# in trial order, one trial of a cell at a time, exactly as ``ray.tune.schedulers.async_hyperband``'s
# ``_Bracket.on_result`` does; the real runs the noise was fitted to ran it, so it is the model's
# default here). Both are checked against that code in tests/benchmarks/test_bench_calibration.py.
# The chosen configuration is the trial with the best validation accuracy, at the epoch of that
# best; confirmation retrains it over K seeds (seed k shared across arms) and measures test accuracy.

DESIGN = dict(lr_low=-4.0, lr_high=-2.0, max_epochs=30, grace_period=1, reduction_factor=3, halving="async",
              peak=0.66, lr_star=1e-3, epochs_star=20.0, curvature_lr=0.30, rise=0.15, decline=0.04,
              trial_sd=0.016, seed_sd=0.006, epoch_sd=0.004, seed_corr=0.3, noise_scale=1.0)
# Noise parameters, fitted to the real default.yaml runs (benchmarks/README.md): the replicate
# difference's sd is 1.15 points with candidates and seeds drawn independently per arm (crn=False),
# 87% of its variance from the search and 13% from the K=3 confirmation seeds (seed sd 0.6 points,
# correlation 0.3 across arms: 2 * 0.6^2 * 0.7 / 3 = 0.17 points^2 of 1.15^2). The search's share
# comes from the noise of each trial's validation accuracy (trial_sd 1.6 points: seed, data order
# and the fixed 5,000-image validation set) on an lr surface that loses 30 points a decade^2 away
# from its optimum. With common random numbers (crn=True) the same model gives sd 0.9-1.0.
# ``noise_scale`` multiplies the three noise sds (trial, seed, epoch). The CRN run of 2026-12-06
# (T=8, K=3, 30 epochs) measured 1.49 points over its 3 replicates: REAL_RUN_NOISE_SCALE fits that.
REAL_RUN_NOISE_SCALE = 1.55


def asha_rungs(max_t: int, grace_period: int, reduction_factor: float) -> list[int]:
    """The rungs of Ray's ``_Bracket(min_t=grace_period, max_t, reduction_factor, s=0)``, ascending."""
    n = int(np.log(max_t / grace_period) / np.log(reduction_factor) + 1)
    return [int(grace_period * reduction_factor ** k) for k in range(n)]


NO_HALVING = "off"  # the design's ``halving`` when search.early_stopping.enabled is false


def no_stop_epochs(best_so_far: np.ndarray, grace_period: int, reduction_factor: float,
                   max_t: int) -> np.ndarray:
    """Epochs each trial trains WITHOUT early stopping (``search.early_stopping.enabled: false``):
    every trial trains to ``max_t`` unless it ends on its own (NaN) first."""
    ends = np.isnan(best_so_far)
    return np.where(ends.any(-1), ends.argmax(-1), max_t)


def asha_stop_epochs(best_so_far: np.ndarray, grace_period: int, reduction_factor: float,
                     max_t: int) -> np.ndarray:
    """Epochs each trial trains under asynchronous successive halving, trials of a cell arriving
    in order: ``best_so_far`` is (cells, T, max_t) (the metric each epoch reports; NaN after a
    trial ends on its own, e.g. diverged). At each rung a trial is stopped when its value is below
    ``np.nanpercentile`` (1 - 1/rf) of the values recorded there before it (none recorded: it
    continues), as Ray's ``_Bracket`` does; a trial that reaches ``max_t`` ends there."""
    cells, trials, _ = best_so_far.shape
    own_end = no_stop_epochs(best_so_far, grace_period, reduction_factor, max_t)  # if never stopped
    stop = own_end.copy()
    rungs = asha_rungs(max_t, grace_period, reduction_factor)
    recorded = {m: np.full((cells, trials), np.nan) for m in rungs}
    q = (1 - 1 / reduction_factor) * 100
    for i in range(trials):
        alive = np.ones(cells, dtype=bool)
        for m in rungs:
            reach = alive & (own_end[:, i] >= m) & (m < max_t)
            if not reach.any():
                break
            v = best_so_far[:, i, m - 1]
            prev = recorded[m][:, :i]
            has = ~np.isnan(prev).all(1) if i else np.zeros(cells, dtype=bool)
            cut = _nanpercentile_rows(prev, q) if i else np.full(cells, np.nan)
            stopped = reach & has & (v < cut)
            recorded[m][reach, i] = v[reach]
            stop[stopped, i] = m
            alive &= ~stopped
    return stop


def sync_halving_stop_epochs(best_so_far: np.ndarray, grace_period: int, reduction_factor: float,
                             max_t: int) -> np.ndarray:
    """Epochs each trial trains under SYNCHRONOUS successive halving (``search.early_stopping.halving:
    sync``; checked against the sweep's ``SyncHalvingCell`` in tests/benchmarks/test_bench_calibration.py):
    every trial of a cell trains to a rung, then only the best ``max(1, floor(n / rf))`` of the ``n``
    still running go on, at every rung; no trial is exempt. A trial that ended on its own (NaN)
    takes no part in the rungs after its end."""
    cells, trials, _ = best_so_far.shape
    stop = no_stop_epochs(best_so_far, grace_period, reduction_factor, max_t)
    alive = stop >= 1
    for m in asha_rungs(max_t, grace_period, reduction_factor):
        if m >= max_t:
            break
        reach = alive & (stop >= m)
        v = np.where(reach, np.nan_to_num(best_so_far[:, :, m - 1], nan=-np.inf), -np.inf)
        keep = np.maximum(1, np.floor(reach.sum(1) / reduction_factor)).astype(int)
        rank = np.argsort(np.argsort(-v, axis=1, kind="stable"), axis=1)
        cut = reach & (rank >= keep[:, None])
        stop[cut] = np.minimum(stop[cut], m)
        alive = reach & ~cut
    return stop


def _nanpercentile_rows(x: np.ndarray, q: float) -> np.ndarray:
    """``np.nanpercentile(x, q, axis=1)`` (linear interpolation) without its per-row Python loop;
    NaN for an all-NaN row."""
    s = np.sort(x, axis=1)  # NaN sorts last
    n = (~np.isnan(x)).sum(1)
    pos = (np.maximum(n, 1) - 1) * q / 100
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    rows = np.arange(len(x))
    v = s[rows, lo] + (pos - lo) * (s[rows, hi] - s[rows, lo])
    return np.where(n > 0, v, np.nan)


def simulate_design(n_experiments: int, replicates: int, *, seeds: int = 3, trials: int = 8,
                    effect_points: float = 0.0, crn: bool = True, lr_star_b: float | None = None,
                    epochs_star_b: float | None = None, bad_config: float = 0.0, skew: bool = False,
                    diverge_b: bool = False, rng: int | np.random.Generator = 0, chunk: int = 250,
                    **design) -> dict[str, np.ndarray]:
    """Confirmation test accuracy of ``n_experiments`` simulated two-arm sweeps of the stratified
    design (see above): returns ``test`` (E, R, 2, K), ``diverged`` (same shape), ``lr`` and
    ``epochs`` of each cell's chosen configuration (E, R, 2), ``trained`` (epochs trained per
    search trial, (E, R, 2, T)) and ``true`` (each chosen configuration's true accuracy). Arm 1
    ("selu") differs from arm 0 by: ``effect_points`` on its peak; its lr optimum ``lr_star_b``
    and epoch optimum ``epochs_star_b``; ``bad_config`` (chance per replicate that it lands on a
    configuration 3-6 points worse, for BOTH arms independently: heavy-tailed search luck);
    ``skew`` (+0.5 points in 10 of 11 replicates, -5 in 1: a zero-mean skewed difference);
    ``diverge_b`` (trials and runs with lr above 3e-3 diverge with chance 0.5, recording chance
    accuracy 0.10). ``crn=False`` draws candidates and seeds independently per arm."""
    p = {**DESIGN, **design}
    for key in ("trial_sd", "seed_sd", "epoch_sd"):
        p[key] *= p["noise_scale"]
    g = np.random.default_rng(rng)
    out = {k: [] for k in ("test", "diverged", "lr", "epochs", "trained", "true")}
    for s in range(0, n_experiments, chunk):
        e = min(chunk, n_experiments - s)
        part = _simulate_chunk(g, e, replicates, seeds, trials, effect_points, crn, lr_star_b, epochs_star_b,
                               bad_config, skew, diverge_b, p)
        for k in out:
            out[k].append(part[k])
    return {k: np.concatenate(v) for k, v in out.items()}


def _curve(log_lr, epoch, peak, lr_star, epochs_star, p):
    lr_term = p["curvature_lr"] * (log_lr - np.log10(lr_star)) ** 2
    rise = p["rise"] * np.clip((epochs_star - epoch) / epochs_star, 0, None) ** 2
    decline = p["decline"] * np.clip((epoch - epochs_star) / p["max_epochs"], 0, None) ** 2
    return peak - lr_term - rise - decline


def _simulate_chunk(g, E, R, K, T, effect, crn, lr_star_b, epochs_star_b, bad_config, skew, diverge_b, p):
    A, M = 2, p["max_epochs"]
    shape = (E, R, A, T)
    cand = (E, R, 1 if crn else A, T)
    strata = (np.argsort(g.random(cand), axis=-1) + g.random(cand)) / T
    log_lr = np.broadcast_to(p["lr_low"] + (p["lr_high"] - p["lr_low"]) * strata, shape)
    rho = p["seed_corr"]
    shared = g.standard_normal((E, R, 1, T))
    seed_u = p["trial_sd"] * (np.sqrt(rho) * shared + np.sqrt(1 - rho) * g.standard_normal(shape)) if crn \
        else p["trial_sd"] * g.standard_normal(shape)
    peak = np.array([p["peak"], p["peak"] + effect / 100])[None, None, :, None, None]
    lr_star = np.array([p["lr_star"], lr_star_b or p["lr_star"]])[None, None, :, None, None]
    ep_star = np.array([p["epochs_star"], epochs_star_b or p["epochs_star"]])[None, None, :, None, None]
    epoch = np.arange(1, M + 1, dtype=float)
    true = _curve(log_lr[..., None], epoch, peak, lr_star, ep_star, p)  # (E, R, A, T, M)
    val = true + seed_u[..., None] + p["epoch_sd"] * g.standard_normal(true.shape)
    if diverge_b:
        high = np.zeros(shape, dtype=bool)
        high[:, :, 1] = (log_lr[:, :, 1] > np.log10(3e-3)) & (g.random((E, R, T)) < 0.5)
        at = g.integers(1, M + 1, shape)
        gone = high[..., None] & (epoch >= at[..., None])
        val = np.where(gone, 0.10, val)
        after = high[..., None] & (epoch > at[..., None])
        val = np.where(after, np.nan, val)
    best = np.fmax.accumulate(val, axis=-1)
    best = np.where(np.isnan(val), np.nan, best)
    halving = {"async": asha_stop_epochs, "sync": sync_halving_stop_epochs,
               NO_HALVING: no_stop_epochs}[p["halving"]]
    trained = halving(best.reshape(E * R * A, T, M), p["grace_period"], p["reduction_factor"], M)
    trained = trained.reshape(shape)
    mask = epoch <= trained[..., None]
    seen = np.where(mask & ~np.isnan(val), val, -np.inf)
    trial_best = seen.max(-1)
    best_epoch = seen.argmax(-1) + 1
    pick = trial_best.argmax(-1)  # (E, R, A)
    idx = (*np.indices(pick.shape), pick)
    c_lr, c_ep = log_lr[idx], best_epoch[idx].astype(float)
    c_true = _curve(c_lr, c_ep, peak[..., 0, 0], lr_star[..., 0, 0], ep_star[..., 0, 0], p)
    if bad_config:
        worse = g.uniform(0.03, 0.06, c_true.shape)
        c_true = c_true - np.where(g.random(c_true.shape) < bad_config, worse, 0)
    if skew:
        c_true[:, :, 1] += np.where(g.random((E, R)) < 1 / 11, -0.05, 0.005)
    sk = g.standard_normal((E, R, 1, K))
    seed_v = p["seed_sd"] * (np.sqrt(rho) * sk + np.sqrt(1 - rho) * g.standard_normal((E, R, A, K)))
    test = c_true[..., None] + seed_v
    div = np.zeros(test.shape, dtype=bool)
    if diverge_b:
        div[:, :, 1] = (c_lr[:, :, 1] > np.log10(3e-3))[..., None] & (g.random((E, R, K)) < 0.5)
        test = np.where(div, 0.10, test)
    return {"test": test, "diverged": div, "lr": 10 ** c_lr, "epochs": c_ep, "trained": trained,
            "true": c_true}


def replicate_differences_points(sim: dict[str, np.ndarray]) -> np.ndarray:
    """(E, R) paired differences arm 0 - arm 1 in points, every run counted (the primary question's
    unit: :func:`analysis.decision.replicate_differences` on the same runs gives the same numbers)."""
    return 100 * (sim["test"][:, :, 0].mean(-1) - sim["test"][:, :, 1].mean(-1))


def confirm_frame(sim: dict[str, np.ndarray], arms: tuple[str, str] = ("relu", "selu")) -> pd.DataFrame:
    """The confirmation stage of simulated sweeps as a loader-shaped trials table (column ``sim``)."""
    E, R, A, K = sim["test"].shape
    e, r, a, k = (x.ravel() for x in np.indices((E, R, A, K)))
    return pd.DataFrame({
        "sim": e, "experiment": "sim", "stage": "confirm", "arm": np.asarray(arms, dtype=object)[a],
        "replicate": r, "seed": k, "trial_id": [f"{i}-{j}-{x}-{y}" for i, j, x, y in zip(e, r, a, k)],
        "status": np.where(sim["diverged"].ravel(), "diverged", "finished"),
        "lr": sim["lr"][e, r, a], "epochs": sim["epochs"][e, r, a],
        "final_test_accuracy": sim["test"].ravel(), "final_val_accuracy": sim["test"].ravel()})
