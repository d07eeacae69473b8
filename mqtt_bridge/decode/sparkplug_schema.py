"""The Sparkplug B protobuf schema, built at run time, and parsing of its payloads into plain values.

Owns: the `protobuf` library (no other module imports it) and the message descriptor of
`org.eclipse.tahu.protobuf.Payload` (eclipse/tahu `sparkplug_b.proto`, proto2), written here field by field from a
`FileDescriptorProto`, so that neither protoc nor generated `_pb2` code (and its runtime version pin) is needed.
`parse_payload` turns bytes into frozen dataclasses holding each metric's raw value; what the value means (its
datatype, often only announced in the BIRTH) is the decoder's business. `encode_payload` builds payloads for tests
and sample files. Must not do I/O.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import (  # type: ignore[import-untyped]  # protobuf ships no type hints
    descriptor_pb2,
    descriptor_pool,
    message_factory,
)
from google.protobuf.message import DecodeError as ProtobufDecodeError  # type: ignore[import-untyped]
from google.protobuf.message import Message as ProtobufMessage

from mqtt_bridge.errors import DeadLetterReason, DecodeError

__all__ = ["DataSetRaw", "MetricRaw", "PayloadRaw", "RawValue", "TemplateRaw", "encode_payload", "parse_payload"]

_PACKAGE = "org.eclipse.tahu.protobuf"
_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_SCALARS = {"uint32": _F.TYPE_UINT32, "uint64": _F.TYPE_UINT64, "float": _F.TYPE_FLOAT, "double": _F.TYPE_DOUBLE,
            "bool": _F.TYPE_BOOL, "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES}
# (name, number, type, label, oneof) per message; a type that is not a scalar names a message of the schema
_VALUE_ONEOF = [("int_value", "uint32"), ("long_value", "uint64"), ("float_value", "float"),
                ("double_value", "double"), ("boolean_value", "bool"), ("string_value", "string")]
_MESSAGES: dict[str, list[tuple[str, int, str, int, str | None]]] = {
    "Payload": [("timestamp", 1, "uint64", _OPTIONAL, None), ("metrics", 2, "Payload.Metric", _REPEATED, None),
                ("seq", 3, "uint64", _OPTIONAL, None), ("uuid", 4, "string", _OPTIONAL, None),
                ("body", 5, "bytes", _OPTIONAL, None)],
    "Payload.Template": [("version", 1, "string", _OPTIONAL, None),
                         ("metrics", 2, "Payload.Metric", _REPEATED, None),
                         ("template_ref", 4, "string", _OPTIONAL, None),
                         ("is_definition", 5, "bool", _OPTIONAL, None)],
    "Payload.DataSet": [("num_of_columns", 1, "uint64", _OPTIONAL, None), ("columns", 2, "string", _REPEATED, None),
                        ("types", 3, "uint32", _REPEATED, None),
                        ("rows", 4, "Payload.DataSet.Row", _REPEATED, None)],
    "Payload.DataSet.DataSetValue": [(name, number, kind, _OPTIONAL, "value")
                                     for number, (name, kind) in enumerate(_VALUE_ONEOF, start=1)],
    "Payload.DataSet.Row": [("elements", 1, "Payload.DataSet.DataSetValue", _REPEATED, None)],
    "Payload.MetaData": [("is_multi_part", 1, "bool", _OPTIONAL, None), ("content_type", 2, "string", _OPTIONAL, None),
                         ("size", 3, "uint64", _OPTIONAL, None), ("seq", 4, "uint64", _OPTIONAL, None),
                         ("file_name", 5, "string", _OPTIONAL, None), ("file_type", 6, "string", _OPTIONAL, None),
                         ("md5", 7, "string", _OPTIONAL, None), ("description", 8, "string", _OPTIONAL, None)],
    "Payload.Metric": [("name", 1, "string", _OPTIONAL, None), ("alias", 2, "uint64", _OPTIONAL, None),
                       ("timestamp", 3, "uint64", _OPTIONAL, None), ("datatype", 4, "uint32", _OPTIONAL, None),
                       ("is_historical", 5, "bool", _OPTIONAL, None), ("is_transient", 6, "bool", _OPTIONAL, None),
                       ("is_null", 7, "bool", _OPTIONAL, None),
                       ("metadata", 8, "Payload.MetaData", _OPTIONAL, None),
                       *[(name, number, kind, _OPTIONAL, "value")
                         for number, (name, kind) in enumerate(_VALUE_ONEOF, start=10)],
                       ("bytes_value", 16, "bytes", _OPTIONAL, "value"),
                       ("dataset_value", 17, "Payload.DataSet", _OPTIONAL, "value"),
                       ("template_value", 18, "Payload.Template", _OPTIONAL, "value")],
}
# Not modelled (parsed as unknown fields and ignored): Template.Parameter, PropertySet (Metric.properties = 9) and the
# extension values; a vision result does not need them.


@dataclass(frozen=True, slots=True)
class DataSetRaw:
    """A DataSet metric value: column names, their datatypes, and the rows of raw cell values."""

    columns: tuple[str, ...]
    types: tuple[int, ...]
    rows: tuple[tuple[RawValue, ...], ...]


@dataclass(frozen=True, slots=True)
class TemplateRaw:
    """A Template (UDT) metric value: its member metrics."""

    metrics: tuple[MetricRaw, ...]
    template_ref: str | None


RawValue = int | float | bool | str | bytes | DataSetRaw | TemplateRaw | None


@dataclass(frozen=True, slots=True)
class MetricRaw:
    """One metric as sent: name (BIRTH) or alias (DATA), datatype when sent, and the raw value of its oneof."""

    name: str | None
    alias: int | None
    datatype: int | None
    timestamp_ms: int | None
    value: RawValue
    content_type: str | None = None
    file_name: str | None = None


@dataclass(frozen=True, slots=True)
class PayloadRaw:
    """A Sparkplug B payload: send time (ms), sequence number and metrics."""

    timestamp_ms: int | None
    seq: int | None
    metrics: tuple[MetricRaw, ...] = field(default_factory=tuple)


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name="mqtt_bridge/sparkplug_b.proto", package=_PACKAGE,
                                               syntax="proto2")
    built: dict[str, descriptor_pb2.DescriptorProto] = {}
    for full_name in _MESSAGES:  # parents come before their nested messages in the table
        parent, _, name = full_name.rpartition(".")
        container = built[parent].nested_type if parent else proto.message_type
        built[full_name] = container.add(name=name)
    for full_name, fields in _MESSAGES.items():
        message = built[full_name]
        for name, number, kind, label, oneof in fields:
            entry = message.field.add(name=name, number=number, label=label)
            if kind in _SCALARS:
                entry.type = _SCALARS[kind]
            else:
                entry.type = _F.TYPE_MESSAGE
                entry.type_name = f".{_PACKAGE}.{kind}"
            if oneof is not None:
                if not message.oneof_decl:
                    message.oneof_decl.add(name=oneof)
                entry.oneof_index = 0
    return proto


@functools.cache
def _payload_class() -> type[ProtobufMessage]:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(_file_descriptor().SerializeToString())
    payload_class: type[ProtobufMessage] = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_PACKAGE}.Payload"))
    return payload_class


def _value(message: Any, oneof: str = "value") -> RawValue:
    which = message.WhichOneof(oneof)
    if which is None:
        return None
    value = getattr(message, which)
    if which == "dataset_value":
        return DataSetRaw(columns=tuple(_utf8(column) for column in value.columns), types=tuple(value.types),
                          rows=tuple(tuple(_value(cell) for cell in row.elements) for row in value.rows))
    if which == "template_value":
        return TemplateRaw(metrics=tuple(_metric(m) for m in value.metrics),
                           template_ref=value.template_ref if value.HasField("template_ref") else None)
    result: RawValue = value
    return result


def _utf8(text: str | bytes) -> str:
    """A proto2 string field: protobuf does not check UTF-8 there and hands invalid text back as bytes."""
    if isinstance(text, bytes):
        raise DecodeError(DeadLetterReason.INVALID_MESSAGE, "a Sparkplug name is not valid UTF-8")
    return text


def _metric(message: Any) -> MetricRaw:
    metadata = message.metadata if message.HasField("metadata") else None
    return MetricRaw(
        name=_utf8(message.name) if message.HasField("name") else None,
        alias=message.alias if message.HasField("alias") else None,
        datatype=message.datatype if message.HasField("datatype") else None,
        timestamp_ms=message.timestamp if message.HasField("timestamp") else None,
        value=None if message.is_null else _value(message),
        content_type=metadata.content_type if metadata is not None and metadata.HasField("content_type") else None,
        file_name=metadata.file_name if metadata is not None and metadata.HasField("file_name") else None,
    )


def parse_payload(data: bytes) -> PayloadRaw:
    """Parse a Sparkplug B payload. Raises DecodeError `invalid_message` when the bytes are not one."""
    message: Any = _payload_class()()
    try:
        message.ParseFromString(data)
    except (ProtobufDecodeError, RecursionError, ValueError):
        # the library's message differs between protobuf versions; the raw bytes are kept in the dead letter
        raise DecodeError(DeadLetterReason.INVALID_MESSAGE,
                          "not a Sparkplug B payload (protobuf cannot parse it)") from None
    return PayloadRaw(timestamp_ms=message.timestamp if message.HasField("timestamp") else None,
                      seq=message.seq if message.HasField("seq") else None,
                      metrics=tuple(_metric(m) for m in message.metrics))


def encode_payload(payload: dict[str, object]) -> bytes:
    """Serialise a payload given as a dict in the proto's field names (for tests and sample files)."""
    from google.protobuf import json_format  # noqa: PLC0415 - only tests and sample generation encode

    message = _payload_class()()
    json_format.ParseDict(payload, message)
    data: bytes = message.SerializeToString()
    return data
