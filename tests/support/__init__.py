"""Test helpers shared by the test modules (`tests.support.*`): where the repository, its fixtures and the
optional shared samples live, and the real binaries tests start. Test modules import helpers from here, never
from each other."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: The tests' own fixtures, written in the real formats (OOM texts, kernel logs, exporter scrapes, CSVs).
DATA = REPO / "tests" / "data"
#: `../shared` beside the checkout may hold verbatim samples from public sources; the tests that also check
#: those are extras that skip, saying why, where it is absent (every behaviour is covered by DATA).
SHARED = REPO.parent / "shared"


def data_file(name: str) -> Path:
    """Path of a fixture under tests/data (a missing one is an error, not a skip)."""
    path = DATA / name
    assert path.is_file(), f"fixture tests/data/{name} is missing"
    return path


def shared_sample(name: str) -> Path:
    """Path of a verbatim public sample under ../shared/facts/samples, or skip the extra check saying why."""
    path = SHARED / "facts" / "samples" / name
    if not path.is_file():
        pytest.skip(
            f"extra check against the verbatim sample ../shared/facts/samples/{name}, which is not beside this"
            " checkout; tests/data covers the behaviour"
        )
    return path


def require_binary(name: str) -> str:
    """Path of a system binary a test needs. Missing: skip on a laptop, fail under CI (CI installs it)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (Debian package; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
