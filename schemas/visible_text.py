"""Text from traffic is shown, never interpreted: one rule for every terminal, log line and Markdown file.

Span names, attribute values, log bodies, exception messages and kernel-log process names come from whoever
sends a request. Written as they are, their escape sequences would clear the operator's screen, colour it,
ring its bell, plant hyperlinks (OSC 8) or reverse the reading order (bidi overrides). `visible` turns every
such character into its visible form (`\\x1b`, `\\u202e`); `markup` also escapes Rich markup for text that
Rich prints; `cut` shortens for a table cell without splitting a visible form. JSON output is data and is
written as it is (JSON escapes control characters itself). Imports nothing: the CLI's error line uses it in
every install, the collector-only one included.
"""

from __future__ import annotations

import logging
import re
from typing import Any

#: Directional formatting characters: embeddings, overrides and isolates (U+202A–E, U+2066–9), the marks
#: (U+200E, U+200F, U+061C), and the line and paragraph separators a terminal may treat as line breaks.
_BIDI = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029)
#: C0 controls, DEL and C1 controls (ESC, BEL, CSI and OSC starts among them).
_CONTROLS = (*range(0x20), 0x7F, *range(0x80, 0xA0))

_ANY = re.compile("[" + "".join(re.escape(chr(c)) for c in (*_CONTROLS, *_BIDI)) + "]")


_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def _visible_form(code: int) -> str:
    if code in _NAMED:
        return _NAMED[code]
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


_TABLE = {code: _visible_form(code) for code in (*_CONTROLS, *_BIDI)}
_LAYOUT = {ord("\n"), ord("\t")}


def visible(text: object, *, layout: bool = True) -> str:
    """`text` with every control character, escape-sequence start and bidi override in visible form.

    With `layout` (the default) newlines and tabs stay as they are; without it (one-line places such as
    a table cell or a log line's field) they are shown as `\\n` and `\\t` too.
    """
    value = text if isinstance(text, str) else str(text)
    if not _ANY.search(value):
        return value
    if layout:
        return value.translate({k: v for k, v in _TABLE.items() if k not in _LAYOUT})
    return value.translate(_TABLE)


def markup(text: object, *, layout: bool = True) -> str:
    """`visible(text)` with Rich markup escaped, for text placed inside a string that Rich reads as markup."""
    from rich.markup import escape  # rich comes with the correlator; the collector-only install never calls this

    return escape(visible(text, layout=layout))


def cut(text: object, width: int) -> str:
    """`visible(text)` in at most `width` characters, ending in `…` when shortened; never inside a visible form."""
    value = text if isinstance(text, str) else str(text)
    pieces = [visible(char, layout=False) for char in value]
    if sum(len(piece) for piece in pieces) <= width:
        return "".join(pieces)
    kept: list[str] = []
    used = 0
    for piece in pieces:
        if used + len(piece) > width - 1:
            break
        kept.append(piece)
        used += len(piece)
    return "".join(kept) + "…" if width >= 1 else ""


class VisibleLogText(logging.Filter):
    """A handler filter that makes a record's message, arguments and traceback `visible` before formatting.

    Log messages quote request paths, header values, alert labels and exception messages; arguments are kept
    as arguments (a formatter such as uvicorn's access log unpacks them), only their text changes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = visible(record.msg) if isinstance(record.msg, str) else record.msg
        if isinstance(record.args, tuple):
            record.args = tuple(_visible_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _visible_arg(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = visible(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = visible(record.stack_info)
        return True


def _visible_arg(value: Any) -> Any:
    if isinstance(value, int | float | bool) or value is None:
        return value
    return visible(value)


__all__ = ["VisibleLogText", "cut", "markup", "visible"]
