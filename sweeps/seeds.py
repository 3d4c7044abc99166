"""The pairing structure of a sweep: its tuning cells and every seed, derived in one place so
that the rules hold by construction:

* arms are paired (common random numbers): trial ``i`` of replicate ``r`` evaluates the same
  design point (:func:`design_seed`) with the same weight seed (:func:`search_trial_seed`) in
  every arm, replicate ``r`` of every arm uses the same sampler seed and data split, and
  confirmation seed ``k`` of replicate ``r`` is the same for every arm;
* search and confirmation trials never share a weight seed: search seeds lie in
  ``[0, 2**30)``, confirmation seeds (and those of the runs at the original configuration) in
  ``[2**30, 2**31)``, whatever ``search.seed`` and ``confirm.seed`` are (any value in ``[0, 2**31)``);
* every derived seed is below ``2**31``: safe for numpy, TensorFlow, JAX and Optuna.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sweeps.config import SweepConfig

HALF = 2**30


def _hash(*parts: object) -> int:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % HALF


def sampler_seed(search_seed: int, replicate: int) -> int:
    """Seed of the TPE sampler of replicate ``replicate`` (the same for every arm)."""
    return _hash("sampler", search_seed, replicate)


def design_seed(search_seed: int, replicate: int) -> int:
    """Scrambling seed of replicate ``replicate``'s quasi-random (Sobol) design, shared by every arm."""
    return _hash("design", search_seed, replicate)


def split_seed(base: int, replicate: int, vary: bool) -> int:
    """The train/val split of a replicate: ``base`` for all, or ``base + r`` with ``data.vary_split``."""
    return (base + replicate) % 2**31 if vary else base


def split_keys(cfg: SweepConfig, replicate: int) -> dict[str, int]:
    """What a trial of ``replicate`` adds to its config to train on that replicate's split: its
    ``split_seed`` with ``data.vary_split`` (``sweeps.prepare.load_data`` makes one dataset per
    split seed), nothing without (one dataset)."""
    if not cfg.data.vary_split:
        return {}
    return {"split_seed": split_seed(cfg.data.split_seed, replicate, True)}


def search_trial_seed(search_seed: int, replicate: int, index: int) -> int:
    """Weight seed (initial weights, data order) of search trial ``index`` of a replicate: the
    ``index``-th trial a cell asks for, so trial ``i`` has the same seed in every arm."""
    return _hash("search", search_seed, replicate, index)


def confirm_trial_seed(confirm_seed: int, replicate: int, k: int) -> int:
    """Weight seed of confirmation seed ``k`` of replicate ``replicate``: shared across arms."""
    return HALF + _hash("confirm", confirm_seed, replicate, k)


def original_trial_seed(confirm_seed: int, replicate: int, k: int) -> int:
    """Weight seed of run ``k`` at the original configuration in replicate ``replicate``
    (``confirm.original_seeds``): shared across arms, in the confirmation range, drawn apart from
    the tuned configuration's seeds."""
    return HALF + _hash("original", confirm_seed, replicate, k)


def cell_of(config: dict, joint: bool = False) -> str:
    """The tuning cell a trial belongs to: ``arm/rR`` (stratified) or ``rR`` (joint)."""
    r = int(config.get("replicate", 0))
    return f"r{r}" if joint else f"{config.get('arm')}/r{r}"


def study_name(cfg: SweepConfig, experiment_id: str, cell: str) -> str:
    """Study names carry the experiment id: two experiments sharing a database never mix."""
    return f"{cfg.name}-{experiment_id}-{cell.replace('/', '-')}"
