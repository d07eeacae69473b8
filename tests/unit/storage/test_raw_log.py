"""The raw log on the real buffer database: raw messages kept as bytes until the processor finishes them, finished
entries deleted in the same transaction as what they became, progress kept across a restart, bad rows dead-lettered."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqtt_bridge.model.record import Record
from mqtt_bridge.storage.buffer import DiskBuffer
from mqtt_bridge.storage.raw_log import RawMessage
from mqtt_bridge.storage.segments import frame


def _message(seq: int, *, topic: bytes = b"f/L1/cam1/detections") -> RawMessage:
    return RawMessage(topic, b'{"seq": %d}' % seq, 1, False, 1_700_000_000.0 + seq)


def _record(seq: int) -> Record:
    return Record({"eventId": f"e{seq}"}, "cams", "f/L1/cam1/detections", 1.0)


@pytest.fixture
def buffer(tmp_path: Path) -> Iterator[DiskBuffer]:
    with DiskBuffer(tmp_path / "buffer", 2**30, 1) as opened:
        yield opened


def _reopen(buffer: DiskBuffer) -> None:
    buffer.close()
    buffer.open()


def test_raw_message_round_trips_every_field_as_bytes() -> None:
    """Topic (even non-UTF-8), payload, QoS, retain, receive time and properties come back exactly."""
    message = RawMessage(b"f/\xff/x", b"\x00\x01payload", 1, True, 1_700_000_123.456, b'{"ContentType":"a"}')
    assert RawMessage.from_bytes(message.to_bytes()) == message
    with pytest.raises(ValueError, match="version"):
        RawMessage.from_bytes(b"\x09" + message.to_bytes()[1:])
    with pytest.raises(ValueError, match="truncated"):
        RawMessage.from_bytes(message.to_bytes()[:20])


def test_raw_log_append_survives_a_reopen_in_order(buffer: DiskBuffer) -> None:
    """Two group commits are two segments; after a reopen every entry is there, oldest first, for the processor."""
    buffer.raw.append([_message(1), _message(2)])
    buffer.raw.append([_message(3)])
    _reopen(buffer)
    assert buffer.raw.depth == 3 and buffer.raw.untaken == 2
    assert buffer.raw.oldest_received_at_s() == pytest.approx(1_700_000_001.0)
    taken = buffer.raw.take() + buffer.raw.take()
    assert [entry.message for entry in taken] == [_message(1), _message(2), _message(3)]
    assert buffer.raw.take() == [] and buffer.raw.in_flight[0] == 3
    assert buffer.depth == 0  # raw entries are not events


def test_raw_log_finished_entries_go_with_the_records_in_one_commit(buffer: DiskBuffer) -> None:
    """Entries marked finished are deleted by the buffer commit that inserts their records, and only then."""
    buffer.raw.append([_message(1), _message(2)])
    entries = buffer.raw.take()
    for entry in entries:
        buffer.raw.finish(entry.seq, entry.index)
    assert buffer.raw.depth == 2 and buffer.raw.in_flight == (0, 0)
    buffer.append([_record(1), _record(2)], [], finish_raw=True)
    assert buffer.raw.depth == 0 and buffer.depth == 2
    _reopen(buffer)
    assert buffer.raw.depth == 0 and buffer.raw.take() == [] and buffer.depth == 2


def test_raw_log_commit_without_finish_raw_leaves_marked_entries(buffer: DiskBuffer) -> None:
    """A plain append (the flusher's or a replay's) does not delete raw entries marked finished."""
    buffer.raw.append([_message(1)])
    [entry] = buffer.raw.take()
    buffer.raw.finish(entry.seq, entry.index)
    buffer.append([_record(1)], [])
    assert buffer.raw.depth == 1 and buffer.raw.has_finished


def test_raw_log_partly_finished_segment_keeps_its_progress_across_a_reopen(buffer: DiskBuffer) -> None:
    """A segment with one entry still waiting keeps only that entry after a restart."""
    buffer.raw.append([_message(1), _message(2), _message(3)])
    first, _, third = buffer.raw.take()
    buffer.raw.finish(first.seq, first.index)
    buffer.raw.finish(third.seq, third.index)
    buffer.append([_record(1), _record(3)], [], finish_raw=True)
    assert buffer.raw.depth == 1
    _reopen(buffer)
    assert buffer.raw.depth == 1
    [left] = buffer.raw.take()
    assert left.message == _message(2)
    buffer.raw.finish(left.seq, left.index)
    buffer.append([_record(2)], [], finish_raw=True)
    _reopen(buffer)
    assert buffer.raw.depth == 0 and list(buffer.raw.messages()) == []


def test_raw_log_finishing_twice_counts_once(buffer: DiskBuffer) -> None:
    """A second finish of the same entry (a retried commit acks again) changes nothing."""
    buffer.raw.append([_message(1)])
    [entry] = buffer.raw.take()
    assert buffer.raw.finish(entry.seq, entry.index)
    assert not buffer.raw.finish(entry.seq, entry.index)
    buffer.append([], [], finish_raw=True)
    assert buffer.raw.depth == 0 and not buffer.raw.finish(entry.seq, entry.index)


def test_raw_log_unreadable_segment_becomes_a_dead_letter_with_its_bytes(buffer: DiskBuffer) -> None:
    """A segment whose bytes do not split is moved to the dead letters, whole, and the log goes on."""
    buffer.raw.append([_message(1)])
    [key] = [k for k in buffer._db.iterkeys() if isinstance(k, str) and k.startswith("raw:")]
    buffer._db.set(key, b"\x00\x00\x00\xffshort", retry=True)
    buffer.raw.append([_message(2)])
    _reopen(buffer)
    [entry] = buffer.raw.take()
    assert entry.message == _message(2)
    [(_, letter)] = list(buffer.dead_letters())
    assert letter.reason == "unreadable_record" and letter.payload == b"\x00\x00\x00\xffshort"
    assert buffer.raw.depth == 1


def test_raw_log_unreadable_entry_is_dead_lettered_and_the_others_processed(buffer: DiskBuffer) -> None:
    """One entry that is not a raw message goes to the dead letters; the rest of its segment is taken."""
    buffer.raw.append([_message(1), _message(2)])
    [key] = [k for k in buffer._db.iterkeys() if isinstance(k, str) and k.startswith("raw:")]
    buffer._db.set(key, frame([_message(1).to_bytes(), b"\x07junk"]), retry=True)
    _reopen(buffer)
    [entry] = buffer.raw.take()
    assert entry.message == _message(1)
    [(_, letter)] = list(buffer.dead_letters())
    assert letter.payload == b"\x07junk" and buffer.raw.depth == 1


def test_raw_log_key_that_does_not_parse_is_dead_lettered_on_open(buffer: DiskBuffer) -> None:
    """A `raw:` key the log did not write (no seq/count/time) is kept as a dead letter, not ignored."""
    buffer._db.set("raw:nonsense", b"bytes", retry=True)
    _reopen(buffer)
    [(_, letter)] = list(buffer.dead_letters())
    assert letter.payload == b"bytes" and buffer.raw.depth == 0


def test_raw_log_buffer_without_raw_rows_opens_empty(tmp_path: Path) -> None:
    """A buffer written before the raw log existed (events and dead letters only) opens with an empty log, and
    raw rows never show up among the buffer's records."""
    with DiskBuffer(tmp_path / "b", 2**30, 1) as old:
        old.append([_record(1)], [])
    with DiskBuffer(tmp_path / "b", 2**30, 1) as buffer:
        assert buffer.raw.depth == 0 and buffer.raw.oldest_received_at_s() is None and buffer.depth == 1
        buffer.raw.append([_message(1)])
        assert [r.event_id for r in buffer.records()] == ["e1"]
        assert [r.event_id for r in buffer.peek(10, 2**20)] == ["e1"]


def test_raw_log_oldest_age_comes_from_the_oldest_unfinished_segment(buffer: DiskBuffer) -> None:
    """The oldest receive time is the first segment still in the log; it moves on once that one is finished."""
    now = time.time()
    buffer.raw.append([RawMessage(b"t", b"1", 1, False, now - 60)])
    buffer.raw.append([RawMessage(b"t", b"2", 1, False, now - 5)])
    assert buffer.raw.oldest_received_at_s() == pytest.approx(now - 60, abs=0.01)
    [entry] = buffer.raw.take()
    buffer.raw.finish(entry.seq, entry.index)
    buffer.append([], [], finish_raw=True)
    assert buffer.raw.oldest_received_at_s() == pytest.approx(now - 5, abs=0.01)


def test_raw_log_progress_without_its_segment_is_dropped_on_open(buffer: DiskBuffer) -> None:
    """A `rawdone:` row whose segment is not there is removed on open; the log stays empty."""
    buffer._db.set("rawdone:0000000000000007", b"\x01\x00", retry=True)
    _reopen(buffer)
    assert buffer.raw.depth == 0 and "rawdone:0000000000000007" not in buffer._db
