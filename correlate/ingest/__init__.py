"""Reading telemetry into the store from files (`gpu-rca ingest`) and from Prometheus answers."""

from __future__ import annotations

from gpu_rca.correlate.ingest.detect import Detection, Format, detect
from gpu_rca.correlate.ingest.files import FileReport, IngestSummary, ingest_file, ingest_paths
from gpu_rca.correlate.prometheus.files import SeriesSamples, samples_from_series
from gpu_rca.correlate.readers.common import IngestOptions

__all__ = [
    "Detection",
    "FileReport",
    "Format",
    "IngestOptions",
    "IngestSummary",
    "SeriesSamples",
    "detect",
    "ingest_file",
    "ingest_paths",
    "samples_from_series",
]
