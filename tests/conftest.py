"""Test-session settings shared by every test module."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import configuration

# Hypothesis keeps its example database and constants cache outside the checkout: a test run leaves
# nothing behind in the working tree.
configuration.set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "gpu-rca-hypothesis"))
