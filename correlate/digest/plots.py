"""PNG plots of the metric windows around the failures, one per cause, plus a failures-over-time overview.

Uses matplotlib's object API (`Figure`, no pyplot), so nothing global changes and no display is needed.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb

from gpu_rca.correlate.digest import queries
from gpu_rca.correlate.digest.actions import gpu_label
from gpu_rca.correlate.digest.model import Plot
from gpu_rca.correlate.digest.queries import GpuInfo
from gpu_rca.schemas import metrics as M

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_MIB_PER_GIB = 1024.0
#: Colours for up to four GPUs on one panel; failures are always red.
_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b")
_FAILURE = "#d62728"
#: GPUs other than the one the story is about: thin and grey.
_OTHER = "#9a9a9a"
MAX_GPUS_PER_PLOT = 4


@dataclass(frozen=True)
class Panel:
    """One axes: a metric drawn per GPU, optionally with a dashed reference metric (a limit, a total)."""

    metric: str
    label: str
    reference: str | None = None
    scale: float = 1.0
    reference_label: str = ""


_MEMORY = Panel(M.FB_USED, "memory used (GiB)", M.FB_TOTAL, 1 / _MIB_PER_GIB, "dashed: memory total")
_UTIL = Panel(M.GPU_UTIL, "utilization (%)")
_TEMP = Panel(M.GPU_TEMP, "temperature (°C)", M.SLOWDOWN_TEMP, reference_label="dashed: slowdown temperature")
_CLOCK = Panel(M.SM_CLOCK, "SM clock (MHz)", M.MAX_SM_CLOCK, reference_label="dashed: max SM clock")
_POWER = Panel(M.POWER_USAGE, "power (W)", M.ENFORCED_POWER_LIMIT, reference_label="dashed: enforced power limit")

#: Which metric windows show each cause (the typical evidence of docs/contracts.md §4).
CAUSE_PANELS: dict[str, tuple[Panel, ...]] = {
    "gpu_oom_large_inputs": (_MEMORY, _UTIL),
    "gpu_memory_foreign_process": (_MEMORY,),
    "compute_saturation": (_UTIL,),
    "thermal_throttling": (_TEMP, _CLOCK),
    "power_capping": (_POWER, _CLOCK),
    "hw_slowdown": (_CLOCK, _POWER),
    "ecc_memory_errors": (Panel(M.ECC_DBE_VOL_TOTAL, "uncorrectable ECC errors (total)"),),
    "gpu_fallen_off_bus": (_UTIL, _POWER),
    "cuda_kernel_fault": (_UTIL,),
    "application_error": (_UTIL,),
}


def cause_plot(
    con: duckdb.DuckDBPyConnection,
    cause: dict[str, Any],
    *,
    start_ns: int,
    end_ns: int,
    inventory: dict[str, GpuInfo],
) -> Plot | None:
    """The metric windows of a cause's GPUs with its failures marked; None when no samples exist."""
    panels = CAUSE_PANELS.get(cause["cause"], (_UTIL,))
    gpus = list(cause.get("gpus", ()))[:MAX_GPUS_PER_PLOT]
    failed = queries.failures(con, start_ns, end_ns, gpus)
    if not gpus:
        gpus = _most_failed(failed)
        failed = [f for f in failed if f.gpu_uuid in gpus]
    drawn = [
        (
            panel,
            queries.metric_series(con, panel.metric, gpus, start_ns, end_ns),
            queries.metric_series(con, panel.reference, gpus, start_ns, end_ns) if panel.reference else {},
        )
        for panel in panels
    ]
    drawn = [d for d in drawn if d[1]]
    if not drawn:
        return None
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 1.1 + 2.0 * len(drawn)), dpi=100, layout="constrained")
    axes = figure.subplots(len(drawn), 1, sharex=True, squeeze=False)[:, 0]
    story = _story_gpu(failed, gpus)
    for ax, (panel, series, reference) in zip(axes, drawn, strict=True):
        for colour, uuid in zip(_COLOURS, gpus, strict=False):
            if story is not None:
                colour = _COLOURS[0] if uuid == story else _OTHER
            if uuid in series:
                times, values = series[uuid]
                # Samples hold until the next one: steps, not slopes between scrapes.
                ax.plot(
                    _dates(times),
                    [v * panel.scale for v in values],
                    color=colour,
                    linewidth=1.3 if story is None else (2.0 if uuid == story else 0.9),
                    drawstyle="steps-post",
                    zorder=3 if uuid == story else 2,
                    label=gpu_label(uuid, inventory) + (" (most failures)" if uuid == story else ""),
                )
            if uuid in reference:
                times, values = reference[uuid]
                ax.plot(
                    _dates(times),
                    [v * panel.scale for v in values],
                    color=colour,
                    linewidth=1,
                    linestyle="--",
                    drawstyle="steps-post",
                    alpha=0.7,
                )
        if panel.metric == M.FB_USED and not reference:
            # dcgm-exporter's default counters carry used and free, not total: draw the inventory's total.
            totals = {t for u in gpus if u in inventory and (t := inventory[u].memory_total_bytes) is not None}
            for total_bytes in sorted(totals):
                ax.axhline(total_bytes / 2**30, color="#555555", linewidth=1, linestyle="--", alpha=0.7)
        _mark_failures(ax, [f.end_ns for f in failed])
        if panel.reference_label and (reference or panel.metric == M.FB_USED):
            ax.text(
                0.995,
                0.97,
                panel.reference_label,
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=7,
                color="#444444",
                bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1},
            )
        ax.set_ylim(bottom=0)
        ax.set_ylabel(panel.label, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    axes[0].legend(fontsize=8, loc="best", framealpha=0.85)
    axes[0].set_title(f"{cause['cause']}: {len(failed)} failed requests on these GPUs (red ticks)", fontsize=10)
    _format_time_axis(axes[-1], start_ns, end_ns)
    return Plot(f"{cause['cause']}-metrics", f"Metric windows for {cause['cause']}", cause["cause"], _png(figure))


def overview_plot(con: duckdb.DuckDBPyConnection, *, start_ns: int, end_ns: int) -> Plot | None:
    """Inference requests per minute, succeeded and failed, across the window."""
    span_ns = max(end_ns - start_ns, 1)
    bucket_ns = 60 * 10**9 if span_ns <= 6 * 3600 * 10**9 else 3600 * 10**9
    rows = queries.requests_per_bucket(con, start_ns, end_ns, bucket_ns)
    if not rows:
        return None
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 2.4), dpi=100, layout="constrained")
    ax = figure.subplots()
    width_days = bucket_ns / 86_400e9 * 0.9
    times = _dates([r[0] for r in rows])
    ok = [r[1] - r[2] for r in rows]
    ax.bar(times, ok, width=width_days, align="edge", color="#9ecae1", label="succeeded")
    ax.bar(times, [r[2] for r in rows], width=width_days, align="edge", bottom=ok, color=_FAILURE, label="failed")
    unit = "minute" if bucket_ns == 60 * 10**9 else "hour"
    ax.set_ylabel(f"requests per {unit}", fontsize=9)
    ax.set_title("Inference requests over the window", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3, axis="y")
    ax.tick_params(labelsize=8)
    _format_time_axis(ax, start_ns, end_ns)
    return Plot("overview-requests", "Inference requests over the window", None, _png(figure))


def _story_gpu(failed: Sequence[queries.Failure], gpus: Sequence[str]) -> str | None:
    """The GPU the failures are about, when one holds most of them (and there are others to grey out)."""
    if len(gpus) < 2:
        return None
    counts: dict[str, int] = {}
    for f in failed:
        if f.gpu_uuid is not None and f.gpu_uuid in gpus:
            counts[f.gpu_uuid] = counts.get(f.gpu_uuid, 0) + 1
    total = sum(counts.values())
    top = max(counts, key=lambda u: counts[u], default=None)
    return top if top is not None and counts[top] > total / 2 else None


def _most_failed(failed: Sequence[queries.Failure]) -> list[str]:
    counts: dict[str, int] = {}
    for f in failed:
        if f.gpu_uuid:
            counts[f.gpu_uuid] = counts.get(f.gpu_uuid, 0) + 1
    return sorted(counts, key=lambda u: -counts[u])[:MAX_GPUS_PER_PLOT]


def _mark_failures(ax: Axes, end_ns: Sequence[int]) -> None:
    if end_ns:
        # A rug along the bottom: density of failures is visible without hiding the metric lines.
        ax.plot(
            _dates(end_ns),
            [0.02] * len(end_ns),
            transform=ax.get_xaxis_transform(),
            linestyle="none",
            marker="|",
            markersize=9,
            color=_FAILURE,
            alpha=0.6,
        )


def _format_time_axis(ax: Axes, start_ns: int, end_ns: int) -> None:
    from matplotlib.dates import AutoDateLocator, DateFormatter

    ax.set_xlim(_dates([start_ns])[0], _dates([end_ns])[0])
    ax.xaxis.set_major_locator(AutoDateLocator(minticks=4, maxticks=10))
    ax.xaxis.set_major_formatter(DateFormatter("%H:%M" if end_ns - start_ns < 86_400e9 else "%m-%d %H:%M"))
    ax.set_xlabel("time (UTC)", fontsize=9)


def _dates(ts_ns: Sequence[int]) -> list[float]:
    """Times as matplotlib date numbers (what it turns datetimes into; the time axis formats them)."""
    from matplotlib.dates import date2num

    return [float(d) for d in date2num([datetime.fromtimestamp(t / 1e9, tz=UTC) for t in ts_ns])]


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
