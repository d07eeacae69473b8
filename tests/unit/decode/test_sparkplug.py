"""Sparkplug B: the runtime schema against hand-encoded wire bytes, datatypes, alias state, and the sample files."""

from __future__ import annotations

import importlib.util
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.decode.base import Message
from mqtt_bridge.decode.registry import build_decoder
from mqtt_bridge.decode.sparkplug import metric_value
from mqtt_bridge.decode.sparkplug_schema import DataSetRaw, encode_payload, parse_payload
from mqtt_bridge.errors import DecodeError
from mqtt_bridge.routing.router import Router
from mqtt_bridge.transform.ingest import Ingestor

SAMPLES = Path(__file__).resolve().parents[2] / "payloads" / "sparkplug"
TOPIC = "spBv1.0/PlantA/DDATA/Line3-Edge/Cam07"
NOW = datetime(2025, 3, 4, 10, 22, tzinfo=UTC)  # the samples were sent at 2025-03-04T10:21


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: int | bytes | str) -> bytes:
    """One protobuf field, encoded by hand (varint or length-delimited), independent of the protobuf library."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _route(**extra: object) -> RouteConfig:
    base: dict[str, object] = {
        "topic": "spBv1.0/{rest*}", "use_case": "uc", "format": "sparkplug",
        "sparkplug": {"metrics": [{"name": "Inspection/Boxes", "generic": {
            "detections_path": "", "class_path": "class", "confidence_path": "confidence",
            "box": {"convention": "xyxy", "fields": ["x1", "y1", "x2", "y2"]}}}]},
    }
    base.update(extra)
    return RouteConfig.model_validate(base)


def test_sparkplug_schema_reads_hand_encoded_payload() -> None:
    """Field numbers match eclipse/tahu sparkplug_b.proto: a payload written byte by byte parses as intended."""
    metric = (_field(1, "Inspection/Result") + _field(2, 5) + _field(3, 1741083667100) + _field(4, 12)
              + _field(15, "FAIL"))
    row = _field(1, _field(6, "scratch")) + _field(1, _field(1, 0xFFFFFFFC))  # string cell, Int32 cell (-4)
    dataset = _field(1, 2) + _field(2, "class") + _field(2, "x") + _field(3, 12) + _field(3, 3) + _field(4, row)
    boxes = _field(1, "Inspection/Boxes") + _field(2, 6) + _field(4, 16) + _field(17, dataset)
    image = _field(2, 7) + _field(8, _field(2, "image/jpeg") + _field(5, "f.jpg")) + _field(16, b"\xff\xd8\xff")
    payload = (_field(1, 1741083667118) + _field(2, metric) + _field(2, boxes) + _field(2, image)
               + _field(3, 42))
    parsed = parse_payload(payload)
    assert (parsed.timestamp_ms, parsed.seq) == (1741083667118, 42)
    result, table, picture = parsed.metrics
    assert (result.name, result.alias, result.datatype, result.timestamp_ms, result.value) == (
        "Inspection/Result", 5, 12, 1741083667100, "FAIL")
    assert table.value == DataSetRaw(columns=("class", "x"), types=(12, 3), rows=(("scratch", 0xFFFFFFFC),))
    assert metric_value(table.value, 16) == [{"class": "scratch", "x": -4}]
    assert (picture.alias, picture.content_type, picture.file_name, picture.value) == (
        7, "image/jpeg", "f.jpg", b"\xff\xd8\xff")


@pytest.mark.parametrize(("raw", "datatype", "expected"), [
    (0xFF, 1, -1), (0xFFFFFFFF, 1, -1), (0x7F, 1, 127), (0xFFFF8000, 2, -32768), (0xFFFFFFFE, 3, -2),
    (2**64 - 3, 4, -3), (2**64 - 3, 8, 2**64 - 3), (200, 5, 200),
    (b"\x01\x00\x02\x00", 23, [1, 2]), (b"a\x00bc\x00", 33, ["a", "bc"]),
    (b"\x03\x00\x00\x00\xa0", 32, [True, False, True]), (float("nan"), 10, None),
])
def test_sparkplug_metric_value_follows_datatype(raw: int | bytes | float, datatype: int, expected: object) -> None:
    """Signed types are two's complement of their width; arrays are little-endian; NaN becomes null."""
    assert metric_value(raw, datatype) == expected


def test_sparkplug_samples_are_what_make_samples_writes() -> None:
    """The golden .bin files are current: make_samples.py reproduces them byte for byte."""
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, data in module.samples().items():
        assert (SAMPLES / f"{name}.bin").read_bytes() == data, f"{name}.bin is stale: run make_samples.py"


def test_sparkplug_rebirth_replaces_the_alias_table() -> None:
    """An NBIRTH resets what the node's aliases mean; DATA then uses the new names and datatypes."""
    decoder = build_decoder("sparkplug", _route())
    columns = {"numOfColumns": 5, "columns": ["class", "x1", "y1", "x2", "y2"], "types": [12, 3, 3, 3, 3]}
    decoder.decode(Message("spBv1.0/G/NBIRTH/E", encode_payload({"metrics": [
        {"name": "Inspection/Boxes", "alias": 3, "datatype": 16, "datasetValue": columns}]})))
    row = {"elements": [{"stringValue": "dent"}, {"intValue": 2**32 - 10}, {"intValue": 0}, {"intValue": 10},
                        {"intValue": 8}]}
    data = encode_payload({"timestamp": 1741083667118, "metrics": [
        {"alias": 3, "datasetValue": {**columns, "rows": [row]}}]})
    [decoded] = decoder.decode(Message("spBv1.0/G/NDATA/E", data))
    assert decoded.detections == [{"class": "dent", "x": 0.0, "y": 4.0, "width": 20.0, "height": 8.0,
                                   "confidence": 1.0}]
    assert (decoded.device_id, decoded.stream_id) == ("E", None)
    decoder.decode(Message("spBv1.0/G/NBIRTH/E", encode_payload({"metrics": [
        {"name": "Other", "alias": 4, "datatype": 12, "stringValue": "x"}]})))
    with pytest.raises(DecodeError) as info:
        decoder.decode(Message("spBv1.0/G/NDATA/E", data))
    assert info.value.reason == "unknown_alias"


def test_sparkplug_auto_route_needs_a_mapping() -> None:
    """Under format auto a Sparkplug topic picks the Sparkplug decoder; without a mapping it is unknown_format."""
    ingestor = Ingestor(Router([RouteConfig.model_validate({"topic": "spBv1.0/#", "use_case": "uc",
                                                            "format": "auto"})]), 4096)
    result = ingestor.process(TOPIC.encode(), (SAMPLES / "ddata_named.bin").read_bytes(), time.time())
    assert result.dead_letter is not None and result.dead_letter.reason == "unknown_format"
    mapped = Ingestor(Router([_route(format="auto", sparkplug={"metrics": [
        {"name": "Vision/Detections", "format": "roboflow"}]})]), 4096,
        clock=lambda: NOW)
    result = mapped.process(TOPIC.encode(), (SAMPLES / "ddata_named.bin").read_bytes(), 1741083700.0)
    [record] = result.records
    metadata = record.event["customMetadata"]
    assert isinstance(metadata, dict) and metadata["decoder"] == "sparkplug"
    assert record.event["deviceId"] == "Line3-Edge"

