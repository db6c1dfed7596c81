"""Run the reference DDColor service under uvicorn.

    python -m examples.ddcolor_service --backend lab [--gpu-model L4] [--port 8000] [--metrics-port 9400]
    python -m examples.ddcolor_service --backend ddcolor --weights DIR [--device cuda:0]

Spans and logs go over OTLP/HTTP to `--otlp-endpoint` (else the `OTEL_EXPORTER_OTLP_*` variables). GPU
metrics and the advisor's gauge are served on `/metrics` of the service's port and, with
`--metrics-port`, on a port of their own for Prometheus (the compose stack scrapes 9400).
"""

from __future__ import annotations

import argparse
import sys

from gpu_rca.schemas.errors import InputError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m examples.ddcolor_service", description=__doc__.split("\n")[1])
    parser.add_argument("--backend", choices=("lab", "ddcolor"), default="lab")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=None, help="also serve /metrics on this port")
    parser.add_argument("--otlp-endpoint", default=None, help="OTLP/HTTP base URL, e.g. http://otel-collector:4318")
    parser.add_argument("--advisor", choices=("enforce", "shadow", "off"), default="enforce")
    parser.add_argument("--gpu-model", default="L4", help="lab backend: the simulated GPU (L4, T4, A100-40GB, …)")
    parser.add_argument("--weights", default=None, help="ddcolor backend: ModelScope DDColor folder on disk")
    parser.add_argument("--device", default="cuda:0", help="ddcolor backend: torch device")
    parser.add_argument("--timeout", type=float, default=30.0, help="request timeout in seconds")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Build the backend, wire the service, serve until interrupted; bad configuration exits 1 in one line."""
    args = _parser().parse_args(argv)
    from examples.ddcolor_service.app import AdvisorMode, ServiceConfig, create_app
    from examples.ddcolor_service.service import build_service

    try:
        if args.backend == "ddcolor":
            from examples.ddcolor_service.ddcolor_backend import DDColorBackend

            if not args.weights:
                raise InputError("--backend ddcolor needs --weights DIR (ModelScope's DDColor folder on disk)")
            backend = DDColorBackend(args.weights, device=args.device)
            config = ServiceConfig(
                gpu=args.device, advisor_mode=AdvisorMode(args.advisor), default_model=backend.models[0]
            )
        else:
            from examples.ddcolor_service.lab_backend import LabBackend

            backend = LabBackend(gpu_model=args.gpu_model, timeout_s=args.timeout)
            config = ServiceConfig(advisor_mode=AdvisorMode(args.advisor))
    except InputError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    service = build_service(backend, config=config, otlp_endpoint=args.otlp_endpoint, timeout_s=args.timeout)
    # The same records on stderr, with the trace id a user can hand to `gpu-rca explain`.
    service.telemetry.logger.add(
        sys.stderr,
        level="INFO",
        format="{time:YYYY-MM-DDTHH:mm:ss.SSS!UTC}Z {level} {message} trace_id={extra[trace_id]}",
    )
    app = create_app(service)
    if args.metrics_port is not None:
        from examples.ddcolor_service.app import metrics_registry
        from gpu_rca import collector

        collector.serve_metrics(metrics_registry(service), args.host, args.metrics_port)
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
