"""The layers hold: search logic (evolution, searchers, ensemble) never imports Ray or evoray.distributed, Ray is
called only from evoray.distributed, no module of evoray imports another in a cycle, and no subpackage depends on
another in a cycle. ``__main__`` modules are entry-point shims (``python -m evoray.ensemble`` runs the ensemble
command), not part of their package's layer."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "evoray"
RAY_FREE = ("evolution", "searchers", "ensemble", "nn", "spaces", "data", "runs")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, module: str, top_level_only: bool) -> set[str]:
    """The modules ``path`` imports (absolute names), every import or only those run at import time."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in nodes:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


@pytest.mark.parametrize("layer", RAY_FREE)
def test_search_logic_never_imports_ray(layer: str) -> None:
    offenders = []
    for module, path in _modules().items():
        if not module.startswith(f"evoray.{layer}"):
            continue
        for name in _imports(path, module, top_level_only=False):  # lazy imports inside functions count too
            if name == "ray" or name.startswith(("ray.", "evoray.distributed", "evoray.commands")):
                offenders.append(f"{module} imports {name}")
    assert not offenders, offenders


def test_only_distributed_and_the_commands_touch_ray() -> None:
    users = {
        module
        for module, path in _modules().items()
        if any(n == "ray" or n.startswith("ray.") for n in _imports(path, module, top_level_only=False))
    }
    assert users and all(m.startswith(("evoray.distributed", "evoray.commands")) for m in users), sorted(users)
    assert all(m.startswith("evoray.distributed") for m in users if "ray.init" in _modules()[m].read_text())


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_module_imports_another_in_a_cycle() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        for name in _imports(path, module, top_level_only=True):
            target = _resolve(name, modules)
            if target and target != module and not module.startswith(target + "."):  # a package's own modules
                graph[module].add(target)
    assert _cycle(graph) is None, _cycle(graph)


def test_subpackages_depend_on_each_other_without_cycles() -> None:
    """The layering, lazy imports included: a subpackage (or top-level module) never depends on one that depends
    on it."""
    modules = _modules()

    def unit(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:2])

    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        for name in _imports(path, module, top_level_only=False):
            target = _resolve(name, modules)
            if target and unit(target) != unit(module) and unit(target) != "evoray":
                graph[unit(module)].add(unit(target))
    assert _cycle(graph) is None, _cycle(graph)
