"""Faults of the bridge process itself: SIGKILL at random points, SIGTERM mid-stream, a corrupt buffer at start,
and a second instance on the same buffer (reliability.md §5 T2, T3, T15, T18)."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.faults.checker import assert_exactly_once
from tests.faults.conftest import FaultRig
from tests.faults.ledger import valid_stream
from tests.faults.processes import RECEIVE_MAXIMUM, FaultBridge
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXIT_BUFFER = 4  # mqtt_bridge.cli.EXIT_BUFFER
BATCH = 100


def test_bridge_sigkilled_at_random_points_loses_and_duplicates_nothing(rig: FaultRig) -> None:
    """SIGKILL the bridge at random points (start-up included) many times in a row: every message arrives once."""
    broker = rig.broker()
    total, kills = rig.size(3000, 40_000), rig.size(10, 40)
    bridge = rig.bridge(broker).start()
    publisher = rig.publisher(broker, rate_per_s=rig.size(250, 400))  # the stream outlasts the kills
    publisher.start(valid_stream("kill", total, image_every=40))
    during_start_up = 0
    for _ in range(kills):
        if rig.rng.random() < 0.25:  # now and then while it starts: opening the buffer, connecting
            during_start_up += 1
            rig.pause(rig.rng.uniform(0.0, 0.4))
        else:  # mostly mid-stream: anywhere in receive, commit, ack, upload, batch, delete
            bridge.wait_subscribed()
            rig.pause(rig.rng.uniform(0.1, 1.2))
        assert bridge.kill() == -signal.SIGKILL
        bridge.start(wait=False)
    started = time.monotonic()
    bridge.wait_subscribed(timeout_s=10)
    restart_s = time.monotonic() - started
    publisher.join()
    assert publisher.wait_acked(60)
    rig.wait_stored(total, timeout_s=120)
    assert bridge.terminate() == 0, bridge.log_text()[-3000:]
    report = rig.check(publisher.ledger(), bridge)
    rig.record(f"T2 bridge SIGKILLed {kills}x at random points, restarted each time", f"{total} msgs", report,
               f"{during_start_up} of them during start-up; last restart to subscribed {restart_s:.1f} s")
    assert_exactly_once(report, max_rewrites=kills * (RECEIVE_MAXIMUM + BATCH))
    assert report.acked == total


def test_bridge_sigterm_mid_stream_exits_zero_and_acks_only_what_it_committed(rig: FaultRig) -> None:
    """SIGTERM mid-stream (a batch in flight): exit 0 within the grace period; a restart delivers the rest once."""
    broker = rig.broker()
    total, stops = rig.size(3000, 20_000), rig.size(3, 10)
    bridge = rig.bridge(broker, flush={"shutdown_grace_s": 5}).start()
    publisher = rig.publisher(broker, rate_per_s=rig.size(800, 1000))
    publisher.start(valid_stream("term", total, image_every=40))
    exit_s: list[float] = []
    kept = 0
    for index in range(stops):
        rig.pause(rig.rng.uniform(0.3, 1.0))
        if index == 0:
            rig.emulator.set_faults(delay_s=0.4)  # a slow API: the SIGTERM lands with a batch in flight
        started = time.monotonic()
        assert bridge.terminate() == 0, bridge.log_text()[-3000:]
        exit_s.append(time.monotonic() - started)
        rig.emulator.clear_faults()
        # Committed but not delivered stays in the buffer; what the broker still holds was never acked.
        kept += len(bridge.buffered())
        bridge.start()
    publisher.join()
    assert publisher.wait_acked(60)
    rig.wait_stored(total, timeout_s=120)
    assert bridge.terminate() == 0
    report = rig.check(publisher.ledger(), bridge)
    rig.record(f"T3 bridge SIGTERMed {stops}x mid-stream", f"{total} msgs", report,
               f"exit 0 in ≤ {max(exit_s):.1f} s, the batch in flight finished; {kept} committed events left "
               "in the buffer across the stops")
    assert_exactly_once(report, max_rewrites=stops * (RECEIVE_MAXIMUM + BATCH))
    assert max(exit_s) < 5 + 5 + 2, exit_s  # shutdown_grace_s + the 5 s of the shutdown deadline + start-up slack


def _corruptions(db: Path) -> dict[str, bytes]:
    data = db.read_bytes()
    page = int.from_bytes(data[16:18], "big")  # the page size, from the database header
    leaf = _leaf_page_near_the_middle(data, page)
    return {
        "truncated to half": data[: len(data) // 2],
        "header overwritten": b"this is not an SQLite file" + data[26:],
        "interior pages zeroed": data[:page] + bytes(len(data) - 2 * page) + data[-page:],
        "one page zeroed": data[:leaf] + bytes(page) + data[leaf + page:],
    }


def _leaf_page_near_the_middle(data: bytes, page: int) -> int:
    """The offset of the b-tree leaf page nearest the middle of the file.

    Zeroing it is damage that SQLite's integrity check must see. Not any page will do: zeroing the last page of a
    long value's overflow chain changes only bytes inside that value, which no SQLite check reads (this case
    picked the middle page, and failed by timeout whenever that page was one: the bridge started, as it should on
    an intact file). A leaf page starts with its type byte, 0x0A (index) or 0x0D (table); an overflow page starts
    with the next page's number, a pointer-map page with an entry type of 1 to 5.
    """
    count = len(data) // page
    for index in sorted(range(1, count), key=lambda i: abs(i - count // 2)):
        if data[index * page] in (0x0A, 0x0D):
            return index * page
    raise AssertionError("the buffer database has no b-tree leaf page")


def _exit_code_or_stacks(bridge: FaultBridge, timeout_s: float, name: str) -> int:
    """The exit code of a run that must end by itself; if it does not, SIGABRT it (faulthandler is on, so every
    thread's stack goes to its log) and fail with its output: where it hung, not just that it did."""
    try:
        return bridge.wait_exit(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(subprocess.TimeoutExpired):
            bridge.process.signal(signal.SIGABRT, 10)
        output = bridge.run_log()  # its start (what it opened) and its end (the stacks)
        shown = output if len(output) <= 10_000 else f"{output[:3000]}\n[...]\n{output[-7000:]}"
        pytest.fail(f"{name}: no exit within {timeout_s:.0f} s; its output and thread stacks:\n{shown}")


def test_bridge_refuses_a_corrupt_buffer_with_exit_4_and_keeps_the_file(rig: FaultRig,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A corrupt buffer database at start: exit 4 with a clear message, the file untouched, never an empty start."""
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")  # the bridge dumps its stacks on SIGABRT if it ever hangs here
    broker = rig.broker()
    rig.emulator.set_faults(status_always=503)
    bridge = rig.bridge(broker).start()
    total = rig.size(500, 5000)
    with rig.publisher(broker) as publisher:
        publisher.publish_all(valid_stream("corrupt", total, image_every=10))
        assert publisher.wait_acked(30)
        ledger = publisher.ledger()
    wait_until(lambda: bridge.metric("buffer_depth") == total, timeout_s=30, message="everything buffered")
    assert bridge.terminate() == 0
    db = bridge.buffer_path / "cache.db"
    # Fold the write-ahead log into the database file first: otherwise a page damaged in cache.db may still have an
    # intact newer copy in cache.db-wal, SQLite reads that one, and the "corruption" is invisible (nothing is lost,
    # but the case would test nothing). Whether the WAL was checkpointed at exit depends on timing.
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    pristine = rig.tmp_path / "pristine"
    shutil.copytree(bridge.buffer_path, pristine)
    refused: list[str] = []
    for name, corrupt in _corruptions(db).items():
        shutil.rmtree(bridge.buffer_path)
        shutil.copytree(pristine, bridge.buffer_path)
        db.write_bytes(corrupt)
        digest = hashlib.sha256(corrupt).hexdigest()
        log_before = len(bridge.log_text())
        bridge.start(wait=False)
        code = _exit_code_or_stacks(bridge, 30, name)
        output = bridge.log_text()[log_before:]
        assert code == EXIT_BUFFER, f"{name}: exit {code}\n{output[-2000:]}"
        assert "buffer unusable" in output and str(db) in output, f"{name}: no clear message:\n{output[-2000:]}"
        assert "move it aside" in output or "integrity check" in output, f"{name}: {output[-2000:]}"
        assert "mqtt connected" not in output, f"{name}: the bridge connected to the broker before refusing"
        assert hashlib.sha256(db.read_bytes()).hexdigest() == digest, f"{name}: the corrupt file was changed"
        refused.append(name)
    # The same buffer, uncorrupted, starts and delivers everything: the refusals were about the damage.
    shutil.rmtree(bridge.buffer_path)
    shutil.copytree(pristine, bridge.buffer_path)
    rig.emulator.clear_faults()
    bridge.start()
    rig.wait_stored(total)
    assert bridge.terminate() == 0
    report = rig.check(ledger, bridge)
    rig.record("T15 corrupt buffer at start: " + ", ".join(refused), f"{total} buffered msgs", report,
               f"exit 4 and file kept in {len(refused)}/{len(refused)} corruptions; the intact copy delivers all")
    assert_exactly_once(report)


def test_second_bridge_on_the_same_buffer_refuses_to_start(rig: FaultRig) -> None:
    """A second instance with the same config exits 4 before touching the broker; the first keeps delivering."""
    broker = rig.broker()
    first = rig.bridge(broker).start()
    second = rig.bridge(broker, name="second")
    second.config_path.write_text(first.config_path.read_text())  # the very same config: same buffer, same id
    second.start(wait=False)
    assert second.wait_exit(30) == EXIT_BUFFER
    assert "another bridge is using the buffer" in second.log_text()
    total = rig.size(500, 5000)
    with rig.publisher(broker) as publisher:
        publisher.publish_all(valid_stream("second", total))
        assert publisher.wait_acked(30)
        ledger = publisher.ledger()
    rig.wait_stored(total)
    assert first.returncode is None
    assert first.terminate() == 0
    connections = broker.log_text().count("as bridge-under-test")
    report = rig.check(ledger, first)
    rig.record("T18 second bridge on the same buffer", f"{total} msgs", report,
               f"exit 4; broker saw {connections} connection(s) of the client id")
    assert connections == 1, broker.log_text()[-3000:]  # no session flapping: the second never connected
    assert_exactly_once(report)
