"""The disk buffer: durable FIFO, dead letters, lock, corruption, high-water mark, no pickle."""

from __future__ import annotations

from pathlib import Path

import pytest

from mqtt_bridge.errors import BufferCorrupt, BufferLocked
from mqtt_bridge.model.record import DeadLetter, Record
from mqtt_bridge.storage.buffer import DiskBuffer


def _record(n: int, image: bytes = b"") -> Record:
    return Record(event={"eventId": f"e{n}"}, route="r", topic="t", received_at_s=float(n), image=image)


def _letter(reason: str = "invalid_json") -> DeadLetter:
    return DeadLetter(reason=reason, detail="d", topic="t", route="r", payload=b"\xff raw", received_at_s=1.0,
                      dead_at_s=2.0)


def test_buffer_peek_is_fifo_and_does_not_remove(tmp_path: Path) -> None:
    """Peek returns the oldest records in order and leaves them until deleted."""
    with DiskBuffer(tmp_path / "b", 2**30, 1) as buffer:
        buffer.append([_record(i, image=b"img" if i % 2 else b"") for i in range(5)], [])
        first = buffer.peek(3, 2**20)
        assert [r.event_id for r in first] == ["e0", "e1", "e2"]
        assert first[1].image == b"img"
        assert [r.event_id for r in buffer.peek(3, 2**20)] == ["e0", "e1", "e2"]
        buffer.complete(len(first))
        assert [r.event_id for r in buffer.peek(10, 2**20)] == ["e3", "e4"]
        assert buffer.depth == 2


def test_buffer_completion_spans_group_commits_and_survives_reopen(tmp_path: Path) -> None:
    """Records from several commits come out in order; a partly completed group resumes where it stopped."""
    with DiskBuffer(tmp_path / "b", 2**30, 1) as buffer:
        buffer.append([_record(i) for i in range(0, 4)], [])
        buffer.append([_record(i) for i in range(4, 6)], [])
        buffer.append([_record(i) for i in range(6, 10)], [])
        assert [r.event_id for r in buffer.peek(7, 2**20)] == [f"e{i}" for i in range(7)]
        buffer.complete(5)
        assert buffer.depth == 5
    with DiskBuffer(tmp_path / "b", 2**30, 1) as buffer:
        assert buffer.depth == 5
        assert [r.event_id for r in buffer.peek(100, 2**20)] == [f"e{i}" for i in range(5, 10)]
        assert [r.event_id for r in buffer.records()] == [f"e{i}" for i in range(5, 10)]
        buffer.complete(5)
        assert buffer.depth == 0
        assert buffer.peek(100, 2**20) == []
        buffer.append([_record(42)], [])
    with DiskBuffer(tmp_path / "b", 2**30, 1) as buffer:
        assert [r.event_id for r in buffer.peek(100, 2**20)] == ["e42"]


def test_buffer_survives_reopen(tmp_path: Path) -> None:
    """Committed records and dead letters are there after close and reopen."""
    with DiskBuffer(tmp_path / "b", 2**30, 1) as buffer:
        buffer.append([_record(1), _record(2)], [_letter()])
    with DiskBuffer(tmp_path / "b", 2**30, 1) as buffer:
        assert buffer.depth == 2
        assert buffer.dead_letter_count == 1
        [(_, letter)] = list(buffer.dead_letters())
        assert letter.payload == b"\xff raw"


def test_buffer_peek_respects_max_bytes_but_returns_at_least_one(tmp_path: Path) -> None:
    """max_bytes bounds a batch; a single big record still comes out alone."""
    with DiskBuffer(tmp_path / "b", 2**30, 1) as buffer:
        buffer.append([_record(i, image=b"x" * 1000) for i in range(4)], [])
        assert len(buffer.peek(100, 2500)) == 2
        assert len(buffer.peek(100, 10)) == 1


def test_buffer_completion_with_dead_letters_is_atomic(tmp_path: Path) -> None:
    """Records leave the queue in the same transaction that stores the dead letters among them."""
    with DiskBuffer(tmp_path / "b", 2**30, 1) as buffer:
        buffer.append([_record(1), _record(2)], [])
        buffer.remember_source_id("hash", "ve-img-1")
        buffer.complete(1, [_letter("api_rejected")], ["hash"])
        assert buffer.depth == 1
        assert buffer.dead_letter_count == 1
        assert [letter.reason for _, letter in buffer.dead_letters()] == ["api_rejected"]
        assert buffer.source_id("hash") is None


def test_buffer_second_instance_refuses_to_start(tmp_path: Path) -> None:
    """Two bridges on one buffer directory would duplicate and race; the second one is refused."""
    with DiskBuffer(tmp_path / "b", 2**30, 1), pytest.raises(BufferLocked):
        DiskBuffer(tmp_path / "b", 2**30, 1).open()


def test_buffer_directory_is_private(tmp_path: Path) -> None:
    """The buffer directory is created with mode 0700 (it holds payloads)."""
    with DiskBuffer(tmp_path / "b", 2**30, 1):
        assert (tmp_path / "b").stat().st_mode & 0o777 == 0o700


def test_buffer_corrupt_database_refuses_to_start(tmp_path: Path) -> None:
    """A damaged database is reported, never silently replaced by an empty one."""
    with DiskBuffer(tmp_path / "b", 2**30, 1) as buffer:
        buffer.append([_record(i) for i in range(50)], [])
    db = tmp_path / "b" / "cache.db"
    data = bytearray(db.read_bytes())
    data[0:16] = b"garbage garbage!"
    db.write_bytes(bytes(data))
    with pytest.raises(BufferCorrupt):
        DiskBuffer(tmp_path / "b", 2**30, 1).open()


def test_buffer_high_water_mark(tmp_path: Path) -> None:
    """Over max_bytes, or with less free disk than min_free_bytes, the buffer says stop acking."""
    with DiskBuffer(tmp_path / "b", 10 * 2**20, 1) as buffer:
        assert not buffer.is_over_high_water()
        buffer.append([_record(i, image=b"x" * 100_000) for i in range(120)], [])
        assert buffer.is_over_high_water()
    with DiskBuffer(tmp_path / "c", 2**40, 2**62) as buffer:
        assert buffer.is_over_high_water()


def test_buffer_refuses_to_store_or_load_pickles(tmp_path: Path) -> None:
    """Only bytes go in (CVE-2025-69872): a non-bytes value is refused by the storage layer."""
    with DiskBuffer(tmp_path / "b", 2**30, 1) as buffer:
        with pytest.raises(TypeError):
            buffer._db.set("x", {"a": 1})
        assert buffer.source_id("h") is None
        buffer.remember_source_id("h", "ve-img-1")
        assert buffer.source_id("h") == "ve-img-1"


def test_buffer_unreadable_record_is_moved_aside_and_the_rest_flows(tmp_path: Path) -> None:
    """A record that no longer decodes goes to the dead letters; the records around it are still delivered."""
    with DiskBuffer(tmp_path / "b", 2**30, 1) as buffer:
        good = [_record(i).to_bytes() for i in range(3)]
        bad = b"\x00\x00\x00\x05{bad}"
        # commit three records, then replace the middle one by bytes that no longer decode
        buffer.append([_record(i) for i in range(3)], [])
        key = next(iter(buffer._segment_keys()))
        segment = b"".join(len(r).to_bytes(4, "big") + r for r in [good[0], bad, good[2]])
        buffer._db.set(key, segment)
        first = buffer.peek(10, 2**20)
        assert [r.event_id for r in first] == ["e0"]
        assert buffer.dead_letter_count == 1
        buffer.complete(len(first))
        assert [r.event_id for r in buffer.peek(10, 2**20)] == ["e2"]
        [(_, letter)] = list(buffer.dead_letters())
        assert letter.reason == "unreadable_record" and letter.payload == bad


def test_buffer_segment_whose_count_disagrees_with_its_key_is_moved_aside(tmp_path: Path) -> None:
    """complete() counts records by the key: a segment holding a different number is quarantined, not trusted."""
    with DiskBuffer(tmp_path / "b", 2**30, 1) as buffer:
        buffer.append([_record(i) for i in range(2)], [])
        buffer.append([_record(i) for i in range(2, 4)], [])
        first_key = next(iter(buffer._segment_keys()))
        extra = _record(99).to_bytes()
        segment = b"".join(len(r).to_bytes(4, "big") + r for r in [_record(0).to_bytes(), _record(1).to_bytes(),
                                                                     extra])
        buffer._db.set(first_key, segment)
        batch = buffer.peek(10, 2**20)
        assert [r.event_id for r in batch] == ["e2", "e3"]
        assert [letter.reason for _, letter in buffer.dead_letters()] == ["unreadable_record"]
        buffer.complete(len(batch))
        assert buffer.depth == 0


def test_buffer_refuses_keys_that_are_not_bytes_str_or_int(tmp_path: Path) -> None:
    """Keys would be pickled by diskcache otherwise (issue 16 item 6): a tuple or float key is refused."""
    with DiskBuffer(tmp_path / "b", 2**30, 1) as buffer:
        for key in (("a", 1), 1.5, None):
            with pytest.raises(TypeError):
                buffer._db.set(key, b"v")


def test_buffer_disk_never_removes_or_reads_a_file_outside_its_directory(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"keep")
    with DiskBuffer(tmp_path / "b", 2**30, 1) as buffer:
        disk = buffer._db.disk
        for name in (str(outside), "../outside.txt", "x/../../outside.txt"):
            disk.remove(name)
            with pytest.raises(BufferCorrupt):
                disk.fetch(2, name, None, False)
        with pytest.raises(BufferCorrupt):
            disk.get(b"\x80\x04K\x01.", False)  # a pickled key row: refused, not loaded
    assert outside.read_bytes() == b"keep"
