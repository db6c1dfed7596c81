"""The GPU ledger (`gpu-rca gpus`) as a rich table and advice lines, for people at a terminal."""

from __future__ import annotations

from typing import Any, TextIO

from rich.table import Table

from gpu_rca.ranking_view import console_for, plain_cell, short_id
from gpu_rca.schemas.visible_text import markup


def print_gpus(result: dict[str, Any], out: TextIO) -> None:
    """The ledger, worst GPUs first, then each GPU's advice in full."""
    console = console_for(out)
    fleet = result["fleet"]
    rate = fleet["failure_rate"]
    console.print(
        f"{len(result['gpus'])} GPUs between {markup(result['since'])} and {markup(result['until'])}; "
        f"fleet: {fleet['failed_spans']} of {fleet['inference_spans']} inference requests failed"
        + (f" ({100 * rate:.2f} %)." if rate is not None else "."),
        highlight=False,
    )
    if not result["gpus"]:
        console.print("No GPU was seen in this period.")
        return
    table = Table()
    for column, justify in (
        ("GPU", "left"),
        ("hosts", "left"),
        ("incidents", "right"),
        ("causes", "left"),
        ("XIDs", "left"),
        ("ECC DBE", "right"),
        ("hot min", "right"),
        ("failed", "right"),
        ("lift", "right"),
        ("advice", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=column == "GPU")  # type: ignore[arg-type]
    for gpu in result["gpus"]:
        hot = gpu["seconds_above_slowdown"]
        table.add_row(
            markup(short_id(gpu["gpu_uuid"])),
            plain_cell(", ".join(h["host"] for h in gpu["hosts"])),
            str(len(gpu["incidents"])),
            plain_cell(", ".join(f"{c}×{n}" for c, n in gpu["causes"].items())),
            plain_cell(", ".join(f"{xid}×{n}" for xid, n in gpu["xid_counts"].items())),
            "" if gpu["ecc_uncorrected"] is None else str(gpu["ecc_uncorrected"]),
            "" if hot is None else f"{hot / 60:.0f}",
            "" if gpu["failure_rate"] is None else f"{100 * gpu['failure_rate']:.1f} %",
            "" if gpu["failure_lift"] is None else f"×{gpu['failure_lift']:.1f}",
            plain_cell(", ".join(a["action"] for a in gpu["advice"])),
        )
    console.print(table)
    for gpu in result["gpus"]:
        if not gpu["advice"] and not gpu["incidents"]:
            continue
        hosts = ", ".join(h["host"] for h in gpu["hosts"]) or "no host seen"
        console.print(f"\n[bold]{markup(gpu['gpu_uuid'])}[/bold] ({markup(hosts)})", highlight=False)
        for incident in gpu["incidents"]:
            console.print(
                f"  incident {markup(incident['start'])} .. {markup(incident['end'])}: "
                f"{markup(', '.join(incident['causes']))} (digest {markup(', '.join(incident['digests']))})",
                highlight=False,
            )
        for advice in gpu["advice"]:
            console.print(f"  advice: {markup(advice['text'])}", highlight=False)
