"""A reference DDColor colorization service instrumented end to end with gpu-rca (see docs/ddcolor.md)."""

from __future__ import annotations

from examples.ddcolor_service.app import AdvisorMode, ServiceConfig, create_app
from examples.ddcolor_service.backend import Colorized, Colorizer

__all__ = ["AdvisorMode", "Colorized", "Colorizer", "ServiceConfig", "create_app"]
