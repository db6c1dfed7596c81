"""`gpu-rca ingest`: walk paths, detect each file's format, store each file in one transaction, report."""

from __future__ import annotations

import gzip
import os
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpu_rca.correlate.ingest.detect import Format, detect
from gpu_rca.correlate.ingest.loguru_files import read_loguru
from gpu_rca.correlate.kernel_log.files import read_kernel_log
from gpu_rca.correlate.otlp.files import read_otlp_json, read_otlp_proto
from gpu_rca.correlate.prometheus.files import read_exposition, read_query_range
from gpu_rca.correlate.readers.common import FileCounts, IngestOptions
from gpu_rca.correlate.readers.opening import Opened
from gpu_rca.correlate.store import Store
from gpu_rca.correlate.store.records import traces_without_inference_message
from gpu_rca.schemas.errors import InputError, StoreError

Reader = Callable[[Opened, Store, IngestOptions], FileCounts]
READERS: dict[Format, Reader] = {
    Format.OTLP_JSON: read_otlp_json,
    Format.OTLP_PROTO: read_otlp_proto,
    Format.PROMETHEUS_QUERY_RANGE: read_query_range,
    Format.PROMETHEUS_TEXT: read_exposition,
    Format.LOGURU_JSON: read_loguru,
    Format.KERNEL_LOG: read_kernel_log,
}
#: Inputs larger than this (bytes on disk) get a progress bar when stderr is a terminal.
PROGRESS_MIN_BYTES = 8 * 1024 * 1024

INGESTED, SKIPPED, FAILED = "ingested", "skipped", "failed"


@dataclass(frozen=True)
class FileReport:
    """What happened to one file: its format, rows stored, and why it was skipped or failed."""

    path: str
    status: str  # ingested | skipped | failed
    format: str | None = None
    compression: str | None = None
    kind: str = ""
    accepted: int = 0
    stored: int = 0
    rejected: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    notes: tuple[str, ...] = ()
    traces_without_inference: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def duplicates(self) -> int:
        """Valid rows that were already in the store."""
        return self.accepted - self.stored

    def as_dict(self) -> dict[str, Any]:
        """One file in `gpu-rca ingest --json`."""
        return {
            "path": self.path,
            "status": self.status,
            "format": self.format,
            "compression": self.compression,
            "kind": self.kind or None,
            "stored": self.stored,
            "already_stored": self.duplicates,
            "rejected": self.rejected,
            "skipped": dict(self.skipped),
            "reason": self.reason or None,
            "notes": list(self.notes),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class IngestSummary:
    """Every file's report, in the order read."""

    files: tuple[FileReport, ...]

    @property
    def failed(self) -> tuple[FileReport, ...]:
        """Files that were telemetry but could not be read (nothing of them stored)."""
        return tuple(f for f in self.files if f.status == FAILED)

    @property
    def traces_without_inference(self) -> int:
        """Traces in the files read that hold no inference span (no span carries gpu.telemetry.source)."""
        return sum(f.traces_without_inference for f in self.files)

    def as_dict(self, db_path: str) -> dict[str, Any]:
        """`gpu-rca ingest --json`: every file's outcome, totals by kind, and the run's warnings."""
        totals: dict[str, int] = {}
        warnings: list[str] = []
        for report in self.files:
            if report.status == INGESTED:
                totals[report.kind] = totals.get(report.kind, 0) + report.stored
            warnings += [f"{report.path}: {w}" for w in report.warnings]
        if self.traces_without_inference:
            warnings.append(traces_without_inference_message(self.traces_without_inference))
        return {
            "db": db_path,
            "files": [report.as_dict() for report in self.files],
            "stored": totals,
            "ingested": sum(1 for f in self.files if f.status == INGESTED),
            "skipped": sum(1 for f in self.files if f.status == SKIPPED),
            "failed": len(self.failed),
            "traces_without_inference_span": self.traces_without_inference,
            "warnings": warnings,
        }

    @property
    def exit_code(self) -> int:
        """1 when any file failed, else 0 (docs/contracts.md §3)."""
        return 1 if self.failed else 0


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Files named, and every file under folders named (sorted; hidden names inside folders are ignored)."""
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name
        elif path.exists():
            yield path
        else:
            raise InputError(f"{path}: no such file or folder")


def ingest_file(
    store: Store, path: Path, options: IngestOptions = IngestOptions(), on_bytes: Callable[[int], object] | None = None
) -> FileReport:
    """Detect and store one file in one transaction: a malformed file stores nothing and reports why."""
    name = str(path)
    fmt: Format | None = None
    try:
        with Opened(path, max_bytes=options.max_bytes, on_bytes=on_bytes) as opened:
            detection = detect(opened.head)
            fmt = detection.format
            if fmt is None:
                return FileReport(name, SKIPPED, compression=opened.compression, reason=detection.reason)
            with store.transaction():
                counts = READERS[fmt](opened, store, options)
    except (InputError, StoreError) as exc:
        reason = str(exc)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        reason = f"truncated or corrupt gzip data ({exc})"
    except OSError as exc:
        reason = f"cannot read: {exc.strerror or exc}"
    except Exception as exc:
        if type(exc).__name__ != "ZstdError":  # zstandard is imported lazily, so match its error by name
            raise
        reason = f"truncated or corrupt zstd data ({exc})"
    else:
        return FileReport(
            name,
            INGESTED,
            fmt.value,
            opened.compression,
            counts.kind,
            counts.accepted,
            counts.stored,
            counts.rejected,
            dict(counts.skipped),
            notes=tuple(counts.notes),
            traces_without_inference=counts.traces_without_inference,
            warnings=tuple(counts.warnings),
        )
    return FileReport(name, FAILED, fmt.value if fmt else None, reason=reason)


def _store_files(store: Store) -> set[Path]:
    """The database being written (and its WAL): a folder that holds it must not be read into itself."""
    if store.path == ":memory:":
        return set()
    path = Path(store.path).resolve()
    return {path, path.with_name(path.name + ".wal")}


def ingest_paths(
    store: Store,
    paths: Iterable[str | os.PathLike[str]],
    options: IngestOptions = IngestOptions(),
    *,
    progress: bool | None = None,
) -> IngestSummary:
    """Ingest every file under `paths`; `progress` None shows a bar on a terminal for large inputs."""
    own = _store_files(store)
    files = [f for f in iter_files(paths) if f.resolve() not in own]
    total = sum(f.stat().st_size for f in files)
    show = progress if progress is not None else (sys.stderr.isatty() and total >= PROGRESS_MIN_BYTES)
    from tqdm import tqdm

    reports = []
    with tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr, disable=not show, leave=False) as bar:
        for path in files:
            bar.set_postfix_str(path.name, refresh=False)
            reports.append(ingest_file(store, path, options, on_bytes=bar.update))
    return IngestSummary(tuple(reports))


__all__ = ["READERS", "FileReport", "IngestSummary", "ingest_file", "ingest_paths", "iter_files"]
