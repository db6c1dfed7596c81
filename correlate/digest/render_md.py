"""Markdown rendering of a digest: for chat, e-mail, tickets and `digest.md` files."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from gpu_rca.correlate.digest import fmt
from gpu_rca.correlate.digest.links import FileLinks
from gpu_rca.correlate.digest.model import CauseSection, Digest, Plot
from gpu_rca.schemas.visible_text import visible

#: Characters that would start Markdown or HTML structure inside a table cell.
_CELL_ESCAPES = str.maketrans({"|": "\\|", "<": "&lt;", ">": "&gt;", "&": "&amp;", "`": "'", "\n": " ", "\r": " "})


def render_markdown(
    digest: Digest, *, plot_href: Callable[[Plot], str] | None = None, links: FileLinks | None = None
) -> str:
    """The digest as Markdown; `plot_href` gives each plot's image address (None: plots are listed only);
    `links` name the HTML and JSON renderings beside it (None: not linked)."""
    window = digest.analysis["window"]
    out: list[str] = [f"# GPU failure digest — {fmt.window(window['start'], window['end'])}", ""]
    out += [f"**{_text(digest.headline.text)}**", ""]
    for note in digest.history:
        earlier = "; ".join(
            f"{fmt.day_time(e.start)}: {', '.join(e.causes)} (digest `{_text(', '.join(e.digests))}`)"
            for e in note.earlier
        )
        out += [f"- `{_text(note.gpu_uuid)}`: **{_text(note.text)}** — earlier: {earlier}"]
    if digest.history:
        out += [""]
    out += [
        f"Window {fmt.day_time(window['start'])} – {fmt.day_time(window['end'])} · "
        f"trigger: {_text(digest.trigger.kind)}"
        + (f" ({_text(digest.trigger.detail)})" if digest.trigger.detail else "")
        + f" · digest `{digest.id}`, made {fmt.day_time(digest.created_at)}"
        + (f" · [HTML]({links.html}) · [JSON]({links.json})" if links else ""),
        "",
    ]
    for plot in digest.overview_plots():
        out += _image(plot, plot_href)
    out += ["## Ranked causes", ""]
    if not digest.causes:
        out += ["No cause ranked: nothing failed in this window, or nothing concentrated the failures.", ""]
    else:
        out += _table(
            ("#", "cause", "score", "confidence", "failed", "GPUs", "top drivers"),
            [
                (
                    str(i),
                    f"{s.title} ({s.id})",
                    fmt.score(s.cause.get("score")),
                    s.cause.get("confidence", ""),
                    str(s.cause.get("failed_spans", "")),
                    str(len(s.cause.get("gpus", ()))),
                    ", ".join(f"{d['attribute']}={fmt.text(d['value'])}" for d in s.cause.get("drivers", ())[:3]),
                )
                for i, s in enumerate(digest.causes, 1)
            ],
        )
    for i, section in enumerate(digest.causes, 1):
        out += _cause(i, section, digest, plot_href)
    out += _capacity(digest.capacity)
    warnings = digest.analysis.get("warnings") or []
    if warnings:
        out += ["## Warnings", ""] + [f"- {_text(w)}" for w in warnings] + [""]
    # Markdown is read in terminals too (`gpu-rca digest` to stdout, `cat digest.md`): traffic text's escape
    # sequences are shown, never sent. Renderings never hold control characters of their own but newlines.
    return visible("\n".join(out).rstrip() + "\n")


def _cause(i: int, section: CauseSection, digest: Digest, plot_href: Callable[[Plot], str] | None) -> list[str]:
    c = section.cause
    out = [
        f"## {i}. {_text(section.title)} (`{section.id}`) — score {fmt.score(c.get('score'))}, "
        f"{c.get('confidence', '')} confidence",
        "",
    ]
    if c.get("summary"):
        out += [_text(c["summary"]), ""]
    out += [f"**Action:** {_text(section.action)}", ""]
    if c.get("drivers"):
        out += ["**Drivers**", ""]
        out += _table(
            ("attribute", "value", "failure share", "baseline share", "lift", "p-value"),
            [
                (
                    d["attribute"],
                    fmt.text(d["value"]),
                    fmt.share(d.get("failure_share")),
                    fmt.share(d.get("baseline_share")),
                    fmt.number(d.get("lift")),
                    fmt.pvalue(d.get("p_value")),
                )
                for d in c["drivers"]
            ],
        )
    if c.get("evidence"):
        out += ["**Evidence**", ""]
        out += _table(
            ("kind", "name", "GPU", "host", "value", "baseline", "from", "to"),
            [
                (
                    e.get("kind", ""),
                    e.get("name", ""),
                    fmt.short_id(e.get("gpu_uuid")),
                    e.get("host") or "–",
                    fmt.number(e.get("value"), e.get("unit")),
                    fmt.number(e.get("baseline"), e.get("unit")),
                    fmt.time_of(e.get("start")),
                    fmt.time_of(e.get("end")),
                )
                for e in c["evidence"]
            ],
        )
    for plot_id in section.plot_ids:
        plot = digest.plot(plot_id)
        if plot is not None:
            out += _image(plot, plot_href)
    if section.trace_links:
        out += ["**Example failed traces**", ""]
        out += [f"- [`{t.trace_id}`]({t.url})" if t.url else f"- `{t.trace_id}`" for t in section.trace_links]
        out += [""]
    if section.log_lines:
        out += ["**Log lines**", ""]
        out += _code(f"{line.ts} {line.severity:<7} {line.host or '-'} {line.body}" for line in section.log_lines)
    if section.kernel_events:
        out += ["**Kernel events**", ""]
        out += _code(f"{e.ts} {e.host or '-'} {e.message}" for e in section.kernel_events)
    return out


def _capacity(cap: dict[str, Any]) -> list[str]:
    if not cap:
        return []
    out = ["## Capacity", ""]
    window = cap.get("window") or {}
    if window:
        out += [f"Over {fmt.day_time(window.get('start'))} – {fmt.day_time(window.get('end'))}.", ""]
    if cap.get("busiest_hours"):
        out += ["**Busiest hours**", ""]
        out += _table(
            ("hour", "requests", "failed", "peak per minute", "p95 latency"),
            [
                (
                    fmt.day_time(h["hour"]),
                    str(h["requests"]),
                    str(h["failed"]),
                    str(h["peak_per_minute"]),
                    fmt.number(h["p95_latency_ms"], "ms"),
                )
                for h in cap["busiest_hours"]
            ],
        )
    out += _request_memory(cap.get("request_memory") or {})
    if cap.get("gpus"):
        idle = [g for g in cap["gpus"] if g["idle"]]
        out += [f"**GPUs** — {len(idle)} of {len(cap['gpus'])} sat idle", ""]
        out += _table(
            ("GPU", "requests", "mean utilization", "idle"),
            [
                (g["gpu"], str(g["requests"]), fmt.number(g["utilization_mean_pct"], "%"), "yes" if g["idle"] else "")
                for g in cap["gpus"]
            ],
        )
    return out


def _request_memory(mem: dict[str, Any]) -> list[str]:
    fit, rows = mem.get("fit"), mem.get("rows") or []
    if not fit or not rows:
        return []
    gpu_names = [g["gpu_name"] for g in mem.get("gpus") or []]
    out = [
        "**GPU memory one request needs, by model and input size**",
        "",
        f"Fitted as {fit['formula']} from {fit['points']} observations ({_fit_source(fit)}); "
        f"R² {fmt.number(fit['r2'])}, residual {fmt.number(fit['rms_gib'], 'GiB')}.",
        "",
    ]
    out += _table(
        (
            "model",
            "input size",
            "task types",
            "requests",
            "OOM",
            "per request",
            *(f"fit at once on {n}" for n in gpu_names),
        ),
        [
            (
                str(r["model"] or "–"),
                f"{r['input_size']} px",
                r["task_types"] or "–",
                str(r["requests"]),
                str(r["oom"]),
                fmt.number(r["memory_gib"], "GiB"),
                *(fmt.number(r["per_gpu"].get(n)) for n in gpu_names),
            )
            for r in rows
        ],
    )
    answers = (mem.get("pools") or {}).get("answers") or []
    if answers:
        out += ["**Pools**", ""] + [f"- {_text(a)}" for a in answers] + [""]
    return out


def _fit_source(fit: dict[str, Any]) -> str:
    if fit.get("source") == "service":
        return "the service's own per-request peak"
    return "rises of the process's GPU memory, less its idle footprint"


def _image(plot: Plot, plot_href: Callable[[Plot], str] | None) -> list[str]:
    if plot_href is None:
        return [f"_Plot: {_text(plot.title)}_", ""]
    return [f"![{_text(plot.title)}]({plot_href(plot)})", ""]


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def _code(lines: Iterable[str]) -> list[str]:
    # A fence longer than any backtick run inside keeps log text from closing the block early.
    body = [line.replace("\r", " ").replace("\n", " ") for line in lines]
    fence = "`" * max(3, _longest_backtick_run(body) + 1)
    return [fence + "text", *body, fence, ""]


def _longest_backtick_run(lines: Sequence[str]) -> int:
    best = 0
    for line in lines:
        run = 0
        for ch in line:
            run = run + 1 if ch == "`" else 0
            best = max(best, run)
    return best


def _cell(value: Any) -> str:
    return str(value).translate(_CELL_ESCAPES)


def _text(value: Any) -> str:
    """Free text outside tables: HTML-escaped so a Markdown viewer never runs it."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
