"""Build a digest from an analysis dict and the store it came from."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import duckdb

from gpu_rca.correlate.digest import actions, capacity, plots, queries
from gpu_rca.correlate.digest.links import grafana_trace_url
from gpu_rca.correlate.digest.model import (
    CauseSection,
    Digest,
    EarlierIncident,
    GpuNote,
    Headline,
    KernelLogEntry,
    LogLine,
    Plot,
    TraceLink,
    Trigger,
)
from gpu_rca.correlate.history.incidents import earlier_incidents
from gpu_rca.correlate.store.errors import first_line
from gpu_rca.schemas import attributes as A
from gpu_rca.schemas.causes import CAUSES_BY_ID
from gpu_rca.schemas.timefmt import parse_rfc3339_ns, rfc3339, short_utc

#: Drivers that only say where failures happened (the headline names the GPUs already).
_PLACE_ATTRIBUTES = frozenset({A.GPU_UUID, A.GPU_INDEX, A.GPU_PCI_BUS_ID, A.HOST_NAME, A.K8S_NODE_NAME})
#: How many example traces, log lines and kernel events each cause shows.
EXAMPLES_PER_CAUSE = 5
LOG_LINES_PER_CAUSE = 6
#: How far back a digest looks for the same GPU's earlier incidents.
HISTORY_DAYS = 30
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
#: Longer log bodies are cut: the digest points at the line, the store keeps all of it.
MAX_LOG_CHARS = 400


T = TypeVar("T")


class StoreReads:
    """Reads of the store for one digest: a read that fails leaves its part of the digest empty and is
    said in the digest's warnings, so a damaged or unreadable store still yields a digest that says so."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def read(self, what: str, read: Callable[[], T]) -> T | None:
        """`read()`, or None when the store failed it (and the failure is kept in `problems`)."""
        try:
            return read()
        except duckdb.Error as exc:
            self.problems.append(f"the store could not be read ({what}): {first_line(exc)}")
            return None


def new_digest_id(now_ns: int) -> str:
    """A URL-safe id that sorts by creation time: `20260302T101500Z-3f9a1c`."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now_ns / 1e9)) + "-" + secrets.token_hex(3)


def build_digest(
    con: duckdb.DuckDBPyConnection,
    analysis: dict[str, Any],
    *,
    trigger: Trigger,
    grafana_url: str | None = None,
    now_ns: int | None = None,
    with_plots: bool = True,
) -> Digest:
    """The digest of one analysis: headline, causes with actions, evidence links, plots and capacity."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    start_ns = parse_rfc3339_ns(analysis["window"]["start"])
    end_ns = parse_rfc3339_ns(analysis["window"]["end"])
    store = StoreReads()
    inventory = store.read("the GPU inventory", lambda: queries.gpu_inventory(con)) or {}
    failed = store.read("the failed requests", lambda: queries.failures(con, start_ns, end_ns)) or []
    sections = []
    made: list[Plot] = []
    if with_plots and (
        overview := store.read("the overview plot", lambda: plots.overview_plot(con, start_ns=start_ns, end_ns=end_ns))
    ):
        made.append(overview)
    for cause in analysis.get("causes", ()):
        plot = (
            store.read(
                f"the {cause['cause']} plot",
                partial(plots.cause_plot, con, cause, start_ns=start_ns, end_ns=end_ns, inventory=inventory),
            )
            if with_plots
            else None
        )
        if plot is not None:
            made.append(plot)
        sections.append(
            _section(con, store, cause, start_ns, end_ns, inventory, grafana_url, (plot.id,) if plot else ())
        )
    capacity_section = (
        store.read("the capacity section", lambda: capacity.capacity(con, start_ns, end_ns, inventory)) or {}
    )
    history = store.read("the GPUs' earlier incidents", lambda: gpu_history(con, analysis, start_ns, end_ns)) or ()
    if store.problems:
        analysis = {**analysis, "warnings": [*store.problems, *analysis.get("warnings", ())]}
    return Digest(
        id=new_digest_id(now_ns),
        created_at=rfc3339(now_ns),
        trigger=trigger,
        headline=_headline(analysis, failed, inventory, start_ns, end_ns),
        analysis=analysis,
        causes=tuple(sections),
        capacity=capacity_section,
        plots=tuple(made),
        history=tuple(history),
    )


def gpu_history(con: duckdb.DuckDBPyConnection, analysis: dict[str, Any], start_ns: int, end_ns: int) -> list[GpuNote]:
    """A note for each GPU of the analysis's causes that has earlier incidents within HISTORY_DAYS."""
    notes = []
    seen: list[str] = []
    for cause in analysis.get("causes", ()):
        seen.extend(u for u in cause.get("gpus", ()) if u not in seen)
    for uuid in seen:
        earlier = earlier_incidents(con, uuid, start_ns=start_ns, end_ns=end_ns, days=HISTORY_DAYS)
        if not earlier:
            continue
        number = len(earlier) + 1
        ordinal = _ORDINALS[number - 1] if number <= len(_ORDINALS) else f"{number}th"
        notes.append(
            GpuNote(
                gpu_uuid=uuid,
                incident=number,
                days=HISTORY_DAYS,
                text=f"{ordinal} incident on this GPU in {HISTORY_DAYS} days",
                earlier=tuple(
                    EarlierIncident(rfc3339(i.start_ns), rfc3339(i.end_ns), tuple(i.causes), tuple(i.digest_ids))
                    for i in earlier
                ),
            )
        )
    return notes


def _section(
    con: duckdb.DuckDBPyConnection,
    store: StoreReads,
    cause: dict[str, Any],
    start_ns: int,
    end_ns: int,
    inventory: dict[str, queries.GpuInfo],
    grafana_url: str | None,
    plot_ids: tuple[str, ...],
) -> CauseSection:
    catalog = CAUSES_BY_ID.get(cause["cause"])
    traces = list(cause.get("example_traces", ()))[:EXAMPLES_PER_CAUSE]
    hosts = list(cause.get("hosts", ()))
    gpus = list(cause.get("gpus", ()))
    logs = (
        store.read(
            "log lines",
            lambda: queries.log_lines(
                con, trace_ids=traces, hosts=hosts, start_ns=start_ns, end_ns=end_ns, limit=LOG_LINES_PER_CAUSE
            ),
        )
        or []
    )
    kernel = (
        store.read(
            "kernel events",
            lambda: queries.kernel_events(
                con, gpus=gpus, hosts=hosts, start_ns=start_ns, end_ns=end_ns, limit=LOG_LINES_PER_CAUSE
            ),
        )
        or []
    )
    return CauseSection(
        cause=cause,
        title=catalog.title if catalog else cause["cause"],
        action=store.read(
            "the action's figures",
            lambda: actions.action_for(con, cause, start_ns=start_ns, end_ns=end_ns, inventory=inventory),
        )
        or (catalog.action if catalog else ""),
        trace_links=tuple(
            TraceLink(t, grafana_trace_url(grafana_url, t, start_ns=start_ns, end_ns=end_ns) if grafana_url else None)
            for t in traces
        ),
        log_lines=tuple(LogLine(rfc3339(ts), sev, host, tid, _cut(body)) for ts, sev, host, tid, body in logs),
        kernel_events=tuple(KernelLogEntry(rfc3339(ts), host, uuid, xid, msg) for ts, host, uuid, xid, msg in kernel),
        plot_ids=plot_ids,
    )


def _headline(
    analysis: dict[str, Any],
    failed: list[queries.Failure],
    inventory: dict[str, queries.GpuInfo],
    start_ns: int,
    end_ns: int,
) -> Headline:
    total = int(analysis["spans"]["total"])
    n_failed = int(analysis["spans"]["failed"])
    counts: dict[str, int] = {}
    for f in failed:
        if f.gpu_uuid:
            counts[f.gpu_uuid] = counts.get(f.gpu_uuid, 0) + 1
    gpus = tuple(sorted(counts, key=lambda u: (-counts[u], u)))
    hosts = tuple(sorted({f.host for f in failed if f.host}))
    causes = analysis.get("causes") or []
    top = causes[0] if causes else None
    first = failed[0].end_ns if failed else None
    last = failed[-1].end_ns if failed else None
    if n_failed == 0:
        text = f"No inference request failed between {short_utc(start_ns)} and {short_utc(end_ns)} ({total} requests)."
    else:
        where = ", ".join(actions.gpu_label(u, inventory, brief=True) for u in gpus[:3]) + (
            f" and {len(gpus) - 3} more" if len(gpus) > 3 else ""
        )
        since = short_utc(first) if first is not None else short_utc(start_ns)
        text = f"{n_failed} of {total} inference requests failed since {since}" + (f" on {where}" if where else "")
        if top is not None:
            catalog = CAUSES_BY_ID.get(top["cause"])
            # Where the failures are is already said; the headline names what else concentrates them.
            drivers = ", ".join(
                [
                    f"{d['attribute']}={d['value']}"
                    for d in top.get("drivers", ())
                    if d["attribute"] not in _PLACE_ATTRIBUTES
                ][:2]
            )
            text += f". Most likely cause: {catalog.title if catalog else top['cause']}" + (
                f" ({drivers})" if drivers else ""
            )
        text += "."
    return Headline(
        text=text,
        failed_spans=n_failed,
        total_spans=total,
        first_failure=rfc3339(first) if first is not None else None,
        last_failure=rfc3339(last) if last is not None else None,
        gpus=gpus,
        hosts=hosts,
        top_cause=top["cause"] if top else None,
    )


def _cut(text: str) -> str:
    return text if len(text) <= MAX_LOG_CHARS else text[: MAX_LOG_CHARS - 1] + "…"
