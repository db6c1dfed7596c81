"""The outgoing webhook: a Slack-compatible `{"text": …}` summary of a digest, with a link to its page."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from gpu_rca.correlate.digest.model import Digest
from gpu_rca.schemas.errors import GpuRcaError, UsageError

#: `--notify-url` (the CLI) or this variable (serve).
NOTIFY_URL_ENV = "GPU_RCA_NOTIFY_URL"
TIMEOUT_S = 5.0


class NotifyError(GpuRcaError):
    """The webhook could not be delivered (the digest itself is stored and written regardless)."""


def check_notify_url(url: str) -> str:
    """`url` if it is http(s) with a host; UsageError otherwise (checked before any work is done)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--notify-url must be an http(s) URL, got {url!r}")
    return url


def summary_text(digest: Digest, page_url: str | None) -> str:
    """A few lines for chat: the headline, the top causes with their actions, and the link."""
    lines = [f"*GPU failure digest* ({digest.trigger.kind}): {digest.headline.text}"]
    for i, section in enumerate(digest.causes[:3], 1):
        score = section.cause.get("score")
        lines.append(
            f"{i}. {section.title} (`{section.id}`, score {score:.2f}) — {section.action}"
            if isinstance(score, int | float)
            else f"{i}. {section.title} — {section.action}"
        )
    if page_url:
        lines.append(page_url)
    return "\n".join(lines)


def post_summary(url: str, digest: Digest, page_url: str | None, *, timeout_s: float = TIMEOUT_S) -> None:
    """POST the summary as JSON; NotifyError on a network error or a non-2xx answer."""
    body = json.dumps({"text": summary_text(digest, page_url)}).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        raise NotifyError(f"notify URL answered HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise NotifyError(f"cannot post to notify URL: {getattr(exc, 'reason', exc)}") from exc
    if not 200 <= status < 300:
        raise NotifyError(f"notify URL answered HTTP {status}")
