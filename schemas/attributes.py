"""Span and resource attribute names (docs/contracts.md §1), and how each stamp is typed in the store (docs/contracts.md §7)."""

from __future__ import annotations

from dataclasses import dataclass

# --- identity and provenance ---------------------------------------------------------------
GPU_INDEX = "gpu.index"
GPU_UUID = "gpu.uuid"
GPU_NAME = "gpu.name"
GPU_PCI_BUS_ID = "gpu.pci_bus_id"
GPU_MIG_INSTANCE_ID = "gpu.mig.instance_id"
TELEMETRY_SOURCE = "gpu.telemetry.source"
TELEMETRY_SAMPLES = "gpu.telemetry.samples"
TELEMETRY_STALE = "gpu.telemetry.stale"

# --- window aggregates ----------------------------------------------------------------------
TEMPERATURE_MAX = "gpu.temperature.max"
TEMPERATURE_SLOWDOWN = "gpu.temperature.slowdown"
POWER_MAX = "gpu.power.max"
POWER_MEAN = "gpu.power.mean"
POWER_LIMIT = "gpu.power.limit"
MEMORY_USED_START = "gpu.memory.used.start"
MEMORY_USED_MAX = "gpu.memory.used.max"
MEMORY_TOTAL = "gpu.memory.total"
MEMORY_PROCESS_MAX = "gpu.memory.process.max"
UTILIZATION_MEAN = "gpu.utilization.mean"
UTILIZATION_MAX = "gpu.utilization.max"
CLOCK_SM_MIN = "gpu.clock.sm.min"
CLOCK_SM_MAX = "gpu.clock.sm.max"
THROTTLE_REASONS = "gpu.throttle.reasons"
ECC_CORRECTED_DELTA = "gpu.ecc.corrected.delta"
ECC_UNCORRECTED_DELTA = "gpu.ecc.uncorrected.delta"
XID = "gpu.xid"
INFLIGHT_MAX = "gpu.inflight.max"
QUEUE_MS = "inference.queue_ms"
ERROR_TYPE = "error.type"
#: Set by the service, not stamped: this request's own peak device memory (torch's max_memory_allocated
#: over the request), which the admission advisor prefers to the process-wide NVML stamp.
INFERENCE_MEMORY_PEAK = "inference.memory.peak_bytes"

# --- the admission advisor's decision, on the request's server span ---------------------------
ADVISOR_DECISION = "gpu_rca.advisor.decision"  # "accept" | "refuse" | "shadow_refuse"
ADVISOR_MAX_INPUT_SIZE = "gpu_rca.advisor.max_input_size"
ADVISOR_REASON = "gpu_rca.advisor.reason"

# --- span events for transitions inside a span ---------------------------------------------
EVENT_THROTTLE = "gpu.throttle"
EVENT_XID = "gpu.xid"
EVENT_ECC = "gpu.ecc"

# --- telemetry sources ----------------------------------------------------------------------
SOURCE_NVML = "nvml"
SOURCE_SIMULATED = "simulated"
SOURCE_NONE = "none"

# --- error.type values the collector classifies -----------------------------------------------
ERROR_CUDA_OOM = "cuda_oom"
ERROR_CUDA_ILLEGAL_ADDRESS = "cuda_illegal_address"
ERROR_CUDA_LAUNCH_FAILURE = "cuda_launch_failure"
ERROR_GPU_LOST = "gpu_lost"
ERROR_TIMEOUT = "timeout"

# --- workload attributes the caller sets (DDColor) -----------------------------------------
DDCOLOR_INPUT_SIZE = "ddcolor.input_size"
DDCOLOR_MODEL = "ddcolor.model"
DDCOLOR_TASK_TYPE = "ddcolor.task_type"
IMAGE_WIDTH = "image.width"
IMAGE_HEIGHT = "image.height"

# --- resource attributes ----------------------------------------------------------------------
SERVICE_NAME = "service.name"
SERVICE_VERSION = "service.version"
HOST_NAME = "host.name"
K8S_NODE_NAME = "k8s.node.name"
#: Set by the OTel Collector's k8sattributes processor; matched to dcgm-exporter's `pod`/`namespace` labels.
K8S_POD_NAME = "k8s.pod.name"
K8S_NAMESPACE_NAME = "k8s.namespace.name"

# --- OTel semantic conventions other instrumentations write (read on spans gpu-rca did not stamp) ---------
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_ROUTE = "http.route"
URL_PATH = "url.path"
EXCEPTION_EVENT = "exception"
EXCEPTION_TYPE = "exception.type"
EXCEPTION_MESSAGE = "exception.message"


@dataclass(frozen=True)
class Stamp:
    """One stamp of docs/contracts.md §1: its attribute name, Python type, store column and DuckDB type."""

    attribute: str
    kind: type  # int, float, str, bool, or list (element type in `element`)
    sql_type: str
    unit: str | None = None
    element: type | None = None

    @property
    def column(self) -> str:
        """The store column: the attribute name with `_` for `.`."""
        return self.attribute.replace(".", "_")


#: Every stamp the collector writes and the store keeps in a typed column, in a stable order.
STAMPS: tuple[Stamp, ...] = (
    Stamp(GPU_INDEX, int, "BIGINT"),
    Stamp(GPU_UUID, str, "VARCHAR"),
    Stamp(GPU_NAME, str, "VARCHAR"),
    Stamp(GPU_PCI_BUS_ID, str, "VARCHAR"),
    Stamp(GPU_MIG_INSTANCE_ID, int, "BIGINT"),
    Stamp(TELEMETRY_SOURCE, str, "VARCHAR"),
    Stamp(TELEMETRY_SAMPLES, int, "BIGINT"),
    Stamp(TELEMETRY_STALE, bool, "BOOLEAN"),
    Stamp(TEMPERATURE_MAX, int, "BIGINT", "Cel"),
    Stamp(TEMPERATURE_SLOWDOWN, int, "BIGINT", "Cel"),
    Stamp(POWER_MAX, float, "DOUBLE", "W"),
    Stamp(POWER_MEAN, float, "DOUBLE", "W"),
    Stamp(POWER_LIMIT, float, "DOUBLE", "W"),
    Stamp(MEMORY_USED_START, int, "BIGINT", "By"),
    Stamp(MEMORY_USED_MAX, int, "BIGINT", "By"),
    Stamp(MEMORY_TOTAL, int, "BIGINT", "By"),
    Stamp(MEMORY_PROCESS_MAX, int, "BIGINT", "By"),
    Stamp(UTILIZATION_MEAN, float, "DOUBLE", "%"),
    Stamp(UTILIZATION_MAX, float, "DOUBLE", "%"),
    Stamp(CLOCK_SM_MIN, int, "BIGINT", "MHz"),
    Stamp(CLOCK_SM_MAX, int, "BIGINT", "MHz"),
    Stamp(THROTTLE_REASONS, list, "VARCHAR[]", element=str),
    Stamp(ECC_CORRECTED_DELTA, int, "BIGINT"),
    Stamp(ECC_UNCORRECTED_DELTA, int, "BIGINT"),
    Stamp(XID, list, "BIGINT[]", element=int),
    Stamp(INFLIGHT_MAX, int, "BIGINT"),
    Stamp(QUEUE_MS, float, "DOUBLE", "ms"),
    Stamp(ERROR_TYPE, str, "VARCHAR"),
)
STAMPS_BY_ATTRIBUTE: dict[str, Stamp] = {s.attribute: s for s in STAMPS}

#: Attributes a caller sets on an inference span that ranking treats as workload drivers.
WORKLOAD_ATTRIBUTES: tuple[str, ...] = (
    DDCOLOR_INPUT_SIZE,
    DDCOLOR_MODEL,
    DDCOLOR_TASK_TYPE,
    IMAGE_WIDTH,
    IMAGE_HEIGHT,
)
