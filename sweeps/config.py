"""The sweep configuration: parsed once at the edge into one typed, validated object.

``load_config(path, overrides)`` reads a YAML file, applies ``--set KEY=VALUE`` overrides,
checks every key, type and range, and returns a frozen :class:`SweepConfig`. Any problem is a
:class:`ConfigError` whose message is one line naming the key and the fix; nothing has
started and nothing has been written when it is raised.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainable.data import NORMALIZATIONS
from trainable.model import ACTIVATIONS, INITIALIZERS

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
SEARCHABLE = ("lr", "epochs", "batch_size", "dropout")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ConfigError(ValueError):
    """A problem with the sweep configuration or the command line, fit for one line of output."""


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


@dataclass(frozen=True)
class EarlyStoppingConfig:
    enabled: bool = True
    grace_period: int = 3
    reduction_factor: int = 3


@dataclass(frozen=True)
class SearchConfig:
    enabled: bool = True
    mode: str = "stratified"
    num_samples: int = 8
    seed: int = 0
    objective: str = "final"
    optuna_storage: str | None = None
    space: tuple[ParamSpec, ...] = ()
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)

    @property
    def metric(self) -> str:
        return "val_accuracy" if self.objective == "final" else "best_val_accuracy"


@dataclass(frozen=True)
class DataConfig:
    source: str = "cifar10"
    data_dir: str | None = None
    val_size: int = 5000
    split_seed: int = 0
    validate_on: str = "val"
    train_subset: int | None = None
    synthetic_train: int = 1000
    synthetic_test: int = 200
    synthetic_seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-3
    epochs: int = 50
    batch_size: int = 100
    kernel_initializer: str = "auto"
    normalization: str = "scale"
    dropout: float = 0.0
    divergence_loss: float = 100.0


@dataclass(frozen=True)
class ArmConfig:
    """One side of the comparison: an activation and the settings that go with it."""

    name: str
    activation: str
    kernel_initializer: str | None = None
    normalization: str | None = None
    dropout: float | None = None

    def settings(self, train: TrainConfig) -> dict[str, Any]:
        """The trial-config values this arm fixes, falling back to the ``train`` defaults."""
        return {
            "arm": self.name,
            "activation": self.activation,
            "kernel_initializer": self.kernel_initializer or train.kernel_initializer,
            "normalization": self.normalization or train.normalization,
            "dropout": train.dropout if self.dropout is None else self.dropout,
        }


@dataclass(frozen=True)
class ConfirmConfig:
    enabled: bool = True
    seeds: int = 5
    seed_offset: int = 10_000


@dataclass(frozen=True)
class ResourcesConfig:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent_trials: int | None = None


@dataclass(frozen=True)
class SweepConfig:
    name: str
    storage_path: str = "results"
    address: str | None = None
    max_failures: int = 2
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    arms: tuple[ArmConfig, ...] = ()
    search: SearchConfig = field(default_factory=SearchConfig)
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    def arm(self, name: str) -> ArmConfig:
        return next(a for a in self.arms if a.name == name)

    def base_trial_config(self) -> dict[str, Any]:
        """Trial-config values shared by every trial of the sweep."""
        return {
            "lr": self.train.lr,
            "epochs": self.train.epochs,
            "batch_size": self.train.batch_size,
            "divergence_loss": self.train.divergence_loss,
            "validate_on": self.data.validate_on,
        }

    def to_dict(self) -> dict[str, Any]:
        """A plain dict in the YAML schema, for writing the resolved config next to results."""
        raw = asdict(self)
        raw["arms"] = [{k: v for k, v in arm.items() if v is not None} for arm in raw["arms"]]
        raw["search"]["space"] = {
            p.pop("name"): {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()
                            if v is not None and not (k == "log" and v is False)}
            for p in raw["search"]["space"]
        }
        data = raw["data"]
        data["synthetic"] = {"train": data.pop("synthetic_train"), "test": data.pop("synthetic_test"),
                             "seed": data.pop("synthetic_seed")}
        return raw


# --------------------------------------------------------------------------------------------
# Parsing

_SCHEMA: dict[str, Any] = {
    "name": str, "storage_path": str, "address": (str, type(None)), "max_failures": int,
    "data": {"source": str, "data_dir": (str, type(None)), "val_size": int, "split_seed": int,
             "validate_on": str, "train_subset": (int, type(None)),
             "synthetic": {"train": int, "test": int, "seed": int}},
    "train": {"lr": float, "epochs": int, "batch_size": int, "kernel_initializer": str,
              "normalization": str, "dropout": float, "divergence_loss": float},
    "arms": list,
    "search": {"enabled": bool, "mode": str, "num_samples": int, "seed": int, "objective": str,
               "optuna_storage": (str, type(None)), "space": dict,
               "early_stopping": {"enabled": bool, "grace_period": int, "reduction_factor": int}},
    "confirm": {"enabled": bool, "seeds": int, "seed_offset": int},
    "resources": {"cpus_per_trial": float, "gpus_per_trial": float,
                  "max_concurrent_trials": (int, type(None))},
}
_ARM_KEYS = {"name": str, "activation": str, "kernel_initializer": (str, type(None)),
             "normalization": (str, type(None)), "dropout": (float, type(None))}
_SPEC_KEYS = {"low": float, "high": float, "log": bool, "choices": list}


def _type_name(expected) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a mapping", type(None): "null"}
    return " or ".join(names[t] for t in types)


def _check_type(key: str, value: Any, expected) -> Any:
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(f"{key}: expected {_type_name(expected)}, got {value!r}")
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if float in types and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" as a string; accept it as the number it obviously is
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, types):
        raise ConfigError(f"{key}: expected {_type_name(expected)}, got {value!r}")
    return value


def _unknown(key: str, allowed) -> ConfigError:
    parent, _, leaf = key.rpartition(".")
    close = difflib.get_close_matches(leaf, list(allowed), n=1)
    hint = f"did you mean '{(parent + '.' if parent else '') + close[0]}'?" if close else \
        f"allowed keys here: {', '.join(sorted(allowed))}"
    return ConfigError(f"{key}: unknown key; {hint}")


def _walk(raw: dict, schema: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key not in schema:
            raise _unknown(full, schema)
        expected = schema[key]
        if isinstance(expected, dict):
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ConfigError(f"{full}: expected a mapping of settings, got {value!r}")
            out[key] = _walk(value, expected, full + ".")
        else:
            out[key] = _check_type(full, value, expected)
    return out


def _parse_spec(name: str, raw: Any) -> ParamSpec:
    key = f"search.space.{name}"
    if name not in SEARCHABLE:
        raise _unknown(key, SEARCHABLE)
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: expected {{low: .., high: ..}} or {{choices: [..]}}, got {raw!r}")
    spec = _walk(raw, _SPEC_KEYS, key + ".")
    if "choices" in spec:
        if set(spec) - {"choices"}:
            raise ConfigError(f"{key}: give either choices or low/high, not both")
        if not spec["choices"]:
            raise ConfigError(f"{key}.choices: must list at least one value")
        choices = tuple(_check_type(f"{key}.choices", c, int if name in ("epochs", "batch_size")
                                    else float) for c in spec["choices"])
        for c in choices:
            _check_value(f"{key}.choices", name, c)
        return ParamSpec(name, choices=choices)
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{key}: needs both low and high (or choices)")
    low, high = spec["low"], spec["high"]
    if name in ("epochs", "batch_size"):
        for bound, v in (("low", low), ("high", high)):
            if v != int(v):
                raise ConfigError(f"{key}.{bound}: must be a whole number, got {v}")
        low, high = int(low), int(high)
    _check_value(f"{key}.low", name, low)
    _check_value(f"{key}.high", name, high)
    if low > high:
        raise ConfigError(f"{key}: low ({low}) is greater than high ({high}); swap them")
    log = spec.get("log", False)
    if log and low <= 0:
        raise ConfigError(f"{key}: a log range needs low > 0")
    return ParamSpec(name, low=low, high=high, log=log)


def _check_value(key: str, name: str, value: float) -> None:
    if name == "lr" and not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{key}: the learning rate must be a positive number, got {value}")
    if name == "epochs" and value < 1:
        raise ConfigError(f"{key}: epochs must be at least 1, got {value}")
    if name == "batch_size" and value < 1:
        raise ConfigError(f"{key}: batch_size must be at least 1, got {value}")
    if name == "dropout" and not 0 <= value < 1:
        raise ConfigError(f"{key}: dropout must be in [0, 1), got {value}")


def _one_of(key: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, allowed))}")


def _parse_arms(raw: Any) -> tuple[ArmConfig, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("arms: list at least one arm, e.g. [{name: relu, activation: relu}]")
    arms = []
    for i, item in enumerate(raw):
        key = f"arms[{i}]"
        if isinstance(item, str):  # shorthand: "- selu"
            item = {"name": item, "activation": item}
        if not isinstance(item, dict):
            raise ConfigError(f"{key}: expected {{name: .., activation: ..}}, got {item!r}")
        arm = _walk(item, _ARM_KEYS, key + ".")
        if "activation" not in arm:
            raise ConfigError(f"{key}.activation: missing; use one of {', '.join(ACTIVATIONS)}")
        arm.setdefault("name", arm["activation"])
        _one_of(f"{key}.activation", arm["activation"], ACTIVATIONS)
        if arm.get("kernel_initializer") is not None:
            _one_of(f"{key}.kernel_initializer", arm["kernel_initializer"], INITIALIZERS)
        if arm.get("normalization") is not None:
            _one_of(f"{key}.normalization", arm["normalization"], NORMALIZATIONS)
        if arm.get("dropout") is not None:
            _check_value(f"{key}.dropout", "dropout", arm["dropout"])
        if not _NAME_RE.match(arm["name"]):
            raise ConfigError(f"{key}.name: {arm['name']!r} must be letters, digits, '.', '_' or '-'")
        arms.append(ArmConfig(**arm))
    names = [a.name for a in arms]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"arms: duplicate arm name {dupes[0]!r}; give each arm its own name")
    return tuple(arms)


def _build(raw: dict) -> SweepConfig:
    raw = _walk(raw, _SCHEMA)
    if "name" not in raw:
        raise ConfigError("name: missing; give the sweep a name (or pass --name NAME)")
    if not _NAME_RE.match(raw["name"]):
        raise ConfigError(f"name: {raw['name']!r} must be letters, digits, '.', '_' or '-'")

    d = raw.get("data", {})
    synthetic = d.pop("synthetic", {})
    data = DataConfig(**d, synthetic_train=synthetic.get("train", 1000),
                      synthetic_test=synthetic.get("test", 200),
                      synthetic_seed=synthetic.get("seed", 0))
    _one_of("data.source", data.source, ("cifar10", "synthetic"))
    _one_of("data.validate_on", data.validate_on, ("val", "test"))
    if data.val_size < 0:
        raise ConfigError(f"data.val_size: must be >= 0, got {data.val_size}")
    if data.validate_on == "val" and data.val_size == 0:
        raise ConfigError("data.val_size: validate_on 'val' needs a validation split; set val_size > 0")
    if data.train_subset is not None and data.train_subset < 1:
        raise ConfigError(f"data.train_subset: must be >= 1 or null, got {data.train_subset}")
    if data.source == "synthetic":
        if data.synthetic_train <= data.val_size:
            raise ConfigError(f"data.synthetic.train: {data.synthetic_train} images cannot hold out "
                              f"val_size {data.val_size}; make it larger than val_size")
        if data.synthetic_test < 1:
            raise ConfigError("data.synthetic.test: must be at least 1")
    if data.data_dir is not None:
        if data.source != "cifar10":
            raise ConfigError("data.data_dir: only used with source 'cifar10'; remove it or change source")
        if not Path(data.data_dir).expanduser().exists():
            raise ConfigError(f"data.data_dir: {data.data_dir} does not exist; point it at "
                              f"'cifar-10-batches-py' or 'cifar-10-python.tar.gz'")

    train = TrainConfig(**raw.get("train", {}))
    for name in ("lr", "epochs", "batch_size", "dropout"):
        _check_value(f"train.{name}", name, getattr(train, name))
    _one_of("train.kernel_initializer", train.kernel_initializer, INITIALIZERS)
    _one_of("train.normalization", train.normalization, NORMALIZATIONS)
    if not train.divergence_loss > 0:
        raise ConfigError("train.divergence_loss: must be a positive loss value")

    arms = _parse_arms(raw.get("arms"))

    s = raw.get("search", {})
    es = EarlyStoppingConfig(**s.pop("early_stopping", {}))
    space = tuple(_parse_spec(k, v) for k, v in sorted((s.pop("space", None) or {}).items()))
    search = SearchConfig(**s, space=space, early_stopping=es)
    _one_of("search.mode", search.mode, ("stratified", "joint"))
    _one_of("search.objective", search.objective, ("final", "best"))
    if search.enabled:
        if search.num_samples < 1:
            raise ConfigError(f"search.num_samples: must be at least 1, got {search.num_samples}")
        if not search.space:
            raise ConfigError("search.space: nothing to search; add e.g. lr: {low: 1e-4, high: 1e-2, "
                              "log: true} or set search.enabled: false")
        if data.validate_on == "test":
            raise ConfigError("data.validate_on: 'test' would select models on the test set; use 'val' "
                              "for a search (only a search-free reproduction may validate on test)")
    if es.grace_period < 1:
        raise ConfigError(f"search.early_stopping.grace_period: must be >= 1, got {es.grace_period}")
    if es.reduction_factor < 2:
        raise ConfigError(f"search.early_stopping.reduction_factor: must be >= 2, got {es.reduction_factor}")

    confirm = ConfirmConfig(**raw.get("confirm", {}))
    if confirm.enabled and confirm.seeds < 1:
        raise ConfigError(f"confirm.seeds: must be at least 1, got {confirm.seeds}")
    if not search.enabled and not confirm.enabled:
        raise ConfigError("search.enabled and confirm.enabled are both false: nothing to run")

    res = ResourcesConfig(**raw.get("resources", {}))
    if res.cpus_per_trial <= 0:
        raise ConfigError(f"resources.cpus_per_trial: must be > 0, got {res.cpus_per_trial}")
    g = res.gpus_per_trial
    if g < 0:
        raise ConfigError(f"resources.gpus_per_trial: must be >= 0, got {g}")
    if g > 1 and g != int(g):
        raise ConfigError(f"resources.gpus_per_trial: above 1 it must be a whole number, got {g}")
    if 0 < g < 1 and not math.isclose(1 / g, round(1 / g), rel_tol=1e-9):
        raise ConfigError(f"resources.gpus_per_trial: {g} does not divide a GPU evenly; "
                          f"use 1/k such as 0.5, 0.25 or 0.125")
    if res.max_concurrent_trials is not None and res.max_concurrent_trials < 1:
        raise ConfigError("resources.max_concurrent_trials: must be >= 1 or null")

    max_failures = raw.get("max_failures", 2)
    if max_failures < 0:
        raise ConfigError(f"max_failures: must be >= 0, got {max_failures}")

    top = {k: raw[k] for k in ("name", "storage_path", "address") if k in raw}
    return SweepConfig(**top, max_failures=max_failures, data=data, train=train, arms=arms,
                       search=search, confirm=confirm, resources=res)


def _apply_override(raw: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment}: expected KEY=VALUE, e.g. --set search.num_samples=8")
    key, _, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {assignment}: empty key segment in {key!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {key}: '{part}' is not an index of that list (0..{len(node) - 1})")
            node = node[int(part)]
            continue
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, (dict, list)):
            raise ConfigError(f"--set {key}: '{'.'.join(parts[: i + 1])}' is a value, not a section")
        node = nxt
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"--set {key}: '{last}' is not an index of that list (0..{len(node) - 1})")
        node[int(last)] = value
    else:
        node[last] = value


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file; see sweeps/configs/ for examples") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.__class__.__name__})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"--config {path}: invalid YAML{where}; fix the syntax") from None
    if raw is None:
        raise ConfigError(f"--config {path}: the file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: the top level must be a mapping of settings")
    return raw


def parse_config(raw: dict, overrides: list[str] | tuple[str, ...] = ()) -> SweepConfig:
    """Validate a raw config dict (after ``--set`` overrides) into a :class:`SweepConfig`."""
    raw = copy.deepcopy(raw)
    for assignment in overrides:
        _apply_override(raw, assignment)
    return _build(raw)


def load_config(path: str | Path = DEFAULT_CONFIG,
                overrides: list[str] | tuple[str, ...] = ()) -> SweepConfig:
    """Read, override and validate a sweep config file."""
    return parse_config(read_yaml(path), overrides)
