"""Writes a lab run as the files of docs/contracts.md §3: OTLP JSON traces and logs, Prometheus JSON, kernel log, truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from gpu_rca.lab.engine import LabRun
from gpu_rca.schemas.errors import InputError
from gpu_rca.schemas.otlp_json import message_to_json

BATCH = 256  # records per OTLP request line, like an exporter's batch
FILES = ("traces.otlp.jsonl", "logs.otlp.jsonl", "metrics.prom.jsonl", "kernel.log", "truth.json")


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def write_run(run: LabRun, out_dir: str | Path) -> list[Path]:
    """Write the five files into `out_dir` (created if needed) and return their paths."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder {out}: {exc.strerror or exc}") from exc
    paths = [out / name for name in FILES]
    traces = "".join(message_to_json(encode_spans(chunk)) + "\n" for chunk in _chunks(run.spans, BATCH))
    logs = "".join(message_to_json(encode_logs(chunk)) + "\n" for chunk in _chunks(run.logs, BATCH))
    metrics = "".join(json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n" for doc in run.metrics)
    kernel = "".join(line + "\n" for line in run.kernel_log)
    truth = json.dumps(run.truth, indent=2, sort_keys=True, allow_nan=False) + "\n"
    for path, text in zip(paths, (traces, logs, metrics, kernel, truth)):
        path.write_text(text, encoding="utf-8")
    return paths


__all__ = ["FILES", "write_run"]
