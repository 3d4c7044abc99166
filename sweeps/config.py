"""The sweep configuration: parsed once at the edge into one typed, validated object.

The schema lives in one place: the dataclasses below. Their fields and type hints drive the
parsing (``_Section.parse``: unknown keys, types, finite numbers), and each section checks its
own ranges in ``__post_init__`` (as Optuna's distributions check ``low <= high`` where they are
built); checks that span sections live in ``SweepConfig.__post_init__``. Any problem is a
:class:`ConfigError` whose message is one line naming the key and the fix; nothing has started
and nothing has been written when it is raised.

``load_config(path, overrides, flags)`` reads a YAML file, applies ``--set KEY=VALUE``
overrides (YAML-typed) and command-line flags (taken literally), and returns a frozen
:class:`SweepConfig`. Trial defaults come from ``trainable.train.DEFAULTS``, their one home.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from analysis._files import MAX_YAML_BYTES, Unreadable, load_yaml
from analysis.contract import MARGIN_POINTS, MAX_NAME, NAME_PATTERN, PRIMARY_METRIC, PRIMARY_METRICS
from trainable.dataset import NORMALIZATIONS
from trainable.model import ACTIVATIONS, INITIALIZERS
from trainable.train import DEFAULTS

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
SEARCHABLE = ("lr", "batch_size", "dropout")
SEED_LIMIT = 2**31          # seeds are 0 <= s < 2**31: safe for numpy, TF, JAX and Optuna
_NAME_RE = re.compile(NAME_PATTERN)  # names become path components, study names and report text
# Upper bounds on every size and count, so a typo cannot ask for terabytes or a year of trials.
# Data sizes are at most the real dataset's (CIFAR-10: 50,000 training and 10,000 test images).
CIFAR10_TRAIN, CIFAR10_TEST = 50_000, 10_000
MAX_EPOCHS = 10_000
MAX_TRIALS = 100_000        # search.num_samples, confirm.seeds, replicates x arms x seeds
MAX_ARMS = 100
MAX_TEXT = 4096             # any string value (paths, URLs, names of trackers)
MAX_OVERRIDE_PARTS = 8      # --set a.b.c: the config is 4 levels deep


class ConfigError(ValueError):
    """A problem with the sweep configuration or the command line, fit for one line of output."""


# --------------------------------------------------------------------------------------------
# Checks shared by the sections


def show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error message never formats an unbounded value."""
    if isinstance(value, (dict, list, tuple)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'} of {len(value)} item(s)"
    text = repr(value[:limit + 1] if isinstance(value, str) else value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_name(key: str, value: str) -> None:
    if not isinstance(value, str) or not _NAME_RE.match(value) or len(value) > MAX_NAME \
            or value in (".", ".."):
        raise ConfigError(f"{key}: {show(value)} must be letters, digits, '.', '_' or '-' (at most "
                          f"{MAX_NAME}, starting with a letter or digit)")


def _seed(key: str, value: int) -> None:
    if not 0 <= value < SEED_LIMIT:
        raise ConfigError(f"{key}: seeds must be 0 <= seed < 2**31, got {value}")


def _at_least(key: str, value: float, low: float, high: float | None = None) -> None:
    if value < low:
        raise ConfigError(f"{key}: must be at least {low:g}, got {show(value)}")
    if high is not None and value > high:
        raise ConfigError(f"{key}: must be at most {high:g}, got {show(value)}")


def _one_of(key: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {show(value)} is not one of {', '.join(map(str, allowed))}")


def _check_value(key: str, name: str, value: float) -> None:
    """Range of a trainable hyperparameter (fixed, per arm, or a search bound)."""
    if name == "lr" and not value > 0:
        raise ConfigError(f"{key}: the learning rate must be a positive number, got {value}")
    if name in ("epochs", "batch_size") and value < 1:
        raise ConfigError(f"{key}: {name} must be at least 1, got {value}")
    if name == "epochs" and value > MAX_EPOCHS:
        raise ConfigError(f"{key}: epochs must be at most {MAX_EPOCHS:,}, got {show(value)}")
    if name == "batch_size" and value > CIFAR10_TRAIN:
        raise ConfigError(f"{key}: batch_size must be at most {CIFAR10_TRAIN:,} (the training set), "
                          f"got {show(value)}")
    if name == "dropout" and not 0 <= value < 1:
        raise ConfigError(f"{key}: dropout must be in [0, 1), got {value}")


# --------------------------------------------------------------------------------------------
# Parsing driven by the dataclasses


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against a field's type hint; returns the (int -> float widened) value."""
    args = typing.get_args(hint)
    if type(None) in args:  # X | None
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    if isinstance(hint, type) and issubclass(hint, _Section):
        return hint.parse(value, key)
    expected = _TYPE_NAMES.get(hint, str(hint))
    if isinstance(value, bool) and hint is not bool:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise ConfigError(f"{key}: longer than {MAX_TEXT} characters; not a sweep setting")
    if hint is float:
        if isinstance(value, str):
            try:  # YAML 1.1 reads "1e-3" as a string; accept it as the number it obviously is
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, int):
            value = float(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value}")
    if hint is int and isinstance(value, float) and value.is_integer() and math.isfinite(value):
        value = int(value)
    if not isinstance(value, hint):
        raise ConfigError(f"{key}: expected {expected}, got {show(value)}")
    return value


def _unknown(key: str, allowed) -> ConfigError:
    parent, _, leaf = key.rpartition(".")
    close = difflib.get_close_matches(str(leaf), list(allowed), n=1)
    hint = f"did you mean '{(parent + '.' if parent else '') + close[0]}'?" if close else \
        f"allowed keys here: {', '.join(sorted(allowed))}"
    return ConfigError(f"{key}: unknown key; {hint}")


@dataclass(frozen=True)
class _Section:
    """A config section: ``parse`` checks keys and types from the fields; ``__post_init__`` ranges."""

    KEY: ClassVar[str] = ""

    @classmethod
    def parse(cls, raw: Any, key: str | None = None):
        key = cls.KEY if key is None else key
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{key or 'config'}: expected a mapping of settings, got {show(raw)}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        kwargs = {}
        for k, v in raw.items():
            full = f"{key}.{str(k)[:40]}" if key else str(k)[:40]
            if k not in fields:
                raise _unknown(full, fields)
            parse = fields[k].metadata.get("parse")
            kwargs[k] = parse(v, full) if parse else _coerce(full, v, hints[k])
        return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# The typed configuration


@dataclass(frozen=True)
class ParamSpec:
    """One searched hyperparameter: a range (``low``..``high``, optionally log) or ``choices``."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    @property
    def is_int(self) -> bool:
        return self.name in ("epochs", "batch_size")

    def __post_init__(self):
        key = f"search.space.{self.name}"
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise ConfigError(f"{key}: give either choices or low/high, not both")
            if not self.choices:
                raise ConfigError(f"{key}.choices: must list at least one value")
            for c in self.choices:
                _check_value(f"{key}.choices", self.name, c)
            return
        if self.low is None or self.high is None:
            raise ConfigError(f"{key}: needs both low and high (or choices)")
        for bound in ("low", "high"):
            v = getattr(self, bound)
            if self.is_int and v != int(v):
                raise ConfigError(f"{key}.{bound}: must be a whole number, got {v}")
            _check_value(f"{key}.{bound}", self.name, v)
        if self.low > self.high:
            raise ConfigError(f"{key}: low ({self.low}) is greater than high ({self.high}); swap them")
        if self.log and self.low <= 0:
            raise ConfigError(f"{key}: a log range needs low > 0")

    def contains(self, value: float) -> bool:
        return value in self.choices if self.choices is not None else self.low <= value <= self.high


def _parse_space(raw: Any, key: str) -> tuple[ParamSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: expected a mapping such as {{lr: {{low: 1e-4, high: 1e-2}}}}")
    specs = []
    for name, spec in sorted(raw.items(), key=lambda kv: str(kv[0])):
        k = f"{key}.{str(name)[:40]}"
        if name == "epochs":
            raise ConfigError(f"{k}: epochs are not searched: every trial trains toward search.max_epochs "
                              f"and its epochs are read off its validation curve; set search.max_epochs")
        if name not in SEARCHABLE:
            raise _unknown(k, SEARCHABLE)
        if not isinstance(spec, dict):
            raise ConfigError(f"{k}: expected {{low: .., high: ..}} or {{choices: [..]}}, got {show(spec)}")
        num = int if name in ("epochs", "batch_size") else float
        out: dict[str, Any] = {}
        for sk, sv in spec.items():
            if sk in ("low", "high"):
                out[sk] = _coerce(f"{k}.{sk}", sv, float)
            elif sk == "log":
                out[sk] = _coerce(f"{k}.{sk}", sv, bool)
            elif sk == "choices":
                if not isinstance(sv, list):
                    raise ConfigError(f"{k}.choices: expected a list, got {show(sv)}")
                if len(sv) > 1000:
                    raise ConfigError(f"{k}.choices: at most 1000 values, got {len(sv)}")
                out[sk] = tuple(_coerce(f"{k}.choices", c, num) for c in sv)
            else:
                raise _unknown(f"{k}.{str(sk)[:40]}", ("low", "high", "log", "choices"))
        if num is int:
            for b in ("low", "high"):
                if b in out and out[b].is_integer():
                    out[b] = int(out[b])
        specs.append(ParamSpec(name, **out))
    return tuple(specs)


HALVINGS = ("sync", "async")      # search.early_stopping.halving


@dataclass(frozen=True)
class EarlyStoppingConfig(_Section):
    KEY: ClassVar[str] = "search.early_stopping"
    enabled: bool = True
    halving: str = "sync"             # sync: trials wait at each rung for their cell | async: Ray's ASHA
    grace_period: int = 1             # epochs before a trial may be stopped (the first rung)
    reduction_factor: int = 3         # the best 1/rf of a rung go on

    def __post_init__(self):
        _one_of(f"{self.KEY}.halving", self.halving, HALVINGS)
        _at_least(f"{self.KEY}.grace_period", self.grace_period, 1, MAX_EPOCHS)
        _at_least(f"{self.KEY}.reduction_factor", self.reduction_factor, 2, 100)


MAX_REPLICATES = 1000            # each a whole tuning of every arm
MIN_SEQUENTIAL = 3                # the first look of a sequential plan needs at least 3 replicate pairs


class Replicates(int):
    """``search.replicates``: a fixed number R, or a sequential plan ``{min, max, budget_minutes}``.

    The int value is the most replicates the sweep may run (R, or ``max``), so code that sizes
    per-replicate things (data splits, studies) just uses it as a number. ``min`` is the first
    look (R for a fixed design: one look, at R); ``budget_minutes`` (optional) is the wall-clock
    budget: a replicate that would not finish within it is not started.
    """

    min: int
    budget_minutes: float | None

    def __new__(cls, maximum: int, minimum: int | None = None, budget_minutes: float | None = None):
        self = super().__new__(cls, maximum)
        self.min = int(maximum if minimum is None else minimum)
        self.budget_minutes = budget_minutes
        return self

    @property
    def max(self) -> int:
        return int(self)

    @property
    def sequential(self) -> bool:
        """Whether the sweep looks after each replicate from ``min`` on (a mapping in the config)."""
        return self.min != int(self) or self.budget_minutes is not None

    def to_yaml(self) -> int | dict[str, Any]:
        if not self.sequential:
            return int(self)
        out: dict[str, Any] = {"min": self.min, "max": int(self)}
        if self.budget_minutes is not None:
            out["budget_minutes"] = self.budget_minutes
        return out

    def __repr__(self) -> str:
        return f"Replicates({self.to_yaml()!r})"

    def __reduce__(self):
        return Replicates, (int(self), self.min, self.budget_minutes)

    def __deepcopy__(self, memo):
        return self


_REPLICATES_FIX = "give an integer R (a fixed design) or {min: 3, max: 8, budget_minutes: 60} (sequential)"


def _parse_replicates(raw: Any, key: str) -> Replicates:
    """``search.replicates``: an integer >= 1, or a mapping {min >= 3, max >= min, budget_minutes > 0}."""
    if isinstance(raw, dict):
        unknown = [k for k in raw if k not in ("min", "max", "budget_minutes")]
        if unknown:
            raise _unknown(f"{key}.{unknown[0]}", ("min", "max", "budget_minutes"))
        if "min" not in raw or "max" not in raw:
            raise ConfigError(f"{key}: a sequential plan needs min and max; {_REPLICATES_FIX}")
        low = _coerce(f"{key}.min", raw["min"], int)
        high = _coerce(f"{key}.max", raw["max"], int)
        budget = raw.get("budget_minutes")
        budget = None if budget is None else _coerce(f"{key}.budget_minutes", budget, float)
        if low < MIN_SEQUENTIAL:
            raise ConfigError(f"{key}.min: the first look needs at least {MIN_SEQUENTIAL} replicates, "
                              f"got {low}")
        if high < low:
            raise ConfigError(f"{key}.max: must be at least min ({low}), got {high}")
        _at_least(f"{key}.max", high, low, MAX_REPLICATES)
        if budget is not None and not budget > 0:
            raise ConfigError(f"{key}.budget_minutes: must be a positive number of minutes, got {budget}")
        return Replicates(high, low, budget)
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = _coerce(key, raw, int)
        _at_least(key, value, 1, MAX_REPLICATES)
        return Replicates(value)
    raise ConfigError(f"{key}: expected an integer or a mapping, got {str(raw)[:80]!r}; {_REPLICATES_FIX}")


@dataclass(frozen=True)
class SearchConfig(_Section):
    KEY: ClassVar[str] = "search"
    enabled: bool = True
    mode: str = "stratified"
    num_samples: int = 8              # trials per cell (an arm x a replicate; a replicate when joint)
    # independent repeats of each arm's tuning, the verdict's unit: R, or a sequential plan
    replicates: Replicates = field(default=Replicates(1), metadata={"parse": _parse_replicates})
    seed: int = 0
    objective: str = "best"           # best: a trial's best val accuracy over its epochs | final: the last
    max_epochs: int = 30              # every search trial trains toward this; ASHA may stop it sooner
    n_startup_trials: int | None = None  # trials per cell from the shared QMC design before TPE; null = all
    reference_point: bool = False     # joint mode only: start each study at the original lr 1e-3
    optuna_storage: str | None = None
    space: tuple[ParamSpec, ...] = field(default=(), metadata={"parse": _parse_space})
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)

    def __post_init__(self):
        if not isinstance(self.replicates, Replicates):  # built in code (e.g. dataclasses.replace)
            object.__setattr__(self, "replicates", _parse_replicates(self.replicates, "search.replicates"))
        _one_of("search.mode", self.mode, ("stratified", "joint"))
        _one_of("search.objective", self.objective, ("final", "best"))
        _seed("search.seed", self.seed)
        _at_least("search.max_epochs", self.max_epochs, 1, MAX_EPOCHS)
        if self.n_startup_trials is not None:
            _at_least("search.n_startup_trials", self.n_startup_trials, 0, MAX_TRIALS)
        if self.reference_point and self.mode == "stratified":
            raise ConfigError("search.reference_point: the stratified search has no privileged trial (every "
                              "candidate comes from the shared design); set it false, or use mode joint")
        if self.enabled:
            _at_least("search.num_samples", self.num_samples, 1, MAX_TRIALS)
            if not self.space:
                raise ConfigError("search.space: nothing to search; add e.g. lr: {low: 1e-4, high: 1e-2, "
                                  "log: true} or set search.enabled: false")

    @property
    def metric(self) -> str:
        return "val_accuracy" if self.objective == "final" else "best_val_accuracy"

    @property
    def startup_trials(self) -> int:
        """Trials per cell drawn from the shared quasi-random design before TPE takes over:
        ``n_startup_trials`` (at most ``num_samples``), or all of them when it is null."""
        if self.n_startup_trials is None:
            return self.num_samples
        return min(self.n_startup_trials, self.num_samples)


@dataclass(frozen=True)
class SyntheticConfig(_Section):
    KEY: ClassVar[str] = "data.synthetic"
    train: int = 1000
    test: int = 200
    seed: int = 0

    def __post_init__(self):
        _at_least(f"{self.KEY}.train", self.train, 2, CIFAR10_TRAIN)
        _at_least(f"{self.KEY}.test", self.test, 1, CIFAR10_TEST)
        _seed(f"{self.KEY}.seed", self.seed)


@dataclass(frozen=True)
class DataConfig(_Section):
    KEY: ClassVar[str] = "data"
    source: str = "cifar10"
    data_dir: str | None = None
    val_size: int = 5000
    split_seed: int = 0
    vary_split: bool = False          # true: replicate r splits train/val with split_seed + r
    validate_on: str = "val"
    train_subset: int | None = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self):
        _one_of("data.source", self.source, ("cifar10", "synthetic"))
        _one_of("data.validate_on", self.validate_on, ("val", "test"))
        _at_least("data.val_size", self.val_size, 0, CIFAR10_TRAIN - 1)
        _seed("data.split_seed", self.split_seed)
        if self.validate_on == "val" and self.val_size == 0:
            raise ConfigError("data.val_size: validate_on 'val' needs a validation split; set val_size > 0")
        if self.train_subset is not None:
            _at_least("data.train_subset", self.train_subset, 1, CIFAR10_TRAIN)
        if self.source == "synthetic" and self.synthetic.train <= self.val_size:
            raise ConfigError(f"data.synthetic.train: {self.synthetic.train} images cannot hold out "
                              f"val_size {self.val_size}; make it larger than val_size")
        if self.data_dir is not None:
            if self.source != "cifar10":
                raise ConfigError("data.data_dir: only used with source 'cifar10'; remove it or change "
                                  "source")
            if not self.data_dir.strip():
                raise ConfigError("data.data_dir: empty; point it at 'cifar-10-batches-py' or "
                                  "'cifar-10-python.tar.gz', or leave it out for the Keras cache")
            if not Path(self.data_dir).expanduser().exists():
                raise ConfigError(f"data.data_dir: {self.data_dir} does not exist; point it at "
                                  f"'cifar-10-batches-py' or 'cifar-10-python.tar.gz'")


@dataclass(frozen=True)
class TrainConfig(_Section):
    """Fixed trial settings; every default is ``trainable.train.DEFAULTS`` (commented there)."""

    KEY: ClassVar[str] = "train"
    lr: float = DEFAULTS["lr"]
    epochs: int = DEFAULTS["epochs"]
    batch_size: int = DEFAULTS["batch_size"]
    kernel_initializer: str = DEFAULTS["kernel_initializer"]
    normalization: str = DEFAULTS["normalization"]
    dropout: float = DEFAULTS["dropout"]
    divergence_loss: float = DEFAULTS["divergence_loss"]
    checkpoint_every: int = DEFAULTS.get("checkpoint_every", 1)

    def __post_init__(self):
        for name in ("lr", "epochs", "batch_size", "dropout"):
            _check_value(f"train.{name}", name, getattr(self, name))
        _one_of("train.kernel_initializer", self.kernel_initializer, INITIALIZERS)
        _one_of("train.normalization", self.normalization, NORMALIZATIONS)
        if not self.divergence_loss > 0:
            raise ConfigError("train.divergence_loss: must be a positive loss value")
        _at_least("train.checkpoint_every", self.checkpoint_every, 1, MAX_EPOCHS)

    def trial_values(self) -> dict[str, Any]:
        """The trial-config values every trial of the sweep shares (arms and search may override)."""
        return {"lr": self.lr, "epochs": self.epochs, "batch_size": self.batch_size,
                "divergence_loss": self.divergence_loss, "checkpoint_every": self.checkpoint_every}


@dataclass(frozen=True)
class ArmConfig(_Section):
    """One side of the comparison: an activation and the settings that go with it."""

    name: str = ""
    activation: str = ""
    kernel_initializer: str | None = None
    normalization: str | None = None
    dropout: float | None = None

    def __post_init__(self):
        key = f"arms[{self.name or self.activation}]"
        if not self.activation:
            raise ConfigError(f"{key}.activation: missing; use one of {', '.join(ACTIVATIONS)}")
        _one_of(f"{key}.activation", self.activation, ACTIVATIONS)
        check_name(f"{key}.name", self.name)
        if self.kernel_initializer is not None:
            _one_of(f"{key}.kernel_initializer", self.kernel_initializer, INITIALIZERS)
        if self.normalization is not None:
            _one_of(f"{key}.normalization", self.normalization, NORMALIZATIONS)
        if self.dropout is not None:
            _check_value(f"{key}.dropout", "dropout", self.dropout)

    def settings(self, train: TrainConfig) -> dict[str, Any]:
        """The trial-config values this arm fixes, falling back to the ``train`` defaults."""
        return {
            "arm": self.name,
            "activation": self.activation,
            "kernel_initializer": self.kernel_initializer or train.kernel_initializer,
            "normalization": self.normalization or train.normalization,
            "dropout": train.dropout if self.dropout is None else self.dropout,
        }


def _parse_arms(raw: Any, key: str) -> tuple[ArmConfig, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("arms: list at least one arm, e.g. [{name: relu, activation: relu}]")
    if len(raw) > MAX_ARMS:
        raise ConfigError(f"arms: at most {MAX_ARMS} arms, got {len(raw)}")
    arms = []
    for i, item in enumerate(raw):
        if isinstance(item, str):  # shorthand: "- selu"
            item = {"name": item, "activation": item}
        if not isinstance(item, dict):
            raise ConfigError(f"{key}[{i}]: expected {{name: .., activation: ..}}, got {str(item)[:80]!r}")
        if "name" not in item and isinstance(item.get("activation"), str):
            item = {**item, "name": item["activation"]}
        try:
            arms.append(ArmConfig.parse(item, f"{key}[{i}]"))
        except ConfigError as exc:  # __post_init__ names the arm; the user wants its position
            name = item.get("name") or item.get("activation")
            raise ConfigError(str(exc).replace(f"arms[{name}]", f"{key}[{i}]", 1)) from None
    names = [a.name for a in arms]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"arms: duplicate arm name {dupes[0]!r}; give each arm its own name")
    return tuple(arms)


@dataclass(frozen=True)
class ConfirmConfig(_Section):
    KEY: ClassVar[str] = "confirm"
    enabled: bool = True
    seeds: int = 5
    seed: int = 0                     # base of the confirmation seeds (never equal to a search seed)
    original_seeds: int = 0           # runs per arm and replicate at the original configuration; 0 = none

    def __post_init__(self):
        if self.enabled:
            _at_least("confirm.seeds", self.seeds, 1, 1000)
        _seed("confirm.seed", self.seed)
        _at_least("confirm.original_seeds", self.original_seeds, 0, 1000)


@dataclass(frozen=True)
class ResourcesConfig(_Section):
    KEY: ClassVar[str] = "resources"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent_trials: int | None = None
    wait_for_nodes_s: float = 600.0   # how long to wait for the autoscaler to add a node that fits a trial

    def __post_init__(self):
        if not 0 < self.cpus_per_trial <= 1024:
            raise ConfigError(f"resources.cpus_per_trial: must be > 0 and at most 1024, got "
                              f"{self.cpus_per_trial}")
        g = self.gpus_per_trial
        if not 0 <= g <= 64:
            raise ConfigError(f"resources.gpus_per_trial: must be >= 0 and at most 64, got {g}")
        if g > 1 and g != int(g):
            raise ConfigError(f"resources.gpus_per_trial: above 1 it must be a whole number, got {g}")
        if 0 < g < 1 and not math.isclose(1 / g, round(1 / g), rel_tol=1e-9):
            raise ConfigError(f"resources.gpus_per_trial: {g} does not divide a GPU evenly; "
                              f"use 1/k such as 0.5, 0.25 or 0.125")
        if self.max_concurrent_trials is not None:
            _at_least("resources.max_concurrent_trials", self.max_concurrent_trials, 1, MAX_TRIALS)
        _at_least("resources.wait_for_nodes_s", self.wait_for_nodes_s, 0, 7 * 24 * 3600)


@dataclass(frozen=True)
class AnalysisConfig(_Section):
    KEY: ClassVar[str] = "analysis"
    primary: str = PRIMARY_METRIC     # the confirmatory question, tested alone at alpha
    equivalence_margin: float = MARGIN_POINTS  # points: TOST within +-margin reads "no difference larger"
    PRIMARY_METRICS: ClassVar[tuple[str, ...]] = PRIMARY_METRICS

    def __post_init__(self):
        _one_of("analysis.primary", self.primary, self.PRIMARY_METRICS)
        if not 0 < self.equivalence_margin < 100:
            raise ConfigError(f"analysis.equivalence_margin: percentage points in (0, 100), "
                              f"got {self.equivalence_margin}")


@dataclass(frozen=True)
class MlflowConfig(_Section):
    KEY: ClassVar[str] = "logging.mlflow"
    tracking_uri: str = "mlruns"      # a directory (SQLite store mlflow.db in it), sqlite:/// or http(s)://
    experiment: str = "selu-sweep"    # MLflow experiment name


@dataclass(frozen=True)
class WandbConfig(_Section):
    KEY: ClassVar[str] = "logging.wandb"
    project: str = "selu-sweep"       # W&B project
    mode: str = "offline"             # offline | online

    def __post_init__(self):
        _one_of("logging.wandb.mode", self.mode, ("offline", "online"))


@dataclass(frozen=True)
class LoggingConfig(_Section):
    KEY: ClassVar[str] = "logging"
    mlflow: MlflowConfig | None = None
    wandb: WandbConfig | None = None


@dataclass(frozen=True)
class SweepConfig(_Section):
    name: str = ""
    storage_path: str = "results"
    address: str | None = None
    max_failures: int = 2
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    arms: tuple[ArmConfig, ...] = field(default=(), metadata={"parse": _parse_arms})
    search: SearchConfig = field(default_factory=SearchConfig)
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self):
        if not self.name:
            raise ConfigError("name: missing; give the sweep a name (or pass --name NAME)")
        check_name("name", self.name)
        if not self.storage_path.strip():
            raise ConfigError("storage_path: empty; give a directory or an s3:// / gs:// URI")
        if not self.arms:
            raise ConfigError("arms: list at least one arm, e.g. [{name: relu, activation: relu}]")
        _at_least("max_failures", self.max_failures, 0, 100)
        total = self.search.num_samples * len(self.arms) * self.search.replicates if self.search.enabled \
            else 0
        confirm_runs = self.confirm.seeds + self.confirm.original_seeds
        if total + confirm_runs * len(self.arms) * self.search.replicates > MAX_TRIALS:
            raise ConfigError(f"search.num_samples x arms x replicates (+ confirmation trials) exceeds "
                              f"{MAX_TRIALS:,} trials; lower them")
        if self.search.enabled and self.data.validate_on == "test":
            raise ConfigError("data.validate_on: 'test' would select models on the test set; use 'val' "
                              "for a search (only a search-free reproduction may validate on test)")
        if not self.search.enabled and not self.confirm.enabled:
            raise ConfigError("search.enabled and confirm.enabled are both false: nothing to run")
        if self.confirm.original_seeds and not (self.search.enabled and self.confirm.enabled):
            raise ConfigError("confirm.original_seeds: runs at the original configuration sit beside the "
                              "confirmation of a search; without a search or a confirmation set it to 0 "
                              "(without a search the confirmation already runs the train settings)")
        es = self.search.early_stopping
        if self.search.enabled and es.enabled and es.halving == "sync" \
                and self.resources.max_concurrent_trials is not None:
            raise ConfigError("resources.max_concurrent_trials: Tune's cap counts the trials waiting at a "
                              "rung of synchronous halving and would stop the search; bound concurrency with "
                              "resources.cpus_per_trial or gpus_per_trial, or set "
                              "search.early_stopping.halving: async")
        if not self.search.enabled and self.search.replicates > 1:
            raise ConfigError("search.replicates: replicates repeat the tuning; without a search set it to 1 "
                              "(or raise confirm.seeds)")

    def arm(self, name: str) -> ArmConfig:
        return next(a for a in self.arms if a.name == name)

    def max_epochs(self) -> int:
        """The most epochs a trial may train: ``search.max_epochs`` in a search, else ``train.epochs``."""
        return self.search.max_epochs if self.search.enabled else self.train.epochs

    def base_trial_config(self) -> dict[str, Any]:
        """Trial-config values shared by every trial of the sweep."""
        return {**self.train.trial_values(), "validate_on": self.data.validate_on}

    def to_dict(self) -> dict[str, Any]:
        """A plain dict in the YAML schema, for writing the resolved config next to results."""
        raw = asdict(self)
        raw["arms"] = [{k: v for k, v in arm.items() if v is not None} for arm in raw["arms"]]
        raw["search"]["replicates"] = self.search.replicates.to_yaml()
        raw["search"]["space"] = {
            p.pop("name"): {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()
                            if v is not None and not (k == "log" and v is False)}
            for p in raw["search"]["space"]
        }
        return raw


# --------------------------------------------------------------------------------------------
# Reading, overrides, flags


def _apply_override(raw: dict, key: str, value: Any, shown: str) -> None:
    parts = key.strip().split(".")
    if len(parts) > MAX_OVERRIDE_PARTS:
        raise ConfigError(f"{shown[:60]}: a key of {len(parts)} parts; the config is at most 4 levels deep")
    if not all(parts):
        raise ConfigError(f"{shown}: empty key segment in {key!r}")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{shown}: '{part[:40]}' is not an index of that list (0..{len(node) - 1})")
            if last:
                node[int(part)] = value
                return
            node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{shown}: '{'.'.join(parts[:i])[:80]}' is a value, not a section")
        if last:
            node[part] = value
            return
        if node.get(part) is None:
            node[part] = {}
        node = node[part]


def parse_assignment(assignment: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from ``--set``; the value is YAML-typed (``--set search.num_samples=8``)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {show(assignment)}: expected KEY=VALUE, e.g. --set search.num_samples=8")
    key, _, text = assignment.partition("=")
    if len(key) > 200:
        raise ConfigError(f"--set {show(key, 60)}: not a config key (longer than 200 characters)")
    try:
        value = load_yaml(text) if text.strip() else None
    except Unreadable as exc:
        raise ConfigError(f"--set {key}: {exc}") from None
    except yaml.YAMLError:
        value = text
    return key, value


def find_config(path: str | Path) -> Path:
    """``path`` itself when it exists; else, for a bare name (no directory), the packaged config
    ``sweeps/configs/NAME`` or ``NAME.yaml``: ``--config smoke`` or ``--config smoke.yaml`` work
    from any directory, the installed ``selu-sweep`` included."""
    path = Path(path)
    if path.exists() or path.parent != Path("."):
        return path
    for candidate in (CONFIG_DIR / path.name, CONFIG_DIR / f"{path.name}.yaml"):
        if candidate.is_file():
            return candidate
    return path


def packaged_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def read_yaml(path: str | Path) -> dict:
    from analysis._files import read_text

    path = find_config(path)
    shown = str(path)[:200]
    try:
        text = read_text(path, MAX_YAML_BYTES)
    except Unreadable as exc:
        if str(exc) == "missing":
            raise ConfigError(f"--config {shown}: no such file, nor a packaged config (packaged: "
                              f"{', '.join(packaged_configs())})") from None
        raise ConfigError(f"--config {shown}: cannot read it ({exc})") from None
    return parse_yaml_text(text, f"--config {shown}")


def parse_yaml_text(text: str, where: str) -> dict:
    try:
        raw = load_yaml(text)
    except Unreadable as exc:
        raise ConfigError(f"{where}: {exc}; not a sweep config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{where}: invalid YAML{at}; fix the syntax") from None
    if raw is None:
        raise ConfigError(f"{where}: the file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of settings")
    return raw


def parse_config(raw: dict, overrides: list[str] | tuple[str, ...] = (),
                 flags: dict[str, Any] | None = None) -> SweepConfig:
    """Validate a raw config dict into a :class:`SweepConfig`: ``--set`` overrides first (YAML-typed),
    then ``flags`` (dotted key -> value, taken literally: command-line flags are not YAML)."""
    raw = copy.deepcopy(raw)
    for assignment in overrides:
        key, value = parse_assignment(assignment)
        _apply_override(raw, key, value, f"--set {key}")
    for key, value in (flags or {}).items():
        _apply_override(raw, key, value, key)
    try:
        return SweepConfig.parse(raw)
    except RecursionError:
        raise ConfigError("config: nested too deeply; not a sweep config") from None


def load_config(path: str | Path = DEFAULT_CONFIG, overrides: list[str] | tuple[str, ...] = (),
                flags: dict[str, Any] | None = None) -> SweepConfig:
    """Read, override and validate a sweep config file."""
    return parse_config(read_yaml(path), overrides, flags)
