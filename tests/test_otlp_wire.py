"""Spans read with raw attribute bytes and a bounded cache: the same rows as decoding every attribute, whatever
the cache holds, for canonical and unusual encodings alike; attribute bytes that are not a KeyValue refused."""

from __future__ import annotations

import json
import math
import struct

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from gpu_rca.correlate.otlp.decode import spans_from_request
from gpu_rca.correlate.otlp.wire import AttributeCache, RawTraces
from gpu_rca.schemas import attributes as a
from gpu_rca.schemas.errors import InputError
from tests.support.otlp_hand_built import hand_built_request, well_typed_stamps


def _rows(body: bytes, cache: AttributeCache) -> list[dict[str, object]]:
    return spans_from_request(body, cache=cache).spans.to_pylist()


def _with_raw_attributes(*raws: bytes) -> bytes:
    """A one-span request whose attributes are exactly `raws`, byte for byte."""
    message = RawTraces.FromString(hand_built_request((1, [])).SerializeToString())
    message.resource_spans[0].scope_spans[0].spans[0].attributes.extend(raws)
    return message.SerializeToString()


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    assert wire_type in (1, 2) and len(payload) < 0x80
    return bytes((number << 3 | wire_type,)) + (bytes((len(payload),)) if wire_type == 2 else b"") + payload


def test_repeated_values_hit_the_cache_and_give_the_rows_decoding_everything_gives():
    body = hand_built_request(
        *(
            (serial, well_typed_stamps(POWER_MEAN=60.0 + serial % 3, MEMORY_USED_MAX=2**34 + serial))
            for serial in range(1, 41)
        )
    ).SerializeToString()
    cache = AttributeCache()
    first, again = _rows(body, cache), _rows(body, cache)
    assert first == again == _rows(body, AttributeCache(max_entries=0))
    assert 0.5 < cache.hit_rate < 1.0  # the second pass hits everything, the first only the repeats
    assert {row["gpu_power_mean"] for row in first} == {60.0, 61.0, 62.0}
    assert sorted(row["gpu_memory_used_max"] for row in first) == [2**34 + n for n in range(1, 41)]


def test_a_full_cache_is_emptied_and_still_gives_the_same_rows():
    body = hand_built_request(
        *((serial, well_typed_stamps(TEMPERATURE_MAX=serial)) for serial in range(1, 30))
    ).SerializeToString()
    small = AttributeCache(max_entries=4)
    assert _rows(body, small) == _rows(body, AttributeCache(max_entries=0))
    assert len(small) <= 4


def test_unusual_encodings_of_a_stamp_read_as_the_canonical_one():
    key = _field(1, 2, a.POWER_MEAN.encode())
    value = _field(4, 1, struct.pack("<d", 61.5))  # AnyValue.double_value
    canonical = KeyValue(key=a.POWER_MEAN, value=AnyValue(double_value=61.5)).SerializeToString()
    assert canonical == key + _field(2, 2, value)
    forms = {
        "canonical": canonical,
        "value first": _field(2, 2, value) + key,
        "oneof set twice": key + _field(2, 2, bytes((0x18, 7)) + value),  # int_value 7, then the double
        "unknown field after": canonical + bytes((0x18, 1)),  # KeyValue field 3 (unknown), varint 1
    }
    for name, raw in forms.items():
        (row,) = _rows(_with_raw_attributes(raw), AttributeCache())
        assert row["gpu_power_mean"] == 61.5, name


@pytest.mark.parametrize(
    ("value", "column", "expected"),
    [
        (AnyValue(int_value=-3), "gpu_ecc_corrected_delta", -3),
        (AnyValue(int_value=2**63 - 1), "gpu_memory_used_max", 2**63 - 1),
        (AnyValue(double_value=math.nan), "gpu_power_mean", None),
        (AnyValue(double_value=-math.inf), "inference_queue_ms", None),
    ],
)
def test_edge_values_are_read_as_upb_reads_them(value: AnyValue, column: str, expected: object):
    attribute = {
        "gpu_ecc_corrected_delta": a.ECC_CORRECTED_DELTA,
        "gpu_memory_used_max": a.MEMORY_USED_MAX,
        "gpu_power_mean": a.POWER_MEAN,
        "inference_queue_ms": a.QUEUE_MS,
    }[column]
    raw = KeyValue(key=attribute, value=value).SerializeToString()
    for cache in (AttributeCache(), AttributeCache(max_entries=0)):
        (row,) = _rows(_with_raw_attributes(raw), cache)
        assert row[column] == expected


def test_a_stamp_in_another_field_is_coerced_as_the_json_reader_does_even_once_cached():
    as_int = KeyValue(key=a.POWER_MEAN, value=AnyValue(int_value=60)).SerializeToString()
    as_text = KeyValue(key=a.TEMPERATURE_MAX, value=AnyValue(string_value="hot")).SerializeToString()
    cache = AttributeCache()
    for _ in range(2):
        (row,) = _rows(_with_raw_attributes(as_int, as_text), cache)
        assert row["gpu_power_mean"] == 60.0 and row["gpu_temperature_max"] is None
        assert json.loads(row["attributes"]) == {a.TEMPERATURE_MAX: "hot"}  # a mistyped stamp stays visible


def test_a_later_duplicate_key_wins_as_in_the_sdks():
    first = KeyValue(key=a.DDCOLOR_MODEL, value=AnyValue(string_value="tiny")).SerializeToString()
    second = KeyValue(key=a.DDCOLOR_MODEL, value=AnyValue(string_value="large")).SerializeToString()
    (row,) = _rows(_with_raw_attributes(first, second), AttributeCache())
    assert row["ddcolor_model"] == "large" and json.loads(row["attributes"]) == {a.DDCOLOR_MODEL: "large"}


@pytest.mark.parametrize("raw", [b"\x0a\x05ab", b"\xff\xff\xff", KeyValue(key="x").SerializeToString()[:-1] + b"\x80"])
def test_attribute_bytes_that_are_no_key_value_are_refused_and_never_cached(raw: bytes):
    cache = AttributeCache()
    for _ in range(2):
        with pytest.raises(InputError, match="KeyValue"):
            spans_from_request(_with_raw_attributes(raw), cache=cache)
    assert len(cache) == 0


def test_a_decoded_message_and_its_bytes_give_the_same_rows():
    message = hand_built_request((1, well_typed_stamps()), (2, well_typed_stamps(XID=[13, 79])))
    assert isinstance(message, ExportTraceServiceRequest)
    assert (
        _rows(message.SerializeToString(), AttributeCache())
        == spans_from_request(message, cache=AttributeCache()).spans.to_pylist()
    )
