"""OTLP/HTTP protobuf ingest through a real `gpu-rca serve` into DuckDB, beside its limits, in one run.

- `parse_only`: decode each protobuf payload and turn it into store rows (`correlate.otlp.decode.spans_from_request`),
  storing nothing: the floor of what any ingest of these payloads costs in this process; the attribute cache
  starts empty, and its hit rate over the pass is reported;
- `parse_only_no_cache`: the same with a cache that keeps nothing: the worst case, traffic whose attribute
  values never repeat;
- `store_direct`: `Store.ingest_trace_request` of each payload's bytes into a fresh DuckDB file, no HTTP;
- `store_only`: the rows of each payload built beforehand (untimed), then stored into a fresh DuckDB file with
  `Store.ingest_span_batches`, one request per insert: what DuckDB alone costs, the ceiling for any decoder;
- `store_only_grouped`: the same, `--group` requests per insert, as the server's group commit stores requests
  that queued up together;
- `server`: POST the same payloads to a `gpu-rca serve` subprocess (fresh DuckDB file per repeat) from
  `--clients` keep-alive connections; the server acknowledges a request once it is in its ingest log on disk,
  and the run ends once its loader has committed every request in DuckDB (`/healthz` lag 0): the figures
  count that whole time and CPU. `server_ack_p50_ms`/`server_ack_p99_ms`: each request's time to its ack.
  One log record is posted first, untimed, so the process's one-off imports are not counted.

Each kind is also reported per CPU-second (`*_cpu_spans_per_s`: spans over the CPU time the work took, for
`server` the server process's own user+system time), which is what one core does when the machine is shared.

Payloads are SDK-encoded requests of `--spans-per-request` inference spans carrying every stamp of docs/contracts.md §1
(the OTel SDK's own encoder), each span with its own ids and its own readings (`stamped_attributes`).
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import statistics
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from benchmarks._cli import emit, parse, parser_for
from gpu_rca.correlate.otlp.wire import DEFAULT_CACHE, AttributeCache
from gpu_rca.schemas import attributes as A

KINDS = ("parse_only", "parse_only_no_cache", "store_direct", "store_only", "store_only_grouped", "server")
RESOURCE = {A.SERVICE_NAME: "ddcolor", A.SERVICE_VERSION: "1.4.2", A.HOST_NAME: "bench-node"}


def stamped_attributes(index: int, rng: random.Random | None = None) -> dict[str, Any]:
    """A plausible full stamp set (docs/contracts.md §1) plus the DDColor workload attributes of span `index`.

    Values vary from span to span as a real process's do: NVML's integer readings (temperature, utilization,
    clocks in 15 MHz steps) repeat often, power (mW resolution) and its means, memory (2 MiB allocator
    blocks), queue times and image sizes mostly do not; the GPU's identity and limits never change.
    """
    rng = rng or random.Random(index)
    failed = index % 10 == 0
    samples = rng.randint(3, 25)
    utilization = [rng.randint(60, 100) for _ in range(samples)]
    power_max_w = round(rng.uniform(55.0, 72.0), 3)
    used_start = 9 * 2**30 + rng.randrange(1024) * 2**21
    return {
        A.GPU_INDEX: index % 2,
        A.GPU_UUID: f"GPU-5b7a2d1e-0000-4000-8000-00000000000{index % 2}",
        A.GPU_NAME: "NVIDIA L4",
        A.GPU_PCI_BUS_ID: f"0000:{0x3B + index % 2:02x}:00.0",
        A.GPU_MIG_INSTANCE_ID: 0,
        A.TELEMETRY_SOURCE: A.SOURCE_NVML,
        A.TELEMETRY_SAMPLES: samples,
        A.TELEMETRY_STALE: False,
        A.TEMPERATURE_MAX: rng.randint(62, 84),
        A.TEMPERATURE_SLOWDOWN: 92,
        A.POWER_MAX: power_max_w,
        A.POWER_MEAN: rng.uniform(50.0, power_max_w),
        A.POWER_LIMIT: 72.0,
        A.MEMORY_USED_START: used_start,
        A.MEMORY_USED_MAX: used_start + rng.randrange(1500) * 2**21,
        A.MEMORY_TOTAL: 24_152_899_584,
        A.MEMORY_PROCESS_MAX: 8 * 2**30 + rng.randrange(1500) * 2**21,
        A.UTILIZATION_MEAN: sum(utilization) / samples,
        A.UTILIZATION_MAX: float(max(utilization)),
        A.CLOCK_SM_MIN: 1410 + 15 * rng.randrange(43),
        A.CLOCK_SM_MAX: 2040,
        A.THROTTLE_REASONS: ["sw_power_cap"] if rng.random() < 0.3 else [],
        A.ECC_CORRECTED_DELTA: 0,
        A.ECC_UNCORRECTED_DELTA: 0,
        A.XID: [],
        A.INFLIGHT_MAX: rng.randint(1, 4),
        A.QUEUE_MS: rng.expovariate(0.2),
        **({A.ERROR_TYPE: A.ERROR_CUDA_OOM} if failed else {}),
        A.DDCOLOR_INPUT_SIZE: 1280 if failed else 512,
        A.DDCOLOR_MODEL: "ddcolor_paper_tiny",
        A.DDCOLOR_TASK_TYPE: rng.choice(("person", "landscape", "object")),
        A.IMAGE_WIDTH: rng.randint(320, 4032),
        A.IMAGE_HEIGHT: rng.randint(240, 3024),
    }


def make_payloads(requests: int, spans_per_request: int, seed: int = 7) -> list[bytes]:
    """`requests` serialized ExportTraceServiceRequests of distinct spans (ids and stamp values), encoded by
    the OTel SDK's own OTLP encoder; the same seed gives the same payloads."""
    rng = random.Random(seed)
    payloads = []
    for number in range(requests):
        exporter = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create(RESOURCE))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("benchmarks.ingest")
        for index in range(spans_per_request):
            with tracer.start_as_current_span("ddcolor.inference", attributes=stamped_attributes(index, rng)):
                pass
        provider.shutdown()
        request = encode_spans(exporter.get_finished_spans())
        for position, span in enumerate(request.resource_spans[0].scope_spans[0].spans):
            serial = number * spans_per_request + position + 1
            span.trace_id = serial.to_bytes(16, "big")
            span.span_id = serial.to_bytes(8, "big")
        payloads.append(request.SerializeToString())
    return payloads


def time_parse_only(payloads: list[bytes], cache: AttributeCache) -> tuple[float, float]:
    """(wall seconds, CPU seconds) to decode every payload and build its store rows, `cache` emptied first
    (so no value is known from an earlier pass over the same payloads)."""
    from gpu_rca.correlate.otlp.decode import spans_from_request

    cache.clear()
    started, cpu = time.perf_counter(), time.process_time()
    for payload in payloads:
        spans_from_request(payload, cache=cache)
    return time.perf_counter() - started, time.process_time() - cpu


def time_store_direct(payloads: list[bytes], folder: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) to decode and ingest every payload into a fresh store file, one transaction
    per request (the process's attribute cache emptied first)."""
    from gpu_rca.correlate.store import Store

    DEFAULT_CACHE.clear()
    with Store(folder / "direct.duckdb") as store:
        started, cpu = time.perf_counter(), time.process_time()
        for payload in payloads:
            store.ingest_trace_request(payload)
        return time.perf_counter() - started, time.process_time() - cpu


def time_store_only(payloads: list[bytes], folder: Path, group: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) to store the rows of every payload, built beforehand and not timed, into a
    fresh store file, `group` requests' rows per `Store.ingest_span_batches` call (one insert per table)."""
    from gpu_rca.correlate.otlp.decode import spans_from_request
    from gpu_rca.correlate.store import Store

    batches = [spans_from_request(payload, cache=AttributeCache()) for payload in payloads]
    groups = [batches[at : at + group] for at in range(0, len(batches), group)]
    with Store(folder / f"only-{group}.duckdb") as store:
        started, cpu = time.perf_counter(), time.process_time()
        for batch_group in groups:
            store.ingest_span_batches(batch_group)
        return time.perf_counter() - started, time.process_time() - cpu


def _warm_up_logs() -> bytes:
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.time_unix_nano = time.time_ns()
    record.body.string_value = "benchmark warm-up"
    return request.SerializeToString()


_WARM_UP_LOGS = _warm_up_logs()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_server(payloads: list[bytes], folder: Path, clients: int) -> tuple[float, float, int, list[float]]:
    """(wall seconds until every payload is acknowledged by a real `gpu-rca serve` and committed in its store,
    the server's CPU seconds meanwhile, spans in its store afterwards, each request's ack latency)."""
    import duckdb
    import httpx

    from gpu_rca.correlate.server.process import ServeProcess

    db = folder / "served.duckdb"
    work: queue.Queue[bytes] = queue.Queue()
    for payload in payloads:
        work.put(payload)
    failures: list[str] = []
    acks: list[float] = []
    with ServeProcess(db, args=["--queue-size", str(max(64, clients * 2))]) as server:
        url = f"{server.url}/v1/traces"

        def send() -> None:
            with httpx.Client(timeout=120) as client:
                while True:
                    try:
                        payload = work.get_nowait()
                    except queue.Empty:
                        return
                    sent = time.perf_counter()
                    response = client.post(url, content=payload, headers={"Content-Type": "application/x-protobuf"})
                    acks.append(time.perf_counter() - sent)
                    if response.status_code != 200:
                        failures.append(f"{response.status_code}: {response.content[:200]!r}")

        # One log record first, untimed: the server's first Arrow conversion imports pandas (pyarrow
        # looks for it), a one-off 0.2 s of CPU per process that is not ingest throughput.
        warm = httpx.post(
            f"{server.url}/v1/logs",
            content=_WARM_UP_LOGS,
            headers={"Content-Type": "application/x-protobuf"},
            timeout=120,
        )
        warm.raise_for_status()
        threads = [threading.Thread(target=send) for _ in range(clients)]
        pid = server.process.pid
        started, cpu = time.perf_counter(), _cpu_s(pid)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Acknowledged means logged on disk: the run ends once the loader has committed every request too. Polled
        # every 20 ms on one connection: a new connection each time cost the server 1.1 ms of CPU (2-5 µs a span).
        with httpx.Client(base_url=server.url, timeout=30) as poller:
            while poller.get("/healthz").json()["ingest_log"]["lag_records"]:
                time.sleep(0.02)
        elapsed, cpu = time.perf_counter() - started, _cpu_s(pid) - cpu
        if server.stop() != 0:
            raise RuntimeError(f"gpu-rca serve did not stop cleanly: {server.stderr[-500:]}")
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, first: {failures[0]}")
    with duckdb.connect(str(db), read_only=True) as con:
        stored = con.execute("SELECT count(*) FROM spans").fetchone()[0]
    return elapsed, cpu, stored, acks


def run(args: argparse.Namespace) -> dict[str, Any]:
    payloads = make_payloads(args.requests, args.spans_per_request)
    spans = args.requests * args.spans_per_request
    rates: dict[str, list[float]] = {name: [] for name in KINDS}
    cpu_rates: dict[str, list[float]] = {name: [] for name in KINDS}
    hit_rates: list[float] = []
    acks: list[float] = []
    time_parse_only(payloads[:1], DEFAULT_CACHE)  # warm-up: the first conversion imports pyarrow's compute modules
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="gpu-rca-bench-") as tmp:
            folder = Path(tmp)
            for name, timer in (
                ("parse_only", partial(time_parse_only, payloads, DEFAULT_CACHE)),
                ("parse_only_no_cache", partial(time_parse_only, payloads, AttributeCache(0))),
                ("store_direct", partial(time_store_direct, payloads, folder)),
                ("store_only", partial(time_store_only, payloads, folder, 1)),
                ("store_only_grouped", partial(time_store_only, payloads, folder, args.group)),
            ):
                wall_s, cpu_s = timer()
                rates[name].append(spans / wall_s)
                cpu_rates[name].append(spans / cpu_s)
                if name == "parse_only":
                    hit_rates.append(DEFAULT_CACHE.hit_rate)
            elapsed, cpu_s, stored, run_acks = time_server(payloads, folder, args.clients)
            acks.extend(run_acks)
            if stored != spans:
                raise RuntimeError(f"repeat {repeat}: the server stored {stored} of {spans} spans")
            rates["server"].append(spans / elapsed)
            cpu_rates["server"].append(spans / cpu_s)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu_rates.items()}
    return {
        "name": "ingest",
        "results": {
            "spans": spans,
            "requests": args.requests,
            "spans_per_request": args.spans_per_request,
            "payload_bytes_per_request": round(statistics.mean(len(p) for p in payloads)),
            "clients": args.clients,
            "group": args.group,
            "repeats": args.repeats,
            **{f"{name}_spans_per_s": round(value) for name, value in medians.items()},
            **{f"{name}_cpu_spans_per_s": round(value) for name, value in cpu_medians.items()},
            "server_spans_per_s_runs": [round(v) for v in rates["server"]],
            "server_ack_p50_ms": round(1000 * statistics.median(acks), 1),
            "server_ack_p99_ms": round(1000 * sorted(acks)[min(len(acks) - 1, int(0.99 * len(acks)))], 1),
            "attribute_cache_hit_rate": round(statistics.median(hit_rates), 3),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "ratios": {
            "server_vs_parse_only": round(medians["server"] / medians["parse_only"], 3),
            "server_vs_store_direct": round(medians["server"] / medians["store_direct"], 3),
            # Per CPU-second: the share of the server's CPU that DuckDB's own insert would take at the same rate.
            "server_vs_store_only_cpu": round(cpu_medians["server"] / cpu_medians["store_only"], 3),
        },
    }


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = parser_for("ingest", __doc__)
    parser.add_argument("--requests", type=int, default=24, help="requests per repeat (default 24)")
    parser.add_argument("--spans-per-request", type=int, default=512, help="inference spans per request (512)")
    parser.add_argument("--clients", type=int, default=2, help="concurrent keep-alive connections (default 2)")
    parser.add_argument("--group", type=int, default=8, help="requests per insert for store_only_grouped (default 8)")
    return parse(parser, argv, "requests", "spans_per_request", "clients", "group")


def main(argv: list[str]) -> int:
    args = _parse(argv)
    return emit(run(args), args.json, _render)


def _render(report: dict[str, Any]) -> None:
    r, ratios = report["results"], report["ratios"]
    print(
        f"ingest: {r['requests']} requests x {r['spans_per_request']} stamped spans "
        f"({r['payload_bytes_per_request']} bytes each), {r['clients']} clients, median of {r['repeats']}"
    )
    for name in KINDS:
        print(f"  {name:<20} {r[f'{name}_spans_per_s']:>9,} spans/s  {r[f'{name}_cpu_spans_per_s']:>9,} per CPU-second")
    print(f"  attribute cache hit rate {r['attribute_cache_hit_rate']:.1%} (parse_only, from an empty cache)")
    print(f"  load average  {r['load_average_1m']}")
    print(f"  server / parse_only   = {ratios['server_vs_parse_only']:.3f}")
    print(f"  server / store_direct = {ratios['server_vs_store_direct']:.3f}")
    print(
        f"  server / store_only   = {ratios['server_vs_store_only_cpu']:.3f} (per CPU-second; "
        f"store_only_grouped: {r['group']} requests per insert)"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
