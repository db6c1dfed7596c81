"""`GET /gpus` as a page: the ledger's table, each troubled GPU's incidents and advice (autoescaped)."""

from __future__ import annotations

from typing import Any

from gpu_rca.correlate.digest.links import FileLinks
from gpu_rca.correlate.digest.render_html import environment
from gpu_rca.schemas.visible_text import visible


def render_gpus_html(ledger: dict[str, Any] | None, *, empty: str = "") -> str:
    """The ledger document (`Ledger.to_dict`) as a page; with no ledger, the page says `empty`."""
    page = (
        environment()
        .get_template("gpus.html.j2")
        .render(ledger=ledger, empty=empty, links=FileLinks("", "", "", "/digests"))
    )
    return visible(page)


__all__ = ["render_gpus_html"]
