"""Digests kept in the store's `digests` table (docs/contracts.md §7): save one, list them, fetch one by id."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from gpu_rca.correlate.digest.links import served_links
from gpu_rca.correlate.digest.model import Digest, Plot
from gpu_rca.correlate.digest.render_html import render_html
from gpu_rca.correlate.digest.render_md import render_markdown
from gpu_rca.correlate.store.query import scalar
from gpu_rca.schemas import store as s
from gpu_rca.schemas.timefmt import parse_rfc3339_ns

#: Ids are made by `new_digest_id`; anything else in a URL is refused before it reaches SQL.
DIGEST_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]{0,63}$")


@dataclass(frozen=True)
class DigestSummary:
    """One row of the digest list."""

    id: str
    created_at: str
    trigger: str
    headline: str
    top_cause: str | None
    failed_spans: int


def plot_path(digest_id: str, plot: Plot) -> str:
    """Where `serve` answers a plot's PNG, relative to the digest's own `.md` address."""
    return f"{digest_id}/plots/{plot.id}.png"


def save_digest(con: duckdb.DuckDBPyConnection, digest: Digest) -> None:
    """Insert a digest with its JSON, Markdown and HTML renderings (the caller owns the transaction)."""
    created = datetime.fromtimestamp(parse_rfc3339_ns(digest.created_at) / 1e9, tz=UTC).replace(tzinfo=None)
    window = digest.analysis["window"]
    con.execute(
        f"INSERT INTO {s.DIGESTS} (id, created_at, trigger, window_start_ns, window_end_ns, json, markdown, html) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            digest.id,
            created,
            digest.trigger.kind,
            parse_rfc3339_ns(window["start"]),
            parse_rfc3339_ns(window["end"]),
            digest.to_json(),
            render_markdown(digest, plot_href=lambda p: plot_path(digest.id, p), links=served_links(digest.id)),
            render_html(digest),
        ],
    )


def list_digests(con: duckdb.DuckDBPyConnection, limit: int = 200) -> list[DigestSummary]:
    """The newest digests first."""
    rows = con.execute(
        f"""
        SELECT id, json_extract_string(json, '$.created_at'), trigger, json_extract_string(json, '$.headline.text'),
               json_extract_string(json, '$.headline.top_cause'),
               TRY_CAST(json_extract_string(json, '$.headline.failed_spans') AS BIGINT)
        FROM {s.DIGESTS} ORDER BY created_at DESC, id DESC LIMIT ?
        """,
        [limit],
    ).fetchall()
    return [DigestSummary(r[0], r[1] or "", r[2] or "", r[3] or "", r[4], int(r[5] or 0)) for r in rows]


def fetch_rendering(con: duckdb.DuckDBPyConnection, digest_id: str, fmt: str) -> str | None:
    """A stored digest as `json`, `md` or `html`; None when there is no such digest."""
    column = {"json": "json", "md": "markdown", "html": "html"}[fmt]
    if not DIGEST_ID.match(digest_id):
        return None
    row = con.execute(f"SELECT {column} FROM {s.DIGESTS} WHERE id = ?", [digest_id]).fetchone()
    return None if row is None else row[0]


def fetch_digest(con: duckdb.DuckDBPyConnection, digest_id: str) -> Digest | None:
    """A stored digest rebuilt from its JSON; None when there is no such digest."""
    text = fetch_rendering(con, digest_id, "json")
    return None if text is None else Digest.from_json(text)


def count_digests(con: duckdb.DuckDBPyConnection) -> int:
    """How many digests the store holds."""
    return int(scalar(con, f"SELECT count(*) FROM {s.DIGESTS}"))
