"""Metric names (docs/contracts.md §2): dcgm-exporter 4.x names as canonical, every alias seen in the wild, labels.

Canonical values are stored in the canonical metric's unit (dcgm-exporter's: W, MiB, °C, %, MHz, ns).
An alias row carries the factor that converts its value into that unit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """A canonical metric as dcgm-exporter 4.x exports it."""

    name: str
    type: str  # "gauge" | "counter"
    unit: str | None
    help: str
    dcgm_field_id: int | None = None


GPU_TEMP = "DCGM_FI_DEV_GPU_TEMP"
MEMORY_TEMP = "DCGM_FI_DEV_MEMORY_TEMP"
SLOWDOWN_TEMP = "DCGM_FI_DEV_SLOWDOWN_TEMP"
SHUTDOWN_TEMP = "DCGM_FI_DEV_SHUTDOWN_TEMP"
POWER_USAGE = "DCGM_FI_DEV_POWER_USAGE"
ENFORCED_POWER_LIMIT = "DCGM_FI_DEV_ENFORCED_POWER_LIMIT"
TOTAL_ENERGY_CONSUMPTION = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
SM_CLOCK = "DCGM_FI_DEV_SM_CLOCK"
MEM_CLOCK = "DCGM_FI_DEV_MEM_CLOCK"
MAX_SM_CLOCK = "DCGM_FI_DEV_MAX_SM_CLOCK"
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
MEM_COPY_UTIL = "DCGM_FI_DEV_MEM_COPY_UTIL"
FB_FREE = "DCGM_FI_DEV_FB_FREE"
FB_USED = "DCGM_FI_DEV_FB_USED"
FB_TOTAL = "DCGM_FI_DEV_FB_TOTAL"
XID_ERRORS = "DCGM_FI_DEV_XID_ERRORS"
CLOCKS_EVENT_REASONS = "DCGM_FI_DEV_CLOCKS_EVENT_REASONS"
PCIE_REPLAY_COUNTER = "DCGM_FI_DEV_PCIE_REPLAY_COUNTER"
ECC_SBE_VOL_TOTAL = "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"
ECC_DBE_VOL_TOTAL = "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"
POWER_VIOLATION = "DCGM_FI_DEV_POWER_VIOLATION"
THERMAL_VIOLATION = "DCGM_FI_DEV_THERMAL_VIOLATION"
UNCORRECTABLE_REMAPPED_ROWS = "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS"
CORRECTABLE_REMAPPED_ROWS = "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS"
ROW_REMAP_FAILURE = "DCGM_FI_DEV_ROW_REMAP_FAILURE"

#: Every canonical metric, in the order the exporter writes them.
METRICS: tuple[Metric, ...] = (
    Metric(SM_CLOCK, "gauge", "MHz", "SM clock frequency (in MHz).", 100),
    Metric(MEM_CLOCK, "gauge", "MHz", "Memory clock frequency (in MHz).", 101),
    Metric(MAX_SM_CLOCK, "gauge", "MHz", "Maximum supported SM clock (in MHz).", 113),
    Metric(CLOCKS_EVENT_REASONS, "gauge", None, "Current clock event reasons (bitmask of NVML reasons).", 112),
    Metric(MEMORY_TEMP, "gauge", "C", "Memory temperature (in C).", 140),
    Metric(GPU_TEMP, "gauge", "C", "GPU temperature (in C).", 150),
    Metric(SLOWDOWN_TEMP, "gauge", "C", "Slowdown temperature (in C).", 158),
    Metric(SHUTDOWN_TEMP, "gauge", "C", "Shutdown temperature (in C).", 159),
    Metric(POWER_USAGE, "gauge", "W", "Power draw (in W).", 155),
    Metric(TOTAL_ENERGY_CONSUMPTION, "counter", "mJ", "Total energy consumption since boot (in mJ).", 156),
    Metric(ENFORCED_POWER_LIMIT, "gauge", "W", "Enforced power limit (in W).", 164),
    Metric(PCIE_REPLAY_COUNTER, "counter", None, "Total number of PCIe retries.", 202),
    Metric(GPU_UTIL, "gauge", "%", "GPU utilization (in %).", 203),
    Metric(MEM_COPY_UTIL, "gauge", "%", "Memory utilization (in %).", 204),
    Metric(XID_ERRORS, "gauge", None, "Value of the last XID error encountered.", 230),
    Metric(POWER_VIOLATION, "counter", "ns", "Throttling duration due to power constraints (in ns).", 240),
    Metric(THERMAL_VIOLATION, "counter", "ns", "Throttling duration due to thermal constraints (in ns).", 241),
    Metric(FB_TOTAL, "gauge", "MiB", "Total framebuffer memory (in MiB).", 250),
    Metric(FB_FREE, "gauge", "MiB", "Framebuffer memory free (in MiB).", 251),
    Metric(FB_USED, "gauge", "MiB", "Framebuffer memory used (in MiB).", 252),
    Metric(ECC_SBE_VOL_TOTAL, "counter", None, "Total number of single-bit volatile ECC errors.", 310),
    Metric(ECC_DBE_VOL_TOTAL, "counter", None, "Total number of double-bit volatile ECC errors.", 311),
    Metric(UNCORRECTABLE_REMAPPED_ROWS, "counter", None, "Number of remapped rows for uncorrectable errors", 393),
    Metric(CORRECTABLE_REMAPPED_ROWS, "counter", None, "Number of remapped rows for correctable errors", 394),
    Metric(ROW_REMAP_FAILURE, "gauge", None, "Whether remapping of rows has failed", 395),
)
METRICS_BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}


@dataclass(frozen=True)
class Alias:
    """Another spelling of a canonical metric; `value * factor` is in the canonical unit."""

    name: str
    canonical: str
    factor: float = 1.0
    origin: str = ""


ALIASES: tuple[Alias, ...] = (
    # Deprecated DCGM field name, still emitted by custom CSVs.
    Alias("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", CLOCKS_EVENT_REASONS, origin="dcgm deprecated"),
    # DCGM 4.6 field names (same field ids, so the same values: 203 stays a percentage).
    Alias("DCGM_FI_DEV_GPU_TEMP_CELSIUS", GPU_TEMP, origin="dcgm 4.6"),
    Alias("DCGM_FI_DEV_MEMORY_TEMP_CELSIUS", MEMORY_TEMP, origin="dcgm 4.6"),
    Alias("DCGM_FI_DEV_BOARD_POWER_WATTS", POWER_USAGE, origin="dcgm 4.6"),
    Alias("DCGM_FI_DEV_GPU_UTIL_RATIO", GPU_UTIL, origin="dcgm 4.6"),
    Alias("DCGM_FI_DEV_XID_ERROR", XID_ERRORS, origin="dcgm 4.6"),
    Alias("DCGM_FI_DEV_PCIE_REPLAY_TOTAL", PCIE_REPLAY_COUNTER, origin="dcgm 4.6"),
    Alias("DCGM_FI_DEV_ROW_REMAP_UNCORRECTABLE_TOTAL", UNCORRECTABLE_REMAPPED_ROWS, origin="dcgm 4.6"),
    Alias("DCGM_FI_DEV_ROW_REMAP_CORRECTABLE_TOTAL", CORRECTABLE_REMAPPED_ROWS, origin="dcgm 4.6"),
    Alias("DCGM_FI_DEV_ROW_REMAP_FAILED", ROW_REMAP_FAILURE, origin="dcgm 4.6"),
    # dcgm-exporter 1.x (bash wrapper around dcgmi dmon); violations were in microseconds.
    Alias("dcgm_sm_clock", SM_CLOCK, origin="dcgm-exporter 1.x"),
    Alias("dcgm_memory_clock", MEM_CLOCK, origin="dcgm-exporter 1.x"),
    Alias("dcgm_memory_temp", MEMORY_TEMP, origin="dcgm-exporter 1.x"),
    Alias("dcgm_gpu_temp", GPU_TEMP, origin="dcgm-exporter 1.x"),
    Alias("dcgm_power_usage", POWER_USAGE, origin="dcgm-exporter 1.x"),
    Alias("dcgm_total_energy_consumption", TOTAL_ENERGY_CONSUMPTION, origin="dcgm-exporter 1.x"),
    Alias("dcgm_pcie_replay_counter", PCIE_REPLAY_COUNTER, origin="dcgm-exporter 1.x"),
    Alias("dcgm_gpu_utilization", GPU_UTIL, origin="dcgm-exporter 1.x"),
    Alias("dcgm_mem_copy_utilization", MEM_COPY_UTIL, origin="dcgm-exporter 1.x"),
    Alias("dcgm_xid_errors", XID_ERRORS, origin="dcgm-exporter 1.x"),
    Alias("dcgm_fb_free", FB_FREE, origin="dcgm-exporter 1.x"),
    Alias("dcgm_fb_used", FB_USED, origin="dcgm-exporter 1.x"),
    Alias("dcgm_ecc_sbe_volatile_total", ECC_SBE_VOL_TOTAL, origin="dcgm-exporter 1.x"),
    Alias("dcgm_ecc_dbe_volatile_total", ECC_DBE_VOL_TOTAL, origin="dcgm-exporter 1.x"),
    Alias("dcgm_power_violation", POWER_VIOLATION, 1000.0, origin="dcgm-exporter 1.x (µs)"),
    Alias("dcgm_thermal_violation", THERMAL_VIOLATION, 1000.0, origin="dcgm-exporter 1.x (µs)"),
    # The seed article's PromQL; dcgm_temperature_gpu never existed in dcgm-exporter, but users copy it.
    Alias("dcgm_fb_total", FB_TOTAL, origin="seed article"),
    Alias("dcgm_temperature_gpu", GPU_TEMP, origin="seed article"),
    # The seed article's nvidia-smi script (nvidia-smi reports MiB and calls them MB).
    Alias("nvidia_gpu_utilization_percent", GPU_UTIL, origin="nvidia-smi script"),
    Alias("nvidia_gpu_memory_used_mb", FB_USED, origin="nvidia-smi script"),
    Alias("nvidia_gpu_memory_total_mb", FB_TOTAL, origin="nvidia-smi script"),
)
ALIASES_BY_NAME: dict[str, Alias] = {a.name: a for a in ALIASES}


def canonical_metric(name: str) -> tuple[str, float] | None:
    """(canonical name, unit factor) for a canonical or alias name; None for a metric gpu-rca does not use."""
    if name in METRICS_BY_NAME:
        return name, 1.0
    alias = ALIASES_BY_NAME.get(name)
    return (alias.canonical, alias.factor) if alias else None


# --- OpenTelemetry hardware semantic conventions (`hw.*`) ---------------------------------------
# The GPU metrics of semconv v1.37.0 and later (model/hardware/gpu-metrics.yaml, stability: development)
# and the common hardware metrics when they describe a GPU (`hw.type="gpu"`). gpu-rca stores them under
# the canonical names above, converted into the canonical unit; docs/collector.md lists the mapping.
HW_ID = "hw.id"
HW_TYPE = "hw.type"
HW_GPU_TASK = "hw.gpu.task"
HW_ERROR_TYPE = "error.type"


@dataclass(frozen=True)
class HwMetric:
    """An OTel `hw.*` metric stored as `canonical`: `value * factor` is in the canonical unit.

    `when` holds (attribute, allowed values) pairs a data point must match; None allows the attribute to be absent.
    """

    name: str
    canonical: str
    factor: float = 1.0
    when: tuple[tuple[str, tuple[str | None, ...]], ...] = ()


_GPU = ((HW_TYPE, ("gpu",)),)
HW_METRICS: tuple[HwMetric, ...] = (
    HwMetric("hw.gpu.memory.usage", FB_USED, 1 / (1024 * 1024)),  # By -> MiB
    HwMetric("hw.gpu.memory.limit", FB_TOTAL, 1 / (1024 * 1024)),
    HwMetric("hw.gpu.utilization", GPU_UTIL, 100.0, ((HW_GPU_TASK, ("general", None)),)),  # fraction -> %
    HwMetric("hw.power", POWER_USAGE, 1.0, _GPU),  # W
    HwMetric("hw.energy", TOTAL_ENERGY_CONSUMPTION, 1000.0, _GPU),  # J -> mJ
    HwMetric("hw.temperature", GPU_TEMP, 1.0, _GPU),  # Cel
    HwMetric("hw.errors", ECC_SBE_VOL_TOTAL, 1.0, (*_GPU, (HW_ERROR_TYPE, ("corrected",)))),
    HwMetric("hw.errors", ECC_DBE_VOL_TOTAL, 1.0, (*_GPU, (HW_ERROR_TYPE, ("uncorrected",)))),
)


def hw_canonical(name: str, attributes: Mapping[str, object]) -> tuple[str, float] | None:
    """(canonical name, unit factor) for an OTel `hw.*` metric data point gpu-rca stores, else None."""
    for metric in HW_METRICS:
        if metric.name == name and all(attributes.get(key) in allowed for key, allowed in metric.when):
            return metric.canonical, metric.factor
    return None


# --- labels ---------------------------------------------------------------------------------
LABEL_GPU = "gpu"
LABEL_UUID = "UUID"
LABEL_PCI_BUS_ID = "pci_bus_id"
LABEL_DEVICE = "device"
LABEL_MODEL_NAME = "modelName"
LABEL_HOSTNAME = "Hostname"
#: dcgm-exporter's label-type counter DCGM_FI_DRIVER_VERSION (field 1, on by default): the driver version.
LABEL_DRIVER_VERSION = "DCGM_FI_DRIVER_VERSION"
LABEL_XID_ERR_CODE = "err_code"
LABEL_XID_ERR_MSG = "err_msg"
#: The labels the exporter writes on every GPU series, in dcgm-exporter's order (the host, then label counters;
#: the driver version is left out where NVML does not tell it).
GPU_LABELS: tuple[str, ...] = (
    LABEL_GPU,
    LABEL_UUID,
    LABEL_PCI_BUS_ID,
    LABEL_DEVICE,
    LABEL_MODEL_NAME,
    LABEL_HOSTNAME,
    LABEL_DRIVER_VERSION,
)
#: Spellings that name the GPU's UUID, most specific first.
UUID_LABELS: tuple[str, ...] = ("UUID", "uuid", "gpu_uuid")
#: Spellings that name the host. Last resort: `instance` (often an exporter pod on Kubernetes).
HOST_LABELS: tuple[str, ...] = ("Hostname", "hostname", "host", "node", "instance")
#: dcgm-exporter's Kubernetes labels (with its pod-resources mapping on): the pod holding the GPU.
LABEL_POD = "pod"
LABEL_NAMESPACE = "namespace"
LABEL_CONTAINER = "container"

# --- gpu-rca's own exporter counters ------------------------------------------------------------
TELEMETRY_DROPPED = "gpu_rca_telemetry_dropped_total"
TELEMETRY_ERRORS = "gpu_rca_telemetry_errors_total"
SAMPLER_SAMPLES = "gpu_rca_sampler_samples_total"
SAMPLER_LAST_SAMPLE = "gpu_rca_sampler_last_sample_timestamp_seconds"
ADVISOR_MAX_INPUT_SIZE = "gpu_rca_advisor_max_input_size"

# --- gpu-rca serve's own metrics (its GET /metrics, docs/contracts.md §9) ---------------------------------
SERVE_REQUESTS = "gpu_rca_serve_requests_total"
SERVE_REQUEST_BYTES = "gpu_rca_serve_request_bytes_total"
SERVE_SPANS_INGESTED = "gpu_rca_serve_spans_ingested_total"
SERVE_SPANS_REJECTED = "gpu_rca_serve_spans_rejected_total"
SERVE_TRACES_WITHOUT_INFERENCE = "gpu_rca_serve_traces_without_inference_span_total"  # no gpu.telemetry.source
SERVE_LOGS_INGESTED = "gpu_rca_serve_logs_ingested_total"
SERVE_LOGS_REJECTED = "gpu_rca_serve_logs_rejected_total"
SERVE_QUEUE_DEPTH = "gpu_rca_serve_queue_depth"
SERVE_WRITE_SECONDS = "gpu_rca_serve_write_seconds"
SERVE_PROMETHEUS_SAMPLES = "gpu_rca_serve_prometheus_samples_total"
SERVE_DIGESTS = "gpu_rca_serve_digests_total"
SERVE_SPANS_DROPPED = "gpu_rca_serve_spans_dropped_total"  # valid spans refused (queue full, shutting down)
SERVE_LOGS_DROPPED = "gpu_rca_serve_logs_dropped_total"
SERVE_METRIC_POINTS_STORED = "gpu_rca_serve_metric_points_stored_total"  # OTLP GPU metrics stored as samples
SERVE_METRIC_POINTS_REJECTED = "gpu_rca_serve_metric_points_rejected_total"  # GPU samples naming no known GPU
SERVE_METRIC_POINTS_IGNORED = "gpu_rca_serve_metric_points_ignored_total"  # acknowledged, not stored, by reason
SERVE_METRIC_POINTS_DROPPED = "gpu_rca_serve_metric_points_dropped_total"  # refused (queue full, shutting down)
SERVE_RETENTION_DELETED = "gpu_rca_serve_retention_deleted_rows_total"  # rows older than --retention, by table
SERVE_LOG_BYTES = "gpu_rca_serve_ingest_log_bytes"  # acknowledged request bytes on disk not yet stored
SERVE_LOG_MAX_BYTES = "gpu_rca_serve_ingest_log_max_bytes"  # --log-max-mib: past it, 503
SERVE_LOG_LAG_RECORDS = "gpu_rca_serve_ingest_log_lag_records"  # logged requests not yet stored
SERVE_LOG_LAG_SECONDS = "gpu_rca_serve_ingest_log_lag_seconds"  # age of the oldest request not yet stored
SERVE_LOG_LOADED = "gpu_rca_serve_ingest_log_loaded_records_total"  # logged requests stored by the loader
SERVE_LOG_REPLAYED = "gpu_rca_serve_ingest_log_replayed_records"  # found past the checkpoint on start
SERVE_LOG_CORRUPT = "gpu_rca_serve_ingest_log_corrupt_records"  # torn or corrupt records cut on start
SERVE_REQUESTS_REFUSED = "gpu_rca_serve_requests_refused_total"  # traces/logs refused before the body, by reason
SERVE_REQUESTS_IN_FLIGHT = "gpu_rca_serve_requests_in_flight"  # trace/log requests being read, checked, logged
SERVE_CONNECTIONS_DROPPED = "gpu_rca_serve_connections_dropped_total"  # head/body timeouts, mid-body disconnects
