"""Reading telemetry into the store from files (`gpu-rca ingest`) and from Prometheus answers."""

from __future__ import annotations

from correlate.ingest.common import IngestOptions
from correlate.ingest.detect import Detection, Format, detect
from correlate.ingest.files import FileReport, IngestSummary, ingest_file, ingest_paths
from correlate.ingest.prometheus import SeriesSamples, samples_from_series

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
