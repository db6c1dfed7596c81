"""Which spans are the unit of analysis when gpu-rca's collector did not stamp them (`--unit`, docs/byo-spans.md).

A span carrying `gpu.telemetry.source` is an inference span, always. A **unit rule** names more: the spans
of a service (glob) whose name matches a glob, whose kind is given (`server`, …) and which carry given
attributes; a rule that names only the service means that service's server spans. The store applies the
rules to every span batch before storing it, so `is_inference` is decided once, at ingest.

A span a rule selects is read as the OpenTelemetry semantic conventions define its outcome: an HTTP server
span with `http.response.status_code` ≥ 500 failed (even if its instrumentation left the status unset), and
its `error.type` is what the `exception` event (`exception.type`, `exception.message`) or the status text
says — CUDA OOMs, CUDA errors, lost GPUs and timeouts by the collector's own rules
(`gpu_rca.schemas.error_types`), else the `error.type` it carries (an exception class or a status code).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from gpu_rca.correlate.otlp.rows import KINDS, TYPED_SLOTS
from gpu_rca.schemas import attributes as a
from gpu_rca.schemas.error_types import error_type_of
from gpu_rca.schemas.errors import UsageError

#: The keys a unit rule takes.
RULE_KEYS = ("service", "name", "kind", "attribute")
#: Values of the `gpu_join` column (docs/contracts.md §7), most specific first.
JOIN_UUID, JOIN_PCI, JOIN_POD, JOIN_HOST_GPU, JOIN_HOST, JOIN_NONE = (
    "uuid",
    "pci_bus_id",
    "pod",
    "host_gpu",
    "host",
    "none",
)
GPU_JOINS = (JOIN_UUID, JOIN_PCI, JOIN_POD, JOIN_HOST_GPU, JOIN_HOST, JOIN_NONE)
_STATUS_CODE = re.compile(r'(?:^\{|,)"' + re.escape(a.HTTP_RESPONSE_STATUS_CODE) + r'":(?P<code>\d+)')


def _glob_regex(glob: str) -> str:
    """An anchored RE2 pattern for a glob (`*` any text, `?` one character, everything else literal)."""
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob]
    return "^" + "".join(parts) + "$"


@dataclass(frozen=True)
class UnitRule:
    """One `--unit` rule: every condition given must hold."""

    service: str
    name: str | None = None
    kind: str | None = None
    attributes: tuple[str, ...] = ()

    def text(self) -> str:
        """The rule as `--unit` spells it."""
        parts = [f"service={self.service}"]
        if self.name is not None:
            parts.append(f"name={self.name}")
        if self.kind is not None:
            parts.append(f"kind={self.kind}")
        parts.extend(f"attribute={attribute}" for attribute in self.attributes)
        return ",".join(parts)

    def mask(self, spans: pa.Table) -> pa.ChunkedArray:
        """Which rows of a span table the rule selects."""
        conditions = [pc.match_substring_regex(spans["service"], _glob_regex(self.service))]
        if self.name is not None:
            conditions.append(pc.match_substring_regex(spans["name"], _glob_regex(self.name)))
        if self.kind is not None:
            conditions.append(pc.equal(spans["kind"], self.kind))
        for attribute in self.attributes:
            slot = TYPED_SLOTS.get(attribute)
            if slot is not None and not slot[3]:  # a stamp: it left the JSON for its typed column
                conditions.append(pc.is_valid(spans[attribute.replace(".", "_")]))
            else:
                key = re.escape(json.dumps(attribute))
                conditions.append(pc.match_substring_regex(spans["attributes"], rf"(?:^\{{|,){key}:"))
        mask = conditions[0]
        for condition in conditions[1:]:
            mask = pc.and_kleene(mask, condition)
        return pc.fill_null(mask, False)


def parse_unit(text: str) -> UnitRule:
    """A rule from `service=GLOB[,name=GLOB][,kind=KIND][,attribute=KEY]...`; UsageError says what is wrong."""
    values: dict[str, list[str]] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in RULE_KEYS or not value:
            raise UsageError(
                f"--unit {text!r}: expected KEY=VALUE pairs separated by commas, KEY one of {', '.join(RULE_KEYS)}"
            )
        values.setdefault(key, []).append(value)
    for key in ("service", "name", "kind"):
        if len(values.get(key, [])) > 1:
            raise UsageError(f"--unit {text!r}: {key}= given twice")
    if "service" not in values:
        raise UsageError(f"--unit {text!r}: name the service (service=NAME, or service=* for every service)")
    kind = values.get("kind", [None])[0]
    if kind is not None and kind not in KINDS:
        raise UsageError(f"--unit {text!r}: kind={kind} is not a span kind ({', '.join(KINDS)})")
    name = values.get("name", [None])[0]
    attributes = tuple(values.get("attribute", []))
    if name is None and kind is None and not attributes:
        kind = "server"  # a service alone: its server spans, one per request
    return UnitRule(values["service"][0], name, kind, attributes)


@dataclass(frozen=True)
class Units:
    """The rules of one store; a span any rule selects is an inference span."""

    rules: tuple[UnitRule, ...] = ()

    @classmethod
    def parse(cls, texts: Iterable[str]) -> Units:
        """Rules from `--unit` values (none: only spans carrying `gpu.telemetry.source` count)."""
        return cls(tuple(parse_unit(text) for text in texts))

    def __bool__(self) -> bool:
        return bool(self.rules)

    def select(self, spans: pa.Table, events: pa.Table) -> pa.Table:
        """`spans` with the rules applied: selected spans become inference spans, failed where their HTTP status
        says so, with the error type their exception names; the `gpu_join` column added (`uuid` where the span
        names its GPU, else NULL until the store joins it)."""
        selected = pc.and_(pc.invert(spans["is_inference"]), self._mask(spans)) if self.rules else None
        if selected is not None and pc.any(selected).as_py():
            spans = _read_outcome(spans, selected, events)
            spans = spans.set_column(
                spans.schema.get_field_index("is_inference"),
                "is_inference",
                pc.or_(spans["is_inference"], selected),
            )
        join = pc.if_else(
            pc.and_(spans["is_inference"], pc.is_valid(spans["gpu_uuid"])),
            pa.scalar(JOIN_UUID),
            pa.scalar(None, pa.string()),
        )
        return spans.append_column("gpu_join", join)

    def _mask(self, spans: pa.Table) -> pa.ChunkedArray:
        mask = self.rules[0].mask(spans)
        for rule in self.rules[1:]:
            mask = pc.or_(mask, rule.mask(spans))
        return mask


def _read_outcome(spans: pa.Table, selected: pa.ChunkedArray, events: pa.Table) -> pa.Table:
    """Status and error type of the selected spans, read as the OTel semantic conventions write them."""
    found = pc.extract_regex(pc.fill_null(spans["attributes"], ""), _STATUS_CODE.pattern)
    codes = pc.cast(pc.struct_field(found, "code"), pa.int64())
    server_error = pc.fill_null(pc.and_(selected, pc.greater_equal(codes, 500)), False)
    status = pc.if_else(server_error, pa.scalar("ERROR"), spans["status"])
    failed = pc.fill_null(pc.and_(selected, pc.equal(status, "ERROR")), False)
    rows = pc.indices_nonzero(failed).to_pylist()
    error_types = spans["error_type"].to_pylist()
    if rows:
        exceptions = _exceptions(events, {spans["span_id"][i].as_py() for i in rows})
        messages = spans["status_message"]
        for i in rows:
            exc_type, exc_message = exceptions.get(spans["span_id"][i].as_py(), (None, None))
            carried = error_types[i]
            code = codes[i].as_py()
            message = exc_message or messages[i].as_py()
            error_types[i] = (
                error_type_of(exc_type or carried, message)
                or carried
                or exc_type
                or (str(code) if code is not None else None)
            )
    spans = spans.set_column(spans.schema.get_field_index("status"), "status", status)
    column = spans.schema.get_field_index("error_type")
    return spans.set_column(column, "error_type", pa.array(error_types, pa.string()))


def _exceptions(events: pa.Table, span_ids: set[str]) -> dict[str, tuple[str | None, str | None]]:
    """(exception.type, exception.message) of the first `exception` event of each span named."""
    found: dict[str, tuple[str | None, str | None]] = {}
    if events.num_rows == 0:
        return found
    chosen = events.filter(
        pc.and_(pc.equal(events["name"], a.EXCEPTION_EVENT), pc.is_in(events["span_id"], pa.array(list(span_ids))))
    )
    for span_id, attributes in zip(chosen["span_id"].to_pylist(), chosen["attributes"].to_pylist()):
        if span_id in found:
            continue
        try:
            values = json.loads(attributes or "{}")
        except ValueError:
            continue
        exc_type, exc_message = values.get(a.EXCEPTION_TYPE), values.get(a.EXCEPTION_MESSAGE)
        found[span_id] = (
            exc_type if isinstance(exc_type, str) else None,
            exc_message if isinstance(exc_message, str) else None,
        )
    return found


__all__ = ["GPU_JOINS", "RULE_KEYS", "UnitRule", "Units", "parse_unit"]
