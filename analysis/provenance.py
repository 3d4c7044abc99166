"""What was run: data source and sizes, replicates, seeds, trials, epochs, compute and initializers.

Reads ``Results.meta`` (experiment -> {"config": config.yaml as a dict, "data": data.json}) where the
loader provides it; older experiments have neither, and every function says "unknown" instead of
guessing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis._files import Unreadable, parse_json, read_bytes, redact_text
from analysis.contract import CONFIG_FILE, MARGIN_POINTS, MARKER, RUNS_FILE, replicate_column
from analysis.html import escape_markdown

_SOURCES = ("cifar10", "synthetic")
_HEX = set("0123456789abcdef")


def _source(value: Any) -> str | None:
    """A data source word the report knows, or None (a file's other strings never reach the text)."""
    return value if value in _SOURCES else None


def _digest(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= 128 and set(value) <= _HEX else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9 else None


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def describe_data(meta: dict | None) -> dict[str, Any]:
    """``source`` ("cifar10", "synthetic", "mixed" or "unknown"), ``synthetic`` (any experiment ran
    on synthetic data), ``official`` (every experiment used the official CIFAR-10 release; None
    if unknown) and per experiment its data.json (or the config's data.source)."""
    per: dict[str, dict] = {}
    for name, m in (meta or {}).items():
        data = _get(m, "data")
        data = data if isinstance(data, dict) else {}
        source = _source(data.get("source")) or _source(_get(m, "config", "data", "source"))
        official = data.get("official")
        warnings = data.get("warnings") if isinstance(data.get("warnings"), list) else []
        per[name] = {"source": source or "unknown", "train": _count(data.get("train")),
                     "val": _count(data.get("val")), "test": _count(data.get("test")),
                     "digest": _digest(data.get("digest")),
                     "official": official if isinstance(official, bool) else None,
                     "warnings": [str(w)[:300] for w in warnings[:20]], "recorded": bool(data)}
    sources = {v["source"] for v in per.values()}
    source = "unknown" if not per or sources == {"unknown"} else \
        sources.pop() if len(sources) == 1 else "mixed"
    officials = [v["official"] for v in per.values()]
    official = None if not per or any(o is None for o in officials) else all(bool(o) for o in officials)
    return {"source": source, "synthetic": any(v["source"] == "synthetic" for v in per.values()),
            "official": official, "experiments": per}


def data_sentence(info: dict[str, Any]) -> str:
    """The verdict's first sentence: what the data were. Synthetic data are flagged loudly."""
    def sizes(v: dict) -> str:
        known = {k: v[k] for k in ("train", "val", "test") if isinstance(v.get(k), int)}
        if not known:
            return "sizes not recorded"
        return " / ".join(f"{n:,} {k}" for k, n in known.items()) + " images"

    parts = []
    for name, v in info["experiments"].items():
        if v["source"] == "synthetic":
            parts.append(f"`{name}`: SYNTHETIC images ({sizes(v)})")
        elif v["source"] == "cifar10":
            origin = ("the official CIFAR-10 release" if v["official"] else
                      "CIFAR-10 from a copy that does NOT match the official release"
                      if v["official"] is False else "CIFAR-10 (not checked against the official release)")
            digest = f", digest {str(v['digest'])[:12]}" if v["digest"] else ""
            parts.append(f"`{name}`: {origin} ({sizes(v)}{digest})")
        else:
            parts.append(f"`{name}`: source unknown ({sizes(v)})")
    if not parts:
        return ("Data: source not recorded (no data.json or config.yaml in the experiment): the report "
                "cannot say whether these are CIFAR-10 results.")
    text = "Data: " + "; ".join(parts) + "."
    if info["synthetic"]:
        text += (" These results come from SYNTHETIC data: they test the pipeline and say nothing "
                 "about SELU or ReLU on CIFAR-10.")
    warnings = [w for v in info["experiments"].values() for w in v["warnings"]]
    if warnings:
        text += " Data warnings: " + "; ".join(escape_markdown(" ".join(w.split())) for w in warnings) + "."
    return text


def equivalence_margin(meta: dict | None) -> tuple[float, list[str]]:
    """``analysis.equivalence_margin`` (percentage points; the smallest over experiments, default
    1.0) and notes on any value that could not be used."""
    notes, values = [], []
    for name, m in (meta or {}).items():
        v = _get(m, "config", "analysis", "equivalence_margin")
        if v is None:
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0:
            values.append(float(v))
        else:
            notes.append(f"`{name}`: analysis.equivalence_margin={v!r} is not a positive number of "
                         f"points; used {MARGIN_POINTS}")
    return (min(values) if values else MARGIN_POINTS), notes


def resolve_initializer(activation: Any, kernel_initializer: Any) -> str:
    """The initializer a trial used, as ``trainable.model.resolve_initializer`` decides it (that
    module imports no Keras at load time); ``auto = he_normal`` style when it was ``auto``."""
    from trainable.model import INITIALIZERS
    from trainable.model import resolve_initializer as resolve

    if kernel_initializer in (None, "") or kernel_initializer != kernel_initializer:
        return "not recorded"
    if kernel_initializer not in INITIALIZERS:
        return str(kernel_initializer)
    if kernel_initializer == "auto":
        try:
            return f"auto = {resolve(str(activation), 'auto')}"
        except ValueError:
            return "auto"
    return str(kernel_initializer)


def run_summary(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per arm: activation, kernel initializer(s), replicates, search trials (per replicate),
    confirmation seeds per replicate, epochs trained, and compute hours (sum of epoch_seconds)."""
    t = trials.assign(replicate=replicate_column(trials))
    rows = []
    e_arm = epochs.groupby("arm") if len(epochs) else None
    for arm, a in t.groupby("arm", sort=True):
        search, confirm = a[a["stage"] == "search"], a[a["stage"] == "confirm"]
        reps = sorted(set(a["replicate"].astype(int)))
        inits = sorted({resolve_initializer(r.get("activation"), r.get("kernel_initializer"))
                        for r in a.to_dict("records")})
        acts = sorted({str(v) for v in a["activation"].dropna()}) if "activation" in a else []
        seeds = confirm.groupby("replicate")["trial_id"].size() if len(confirm) else pd.Series(dtype=int)
        ep = e_arm.get_group(arm) if e_arm is not None and arm in e_arm.groups else epochs.iloc[:0]
        secs = pd.to_numeric(ep["epoch_seconds"], errors="coerce").sum(min_count=1) \
            if "epoch_seconds" in ep else np.nan
        rows.append({
            "arm": arm, "activation": ", ".join(acts) or "not recorded",
            "kernel_initializer": ", ".join(inits), "replicates": len(reps),
            "search_trials": len(search),
            "search_trials_per_replicate": _per(search.groupby("replicate").size()),
            "confirm_seeds_per_replicate": _per(seeds), "epochs_trained": len(ep),
            "compute_hours": float(secs) / 3600 if np.isfinite(secs) else np.nan,
        })
    return pd.DataFrame(rows)


def _per(counts: pd.Series) -> str:
    if counts.empty:
        return "0"
    lo, hi = int(counts.min()), int(counts.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _replicates_text(value: Any) -> Any:
    """``search.replicates`` as the report shows it: a fixed R as is; a sequential plan as
    "3..8 sequential, budget 55 min" (not the mapping it is saved as)."""
    if not isinstance(value, dict):
        return value
    lo, hi, budget = value.get("min"), value.get("max", value.get("min")), value.get("budget_minutes")
    text = f"{lo}..{hi} sequential" if hi != lo else f"{lo}"
    timed = isinstance(budget, (int, float)) and not isinstance(budget, bool)
    return text + (f", budget {budget:g} min" if timed else "")


def sweep_settings(meta: dict | None) -> dict[str, dict[str, Any]]:
    """Per experiment, the config values that define the comparison (None where not recorded)."""
    out = {}
    for name, m in (meta or {}).items():
        out[name] = {"replicates": _replicates_text(_get(m, "config", "search", "replicates")),
                     "trials_per_cell": _get(m, "config", "search", "num_samples"),
                     "search_mode": _get(m, "config", "search", "mode"),
                     "confirm_seeds": _get(m, "config", "confirm", "seeds"),
                     "equivalence_margin": _get(m, "config", "analysis", "equivalence_margin")}
    return out


REPRODUCE_PACKAGES = ("selu-sweep", "ray", "optuna", "keras", "tensorflow", "numpy", "pandas", "scipy")


def _read_small(path: Path, limit: int = 1_000_000) -> bytes | None:
    """A small regular file's bytes inside its experiment, or None (absent, not a regular file, a
    link out of the experiment, too big, unreadable)."""
    try:
        return read_bytes(path, limit, inside=path.parent)
    except Unreadable:
        return None


def reproduce_info(experiments: dict[str, Path]) -> list[dict[str, Any]]:
    """Per experiment: the command lines that started and resumed it (``runs.jsonl``), the SHA-256
    of its ``config.yaml``, the selu-sweep version that created it (``.selu-sweep.json``), and the
    versions of the packages that matter installed where this report is made. Only reads."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    installed = {}
    for name in REPRODUCE_PACKAGES:
        try:
            installed[name] = version(name)
        except PackageNotFoundError:
            installed[name] = "not installed"
    out = []
    for name, path in experiments.items():
        config = _read_small(Path(path) / CONFIG_FILE)
        commands = []
        for line in (_read_small(Path(path) / RUNS_FILE) or b"").decode(errors="replace").splitlines():
            try:
                run = parse_json(line)
            except ValueError:
                continue
            if isinstance(run, dict) and isinstance(run.get("command"), str):
                mode, when = str(run.get("mode", "?"))[:20], str(run.get("time", ""))[:40]
                command = " ".join(redact_text(run["command"][:2000]).split())  # one line, no password
                commands.append(f"{command}  # {' '.join(mode.split())} {' '.join(when.split())}".strip())
        try:
            marker = parse_json((_read_small(Path(path) / MARKER) or b"{}").decode(errors="replace"))
        except ValueError:
            marker = {}
        version = marker.get("version") if isinstance(marker, dict) else None
        out.append({"experiment": name, "commands": commands[-50:],
                    "config_sha256": hashlib.sha256(config).hexdigest() if config is not None else None,
                    "created_with": " ".join(str(version).split())[:40] if version is not None else None,
                    "installed": installed})
    return out
