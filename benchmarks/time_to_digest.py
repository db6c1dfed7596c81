"""Time from the first failure of a burst to its digest on `serve`'s page and at the webhook, end to end.

Each burst is independent: a fresh `gpu-rca serve` subprocess (its own store, default settings, the
webhook set with `$GPU_RCA_NOTIFY_URL`) and a fresh live lab fleet (`lab/live.py`) at speed 1 sending its
spans and logs over OTLP/HTTP as they happen (the OTel SDK's `BatchSpanProcessor` with its default 5 s
schedule). The fleet serves `--rate` requests a second on 4 L4 GPUs; after `--warmup` seconds (plus a random
part of the batch schedule) of healthy traffic one GPU falls off the bus, so every request it serves fails.
The fleet starts a random part of the burst-check interval after the server, so the three clocks are out of
step as in a server that has run a while. Measured, in wall-clock time:

- `first failure`: the end of the burst's first failed inference span (recorded in the fleet's process);
- `qualifying failure`: the end of its `MIN_FAILED`-th (from then the burst rule holds);
- `delivered`: when the fleet's exporter had delivered that many failed spans to `serve` (acknowledged);
- `checked`: when as many failed spans as the digest counts had been delivered (the burst check that made it
  ran after this), and `created`: the digest's own `created_at`;
- `page`: when `GET /digests` first lists a burst digest (polled every `--poll` seconds);
- `webhook`: when a local receiver got the digest's POST.

Unless `--cold`, a manual digest (`POST /digests`) during the warm-up loads the digest code and plotting
first, as in a server that has been up a while. Reported: time to page and to webhook from the first and from the qualifying failure, over `--bursts` bursts
(p50, p90, max).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, SynchronousMultiSpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from benchmarks import _cli
from gpu_rca.correlate.digest.burst import MIN_FAILED
from gpu_rca.correlate.digest.notify import NOTIFY_URL_ENV
from gpu_rca.correlate.server.digests import BURST_INTERVAL_S
from gpu_rca.correlate.server.process import ServeProcess
from gpu_rca.lab.live import LiveFleet
from gpu_rca.lab.scenario import load_scenario
from gpu_rca.schemas import attributes as A

SCENARIO = """\
name: burst-{seed}
seed: {seed}
duration: 30m
fleet:
  - {{host: node-a, gpus: 2, model: L4}}
  - {{host: node-b, gpus: 2, model: L4}}
workload:
  rate: {rate}/s
  input_size: {{512: 0.7, 768: 0.3}}
  task_type: {{person: 0.6, building: 0.25, landscape: 0.15}}
  model: {{ddcolor_paper_tiny: 0.7, ddcolor_paper: 0.3}}
faults:
  - {{kind: gpu_lost, gpu: node-b/1, start: {warmup}s}}
truth: {{cause: gpu_fallen_off_bus}}
"""


def _failed_inference(span: ReadableSpan) -> bool:
    """A failed inference span (it carries `gpu.telemetry.source`), what the burst rule counts; the spans
    around it in its trace fail with it and are not counted."""
    return span.status.status_code is StatusCode.ERROR and A.TELEMETRY_SOURCE in (span.attributes or {})


#: The OTel SDK's default `BatchSpanProcessor` schedule (OTEL_BSP_SCHEDULE_DELAY, 5000 ms).
BSP_SCHEDULE_S = 5.0


class FailureClock(SpanProcessor):
    """Records when failed spans were ended, in wall time. (Not their `end_time`: the live engine advances
    its scaled clock in ticks, so a span's stamped end can lie up to a tick or so ahead of the wall clock.)"""

    def __init__(self) -> None:
        self.ends: list[int] = []
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        if _failed_inference(span):
            ended = time.time_ns()
            with self._lock:
                self.ends.append(ended)

    def nth(self, n: int) -> int | None:
        """The end of the n-th failure (1-based, in time order), or None before it happened."""
        with self._lock:
            ends = sorted(self.ends)
        return ends[n - 1] if len(ends) >= n else None


class DeliveryClock(SpanExporter):
    """The OTLP span exporter, noting when each batch holding failed spans was delivered (acknowledged)."""

    def __init__(self, inner: SpanExporter, deliveries: list[tuple[int, int]]) -> None:
        self.inner = inner
        self.deliveries = deliveries

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        failed = sum(1 for span in spans if _failed_inference(span))
        if failed and result is SpanExportResult.SUCCESS:
            self.deliveries.append((time.time_ns(), failed))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _Fleet(LiveFleet):
    """The live fleet with a `FailureClock` beside each host's OTLP exporter (a `BatchSpanProcessor` with the
    SDK's default settings, as `LiveFleet` makes it), whose deliveries are noted."""

    failures: ClassVar[FailureClock] = FailureClock()
    deliveries: ClassVar[list[tuple[int, int]]] = []

    @staticmethod
    def _otlp_processors(endpoint: str) -> tuple[Any, Any]:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        _, logs = LiveFleet._otlp_processors(endpoint)

        def both() -> SynchronousMultiSpanProcessor:
            exporter = DeliveryClock(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"), _Fleet.deliveries)
            multi = SynchronousMultiSpanProcessor()
            multi.add_span_processor(_Fleet.failures)
            multi.add_span_processor(BatchSpanProcessor(exporter))
            return multi

        return both, logs

    def delivered(self, n: int) -> int | None:
        """When the n-th failed span had been delivered to the server (wall ns), or None."""
        total = 0
        for arrived, failed in sorted(self.deliveries):
            total += failed
            if total >= n:
                return arrived
        return None


class Receiver:
    """A webhook receiver on a free loopback port: when each POST arrived (wall ns) and its body."""

    def __init__(self) -> None:
        self.posts: list[tuple[int, bytes]] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.time_ns()
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                posts.append((arrived, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _burst_digests(url: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(f"{url}/digests", headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        rows = json.loads(response.read())["digests"]
    return [row for row in rows if row.get("trigger") == "burst"]


def _iso_ns(text: str) -> int:
    """Wall ns of the server's `created_at` (`2026-12-03T12:40:10.393Z`)."""
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1e9)


def _manual_digest(url: str) -> None:
    """POST /digests over the traffic so far (its answer does not matter: a healthy window has no causes)."""
    request = urllib.request.Request(f"{url}/digests", data=b"{}", method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
    except urllib.error.HTTPError:
        pass


def one_burst(args: argparse.Namespace, seed: int, receiver: Receiver, workdir: Path) -> dict[str, Any]:
    """One burst on a fresh server and fleet: the four instants (wall ns; None when not seen in time)."""
    receiver.posts.clear()
    _Fleet.failures = FailureClock()
    _Fleet.deliveries = []
    scenario_path = workdir / f"burst-{seed}.yaml"
    # The fleet's batch timer, the server's burst check and the fault each tick or start on their own clock; in
    # a server that has run a while their phases are unrelated. Started together they would lock in step, so
    # the fleet starts a random part of a check interval after the server, and the fault a random part of a
    # batch interval after the warm-up.
    rng = random.Random(seed)
    fleet_lag_s = rng.uniform(0.0, BURST_INTERVAL_S)
    fault_at_s = args.warmup + rng.uniform(0.0, BSP_SCHEDULE_S)
    scenario_path.write_text(SCENARIO.format(seed=seed, rate=args.rate, warmup=f"{fault_at_s:.3f}"))
    env = {**os.environ, NOTIFY_URL_ENV: receiver.url}
    result: dict[str, Any] = {
        "seed": seed,
        "first": None,
        "qualifying": None,
        "delivered": None,
        "checked": None,
        "created": None,
        "page": None,
        "webhook": None,
    }
    with ServeProcess(workdir / f"burst-{seed}.duckdb", env=env) as server:
        fleet = _Fleet(load_scenario(scenario_path), otlp_endpoint=server.url, sample_hz=2.0)
        time.sleep(fleet_lag_s)
        fleet.start()
        try:
            if not args.cold:
                # A server that has been up a while has made a digest before: its digest code and plotting
                # are loaded. One manual digest during the warm-up does that here.
                time.sleep(min(args.warmup / 2, 6.0))
                _manual_digest(server.url)
            deadline = time.monotonic() + fault_at_s + args.timeout
            while time.monotonic() < deadline and (result["page"] is None or result["webhook"] is None):
                if result["page"] is None:
                    listed = _burst_digests(server.url)
                    if listed:
                        result["page"] = time.time_ns()
                        result["digest_row"] = listed[0]
                if result["webhook"] is None:
                    burst_posts = [arrived for arrived, body in receiver.posts if b"(burst)" in body]
                    result["webhook"] = burst_posts[0] if burst_posts else None
                time.sleep(args.poll)
        finally:
            fleet.stop()
        result["first"] = _Fleet.failures.nth(1)
        result["qualifying"] = _Fleet.failures.nth(MIN_FAILED)
        result["delivered"] = fleet.delivered(MIN_FAILED)
        row = result.pop("digest_row", None)
        if row is not None:
            # The burst check saw the digest's failed spans: it ran after that many had been delivered.
            result["checked"] = fleet.delivered(int(row["failed_spans"]))
            result["created"] = _iso_ns(row["created_at"])
        result["errors"] = [line for line in server.stderr_lines if "Traceback" in line or "ERROR" in line][:3]
    return result


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "max": None}
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]

    return {"p50": round(q(0.5), 2), "p90": round(q(0.9), 2), "max": round(ordered[-1], 2)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    receiver = Receiver()
    bursts = []
    try:
        with tempfile.TemporaryDirectory(prefix="time-to-digest-") as tmp:
            for i in range(args.bursts):
                bursts.append(one_burst(args, 1000 + i, receiver, Path(tmp)))
    finally:
        receiver.close()
    series: dict[str, list[float]] = {}
    for start, end in (
        ("qualifying", "delivered"),
        ("delivered", "checked"),
        ("checked", "created"),
        ("created", "page"),
        ("delivered", "page"),
        ("delivered", "webhook"),
    ):
        series[f"{start}_to_{end}_s"] = [
            (b[end] - b[start]) / 1e9 for b in bursts if b[start] is not None and b[end] is not None
        ]
    for start in ("first", "qualifying"):
        for end in ("page", "webhook"):
            series[f"{start}_to_{end}_s"] = [
                (b[end] - b[start]) / 1e9 for b in bursts if b[start] is not None and b[end] is not None
            ]
    missed = sum(1 for b in bursts if b["page"] is None or b["webhook"] is None)
    worst = max(series["first_to_webhook_s"] + series["first_to_page_s"], default=math.inf)
    results: dict[str, Any] = {
        "bursts": args.bursts,
        "completed": args.bursts - missed,
        "rate_per_s": args.rate,
        "warmup_s": args.warmup,
        "cold": args.cold,
        "min_failed": MIN_FAILED,
        **{f"{name}_{stat}": value for name, values in series.items() for stat, value in _stats(values).items()},
        "within_10_s": bool(missed == 0 and worst <= 10.0),
        "per_burst": [
            {
                "first_to_page_s": _delta(b, "first", "page"),
                "first_to_webhook_s": _delta(b, "first", "webhook"),
                "first_to_qualifying_s": _delta(b, "first", "qualifying"),
                "qualifying_to_delivered_s": _delta(b, "qualifying", "delivered"),
                "delivered_to_page_s": _delta(b, "delivered", "page"),
                "delivered_to_checked_s": _delta(b, "delivered", "checked"),
                "checked_to_created_s": _delta(b, "checked", "created"),
                "errors": b["errors"],
            }
            for b in bursts
        ],
    }
    p50 = results["first_to_webhook_s_p50"]
    return {
        "name": "time-to-digest",
        "results": results,
        "ratios": {"first_to_webhook_p50_over_10_s": round(p50 / 10.0, 2) if p50 is not None else None},
    }


def _delta(burst: dict[str, Any], start: str, end: str) -> float | None:
    if burst[start] is None or burst[end] is None:
        return None
    return round((burst[end] - burst[start]) / 1e9, 2)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = _cli.parser_for("time-to-digest", __doc__)
    parser.add_argument("--bursts", type=int, default=20, help="independent bursts to time (default 20)")
    parser.add_argument("--rate", type=int, default=20, help="requests a second over 4 GPUs (default 20)")
    parser.add_argument("--warmup", type=int, default=10, help="healthy seconds before the GPU is lost (default 10)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds after the warm-up to wait for a digest")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between polls of GET /digests")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="no manual digest during the warm-up: the burst's digest is the server's first (loads plotting)",
    )
    args = _cli.parse(parser, argv, "bursts", "rate", "warmup", repeats=1)
    if args.timeout <= 0 or args.poll <= 0:
        parser.error("--timeout and --poll must be positive")
    return args


def _render(report: dict[str, Any]) -> None:
    r = report["results"]
    print(
        f"time-to-digest: {r['completed']} of {r['bursts']} bursts ({r['rate_per_s']} requests/s on 4 GPUs, one lost "
        f"after {r['warmup_s']} s; a burst is {r['min_failed']} failures)"
    )
    for start in ("first", "qualifying"):
        for end in ("page", "webhook"):
            name = f"{start}_to_{end}_s"
            print(
                f"  {start:10s} failure -> {end:7s}  p50 {r[name + '_p50']} s  p90 {r[name + '_p90']} s  "
                f"max {r[name + '_max']} s"
            )
    for name, what in (
        ("qualifying_to_delivered_s", f"the {r['min_failed']}th failure -> delivered to serve (the SDK's batching)"),
        ("delivered_to_page_s", "delivered -> page (the burst check and the digest)"),
        ("delivered_to_checked_s", "  of which delivered -> the burst check that saw it (at least)"),
        ("checked_to_created_s", "  and that check -> the digest made (at most)"),
    ):
        print(f"  {what}: p50 {r[name + '_p50']} s  p90 {r[name + '_p90']} s  max {r[name + '_max']} s")
    print(f"  every burst within 10 s of its first failure: {'yes' if r['within_10_s'] else 'no'}")


def main(argv: list[str]) -> int:
    args = _parse(argv)
    return _cli.emit(run(args), args.json, _render)
