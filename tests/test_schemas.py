from __future__ import annotations

import pytest

from gpu_rca import schemas
from gpu_rca.schemas import attributes, causes, metrics


@pytest.mark.parametrize(
    ("mask", "names"),
    [
        (0, []),
        (0x1 | 0x4, ["gpu_idle", "sw_power_cap"]),
        (0x8 | 0x80, ["hw_slowdown", "hw_power_brake"]),
        (0x20 | 0x40 | 0x400, ["sw_thermal", "hw_thermal", "reliability"]),
        (0x1000, ["bit_0x1000"]),
    ],
)
def test_throttle_reasons_round_trip(mask: int, names: list[str]) -> None:
    assert schemas.decode_throttle_reasons(mask) == names
    assert schemas.encode_throttle_reasons(names) == mask


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("00000000:3B:00.0", "0000:3b:00.0"),
        ("PCI:0000:3b:00", "0000:3b:00.0"),
        ("0018:01:00", "0018:01:00.0"),
        ("3b:00.1", "0000:3b:00.1"),
    ],
)
def test_pci_bus_ids_normalise(raw: str, normal: str) -> None:
    assert schemas.normalize_pci_bus_id(raw) == normal


def test_pci_bus_id_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a PCI bus id"):
        schemas.normalize_pci_bus_id("GPU-1234")


def test_every_alias_points_at_a_canonical_metric() -> None:
    for alias in metrics.ALIASES:
        assert alias.canonical in metrics.METRICS_BY_NAME, alias
        assert alias.name not in metrics.METRICS_BY_NAME
    assert metrics.canonical_metric("dcgm_power_violation") == (metrics.POWER_VIOLATION, 1000.0)
    assert metrics.canonical_metric("DCGM_FI_DEV_FB_USED") == (metrics.FB_USED, 1.0)
    assert metrics.canonical_metric("node_cpu_seconds_total") is None


def test_stamp_columns_are_unique_and_typed() -> None:
    columns = [s.column for s in attributes.STAMPS]
    assert len(columns) == len(set(columns))
    assert attributes.STAMPS_BY_ATTRIBUTE["gpu.xid"].sql_type == "BIGINT[]"
    assert attributes.STAMPS_BY_ATTRIBUTE["gpu.throttle.reasons"].column == "gpu_throttle_reasons"


def test_cause_catalog_ids_are_the_contract() -> None:
    assert all(getattr(causes, cause.upper()) == cause for cause in causes.CAUSE_IDS)  # the named constants
    assert causes.CAUSE_IDS == (
        "gpu_oom_large_inputs",
        "gpu_memory_foreign_process",
        "gpu_memory_leak",
        "compute_saturation",
        "thermal_throttling",
        "power_capping",
        "hw_slowdown",
        "ecc_memory_errors",
        "gpu_fallen_off_bus",
        "cuda_kernel_fault",
        "application_error",
        "host_bottleneck",
    )


def _project_module(name: str, level: int) -> bool:
    """True for a module of the project outside `gpu_rca.schemas` (relative imports stay inside it)."""
    if level:
        return level > 1
    return name == "gpu_rca" or (name.startswith("gpu_rca.") and not name.startswith("gpu_rca.schemas"))


def test_schemas_import_nothing_else_of_the_project() -> None:
    import ast
    from pathlib import Path

    for path in Path(schemas.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not _project_module(node.module, node.level), path
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not _project_module(alias.name, 0), path


def test_otlp_json_ids_are_hex_and_round_trip() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from gpu_rca.schemas import otlp_json

    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = bytes.fromhex("5b8efff798038103d269b633813fc60c")
    span.span_id = bytes.fromhex("eee19b7ec3c1b174")
    span.name = "ddcolor.inference"
    span.kind = 1
    line = otlp_json.message_to_json(request)
    assert '"traceId":"5b8efff798038103d269b633813fc60c"' in line
    assert '"kind":1' in line
    assert otlp_json.message_from_json(line, ExportTraceServiceRequest) == request


@pytest.mark.parametrize("bad", ['{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "{", "[]"])
def test_otlp_json_rejects_bad_documents_clearly(bad: str) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from gpu_rca.schemas import otlp_json

    with pytest.raises(schemas.InputError):
        otlp_json.message_from_json(bad, ExportTraceServiceRequest)
