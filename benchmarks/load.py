"""`gpu-rca serve` under many concurrent OTLP/HTTP clients for a bounded time: throughput, ack times, memory.

Each client is a keep-alive connection that posts SDK-encoded `ExportTraceServiceRequest`s of stamped
inference spans back to back until the time is up, as an OTel SDK or Collector does. An answer 503 (or 429)
is overload: the client waits `Retry-After` and sends the same request again, as OTLP exporters do. After the
run the store is read back and every acknowledged span must be there exactly once, and nothing from a
request that was never acknowledged.

- `concurrent`: `--clients` clients (default 32) against a server with `--queue-size` (default 16, below the
  client count, so overload and its 503s are part of the run);
- `single`: the baseline, one client against a fresh server, the same batches: what the server does with no
  concurrency at all.

Reported: acknowledged spans/s held over the run, p50/p99 acknowledgement time of accepted requests (POST to
200, i.e. after commit) and of whole requests including their retries, 503 answers, and the server's peak
resident memory (VmHWM) against its memory when idle.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from benchmarks._cli import emit, parse, parser_for
from benchmarks.ingest import make_payloads

PROTOBUF = {"Content-Type": "application/x-protobuf"}
#: Retrying a refused request stops this long after the run's end, so a run always ends.
GRACE_S = 30.0


@dataclass
class LoadReport:
    """What one load run saw from the clients' side and found in the store afterwards."""

    clients: int
    seconds: float
    spans_per_request: int
    acked: dict[int, int] = field(default_factory=dict)  # batch number -> spans acknowledged
    unacked: list[int] = field(default_factory=list)  # batches given up on (never acknowledged)
    ack_s: list[float] = field(default_factory=list)  # accepted attempts: POST to 200
    request_s: list[float] = field(default_factory=list)  # first attempt to 200, retries included
    statuses: Counter[int] = field(default_factory=Counter)
    retry_after_missing: int = 0
    errors: list[str] = field(default_factory=list)
    stored: dict[int, int] = field(default_factory=dict)  # batch number -> spans found in the store
    duplicates: int = 0
    server_exit: int | None = None
    idle_rss_kib: int = 0
    peak_rss_kib: int = 0

    @property
    def acked_spans(self) -> int:
        """Spans the server acknowledged."""
        return sum(self.acked.values())

    @property
    def exactly_once(self) -> bool:
        """Every acknowledged span stored once, nothing else stored, no duplicate rows."""
        return self.stored == self.acked and self.duplicates == 0

    def percentile_ms(self, values: list[float], q: float) -> float | None:
        """The q-quantile (0..1) of `values` in milliseconds, nearest-rank; None when empty."""
        if not values:
            return None
        ordered = sorted(values)
        return round(1000 * ordered[max(0, math.ceil(q * len(ordered)) - 1)], 1)


class BatchSource:
    """Distinct copies of one template request: batch n's spans get trace ids beginning with n (16 hex)."""

    def __init__(self, spans_per_request: int) -> None:
        self.template = ExportTraceServiceRequest.FromString(make_payloads(1, spans_per_request)[0])
        self.spans_per_request = spans_per_request
        self._next = 0
        self._lock = threading.Lock()

    def take(self) -> tuple[int, bytes]:
        """(batch number, serialized request) for a batch never handed out before."""
        with self._lock:
            self._next += 1
            number = self._next
        request = ExportTraceServiceRequest()
        request.CopyFrom(self.template)
        for position, span in enumerate(request.resource_spans[0].scope_spans[0].spans):
            span.trace_id = number.to_bytes(8, "big") + (position + 1).to_bytes(8, "big")
            span.span_id = (position + 1).to_bytes(8, "big")
        return number, request.SerializeToString()


def _client(url: str, source: BatchSource, stop_at: float, report: LoadReport, lock: threading.Lock) -> None:
    import httpx

    give_up_at = stop_at + GRACE_S
    with httpx.Client(timeout=120) as client:
        while time.monotonic() < stop_at:
            number, payload = source.take()
            first = time.monotonic()
            while True:
                sent = time.monotonic()
                try:
                    response = client.post(url, content=payload, headers=PROTOBUF)
                except httpx.HTTPError as exc:  # no answer: the batch may or may not be stored
                    with lock:
                        report.errors.append(f"batch {number}: {type(exc).__name__}: {exc}")
                        report.unacked.append(number)
                    return
                done = time.monotonic()
                with lock:
                    report.statuses[response.status_code] += 1
                if response.status_code == 200:
                    with lock:
                        report.acked[number] = source.spans_per_request
                        report.ack_s.append(done - sent)
                        report.request_s.append(done - first)
                    break
                if response.status_code in (429, 503):
                    retry_after = response.headers.get("retry-after")
                    if retry_after is None:
                        with lock:
                            report.retry_after_missing += 1
                    if done >= give_up_at:
                        with lock:
                            report.unacked.append(number)
                        break
                    time.sleep(float(retry_after or 1))
                    continue
                with lock:
                    report.errors.append(f"batch {number}: HTTP {response.status_code}: {response.content[:200]!r}")
                    report.unacked.append(number)
                break


def _rss_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def drive_load(
    db: Path,
    *,
    clients: int,
    seconds: float,
    spans_per_request: int,
    queue_size: int,
    server_args: tuple[str, ...] = (),
) -> LoadReport:
    """Run `clients` OTLP clients against a fresh `gpu-rca serve` on `db` for `seconds`, then read the store."""
    import duckdb

    from gpu_rca.correlate.server.process import ServeProcess

    report = LoadReport(clients=clients, seconds=seconds, spans_per_request=spans_per_request)
    source = BatchSource(spans_per_request)
    lock = threading.Lock()
    with ServeProcess(db, args=["--queue-size", str(queue_size), *server_args]) as server:
        report.idle_rss_kib = _rss_kib(server.process.pid, "VmRSS")
        stop_at = time.monotonic() + seconds
        threads = [
            threading.Thread(target=_client, args=(f"{server.url}/v1/traces", source, stop_at, report, lock))
            for _ in range(clients)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        report.seconds = time.monotonic() - started
        report.peak_rss_kib = _rss_kib(server.process.pid, "VmHWM")
        report.server_exit = server.stop()
        if report.server_exit != 0:
            report.errors.append(f"serve exited {report.server_exit}: {server.stderr[-500:]}")
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT substr(trace_id, 1, 16), count(*) FROM spans GROUP BY 1").fetchall()
        total, distinct = con.execute("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans").fetchone()
    report.stored = {int(prefix, 16): count for prefix, count in rows}
    report.duplicates = total - distinct
    return report


def summarize(report: LoadReport) -> dict[str, Any]:
    """The figures of one run, JSON-ready."""
    return {
        "clients": report.clients,
        "seconds": round(report.seconds, 2),
        "requests_acked": len(report.acked),
        "spans_acked": report.acked_spans,
        "spans_per_s": round(report.acked_spans / report.seconds),
        "ack_p50_ms": report.percentile_ms(report.ack_s, 0.50),
        "ack_p99_ms": report.percentile_ms(report.ack_s, 0.99),
        "request_p99_ms": report.percentile_ms(report.request_s, 0.99),
        "answers": {str(code): n for code, n in sorted(report.statuses.items())},
        "retry_after_missing": report.retry_after_missing,
        "unacked_batches": len(report.unacked),
        "exactly_once": report.exactly_once,
        "server_exit": report.server_exit,
        "server_idle_rss_mib": round(report.idle_rss_kib / 1024, 1),
        "server_peak_rss_mib": round(report.peak_rss_kib / 1024, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"concurrent": [], "single": []}
    for _ in range(args.repeats):
        for name, clients in (("concurrent", args.clients), ("single", 1)):
            with tempfile.TemporaryDirectory(prefix="gpu-rca-load-") as tmp:
                report = drive_load(
                    Path(tmp) / "load.duckdb",
                    clients=clients,
                    seconds=args.seconds,
                    spans_per_request=args.spans_per_request,
                    queue_size=args.queue_size,
                )
            if not report.exactly_once or report.errors:
                raise RuntimeError(f"{name}: exactly_once={report.exactly_once}, errors: {report.errors[:3]}")
            runs[name].append(summarize(report))

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    results: dict[str, Any] = {
        "spans_per_request": args.spans_per_request,
        "queue_size": args.queue_size,
        "seconds": args.seconds,
        "repeats": args.repeats,
    }
    for name in runs:
        for key in ("spans_per_s", "ack_p50_ms", "ack_p99_ms", "request_p99_ms", "server_peak_rss_mib"):
            results[f"{name}_{key}"] = median(name, key)
        results[f"{name}_runs"] = runs[name]
    return {
        "name": "load",
        "results": results,
        "ratios": {
            "throughput_concurrent_vs_single": round(
                median("concurrent", "spans_per_s") / median("single", "spans_per_s"), 3
            ),
            "ack_p99_concurrent_vs_single": round(
                median("concurrent", "ack_p99_ms") / median("single", "ack_p99_ms"), 3
            ),
        },
    }


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = parser_for("load", __doc__)
    parser.add_argument("--clients", type=int, default=32, help="concurrent OTLP clients (default 32)")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long the clients send (default 15)")
    parser.add_argument(
        "--spans-per-request",
        type=int,
        default=512,
        help="stamped spans per request (default 512, the OTel SDK's batch size)",
    )
    parser.add_argument("--queue-size", type=int, default=16, help="the server's --queue-size (default 16)")
    args = parse(parser, argv, "clients", "spans_per_request", "queue_size")
    if args.seconds <= 0:
        parser.error("sizes must be positive")
    return args


def main(argv: list[str]) -> int:
    args = _parse(argv)
    return emit(run(args), args.json, _render)


def _render(report: dict[str, Any]) -> None:
    r, ratios = report["results"], report["ratios"]
    clients = r["concurrent_runs"][-1]["clients"]
    print(
        f"load: {clients} clients vs 1, {r['spans_per_request']} stamped spans per request, "
        f"{r['seconds']:g} s each, server queue {r['queue_size']}, median of {r['repeats']}"
    )
    for name in ("concurrent", "single"):
        answers = ", ".join(f"{code}: {n}" for code, n in r[f"{name}_runs"][-1]["answers"].items())
        print(
            f"  {name:<10} {r[f'{name}_spans_per_s']:>8,.0f} spans/s  ack p50 {r[f'{name}_ack_p50_ms']} ms  "
            f"p99 {r[f'{name}_ack_p99_ms']} ms  (with retries p99 {r[f'{name}_request_p99_ms']} ms)  "
            f"peak RSS {r[f'{name}_server_peak_rss_mib']} MiB  answers {{{answers}}}"
        )
    print("  every acknowledged span stored exactly once: yes")
    print(f"  throughput concurrent / single = {ratios['throughput_concurrent_vs_single']:.3f}")
    print(f"  ack p99 concurrent / single    = {ratios['ack_p99_concurrent_vs_single']:.3f}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
