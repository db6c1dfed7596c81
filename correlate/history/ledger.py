"""The per-GPU ledger: incidents (stored digests), XID/ECC/thermal history, failure rate against the fleet,
hosts seen, and advice — worst GPUs first. `gpu-rca gpus` prints it; `GET /gpus` serves it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from gpu_rca.correlate.history.advice import Advice, advise
from gpu_rca.correlate.history.hardware import Hardware, hardware_by_gpu
from gpu_rca.correlate.history.incidents import Incident, incidents_by_gpu
from gpu_rca.correlate.ranking.window import EMPTY_STORE_MESSAGE
from gpu_rca.correlate.store.query import scalar
from gpu_rca.schemas import store as s
from gpu_rca.schemas.errors import EmptyWindowError
from gpu_rca.schemas.timefmt import rfc3339

#: The period `gpu-rca gpus` and `GET /gpus` cover without `--since` / `?since=`.
DEFAULT_SINCE = "30d"


@dataclass(frozen=True)
class GpuHistory:
    """One GPU's record over the period."""

    gpu_uuid: str
    incidents: list[Incident]
    hardware: Hardware
    fleet_rate: float | None
    advice: list[Advice]

    @property
    def failure_rate(self) -> float | None:
        """Its share of failed inference spans (None: it served none in the period)."""
        h = self.hardware
        return h.failed_spans / h.inference_spans if h.inference_spans else None

    @property
    def lift(self) -> float | None:
        """Its failure rate over the fleet's (None: either is undefined or the fleet never failed)."""
        rate = self.failure_rate
        return rate / self.fleet_rate if rate is not None and self.fleet_rate else None

    @property
    def hardware_events(self) -> int:
        """XID lines plus uncorrectable ECC errors in the period."""
        return sum(self.hardware.xid_counts().values()) + (self.hardware.ecc_uncorrected or 0)

    def causes(self) -> dict[str, int]:
        """Cause id -> incidents that blamed it on this GPU."""
        counts: dict[str, int] = {}
        for incident in self.incidents:
            for cause in incident.causes:
                counts[cause] = counts.get(cause, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def to_dict(self) -> dict[str, Any]:
        """The JSON of one GPU (docs/contracts.md §3, `gpus --json`)."""
        h = self.hardware
        return {
            "gpu_uuid": self.gpu_uuid,
            "name": h.name,
            "hosts": [
                {"host": x.host, "first_seen": rfc3339(x.first_ns), "last_seen": rfc3339(x.last_ns)} for x in h.hosts
            ],
            "incidents": [
                {"start": rfc3339(i.start_ns), "end": rfc3339(i.end_ns), "causes": i.causes, "digests": i.digest_ids}
                for i in self.incidents
            ],
            "causes": self.causes(),
            "xids": [{"day": d.day, "xid": d.xid, "count": d.count} for d in h.xid_days],
            "xid_counts": {str(code): n for code, n in sorted(h.xid_counts().items())},
            "ecc_uncorrected": h.ecc_uncorrected,
            "row_remap_failure": h.row_remap_failure,
            "seconds_above_slowdown": h.seconds_above_slowdown,
            "thermal_throttled_share": h.throttled_spans / h.inference_spans if h.inference_spans else None,
            "inference_spans": h.inference_spans,
            "failed_spans": h.failed_spans,
            "failure_rate": self.failure_rate,
            "failure_lift": self.lift,
            "advice": [{"action": a.action, "text": a.text} for a in self.advice],
        }


@dataclass(frozen=True)
class Ledger:
    """Every GPU the store saw in [since, until], worst first, and the fleet's failure rate."""

    since_ns: int
    until_ns: int
    inference_spans: int
    failed_spans: int
    gpus: list[GpuHistory]

    def to_dict(self) -> dict[str, Any]:
        """`gpu-rca gpus --json` and `GET /gpus` (Accept: application/json)."""
        return {
            "since": rfc3339(self.since_ns),
            "until": rfc3339(self.until_ns),
            "fleet": {
                "inference_spans": self.inference_spans,
                "failed_spans": self.failed_spans,
                "failure_rate": self.failed_spans / self.inference_spans if self.inference_spans else None,
            },
            "gpus": [g.to_dict() for g in self.gpus],
        }


def gpu_ledger(con: duckdb.DuckDBPyConnection, *, since_ns: int, until_ns: int) -> Ledger:
    """The ledger of [since, until]; EmptyWindowError when the store holds nothing to keep one from."""
    incidents = incidents_by_gpu(con, since_ns=since_ns, until_ns=until_ns)
    hardware = hardware_by_gpu(con, since_ns, until_ns)
    if not incidents and not hardware and not _store_has_anything(con):
        raise EmptyWindowError(EMPTY_STORE_MESSAGE)
    spans = sum(h.inference_spans for h in hardware.values())
    failed = sum(h.failed_spans for h in hardware.values())
    fleet_rate = failed / spans if spans else None
    gpus = []
    for uuid in sorted(set(incidents) | set(hardware)):
        record = hardware.get(uuid) or Hardware()
        own = incidents.get(uuid, [])
        gpus.append(GpuHistory(uuid, own, record, fleet_rate, advise(own, record)))
    gpus.sort(key=lambda g: (-len(g.incidents), -g.hardware_events, -(g.lift or 0.0), g.gpu_uuid))
    return Ledger(since_ns, until_ns, spans, failed, gpus)


def _store_has_anything(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(
        scalar(
            con,
            f"SELECT (SELECT count(*) FROM {s.SPANS} WHERE is_inference) + (SELECT count(*) FROM {s.DIGESTS})"
            f" + (SELECT count(*) FROM {s.KERNEL_EVENTS})",
        )
    )


__all__ = ["DEFAULT_SINCE", "GpuHistory", "Ledger", "gpu_ledger"]
