"""`gpu-rca serve`: the OTLP/HTTP receiver and the correlator's HTTP API in front of one DuckDB store."""

from __future__ import annotations

from gpu_rca.correlate.server.app import ROUTE_MODULES, create_app
from gpu_rca.correlate.server.state import ServerConfig, ServerState
from gpu_rca.correlate.server.writer import QueueFull, Writer, WriterClosed

__all__ = ["ROUTE_MODULES", "QueueFull", "ServerConfig", "ServerState", "Writer", "WriterClosed", "create_app"]
