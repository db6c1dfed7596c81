"""Links out of a digest: Grafana Explore on Tempo for a trace id, and the digest's own page."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from urllib.parse import quote

#: Where Grafana lives (`--grafana-url` wins); without it, trace ids are shown without a link.
GRAFANA_URL_ENV = "GPU_RCA_GRAFANA_URL"
#: The Tempo datasource's uid in Grafana; deploy/ provisions it as `tempo`.
TEMPO_UID_ENV = "GPU_RCA_GRAFANA_TEMPO_UID"
#: The address people reach `gpu-rca serve` at, for links in notifications.
PUBLIC_URL_ENV = "GPU_RCA_PUBLIC_URL"


def grafana_url_from_env(explicit: str | None = None) -> str | None:
    """`explicit`, else `$GPU_RCA_GRAFANA_URL`, else None; without a trailing slash."""
    url = explicit or os.environ.get(GRAFANA_URL_ENV) or None
    return url.rstrip("/") if url else None


def grafana_trace_url(
    grafana_url: str,
    trace_id: str,
    *,
    start_ns: int | None = None,
    end_ns: int | None = None,
    tempo_uid: str | None = None,
) -> str:
    """A Grafana Explore link (the `panes` format of Grafana 10+) that opens one trace in Tempo."""
    uid = tempo_uid or os.environ.get(TEMPO_UID_ENV) or "tempo"
    pane: dict[str, object] = {
        "datasource": uid,
        "queries": [
            {"refId": "A", "datasource": {"type": "tempo", "uid": uid}, "queryType": "traceql", "query": trace_id}
        ],
    }
    if start_ns is not None and end_ns is not None:
        # Tempo finds a trace id faster inside a range; pad it so clock skew does not hide the trace.
        pane["range"] = {"from": str(start_ns // 10**6 - 3_600_000), "to": str(end_ns // 10**6 + 3_600_000)}
    panes = json.dumps({"rca": pane}, separators=(",", ":"))
    return f"{grafana_url.rstrip('/')}/explore?schemaVersion=1&orgId=1&panes={quote(panes, safe='')}"


def digest_page_url(public_url: str | None, digest_id: str) -> str | None:
    """The digest's HTML page on `serve`, when its public address is known."""
    base = public_url or os.environ.get(PUBLIC_URL_ENV)
    return f"{base.rstrip('/')}/digests/{digest_id}.html" if base else None


@dataclass(frozen=True)
class FileLinks:
    """Where a digest's renderings sit relative to each other: files in one folder, or serve's routes."""

    markdown: str
    html: str
    json: str
    home: str | None = None  # the digest list (serve only)


def served_links(digest_id: str) -> FileLinks:
    """Links as `serve` answers them: `/digests/{id}.md` beside `/digests/{id}.html`, and the list."""
    return FileLinks(f"{digest_id}.md", f"{digest_id}.html", f"{digest_id}.json", home="/digests")
