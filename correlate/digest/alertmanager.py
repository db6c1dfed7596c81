"""Alertmanager webhook payloads (version 4) read into what a digest needs: which GPUs, since when.

Alertmanager 0.25 posts `{"version": "4", "status", "alerts": [{"labels", "startsAt", …}], …}`; firing
alerts carry `endsAt: 0001-01-01T00:00:00Z`. dcgm-exporter labels a GPU with `UUID`, `gpu` (its index)
and `Hostname` (newer releases: `hostname`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gpu_rca.schemas.errors import InputError
from gpu_rca.schemas.metrics import UUID_LABELS
from gpu_rca.schemas.timefmt import parse_rfc3339_ns

#: How far before the earliest alert's start the digest looks (failures precede the alert's `for:`).
LOOKBACK_NS = 15 * 60 * 10**9
HOST_LABELS = ("Hostname", "hostname", "host", "instance_host")
MAX_ALERTS = 1000


@dataclass(frozen=True)
class AlertedGpu:
    """A GPU an alert names: by UUID, or by index on a host."""

    uuid: str | None
    index: int | None
    host: str | None

    def describe(self) -> str:
        """How the alert named it, for the digest's trigger line."""
        if self.uuid:
            return self.uuid
        return f"{self.host or '?'}/{self.index if self.index is not None else '?'}"


@dataclass(frozen=True)
class AlertNotification:
    """One webhook call, reduced to what the digest needs."""

    status: str
    alertnames: tuple[str, ...]
    gpus: tuple[AlertedGpu, ...]
    earliest_start_ns: int
    firing: int
    group_key: str

    @property
    def since_ns(self) -> int:
        """Start of the digest window: the earliest firing alert's start minus the lookback."""
        return self.earliest_start_ns - LOOKBACK_NS


def parse_alertmanager(body: bytes | str | dict[str, Any]) -> AlertNotification:
    """Validate a v4 webhook payload; InputError (an HTTP 400) for anything malformed."""
    if isinstance(body, dict):
        payload: Any = body
    else:
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"Alertmanager payload is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InputError("Alertmanager payload must be a JSON object")
    if str(payload.get("version")) != "4":
        raise InputError(f'unsupported Alertmanager webhook version {payload.get("version")!r} (expected "4")')
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise InputError("Alertmanager payload has no `alerts` list")
    if len(alerts) > MAX_ALERTS:
        raise InputError(f"Alertmanager payload has {len(alerts)} alerts; at most {MAX_ALERTS} are read")
    common = _labels(payload.get("commonLabels", {}), "commonLabels")
    gpus: dict[tuple[object, ...], AlertedGpu] = {}
    names: list[str] = []
    starts: list[int] = []
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            raise InputError(f"alerts[{i}] is not an object")
        labels = {**common, **_labels(alert.get("labels"), f"alerts[{i}].labels")}
        status = alert.get("status", payload.get("status"))
        if status not in ("firing", "resolved"):
            raise InputError(f"alerts[{i}].status must be firing or resolved, not {status!r}")
        if not isinstance(alert.get("startsAt"), str):
            raise InputError(f"alerts[{i}].startsAt is missing")
        start_ns = parse_rfc3339_ns(alert["startsAt"])
        if status != "firing":
            continue
        starts.append(start_ns)
        if labels.get("alertname") and labels["alertname"] not in names:
            names.append(labels["alertname"])
        gpu = _gpu(labels, i)
        if gpu is not None:
            gpus.setdefault((gpu.uuid, gpu.index, gpu.host), gpu)
    status = payload.get("status")
    if status not in ("firing", "resolved"):
        raise InputError(f"payload status must be firing or resolved, not {status!r}")
    return AlertNotification(
        status=status,
        alertnames=tuple(names),
        gpus=tuple(gpus.values()),
        earliest_start_ns=min(starts) if starts else 0,
        firing=len(starts),
        group_key=str(payload.get("groupKey", "")),
    )


def _labels(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InputError(f"{where} must be an object of string labels")
    return value


def _gpu(labels: dict[str, str], i: int) -> AlertedGpu | None:
    uuid = next((labels[k] for k in UUID_LABELS if labels.get(k)), None)
    host = next((labels[k] for k in HOST_LABELS if labels.get(k)), None)
    index_text = labels.get("gpu")
    index = None
    if index_text not in (None, ""):
        try:
            index = int(index_text)
        except ValueError as exc:
            raise InputError(f"alerts[{i}].labels.gpu must be a GPU index, not {index_text!r}") from exc
    if uuid:
        return AlertedGpu(uuid, index, host)
    if index is not None and host:
        return AlertedGpu(None, index, host)
    return None
