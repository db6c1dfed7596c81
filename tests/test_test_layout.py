"""The test tree's layout: test modules never import each other; what several of them share lives in
`tests/support/`. Every import counts, those inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import REPO

TESTS = REPO / "tests"


def _dotted(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


#: Every test module by its dotted name (`tests.test_store`, `tests.collector.test_collector_gpu`).
TEST_MODULES = {_dotted(path) for path in TESTS.rglob("test_*.py")}


def imported_test_modules(path: Path, source: str) -> list[str]:
    """The test modules that the Python file at `path` (under tests/) imports, as `line N: module`."""
    package = _dotted(path).rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = node.module or ""
            if node.level:
                module = f"{base}.{module}" if module else base
            # `from tests import test_store` imports a module; `from tests.test_store import UUID` its module
            names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.extend((node.lineno, name) for name in names if name in TEST_MODULES)
    return [f"line {line}: {name}" for line, name in sorted(found)]


def test_no_test_module_imports_another() -> None:
    offenders = {
        str(path.relative_to(REPO)): imports
        for path in sorted(TESTS.rglob("*.py"))
        if (imports := imported_test_modules(path, path.read_text(encoding="utf-8")))
    }
    assert offenders == {}, "move what these share into tests/support/ and import it from there"


def test_every_spelling_of_such_an_import_is_found() -> None:
    source = (
        "from tests.test_store import UUID\n"
        "import tests.test_ingest\n"
        "from tests import test_serve_errors, support\n"
        "from . import test_serve_queue\n"
        "from .collector.test_collector_gpu import sim\n"
        "from tests.support.otlp import UUID\n"
        "def later():\n"
        "    from tests.test_store_fast_path import row\n"
    )
    assert imported_test_modules(TESTS / "test_example.py", source) == [
        "line 1: tests.test_store",
        "line 2: tests.test_ingest",
        "line 3: tests.test_serve_errors",
        "line 4: tests.test_serve_queue",
        "line 5: tests.collector.test_collector_gpu",
        "line 8: tests.test_store_fast_path",
    ]
