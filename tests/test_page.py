"""The digest page as a person sees it: headless Chromium renders it; the DOM shows tables, plots, links, text."""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path

import pytest

from gpu_rca.correlate import Store
from gpu_rca.correlate.digest import Trigger, build_digest, render_html, render_list_html
from gpu_rca.correlate.digest.archive import DigestSummary
from tests.support import REPO, require_binary
from tests.support.digest import XSS, analysis_for, build_incident

pytestmark = pytest.mark.chromium
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
)


def chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium once on `url` with a fresh profile folder."""
    binary = require_binary("chromium")
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def dump_dom(url: str, tmp_path: Path) -> str:
    """The DOM after Chromium parsed and ran the page, serialized."""
    return chromium(url, tmp_path / "profile-dom", "--dump-dom").stdout


def screenshot(url: str, tmp_path: Path, name: str, height: int = 2600) -> Path:
    """A PNG of the page, kept under test-artifacts/ for people to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    chromium(
        url, tmp_path / "profile-shot", f"--screenshot={path}", f"--window-size=1280,{height}", "--hide-scrollbars"
    )
    return path


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, dict]:
    """A hostile digest page on disk: a span attribute, a log line and a warning hold <script>."""
    folder = tmp_path_factory.mktemp("page")
    with Store(":memory:") as store:
        incident = build_incident(store, hostile=True)
        made = build_digest(
            store.connection,
            analysis_for(incident, hostile=True),
            trigger=Trigger("manual"),
            grafana_url="http://grafana.example:3000",
        )
    path = folder / "digest.html"
    path.write_text(render_html(made), encoding="utf-8")
    return path, incident


def test_page_renders_the_cause_table_plots_and_trace_links(page, tmp_path):
    path, incident = page
    dom = dump_dom(path.as_uri(), tmp_path)
    table = re.search(r'<table id="causes">.*?</table>', dom, re.S).group(0)
    assert "gpu_oom_large_inputs" in table and "GPU memory exhausted by large inputs" in table
    assert len(re.findall(r'<img class="plot" src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', dom)) == 2
    links = re.findall(r'<a class="trace-link" href="([^"]+)"', dom)
    assert len(links) == 3
    assert all(html.unescape(link).startswith("http://grafana.example:3000/explore?") for link in links)
    assert incident["failed_traces"][0] in html.unescape(links[0])
    shot = screenshot(path.as_uri(), tmp_path, "digest-page.png")
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 50_000


def test_html_in_span_attributes_and_log_lines_shows_as_text(page, tmp_path):
    path, _ = page
    dom = dump_dom(path.as_uri(), tmp_path)
    assert "<script" not in dom.lower()  # the page has no script of its own, and none got in
    escaped = html.escape(XSS, quote=False)
    logs = re.search(r'<pre class="logs">(.*?)</pre>', dom, re.S).group(1)
    assert escaped in logs  # the log line, as text
    drivers = re.search(r'<table class="drivers">.*?</table>', dom, re.S).group(0)
    assert escaped in drivers  # the span attribute value, as text
    assert dom.count(escaped) >= 5  # headline, cause table, drivers, log lines, warnings


def test_digest_list_page(tmp_path):
    rows = [
        DigestSummary(
            "20260302T101500Z-abc123",
            "2026-03-02T10:15:00.000Z",
            "alertmanager",
            f"12 of 90 failed on {XSS}",
            "gpu_oom_large_inputs",
            12,
        )
    ]
    path = tmp_path / "list.html"
    path.write_text(render_list_html(rows), encoding="utf-8")
    dom = dump_dom(path.as_uri(), tmp_path)
    assert 'href="/digests/20260302T101500Z-abc123.html"' in dom
    assert html.escape(XSS, quote=False) in dom and "<script" not in dom.lower()


def test_a_page_opened_with_token_in_the_link_renders_in_the_browser(tmp_path):
    import os

    from gpu_rca.correlate.digest import save_digest
    from gpu_rca.correlate.server.process import ServeProcess

    db = tmp_path / "page.duckdb"
    with Store.open(db) as store:
        incident = build_incident(store)
        made = build_digest(store.connection, analysis_for(incident), trigger=Trigger("manual"))
        with store.transaction():
            save_digest(store.connection, made)
    with ServeProcess(db, env=dict(os.environ, GPU_RCA_TOKEN="page-token")) as serve:
        without = dump_dom(f"{serve.url}/digests/{made.id}.html", tmp_path / "a")
        with_token = dump_dom(f"{serve.url}/digests/{made.id}.html?token=page-token", tmp_path / "b")
    assert 'id="causes"' not in without  # 401 without the token
    assert '<table id="causes">' in with_token and "gpu_oom_large_inputs" in with_token
