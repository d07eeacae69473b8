"""Inputs for fuzzing the decoders, the ingest path and the config loader (hypothesis strategies, and the fixed
route and sample configs that atheris and hypothesis share).

Owns: JSON documents biased towards the keys the payload formats read, Sparkplug B payloads, topics per format,
config documents biased towards the config's own keys, and a route config for every registered decoder. Whatever
the decoder registry holds is fuzzed: a new format needs at most an entry in `ROUTE_SECTIONS`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson
from hypothesis import strategies as st

from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.config.load import parse_config
from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.decode.registry import DECODERS
from mqtt_bridge.decode.sparkplug_schema import encode_payload

__all__ = [
    "CONFIG_KEYS",
    "PAYLOAD_KEYS",
    "ROUTE_SECTIONS",
    "config_documents",
    "json_documents",
    "message_sequences",
    "payloads",
    "route_config",
    "routes_config",
    "sparkplug_payloads",
    "topics",
]

# Keys the decoders look for (spec/payload-formats.md), so that random documents reach past the first check.
PAYLOAD_KEYS = (
    "predictions", "detections", "objects", "object", "class", "class_name", "class_id", "label", "confidence",
    "score", "x", "y", "width", "height", "bbox", "box", "xmin", "ymin", "xmax", "ymax", "left", "top", "right",
    "bottom", "image", "data", "name", "timestamp", "time", "frame_time", "inference_id", "inference_metadata",
    "frame_decoding_time", "emission_time", "source_id", "outputs", "type", "before", "after", "id", "camera",
    "top_score", "region", "snapshot", "frame", "metadata", "event_type", "event_data", "event_id", "device_id",
    "stream_id", "schema", "classifications", "points", "keypoints", "polygon", "cls", "conf", "xywh", "xyxy",
    "names", "tensors", "sensorId", "@timestamp", "roi", "detection", "bounding_box", "resolution", "pts", "source",
    "sensor", "version", "seq", "metrics", "value", "result", "image_width", "image_height", "speed", "shape",
    "inspection", "defects", "sub_label", "current_zones", "has_snapshot", "start_time", "end_time", "label_id",
    "rect", "tensor", "objectDetections", "detection_id", "parent_id", "segments", "mask", "ts", "frames",
)
_TIMES = ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00.123456+02:00", "1714564800", "1714564800123", "yesterday",
          "", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00")
# Sections a format cannot do without (config.RouteConfig says which); a new format that needs one adds it here.
ROUTE_SECTIONS: dict[str, dict[str, object]] = {
    "generic": {"generic": {"detections_path": "detections", "class_path": "class"}},
    "sparkplug": {"sparkplug": {"metrics": [{"name": "Inspection/Result", "format": "canonical"},
                                            {"name": "Inspection/Boxes", "format": "generic",
                                             "generic": {"detections_path": "", "class_path": "class"}}],
                                "image_metric": "Inspection/Image", "metadata_metrics": ["Inspection/Serial"]}},
}
_TOPICS = ("factory/line1/cam1/detections", "frigate/events", "frigate/cam1/person/snapshot", "frigate/cam1/person",
           "spBv1.0/plant/NBIRTH/edge1", "spBv1.0/plant/DBIRTH/edge1/cam1", "spBv1.0/plant/NDATA/edge1",
           "spBv1.0/plant/DDATA/edge1/cam1", "spBv1.0/plant/NDEATH/edge1", "spBv1.0/STATE/host",
           "deepstream/cam1", "ultralytics/cam1", "dlstreamer/cam1/frames")


def route_config(name: str) -> dict[str, object]:
    """A raw route using decoder `name`, with a topic that matches every topic of the fuzz (`#`)."""
    return {"topic": "#", "format": name, "use_case": "uc-fuzz", "device_id": "fuzz", **ROUTE_SECTIONS.get(name, {})}


def routes_config(names: tuple[str, ...] = DECODERS) -> BridgeConfig:
    """A whole config with one route per decoder, each under its own topic prefix `fz/<name>/...`."""
    routes = [{**route_config(name), "topic": f"fz/{name}/#"} for name in names]
    return parse_config({"api": {"api_key": "k"}, "routes": routes}, env={})


def route_model(name: str) -> RouteConfig:
    """The validated route of `route_config(name)`."""
    return parse_config({"api": {"api_key": "k"}, "routes": [route_config(name)]}, env={}).routes[0]


_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
_floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from((0.0, -0.0, 1e308, -1e-308, 0.5, 1.0))
_leaves: st.SearchStrategy[Any] = (
    st.none() | st.booleans() | _ints | _floats | st.text(max_size=24) | st.sampled_from(PAYLOAD_KEYS)
    | st.sampled_from(_TIMES) | st.integers(min_value=-10, max_value=4000)
)
json_documents: st.SearchStrategy[Any] = st.recursive(
    _leaves,
    lambda children: (st.lists(children, max_size=6)
                      | st.dictionaries(st.sampled_from(PAYLOAD_KEYS) | st.text(max_size=8), children, max_size=8)),
    max_leaves=60,
)


def _metric(draw: st.DrawFn) -> dict[str, object]:
    metric: dict[str, object] = {}
    if draw(st.booleans()):
        metric["name"] = draw(st.sampled_from(("Inspection/Result", "Inspection/Boxes", "Inspection/Image",
                                               "Inspection/Serial", "Inspection/Boxes/0/class", "Other")) | st.text())
    if draw(st.booleans()):
        metric["alias"] = draw(st.integers(min_value=0, max_value=2**64 - 1))
    if draw(st.booleans()):
        metric["datatype"] = draw(st.integers(min_value=0, max_value=40))
    kind = draw(st.sampled_from(("int_value", "long_value", "float_value", "double_value", "boolean_value",
                                 "string_value", "bytes_value", "none")))
    if kind == "string_value":
        metric[kind] = draw(json_documents.map(lambda d: orjson.dumps(d).decode()) | st.text())
    elif kind == "bytes_value":
        import base64

        metric[kind] = base64.b64encode(draw(st.binary(max_size=64))).decode()
    elif kind in ("int_value",):
        metric[kind] = draw(st.integers(min_value=0, max_value=2**32 - 1))
    elif kind == "long_value":
        metric[kind] = draw(st.integers(min_value=0, max_value=2**64 - 1))
    elif kind in ("float_value", "double_value"):
        value = draw(st.floats(width=32 if kind == "float_value" else 64))
        metric[kind] = value if math.isfinite(value) else str(value).replace("inf", "Infinity").replace("nan", "NaN")
    elif kind == "boolean_value":
        metric[kind] = draw(st.booleans())
    return metric


@st.composite
def sparkplug_payloads(draw: st.DrawFn) -> bytes:
    """A Sparkplug B protobuf payload with random metrics (names, aliases, datatypes and values)."""
    payload: dict[str, object] = {"metrics": [_metric(draw) for _ in range(draw(st.integers(0, 5)))]}
    if draw(st.booleans()):
        payload["timestamp"] = draw(st.integers(min_value=0, max_value=2**64 - 1))
    if draw(st.booleans()):
        payload["seq"] = draw(st.integers(min_value=0, max_value=2**64 - 1))
    return encode_payload(payload)


payloads: st.SearchStrategy[bytes] = (
    json_documents.map(orjson.dumps)
    | st.binary(max_size=300)
    | json_documents.map(orjson.dumps).flatmap(lambda data: st.integers(0, len(data)).map(lambda cut: data[:cut]))
    | sparkplug_payloads()
)
topics: st.SearchStrategy[str] = st.sampled_from(_TOPICS) | st.text(max_size=40) | st.lists(
    st.sampled_from(("spBv1.0", "frigate", "events", "snapshot", "NBIRTH", "DDATA", "a", "")), max_size=6,
).map("/".join)


def message_sequences(max_size: int = 4) -> st.SearchStrategy[list[tuple[str, bytes]]]:
    """A few messages in a row (decoders keep state between them: Sparkplug aliases, Frigate snapshots)."""
    return st.lists(st.tuples(topics, payloads), min_size=1, max_size=max_size)


# --- config documents -----------------------------------------------------------------------------------------

CONFIG_KEYS = (
    "mqtt", "api", "buffer", "flush", "health", "logging", "routes", "host", "port", "client_id", "protocol",
    "username", "password", "password_file", "keepalive_s", "session_expiry_s", "receive_maximum",
    "reconnect_min_s", "reconnect_max_s", "max_payload_bytes", "tls", "enabled", "ca_file", "cert_file", "key_file",
    "base_url", "api_key", "api_key_file", "connect_timeout_s", "read_timeout_s", "retry_min_s", "retry_max_s",
    "path", "max_bytes", "min_free_bytes", "max_events", "max_wait_s", "shutdown_grace_s", "level", "format",
    "topic", "name", "use_case", "device_id", "stream_id", "event_type", "event_data", "metadata",
    "event_id_field", "min_confidence", "max_predictions", *DECODERS, *ROUTE_SECTIONS,
)
_config_leaves: st.SearchStrategy[Any] = (
    _leaves | st.sampled_from(("${HOME}", "${NOPE}", "${NOPE:-x}", "$$", "${", "512MiB", "2GiB", "1e3", "9" * 400,
                               "9" * 400 + "GiB", "-1", "{line}", "{payload.a.b}", "{x*}/y", "+/#", "$SYS/#",
                               "http://127.0.0.1:1", "5", "3.1.1", "quality_check", *DECODERS))
)
config_documents: st.SearchStrategy[Any] = st.recursive(
    _config_leaves,
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.sampled_from(CONFIG_KEYS) | st.text(max_size=6), children, max_size=6)),
    max_leaves=40,
)


def valid_base_config() -> dict[str, object]:
    """A valid raw config that mutations start from."""
    return {"mqtt": {"host": "127.0.0.1"}, "api": {"api_key": "k"}, "buffer": {"path": "/tmp/fuzz-buffer"},
            "routes": [route_config(name) for name in DECODERS]}


def mutated(base: Mapping[str, object], section: str, key: str, value: object) -> dict[str, object]:
    """`base` with one key of one section replaced (or the section itself when `key` is empty)."""
    out = dict(base)
    current = out.get(section)
    if key and isinstance(current, dict):
        out[section] = {**current, key: value}
    elif key and isinstance(current, list) and current and isinstance(current[0], dict):
        out[section] = [{**current[0], key: value}, *current[1:]]
    else:
        out[section] = value
    return out
