"""The protobuf ingest path: stamps typed in one pass, odd values handled as the JSON reader does,
duplicates stored once, the GPU inventory kept right, and readers never waiting for the writer."""

from __future__ import annotations

import json
import math
import threading

import pytest

from gpu_rca.correlate import GpuRecord, Store
from gpu_rca.schemas import attributes as a
from tests.support.otlp_hand_built import UUID, hand_built_request, well_typed_stamps


def row(store: Store, serial: int, *columns: str) -> tuple:
    return store.connection.execute(
        f"SELECT {', '.join(columns)} FROM spans WHERE span_id = ?", [serial.to_bytes(8, "big").hex()]
    ).fetchone()


def test_well_typed_stamps_land_typed_and_leave_only_workload_in_the_json():
    with Store() as store:
        result = store.ingest_trace_request(hand_built_request((1, well_typed_stamps())))
        assert (result.accepted, result.stored, result.rejected) == (1, 1, 0)
        got = row(
            store,
            1,
            "is_inference",
            "gpu_uuid",
            "gpu_index",
            "gpu_temperature_max",
            "gpu_power_mean",
            "gpu_xid",
            "gpu_throttle_reasons",
            "gpu_telemetry_stale",
            "ddcolor_input_size",
            "attributes",
        )
        assert got[:-1] == (True, UUID, 0, 83, 61.5, [79], ["sw_thermal"], False, 512)
        assert json.loads(got[-1]) == {a.DDCOLOR_INPUT_SIZE: 512, a.DDCOLOR_MODEL: "tiny"}


def test_odd_values_are_coerced_or_kept_in_the_json_as_the_json_reader_does():
    pairs = well_typed_stamps(
        POWER_MEAN=61,
        TEMPERATURE_MAX=83.0,
        GPU_INDEX="0",
        XID=[79.0, 13],
        THROTTLE_REASONS=["sw_thermal", 7],
        UTILIZATION_MEAN=math.nan,
        DDCOLOR_INPUT_SIZE=512.0,
    )
    pairs += [("blob", b"\x01\xff"), ("http.route", "/colorize"), ("http.route", "/v2/colorize")]
    with Store() as store:
        store.ingest_trace_request(hand_built_request((2, pairs)))
        got = row(
            store,
            2,
            "gpu_power_mean",
            "gpu_temperature_max",
            "gpu_index",
            "gpu_xid",
            "gpu_throttle_reasons",
            "gpu_utilization_mean",
            "ddcolor_input_size",
            "attributes",
        )
    assert got[:-1] == (61.0, 83, None, [79, 13], None, None, 512)
    # mistyped stamps stay visible; a later duplicate key wins; bytes as hex; a NaN stamp is just undefined
    assert json.loads(got[-1]) == {
        a.GPU_INDEX: "0",
        a.THROTTLE_REASONS: ["sw_thermal", 7],
        "blob": "01ff",
        "http.route": "/v2/colorize",
        a.DDCOLOR_INPUT_SIZE: 512.0,
        a.DDCOLOR_MODEL: "tiny",
    }


def test_a_span_twice_in_one_request_is_stored_once_and_counted_twice():
    with Store() as store:
        first = store.ingest_trace_request(
            hand_built_request((3, well_typed_stamps()), (3, well_typed_stamps()), (4, well_typed_stamps()))
        )
        again = store.ingest_trace_request(hand_built_request((3, well_typed_stamps()), (4, well_typed_stamps())))
        assert (first.accepted, first.stored) == (3, 2)
        assert (again.accepted, again.stored) == (2, 0)
        assert store.connection.execute("SELECT count(*) FROM spans").fetchone()[0] == 2


def test_a_bad_span_is_rejected_alone_beside_fast_path_neighbours():
    bad = hand_built_request((5, well_typed_stamps()), (6, well_typed_stamps()))
    bad.resource_spans[0].scope_spans[0].spans[0].trace_id = bytes(16)
    with Store() as store:
        result = store.ingest_trace_request(bad)
        assert (result.accepted, result.rejected, result.stored) == (1, 1, 1)
        assert "trace_id" in result.errors[0]


def test_the_inventory_takes_the_latest_record_even_when_a_span_repeats_an_earlier_one():
    with Store() as store:
        store.ingest_trace_request(hand_built_request((7, well_typed_stamps())))
        store.upsert_gpus([GpuRecord(UUID, name="L4 (exporter label)", host="node-a", host_source="metric")])
        store.ingest_trace_request(
            hand_built_request((8, well_typed_stamps()))
        )  # the same GPU record as the first span's
        assert store.connection.execute("SELECT name FROM gpus WHERE gpu_uuid = ?", [UUID]).fetchone() == ("NVIDIA L4",)


def test_a_gpu_first_seen_in_a_rolled_back_transaction_is_learnt_later():
    with Store() as store:
        with pytest.raises(RuntimeError), store.transaction():
            store.ingest_trace_request(hand_built_request((9, well_typed_stamps())))
            raise RuntimeError("the batch failed")
        store.ingest_trace_request(hand_built_request((10, well_typed_stamps())))
        assert store.connection.execute("SELECT host, name FROM gpus WHERE gpu_uuid = ?", [UUID]).fetchone() == (
            "node-a",
            "NVIDIA L4",
        )


def test_a_read_completes_while_a_write_transaction_is_open(tmp_path):
    with Store(tmp_path / "store.duckdb") as store:
        store.ingest_trace_request(hand_built_request((11, well_typed_stamps())))
        writing, release = threading.Event(), threading.Event()

        def long_write() -> None:
            with store.transaction():
                store.ingest_trace_request(hand_built_request((12, well_typed_stamps())))
                writing.set()
                release.wait(30)

        writer = threading.Thread(target=long_write)
        writer.start()
        try:
            assert writing.wait(30)
            seen: list[int] = []

            def read() -> None:
                cursor = store.cursor()
                try:
                    seen.append(cursor.execute("SELECT count(*) FROM spans").fetchone()[0])
                finally:
                    cursor.close()

            reader = threading.Thread(target=read)
            reader.start()
            reader.join(10)
            assert not reader.is_alive(), "the read waited for the write transaction"
            assert seen == [1]  # the committed snapshot: the open write is not visible
        finally:
            release.set()
            writer.join(30)
        cursor = store.cursor()
        assert cursor.execute("SELECT count(*) FROM spans").fetchone()[0] == 2
        cursor.close()
