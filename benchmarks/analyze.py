"""`analyze` on a large synthetic incident, beside a pandas/numpy implementation of the same joins and aggregates.

Data (generated with DuckDB SQL straight into a gpu-rca store, not through the lab): `--spans` inference spans
over 6 h on 16 GPUs (4 hosts), about 1 % failed — timeouts on one GPU that overheats in the last hour — and
`--samples` metric samples (10 canonical metrics per GPU at an even pace). Latency has a lognormal-like spread
in every comparable group (model, input size; one GPU model). Every side analyses the whole 6 h.

- `gpu_rca`: `correlate.analyze(db, since, until)` — the full ranking (windows, bucketed metric join, per-GPU
  aggregates, BARO anomalies, drivers, hypotheses, assignment, JSON result).
- `pandas`: what a skilled user writes: load the window from the same store into DataFrames, `merge_asof` each
  metric onto the spans by GPU, vectorised feature flags, `groupby` per GPU and error family (counts, feature
  counts, medians), BARO median/IQR per GPU and metric before the onset and the max robust z after it, and
  failure-vs-success shares of every categorical attribute value. No Python loop over rows.
- `numpy`: the hand-written peer: DuckDB (default threads) fetches the spans and three metric series as numpy
  arrays; `searchsorted` window joins give each failed span's max temperature, min SM clock and max memory
  over [start - 60 s, end]; `bincount` gives each GPU's failure lift. No Python loop over spans.
- `gpu_rca_slow_off`: `gpu_rca` with latency detection off (`slow="off"`), to price detection.

Each side runs `--repeats` times, each in a fresh process, interleaved; the report gives the median wall time
(imports loaded before the clock starts), the median whole-process wall time (start-up and imports included)
and the peak RSS.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HOUR_NS = 3_600_000_000_000
START_NS = 1_767_225_600 * 1_000_000_000  # 2026-01-01T00:00:00Z
SPAN_HOURS = 6
GPUS = 16
HOT_GPU = 5
METRICS = (
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_ENFORCED_POWER_LIMIT",
    "DCGM_FI_DEV_SLOWDOWN_TEMP",
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS",
    "DCGM_FI_DEV_MAX_SM_CLOCK",
)


def generate(db: Path, spans: int, samples: int) -> None:
    """Write the synthetic store: one thermal incident on GPU 5 in the last hour, 1 % of spans failed."""
    from gpu_rca.correlate.store import Store

    span_ns = SPAN_HOURS * HOUR_NS
    hot_from = START_NS + span_ns - HOUR_NS
    with Store(db) as store:
        con = store.connection
        con.execute(f"""
        INSERT INTO spans (trace_id, span_id, name, service, service_version, host, start_ns, end_ns, status,
                           is_inference, error_type, gpu_uuid, gpu_index, gpu_name, gpu_telemetry_source,
                           gpu_temperature_max, gpu_temperature_slowdown, gpu_clock_sm_min, gpu_clock_sm_max,
                           gpu_utilization_mean, gpu_power_mean, gpu_power_limit, gpu_memory_used_max,
                           gpu_memory_total, gpu_memory_process_max, gpu_throttle_reasons, gpu_xid,
                           gpu_inflight_max, inference_queue_ms, ddcolor_input_size, ddcolor_model, attributes,
                           resource)
        WITH base AS (
          SELECT i, {START_NS} + (i * {span_ns // spans}) AS t, i % {GPUS} AS g,
                 CASE WHEN i % 10 < 8 THEN 512 ELSE 1024 END AS size,
                 CASE WHEN i % 7 = 0 THEN 'ddcolor_paper' ELSE 'ddcolor_paper_tiny' END AS model
          FROM range({spans}) r(i)),
        hot AS (SELECT *, (g = {HOT_GPU} AND t >= {hot_from} AND i % 100 < 96) AS bad,
                       -- Latency with a real spread in every comparable group (model, size; one GPU model):
                       -- a median per group times exp(0.35 z), z about standard normal (Irwin-Hall of 4
                       -- hashed uniforms), so each group has a lognormal-like body and tail.
                       CAST((CASE WHEN size = 512 THEN 1.2e9 ELSE 3.0e9 END)
                            * (CASE WHEN model = 'ddcolor_paper' THEN 1.6 ELSE 1.0 END)
                            * exp(0.35 * sqrt(3.0) * ((hash(i, 1) % 1000000) / 1e6 + (hash(i, 2) % 1000000) / 1e6
                                                      + (hash(i, 3) % 1000000) / 1e6 + (hash(i, 4) % 1000000) / 1e6
                                                      - 2.0)) AS BIGINT) AS latency_ns
                FROM base)
        SELECT lpad(to_hex(i), 32, '0'), lpad(to_hex(i), 16, '0'), 'ddcolor.inference', 'ddcolor', '1.4.2',
               'node-' || (g // 4), t, t + CASE WHEN bad THEN 30000000000 ELSE latency_ns END,
               CASE WHEN bad THEN 'ERROR' ELSE 'OK' END, true, CASE WHEN bad THEN 'timeout' END,
               'GPU-bench-' || lpad(g::VARCHAR, 4, '0'), g % 4, 'NVIDIA L4', 'nvml',
               CASE WHEN bad THEN 92 ELSE 60 + i % 9 END, 90, CASE WHEN bad THEN 700 ELSE 2010 END, 2040,
               85.0 + i % 10, 60.0, 72.0, 12000000000 + size * 1000000, 24152899584, 11000000000 + size * 1000000,
               CASE WHEN bad THEN ['sw_thermal', 'hw_thermal'] ELSE [] END, [], 1 + i % 3, 2.5 + i % 11,
               size, model,
               '{{"ddcolor.input_size":' || size || ',"ddcolor.model":"' || model || '"}}',
               '{{"service.name":"ddcolor","service.version":"1.4.2","host.name":"node-' || (g // 4) || '"}}'
        FROM hot
        """)
        per_series = samples // (GPUS * len(METRICS))
        step = span_ns // per_series
        names = ", ".join(f"('{m}', {k})" for k, m in enumerate(METRICS))
        con.execute(f"""
        INSERT INTO metric_samples (ts_ns, host, gpu_uuid, metric, value, source)
        WITH series AS (SELECT * FROM (VALUES {names}) v(metric, k), range({GPUS}) g(g)),
        pts AS (SELECT metric, k, g, {START_NS} + j * {step} + g * 1000 AS ts, j FROM series, range({per_series}) r(j))
        SELECT ts, 'node-' || (g // 4), 'GPU-bench-' || lpad(g::VARCHAR, 4, '0'), metric,
               CASE metric
                 WHEN 'DCGM_FI_DEV_GPU_TEMP' THEN CASE WHEN g = {HOT_GPU} AND ts >= {hot_from} THEN 92 ELSE 60 + j % 7 END
                 WHEN 'DCGM_FI_DEV_SM_CLOCK' THEN CASE WHEN g = {HOT_GPU} AND ts >= {hot_from} THEN 700 ELSE 2010 - j % 30 END
                 WHEN 'DCGM_FI_DEV_CLOCKS_EVENT_REASONS' THEN CASE WHEN g = {HOT_GPU} AND ts >= {hot_from} THEN 96 ELSE 0 END
                 WHEN 'DCGM_FI_DEV_GPU_UTIL' THEN 80 + j % 20
                 WHEN 'DCGM_FI_DEV_FB_USED' THEN 12000 + j % 500
                 WHEN 'DCGM_FI_DEV_FB_FREE' THEN 11000 - j % 500
                 WHEN 'DCGM_FI_DEV_POWER_USAGE' THEN 55 + j % 15
                 WHEN 'DCGM_FI_DEV_ENFORCED_POWER_LIMIT' THEN 72
                 WHEN 'DCGM_FI_DEV_SLOWDOWN_TEMP' THEN 90
                 ELSE 2040 END, 'bench'
        FROM pts
        """)


def run_gpu_rca(db: str, slow: str = "auto") -> dict[str, Any]:
    """The project: the full `analyze` ranking over the whole data range (latency detection on unless `off`)."""
    from gpu_rca import correlate

    result = correlate.analyze(
        db, since=str(START_NS // 10**9), until=str((START_NS + SPAN_HOURS * HOUR_NS) // 10**9), slow=slow
    )
    top = result["causes"][0] if result["causes"] else None
    return {"spans": result["spans"], "top": top["cause"] if top else None, "gpus": top["gpus"] if top else []}


def run_pandas(db: str) -> dict[str, Any]:
    """The baseline: the same window joins and per-cause aggregates with pandas/numpy, vectorised."""
    import duckdb
    import numpy as np
    import pandas as pd

    start, end = START_NS, START_NS + SPAN_HOURS * HOUR_NS
    con = duckdb.connect(db, read_only=True)
    spans = con.execute(
        "SELECT trace_id, span_id, host, gpu_uuid, start_ns, end_ns, status, error_type, service_version,"
        " ddcolor_input_size, ddcolor_model, gpu_temperature_max, gpu_temperature_slowdown, gpu_clock_sm_min,"
        " gpu_clock_sm_max, gpu_utilization_mean, gpu_power_mean, gpu_power_limit, gpu_memory_used_max,"
        " gpu_memory_total, gpu_memory_process_max, list_has_any(gpu_throttle_reasons, ['sw_thermal', 'hw_thermal'])"
        " AS thermal_flag, gpu_inflight_max, inference_queue_ms"
        " FROM spans WHERE is_inference AND end_ns BETWEEN ? AND ?",
        [start, end],
    ).df()
    samples = con.execute(
        "SELECT gpu_uuid, metric, ts_ns, value FROM metric_samples WHERE ts_ns BETWEEN ? AND ?", [start, end]
    ).df()
    con.close()
    spans["failed"] = spans["status"].eq("ERROR")
    spans["family"] = np.where(
        ~spans["failed"],
        None,
        np.where(spans["error_type"].eq("timeout"), "slow", np.where(spans["error_type"].eq("cuda_oom"), "oom", "app")),
    )
    # Window joins: the latest sample of each metric at or before each span's end, per GPU.
    spans = spans.sort_values("end_ns", kind="stable")
    for metric, group in samples.groupby("metric", sort=False):
        right = (
            group[["gpu_uuid", "ts_ns", "value"]].sort_values("ts_ns", kind="stable").rename(columns={"value": metric})
        )
        spans = pd.merge_asof(
            spans, right, left_on="end_ns", right_on="ts_ns", by="gpu_uuid", direction="backward"
        ).drop(columns="ts_ns")
    spans["temp"] = spans["gpu_temperature_max"].fillna(spans["DCGM_FI_DEV_GPU_TEMP"])
    spans["clock"] = spans["gpu_clock_sm_min"].fillna(spans["DCGM_FI_DEV_SM_CLOCK"])
    spans["f_thermal"] = spans["thermal_flag"].fillna(False) | (spans["temp"] >= spans["gpu_temperature_slowdown"] - 1)
    spans["f_clock_low"] = spans["clock"] < 0.8 * spans["gpu_clock_sm_max"]
    spans["f_mem_high"] = spans["gpu_memory_used_max"] >= 0.95 * spans["gpu_memory_total"]
    spans["f_util_high"] = spans["gpu_utilization_mean"] >= 90
    spans["other_bytes"] = spans["gpu_memory_used_max"] - spans["gpu_memory_process_max"]
    features = ["f_thermal", "f_clock_low", "f_mem_high", "f_util_high"]
    numbers = [
        "temp",
        "clock",
        "gpu_utilization_mean",
        "gpu_power_mean",
        "other_bytes",
        "inference_queue_ms",
        "gpu_inflight_max",
    ]
    failed = spans[spans["failed"]]
    per_gpu = failed.groupby(["gpu_uuid", "family"]).agg(
        n=("span_id", "size"),
        onset=("end_ns", lambda s: s.quantile(0.05)),
        last=("end_ns", "max"),
        **{f: (f, "sum") for f in features},
        **{f"med_{x}": (x, "median") for x in numbers},
    )
    ok = (
        spans[~spans["failed"]]
        .groupby("gpu_uuid")
        .agg(n=("span_id", "size"), **{f: (f, "sum") for f in features}, **{f"med_{x}": (x, "median") for x in numbers})
    )
    # BARO: per GPU with failures and metric, median/IQR before its onset, max robust z after it.
    onsets = per_gpu.groupby(level="gpu_uuid")["onset"].min().rename("onset")
    joined = samples.merge(onsets, left_on="gpu_uuid", right_index=True)
    before = joined[joined["ts_ns"] < joined["onset"] - 120_000_000_000]
    stats = before.groupby(["gpu_uuid", "metric"])["value"].quantile([0.25, 0.5, 0.75]).unstack()
    stats["scale"] = (stats[0.75] - stats[0.25]).clip(lower=1.0)
    after = joined[joined["ts_ns"] >= joined["onset"] - 600_000_000_000].merge(
        stats, left_on=["gpu_uuid", "metric"], right_index=True
    )
    after["z"] = (after["value"] - after[0.5]).abs() / after["scale"]
    baro = after.groupby(["gpu_uuid", "metric"])["z"].max()
    # Drivers: failure share vs success share of every categorical attribute value.
    drivers = []
    for column in ("host", "gpu_uuid", "service_version", "ddcolor_input_size", "ddcolor_model"):
        shares = pd.crosstab(spans[column], spans["failed"], normalize="columns")
        drivers.append(shares.assign(attribute=column))
    drivers = pd.concat(drivers)
    hot = per_gpu["n"].groupby(level="gpu_uuid").sum().idxmax()
    return {
        "spans": {"total": len(spans), "failed": int(spans["failed"].sum())},
        "top_gpu": hot,
        "baro_series": len(baro),
        "driver_rows": len(drivers),
        "ok_gpus": len(ok),
    }


def run_numpy(db: str) -> dict[str, Any]:
    """The hand-written peer: DuckDB fetches the spans and the three metric series as numpy arrays (default
    threads), `searchsorted` finds each failed span's samples over [start - 60 s, end], `maximum/minimum.reduceat`
    takes max temperature, min SM clock and max memory in them, and `bincount` gives each GPU's failure lift.
    No Python loop over spans (one over the 3 metrics and one over the 16 GPUs)."""
    import duckdb
    import numpy as np

    start, end = START_NS, START_NS + SPAN_HOURS * HOUR_NS
    lookback = 60 * 10**9
    wanted = ("DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_FB_USED")
    con = duckdb.connect(db, read_only=True)
    gpus = [r[0] for r in con.execute("SELECT DISTINCT gpu_uuid FROM spans ORDER BY 1").fetchall()]
    code = "CASE gpu_uuid " + " ".join(f"WHEN '{g}' THEN {i}" for i, g in enumerate(gpus)) + " END"
    spans = con.execute(
        f"SELECT {code} AS g, start_ns, end_ns, status = 'ERROR' AS failed FROM spans"
        " WHERE is_inference AND end_ns BETWEEN ? AND ? AND gpu_uuid IS NOT NULL",
        [start, end],
    ).fetchnumpy()
    metric = "CASE metric " + " ".join(f"WHEN '{m}' THEN {k}" for k, m in enumerate(wanted)) + " END"
    series = con.execute(
        f"SELECT ({code}) * {len(wanted)} + {metric} AS key, ts_ns, value FROM metric_samples"
        f" WHERE metric IN {tuple(wanted)} AND ts_ns BETWEEN ? AND ? ORDER BY key, ts_ns",
        [start - lookback, end],
    ).fetchnumpy()
    con.close()
    g = np.asarray(spans["g"], dtype=np.int64)
    failed = np.asarray(spans["failed"], dtype=bool)
    # Failure lift per GPU: its failure rate over the fleet's.
    total = np.bincount(g, minlength=len(gpus))
    fails = np.bincount(g, weights=failed, minlength=len(gpus))
    lift = (fails / np.maximum(total, 1)) / max(failed.mean(), 1e-12)
    # One sorted search key per sample: series in the high bits, time since the window's start in the low.
    shift = 46
    base = start - lookback
    key = (np.asarray(series["key"], dtype=np.int64) << shift) | (np.asarray(series["ts_ns"], dtype=np.int64) - base)
    values = np.asarray(series["value"], dtype=np.float64)
    fg = g[failed]
    f_start = np.asarray(spans["start_ns"], dtype=np.int64)[failed] - lookback - base
    f_end = np.asarray(spans["end_ns"], dtype=np.int64)[failed] - base
    window: dict[str, Any] = {}
    for k, (name, reduce) in enumerate(
        (("temperature_max", np.maximum), ("sm_clock_min", np.minimum), ("memory_used_max", np.maximum))
    ):
        series_key = (fg * len(wanted) + k) << shift
        lo = np.searchsorted(key, series_key | np.maximum(f_start, 0), side="left")
        hi = np.searchsorted(key, series_key | f_end, side="right")
        has = hi > lo
        out = np.full(len(fg), np.nan)
        if has.any() and len(values):
            # reduceat also reduces between one window's end and the next one's start: in order of start,
            # those stretches are disjoint, so the whole costs one pass over the samples at most.
            idx = np.flatnonzero(has)
            idx = idx[np.argsort(lo[idx], kind="stable")]
            bounds = np.empty(2 * len(idx), dtype=np.int64)
            bounds[0::2], bounds[1::2] = lo[idx], np.minimum(hi[idx], len(values) - 1)
            reduced = reduce.reduceat(values, bounds)[0::2]
            # reduceat stops before the bound; a window ending at the last sample adds it back.
            last = hi[idx] == len(values)
            reduced[last] = reduce(reduced[last], values[-1])
            out[idx] = reduced
        window[name] = out
    per_gpu = {
        gpus[i]: {name: float(np.nanmedian(v[fg == i])) for name, v in window.items()}
        for i in range(len(gpus))
        if (fg == i).any()
    }
    top = int(np.argmax(lift))
    return {
        "spans": {"total": len(g), "failed": int(failed.sum())},
        "top_gpu": gpus[top],
        "top_lift": round(float(lift[top]), 2),
        "top_window": per_gpu.get(gpus[top]),
    }


def _peak_rss_bytes() -> int:
    """This process's own peak RSS: VmHWM, which starts afresh at exec. (`ru_maxrss` carries the parent's
    high-water mark across fork and exec: the parent that generated the store with DuckDB held about
    1.4 GiB, and every child reported at least that.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(kind: str, db: str) -> None:
    # Imports are not what is measured: load them before the clock starts.
    for module in ("gpu_rca.correlate",) if kind.startswith("gpu_rca") else ("duckdb", "numpy", "pandas"):
        importlib.import_module(module)
    started = time.perf_counter()
    if kind == "pandas":
        answer = run_pandas(db)
    elif kind == "numpy":
        answer = run_numpy(db)
    else:
        answer = run_gpu_rca(db, slow="off" if kind == "gpu_rca_slow_off" else "auto")
    wall = time.perf_counter() - started
    peak = _peak_rss_bytes()
    print(json.dumps({"wall_s": wall, "peak_rss_bytes": peak, "answer": answer}))


def _measure(kind: str, db: Path) -> dict[str, Any]:
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.analyze", "--child", kind, str(db)],
        capture_output=True,
        text=True,
        check=True,
    )
    measured: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    measured["process_wall_s"] = time.perf_counter() - started  # start-up and imports included
    return measured


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks analyze", description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, default=200_000, help="inference spans (full size: 1000000)")
    parser.add_argument("--samples", type=int, default=2_000_000, help="metric samples (full size: 10000000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    with tempfile.TemporaryDirectory(prefix="gpu-rca-bench-analyze-") as tmp:
        db = Path(tmp) / "store.duckdb"
        t0 = time.perf_counter()
        generate(db, args.spans, args.samples)
        generate_s = time.perf_counter() - t0
        # gpu_rca_slow_off: the same analysis with latency detection off (`--slow off`), to price detection.
        # numpy: the hand-written DuckDB + numpy peer, beside the pandas one.
        runs: dict[str, list[dict[str, Any]]] = {"gpu_rca": [], "numpy": [], "gpu_rca_slow_off": [], "pandas": []}
        for _ in range(args.repeats):  # interleaved, so background load hits both alike
            for kind in runs:
                runs[kind].append(_measure(kind, db))
    results = {
        kind: {
            "median_wall_s": statistics.median(r["wall_s"] for r in rs),
            "median_process_wall_s": statistics.median(r["process_wall_s"] for r in rs),
            "max_peak_rss_mib": max(r["peak_rss_bytes"] for r in rs) / 2**20,
            "answer": rs[0]["answer"],
        }
        for kind, rs in runs.items()
    }
    ratios = {
        "pandas_over_gpu_rca_wall": results["pandas"]["median_wall_s"] / results["gpu_rca"]["median_wall_s"],
        "numpy_over_gpu_rca_wall": results["numpy"]["median_wall_s"] / results["gpu_rca"]["median_wall_s"],
        "numpy_over_gpu_rca_process_wall": results["numpy"]["median_process_wall_s"]
        / results["gpu_rca"]["median_process_wall_s"],
        "slow_auto_over_off_wall": results["gpu_rca"]["median_wall_s"] / results["gpu_rca_slow_off"]["median_wall_s"],
    }
    document = {
        "name": "analyze",
        "sizes": {"spans": args.spans, "samples": args.samples, "generate_s": generate_s},
        "results": results,
        "ratios": ratios,
    }
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(
            f"analyze: {args.spans:,} spans, {args.samples:,} metric samples (generated in {generate_s:.1f} s), "
            f"{args.repeats} runs each, each in its own process"
        )
        for kind, r in results.items():
            print(
                f"  {kind:16s} median {r['median_wall_s']:.2f} s ({r['median_process_wall_s']:.2f} s whole process), "
                f"peak RSS {r['max_peak_rss_mib']:.0f} MiB, answer {r['answer']}"
            )
        print(f"  pandas / gpu_rca wall time: {ratios['pandas_over_gpu_rca_wall']:.2f}x")
        print(
            f"  numpy / gpu_rca wall time: {ratios['numpy_over_gpu_rca_wall']:.2f}x "
            f"(whole process {ratios['numpy_over_gpu_rca_process_wall']:.2f}x)"
        )
        print(f"  latency detection on / off: {ratios['slow_auto_over_off_wall']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
