"""Write the Sparkplug B golden inputs (*.bin) of this folder: `python tests/payloads/sparkplug/make_samples.py`.

The payloads are built with the bridge's own runtime schema (`mqtt_bridge.decode.sparkplug_schema`); that schema is
checked independently against hand-encoded wire bytes in tests/unit/test_sparkplug.py, and test_sparkplug also checks
that the .bin files here are what this script writes. Values follow spec/payload-formats.md §5 (the DDATA example).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from mqtt_bridge.decode.sparkplug_schema import encode_payload

HERE = Path(__file__).resolve().parent
STRING, DATASET, INT32, INT64, UINT64, FLOAT, DOUBLE, BOOLEAN, BYTES = 12, 16, 3, 4, 8, 9, 10, 11, 17
BOX_COLUMNS = {"numOfColumns": 6, "columns": ["class", "x", "y", "width", "height", "confidence"],
               "types": [STRING, DOUBLE, DOUBLE, DOUBLE, DOUBLE, DOUBLE]}
SENT_MS = 1741083667118  # 2025-03-04T10:21:07.118Z


def _int32(value: int) -> int:
    """A signed Int32 as Sparkplug sends it: two's complement in the unsigned int_value."""
    return value & 0xFFFFFFFF


def samples() -> dict[str, bytes]:
    """Every sample payload by case name."""
    jpeg = base64.b64encode((HERE / "tiny.jpeg").read_bytes()).decode()
    detections = json.dumps({"image": {"width": 32, "height": 24}, "predictions": [
        {"x": 16.0, "y": 12.0, "width": 10.0, "height": 8.0, "confidence": 0.93, "class": "crack"}]})
    node_birth = {"timestamp": SENT_MS - 60_000, "seq": 0, "metrics": [
        {"name": "bdSeq", "alias": 1, "datatype": UINT64, "longValue": "0"},
        {"name": "Node Control/Rebirth", "alias": 2, "datatype": BOOLEAN, "booleanValue": False}]}
    device_birth = {"timestamp": SENT_MS - 59_000, "seq": 1, "metrics": [
        {"name": "Inspection/Result", "alias": 5, "datatype": STRING, "stringValue": "PASS"},
        {"name": "Inspection/Boxes", "alias": 6, "datatype": DATASET, "datasetValue": dict(BOX_COLUMNS)},
        {"name": "Inspection/ImageUrl", "alias": 7, "datatype": STRING, "stringValue": ""},
        {"name": "Inspection/FrameTime", "alias": 8, "datatype": INT64, "longValue": "0"},
        {"name": "Inspection/Serial", "alias": 9, "datatype": STRING, "stringValue": ""},
        {"name": "Inspection/Image", "alias": 10, "datatype": BYTES, "bytesValue": "",
         "metadata": {"contentType": "image/jpeg"}},
        {"name": "Vision/Detections", "alias": 11, "datatype": STRING, "stringValue": "{}"},
        {"name": "Gauge/Class", "alias": 12, "datatype": STRING, "stringValue": ""},
        {"name": "Gauge/Confidence", "alias": 13, "datatype": FLOAT, "floatValue": 0.0},
        {"name": "Gauge/BBox/X", "alias": 14, "datatype": INT32, "intValue": 0},
        {"name": "Gauge/BBox/Y", "alias": 15, "datatype": INT32, "intValue": 0},
        {"name": "Gauge/BBox/W", "alias": 16, "datatype": INT32, "intValue": 0},
        {"name": "Gauge/BBox/H", "alias": 17, "datatype": INT32, "intValue": 0},
        {"name": "Gauge/Result", "alias": 18, "datatype": STRING, "stringValue": ""},
        {"name": "Temperature", "alias": 19, "datatype": DOUBLE, "doubleValue": 21.5}]}
    dataset = {"timestamp": SENT_MS, "seq": 42, "metrics": [
        {"alias": 5, "stringValue": "FAIL"},
        {"alias": 6, "datasetValue": {**BOX_COLUMNS, "rows": [{"elements": [
            {"stringValue": "scratch"}, {"doubleValue": 812.0}, {"doubleValue": 440.0}, {"doubleValue": 96.0},
            {"doubleValue": 60.0}, {"doubleValue": 0.87}]}]}},
        {"alias": 7, "stringValue": "http://edge-07.local/img/1741083667118.jpg"},
        {"alias": 8, "longValue": "1741083667100"},
        {"alias": 9, "stringValue": "SN-77"}]}
    return {
        "nbirth": encode_payload(node_birth),
        "dbirth": encode_payload(device_birth),
        "ndeath": encode_payload({"metrics": [{"name": "bdSeq", "datatype": UINT64, "longValue": "0"}]}),
        "ddata_dataset": encode_payload(dataset),
        "ddata_no_birth": encode_payload(dataset),
        "ddata_after_ndeath": encode_payload(dataset),
        "ddata_json_with_image": encode_payload({"timestamp": SENT_MS + 33, "seq": 43, "metrics": [
            {"alias": 11, "stringValue": detections},
            {"alias": 10, "bytesValue": jpeg},
            {"alias": 9, "stringValue": "SN-78"}]}),
        "ddata_folder": encode_payload({"timestamp": SENT_MS + 66, "seq": 44, "metrics": [
            {"alias": 12, "stringValue": "needle_bent"}, {"alias": 13, "floatValue": 0.75},
            {"alias": 14, "intValue": _int32(-4)}, {"alias": 15, "intValue": 10},
            {"alias": 16, "intValue": 50}, {"alias": 17, "intValue": 40},
            {"alias": 18, "stringValue": "NG"}]}),
        "ddata_empty_dataset": encode_payload({"timestamp": SENT_MS + 99, "seq": 45, "metrics": [
            {"alias": 5, "stringValue": "PASS"}, {"alias": 6, "datasetValue": dict(BOX_COLUMNS)}]}),
        "ddata_unmapped": encode_payload({"timestamp": SENT_MS + 132, "seq": 46, "metrics": [
            {"alias": 19, "doubleValue": 22.25}]}),
        "ddata_named": encode_payload({"timestamp": SENT_MS + 165, "seq": 47, "metrics": [
            {"name": "Vision/Detections", "datatype": STRING, "stringValue": detections}]}),
        "ddata_garbage": b"\xff\xff\xff\x07",
    }


def main() -> None:
    """Write every sample next to this script."""
    for name, data in samples().items():
        (HERE / f"{name}.bin").write_bytes(data)


if __name__ == "__main__":
    main()
