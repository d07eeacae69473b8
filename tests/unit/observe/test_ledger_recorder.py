"""The ledger recorder: hears on_delivered, writes the ledger from its own thread about once per batch."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from mqtt_bridge.model.record import Record
from mqtt_bridge.observe.hooks import OutcomeHooks
from mqtt_bridge.observe.ledger_recorder import LedgerRecorder
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.storage.ledger import DeliveryLedger, LedgerEntry
from tests.helpers import wait_until


def _record(n: int) -> Record:
    return Record(event={"eventId": f"e{n}", "useCaseId": "uc", "eventType": "custom",
                         "timestamp": "2026-01-01T00:00:00.000Z"}, route="r", topic="t", received_at_s=1.0)


class _CountingLedger(DeliveryLedger):
    """A real ledger that counts its writes."""

    writes = 0

    def record(self, entries: Sequence[LedgerEntry]) -> None:
        self.writes += 1
        super().record(entries)


def test_ledger_recorder_writes_a_batch_of_deliveries_in_one_write(tmp_path: Path) -> None:
    """A hundred on_delivered calls of one batch become one ledger write, off the caller's thread; stopping writes
    what is left."""
    ledger = _CountingLedger(tmp_path / "ledger", 1000)
    ledger.open()
    recorder = LedgerRecorder(ledger, Stats(), clock=lambda: 42.0)
    stop = threading.Event()
    thread = threading.Thread(target=recorder.run, args=(stop,), name="test-ledger")
    thread.start()
    try:
        hooks = OutcomeHooks([recorder])
        for n in range(100):
            hooks.on_delivered(_record(n))
        wait_until(lambda: ledger.count == 100, message="batch written")
        assert ledger.writes == 1
        recorder.on_delivered(_record(100))
    finally:
        stop.set()
        thread.join(5)
    entries = ledger.entries()
    assert len(entries) == 101 and entries[0] == LedgerEntry("e0", "uc", "custom", "2026-01-01T00:00:00.000Z",
                                                             42.0, "r")
    ledger.close()


def test_ledger_recorder_drops_and_counts_when_full_and_survives_a_failed_write(tmp_path: Path) -> None:
    """Past `max_pending` an entry is dropped and counted; a write that fails is logged and counted, never raised."""
    stats = Stats()
    ledger = DeliveryLedger(tmp_path / "ledger", 1000).open()
    recorder = LedgerRecorder(ledger, stats, max_pending=2)
    for n in range(3):
        recorder.on_delivered(_record(n))
    assert stats.count("ledger_entries_dropped") == 1
    ledger.close()  # a closed ledger refuses the write
    assert recorder.write_pending() == 0
    assert stats.count("ledger_write_errors") == 1
