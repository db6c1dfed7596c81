"""The XID catalog: what each NVIDIA XID code that matters to an inference service means.

Mnemonics, meanings and NVIDIA's immediate actions follow NVIDIA's XID catalog
(docs.nvidia.com/deploy/xid-errors). `kills_context` says the faulting process's CUDA context is lost
(its in-flight requests fail); `kills_gpu` says every context on the GPU is lost or the GPU must be
reset before it can be trusted again (all later requests on it fail until then).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Categories: where the fault lives, which is what points at a cause.
HARDWARE_MEMORY = "hardware-memory"
BUS = "bus"
NVLINK = "nvlink"
FIRMWARE = "firmware"
APPLICATION = "application"
DRIVER = "driver"
INFORMATIONAL = "informational"
UNKNOWN = "unknown"
CATEGORIES: tuple[str, ...] = (HARDWARE_MEMORY, BUS, NVLINK, FIRMWARE, APPLICATION, DRIVER, INFORMATIONAL, UNKNOWN)

#: The XID the driver means by "GPU has fallen off the bus" (also printed without an Xid line).
XID_FALLEN_OFF_BUS = 79


@dataclass(frozen=True)
class Xid:
    """One XID code: NVIDIA's mnemonic and meaning, a category, NVIDIA's immediate action, its blast radius."""

    code: int
    mnemonic: str
    meaning: str
    category: str
    action: str
    kills_context: bool
    kills_gpu: bool


_X = Xid
XIDS: tuple[Xid, ...] = (
    _X(8, "ROBUST_CHANNEL_FIFO_ERROR_IDLE_TIMEOUT", "GPU stopped processing", DRIVER, "RESTART_APP", True, False),
    _X(13, "ROBUST_CHANNEL_GR_EXCEPTION", "Graphics Engine Exception", APPLICATION, "RESTART_APP", True, False),
    _X(31, "ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT", "GPU memory page fault", APPLICATION, "RESTART_APP", True, False),
    _X(43, "ROBUST_CHANNEL_RESETCHANNEL_VERIF_ERROR", "GPU stopped processing", APPLICATION, "IGNORE", True, False),
    # Secondary: the driver tears down channels after another error (newer drivers name it).
    _X(
        45,
        "ROBUST_CHANNEL_PREEMPTIVE_REMOVAL",
        "Preemptive cleanup, due to previous errors",
        DRIVER,
        "WORKFLOW_XID_45",
        True,
        False,
    ),
    _X(46, "ROBUST_CHANNEL_GPU_TIMEOUT_ERROR", "GPU stopped processing", DRIVER, "RESET_GPU", True, True),
    _X(48, "ROBUST_CHANNEL_GPU_ECC_DBE", "Double Bit ECC Error", HARDWARE_MEMORY, "WORKFLOW_XID_48", True, False),
    _X(61, "PMU_BREAKPOINT", "Internal micro-controller breakpoint/warning", FIRMWARE, "CONTACT_SUPPORT", False, False),
    _X(62, "PMU_HALT_ERROR", "Internal micro-controller halt", FIRMWARE, "RESET_GPU", True, True),
    _X(63, "INFOROM_DRAM_RETIREMENT_EVENT", "GPU memory remapping event", HARDWARE_MEMORY, "IGNORE", False, False),
    _X(
        64, "INFOROM_DRAM_RETIREMENT_FAILURE", "GPU memory remapping failure", HARDWARE_MEMORY, "RESET_GPU", False, True
    ),
    _X(74, "NVLINK_ERROR", "NVLINK Error", NVLINK, "WORKFLOW_NVLINK_ERR", True, False),
    _X(79, "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS", "GPU has fallen off the bus", BUS, "RESTART_BM", True, True),
    _X(92, "EXCESSIVE_SBE_INTERRUPTS", "High single-bit ECC error rate", HARDWARE_MEMORY, "IGNORE", False, False),
    # Contained: only the process that touched the bad memory dies; the others keep running.
    _X(94, "ROBUST_CHANNEL_CONTAINED_ERROR", "Contained memory error", HARDWARE_MEMORY, "RESTART_APP", True, False),
    _X(95, "ROBUST_CHANNEL_UNCONTAINED_ERROR", "Uncontained memory error", HARDWARE_MEMORY, "RESET_GPU", True, True),
    _X(109, "ROBUST_CHANNEL_CTXSW_TIMEOUT_ERROR", "Context Switch Timeout Error", DRIVER, "RESET_GPU", True, True),
    _X(119, "GSP_RPC_TIMEOUT", "GSP RPC Timeout", FIRMWARE, "RESET_GPU", True, True),
    _X(120, "GSP_ERROR", "GSP Error", FIRMWARE, "RESET_GPU", True, True),
    _X(140, "UNRECOVERABLE_ECC_ERROR_ESCAPE", "ECC Unrecovered Error", HARDWARE_MEMORY, "RESET_GPU", True, True),
    _X(143, "GPU_INIT_ERROR", "GPU Initialization Error", DRIVER, "RESET_GPU", False, True),
    _X(154, "GPU_RECOVERY_ACTION_CHANGED", "GPU Recovery Action Changed", INFORMATIONAL, "XID_154", False, False),
    _X(158, "GPU_FATAL_TIMEOUT", "GPU Fatal Timeout", DRIVER, "RESET_GPU", True, True),
    # NVIDIA's catalog gives no action for 167 yet; the GPU is unreachable over PCIe.
    _X(167, "PCIE_FATAL_TIMEOUT", "PCIe fatal timeout", BUS, "", True, True),
)
XIDS_BY_CODE: dict[int, Xid] = {x.code: x for x in XIDS}


def xid_info(code: int) -> Xid:
    """The catalog entry for `code`; a code outside the catalog gets an `unknown` entry that kills nothing."""
    known = XIDS_BY_CODE.get(code)
    if known is not None:
        return known
    return Xid(code, f"XID_{code}", f"XID {code} (not in gpu-rca's catalog)", UNKNOWN, "", False, False)


__all__ = ["CATEGORIES", "XIDS", "XIDS_BY_CODE", "XID_FALLEN_OFF_BUS", "Xid", "xid_info"]
