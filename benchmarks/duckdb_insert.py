"""What DuckDB alone costs to insert span rows, by configuration: the floor under any OTLP ingest into the store.

The rows are those `python -m benchmarks ingest` sends (full stamp sets of docs/contracts.md §1), built once as the Arrow
table the store inserts, then inserted with the store's own statement (`INSERT INTO spans BY NAME SELECT *`,
each statement committing alone) into the `spans` table as `schemas.store` creates it, changing one thing at a
time:

- `memory_nokey_4096` (the baseline): an in-memory database, no primary key, 4,096 rows per statement;
- `memory_key_4096`: with the table's key (trace_id, span_id);
- `file_key_4096`: a database file (every commit goes to its write-ahead log, checkpoints compress);
- `file_key_512`: one 512-span request per statement, as `gpu-rca serve` inserts when requests do not queue;
- `file_key_512_threads1`: the same with `SET threads = 1` (DuckDB's worker threads cost CPU even for small
  inserts; the setting is per database, so it would also make analyses single-threaded);
- `file_nokey_512`: a file without the key.

Each is reported as microseconds of CPU per row (this process, all threads) and rows per CPU-second, and as a
ratio to the baseline measured in the same run. Closing the database (its last checkpoint) is not timed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks._cli import emit, parse, parser_for

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

#: name -> (in a file, with the key, rows per statement, SET threads = 1)
VARIANTS: dict[str, tuple[bool, bool, int, bool]] = {
    "memory_nokey_4096": (False, False, 4096, False),
    "memory_key_4096": (False, True, 4096, False),
    "file_key_4096": (True, True, 4096, False),
    "file_key_512": (True, True, 512, False),
    "file_key_512_threads1": (True, True, 512, True),
    "file_nokey_512": (True, False, 512, False),
}
BASELINE = "memory_nokey_4096"


def span_rows(spans: int) -> Any:
    """`spans` stamped span rows as the Arrow table the store inserts (built by the store's own row builder)."""
    import pyarrow as pa

    from benchmarks.ingest import make_payloads
    from gpu_rca.correlate.otlp.decode import spans_from_request
    from gpu_rca.correlate.otlp.wire import AttributeCache

    per_request = 512
    payloads = make_payloads(-(-spans // per_request), per_request)
    tables = [spans_from_request(payload, cache=AttributeCache()).spans for payload in payloads]
    return pa.concat_tables(tables).slice(0, spans)


def spans_ddl(with_key: bool) -> str:
    """The store's `CREATE TABLE spans`, without its primary key when `with_key` is false."""
    from gpu_rca.schemas import store as s

    ddl = next(statement for statement in s.CREATE_V1 if statement.startswith(f"CREATE TABLE {s.SPANS} "))
    if with_key:
        return ddl
    keyless = ddl.replace(",\n    PRIMARY KEY (trace_id, span_id)", "")
    if keyless == ddl:
        raise RuntimeError("the spans DDL no longer ends with its primary key; update spans_ddl")
    return keyless


def time_variant(rows: Any, folder: Path, name: str) -> float:
    """CPU seconds to insert `rows` in the configuration `name`."""
    import duckdb

    in_file, with_key, per_statement, one_thread = VARIANTS[name]
    con = duckdb.connect(str(folder / f"{name}.duckdb") if in_file else ":memory:")
    try:
        con.execute("SET enable_progress_bar = false")  # as the store's writer connection
        if one_thread:
            con.execute("SET threads = 1")
        con.execute(spans_ddl(with_key))
        parts = [rows.slice(at, per_statement) for at in range(0, rows.num_rows, per_statement)]
        cpu = time.process_time()
        for part in parts:
            _insert(con, part)
        cpu = time.process_time() - cpu
        stored = con.execute("SELECT count(*) FROM spans").fetchone()[0]
    finally:
        con.close()
    if stored != rows.num_rows:
        raise RuntimeError(f"{name}: stored {stored} of {rows.num_rows} rows")
    return cpu


def _insert(con: duckdb.DuckDBPyConnection, new_rows: pa.Table) -> None:
    """As the store inserts: DuckDB finds `new_rows` by this argument's Python name (a replacement scan)."""
    con.execute("INSERT INTO spans BY NAME SELECT * FROM new_rows")


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = span_rows(args.spans)
    cpu_s: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name in VARIANTS:  # interleaved, so a change in the machine's load touches every variant alike
            with tempfile.TemporaryDirectory(prefix="gpu-rca-bench-") as tmp:
                cpu_s[name].append(time_variant(rows, Path(tmp), name))
    medians = {name: statistics.median(values) for name, values in cpu_s.items()}
    return {
        "name": "duckdb-insert",
        "results": {
            "spans": rows.num_rows,
            "columns": rows.num_columns,
            "repeats": args.repeats,
            **{f"{name}_cpu_us_per_row": round(value / rows.num_rows * 1e6, 2) for name, value in medians.items()},
            **{f"{name}_cpu_rows_per_s": round(rows.num_rows / value) for name, value in medians.items()},
        },
        "ratios": {
            f"{name}_vs_{BASELINE}": round(value / medians[BASELINE], 3)
            for name, value in medians.items()
            if name != BASELINE
        },
    }


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = parser_for("duckdb-insert", __doc__)
    parser.add_argument("--spans", type=int, default=16_384, help="span rows inserted per variant (default 16384)")
    return parse(parser, argv, "spans")


def main(argv: list[str]) -> int:
    args = _parse(argv)
    return emit(run(args), args.json, _render)


def _render(report: dict[str, Any]) -> None:
    r, ratios = report["results"], report["ratios"]
    print(f"duckdb-insert: {r['spans']} span rows of {r['columns']} columns, median of {r['repeats']}, CPU time")
    for name in VARIANTS:
        ratio = "baseline" if name == BASELINE else f"{ratios[f'{name}_vs_{BASELINE}']:.2f}x baseline"
        print(
            f"  {name:<24} {r[f'{name}_cpu_us_per_row']:>6.2f} us/row  "
            f"{r[f'{name}_cpu_rows_per_s']:>9,} rows per CPU-second  ({ratio})"
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
