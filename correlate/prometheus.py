"""Pull the Contract-2 GPU metrics from Prometheus for the windows around failed spans."""

from __future__ import annotations

from urllib.parse import urlsplit

from schemas.errors import UsageError


def check_prometheus_url(url: str) -> str:
    """`url` if it is an http(s) URL with a host; UsageError otherwise (fail at parse time, not mid-analysis)."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise UsageError(f"--prometheus must be an http(s) URL such as http://127.0.0.1:9090, got {url!r}")
    return url.rstrip("/")
