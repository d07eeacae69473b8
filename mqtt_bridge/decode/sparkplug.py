"""Sparkplug B (spBv1.0) over MQTT: vision results carried as metrics of NDATA/DDATA messages.

Owns: the Sparkplug topic namespace, the alias → (name, datatype) table per edge node learned from NBIRTH/DBIRTH,
the meaning of each datatype (signed integers in two's complement, DateTime, DataSet, Template, the 3.0 arrays),
and the mapping of configured metrics (`routes[].sparkplug`) to events (spec/payload-formats.md §5):

- one event per configured metric (or metric folder) present in a DATA message; a String metric holding JSON is
  decoded by the format named for it, any other value (a DataSet as a list of row objects, a folder or Template
  as an object) through a `generic` mapping;
- deviceId is the edge node, streamId the device; group and seq go to customMetadata; the timestamp is the
  payload's; an image comes from a Bytes/File metric;
- a DATA message with an alias that no BIRTH announced is dead-lettered (`unknown_alias`): without the BIRTH the
  bridge cannot tell what it carries. The edge node's next rebirth fixes it (the bridge never publishes).
- the alias tables are bounded in bytes: `NODE_TABLE_BYTES` per edge node (a BIRTH's metrics past it are not
  learned, counted as `cache="sparkplug_aliases"`; their DATA then dead-letters `unknown_alias`) and
  `ALIAS_TABLES_BYTES` for all nodes (the least recently heard node is forgotten first, `cache="sparkplug_nodes"`;
  its next BIRTH teaches it again).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

from mqtt_bridge.config.format_options import SparkplugMetric, SparkplugOptions
from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.decode.base import Decoded, Decoder, DecoderFactory, Message, confidence_factor
from mqtt_bridge.decode.generic import decode_mapped
from mqtt_bridge.decode.sparkplug_schema import DataSetRaw, MetricRaw, RawValue, TemplateRaw, parse_payload
from mqtt_bridge.errors import DeadLetterReason, DecodeError
from mqtt_bridge.model.bounded import ENTRY_OVERHEAD_BYTES, ByteLRU, count_evictions, text_bytes
from mqtt_bridge.model.values import JsonDict, JsonValue, parse_timestamp

__all__ = ["ALIAS_TABLES_BYTES", "NAMESPACE", "NODE_TABLE_BYTES", "SparkplugDecoder", "is_sparkplug_topic",
           "metric_value"]

NAMESPACE = "spBv1.0"
_MAX_EDGE_NODES = 10_000
NODE_TABLE_BYTES = 4 * 2**20  # the aliases and datatypes one edge node's BIRTHs may teach
ALIAS_TABLES_BYTES = 32 * 2**20  # every edge node's tables together (per route)
_MAX_DEPTH = 16
_MIN_TOPIC_LEVELS = 4
_DATA = ("NDATA", "DDATA")
_SIGNED_BITS = {1: 8, 2: 16, 3: 32, 4: 64}
_ARRAYS = {22: "b", 23: "h", 24: "i", 25: "q", 26: "B", 27: "H", 28: "I", 29: "Q", 30: "f", 31: "d", 34: "q"}
_BOOLEAN_ARRAY, _STRING_ARRAY = 32, 33
_BYTES_TYPES = (17, 18)
_DATASET, _TEMPLATE = 16, 19

Alias = tuple[str, int | None]  # metric name, datatype


@dataclass(slots=True)
class _NodeTable:
    """What the BIRTHs of one edge node announced, and its accounted bytes."""

    aliases: dict[int, Alias] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)
    bytes: int = 0

    def learn(self, metric: MetricRaw) -> bool:
        """Remember a BIRTH metric's alias and datatype; False when the table is full (nothing learned)."""
        name = metric.name
        if name is None:
            return True
        cost = text_bytes(name) + ENTRY_OVERHEAD_BYTES * ((metric.alias is not None) + (metric.datatype is not None))
        if self.bytes + cost > NODE_TABLE_BYTES:
            return False
        if metric.alias is not None:
            self.aliases[metric.alias] = (name, metric.datatype)
        if metric.datatype is not None:
            self.types[name] = metric.datatype
        self.bytes += cost
        return True


def is_sparkplug_topic(topic: str) -> bool:
    """Whether the topic is in the Sparkplug B namespace (`spBv1.0/...`)."""
    return topic.startswith(NAMESPACE + "/")


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def _array(data: bytes, datatype: int) -> JsonValue:
    if datatype == _STRING_ARRAY:
        return [part.decode("utf-8", errors="replace") for part in data.split(b"\x00")[:-1]]
    if datatype == _BOOLEAN_ARRAY:
        if len(data) < 4:
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, "a BooleanArray metric is shorter than its count")
        (count,) = struct.unpack_from("<I", data)
        bits = data[4:]
        if count > len(bits) * 8:
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, "a BooleanArray metric is shorter than its count")
        return [bool(bits[i // 8] >> (7 - i % 8) & 1) for i in range(count)]
    code = _ARRAYS[datatype]
    size = struct.calcsize(code)
    if len(data) % size:
        raise DecodeError(DeadLetterReason.INVALID_MESSAGE,
                          f"an array metric of datatype {datatype} has a partial element")
    values = [v for (v,) in struct.iter_unpack("<" + code, data)]
    return [None if isinstance(v, float) and not math.isfinite(v) else v for v in values]


def metric_value(raw: RawValue, datatype: int | None, depth: int = 0) -> JsonValue | bytes:
    """What a raw metric value means under its datatype; bytes stay bytes (Bytes, File)."""
    if depth > _MAX_DEPTH:
        raise DecodeError(DeadLetterReason.INVALID_MESSAGE, "Sparkplug templates nested too deeply")
    if isinstance(raw, DataSetRaw):
        rows: list[JsonValue] = []
        for row in raw.rows:
            cells = [metric_value(cell, raw.types[i] if i < len(raw.types) else None, depth + 1)
                     for i, cell in enumerate(row)]
            rows.append({name: cell for name, cell in zip(raw.columns, cells, strict=False)
                         if not isinstance(cell, bytes)})
        return rows
    if isinstance(raw, TemplateRaw):
        members: JsonDict = {}
        for member in raw.metrics:
            value = metric_value(member.value, member.datatype, depth + 1)
            if member.name and not isinstance(value, bytes):
                members[member.name] = value
        return members
    if isinstance(raw, bool) or raw is None or isinstance(raw, str):
        return raw
    if isinstance(raw, float):
        return raw if math.isfinite(raw) else None
    if isinstance(raw, bytes):
        return _array(raw, datatype) if datatype in _ARRAYS or datatype in (_BOOLEAN_ARRAY, _STRING_ARRAY) else raw
    if datatype in _SIGNED_BITS:
        return _signed(raw, _SIGNED_BITS[datatype])
    return raw


def _json_safe(value: JsonValue | bytes) -> JsonValue:
    return None if isinstance(value, bytes) else value


class SparkplugDecoder:
    """Sparkplug B as a route decoder; owns the alias tables of the edge nodes it has heard a BIRTH from."""

    def __init__(self, route: RouteConfig, build_decoder: DecoderFactory) -> None:
        self._route = route
        self._build = build_decoder
        self._options: SparkplugOptions | None = route.sparkplug
        self._factor = confidence_factor(route)
        self._nodes: ByteLRU[tuple[str, str], _NodeTable] = ByteLRU(
            "sparkplug_nodes", ALIAS_TABLES_BYTES, lambda node, table: text_bytes(*node) + table.bytes,
            _MAX_EDGE_NODES)
        self._nested: dict[str, Decoder] = {}

    def decode(self, message: Message) -> list[Decoded]:
        """Decode one message: learn from BIRTH/DEATH, turn mapped metrics of DATA into events."""
        levels = message.topic.split("/")
        if levels[0] != NAMESPACE or len(levels) < _MIN_TOPIC_LEVELS or levels[1] == "STATE":
            if levels[0] == NAMESPACE and len(levels) > 1 and levels[1] == "STATE":
                return []  # host application state: JSON, nothing to send
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE,
                              "not a Sparkplug B topic (spBv1.0/<group>/<type>/<edge>[/<device>])")
        group, kind, edge = levels[1], levels[2], levels[3]
        device = "/".join(levels[4:]) or None
        node = (group, edge)
        if kind == "NDEATH":
            self._nodes.pop(node)
            return []
        if kind not in ("NBIRTH", "DBIRTH", *_DATA):
            return []  # DDEATH, NCMD, DCMD
        payload = parse_payload(message.payload)
        table = self._nodes.get(node)  # marks the node recently heard
        if kind == "NBIRTH" or table is None:
            table = _NodeTable()
            self._nodes.put(node, table)
        if kind in ("NBIRTH", "DBIRTH"):
            refused = sum(not table.learn(metric) for metric in payload.metrics)
            count_evictions("sparkplug_aliases", refused)
            self._nodes.resize(node)  # re-account: may forget the least recently heard nodes
            return []
        values, raw_metrics = self._resolve(node, payload.metrics, message.topic)
        return self._events(values, raw_metrics, payload.timestamp_ms, payload.seq, group, edge, device, message)

    def _resolve(self, node: tuple[str, str], metrics: tuple[MetricRaw, ...],
                 topic: str) -> tuple[dict[str, JsonValue | bytes], dict[str, MetricRaw]]:
        values: dict[str, JsonValue | bytes] = {}
        raw_metrics: dict[str, MetricRaw] = {}
        node_table = self._nodes.get(node)
        table = node_table.aliases if node_table is not None else {}
        types = node_table.types if node_table is not None else {}
        for metric in metrics:
            name, datatype = metric.name, metric.datatype
            if name is None:
                known = table.get(metric.alias) if metric.alias is not None else None
                if known is None:
                    raise DecodeError(DeadLetterReason.UNKNOWN_ALIAS,
                                      f"alias {metric.alias} on {topic[:200]} was not announced in a "
                                      "BIRTH the bridge has seen (it needs the edge node to rebirth)")
                name, datatype = known[0], datatype if datatype is not None else known[1]
            if datatype is None:
                datatype = types.get(name)
            values[name] = metric_value(metric.value, datatype)
            raw_metrics[name] = metric
        return values, raw_metrics

    def _value_of(self, spec: SparkplugMetric, values: dict[str, JsonValue | bytes]) -> JsonValue | bytes | None:
        if spec.name in values:
            return values[spec.name]
        prefix = spec.name + "/"
        folder: JsonDict = {}
        for name, value in values.items():
            if name.startswith(prefix) and not isinstance(value, bytes):
                node = folder
                *parents, leaf = name[len(prefix):].split("/")
                for part in parents:
                    child = node.setdefault(part, {})
                    if not isinstance(child, dict):
                        break
                    node = child
                else:
                    node[leaf] = value
        return folder or None

    def _decode_metric(self, spec: SparkplugMetric, value: JsonValue | bytes, message: Message) -> list[Decoded]:
        if spec.format == "generic":
            mapping = spec.generic or self._route.generic
            if mapping is None:
                raise DecodeError(DeadLetterReason.UNKNOWN_FORMAT, f"metric {spec.name!r} has no generic mapping")
            return [decode_mapped(_json_safe(value), mapping, self._factor, self._route.image_size)]
        if not isinstance(value, str):
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE,
                              f"metric {spec.name[:100]!r} must be a String holding JSON")
        decoder = self._nested.get(spec.format)
        if decoder is None:
            decoder = self._nested[spec.format] = self._build(spec.format, self._route)
        return decoder.decode(Message(message.topic, value.encode("utf-8"), message.received_at_s))

    def _events(self, values: dict[str, JsonValue | bytes], raw_metrics: dict[str, MetricRaw], timestamp_ms: int | None,
                seq: int | None, group: str, edge: str, device: str | None, message: Message) -> list[Decoded]:
        assert self._options is not None  # the route requires the section for format sparkplug
        document: JsonDict = {"group": group, "edge_node": edge, "device": device, "seq": seq,
                              "timestamp": timestamp_ms,
                              "metrics": {name: _json_safe(value) for name, value in values.items()}}
        common: JsonDict = {"sparkplugGroup": group}
        if seq is not None:
            common["sparkplugSeq"] = seq
        for name in self._options.metadata_metrics:
            value = values.get(name)
            if isinstance(value, str | int | float) and not isinstance(value, bytes):
                key = name.replace("/", "_").replace(".", "_")[:100]
                common[key] = value[:1000] if isinstance(value, str) else value
        image = b""
        if self._options.image_metric is not None:
            found = values.get(self._options.image_metric)
            if isinstance(found, bytes):
                image = found
            elif isinstance(found, str):
                common["imageUrl"] = found[:1000]
        stamp = parse_timestamp(timestamp_ms) if timestamp_ms is not None else None
        results: list[Decoded] = []
        for spec in self._options.metrics:
            value = self._value_of(spec, values)
            if value is None:
                continue
            for decoded in self._decode_metric(spec, value, message):
                decoded.device_id = decoded.device_id or edge
                decoded.stream_id = decoded.stream_id or device
                metric = raw_metrics.get(spec.name)
                own_stamp = parse_timestamp(metric.timestamp_ms) if metric and metric.timestamp_ms else None
                decoded.timestamp = decoded.timestamp or own_stamp or stamp
                decoded.metadata = {**common, "sparkplugMetric": spec.name[:1000], **decoded.metadata}
                decoded.document = document
                if image and not decoded.image:
                    decoded.image = image
                results.append(decoded)
        return results
