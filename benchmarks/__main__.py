"""Dispatch `python -m benchmarks NAME [options]` to `benchmarks.<NAME>.main(argv)`."""

from __future__ import annotations

import importlib
import sys

#: benchmark name -> module under `benchmarks`
BENCHMARKS: dict[str, str] = {
    "advisor": "advisor",
    "analyze": "analyze",
    "duckdb-insert": "duckdb_insert",
    "ingest": "ingest",
    "ingest-files": "ingest_files",
    "lab": "lab",
    "load": "load",
    "sampler": "sampler",
    "stamping": "stamping",
    "time-to-digest": "time_to_digest",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in BENCHMARKS:
        names = ", ".join(BENCHMARKS) or "(none yet)"
        print(f"usage: python -m benchmarks NAME [--json] [options]\nNAME: {names}", file=sys.stderr)
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    module = importlib.import_module(f"benchmarks.{BENCHMARKS[argv[0]]}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
