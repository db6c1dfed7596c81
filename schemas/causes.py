"""The cause catalog (docs/contracts.md §4): ids are fixed; each carries its mechanism and the operator's action."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cause:
    """A root cause an operator acts on (never a symptom such as latency or error rate)."""

    id: str
    title: str
    mechanism: str
    action: str


GPU_OOM_LARGE_INPUTS = "gpu_oom_large_inputs"
GPU_MEMORY_FOREIGN_PROCESS = "gpu_memory_foreign_process"
GPU_MEMORY_LEAK = "gpu_memory_leak"
COMPUTE_SATURATION = "compute_saturation"
THERMAL_THROTTLING = "thermal_throttling"
POWER_CAPPING = "power_capping"
HW_SLOWDOWN = "hw_slowdown"
ECC_MEMORY_ERRORS = "ecc_memory_errors"
GPU_FALLEN_OFF_BUS = "gpu_fallen_off_bus"
CUDA_KERNEL_FAULT = "cuda_kernel_fault"
APPLICATION_ERROR = "application_error"
HOST_BOTTLENECK = "host_bottleneck"

CAUSES: tuple[Cause, ...] = (
    Cause(
        "gpu_oom_large_inputs",
        "GPU memory exhausted by large inputs",
        "device memory exhausted by the workload itself (large inputs, batch, concurrency)",
        "Cap the input size at the largest size that fits, or lower per-GPU concurrency for large inputs.",
    ),
    Cause(
        "gpu_memory_foreign_process",
        "GPU memory taken by another process",
        "memory taken by another process on the GPU",
        "Find and move the other process off the GPU (nvidia-smi --query-compute-apps), or drain the GPU.",
    ),
    Cause(
        "gpu_memory_leak",
        "The service's own GPU memory grows until it runs out",
        "the service's own GPU memory grows with requests served (tensors kept alive, or caching-allocator"
        " fragmentation: memory reserved but unallocated) until allocations fail",
        "A leak (memory climbing with requests served, a version or a worker's age as driver): fix or roll back"
        " the version that keeps tensors alive, and recycle workers (e.g. after N requests) meanwhile."
        " Fragmentation (much memory reserved but unallocated in the OOM texts): set"
        " PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True, or call torch.cuda.empty_cache() between"
        " requests of very different sizes.",
    ),
    Cause(
        "compute_saturation",
        "GPU compute saturated",
        "too many concurrent requests; queueing leads to timeouts",
        "Add GPU capacity or limit concurrency and queue length; shed load with a clear busy answer.",
    ),
    Cause(
        "thermal_throttling",
        "Clocks cut for heat",
        "clocks cut for heat",
        "Check cooling (fans, airflow, inlet temperature) and move load off the hot GPU.",
    ),
    Cause(
        "power_capping",
        "Clocks cut at the power limit",
        "clocks cut at the power limit",
        "Restore the default power limit (nvidia-smi -pl) or check the power supply policy.",
    ),
    Cause(
        "hw_slowdown",
        "External hardware slowdown",
        "external slowdown / power brake",
        "Check the chassis power and the BMC's power-brake signal; drain the GPU until it clears.",
    ),
    Cause(
        "ecc_memory_errors",
        "Uncorrectable GPU memory errors",
        "uncorrectable memory errors, row-remap failures",
        "Drain the GPU and reset it so rows are remapped; RMA if row remapping fails.",
    ),
    Cause(
        "gpu_fallen_off_bus",
        "GPU fell off the bus",
        "GPU lost (XID 79)",
        "Drain the node, reboot it, and check PCIe seating, power and temperature.",
    ),
    Cause(
        "cuda_kernel_fault",
        "Faulting CUDA kernel or driver error",
        "faulting kernel / driver error",
        "Restart the worker, then reproduce with CUDA_LAUNCH_BLOCKING=1; check the driver and model build.",
    ),
    Cause(
        "application_error",
        "Application error",
        "failures with no GPU correlation",
        "Roll back the version or fix the code path the failures concentrate on.",
    ),
    Cause(
        "host_bottleneck",
        "Host bottleneck",
        "the host's CPU, data loading or memory starves the GPU",
        "Find what takes the host's CPU or memory (top, node_exporter), move it away or give the service more cores.",
    ),
)
CAUSES_BY_ID: dict[str, Cause] = {c.id: c for c in CAUSES}
CAUSE_IDS: tuple[str, ...] = tuple(c.id for c in CAUSES)
