"""The live fleet: the engine in real time × speed, samplers to serve, spans and logs over real OTLP/HTTP."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gpu_rca.lab import LiveFleet, gpu_uuid_for
from gpu_rca.lab.scenario import parse_scenario
from gpu_rca.schemas.errors import UsageError

SCENARIO = {
    "name": "live",
    "seed": 4,
    "duration": "10m",
    "fleet": [{"host": "node-a", "gpus": 1, "model": "L4"}, {"host": "node-b", "gpus": 1, "model": "T4"}],
    "workload": {"rate": "5/s"},
}


def _receiver():
    received: dict[str, list[bytes]] = {"/v1/traces": [], "/v1/logs": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.setdefault(self.path, []).append(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received


def test_live_fleet_serves_samplers_and_sends_spans_and_logs_over_otlp():
    server, received = _receiver()
    try:
        fleet = LiveFleet(parse_scenario(SCENARIO), speed=60.0, otlp_endpoint=f"http://127.0.0.1:{server.server_port}")
        with fleet:
            deadline = time.monotonic() + 20
            while fleet.now_ns < fleet.scenario.start_ns + 30 * 10**9:
                assert time.monotonic() < deadline and fleet.error is None
                time.sleep(0.05)
            hosts = [host for host, _ in fleet.samplers()]
            assert hosts == ["node-a", "node-b"]
            for host, sampler in fleet.samplers():
                (device,) = sampler.devices
                assert device.uuid == gpu_uuid_for(4, host, 0)
                assert sampler.latest(device.index) is not None
        spans = [
            s
            for body in received["/v1/traces"]
            for rs in ExportTraceServiceRequest.FromString(body).resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        ]
        logs = [
            r
            for body in received["/v1/logs"]
            for rl in ExportLogsServiceRequest.FromString(body).resource_logs
            for sl in rl.scope_logs
            for r in sl.log_records
        ]
        assert len(spans) > 50 and len(logs) > 50
        # Each request's trace, as in the files: the server span, its preprocess and decode work, and the
        # inference span, all in one trace.
        assert {s.name for s in spans} >= {"ddcolor.inference", "POST /colorize", "preprocess"}
        inference_traces = {s.trace_id for s in spans if s.name == "ddcolor.inference"}
        assert {s.trace_id for s in spans} <= inference_traces | {
            s.trace_id for s in spans if s.name in ("POST /colorize", "preprocess")
        }
        fleet.stop()  # safe twice
    finally:
        server.shutdown()
        server.server_close()


def test_live_fleet_runs_at_wall_clock_time_from_its_start():
    fleet = LiveFleet(parse_scenario(SCENARIO), speed=1.0)
    given_start_ns = fleet.scenario.start_ns
    with pytest.raises(UsageError, match="not been started"):
        fleet.samplers()
    before_ns = time.time_ns()
    with fleet:
        after_ns = time.time_ns()
        # The scenario's own start (a date in the past) is replaced by the moment of start().
        assert before_ns <= fleet.scenario.start_ns <= after_ns
        assert given_start_ns < before_ns - 86_400 * 10**9
        deadline = time.monotonic() + 10
        while fleet.now_ns < fleet.scenario.start_ns + 10**9:  # a second of simulated time
            assert time.monotonic() < deadline and fleet.error is None
            time.sleep(0.05)
        # At speed 1 simulated time is wall time, to within the thread's catch-up tick.
        assert abs(time.time_ns() - fleet.now_ns) < 0.5 * 10**9
        for _, sampler in fleet.samplers():
            (device,) = sampler.devices
            assert abs(time.time_ns() - sampler.latest(device.index).ts_ns) < 2 * 10**9


def test_live_fleet_faster_than_real_time_runs_ahead_of_the_wall_clock():
    with LiveFleet(parse_scenario(SCENARIO), speed=60.0) as fleet:
        deadline = time.monotonic() + 10
        while fleet.now_ns < fleet.scenario.start_ns + 30 * 10**9:
            assert time.monotonic() < deadline and fleet.error is None
            time.sleep(0.05)
        assert fleet.now_ns - time.time_ns() > 20 * 10**9
