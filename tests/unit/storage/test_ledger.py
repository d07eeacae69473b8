"""The delivery ledger: bounded, on disk, bytes only, readable by a second opener while the writer has it open."""

from __future__ import annotations

from pathlib import Path

import diskcache
import pytest

from mqtt_bridge.errors import StorageError
from mqtt_bridge.model.record import Record
from mqtt_bridge.storage.buffer import DiskBuffer
from mqtt_bridge.storage.ledger import DeliveryLedger, LedgerEntry, ledger_path


def _entry(n: int, delivered_at_s: float | None = None) -> LedgerEntry:
    return LedgerEntry(f"e{n}", "uc", "quality_check", f"2026-01-01T00:00:{n % 60:02d}.000Z",
                       float(n) if delivered_at_s is None else delivered_at_s, "r")


def test_ledger_keeps_entries_across_reopen_oldest_first(tmp_path: Path) -> None:
    """What was recorded, batch by batch, reads back in delivery order after the ledger is reopened."""
    with DeliveryLedger(tmp_path / "ledger", 100) as ledger:
        ledger.record([_entry(0), _entry(1)])
        ledger.record([_entry(2)])
    with DeliveryLedger(tmp_path / "ledger", 100) as ledger:
        assert ledger.count == 3
        ledger.record([_entry(3)])
        assert [e.event_id for e in ledger.entries()] == ["e0", "e1", "e2", "e3"]
        assert ledger.entries()[1] == _entry(1)


def test_ledger_never_holds_more_than_max_entries(tmp_path: Path) -> None:
    """Past `max_entries` the oldest writes are dropped in the same transaction; the newest are always kept."""
    with DeliveryLedger(tmp_path / "ledger", 10) as ledger:
        for start in range(0, 40, 4):
            ledger.record([_entry(n) for n in range(start, start + 4)])
            assert ledger.count <= 10
        ledger.record([_entry(n) for n in range(100, 125)])  # one write larger than the cap keeps its newest
        assert [e.event_id for e in ledger.entries()] == [f"e{n}" for n in range(115, 125)]


def test_ledger_entries_since_filters_by_delivery_time(tmp_path: Path) -> None:
    """`entries(since_s)` gives only what was delivered at or after that time."""
    with DeliveryLedger(tmp_path / "ledger", 100) as ledger:
        ledger.record([_entry(n, delivered_at_s=1000.0 + n) for n in range(5)])
        assert [e.event_id for e in ledger.entries(since_s=1003.0)] == ["e3", "e4"]


def test_ledger_is_readable_while_the_writer_has_it_open_and_stores_bytes_only(tmp_path: Path) -> None:
    """A reader (verify) opens the ledger while the bridge holds it and sees every write; values are bytes (JSON),
    never pickles."""
    with DeliveryLedger(tmp_path / "ledger", 100) as writer:
        writer.record([_entry(0)])
        with DeliveryLedger(tmp_path / "ledger", 100).open(create=False) as reader:
            writer.record([_entry(1)])
            assert [e.event_id for e in reader.entries()] == ["e0", "e1"]
    with diskcache.Cache(str(tmp_path / "ledger")) as raw:
        assert all(isinstance(raw.get(key), bytes) for key in raw.iterkeys())


def test_ledger_opened_for_reading_only_must_exist(tmp_path: Path) -> None:
    """`open(create=False)` refuses a ledger that was never written, and creates nothing."""
    with pytest.raises(StorageError, match="no delivery ledger"):
        DeliveryLedger(tmp_path / "ledger", 100).open(create=False)
    assert not (tmp_path / "ledger").exists()


def test_ledger_lives_beside_the_buffer_without_disturbing_it(tmp_path: Path) -> None:
    """The ledger's directory is inside the buffer's, and the buffer still opens, counts and reads as before."""
    with DiskBuffer(tmp_path / "b", 2**30, 1) as buffer, \
            DeliveryLedger(ledger_path(tmp_path / "b"), 100) as ledger:
        buffer.append([Record(event={"eventId": "x"}, route="r", topic="t", received_at_s=1.0)], [])
        ledger.record([LedgerEntry.of(Record(event={"eventId": "x", "useCaseId": "uc", "eventType": "custom",
                                                    "timestamp": "2026-01-01T00:00:00Z"}, route="r", topic="t",
                                             received_at_s=1.0), 5.0)])
        assert buffer.depth == 1 and ledger.count == 1
    with DiskBuffer(tmp_path / "b", 2**30, 1) as buffer:
        assert [r.event_id for r in buffer.peek(10, 2**20)] == ["x"]
    assert LedgerEntry.from_json(["x", "uc", "custom", "t", "not a time", "r"]) is None
