"""Test helpers shared by the test modules (`tests.support.*`): where the repository and the optional
shared samples live, and the real binaries tests start. Test modules import helpers from here, never
from each other."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: `../shared` beside the checkout holds real samples; tests that read it skip cleanly where it is absent.
SHARED = REPO.parent / "shared"


def shared_sample(name: str) -> Path:
    """Path of a real sample under ../shared/facts/samples, or skip the test."""
    path = SHARED / "facts" / "samples" / name
    if not path.is_file():
        pytest.skip(f"shared sample {name} not present")
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
