"""The byte layout of one raw log entry: an MQTT message as the broker handed it over (design §3).

Owns: the keys of a segment and of its progress, `RawMessage` (topic, payload, QoS, retain, receive time and the
MQTT 5 properties that matter) and its bytes, and `RawEntry`, an unfinished entry's place in the log. The log
itself (segments, what is finished, the processor's cursor) is `storage.raw_log`'s.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["DONE_PREFIX", "PREFIX", "PREFIX_END", "RawEntry", "RawMessage", "done_key", "parse_key", "segment_key",
           "seq_floor_key", "seq_of"]

# the keys of the raw log's rows: `raw:<seq, 16 digits>:<entry count>:<receive time, ms>` for a segment,
# `rawdone:<seq>` for a segment's progress
PREFIX = "raw:"
PREFIX_END = "raw;"  # the next character after ':': every segment key sorts in [PREFIX, PREFIX_END)
DONE_PREFIX = "rawdone:"
_VERSION = 1
# version, qos, flags (bit 0: retain), receive time (s), topic length, properties length
_HEAD = struct.Struct(">BBBdHI")


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One MQTT message as received: what the processor needs to redo everything after it from the log.

    `properties` is the JSON text of the MQTT 5 properties that matter (content type, payload format indicator,
    user properties), b"" when the message had none. The topic stays bytes: it may not be UTF-8.
    """

    topic: bytes
    payload: bytes
    qos: int
    retain: bool
    received_at_s: float
    properties: bytes = b""

    def pieces(self) -> tuple[bytes, bytes, bytes, bytes]:
        """The entry's bytes in pieces: a fixed header, the topic, the properties, then the payload as it came."""
        head = _HEAD.pack(_VERSION, self.qos, int(self.retain), self.received_at_s, len(self.topic),
                          len(self.properties))
        return head, self.topic, self.properties, self.payload

    def to_bytes(self) -> bytes:
        """The entry's bytes (`pieces`, joined)."""
        return b"".join(self.pieces())

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> RawMessage:
        """Inverse of `to_bytes` (from a memoryview too: each field is copied once). Raises ValueError on bytes
        that are not an entry."""
        if len(data) < _HEAD.size:
            raise ValueError("raw entry too short")
        version, qos, flags, received_at_s, topic_len, props_len = _HEAD.unpack_from(data)
        if version != _VERSION:
            raise ValueError(f"unknown raw entry version {version}")
        start = _HEAD.size
        if start + topic_len + props_len > len(data):
            raise ValueError("truncated raw entry")
        topic = bytes(data[start:start + topic_len])
        properties = bytes(data[start + topic_len:start + topic_len + props_len])
        return cls(topic, bytes(data[start + topic_len + props_len:]), qos, bool(flags & 1), received_at_s,
                   properties)


@dataclass(frozen=True, slots=True)
class RawEntry:
    """One unfinished entry handed to the processor: its place in the log and its message."""

    seq: int
    index: int
    message: RawMessage


def seq_floor_key(seq: int) -> str:
    """The text that sorts just before the key of segment `seq` (and after those of every lower seq)."""
    return f"{PREFIX}{seq:016d}"


def segment_key(seq: int, count: int, received_at_s: float) -> str:
    """The key of a segment: its sequence number, entry count and first receive time."""
    return f"{seq_floor_key(seq)}:{count}:{int(received_at_s * 1000)}"


def parse_key(key: str) -> tuple[int, int, float] | None:
    """(seq, entry count, receive time) of a segment key; None for a key that is not one."""
    try:
        seq_text, count_text, ms_text = key[len(PREFIX):].split(":")
        return int(seq_text), int(count_text), int(ms_text) / 1000
    except ValueError:
        return None


def seq_of(key: object) -> int:
    """The sequence number of a segment key; -1 for anything else."""
    parsed = parse_key(key) if isinstance(key, str) else None
    return parsed[0] if parsed is not None else -1


def done_key(seq: int) -> str:
    """The key of a partly finished segment's progress."""
    return f"{DONE_PREFIX}{seq:016d}"
