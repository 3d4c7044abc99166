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

from trainable.dataset import NORMALIZATIONS
from trainable.model import ACTIVATIONS, INITIALIZERS
from trainable.train import DEFAULTS

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
SEARCHABLE = ("lr", "epochs", "batch_size", "dropout")
SEED_LIMIT = 2**31          # seeds are 0 <= s < 2**31: safe for numpy, TF, JAX and Optuna
MAX_NAME = 100              # names become path components and study names
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ConfigError(ValueError):
    """A problem with the sweep configuration or the command line, fit for one line of output."""


# --------------------------------------------------------------------------------------------
# Checks shared by the sections


def check_name(key: str, value: str) -> None:
    if not _NAME_RE.match(value) or len(value) > MAX_NAME or value in (".", ".."):
        raise ConfigError(f"{key}: {value[:120]!r} must be letters, digits, '.', '_' or '-' (at most "
                          f"{MAX_NAME}, starting with a letter or digit)")


def _seed(key: str, value: int) -> None:
    if not 0 <= value < SEED_LIMIT:
        raise ConfigError(f"{key}: seeds must be 0 <= seed < 2**31, got {value}")


def _at_least(key: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(f"{key}: must be at least {low:g}, got {value}")


def _one_of(key: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, allowed))}")


def _check_value(key: str, name: str, value: float) -> None:
    """Range of a trainable hyperparameter (fixed, per arm, or a search bound)."""
    if name == "lr" and not value > 0:
        raise ConfigError(f"{key}: the learning rate must be a positive number, got {value}")
    if name in ("epochs", "batch_size") and value < 1:
        raise ConfigError(f"{key}: {name} must be at least 1, got {value}")
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
        raise ConfigError(f"{key}: expected {expected}, got {str(value)[:80]!r}")
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
            raise ConfigError(f"{key or 'config'}: expected a mapping of settings, got {str(raw)[:80]!r}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        kwargs = {}
        for k, v in raw.items():
            full = f"{key}.{k}" if key else str(k)
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
        k = f"{key}.{name}"
        if name not in SEARCHABLE:
            raise _unknown(k, SEARCHABLE)
        if not isinstance(spec, dict):
            raise ConfigError(f"{k}: expected {{low: .., high: ..}} or {{choices: [..]}}, got {spec!r}")
        num = int if name in ("epochs", "batch_size") else float
        out: dict[str, Any] = {}
        for sk, sv in spec.items():
            if sk in ("low", "high"):
                out[sk] = _coerce(f"{k}.{sk}", sv, float)
            elif sk == "log":
                out[sk] = _coerce(f"{k}.{sk}", sv, bool)
            elif sk == "choices":
                if not isinstance(sv, list):
                    raise ConfigError(f"{k}.choices: expected a list, got {sv!r}")
                out[sk] = tuple(_coerce(f"{k}.choices", c, num) for c in sv)
            else:
                raise _unknown(f"{k}.{sk}", ("low", "high", "log", "choices"))
        if num is int:
            for b in ("low", "high"):
                if b in out and out[b].is_integer():
                    out[b] = int(out[b])
        specs.append(ParamSpec(name, **out))
    return tuple(specs)


@dataclass(frozen=True)
class EarlyStoppingConfig(_Section):
    KEY: ClassVar[str] = "search.early_stopping"
    enabled: bool = True
    grace_period: int = 3
    reduction_factor: int = 3

    def __post_init__(self):
        _at_least(f"{self.KEY}.grace_period", self.grace_period, 1)
        _at_least(f"{self.KEY}.reduction_factor", self.reduction_factor, 2)


@dataclass(frozen=True)
class SearchConfig(_Section):
    KEY: ClassVar[str] = "search"
    enabled: bool = True
    mode: str = "stratified"
    num_samples: int = 8
    replicates: int = 1               # independent repeats of each arm's tuning: the verdict's unit
    seed: int = 0
    objective: str = "final"
    n_startup_trials: int | None = None  # TPE's random start-up trials; null = sized to num_samples
    reference_point: bool = True      # seed each study with the original config (lr 1e-3, 50 epochs)
    optuna_storage: str | None = None
    space: tuple[ParamSpec, ...] = field(default=(), metadata={"parse": _parse_space})
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)

    def __post_init__(self):
        _one_of("search.mode", self.mode, ("stratified", "joint"))
        _one_of("search.objective", self.objective, ("final", "best"))
        _seed("search.seed", self.seed)
        _at_least("search.replicates", self.replicates, 1)
        if self.n_startup_trials is not None:
            _at_least("search.n_startup_trials", self.n_startup_trials, 0)
        if self.enabled:
            _at_least("search.num_samples", self.num_samples, 1)
            if not self.space:
                raise ConfigError("search.space: nothing to search; add e.g. lr: {low: 1e-4, high: 1e-2, "
                                  "log: true} or set search.enabled: false")

    @property
    def metric(self) -> str:
        return "val_accuracy" if self.objective == "final" else "best_val_accuracy"

    @property
    def startup_trials(self) -> int:
        """TPE's random start-up trials: a third of each study's budget, 2 to 10 (Optuna's default)."""
        if self.n_startup_trials is not None:
            return self.n_startup_trials
        return max(2, min(10, self.num_samples // 3))


@dataclass(frozen=True)
class SyntheticConfig(_Section):
    KEY: ClassVar[str] = "data.synthetic"
    train: int = 1000
    test: int = 200
    seed: int = 0

    def __post_init__(self):
        _at_least(f"{self.KEY}.train", self.train, 2)
        _at_least(f"{self.KEY}.test", self.test, 1)
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
        _at_least("data.val_size", self.val_size, 0)
        _seed("data.split_seed", self.split_seed)
        if self.validate_on == "val" and self.val_size == 0:
            raise ConfigError("data.val_size: validate_on 'val' needs a validation split; set val_size > 0")
        if self.train_subset is not None:
            _at_least("data.train_subset", self.train_subset, 1)
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
        _at_least("train.checkpoint_every", self.checkpoint_every, 1)

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

    def __post_init__(self):
        if self.enabled:
            _at_least("confirm.seeds", self.seeds, 1)
        _seed("confirm.seed", self.seed)


@dataclass(frozen=True)
class ResourcesConfig(_Section):
    KEY: ClassVar[str] = "resources"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent_trials: int | None = None
    wait_for_nodes_s: float = 600.0   # how long to wait for the autoscaler to add a node that fits a trial

    def __post_init__(self):
        if self.cpus_per_trial <= 0:
            raise ConfigError(f"resources.cpus_per_trial: must be > 0, got {self.cpus_per_trial}")
        g = self.gpus_per_trial
        if g < 0:
            raise ConfigError(f"resources.gpus_per_trial: must be >= 0, got {g}")
        if g > 1 and g != int(g):
            raise ConfigError(f"resources.gpus_per_trial: above 1 it must be a whole number, got {g}")
        if 0 < g < 1 and not math.isclose(1 / g, round(1 / g), rel_tol=1e-9):
            raise ConfigError(f"resources.gpus_per_trial: {g} does not divide a GPU evenly; "
                              f"use 1/k such as 0.5, 0.25 or 0.125")
        if self.max_concurrent_trials is not None:
            _at_least("resources.max_concurrent_trials", self.max_concurrent_trials, 1)
        _at_least("resources.wait_for_nodes_s", self.wait_for_nodes_s, 0)


@dataclass(frozen=True)
class AnalysisConfig(_Section):
    KEY: ClassVar[str] = "analysis"
    # The same defaults as analysis.decision.PRIMARY_METRIC / MARGIN_POINTS / PRIMARY_METRICS (this
    # module stays free of the analysis package's imports; tests/analysis/test_decision.py checks
    # that they agree). The margin is what the default sequential plan can show (benchmarks/README.md).
    primary: str = "final_test_accuracy"  # the confirmatory question, tested alone at alpha
    equivalence_margin: float = 2.0   # percentage points: TOST within +-margin reads "no difference larger"
    PRIMARY_METRICS: ClassVar[tuple[str, ...]] = ("final_test_accuracy", "final_val_accuracy",
                                                  "best_val_accuracy")

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
        _at_least("max_failures", self.max_failures, 0)
        if self.search.enabled and self.data.validate_on == "test":
            raise ConfigError("data.validate_on: 'test' would select models on the test set; use 'val' "
                              "for a search (only a search-free reproduction may validate on test)")
        if not self.search.enabled and not self.confirm.enabled:
            raise ConfigError("search.enabled and confirm.enabled are both false: nothing to run")
        if not self.search.enabled and self.search.replicates > 1:
            raise ConfigError("search.replicates: replicates repeat the tuning; without a search set it to 1 "
                              "(or raise confirm.seeds)")

    def arm(self, name: str) -> ArmConfig:
        return next(a for a in self.arms if a.name == name)

    def max_epochs(self) -> int:
        """The most epochs a trial may train: the top of the searched range, else ``train.epochs``."""
        spec = next((p for p in self.search.space if p.name == "epochs"), None)
        if spec is None or not self.search.enabled:
            return self.train.epochs
        return int(spec.high if spec.choices is None else max(spec.choices))

    def base_trial_config(self) -> dict[str, Any]:
        """Trial-config values shared by every trial of the sweep."""
        return {**self.train.trial_values(), "validate_on": self.data.validate_on}

    def to_dict(self) -> dict[str, Any]:
        """A plain dict in the YAML schema, for writing the resolved config next to results."""
        raw = asdict(self)
        raw["arms"] = [{k: v for k, v in arm.items() if v is not None} for arm in raw["arms"]]
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
    if not all(parts):
        raise ConfigError(f"{shown}: empty key segment in {key!r}")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{shown}: '{part}' is not an index of that list (0..{len(node) - 1})")
            if last:
                node[int(part)] = value
                return
            node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{shown}: '{'.'.join(parts[:i])}' is a value, not a section")
        if last:
            node[part] = value
            return
        if node.get(part) is None:
            node[part] = {}
        node = node[part]


def parse_assignment(assignment: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from ``--set``; the value is YAML-typed (``--set search.num_samples=8``)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment}: expected KEY=VALUE, e.g. --set search.num_samples=8")
    key, _, text = assignment.partition("=")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key, value


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        if path.stat().st_size > 1_000_000:
            raise ConfigError(f"--config {path}: larger than 1 MB; not a sweep config")
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file; see sweeps/configs/ for examples") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.__class__.__name__})") from None
    return parse_yaml_text(text, f"--config {path}")


def parse_yaml_text(text: str, where: str) -> dict:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{where}: invalid YAML{at}; fix the syntax") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply; not a sweep config") from None
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
