"""Telemetry files as the tools that write them do: the Collector's file exporter framing, loguru JSON lines,
a Prometheus query_range answer, a kernel log."""

from __future__ import annotations

import io
import json
import textwrap

from google.protobuf.message import Message
from loguru import logger

from tests.support.otlp import UUID

#: The trace and span the loguru ERROR line of `loguru_lines` is bound to.
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"

#: Two journalctl-style kernel lines on node-a: a GPU's PCI address and UUID, then XID 79 on it.
KERNEL_LOG = textwrap.dedent("""\
    2026-03-02T10:00:01+0000 node-a kernel: NVRM: GPU at PCI:0000:3b:00: GPU-0a1b2c3d-0000-4000-8000-00000000abcd
    2026-03-02T10:00:02+0000 node-a kernel: NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python3, GPU has fallen off the bus.
""")


def proto_framed(*messages: Message) -> bytes:
    """Length-prefixed protobuf, as the Collector's file exporter writes `format: proto`."""
    out = bytearray()
    for message in messages:
        payload = message.SerializeToString()
        out += len(payload).to_bytes(4, "big") + payload
    return bytes(out)


def loguru_lines() -> str:
    """Two lines of loguru's `serialize=True` sink: an ERROR bound to TRACE_ID/SPAN_ID, then an INFO."""
    sink = io.StringIO()
    handler = logger.add(sink, serialize=True)
    try:
        logger.bind(trace_id=TRACE_ID, span_id=SPAN_ID, service="ddcolor").error(
            "CUDA error: unspecified launch failure"
        )
        logger.info("request accepted")
    finally:
        logger.remove(handler)
    return sink.getvalue()


def query_range() -> str:
    """A Prometheus query_range answer (one line): dcgm-exporter series for GPU `UUID`, with NaN and +Inf."""
    labels = {
        "gpu": "0",
        "UUID": UUID,
        "pci_bus_id": "00000000:3B:00.0",
        "device": "nvidia0",
        "modelName": "NVIDIA L4",
        "Hostname": "node-a",
    }
    answer = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [
                {
                    "metric": {"__name__": "DCGM_FI_DEV_GPU_TEMP", **labels},
                    "values": [[1700000000, "71"], [1700000015, "NaN"], [1700000030, "+Inf"], [1700000045, "88"]],
                },
                {"metric": {"__name__": "dcgm_power_violation", **labels}, "values": [[1700000000.5, "7"]]},
                {"metric": {"__name__": "DCGM_FI_DEV_DEC_UTIL", **labels}, "values": [[1700000000, "3"]]},
            ],
        },
    }
    return json.dumps(answer) + "\n"
