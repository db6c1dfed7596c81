"""HTML rendering with Jinja2 (autoescape on): span attributes and log lines are untrusted input."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache

from jinja2 import Environment, PackageLoader
from markupsafe import Markup, escape

from gpu_rca.correlate.digest import fmt
from gpu_rca.correlate.digest.links import FileLinks, served_links
from gpu_rca.correlate.digest.model import Digest, Plot
from gpu_rca.schemas.visible_text import visible

_BACKTICKS = re.compile(r"`([^`]+)`")


def inline_code(text: str) -> Markup:
    """Escape `text`, then show its `backticked` parts as <code> (escaping first keeps this safe)."""
    return Markup(_BACKTICKS.sub(r"<code>\1</code>", str(escape(text))))


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The template environment: package templates, autoescape everywhere."""
    env = Environment(
        loader=PackageLoader("gpu_rca.correlate.digest", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        share=fmt.share,
        pvalue=fmt.pvalue,
        number=fmt.number,
        score=fmt.score,
        time_of=fmt.time_of,
        day_time=fmt.day_time,
        window=fmt.window,
        text=fmt.text,
        short_id=fmt.short_id,
        inline_code=inline_code,
    )
    return env


def render_html(
    digest: Digest, *, links: FileLinks | None = None, plot_src: Callable[[Plot], str] | None = None
) -> str:
    """One digest as a page: serve's links unless `links` are given; plots inline unless `plot_src` names files."""
    # Escaped for HTML by the template; control characters and bidi overrides are shown as well, for a page
    # that is opened in a terminal pager as much as in a browser.
    page = (
        environment()
        .get_template("digest.html.j2")
        .render(
            d=digest,
            links=links or served_links(digest.id),
            plot_src=plot_src or (lambda p: p.data_uri),
        )
    )
    return visible(page)


def render_list_html(digests: Sequence[object]) -> str:
    """The list of stored digests, newest first (records with id, created_at, trigger, headline, …)."""
    page = environment().get_template("list.html.j2").render(digests=digests, links=FileLinks("", "", "", "/digests"))
    return visible(page)
