"""Perturbations of a lab run's files, done between `lab run` and `ingest`: each a function file set -> file set.

A file set maps a file name of `lab run`'s output (`traces.otlp.jsonl`, `logs.otlp.jsonl`,
`metrics.prom.jsonl`, `kernel.log`, `truth.json`) to its text. A perturbation returns a new file set (a
file it removes is absent) and draws whatever it draws from the `random.Random` it is given, so the same
seed gives the same files. What each does (issue 15's "missing and distorted signals"):

- `telemetry_none`: the inference spans carry only GPU identity, as an older or foreign instrumentation
  writes them: `gpu.telemetry.source=none`, every other `gpu.*` stamp and the `gpu.*` span events removed;
  an `error.type` only NVML could give (`gpu_lost`) becomes what the exception's text says;
- `no_kernel_log`: no kernel log;
- `no_prometheus`: no Prometheus data;
- `metrics_skewed`: every metric timestamp shifted by 60-90 s (either way) against the spans;
- `tail_sampled`: the OTel Collector's usual tail sampling, every trace holding an error span and 10 % of
  the rest (by a seeded hash of the trace id); logs are not sampled;
- `gpu_operator_labels`: dcgm-exporter's series as NVIDIA's gpu-operator deploys it on Kubernetes:
  `hostname` (not `Hostname`), the `pod`, `namespace` and `container` of the pod holding the GPU,
  `job="nvidia-dcgm-exporter"` and `instance` the exporter pod's address (no longer the host);
- `unstamped`: no gpu-rca collector, as a service traced by the OTel SDK's own HTTP server instrumentation
  and scraped by dcgm-exporter on Kubernetes writes it (docs/byo-spans.md): the inference span is gone and the
  request is the `POST /colorize` server span (`http.request.method`, `http.route`, `url.path`,
  `http.response.status_code`, on failure `error.type` = the exception's class and an `exception` event),
  carrying the application's own workload attributes and no `gpu.*` at all; each GPU is served by its own
  pod, named in the resource (`k8s.pod.name`, `k8s.namespace.name`, `k8s.node.name`) and in the metrics'
  dcgm-exporter labels as `gpu_operator_labels` writes them;
- `unstamped_hosts`: the same spans without Kubernetes: one resource per host, metrics as the lab wrote
  them, so only a host with one GPU tells its GPU (the others are ambiguous).

`UNITS` names the `--unit` rules each perturbation's files are ingested with.
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Callable
from typing import Any

FileSet = dict[str, str]
Perturbation = Callable[[FileSet, random.Random], FileSet]

TRACES = "traces.otlp.jsonl"
METRICS = "metrics.prom.jsonl"
KERNEL = "kernel.log"

#: The stamps of GPU identity (docs/contracts.md §1) a span keeps under `telemetry_none`.
IDENTITY = frozenset({"gpu.index", "gpu.uuid", "gpu.name", "gpu.pci_bus_id", "gpu.mig.instance_id"})
SOURCE = "gpu.telemetry.source"
#: Share of the traces without an error that tail sampling keeps.
TAIL_KEEP = 0.10
#: The skew of `metrics_skewed`, in seconds (its sign drawn too).
SKEW_S = (60.0, 90.0)
_ERROR_CODES = (2, "STATUS_CODE_ERROR")


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _dump_lines(docs: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(doc, separators=(",", ":")) + "\n" for doc in docs)


def _spans(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for rs in doc.get("resourceSpans", []) for ss in rs.get("scopeSpans", []) for s in ss.get("spans", [])]


def _attr(span: dict[str, Any], key: str) -> Any:
    for item in span.get("attributes", []):
        if item.get("key") == key:
            value = item.get("value", {})
            return next(iter(value.values()), None)
    return None


def telemetry_none(files: FileSet, rng: random.Random) -> FileSet:
    """Inference spans keep GPU identity only: source `none`, no other `gpu.*` stamp or span event."""
    docs = _json_lines(files.get(TRACES, ""))
    for doc in docs:
        for span in _spans(doc):
            if _attr(span, SOURCE) is None:
                continue
            kept = []
            for item in span.get("attributes", []):
                key = item.get("key", "")
                if key == SOURCE:
                    item = {"key": SOURCE, "value": {"stringValue": "none"}}
                elif key.startswith("gpu.") and key not in IDENTITY:
                    continue
                elif key == "error.type" and _attr(span, "error.type") == "gpu_lost":
                    item = {"key": key, "value": {"stringValue": _error_type_from_text(span)}}
                kept.append(item)
            span["attributes"] = kept
            events = [e for e in span.get("events", []) if not str(e.get("name", "")).startswith("gpu.")]
            if "events" in span:
                span["events"] = events
    return {**files, TRACES: _dump_lines(docs)}


def _error_type_from_text(span: dict[str, Any]) -> str:
    """What the collector calls a CUDA error without NVML: from the exception's text alone."""
    text = str(span.get("status", {}).get("message", ""))
    if "GPU is lost" in text or "fallen off the bus" in text:
        return "gpu_lost"
    if "illegal memory access" in text or "illegal address" in text:
        return "cuda_illegal_address"
    return "cuda_launch_failure"


def no_kernel_log(files: FileSet, rng: random.Random) -> FileSet:
    """The kernel log is gone."""
    return {name: text for name, text in files.items() if name != KERNEL}


def no_prometheus(files: FileSet, rng: random.Random) -> FileSet:
    """The Prometheus range queries are gone."""
    return {name: text for name, text in files.items() if name != METRICS}


def metrics_skewed(files: FileSet, rng: random.Random) -> FileSet:
    """Every metric sample's timestamp moved by one drawn 60-90 s, earlier or later."""
    shift = rng.uniform(*SKEW_S) * rng.choice((-1.0, 1.0))
    docs = _json_lines(files.get(METRICS, ""))
    for doc in docs:
        for series in doc.get("data", {}).get("result", []):
            if "values" in series:
                series["values"] = [[float(ts) + shift, value] for ts, value in series["values"]]
            if "value" in series:
                ts, value = series["value"]
                series["value"] = [float(ts) + shift, value]
    return {**files, METRICS: _dump_lines(docs)} if METRICS in files else dict(files)


def _is_error(span: dict[str, Any]) -> bool:
    return span.get("status", {}).get("code") in _ERROR_CODES


def tail_sampled(files: FileSet, rng: random.Random) -> FileSet:
    """Keep every trace with an error span and `TAIL_KEEP` of the others (a seeded hash of the trace id)."""
    salt = str(rng.getrandbits(32)).encode()
    docs = _json_lines(files.get(TRACES, ""))
    errored = {s["traceId"] for doc in docs for s in _spans(doc) if _is_error(s)}

    def keep(trace_id: str) -> bool:
        return trace_id in errored or zlib.crc32(salt + trace_id.encode()) / 2**32 < TAIL_KEEP

    kept_docs = []
    for doc in docs:
        for rs in doc.get("resourceSpans", []):
            for ss in rs.get("scopeSpans", []):
                ss["spans"] = [s for s in ss.get("spans", []) if keep(s["traceId"])]
            rs["scopeSpans"] = [ss for ss in rs.get("scopeSpans", []) if ss["spans"]]
        doc["resourceSpans"] = [rs for rs in doc.get("resourceSpans", []) if rs["scopeSpans"]]
        if doc["resourceSpans"]:
            kept_docs.append(doc)
    return {**files, TRACES: _dump_lines(kept_docs)}


def gpu_operator_labels(files: FileSet, rng: random.Random) -> FileSet:
    """dcgm-exporter's labels as the gpu-operator's deployment writes them (see the module's docstring)."""
    if METRICS not in files:
        return dict(files)
    docs = _json_lines(files[METRICS])
    pods: dict[tuple[str, str], str] = {}
    addresses: dict[str, str] = {}
    replica_set = f"{rng.getrandbits(40):010x}"[:10]
    for doc in docs:
        for series in doc.get("data", {}).get("result", []):
            labels = series.get("metric", {})
            host = labels.pop("Hostname", None) or labels.get("hostname")
            if host is None:
                continue
            labels["hostname"] = host
            gpu = labels.get("gpu", "")
            if (host, gpu) not in pods:
                pods[host, gpu] = f"ddcolor-{replica_set}-{rng.getrandbits(25):05x}"
            if host not in addresses:
                addresses[host] = f"10.244.{len(addresses) + 1}.{rng.randint(2, 250)}:9400"
            labels.update(
                {
                    "pod": pods[host, gpu],
                    "namespace": "inference",
                    "container": "ddcolor",
                    "job": "nvidia-dcgm-exporter",
                    "instance": addresses[host],
                }
            )
    return {**files, METRICS: _dump_lines(docs)}


#: The lab's request span, as an HTTP server instrumentation names it.
SERVER_SPAN = "POST /colorize"
ROUTE = "/colorize"
#: The rule `ingest --unit` takes for the unstamped perturbations' spans.
UNSTAMPED_UNIT = f"service=*,name={SERVER_SPAN},kind=server"
NAMESPACE = "inference"
CONTAINER = "ddcolor"
_SERVER_KIND = (2, "SPAN_KIND_SERVER")
#: The application's own attributes, kept on the server span (set with `span.set_attribute` in its handler).
_WORKLOAD = ("ddcolor.input_size", "ddcolor.model", "ddcolor.task_type", "image.width", "image.height")


def _str(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def _int(key: str, value: int) -> dict[str, Any]:
    return {"key": key, "value": {"intValue": str(value)}}


def _pods_by_uuid(metrics_text: str) -> dict[str, tuple[str, str]]:
    """GPU UUID -> (pod, node) from the series' dcgm-exporter labels."""
    pods: dict[str, tuple[str, str]] = {}
    for doc in _json_lines(metrics_text):
        for series in doc.get("data", {}).get("result", []):
            labels = series.get("metric", {})
            if labels.get("UUID") and labels.get("pod"):
                pods.setdefault(labels["UUID"], (labels["pod"], labels.get("hostname", "")))
    return pods


def _server_span(server: dict[str, Any], inference: dict[str, Any] | None) -> dict[str, Any]:
    """The request's server span as the OTel HTTP server instrumentation ends it, the handler's outcome on it."""
    failed = _is_error(server) or (inference is not None and _is_error(inference))
    attributes = [_str("http.request.method", "POST"), _str("http.route", ROUTE), _str("url.path", ROUTE)]
    attributes.append(_str("url.scheme", "http"))
    if inference is not None:
        attributes += [i for i in inference.get("attributes", []) if i.get("key") in _WORKLOAD]
    attributes.append(_int("http.response.status_code", 500 if failed else 200))
    events = [e for e in server.get("events", []) if e.get("name") == "exception"]
    if failed:
        source = inference if inference is not None and _is_error(inference) else server
        exception = next((e for e in source.get("events", []) if e.get("name") == "exception"), None)
        message = str(source.get("status", {}).get("message", "")) or "TimeoutError"
        if exception is None:
            kind, _, text = message.partition(": ")
            exception = {
                "timeUnixNano": server.get("endTimeUnixNano"),
                "name": "exception",
                "attributes": [_str("exception.type", kind.strip() or "Exception"), _str("exception.message", text)],
            }
        exc_type = next(
            (i["value"].get("stringValue", "") for i in exception["attributes"] if i.get("key") == "exception.type"),
            "Exception",
        )
        attributes.append(_str("error.type", exc_type))
        events = [exception]
        server["status"] = {"code": 2, "message": message}
    server["attributes"] = attributes
    server["events"] = events
    server["kind"] = 2
    return server


def _unstamped(files: FileSet, pods: dict[str, tuple[str, str]]) -> FileSet:
    """The traces as an HTTP server instrumentation writes them; one resource per pod where `pods` name them."""
    docs = _json_lines(files.get(TRACES, ""))
    inference: dict[str, dict[str, Any]] = {}
    for doc in docs:
        for span in _spans(doc):
            if _attr(span, SOURCE) is not None:
                inference[span["traceId"]] = span
    out = []
    for doc in docs:
        groups: dict[tuple[Any, ...], dict[str, Any]] = {}
        for rs in doc.get("resourceSpans", []):
            resource = list(rs.get("resource", {}).get("attributes", []))
            for ss in rs.get("scopeSpans", []):
                for span in ss.get("spans", []):
                    if _attr(span, SOURCE) is not None:
                        continue  # the gpu-rca inference span: not written without its collector
                    request = inference.get(span["traceId"])
                    if span.get("name") == SERVER_SPAN and span.get("kind") in _SERVER_KIND:
                        span = _server_span(span, request)
                    pod = pods.get(str(_attr(request, "gpu.uuid"))) if request is not None else None
                    attrs = resource
                    if pod is not None:
                        attrs = [
                            *resource,
                            _str("k8s.pod.name", pod[0]),
                            _str("k8s.namespace.name", NAMESPACE),
                            _str("k8s.node.name", pod[1]),
                            _str("k8s.container.name", CONTAINER),
                        ]
                    key = tuple(json.dumps(i, sort_keys=True) for i in attrs)
                    group = groups.setdefault(key, {"resource": {"attributes": attrs}, "scopeSpans": []})
                    if not group["scopeSpans"]:
                        group["scopeSpans"].append(
                            {"scope": {"name": "opentelemetry.instrumentation.asgi"}, "spans": []}
                        )
                    group["scopeSpans"][0]["spans"].append(span)
        if groups:
            out.append({"resourceSpans": list(groups.values())})
    return {**files, TRACES: _dump_lines(out)}


def unstamped(files: FileSet, rng: random.Random) -> FileSet:
    """OTel HTTP server spans, no `gpu.*`, on Kubernetes: pods in the resource and the metrics' labels."""
    labelled = gpu_operator_labels(files, rng)
    return _unstamped(labelled, _pods_by_uuid(labelled.get(METRICS, "")))


def unstamped_hosts(files: FileSet, rng: random.Random) -> FileSet:
    """OTel HTTP server spans, no `gpu.*`, no Kubernetes: a host with one GPU is the only join."""
    return _unstamped(files, {})


#: Every perturbation of the robustness matrix, by the name the report uses.
PERTURBATIONS: dict[str, Perturbation] = {
    "telemetry_none": telemetry_none,
    "no_kernel_log": no_kernel_log,
    "no_prometheus": no_prometheus,
    "metrics_skewed": metrics_skewed,
    "tail_sampled": tail_sampled,
    "gpu_operator_labels": gpu_operator_labels,
    "unstamped": unstamped,
    "unstamped_hosts": unstamped_hosts,
}
#: `ingest --unit` rules a perturbation's files need (none: the collector's stamps name the inference spans).
UNITS: dict[str, tuple[str, ...]] = {"unstamped": (UNSTAMPED_UNIT,), "unstamped_hosts": (UNSTAMPED_UNIT,)}


def perturbed(files: FileSet, name: str, seed: str) -> FileSet:
    """`files` under perturbation `name`, drawn from the seed `perturb/{seed}/{name}`."""
    return PERTURBATIONS[name](dict(files), random.Random(f"perturb/{seed}/{name}"))


__all__ = [
    "PERTURBATIONS",
    "UNITS",
    "UNSTAMPED_UNIT",
    "FileSet",
    "Perturbation",
    "gpu_operator_labels",
    "metrics_skewed",
    "no_kernel_log",
    "no_prometheus",
    "perturbed",
    "tail_sampled",
    "telemetry_none",
    "unstamped",
    "unstamped_hosts",
]
