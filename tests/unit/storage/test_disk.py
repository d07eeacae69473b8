"""The integrity check before the buffer opens: one clear line naming the file, read-only, bounded in time."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mqtt_bridge.errors import BufferCorrupt, StorageError
from mqtt_bridge.model.record import Record
from mqtt_bridge.storage.buffer import DiskBuffer
from mqtt_bridge.storage.disk import quick_check


def _buffer_file(tmp_path: Path) -> Path:
    """A closed buffer whose records are long enough to need overflow pages."""
    with DiskBuffer(tmp_path / "b", 2**30, 1) as buffer:
        for group in range(6):
            buffer.append([Record(event={"eventId": f"e{group}-{n}"}, route="r", topic="t", received_at_s=1.0,
                                  image=bytes([n]) * 3000) for n in range(8)], [])
    return tmp_path / "b" / "cache.db"


_PageTest = Callable[[bytes, int], bool]


def _zero_page(db: Path, is_wanted: _PageTest) -> bytes:
    """Zero the first page (after the header page) for which `is_wanted(page bytes, page count)` holds."""
    data = db.read_bytes()
    size = int.from_bytes(data[16:18], "big")
    count = len(data) // size
    for offset in range(size, len(data), size):
        if is_wanted(data[offset:offset + size], count):
            damaged = data[:offset] + bytes(size) + data[offset + size:]
            db.write_bytes(damaged)
            return damaged
    raise AssertionError("no such page in the test database")


def _is_leaf(page: bytes, count: int) -> bool:
    return page[0] == 0x0D  # a table b-tree leaf: its cells are gone, SQLite cannot read the file


def _is_overflow_with_a_next_page(page: bytes, count: int) -> bool:
    # an overflow page inside a chain: it starts with the next page's number (a pointer-map page starts with 1..5)
    return page[0] == 0 and 2 <= int.from_bytes(page[:4], "big") <= count


@contextlib.contextmanager
def _locked_by_another_process(db: Path) -> Iterator[None]:
    """Hold an exclusive lock on `db` the way an sqlite3 shell with an open write transaction would."""
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("PRAGMA locking_mode=EXCLUSIVE")
        con.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        con.execute("ROLLBACK")
        con.close()


@pytest.mark.parametrize("damage", [_is_leaf, _is_overflow_with_a_next_page], ids=["leaf page", "overflow page"])
def test_quick_check_refuses_a_damaged_page_in_one_line_naming_the_file(tmp_path: Path, damage: _PageTest) -> None:
    """A zeroed page is refused with one short line that names the file and says what to do; the file is kept."""
    db = _buffer_file(tmp_path)
    damaged = _zero_page(db, damage)
    with pytest.raises(BufferCorrupt) as caught:
        quick_check(db)
    message = str(caught.value)
    assert str(db) in message and "move it aside" in message, message
    assert "\n" not in message and len(message) < 600, message
    assert hashlib.sha256(db.read_bytes()).digest() == hashlib.sha256(damaged).digest()


def test_quick_check_names_the_problems_sqlite_found(tmp_path: Path) -> None:
    """A broken overflow chain is reported with SQLite's own finding and the number of problems."""
    db = _buffer_file(tmp_path)
    _zero_page(db, _is_overflow_with_a_next_page)
    with pytest.raises(BufferCorrupt, match=r"failed its integrity check \(\d+ problem\(s\), first: .*page"):
        quick_check(db)


def test_quick_check_says_locked_not_corrupt_and_gives_up_in_bounded_time(tmp_path: Path) -> None:
    """A file another process keeps locked is refused after the busy timeout as locked (never as corrupt)."""
    db = _buffer_file(tmp_path)
    with _locked_by_another_process(db):
        started = time.monotonic()
        with pytest.raises(StorageError) as caught:
            quick_check(db, busy_timeout_s=0.3)
        waited_s = time.monotonic() - started
    assert not isinstance(caught.value, BufferCorrupt)
    assert "locked by another process" in str(caught.value) and str(db) in str(caught.value)
    assert 0.3 <= waited_s < 5.0, waited_s
    quick_check(db)  # once the lock is gone, the intact file passes


def test_buffer_open_on_a_locked_file_fails_within_the_check_timeout(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening the buffer never waits on a foreign lock longer than the integrity check's busy timeout."""
    db = _buffer_file(tmp_path)
    monkeypatch.setattr("mqtt_bridge.storage.disk.CHECK_BUSY_TIMEOUT_S", 0.3)
    with _locked_by_another_process(db):
        started = time.monotonic()
        with pytest.raises(StorageError, match="locked by another process"):
            DiskBuffer(tmp_path / "b", 2**30, 1).open()
        assert time.monotonic() - started < 5.0
