"""Each GPU's record across incidents (stored digests) and its hardware history: `gpu-rca gpus`, `GET /gpus`."""

from __future__ import annotations

from gpu_rca.correlate.history.incidents import Incident, earlier_incidents, incidents_by_gpu
from gpu_rca.correlate.history.ledger import GpuHistory, Ledger, gpu_ledger

__all__ = ["GpuHistory", "Incident", "Ledger", "earlier_incidents", "gpu_ledger", "incidents_by_gpu"]
