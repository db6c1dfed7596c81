"""`gpu-rca ingest` of OTLP files (JSON lines and length-prefixed protobuf) beside the obvious way to do it.

- `files_json` / `files_proto`: `correlate.ingest.ingest_paths` into a fresh DuckDB file: format detection,
  one transaction per file, rows built column by column and inserted as Arrow;
- `baseline_json`: what a first version would do with the same JSON file: protobuf's JSON parser per
  line, then one parameterised `INSERT` per span (`executemany`) into a table of the same span columns.

Spans are the same SDK-encoded, fully stamped inference spans as `python -m benchmarks ingest` uses.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._cli import emit, parse, parser_for
from benchmarks.ingest import make_payloads


def write_files(payloads: list[bytes], folder: Path) -> tuple[Path, Path]:
    """The payloads as an OTLP/JSON lines file and as a length-prefixed protobuf file."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from gpu_rca.schemas.otlp_json import message_to_json

    json_path, proto_path = folder / "traces.otlp.jsonl", folder / "traces.otlp.pb"
    with json_path.open("w") as text, proto_path.open("wb") as binary:
        for payload in payloads:
            text.write(message_to_json(ExportTraceServiceRequest.FromString(payload)) + "\n")
            binary.write(len(payload).to_bytes(4, "big") + payload)
    return json_path, proto_path


def time_files(path: Path, db: Path) -> tuple[float, int]:
    """(seconds for `ingest_paths` of one file into a fresh store, spans stored)."""
    from gpu_rca.correlate.ingest import ingest_paths
    from gpu_rca.correlate.store import Store

    with Store(db) as store:
        started = time.perf_counter()
        summary = ingest_paths(store, [path], progress=False)
        elapsed = time.perf_counter() - started
    report = summary.files[0]
    if report.status != "ingested":
        raise RuntimeError(f"{path.name}: {report.status}: {report.reason}")
    return elapsed, report.stored


def time_baseline(path: Path, db: Path) -> tuple[float, int]:
    """(seconds for the per-line protobuf JSON parse + per-span INSERT baseline, spans stored)."""
    import duckdb
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from gpu_rca.correlate.otlp.decode import key_values
    from gpu_rca.schemas import attributes as a
    from gpu_rca.schemas.otlp_json import message_from_json

    stamps = [(st.attribute, st.column) for st in a.STAMPS]
    columns = ["trace_id", "span_id", "name", "start_ns", "end_ns", *(c for _, c in stamps), "attributes"]
    types = {c: st.sql_type for c, st in zip((c for _, c in stamps), a.STAMPS)}
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TABLE spans (trace_id VARCHAR, span_id VARCHAR, name VARCHAR, start_ns BIGINT, end_ns BIGINT, "
        + ", ".join(f"{c} {types[c]}" for _, c in stamps)
        + ", attributes JSON, PRIMARY KEY (trace_id, span_id))"
    )
    insert = f"INSERT OR IGNORE INTO spans ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    started = time.perf_counter()
    con.begin()
    with path.open() as lines:
        for line in lines:
            request = message_from_json(line, ExportTraceServiceRequest)
            rows = []
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        attrs = key_values(span.attributes)
                        rows.append(
                            [
                                span.trace_id.hex(),
                                span.span_id.hex(),
                                span.name,
                                span.start_time_unix_nano,
                                span.end_time_unix_nano,
                                *(attrs.pop(attr, None) for attr, _ in stamps),
                                json.dumps(attrs),
                            ]
                        )
            con.executemany(insert, rows)
    con.commit()
    elapsed = time.perf_counter() - started
    stored = con.execute("SELECT count(*) FROM spans").fetchone()[0]
    con.close()
    return elapsed, stored


def run(args: argparse.Namespace) -> dict[str, Any]:
    payloads = make_payloads(args.requests, args.spans_per_request)
    spans = args.requests * args.spans_per_request
    rates: dict[str, list[float]] = {"files_json": [], "files_proto": [], "baseline_json": []}
    sizes: dict[str, int] = {}
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="gpu-rca-bench-") as tmp:
            folder = Path(tmp)
            json_path, proto_path = write_files(payloads, folder)
            sizes = {"json_bytes": json_path.stat().st_size, "proto_bytes": proto_path.stat().st_size}
            for name, runner, path in (
                ("files_json", time_files, json_path),
                ("files_proto", time_files, proto_path),
                ("baseline_json", time_baseline, json_path),
            ):
                elapsed, stored = runner(path, folder / f"{name}.duckdb")
                if stored != spans:
                    raise RuntimeError(f"repeat {repeat}: {name} stored {stored} of {spans} spans")
                rates[name].append(spans / elapsed)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {
        "name": "ingest-files",
        "results": {
            "spans": spans,
            "repeats": args.repeats,
            **sizes,
            **{f"{name}_spans_per_s": round(value) for name, value in medians.items()},
        },
        "ratios": {
            "files_json_vs_baseline_json": round(medians["files_json"] / medians["baseline_json"], 2),
            "files_proto_vs_files_json": round(medians["files_proto"] / medians["files_json"], 2),
        },
    }


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = parser_for("ingest-files", __doc__)
    # The baseline stores ~50 spans/s here, so the default file stays small.
    parser.add_argument("--requests", type=int, default=2, help="lines (requests) per file (default 2)")
    parser.add_argument("--spans-per-request", type=int, default=512, help="inference spans per line (512)")
    return parse(parser, argv, "requests", "spans_per_request")


def main(argv: list[str]) -> int:
    args = _parse(argv)
    return emit(run(args), args.json, _render)


def _render(report: dict[str, Any]) -> None:
    r, ratios = report["results"], report["ratios"]
    print(
        f"ingest-files: {r['spans']} stamped spans per file (JSON {r['json_bytes']:,} B, "
        f"protobuf {r['proto_bytes']:,} B), median of {r['repeats']}"
    )
    for name in ("files_json", "files_proto", "baseline_json"):
        print(f"  {name:<14} {r[f'{name}_spans_per_s']:>9,} spans/s")
    print(f"  files_json / baseline_json = {ratios['files_json_vs_baseline_json']}x")
