"""The package layering: trainable <- analysis <- sweeps, no import cycle between modules, and the
libraries each layer may use (trainable never imports Optuna; analysis never starts Ray or trains).

Imports are read from the source with ``ast`` (module level and inside functions alike), so a lazy
import counts as much as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainable", "analysis", "sweeps")
# A package may import the packages left of it, never one right of it.
LAYER = {name: i for i, name in enumerate(PACKAGES)}
FORBIDDEN = {"trainable": ("optuna", "analysis", "sweeps"),
             "analysis": ("sweeps", "ray", "keras", "tensorflow")}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, module: str) -> set[str]:
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


MODULES = _modules()
# A package's __init__ only re-exports its modules: ``from trainable import _backend`` inside
# trainable is an edge to trainable._backend, not to the package, or every re-export would be a loop.
GRAPH = {m: {i for i in _imports(p, m) if i in MODULES and i != m and not m.startswith(f"{i}.")}
         for m, p in MODULES.items()}


def test_the_import_graph_was_read():
    assert {"trainable.train", "analysis.contract", "sweeps.runner"} <= set(MODULES)
    assert "analysis.contract" in GRAPH["analysis.load"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_higher_layer(module):
    mine = LAYER[module.split(".")[0]]
    upward = sorted(i for i in GRAPH[module] if LAYER[i.split(".")[0]] > mine)
    assert upward == [], f"{module} imports {upward} from a layer above it"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_never_imports_what_its_layer_must_not_use(package):
    bad = sorted({f"{m}: {i}" for m, p in MODULES.items() if m.split(".")[0] == package
                  for i in _imports(p, m) if i.split(".")[0] in FORBIDDEN[package]})
    assert bad == []


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_modules():
    assert _cycles() == []
