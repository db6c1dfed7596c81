"""The digest model: one analysis window rendered for people, as frozen records that round-trip through JSON.

A digest's JSON is the analysis dict (docs/contracts.md §3) plus `id`, `created_at`, `trigger`, `headline`,
`capacity`, `plots` and `history` (the GPUs with earlier incidents); each cause additionally carries its `title`, `action`, `trace_links`,
`log_lines`, `kernel_events` and the ids of its `plots`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from gpu_rca.schemas.errors import InputError

#: Keys the digest adds to each cause dict of docs/contracts.md §3.
_CAUSE_EXTRAS = ("title", "action", "trace_links", "log_lines", "kernel_events", "plots")
#: Keys the digest adds to the top-level analysis dict.
_TOP_EXTRAS = ("id", "created_at", "trigger", "headline", "capacity", "plots", "history")

TRIGGER_KINDS = ("alertmanager", "burst", "schedule", "manual", "demo")


@dataclass(frozen=True)
class Trigger:
    """Why this digest was made: an Alertmanager alert, a failure burst, a schedule, or a person."""

    kind: str
    detail: str = ""
    gpus: tuple[str, ...] = ()


@dataclass(frozen=True)
class Headline:
    """What failed, how many, since when, on which GPUs — the first thing a reader sees."""

    text: str
    failed_spans: int
    total_spans: int
    first_failure: str | None
    last_failure: str | None
    gpus: tuple[str, ...]
    hosts: tuple[str, ...]
    top_cause: str | None


@dataclass(frozen=True)
class TraceLink:
    """An example failed trace and where to open it (Grafana Explore on Tempo), if a base URL is set."""

    trace_id: str
    url: str | None


@dataclass(frozen=True)
class LogLine:
    """A log record matched to a cause by trace id or by host and time."""

    ts: str
    severity: str
    host: str | None
    trace_id: str | None
    body: str


@dataclass(frozen=True)
class KernelLogEntry:
    """A kernel `NVRM: Xid` line on one of a cause's GPUs or hosts."""

    ts: str
    host: str | None
    gpu_uuid: str | None
    xid: int | None
    message: str


@dataclass(frozen=True)
class Plot:
    """A PNG of metric windows around the failures; `cause` is None for the overview plot."""

    id: str
    title: str
    cause: str | None
    png: bytes = field(repr=False)

    @property
    def data_uri(self) -> str:
        """The PNG inline as a `data:` URI, so a digest page needs no other request."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class EarlierIncident:
    """An incident on the same GPU before this digest's window (docs/gpus.md)."""

    start: str
    end: str
    causes: tuple[str, ...]
    digests: tuple[str, ...]


@dataclass(frozen=True)
class GpuNote:
    """A GPU of this digest's causes with earlier incidents: "third incident on this GPU in 30 days"."""

    gpu_uuid: str
    incident: int
    days: int
    text: str
    earlier: tuple[EarlierIncident, ...]


@dataclass(frozen=True)
class CauseSection:
    """One ranked cause as analyze reported it, with what a person needs to act on it."""

    cause: dict[str, Any]
    title: str
    action: str
    trace_links: tuple[TraceLink, ...] = ()
    log_lines: tuple[LogLine, ...] = ()
    kernel_events: tuple[KernelLogEntry, ...] = ()
    plot_ids: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """The cause id (docs/contracts.md §4)."""
        return str(self.cause["cause"])


@dataclass(frozen=True)
class Digest:
    """One analysed window, ready to render as Markdown, HTML or JSON and to store."""

    id: str
    created_at: str
    trigger: Trigger
    headline: Headline
    analysis: dict[str, Any]
    causes: tuple[CauseSection, ...]
    capacity: dict[str, Any]
    plots: tuple[Plot, ...] = ()
    history: tuple[GpuNote, ...] = ()

    def plot(self, plot_id: str) -> Plot | None:
        """The plot with this id, if the digest has it."""
        return next((p for p in self.plots if p.id == plot_id), None)

    def overview_plots(self) -> tuple[Plot, ...]:
        """Plots not tied to one cause (failures over time)."""
        return tuple(p for p in self.plots if p.cause is None)

    def to_dict(self, *, include_png: bool = True) -> dict[str, Any]:
        """The digest's JSON document (see the module docstring)."""
        document = {key: value for key, value in self.analysis.items() if key != "causes"}
        document["causes"] = [_cause_to_dict(section) for section in self.causes]
        document.update(
            id=self.id,
            created_at=self.created_at,
            trigger={"kind": self.trigger.kind, "detail": self.trigger.detail, "gpus": list(self.trigger.gpus)},
            headline=_record_to_dict(self.headline),
            capacity=self.capacity,
            plots=[
                {"id": p.id, "title": p.title, "cause": p.cause}
                | ({"png_base64": base64.b64encode(p.png).decode("ascii")} if include_png else {})
                for p in self.plots
            ],
            history=[_record_to_dict(note) for note in self.history],
        )
        return document

    def to_json(self, *, include_png: bool = True, indent: int | None = None) -> str:
        """`to_dict` as strict JSON (undefined numbers are already `null` in the analysis)."""
        return json.dumps(self.to_dict(include_png=include_png), allow_nan=False, indent=indent)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Digest:
        """Rebuild a digest from its JSON document (as stored, or as served by `GET /digests/{id}.json`)."""
        try:
            trigger = document["trigger"]
            headline = document["headline"]
            sections = tuple(_cause_from_dict(c) for c in document["causes"])
            analysis = {k: v for k, v in document.items() if k not in _TOP_EXTRAS}
            analysis["causes"] = [s.cause for s in sections]
            return cls(
                id=str(document["id"]),
                created_at=str(document["created_at"]),
                trigger=Trigger(trigger["kind"], trigger.get("detail", ""), tuple(trigger.get("gpus", ()))),
                headline=Headline(**{**headline, "gpus": tuple(headline["gpus"]), "hosts": tuple(headline["hosts"])}),
                analysis=analysis,
                causes=sections,
                capacity=dict(document.get("capacity") or {}),
                plots=tuple(
                    Plot(p["id"], p["title"], p.get("cause"), base64.b64decode(p.get("png_base64", "")))
                    for p in document.get("plots", ())
                ),
                history=tuple(_note_from_dict(n) for n in document.get("history", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a gpu-rca digest document: {exc!r}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> Digest:
        """`from_dict` of a JSON string."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"digest is not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise InputError("digest JSON is not an object")
        return cls.from_dict(document)


def _record_to_dict(record: Any) -> dict[str, Any]:
    data = asdict(record)
    return {k: _lists(v) for k, v in data.items()}


def _lists(value: Any) -> Any:
    """Tuples (nested in records too) as JSON lists."""
    if isinstance(value, (tuple, list)):
        return [_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return value


def _note_from_dict(document: dict[str, Any]) -> GpuNote:
    return GpuNote(
        gpu_uuid=str(document["gpu_uuid"]),
        incident=int(document["incident"]),
        days=int(document["days"]),
        text=str(document["text"]),
        earlier=tuple(
            EarlierIncident(str(e["start"]), str(e["end"]), tuple(e["causes"]), tuple(e["digests"]))
            for e in document.get("earlier", ())
        ),
    )


def _cause_to_dict(section: CauseSection) -> dict[str, Any]:
    document = {k: v for k, v in section.cause.items() if k not in _CAUSE_EXTRAS}
    document.update(
        title=section.title,
        action=section.action,
        trace_links=[_record_to_dict(t) for t in section.trace_links],
        log_lines=[_record_to_dict(line) for line in section.log_lines],
        kernel_events=[_record_to_dict(e) for e in section.kernel_events],
        plots=list(section.plot_ids),
    )
    return document


def _cause_from_dict(document: dict[str, Any]) -> CauseSection:
    return CauseSection(
        cause={k: v for k, v in document.items() if k not in _CAUSE_EXTRAS},
        title=str(document.get("title", document["cause"])),
        action=str(document.get("action", "")),
        trace_links=tuple(TraceLink(**t) for t in document.get("trace_links", ())),
        log_lines=tuple(LogLine(**line) for line in document.get("log_lines", ())),
        kernel_events=tuple(KernelLogEntry(**e) for e in document.get("kernel_events", ())),
        plot_ids=tuple(document.get("plots", ())),
    )
