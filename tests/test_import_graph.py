"""The product's import graph, read from the source: no import circles, and the design's direction.

Module-level imports only (those that run when a module is first imported, `if TYPE_CHECKING:` blocks
included): an import inside a function runs later and cannot form a circle at import time.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import gpu_rca

ROOT = Path(gpu_rca.__file__).resolve().parent
#: The product's packages, each one folder under the `gpu_rca` namespace, and the CLI's.
PACKAGES = ("schemas", "collector", "correlate", "lab", "commands", "bench")
#: What each package may import of the project besides itself (DESIGN: schemas <- collector <- lab;
#: schemas <- correlate; the CLI above all).
ALLOWED = {
    "schemas": set(),
    "collector": {"schemas"},
    "correlate": {"schemas"},
    "lab": {"schemas", "collector"},
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    files = (Path(folder, file) for folder, _, names in os.walk(ROOT, followlinks=True) for file in names)
    for path in sorted(file for file in files if file.suffix == ".py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(("gpu_rca", *parts))] = path
    return found


MODULES = _modules()


def _module_level(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _module_level(block)


def _imports(name: str, path: Path) -> set[str]:
    """The project modules `name` imports at module level (a package's `__init__` only when named: every
    import runs its parents' first, and a submodule importing a sibling through its package is no circle)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _module_level(ast.parse(path.read_text(encoding="utf-8")).body):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = package
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        module = node.module or ""
        if node.level:
            module = f"{base}.{module}" if module else base
        for alias in node.names:  # `from package import module` imports the module; else the names' module
            targets.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module)
    return {target for target in targets if target in MODULES and target != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycle() -> list[str] | None:
    """One import circle (its modules in import order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_the_graph_is_read() -> None:
    assert "gpu_rca.collector._ring" in GRAPH["gpu_rca.collector._sampler"]
    assert "gpu_rca.schemas.errors" in GRAPH["gpu_rca.correlate.store.open"]
    assert {_package(m) for m in MODULES} >= set(PACKAGES)


def test_no_import_circles() -> None:
    cycle = _cycle()
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_imports_follow_the_design_direction() -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if _package(module) in ALLOWED
        for target in targets
        if _package(target) != _package(module) and _package(target) not in ALLOWED[_package(module)]
    )
    assert wrong == []
