"""docs/contracts.md names what the code defines: causes, CLI verbs and options, stamps, routes, and more.

Each check reads the names from the code (the schemas, the click commands, the server's routes), so a name
added in code and not in the doc fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from starlette.routing import Route

from gpu_rca.cli import cli
from gpu_rca.correlate.server.app import routes
from gpu_rca.lab.profiles import PROFILES
from gpu_rca.lab.scenario import FAULT_KINDS, MODELS
from gpu_rca.schemas.attributes import STAMPS
from gpu_rca.schemas.causes import CAUSE_IDS
from gpu_rca.schemas.metrics import ALIASES, GPU_LABELS, METRICS
from gpu_rca.schemas.store import TABLES
from gpu_rca.schemas.throttle import THROTTLE_REASONS
from tests.support import REPO

DOC = REPO / "docs" / "contracts.md"


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _commands() -> list[tuple[str, click.Command]]:
    """(`gpu-rca VERB [SUB]`, command) for every leaf command of the CLI."""
    ctx = click.Context(cli)
    found: list[tuple[str, click.Command]] = []

    def walk(group: click.Group, prefix: str) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None
            if isinstance(command, click.Group):
                walk(command, f"{prefix} {name}")
            else:
                found.append((f"{prefix} {name}", command))

    walk(cli, "gpu-rca")
    return found


def _code_names(doc: str) -> set[str]:
    """Everything the doc writes as `code`."""
    return set(re.findall(r"`([^`\n]+)`", doc))


def test_the_doc_has_the_numbered_sections_the_code_cites(doc: str) -> None:
    numbers = [int(n) for n in re.findall(r"^## (\d+)\. ", doc, flags=re.MULTILINE)]
    assert numbers == list(range(1, 10))


def test_every_cause_id_is_in_the_catalog(doc: str) -> None:
    catalog = doc.split("## 4. ", 1)[1].split("\n## ", 1)[0]
    missing = [cause for cause in CAUSE_IDS if f"| `{cause}` |" not in catalog]
    assert not missing, f"causes missing from §4: {missing}"


def test_every_verb_and_each_of_its_options_is_named(doc: str) -> None:
    usage = doc.split("## 3. ", 1)[1].split("```", 2)[1]
    commands = _commands()
    assert len(commands) >= 9
    missing = []
    for path, command in commands:
        lines = [line for line in usage.splitlines() if line.startswith(path + " ") or line == path]
        if not lines:
            missing.append(path)
            continue
        # A verb's usage runs from its line to the next `gpu-rca` line.
        start = usage.index(lines[0])
        end = usage.find("\ngpu-rca ", start + 1)
        text = usage[start : end if end != -1 else None]
        for param in command.params:
            if isinstance(param, click.Option):
                missing.extend(f"{path} {opt}" for opt in param.opts + param.secondary_opts if opt not in text)
            elif param.name and param.name.upper().rstrip("S") not in text:  # PATHS is written PATH...
                missing.append(f"{path} {param.name.upper()}")
    assert not missing, f"not in §3's usage: {missing}"


def test_every_stamp_attribute_is_listed(doc: str) -> None:
    section = doc.split("## 1. ", 1)[1].split("\n## ", 1)[0]
    missing = [stamp.attribute for stamp in STAMPS if f"`{stamp.attribute}`" not in section]
    assert not missing, f"stamps missing from §1: {missing}"


def test_every_throttle_reason_is_listed(doc: str) -> None:
    names = _code_names(doc)
    assert not [name for name in THROTTLE_REASONS.values() if name not in names]
    assert not [f"{bit:#x}" for bit in THROTTLE_REASONS if f"{bit:#x}" not in names]


def test_every_metric_alias_and_label_is_listed(doc: str) -> None:
    names = _code_names(doc)
    wanted = [m.name for m in METRICS] + [a.name for a in ALIASES] + list(GPU_LABELS)
    assert not [name for name in wanted if name not in names]


def test_every_serve_route_is_listed(doc: str) -> None:
    section = doc.split("## 9. ", 1)[1].split("\n## ", 1)[0]
    missing = []
    for route in routes():
        assert isinstance(route, Route)
        method = "POST" if "POST" in (route.methods or ()) else "GET"
        if f"{method} {route.path}" not in section:
            missing.append(f"{method} {route.path}")
    assert not missing, f"routes missing from §9: {missing}"


def test_every_store_table_is_listed(doc: str) -> None:
    section = doc.split("## 7. ", 1)[1].split("\n## ", 1)[0]
    assert not [table for table in TABLES if f"| `{table}` |" not in section]


def test_every_fault_kind_gpu_profile_and_model_is_listed(doc: str) -> None:
    section = doc.split("## 5. ", 1)[1].split("\n## ", 1)[0]
    assert not [kind for kind in FAULT_KINDS if f"| `{kind}` |" not in section]
    assert not [name for name in (*PROFILES, *MODELS) if f"`{name}`" not in section]


def test_planned_names_are_not_claimed_as_code(doc: str) -> None:
    """A cause or fault kind the doc names only as planned must not be in the code yet (else move it up)."""
    planned = doc.split("## Planned", 1)[1]
    for name in re.findall(r"`([a-z_]+)`", planned):
        assert name not in CAUSE_IDS and name not in FAULT_KINDS, f"{name} is built: document it in its section"


# --- references into the doc ----------------------------------------------------------------------

#: Where product code, docs and benchmarks live (tests are scanned for contract numbers only).
_PRODUCT = (
    "collector",
    "correlate",
    "lab",
    "schemas",
    "scenarios",
    "gpu_rca",
    "benchmarks",
    "docs",
    "deploy",
    "examples",
)
_TOP_FILES = ("README.md", "pyproject.toml", "otel-collector.yaml", "docker-compose.yml")
_TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".json", ".html", ".cfg", ".ini", ""}
#: References to material outside the repository.
_OUTSIDE = re.compile(r"\.\./shared|shared/facts|facts/samples|DESIGN\.md|gpu-facts|ecosystem\.md|rca-methods")
#: The old way of citing a contract, whose definition was outside the repository.
_OLD_CITATION = re.compile(r"\bContracts? ?-?\d")
_SECTION = re.compile(r"contracts\.md ?§(\d+)")
_ANCHOR = re.compile(r"contracts\.md#([\w-]+)")


def _text_files(roots: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for root in roots:
        path = REPO / root
        if path.is_symlink():  # gpu_rca/<name> links to the top-level folders, scanned once
            continue
        candidates = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
        for candidate in candidates:
            parts = candidate.relative_to(REPO).parts
            if "__pycache__" in parts or any(p.is_symlink() for p in candidate.parents if REPO in p.parents):
                continue
            if candidate.suffix in _TEXT_SUFFIXES and candidate != DOC:
                files.append(candidate)
    return files


def _anchors(doc: str) -> set[str]:
    """GitHub's anchors for the doc's headings: lowercase, punctuation dropped, spaces as `-`."""
    headings = re.findall(r"^#{1,6} (.+)$", doc, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_no_product_file_or_doc_refers_outside_the_repository() -> None:
    found = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in _text_files(_PRODUCT + _TOP_FILES)
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if _OUTSIDE.search(line)
    ]
    assert not found, "references outside the repository (cite docs/contracts.md or the public source):\n" + "\n".join(
        found
    )


def test_every_contract_reference_names_a_section_the_doc_defines(doc: str) -> None:
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", doc, flags=re.MULTILINE)}
    anchors = _anchors(doc)
    problems = []
    for path in _text_files((*_PRODUCT, *_TOP_FILES, "tests")):
        if path == Path(__file__):
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            where = f"{path.relative_to(REPO)}:{n}"
            if _OLD_CITATION.search(line):
                problems.append(f"{where}: cite `docs/contracts.md §N`: {line.strip()}")
            problems.extend(f"{where}: no §{s}" for s in _SECTION.findall(line) if int(s) not in sections)
            problems.extend(f"{where}: no #{a}" for a in _ANCHOR.findall(line) if a not in anchors)
    assert not problems, "\n".join(problems)
