"""The outcome hook that keeps the delivery ledger (`storage.ledger`): proof of delivery for `mqtt-bridge verify`.

Owns: hearing `on_delivered` from the flusher (through `OutcomeHooks`) and writing what it heard to the ledger off
the flusher's thread, one write per batch: the hook only appends to a bounded in-memory list and wakes the thread;
the thread body (`run`) waits a moment for the rest of the batch, then writes everything pending in one
transaction. Never on the ack path, never blocking delivery: a full list drops the entry (counted in
`ledger_entries_dropped`), a failed write is logged and counted (`ledger_write_errors`) and its entries are given up.
The ledger is best effort: what it lacks, `verify` does not check; the data itself is never at stake.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from mqtt_bridge.model.record import Record
from mqtt_bridge.observe.hooks import OutcomeHook
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.storage.ledger import DeliveryLedger, LedgerEntry

__all__ = ["LedgerRecorder"]

log = logging.getLogger(__name__)


class LedgerRecorder(OutcomeHook):
    """Writes delivered events to the ledger from its own thread (`run`); the hook itself only queues."""

    def __init__(self, ledger: DeliveryLedger, stats: Stats, *, max_pending: int = 100_000,
                 gather_s: float = 0.05, clock: Callable[[], float] = time.time) -> None:
        self._ledger = ledger
        self._stats = stats
        self._max_pending = max_pending
        self._gather_s = gather_s  # the rest of a batch's on_delivered calls arrive within microseconds
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: list[LedgerEntry] = []
        self._wake = threading.Event()

    def on_delivered(self, record: Record) -> None:
        """The flusher delivered `record`: queue its entry (cheap; never raises on a full queue)."""
        entry = LedgerEntry.of(record, self._clock())
        with self._lock:
            if len(self._pending) >= self._max_pending:
                self._stats.add("ledger_entries_dropped")
                return
            self._pending.append(entry)
        self._wake.set()

    def write_pending(self) -> int:
        """Write everything queued in one transaction; returns how many entries were written (0 after a failure,
        which is logged and counted)."""
        with self._lock:
            entries, self._pending = self._pending, []
        if not entries:
            return 0
        try:
            self._ledger.record(entries)
        except Exception:  # the ledger must never stop the bridge: log, count, give these entries up
            log.exception("delivery ledger write failed entries=%d", len(entries))
            self._stats.add("ledger_write_errors")
            return 0
        return len(entries)

    def run(self, stop: threading.Event) -> None:
        """Thread body: write what was delivered, about once per batch, until `stop`; then write the rest."""
        while not stop.is_set():
            if not self._wake.wait(1.0):
                continue
            self._wake.clear()
            stop.wait(self._gather_s)
            self.write_pending()
        self.write_pending()
