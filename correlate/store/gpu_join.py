"""Joining inference spans that name no GPU to one, most specific first (docs/byo-spans.md).

A span that carries `gpu.uuid` is joined by it (`gpu_join = 'uuid'`, set as it is stored). The others are
joined here, by what they carry: `gpu.pci_bus_id` on their host (`pci_bus_id`); their Kubernetes pod
(`k8s.pod.name`, `k8s.namespace.name` resource attributes) matched to the pod that dcgm-exporter's labels say
held the GPU at the span's time (`pod`, table `gpu_pods`); the host's only GPU (`host_gpu`); else the host
alone (`host`: the GPUs could not be told apart) or nothing (`none`). The join runs again whenever metrics
arrive, so the order in which traces and metrics are ingested does not matter.
"""

from __future__ import annotations

import duckdb

from gpu_rca.correlate.store.units import JOIN_HOST, JOIN_HOST_GPU, JOIN_NONE, JOIN_PCI, JOIN_POD
from gpu_rca.schemas import attributes as a
from gpu_rca.schemas import store as s

#: A pod's span may start a little before the first sample naming its GPU or end after the last (scrapes are
#: 15-60 s apart, and clocks differ between hosts).
POD_SLACK_NS = 120_000_000_000

_POD = f"json_extract_string(x.resource, '$.\"{a.K8S_POD_NAME}\"')"
_NAMESPACE = f"json_extract_string(x.resource, '$.\"{a.K8S_NAMESPACE_NAME}\"')"


def place_spans(con: duckdb.DuckDBPyConnection, start_ns: int | None = None, end_ns: int | None = None) -> None:
    """Join the inference spans without a GPU (those starting in [start_ns, end_ns] when given) to one."""
    bounds = ""
    if start_ns is not None and end_ns is not None:
        bounds = f" AND x.start_ns BETWEEN {int(start_ns)} AND {int(end_ns)}"
    # A host that had one known GPU when its spans were joined may have shown more since: join those again.
    con.execute(
        f"""UPDATE {s.SPANS} AS x SET gpu_uuid = NULL, gpu_join = NULL
        WHERE x.gpu_join = '{JOIN_HOST_GPU}'{bounds}
          AND (SELECT count(*) FROM {s.GPUS} g WHERE g.host = x.host) > 1"""
    )
    pending = f"x.is_inference AND x.gpu_uuid IS NULL{bounds}"
    con.execute(
        f"""UPDATE {s.SPANS} AS x SET gpu_uuid = g.gpu_uuid, gpu_join = '{JOIN_PCI}'
        FROM {s.GPUS} AS g
        WHERE {pending} AND x.gpu_pci_bus_id IS NOT NULL AND g.pci_bus_id = x.gpu_pci_bus_id AND g.host = x.host"""
    )
    con.execute(
        f"""UPDATE {s.SPANS} AS x SET gpu_uuid = p.gpu_uuid, gpu_join = '{JOIN_POD}'
        FROM (
          SELECT x.trace_id, x.span_id, any_value(p.gpu_uuid) AS gpu_uuid
          FROM {s.SPANS} AS x JOIN {s.GPU_PODS} AS p
            ON p.pod = {_POD} AND (p.namespace = coalesce({_NAMESPACE}, p.namespace))
           AND x.start_ns <= p.last_ns + {POD_SLACK_NS} AND x.end_ns >= p.first_ns - {POD_SLACK_NS}
          WHERE {pending}
          GROUP BY x.trace_id, x.span_id
          HAVING count(DISTINCT p.gpu_uuid) = 1) AS p
        WHERE x.trace_id = p.trace_id AND x.span_id = p.span_id"""
    )
    con.execute(
        f"""UPDATE {s.SPANS} AS x SET gpu_uuid = h.gpu_uuid, gpu_join = '{JOIN_HOST_GPU}'
        FROM (SELECT host, any_value(gpu_uuid) AS gpu_uuid FROM {s.GPUS} WHERE host IS NOT NULL
              GROUP BY host HAVING count(*) = 1) AS h
        WHERE {pending} AND x.host = h.host"""
    )
    con.execute(
        f"""UPDATE {s.SPANS} AS x
        SET gpu_join = CASE WHEN x.host IS NULL THEN '{JOIN_NONE}' ELSE '{JOIN_HOST}' END
        WHERE {pending} AND x.gpu_join IS NULL"""
    )


__all__ = ["POD_SLACK_NS", "place_spans"]
