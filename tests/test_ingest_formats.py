"""Each file format on its own: detection by content, Prometheus answers and text, loguru, kernel logs, OTLP framing."""

from __future__ import annotations

import gzip
import io
import json
import math

import pytest
import zstandard
from loguru import logger

from gpu_rca.correlate import Store
from gpu_rca.correlate.ingest import Detection, Format, detect, ingest_file, ingest_paths, samples_from_series
from gpu_rca.correlate.ingest.loguru_files import log_record_from_loguru
from gpu_rca.schemas.errors import InputError
from gpu_rca.schemas.otlp_json import message_to_json
from tests.support import data_file, shared_sample
from tests.support.files import KERNEL_LOG, loguru_lines, proto_framed, query_range
from tests.support.otlp import UUID, logs_request, lost_gpu_trace_request


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (lambda: message_to_json(lost_gpu_trace_request(1)).encode(), Format.OTLP_JSON),
        (lambda: message_to_json(logs_request()).encode(), Format.OTLP_JSON),
        (lambda: proto_framed(lost_gpu_trace_request(1)), Format.OTLP_PROTO),
        (lambda: proto_framed(logs_request()), Format.OTLP_PROTO),
        (lambda: query_range().encode(), Format.PROMETHEUS_QUERY_RANGE),
        (lambda: json.dumps(json.loads(query_range()), indent=2).encode(), Format.PROMETHEUS_QUERY_RANGE),
        (lambda: json.dumps(json.loads(query_range())["data"]["result"]).encode(), Format.PROMETHEUS_QUERY_RANGE),
        (
            lambda: b"# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature.\n# TYPE DCGM_FI_DEV_GPU_TEMP gauge\n",
            Format.PROMETHEUS_TEXT,
        ),
        (lambda: b'DCGM_FI_DEV_GPU_TEMP{gpu="0"} 41 1700000000000\n', Format.PROMETHEUS_TEXT),
        (lambda: loguru_lines().encode(), Format.LOGURU_JSON),
        (KERNEL_LOG.encode, Format.KERNEL_LOG),
        (lambda: b"[  100.5] NVRM: Xid (PCI:0000:3b:00): 13, Graphics Exception\n", Format.KERNEL_LOG),
        (lambda: b"[Sun Feb 23 16:24:18 2025] NVRM: GPU at PCI:0000:9b:00: GPU-x\n", Format.KERNEL_LOG),
    ],
)
def test_formats_are_detected_by_content(content, expected):
    assert detect(content()) == Detection(expected)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b'{"cause": null, "drivers": {}}\n', "JSON that is not telemetry (keys: cause, drivers)"),
        (b'{\n  "cause": "gpu_oom_large_inputs"\n}\n', "JSON that is not telemetry"),
        (b"# Incident notes\n\nThe GPU got hot.\n", "text that is neither Prometheus exposition nor a kernel log"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file that is not length-prefixed OTLP protobuf"),
        (
            b'{"resourceMetrics": []}\n',
            "OTLP metrics are not read: give Prometheus query_range JSON or exposition text",
        ),
    ],
)
def test_what_is_not_telemetry_is_named(content, reason):
    detection = detect(content)
    assert detection.format is None and detection.reason == reason


def test_prometheus_api_client_series_become_canonical_samples():
    # The shape PrometheusConnect.custom_query_range returns: the `result` list of a matrix answer.
    series = [
        {
            "metric": {"__name__": "dcgm_fb_used", "uuid": UUID, "hostname": "node-a", "gpu": "1"},
            "values": [[1700000000.123, "1024"], [1700000015.123, "2048"]],
        },
        {
            "metric": {"__name__": "nvidia_gpu_utilization_percent", "device": "nvidia3", "instance": "10.0.0.7:9835"},
            "values": [[1700000000, "97.5"]],
        },
        {"metric": {"__name__": "DCGM_FI_DEV_GPU_TEMP", "UUID": UUID}, "values": [[1700000000, "-Inf"]]},
        {"metric": {"__name__": "DCGM_FI_DEV_GPU_TEMP"}, "values": [[1700000000, "40"]]},
        {"metric": {"__name__": "up", "instance": "x"}, "values": [[1700000000, "1"]]},
    ]
    out = samples_from_series(series, source="prometheus-pull")
    assert [(s.ts_ns, s.metric, s.value, s.gpu_uuid, s.host, s.gpu_index, s.source) for s in out.samples] == [
        (1_700_000_000_123_000_000, "DCGM_FI_DEV_FB_USED", 1024.0, UUID, "node-a", 1, "prometheus-pull"),
        (1_700_000_015_123_000_000, "DCGM_FI_DEV_FB_USED", 2048.0, UUID, "node-a", 1, "prometheus-pull"),
        (1_700_000_000_000_000_000, "DCGM_FI_DEV_GPU_UTIL", 97.5, None, "10.0.0.7", 3, "prometheus-pull"),
    ]
    assert [(g.gpu_uuid, g.host, g.gpu_index, g.host_source) for g in out.gpus] == [(UUID, "node-a", 1, "metric")]
    assert dict(out.skipped) == {
        "NaN/Inf samples": 1,
        "samples naming no GPU (no UUID, PCI bus id or index label)": 1,
        "samples of metrics gpu-rca does not use": 1,
    }


def test_a_whole_answer_and_a_vector_are_read_too():
    answer = json.loads(query_range())
    assert len(samples_from_series(answer).samples) == 3
    vector = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"__name__": "DCGM_FI_DEV_POWER_USAGE", "UUID": UUID}, "value": [1700000000, "151.25"]}
            ],
        },
    }
    assert [(s.metric, s.value) for s in samples_from_series(vector).samples] == [("DCGM_FI_DEV_POWER_USAGE", 151.25)]
    with pytest.raises(InputError, match="Prometheus answered 'error': bad query"):
        samples_from_series({"status": "error", "errorType": "bad_data", "error": "bad query"})
    with pytest.raises(InputError, match="bad point"):
        samples_from_series([{"metric": {"__name__": "DCGM_FI_DEV_GPU_TEMP", "UUID": UUID}, "values": [[1]]}])


def test_exposition_with_timestamps_keeps_them(tmp_path):
    path = tmp_path / "scrape"
    path.write_text(
        "# TYPE DCGM_FI_DEV_GPU_TEMP gauge\n"
        f'DCGM_FI_DEV_GPU_TEMP{{gpu="0",UUID="{UUID}",pci_bus_id="00000000:3B:00.0",Hostname="node-a"}} 77 1700000000250\n'
        f'DCGM_FI_DEV_GPU_TEMP{{gpu="0",UUID="{UUID}",pci_bus_id="00000000:3B:00.0",Hostname="node-a"}} NaN 1700000015250\n'
    )
    with Store() as store:
        report = ingest_file(store, path)
        assert (report.format, report.stored, report.skipped, report.notes) == (
            "prometheus-text",
            1,
            {"NaN/Inf samples": 1},
            (),
        )
        assert store.connection.execute("SELECT ts_ns, host, value FROM metric_samples").fetchall() == [
            (1_700_000_000_250_000_000, "node-a", 77.0)
        ]
        assert store.connection.execute("SELECT pci_bus_id, host FROM gpus").fetchall() == [("0000:3b:00.0", "node-a")]


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (
            "dcgm-exporter-4x-metrics.txt",
            {
                "DCGM_FI_DEV_SM_CLOCK": 2,
                "DCGM_FI_DEV_GPU_TEMP": 3,
                "DCGM_FI_DEV_POWER_USAGE": 2,
                "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": 2,
                "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": 2,
                "DCGM_FI_DEV_GPU_UTIL": 2,
                "DCGM_FI_DEV_FB_FREE": 2,
                "DCGM_FI_DEV_FB_USED": 3,
                "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": 2,
                "DCGM_FI_DEV_XID_ERRORS": 1,
            },
        ),
        (
            "dcgm-exporter-1x-metrics.txt",
            {
                "DCGM_FI_DEV_GPU_TEMP": 2,
                "DCGM_FI_DEV_GPU_UTIL": 2,
                "DCGM_FI_DEV_FB_USED": 2,
                "DCGM_FI_DEV_POWER_VIOLATION": 2,
            },
        ),
    ],
)
def test_exporter_scrapes_are_read(sample, expected):
    path = data_file(sample)
    with Store() as store:
        report = ingest_file(store, path)
        assert report.format == "prometheus-text" and report.status == "ingested"
        assert report.skipped == {"samples of metrics gpu-rca does not use": 2}  # ENC_UTIL/PROF, low_util
        counts = dict(store.connection.execute("SELECT metric, count(*) FROM metric_samples GROUP BY 1").fetchall())
        assert counts == expected
        assert report.notes[-1].endswith("stamped with the file's modification time")
        uuids = store.connection.execute("SELECT count(*) FROM gpus WHERE gpu_uuid LIKE 'GPU-%'").fetchone()[0]
        assert uuids == len({u for (u,) in store.connection.execute("SELECT gpu_uuid FROM metric_samples").fetchall()})


def test_exporter_counters_written_without_total_keep_their_name_and_unit():
    """A counter's exposition name has no `_total` in dcgm-exporter (4.x and 1.x); 1.x violations are in µs."""
    with Store() as store:
        ingest_file(store, data_file("dcgm-exporter-4x-metrics.txt"))
        ingest_file(store, data_file("dcgm-exporter-1x-metrics.txt"))
        rows = store.connection.execute(
            "SELECT metric, gpu_uuid, value FROM metric_samples"
            " WHERE metric IN ('DCGM_FI_DEV_ECC_DBE_VOL_TOTAL', 'DCGM_FI_DEV_POWER_VIOLATION') AND value > 0"
        ).fetchall()
        assert sorted(rows) == [
            ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "GPU-b85e02d7-c3a9-4f16-8d2b-6e0f93a1c754", 2.0),
            ("DCGM_FI_DEV_POWER_VIOLATION", "GPU-e1a4f7c2-5d38-4b9e-8a06-73c5d1f2e8b9", 2_500_000.0),  # 2500 µs
        ]


def test_exporter_labels_fill_the_gpu_inventory():
    with Store() as store:
        ingest_file(store, data_file("dcgm-exporter-4x-metrics.txt"))
        rows = store.connection.execute(
            "SELECT gpu_index, host, pci_bus_id, name FROM gpus ORDER BY gpu_index"
        ).fetchall()
        assert rows == [
            (0, "gpu-node-07", "0000:17:00.0", "NVIDIA L40S"),
            (1, "gpu-node-07", "0000:31:00.0", "NVIDIA L40S"),
            (2, "gpu-node-07", "0000:ca:00.0", "NVIDIA A100-SXM4-40GB"),
        ]


@pytest.mark.parametrize(
    ("log", "pci", "expected"),
    [
        ("xid-journal-short-iso.log", "0000:c1:00.0", ("GPU-2f7a9d03-81b6-4e5c-a4d8-6b0e17c93f52", 94, "python3")),
        ("xid-syslog.log", "0000:af:00.0", ("GPU-c4e08b15-37d9-4a62-8f1b-e5a90d6c2b77", 79, "python3")),
    ],
)
def test_kernel_log_maps_xids_to_gpus(log, pci, expected):
    with Store() as store:
        report = ingest_file(store, data_file(log))
        assert report.format == "kernel-log" and report.stored > 0
        row = store.connection.execute(
            "SELECT gpu_uuid, xid, process FROM kernel_events WHERE pci_bus_id = ? ORDER BY ts_ns LIMIT 1", [pci]
        ).fetchone()
        assert row == expected
        assert store.connection.execute("SELECT count(*) FROM gpus WHERE pci_bus_id = ?", [pci]).fetchone()[0] == 1


def test_verbatim_public_kernel_log_maps_xids_to_gpus():
    """Extra: a real capture, where the shared samples are beside the checkout."""
    path = shared_sample("xid-dmesg.log")
    with Store() as store:
        report = ingest_file(store, path)
        assert report.format == "kernel-log" and report.stored > 0
        row = store.connection.execute(
            "SELECT gpu_uuid, xid, process FROM kernel_events WHERE pci_bus_id = '0000:9b:00.0' ORDER BY ts_ns LIMIT 1"
        ).fetchone()
        assert row == ("GPU-509665ad-b600-ac93-3616-d754b23d636d", 119, "nvidia-smi")


def test_loguru_records_keep_ids_levels_and_exceptions():
    sink = io.StringIO()
    handler = logger.add(sink, serialize=True)
    try:
        with logger.contextualize(trace_id="0" * 32, span_id="0" * 16):
            logger.warning("outside any span")
        try:
            raise ValueError("bad image")
        except ValueError:
            logger.bind(trace_id="AB" * 16, span_id=0x1122334455667788).exception("inference failed")
    finally:
        logger.remove(handler)
    first, second = (log_record_from_loguru(json.loads(line)) for line in sink.getvalue().splitlines())
    assert (first.trace_id, first.span_id, first.severity, first.severity_number) == (None, None, "WARNING", 13)
    assert (second.trace_id, second.span_id) == ("ab" * 16, "1122334455667788")
    assert second.attributes["exception.type"] == "ValueError"
    assert second.attributes["exception.message"] == "bad image"
    assert second.body == "inference failed" and second.source == "loguru"
    assert second.ts_ns % 1000 == 0 and abs(second.ts_ns - first.ts_ns) < 60 * 10**9


def test_protobuf_logs_and_per_message_zstd_are_read(tmp_path):
    payload = logs_request().SerializeToString()
    squeezed = zstandard.ZstdCompressor().compress(payload)
    path = tmp_path / "logs.pb"
    path.write_bytes(proto_framed(logs_request()) + len(squeezed).to_bytes(4, "big") + squeezed)
    with Store() as store:
        report = ingest_file(store, path)
        assert (report.format, report.kind, report.accepted, report.stored) == ("otlp-proto", "logs", 2, 1)


def test_one_signal_per_otlp_file(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(message_to_json(lost_gpu_trace_request(1)) + "\n" + message_to_json(logs_request()) + "\n")
    with Store() as store:
        report = ingest_file(store, path)
        assert report.status == "failed" and report.reason == "line 2: logs in a file of traces (one signal per file)"
        assert store.connection.execute("SELECT count(*) FROM spans").fetchone() == (0,)


def test_gzip_of_a_large_file_streams(tmp_path):
    lines = "".join(message_to_json(lost_gpu_trace_request(1)) + "\n" for _ in range(200))
    path = tmp_path / "many"
    path.write_bytes(gzip.compress(lines.encode()))
    with Store() as store:
        report = ingest_file(store, path)
        assert (report.compression, report.stored) == ("gzip", 400)
        durations = store.connection.execute("SELECT min(duration_ms) FROM spans").fetchone()[0]
        assert math.isfinite(durations) and durations >= 0


def test_a_progress_bar_goes_to_stderr_when_asked(tmp_path, capsys):
    path = tmp_path / "spans.jsonl"
    path.write_text(message_to_json(lost_gpu_trace_request(1)) + "\n")
    with Store() as store:
        ingest_paths(store, [path], progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "B/s" in captured.err


def test_a_byte_order_mark_is_not_content(tmp_path):
    path = tmp_path / "saved-on-windows.json"
    path.write_bytes(b"\xef\xbb\xbf" + query_range().encode())
    with Store() as store:
        report = ingest_file(store, path)
    assert (report.format, report.stored) == ("prometheus-query-range", 3)
