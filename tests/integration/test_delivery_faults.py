"""Delivery under faults: kill -9 and SIGTERM of the bridge process, API outages, rejections and resets."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from mqtt_bridge.emulator import Emulator
from mqtt_bridge.events import DeadLetter
from tests.helpers import (
    BridgeFactory,
    BridgeProcess,
    MosquittoBroker,
    PahoClient,
    bridge_config,
    detection_message,
    events_by_seq,
    wait_until,
)

pytestmark = pytest.mark.integration


def _topic(seq: int) -> str:
    return f"t/factory/L{seq % 2}/cam{seq % 3}/detections"


def _publish_range(broker: MosquittoBroker, first: int, last: int, client_id: str = "fault-publisher") -> None:
    with PahoClient(broker, client_id=client_id).connect() as publisher:
        publisher.publish_many([(_topic(seq), detection_message(seq, with_image=seq % 25 == 0))
                                for seq in range(first, last)], timeout_s=180)


def _assert_exactly_once(emulator: Emulator, total: int) -> None:
    grouped = events_by_seq(emulator.events())
    missing = sorted(set(range(total)) - set(grouped))
    duplicated = sorted(seq for seq, events in grouped.items() if len(events) > 1)
    assert missing == [], f"{len(missing)} lost, e.g. {missing[:10]}"
    assert duplicated == [], f"{len(duplicated)} duplicated, e.g. {duplicated[:10]}"


def _write_config(tmp_path: Path, broker: MosquittoBroker, emulator: Emulator) -> Path:
    raw = bridge_config(broker, emulator.url, tmp_path / "buffer", "5")
    raw["mqtt"] = {**raw["mqtt"], "client_id": "bridge-under-test"}  # type: ignore[dict-item]
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_bridge_killed_mid_stream_loses_and_duplicates_nothing(mosquitto: MosquittoBroker, emulator: Emulator,
                                                               tmp_path: Path) -> None:
    """SIGKILL the bridge process several times while messages stream in; every message arrives exactly once."""
    config_path = _write_config(tmp_path, mosquitto, emulator)
    bridge = BridgeProcess(config_path, tmp_path / "bridge.log").start()
    wait_until(lambda: "bridge started" in bridge.log_text(), timeout_s=20, message="bridge started")
    bridge.wait_subscribed()
    total = 4000
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            _publish_range(mosquitto, 0, total)
        except BaseException as exc:
            errors.append(exc)

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        for kill in range(3):
            target = (kill + 1) * total // 6
            wait_until(lambda: len(emulator.events()) > target, timeout_s=60,  # noqa: B023 - used at once
                       message="progress before the next kill")
            assert bridge.signal(signal.SIGKILL) == -signal.SIGKILL
            bridge.start()
        publisher.join(180)
        assert errors == []
        wait_until(lambda: len(events_by_seq(emulator.events())) >= total, timeout_s=120,
                   message=f"all {total} events delivered")
        time.sleep(0.5)
        _assert_exactly_once(emulator, total)
        assert bridge.signal(signal.SIGTERM) == 0, bridge.log_text()[-3000:]
    finally:
        publisher.join(5)
        bridge.stop()


def test_bridge_sigterm_drains_and_exits_zero(mosquitto: MosquittoBroker, emulator: Emulator,
                                             tmp_path: Path) -> None:
    """SIGTERM mid-stream: exit 0, nothing lost; a restart delivers whatever was still queued."""
    config_path = _write_config(tmp_path, mosquitto, emulator)
    bridge = BridgeProcess(config_path, tmp_path / "bridge.log").start()
    wait_until(lambda: "bridge started" in bridge.log_text(), timeout_s=20, message="bridge started")
    bridge.wait_subscribed()
    total = 1500
    try:
        _publish_range(mosquitto, 0, total // 2)
        wait_until(lambda: len(emulator.events()) > 100, timeout_s=30, message="first deliveries")
        assert bridge.signal(signal.SIGTERM) == 0, bridge.log_text()[-3000:]
        _publish_range(mosquitto, total // 2, total)
        bridge.start()
        wait_until(lambda: len(events_by_seq(emulator.events())) >= total, timeout_s=60,
                   message="everything delivered after restart")
        _assert_exactly_once(emulator, total)
    finally:
        bridge.stop()


def test_api_outage_keeps_everything_and_delivers_afterwards(mosquitto: MosquittoBroker, emulator: Emulator,
                                                             bridge_factory: BridgeFactory) -> None:
    """503 for a while: the bridge keeps acking into its buffer; once the API is back, everything arrives."""
    emulator.set_faults(status_always=503)
    service = bridge_factory(mosquitto, emulator)
    total = 1500
    _publish_range(mosquitto, 0, total)
    wait_until(lambda: service.buffer.depth == total, timeout_s=30, message="everything buffered")
    assert emulator.events() == []
    assert not service.state().api_ready or service.stats.count("api_retries", "503") > 0
    assert service.stats.count("api_retries", "503") >= 1
    emulator.clear_faults()
    wait_until(lambda: len(emulator.events()) >= total, timeout_s=60, message="backlog drained")
    _assert_exactly_once(emulator, total)
    assert service.buffer.dead_letter_count == 0


def test_wrong_api_key_keeps_data_until_fixed(mosquitto: MosquittoBroker, emulator: Emulator,
                                              bridge_factory: BridgeFactory) -> None:
    """401 marks the bridge not ready and keeps every event; nothing is dead-lettered."""
    emulator.set_faults(status_always=401)
    service = bridge_factory(mosquitto, emulator)
    _publish_range(mosquitto, 0, 200)
    wait_until(lambda: not service.state().api_ready, timeout_s=30, message="bridge reports the key problem")
    # the broker acked the publisher, not yet necessarily handed everything to the bridge: wait for the commit
    wait_until(lambda: service.buffer.depth == 200, timeout_s=15, message="all 200 kept in the buffer")
    assert not service.state().is_ready
    emulator.clear_faults()
    wait_until(lambda: len(emulator.events()) >= 200, timeout_s=30, message="delivered after the fix")
    _assert_exactly_once(emulator, 200)
    assert service.buffer.dead_letter_count == 0
    wait_until(lambda: service.state().api_ready, timeout_s=5, message="ready again")


def test_rejected_events_are_dead_lettered_and_the_rest_delivered(mosquitto: MosquittoBroker, emulator: Emulator,
                                                                  bridge_factory: BridgeFactory) -> None:
    """A 400 on a batch is narrowed to the offending events; exactly those are dead-lettered with the answer."""
    service = bridge_factory(mosquitto, emulator)
    wait_until(lambda: service.state().mqtt_connected, timeout_s=10, message="connected")
    emulator.set_faults(status_always=503)
    _publish_range(mosquitto, 0, 300)
    wait_until(lambda: service.buffer.depth == 300, timeout_s=30, message="buffered")
    bad = {record.event_id for record in service.buffer.peek(100, 2**30)[10:13]}
    emulator.set_faults(fail_event_ids=bad)
    wait_until(lambda: len(emulator.events()) >= 297, timeout_s=30, message="good events delivered")
    wait_until(lambda: service.buffer.depth == 0, timeout_s=10, message="queue empty")
    letters: list[DeadLetter] = [letter for _, letter in service.buffer.dead_letters()]
    assert {letter.event_id for letter in letters} == bad
    assert all(letter.reason == "api_rejected" and letter.api_status == 400 for letter in letters)
    assert all("rejected by fault injection" in letter.api_body for letter in letters)
    assert {e["eventId"] for e in emulator.events()}.isdisjoint(bad)


def test_connection_reset_after_commit_does_not_duplicate(mosquitto: MosquittoBroker, emulator: Emulator,
                                                          bridge_factory: BridgeFactory) -> None:
    """The API stores a batch then resets the connection: the retry overwrites instead of duplicating."""
    emulator.set_faults(reset_after_commit=3)
    bridge_factory(mosquitto, emulator)
    _publish_range(mosquitto, 0, 500)
    wait_until(lambda: len(events_by_seq(emulator.events())) >= 500, timeout_s=30, message="delivered")
    _assert_exactly_once(emulator, 500)
    assert max(emulator.write_counts().values()) >= 2, "the fault was never exercised"


def test_retry_after_is_honoured(mosquitto: MosquittoBroker, emulator: Emulator,
                                 bridge_factory: BridgeFactory) -> None:
    """After a 429 with Retry-After, no request comes before it elapses."""
    emulator.set_faults(statuses=[429], retry_after_s=1.5)
    bridge_factory(mosquitto, emulator)
    _publish_range(mosquitto, 0, 20)
    wait_until(lambda: len(emulator.events()) >= 20, timeout_s=30, message="delivered")
    writes = [r for r in emulator.requests_log() if r.method == "POST" and r.path.startswith("/vision-events")]
    refused = next(i for i, r in enumerate(writes) if r.status == 429)
    assert writes[refused + 1].at_s - writes[refused].at_s >= 1.5
