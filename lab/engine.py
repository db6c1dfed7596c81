"""Runs a scenario on a virtual clock: fleet physics, faults, the DDColor service, and the real collector.

Every request becomes a real OpenTelemetry inference span opened, stamped and ended by the collector's
own code (one `collector.Collector` per host, each with its own TracerProvider, seeded ids and
resource), and the service's loguru logs go through the collector's trace patcher and OTLP log sink.
The collector samples the simulated NVML at `sample_hz` of simulated time (2 Hz by default, against
10 Hz in production, so a 30-minute 4-GPU scenario runs in a few seconds). Span starts and ends are
handed to the collector in time order right after each sample, so every window it stamps is complete.
"""

from __future__ import annotations

import datetime as dt
import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from gpu_rca.lab import ddcolor
from gpu_rca.lab.clock import VirtualClock
from gpu_rca.lab.device import CUDA_CONTEXT_BYTES, STEP_NS, Fleet
from gpu_rca.lab.faults import FaultDriver, apply_event
from gpu_rca.lab.ids import SeededIdGenerator
from gpu_rca.lab.kernel_log import kernel_lines
from gpu_rca.lab.nvml import SimulatedNvml
from gpu_rca.lab.scenario import Scenario
from gpu_rca.lab.scrapes import Scraper
from gpu_rca.lab.workload import Request, Worker, draw
from gpu_rca.schemas import attributes as A

if TYPE_CHECKING:
    from gpu_rca.collector import Collector

NS = 1_000_000_000
SERVICE_NAME = "ddcolor"
SERVICE_VERSION = "1.4.2"
SPAN_NAME = "ddcolor.inference"
#: The trace around each inference span (docs/contracts.md §5): the server span, and the host CPU work beside it.
SERVER_SPAN = "POST /colorize"
PREPROCESS_SPAN = "preprocess"
DECODE_SPAN = "decode"
SERVICE_PID_BASE = 2100
PROGRESS_EVERY_STEPS = 600  # one simulated minute of 100 ms steps


@dataclass
class _Host:
    name: str
    pid: int
    skew_ns: int
    collector: Collector
    provider: TracerProvider
    log_provider: LoggerProvider
    logger: Any
    tracer: Any
    ops: list[tuple[int, int, _Op]] = field(default_factory=list)


@dataclass(frozen=True)
class _Accepted:
    request: Request


@dataclass(frozen=True)
class _Started:
    request: Request


@dataclass(frozen=True)
class _Finished:
    request: Request
    exception: BaseException | None


@dataclass(frozen=True)
class _Logged:
    request: Request | None
    level: str
    message: str


#: What a host's service did at a time, handed to its collector (or logger) in time order.
_Op = _Accepted | _Started | _Finished | _Logged


@dataclass
class LabRun:
    """What a scenario run produced, in memory (see `lab.outputs.write_run` for the files)."""

    scenario: Scenario
    fleet: Fleet
    spans: list[Any]
    logs: list[Any]
    kernel_log: list[str]
    metrics: list[dict[str, Any]]
    truth: dict[str, Any]

    @property
    def inference_spans(self) -> list[Any]:
        """The inference spans (one per request, carrying `gpu.telemetry.source`), without their traces'
        server and child spans."""
        return [s for s in self.spans if s.attributes.get(A.TELEMETRY_SOURCE) is not None]

    def failures(self) -> Counter[str]:
        """Failed inference spans by `error.type`."""
        return Counter(
            s.attributes.get(A.ERROR_TYPE) for s in self.inference_spans if s.attributes.get(A.ERROR_TYPE) is not None
        )


def _independent_logger() -> Any:
    # loguru has one global logger whose default handler prints to stderr; the lab's service logs must go
    # only to its own sinks, so it gets a logger with a core of its own (copy.deepcopy cannot copy stderr).
    from loguru._logger import Core, Logger

    return Logger(Core(), None, 0, False, False, False, False, True, [], {})


def _time_patcher(record: dict[str, Any]) -> None:
    ts_ns = record["extra"].pop("lab_ts_ns", None)
    if ts_ns is not None:
        record["time"] = record["time"].__class__.fromtimestamp(ts_ns / 1e9, tz=dt.UTC)


class _Engine:
    def __init__(
        self,
        scenario: Scenario,
        sample_hz: float,
        span_processor: Callable[[], Any] | None = None,
        log_processor: Callable[[], Any] | None = None,
        keep: bool = True,
    ) -> None:
        from gpu_rca.collector import Collector, OtlpLogSink, trace_patcher

        self.scenario = scenario
        seed = f"{scenario.name}/{scenario.seed}"
        self.rng_workload = random.Random(f"workload/{seed}")
        self.rng_faults = random.Random(f"faults/{seed}")
        self.rng_noise = random.Random(f"noise/{seed}")
        self.clock = VirtualClock(scenario.start_ns)
        self.fleet = Fleet(scenario.fleet, clock=self.clock.now_ns, seed=scenario.seed)
        for gpu in self.fleet.gpus:
            gpu.idle_power_cap_noise = gpu.profile.idle_power_cap_noise or self.rng_noise.random() < 0.25
        self.spans = InMemorySpanExporter()
        self.logs = InMemoryLogRecordExporter()
        self.hosts: dict[str, _Host] = {}
        self.faults = FaultDriver(scenario, self.fleet, self.rng_faults)
        versions = {host: self.faults.host_version(host) for host in self.fleet.hosts}
        for position, host in enumerate(self.fleet.hosts):
            skew = (
                0 if position == 0 else self.rng_noise.choice((-1, 1)) * self.rng_noise.randint(1000, 2000) * 1_000_000
            )
            version = versions.get(host) or SERVICE_VERSION
            resource = Resource({A.SERVICE_NAME: SERVICE_NAME, A.SERVICE_VERSION: version, A.HOST_NAME: host})
            provider = TracerProvider(resource=resource, id_generator=SeededIdGenerator(f"ids/{seed}/{host}"))
            # `keep=False` (the live fleet) keeps nothing in memory: spans and logs go to the given processors.
            log_provider = LoggerProvider(resource=resource)
            if span_processor is not None:
                provider.add_span_processor(span_processor())
            elif keep:
                provider.add_span_processor(SimpleSpanProcessor(self.spans))
            if log_processor is not None:
                log_provider.add_log_record_processor(log_processor())
            elif keep:
                log_provider.add_log_record_processor(SimpleLogRecordProcessor(self.logs))
            pid = SERVICE_PID_BASE + 17 * position
            collector = Collector(
                nvml=SimulatedNvml(self.fleet, host),
                clock=lambda skew=skew: self.clock.now_ns() + skew,
                tracer_provider=provider,
                sample_hz=sample_hz,
                background=False,
                cuda_visible_devices=None,
                pid=pid,
            )
            logger = _independent_logger().patch(trace_patcher).patch(_time_patcher)
            logger.add(OtlpLogSink(log_provider, name="ddcolor.service"), format="{message}", level="INFO")
            tracer = provider.get_tracer("ddcolor.service")
            self.hosts[host] = _Host(host, pid, skew, collector, provider, log_provider, logger, tracer)
        models = set(scenario.workload.model)
        for fault in scenario.faults:
            if isinstance(fault.model, dict):
                models |= set(fault.model)
        resident = CUDA_CONTEXT_BYTES + ddcolor.weights_bytes(models)
        self.workers = [Worker(gpu, self.hosts[gpu.host].pid, resident, self) for gpu in self.fleet.gpus]
        for worker in self.workers:
            worker.app_bug = lambda request, worker=worker: self.faults.app_bug(self.clock.now_ns(), request)
        self.workers_by_gpu = {id(w.gpu): w for w in self.workers}
        self.scraper = Scraper(self.fleet, scenario, self.rng_noise, keep=keep)
        self.kernel: list[tuple[int, str]] = []
        self._announced: dict[str, int] = {}
        self._seq = 0
        self._next_request_id = 0
        self._next_arrival_ns = scenario.start_ns
        # Requests whose `preprocess` runs on the host CPU: they reach their worker's queue later.
        self._preprocessing: list[tuple[int, int, Request]] = []

    # --- RequestObserver -----------------------------------------------------------------------
    def _op(self, host: str, ts_ns: int, op: _Op) -> None:
        self._seq += 1
        self.hosts[host].ops.append((ts_ns, self._seq, op))

    def accepted(self, request: Request, ts_ns: int) -> None:
        self._op(_host_of(request), ts_ns, _Accepted(request))

    def started(self, request: Request, ts_ns: int) -> None:
        self._op(_host_of(request), ts_ns, _Started(request))

    def finished(self, request: Request, ts_ns: int, exception: BaseException | None) -> None:
        if exception is None:
            request.post_ns = _cpu_ns(ddcolor.postprocess_s(request.input_size), _worker_of(request).gpu.host_cpu)
        self._op(_host_of(request), ts_ns, _Finished(request, exception))

    def log(self, host: str, ts_ns: int, level: str, message: str, request: Request | None = None) -> None:
        self._op(host, ts_ns, _Logged(request, level, message))

    # --- the loop --------------------------------------------------------------------------------
    def _flush(self, host: _Host, until_ns: int) -> None:
        # Only what has happened by the last sample: a later end would be stamped without its samples.
        ops = sorted(host.ops, key=lambda op: (op[0], op[1]))
        due = [op for op in ops if op[0] <= until_ns]
        host.ops = ops[len(due) :]
        ops = due
        collector = host.collector
        for ts_ns, _, op in ops:
            ts = ts_ns + host.skew_ns
            if isinstance(op, _Accepted):
                request = op.request
                arrive = request.arrive_ns + host.skew_ns
                server = host.tracer.start_span(SERVER_SPAN, kind=SpanKind.SERVER, start_time=arrive)
                request.server = server
                parent = trace.set_span_in_context(server)
                preprocess = host.tracer.start_span(PREPROCESS_SPAN, context=parent, start_time=arrive)
                preprocess.end(end_time=ts)
                request.handle = collector.start_inference_span(
                    SPAN_NAME,
                    gpu=_worker_of(request).gpu.uuid,
                    attributes=request.attributes(),
                    start_ns=ts,
                    context=parent,
                )
            elif isinstance(op, _Started | _Finished):
                span = op.request.handle
                if span is None:
                    raise RuntimeError(f"request {op.request.id}: started or ended before it was accepted")
                if isinstance(op, _Started):
                    span.gpu_work_started(ts)
                else:
                    span.end(end_ns=ts, exception=op.exception)
                    _end_server_span(host.tracer, op.request, ts, op.exception)
            else:
                handle = op.request.handle if op.request is not None else None
                bound = host.logger.bind(lab_ts_ns=ts)
                if handle is not None:
                    with trace.use_span(handle.span, end_on_exit=False):
                        bound.log(op.level, op.message)
                else:
                    bound.log(op.level, op.message)

    def _arrivals(self, t0_ns: int, t1_ns: int) -> dict[int, list[tuple[int, Request]]]:
        overrides = self.faults.workload_overrides(t0_ns)
        workload = self.scenario.workload
        rate = float(overrides.get("rate_per_s", workload.rate_per_s))
        sizes = overrides.get("input_size", workload.input_size)
        tasks = overrides.get("task_type", workload.task_type)
        models = overrides.get("model", workload.model)
        by_worker: dict[int, list[tuple[int, Request]]] = {}
        rng = self.rng_workload
        while self._next_arrival_ns < t1_ns:
            ts = self._next_arrival_ns
            self._next_arrival_ns += max(int(rng.expovariate(rate) * NS), 1) if rate > 0 else t1_ns - ts
            if rate <= 0:
                break
            size = int(draw(rng, sizes))
            width, height = ddcolor.image_dimensions(size, rng.random())
            self._next_request_id += 1
            # One replica per GPU behind a Kubernetes Service: kube-proxy picks a replica at random,
            # blind to its health or queue, so a slow or broken GPU keeps getting its share.
            worker = self.workers[rng.randrange(len(self.workers))]
            # The replica decodes and resizes the upload on its host's CPU before queueing it for the GPU.
            accept = ts + _cpu_ns(ddcolor.preprocess_s(size), worker.gpu.host_cpu)
            request = Request(
                self._next_request_id,
                accept,
                size,
                str(draw(rng, models)),
                str(draw(rng, tasks)),
                width,
                height,
                deadline_ns=ts + workload.timeout_ns,
                arrive_ns=ts,
            )
            request.worker = worker
            heapq.heappush(self._preprocessing, (accept, request.id, request))
        while self._preprocessing and self._preprocessing[0][0] < t1_ns:
            accept, _, request = heapq.heappop(self._preprocessing)
            by_worker.setdefault(id(request.worker), []).append((max(accept, t0_ns), request))
        return by_worker

    def _hardware(self, t1_ns: int) -> None:
        for event in self.faults.due(t1_ns):
            worker = self.workers_by_gpu[id(event.gpu)]
            error_text, down_ns = apply_event(event, worker.pid, self.rng_faults)
            record = event.gpu.xids[-1]
            last = self._announced.get(event.gpu.uuid)
            announce = last is None or record.ts_ns - last > 60 * NS
            self._announced[event.gpu.uuid] = record.ts_ns
            self.kernel.extend(kernel_lines(event.gpu, record, self.hosts[event.gpu.host].skew_ns, announce))
            if error_text is not None:
                delay_ns = int(self.rng_faults.uniform(0.2, 0.9) * NS)
                worker.crash(event.ts_ns, error_text, event.ts_ns + down_ns, delay_ns)

    def start(self) -> None:
        """Take the first sample on every host."""
        sampler = self.hosts[self.fleet.hosts[0]].collector.sampler
        if sampler is None:  # a collector given an NVML source always has one
            raise RuntimeError("the lab's collector has no sampler")
        self._sample_every = max(1, round(sampler.period_ns / STEP_NS))
        self._step = 0
        self._t0 = self.scenario.start_ns
        for host in self.hosts.values():
            host.collector.sample_once(self.clock.now_ns() + host.skew_ns)

    def advance(self, until_ns: int, progress: Callable[[int, int], None] | None = None) -> None:
        """Simulate in 100 ms steps up to `until_ns`; `progress(done_ns, total_ns)` every simulated minute."""
        begin_ns = self._t0
        while self._t0 + STEP_NS <= until_ns:
            t0, t1 = self._t0, self._t0 + STEP_NS
            self.faults.apply(t0)
            for worker in self.workers:
                worker.leak_per_request, worker.fragmentation = self.faults.memory(t0, worker.gpu)
            self._hardware(t1)
            arrivals = self._arrivals(t0, t1)
            for worker in self.workers:
                busy = worker.step(t0, t1, arrivals.get(id(worker), []))
                worker.gpu.load(busy)
            self.fleet.advance_to(t1)
            self.clock.advance_to(t1)
            self.scraper.maybe_scrape(t1)
            self._step += 1
            if self._step % self._sample_every == 0 or t1 >= until_ns:
                for host in self.hosts.values():
                    host.collector.sample_once(t1 + host.skew_ns)
                    self._flush(host, t1)
            self._t0 = t1
            if progress is not None and self._step % PROGRESS_EVERY_STEPS == 0:
                progress(t1 - begin_ns, until_ns - begin_ns)

    def close(self) -> None:
        """Stop the collectors and flush the providers."""
        for host in self.hosts.values():
            host.collector.shutdown()
            host.provider.shutdown()
            host.log_provider.shutdown()

    def run(self, progress: Callable[[int, int], None] | None = None) -> LabRun:
        scenario = self.scenario
        self.start()
        self.advance(scenario.start_ns + scenario.duration_ns, progress)
        self.close()
        spans = list(self.spans.get_finished_spans())
        logs = list(self.logs.get_finished_logs())
        return LabRun(
            scenario=scenario,
            fleet=self.fleet,
            spans=spans,
            logs=logs,
            kernel_log=[line for _, line in sorted(self.kernel, key=lambda item: item[0])],
            metrics=self.scraper.documents(),
            truth=resolve_truth(scenario, self.fleet),
        )


def _cpu_ns(seconds: float, cpu_share: float) -> int:
    """Host CPU work of `seconds` on an uncontended core, with only `cpu_share` of the CPU available."""
    return int(seconds / max(cpu_share, 0.05) * NS)


def resolve_truth(scenario: Scenario, fleet: Fleet) -> dict[str, Any]:
    """truth.json: the scenario's truth with `HOST/INDEX` GPU drivers replaced by the real UUIDs."""
    truth = scenario.truth or {"cause": None, "drivers": {}, "also": []}

    def drivers(values: dict[str, Any]) -> dict[str, Any]:
        result = dict(values)
        ref = result.get(A.GPU_UUID)
        if isinstance(ref, str) and not ref.startswith("GPU-"):
            result[A.GPU_UUID] = fleet.gpu(ref).uuid
        return result

    return {
        "cause": truth.get("cause"),
        "drivers": drivers(truth.get("drivers") or {}),
        "also": [{"cause": a["cause"], "drivers": drivers(a.get("drivers") or {})} for a in truth.get("also") or []],
    }


def run_scenario(
    scenario: Scenario, *, sample_hz: float = 2.0, progress: Callable[[int, int], None] | None = None
) -> LabRun:
    """Simulate `scenario` and return its spans, logs, kernel log, metrics and truth.

    `progress(done_ns, total_ns)`, when given, is called every simulated minute (for a progress bar).
    """
    return _Engine(scenario, sample_hz).run(progress)


__all__ = ["SPAN_NAME", "LabRun", "resolve_truth", "run_scenario"]


def _end_server_span(tracer: Any, request: Request, ts: int, exception: BaseException | None) -> None:
    """End the request's server span: after its `decode` child when it succeeded, at once with an error status
    when it failed."""
    server = request.server
    if server is None:
        return
    if exception is None:
        decode = tracer.start_span(DECODE_SPAN, context=trace.set_span_in_context(server), start_time=ts)
        decode.end(end_time=ts + request.post_ns)
        server.end(end_time=ts + request.post_ns)
    else:
        server.set_status(Status(StatusCode.ERROR, type(exception).__name__))
        server.end(end_time=ts)


def _worker_of(request: Request) -> Worker:
    """The worker the engine assigned `request` to before the service accepted it."""
    if request.worker is None:
        raise RuntimeError(f"request {request.id} has no worker")
    return request.worker


def _host_of(request: Request) -> str:
    return _worker_of(request).gpu.host
