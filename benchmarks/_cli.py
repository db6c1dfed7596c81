"""What every benchmark's command line shares: `--repeats`/`--json`, size checks, and printing the report."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any


def parser_for(name: str, doc: str | None) -> argparse.ArgumentParser:
    """An argument parser for `python -m benchmarks NAME`, described by the module docstring's first line."""
    return argparse.ArgumentParser(prog=f"python -m benchmarks {name}", description=(doc or "").splitlines()[0])


def parse(parser: argparse.ArgumentParser, argv: list[str], *sizes: str, repeats: int = 3) -> argparse.Namespace:
    """Add `--repeats` and `--json`, parse, and refuse sizes (the named options and repeats) below 1."""
    parser.add_argument(
        "--repeats", type=int, default=repeats, help=f"repeats; medians are reported (default {repeats})"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    if min([getattr(args, size) for size in sizes] + [args.repeats]) < 1:
        parser.error("sizes must be positive")
    return args


def emit(report: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], None]) -> int:
    """Print the report as one JSON document (the `--json` of docs/contracts.md §8) or as text; the exit status."""
    if as_json:
        print(json.dumps(report, allow_nan=False))
    else:
        render(report)
    return 0
