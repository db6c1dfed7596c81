"""The failure digest: an analysis rendered for people (Markdown, HTML, JSON), its triggers and its archive."""

from __future__ import annotations

from gpu_rca.correlate.digest.alertmanager import AlertedGpu, AlertNotification, parse_alertmanager
from gpu_rca.correlate.digest.archive import DigestSummary, fetch_digest, fetch_rendering, list_digests, save_digest
from gpu_rca.correlate.digest.build import build_digest, new_digest_id
from gpu_rca.correlate.digest.burst import Burst, BurstDetector
from gpu_rca.correlate.digest.model import CauseSection, Digest, Headline, Plot, TraceLink, Trigger
from gpu_rca.correlate.digest.render_html import render_html, render_list_html
from gpu_rca.correlate.digest.render_md import render_markdown

__all__ = [
    "AlertNotification",
    "AlertedGpu",
    "Burst",
    "BurstDetector",
    "CauseSection",
    "Digest",
    "DigestSummary",
    "Headline",
    "Plot",
    "TraceLink",
    "Trigger",
    "build_digest",
    "fetch_digest",
    "fetch_rendering",
    "list_digests",
    "new_digest_id",
    "parse_alertmanager",
    "render_html",
    "render_list_html",
    "render_markdown",
    "save_digest",
]
