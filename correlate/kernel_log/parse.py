"""Kernel logs → XID events: `dmesg -T`, raw `dmesg`, journalctl `short`/`short-iso` and syslog lines.

Lines without a year (`dmesg -T` has one, `short`/syslog do not) get the year that puts them at or before
the reference time (a file's mtime), so a December line read in January lands in the previous year.
Times without an offset are read in `tz` (UTC unless told): the kernel prints the machine's local time.
Raw `dmesg` seconds since boot need the boot time and the host, otherwise those lines are skipped.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gpu_rca.schemas.errors import UsageError
from gpu_rca.schemas.pci import normalize_pci_bus_id
from gpu_rca.schemas.xid import XID_FALLEN_OFF_BUS

_MONTHS = {
    m: i
    for i, m in enumerate(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], start=1)
}
_NS = 1_000_000_000

# --- line prefixes ---------------------------------------------------------------------------------
_DMESG_T = re.compile(
    r"^\[(?:[A-Z][a-z]{2} )?(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<hms>\d{2}:\d{2}:\d{2}) (?P<year>\d{4})\] ?"
    r"(?P<body>.*)$"
)
_DMESG_RAW = re.compile(r"^\[\s*(?P<secs>\d+\.\d+)\] ?(?P<body>.*)$")
_SYSLOG = re.compile(
    r"^(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<hms>\d{2}:\d{2}:\d{2}) (?P<host>\S+) "
    r"(?P<ident>[^\s:\[]+)(?:\[\d+\])?: ?(?P<body>.*)$"
)
_ISO = re.compile(
    r"^(?P<iso>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?P<offset>Z|[+-]\d{2}:?\d{2})?) (?P<host>\S+) "
    r"(?P<ident>[^\s:\[]+)(?:\[\d+\])?: ?(?P<body>.*)$"
)
# journalctl/syslog lines printed without a host name (`journalctl -o short` on some setups, `--no-hostname`).
_SYSLOG_NO_HOST = re.compile(
    r"^(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<hms>\d{2}:\d{2}:\d{2}) kernel(?:\[\d+\])?: ?(?P<body>.*)$"
)
_ISO_NO_HOST = re.compile(
    r"^(?P<iso>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?P<offset>Z|[+-]\d{2}:?\d{2})?) "
    r"kernel(?:\[\d+\])?: ?(?P<body>.*)$"
)
_BARE_KERNEL = re.compile(r"^kernel: ?(?P<body>.*)$")
# syslog/journal copies of printk lines may keep the kernel's own seconds-since-boot stamp.
_PRINTK_TIME = re.compile(r"^\[\s*\d+\.\d+\] ?")

# --- NVRM messages -----------------------------------------------------------------------------------
_PCI = r"(?:[0-9a-fA-F]{1,8}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}(?:\.[0-7])?"
_XID = re.compile(
    rf"NVRM: Xid \((?:PCI:)?(?P<pci>{_PCI})(?:\s+GPU-I:(?P<gi>\d+))?\): (?P<code>\d+)(?:, ?(?P<rest>.*))?$"
)
_PID_NAME = re.compile(r"^pid=(?P<pid>[^,]*)(?:, name=(?P<name>[^,]*))?(?:, ?(?P<msg>.*))?$")
_GPU_AT = re.compile(rf"NVRM: GPU at (?:PCI:)?(?P<pci>{_PCI}): (?P<uuid>GPU-[0-9a-fA-F-]{{36}})")
_FALLEN_START = re.compile(rf"NVRM: The NVIDIA GPU (?P<pci>{_PCI})")
_FALLEN_END = "fallen off the bus and is not responding to commands"
#: How many lines the multi-line "fallen off the bus" message may span.
_FALLEN_SPAN_LINES = 4
#: A synthetic XID 79 this close to a printed one on the same GPU is the same event.
_FALLEN_DEDUP_NS = 60 * _NS

SKIP_BOOT_RELATIVE = "seconds since boot (pass --boot-time and --host)"
SKIP_NO_TIMESTAMP = "no timestamp on the line"
SKIP_BAD_TIMESTAMP = "timestamp is not a real date"
SKIP_BAD_PCI = "PCI bus id out of range"
SKIP_BAD_XID = "XID code out of range"
SKIP_FALLEN_CUT = "'fallen off the bus' notice cut before its end"
IGNORED_NO_XID = "NVRM lines that report no XID (driver information)"


@dataclass(frozen=True)
class KernelEvent:
    """One XID reported by the driver: a `kernel_events` row (docs/contracts.md §7) plus where it came from."""

    ts_ns: int
    host: str | None
    pci_bus_id: str
    gpu_uuid: str | None
    xid: int
    pid: int | None
    process: str | None
    message: str
    gpu_instance_id: int | None = None  # MIG GPU instance (`GPU-I:05`)
    line_no: int = 0  # 1-based line of the input; 0 when unknown
    synthetic: bool = False  # True for XID 79 read from the "fallen off the bus" text (no Xid line)

    def as_row(self) -> dict[str, object]:
        """The `kernel_events` columns."""
        return {
            "ts_ns": self.ts_ns,
            "host": self.host,
            "pci_bus_id": self.pci_bus_id,
            "gpu_uuid": self.gpu_uuid,
            "xid": self.xid,
            "pid": self.pid,
            "process": self.process,
            "message": self.message,
        }


@dataclass(frozen=True)
class GpuIdentity:
    """A PCI bus id → UUID pair from `NVRM: GPU at PCI:…: GPU-…` (for the store's GPU inventory)."""

    host: str | None
    pci_bus_id: str
    gpu_uuid: str


@dataclass(frozen=True)
class KernelLogResult:
    """What a kernel log held: XID events, GPU identities, and what was skipped and why."""

    events: tuple[KernelEvent, ...]
    gpus: tuple[GpuIdentity, ...]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> XID lines not stored
    warnings: tuple[str, ...] = ()
    lines: int = 0
    #: reason -> other NVRM lines read but not stored (informational driver messages)
    ignored: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Stamp:
    ts_ns: int | None
    host: str | None
    body: str
    skip_reason: str | None  # why ts_ns is None


def resolve_tz(tz: str | tzinfo | None) -> tzinfo:
    """A tzinfo from an IANA name (`Europe/Berlin`), `UTC`, a tzinfo, or None (UTC)."""
    if tz is None:
        return UTC
    if isinstance(tz, tzinfo):
        return tz
    if tz.upper() in {"UTC", "Z"}:
        return UTC
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UsageError(f"unknown time zone {tz!r} (use an IANA name such as Europe/Berlin)") from exc


def looks_like_kernel_log(first_lines: Iterable[str]) -> bool:
    """True when the first lines of a text look like a kernel log (NVRM lines or kernel-prefixed lines)."""
    for line in first_lines:
        line = line.rstrip("\r\n")
        if "NVRM:" in line:
            return True
        if _DMESG_T.match(line) or _DMESG_RAW.match(line) or _BARE_KERNEL.match(line):
            return True
        if _SYSLOG_NO_HOST.match(line) or _ISO_NO_HOST.match(line):
            return True
        prefixed = _SYSLOG.match(line) or _ISO.match(line)
        if prefixed and prefixed["ident"] == "kernel":
            return True
    return False


def parse_kernel_log(
    lines: Iterable[str],
    *,
    host: str | None = None,
    reference_time: datetime | None = None,
    tz: str | tzinfo | None = None,
    boot_time: datetime | None = None,
) -> KernelLogResult:
    """Read XID events and PCI → UUID pairs from kernel log lines.

    `host` names the machine for forms that do not carry it (dmesg); `reference_time` (default: now) fixes the
    year of lines without one; `tz` is the zone of times printed without an offset (default UTC);
    `boot_time` turns raw dmesg seconds into wall time (it needs `host` too).
    """
    zone = resolve_tz(tz)
    reference = _aware(reference_time, zone) if reference_time else datetime.now(UTC)
    boot_ns = _to_ns(_aware(boot_time, zone)) if boot_time is not None and host else None
    events: list[KernelEvent] = []
    identities: dict[tuple[str | None, str], str] = {}
    skipped: Counter[str] = Counter()
    ignored: Counter[str] = Counter()
    pending_fallen: tuple[_Stamp, str, int] | None = None  # stamp, pci, line_no of "The NVIDIA GPU …"
    count = 0
    for count, raw in enumerate(lines, start=1):
        stamp = _stamp(raw.rstrip("\r\n"), host=host, reference=reference, zone=zone, boot_ns=boot_ns)
        body = stamp.body
        if "NVRM:" not in body:
            continue
        if (xid := _XID.search(body)) is not None:
            event_or_reason = _xid_event(xid, stamp, count)
            if isinstance(event_or_reason, str):
                skipped[event_or_reason] += 1
            else:
                events.append(event_or_reason)
            continue
        if (gpu_at := _GPU_AT.search(body)) is not None:
            pci = _pci_or_none(gpu_at["pci"])
            if pci is not None:
                identities[(stamp.host, pci)] = gpu_at["uuid"]
            continue
        if pending_fallen is not None and count - pending_fallen[2] >= _FALLEN_SPAN_LINES:
            skipped[SKIP_FALLEN_CUT] += 1
            pending_fallen = None
        if (start := _FALLEN_START.search(body)) is not None:
            if pending_fallen is not None:
                skipped[SKIP_FALLEN_CUT] += 1
            pci = _pci_or_none(start["pci"])
            pending_fallen = (stamp, pci, count) if pci is not None else None
            if pci is None:
                skipped[SKIP_BAD_PCI] += 1
        elif pending_fallen is None:
            ignored[IGNORED_NO_XID] += 1
        if pending_fallen is not None and _FALLEN_END in body:
            first, pci, first_line = pending_fallen
            pending_fallen = None
            if first.ts_ns is None:
                skipped[first.skip_reason or SKIP_NO_TIMESTAMP] += 1
                continue
            events.append(
                KernelEvent(
                    first.ts_ns,
                    first.host,
                    pci,
                    None,
                    XID_FALLEN_OFF_BUS,
                    None,
                    None,
                    "GPU has fallen off the bus and is not responding to commands",
                    None,
                    first_line,
                    True,
                )
            )
    if pending_fallen is not None:
        skipped[SKIP_FALLEN_CUT] += 1
    gpus = tuple(GpuIdentity(h, pci, uuid) for (h, pci), uuid in identities.items())
    resolved = _drop_duplicate_fallen(_attach_uuids(events, identities))
    warnings = tuple(f"{n} XID line(s) skipped: {reason}" for reason, n in sorted(skipped.items()))
    return KernelLogResult(tuple(resolved), gpus, dict(skipped), warnings, count, dict(ignored))


def _xid_event(match: re.Match[str], stamp: _Stamp, line_no: int) -> KernelEvent | str:
    """A KernelEvent, or the reason the line cannot be stored."""
    if stamp.ts_ns is None:
        return stamp.skip_reason or SKIP_NO_TIMESTAMP
    pci = _pci_or_none(match["pci"])
    if pci is None:
        return SKIP_BAD_PCI
    pid: int | None = None
    process: str | None = None
    message = (match["rest"] or "").strip()
    details = _PID_NAME.match(message)
    if details is not None:
        pid_text = details["pid"].strip().strip("'")
        pid = int(pid_text) if pid_text.isdigit() and int(pid_text) < 2**63 else None
        name = (details["name"] or "").strip()
        process = name if name and name != "<unknown>" else None
        message = (details["msg"] or "").strip()
    gi = int(match["gi"]) if match["gi"] else None
    code = int(match["code"])
    if code >= 2**31:  # the store's xid column is an INTEGER; no driver prints such a code
        return SKIP_BAD_XID
    return KernelEvent(stamp.ts_ns, stamp.host, pci, None, code, pid, process, message, gi, line_no)


def _stamp(line: str, *, host: str | None, reference: datetime, zone: tzinfo, boot_ns: int | None) -> _Stamp:
    """Split a line into its time (Unix ns), host and message body."""
    try:
        if (m := _ISO_NO_HOST.match(line)) is not None:
            return _Stamp(_iso_ns(m["iso"], zone), host, _strip_printk(m["body"]), None)
        if (m := _SYSLOG_NO_HOST.match(line)) is not None:
            when = _without_year(m["mon"], int(m["day"]), m["hms"], reference, zone)
            return _Stamp(_to_ns(when), host, _strip_printk(m["body"]), None)
        if (m := _ISO.match(line)) is not None:
            return _Stamp(_iso_ns(m["iso"], zone), m["host"], _strip_printk(m["body"]), None)
        if (m := _SYSLOG.match(line)) is not None:
            when = _without_year(m["mon"], int(m["day"]), m["hms"], reference, zone)
            return _Stamp(_to_ns(when), m["host"], _strip_printk(m["body"]), None)
        if (m := _DMESG_T.match(line)) is not None:
            when = _local(int(m["year"]), m["mon"], int(m["day"]), m["hms"], zone)
            return _Stamp(_to_ns(when), host, m["body"], None)
    except ValueError:
        return _Stamp(None, host, line, SKIP_BAD_TIMESTAMP)
    if (m := _DMESG_RAW.match(line)) is not None:
        if boot_ns is None:
            return _Stamp(None, host, m["body"], SKIP_BOOT_RELATIVE)
        whole, _, frac = m["secs"].partition(".")
        since_boot_ns = int(whole) * _NS + int((frac + "000000000")[:9])
        return _Stamp(boot_ns + since_boot_ns, host, m["body"], None)
    if (m := _BARE_KERNEL.match(line)) is not None:
        line = m["body"]
    return _Stamp(None, host, _strip_printk(line.strip()), SKIP_NO_TIMESTAMP)


def _strip_printk(body: str) -> str:
    return _PRINTK_TIME.sub("", body, count=1)


def _iso_ns(text: str, zone: tzinfo) -> int:
    text = text.replace(",", ".")
    # fromisoformat reads at most microseconds; keep the nanoseconds ourselves.
    frac_ns = 0
    if (dot := text.find(".")) != -1:
        end = dot + 1
        while end < len(text) and text[end].isdigit():
            end += 1
        frac_ns = int((text[dot + 1 : end] + "000000000")[:9])
        text = text[:dot] + text[end:]
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return _to_ns(_aware(when, zone)) + frac_ns


def _local(year: int, mon: str, day: int, hms: str, zone: tzinfo) -> datetime:
    month = _MONTHS.get(mon)
    if month is None:
        raise ValueError(f"unknown month {mon!r}")
    hour, minute, second = (int(part) for part in hms.split(":"))
    return datetime(year, month, day, hour, minute, second, tzinfo=zone)


def _without_year(mon: str, day: int, hms: str, reference: datetime, zone: tzinfo) -> datetime:
    """The latest date with this month/day/time that is not after the reference (one day of slack for clocks)."""
    ref_local = reference.astimezone(zone)
    latest_ok = reference + timedelta(days=1)
    for year in (ref_local.year, ref_local.year - 1, ref_local.year - 2, ref_local.year - 3, ref_local.year - 4):
        try:
            when = _local(year, mon, day, hms, zone)
        except ValueError:
            continue  # Feb 29 outside a leap year: try an earlier year
        if when <= latest_ok:
            return when
    raise ValueError(f"no year fits {mon} {day} {hms}")


def _aware(when: datetime, zone: tzinfo) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=zone)


def _to_ns(when: datetime) -> int:
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * _NS + delta.microseconds * 1_000


def _pci_or_none(text: str) -> str | None:
    try:
        return normalize_pci_bus_id(text)
    except ValueError:
        return None


def _attach_uuids(events: list[KernelEvent], identities: dict[tuple[str | None, str], str]) -> list[KernelEvent]:
    by_pci: dict[str, str] = {}
    for (_, pci), known in identities.items():
        by_pci.setdefault(pci, known)
    out = []
    for event in events:
        uuid = identities.get((event.host, event.pci_bus_id))
        if uuid is None and event.host is None:
            uuid = by_pci.get(event.pci_bus_id)
        out.append(replace(event, gpu_uuid=uuid) if uuid else event)
    return out


def _drop_duplicate_fallen(events: list[KernelEvent]) -> list[KernelEvent]:
    """Drop a text-derived XID 79 when the driver also printed an Xid 79 line for that GPU nearby."""
    printed = [(e.host, e.pci_bus_id, e.ts_ns) for e in events if e.xid == XID_FALLEN_OFF_BUS and not e.synthetic]
    if not printed:
        return events
    return [
        e
        for e in events
        if not e.synthetic
        or not any(h == e.host and p == e.pci_bus_id and abs(t - e.ts_ns) <= _FALLEN_DEDUP_NS for h, p, t in printed)
    ]


__all__ = [
    "IGNORED_NO_XID",
    "SKIP_BAD_PCI",
    "SKIP_BAD_TIMESTAMP",
    "SKIP_BAD_XID",
    "SKIP_BOOT_RELATIVE",
    "SKIP_FALLEN_CUT",
    "SKIP_NO_TIMESTAMP",
    "GpuIdentity",
    "KernelEvent",
    "KernelLogResult",
    "looks_like_kernel_log",
    "parse_kernel_log",
    "resolve_tz",
]
