"""The byte format of one queue segment and of its key. Pure: no I/O, no diskcache.

A segment is the records of one group commit as one value: `4-byte big-endian length | record bytes`, repeated. Its
key is the integer `seq << 16 | record count`, so keys sort in arrival order and the queue's depth can be counted
from the keys alone. A segment holds at most 65,535 records and starts a new one past about 8 MiB.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import TypeVar

from mqtt_bridge.model.record import Record

__all__ = ["COUNT_BITS", "MAX_RECORDS", "frame", "frame_pieces", "group", "key_count", "record_at", "split",
           "split_records"]

_Bytes = TypeVar("_Bytes", bytes, memoryview)

COUNT_BITS = 16
MAX_RECORDS: int = 2**COUNT_BITS - 1
_MAX_BYTES = 8 * 2**20
_LENGTH = struct.Struct(">I")


def key_count(key: int) -> int:
    """How many records the segment under `key` holds (by its key)."""
    return key & MAX_RECORDS


def group(records: list[Record]) -> list[tuple[int, bytes]]:
    """The segments that `records` make, in order: (record count, bytes to store) each."""
    segments: list[list[bytes]] = []
    size = 0
    for record in records:
        data = record.to_bytes()
        if not segments or len(segments[-1]) >= MAX_RECORDS or size + len(data) > _MAX_BYTES:
            segments.append([])
            size = 0
        segments[-1].append(_LENGTH.pack(len(data)) + data)
        size += len(data)
    return [(len(chunk), b"".join(chunk)) for chunk in segments]


def frame(raw: list[bytes]) -> bytes:
    """One segment from the bytes of its records."""
    return b"".join(_LENGTH.pack(len(r)) + r for r in raw)


def frame_pieces(records: Iterable[Sequence[bytes]]) -> bytes:
    """One segment from records given as pieces each, joined once (a record's pieces are never copied together
    first: for big payloads that halves what a commit holds in memory)."""
    parts: list[bytes] = []
    for pieces in records:
        parts.append(_LENGTH.pack(sum(len(piece) for piece in pieces)))
        parts.extend(pieces)
    return b"".join(parts)


def split(value: _Bytes) -> list[_Bytes]:
    """Cut one segment into the bytes of its length-prefixed records (memoryview slices of a memoryview: nothing
    is copied). Raises ValueError or struct.error."""
    out = []
    offset = 0
    while offset < len(value):
        (length,) = _LENGTH.unpack_from(value, offset)
        offset += _LENGTH.size
        if offset + length > len(value):
            raise ValueError("truncated record in segment")
        out.append(value[offset:offset + length])
        offset += length
    return out


def split_records(value: bytes) -> list[Record]:
    """Decode the length-prefixed records of one segment."""
    return [Record.from_bytes(data) for data in split(value)]


def record_at(value: bytes, index: int) -> bytes:
    """The bytes of the `index`-th record of a segment, skipping the others without copying them. Raises
    struct.error past the end."""
    offset = 0
    for _ in range(index):
        offset += _LENGTH.size + _LENGTH.unpack_from(value, offset)[0]
    (length,) = _LENGTH.unpack_from(value, offset)
    return value[offset + _LENGTH.size:offset + _LENGTH.size + length]
