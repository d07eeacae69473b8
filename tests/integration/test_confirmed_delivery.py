"""Against the emulator over real HTTP (issue 12): only what the batch answer confirmed is delivered, and a 402
billing stop keeps everything, reports not ready with the API's message, and delivers it all once lifted."""

from __future__ import annotations

import io

import pytest
import requests

from mqtt_bridge.cli.status import status
from mqtt_bridge.devtools.emulator.server import Emulator
from mqtt_bridge.service import Service
from tests.helpers import (
    BridgeFactory,
    MosquittoBroker,
    PahoClient,
    detection_message,
    events_by_seq,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.integration

TOPIC = "t/factory/L1/cam1/detections"


def _publish(broker: MosquittoBroker, count: int, client_id: str) -> None:
    with PahoClient(broker, client_id=client_id).connect() as publisher:
        publisher.publish_many([(TOPIC, detection_message(seq)) for seq in range(count)])


def _batch_statuses(emulator: Emulator) -> list[int]:
    return [record.status for record in emulator.requests_log() if record.path == "/vision-events/batch"]


def _subscribed(service: Service) -> None:
    wait_until(lambda: service.state().mqtt_subscribed, timeout_s=10, message="bridge subscribed")


def test_confirmed_delivery_98_of_100_confirmed_then_the_2_resent_and_delivered(
        mosquitto: MosquittoBroker, emulator: Emulator, bridge_factory: BridgeFactory) -> None:
    """A batch of 100 whose answer confirms 98: the 98 are delivered, the 2 left out are re-sent alone and
    delivered; 100 events, each stored once, 0 dead letters, 0 lost."""
    # a long max_wait_s makes the 100 messages one batch (it fires at max_events)
    service = bridge_factory(mosquitto, emulator, flush={"max_wait_s": 30, "max_events": 100})
    _subscribed(service)
    emulator.set_faults(partial=98, partial_once=True)
    _publish(mosquitto, 100, "confirm-publisher")
    wait_until(lambda: service.stats.count("events_delivered") == 100 and service.buffer.depth == 0,
               timeout_s=30, message="100 delivered")
    grouped = events_by_seq(emulator.events())
    assert sorted(grouped) == list(range(100)) and all(len(v) == 1 for v in grouped.values())
    assert set(emulator.write_counts().values()) == {1}  # the 98 were not sent again
    assert _batch_statuses(emulator) == [201, 201, 201]  # the batch of 100, then each left-out event alone
    assert service.stats.count("events_unconfirmed") == 2
    assert service.buffer.dead_letter_count == 0


def test_confirmed_delivery_an_event_the_api_keeps_leaving_out_is_dead_lettered_not_confirmed(
        mosquitto: MosquittoBroker, emulator: Emulator, bridge_factory: BridgeFactory) -> None:
    """Events the API never confirms are dead-lettered as not_confirmed after `flush.unconfirmed_attempts`
    answers, with the API's answer kept; every other event is delivered; nothing is lost."""
    service = bridge_factory(mosquitto, emulator, flush={"max_wait_s": 0.1, "unconfirmed_attempts": 3})
    _subscribed(service)
    emulator.set_faults(status_always=503)  # hold the events in the buffer to learn their eventIds
    _publish(mosquitto, 20, "refuse-publisher")
    wait_until(lambda: service.buffer.depth == 20, timeout_s=15, message="20 buffered")
    refused = sorted(record.event_id for record in service.buffer.records())[:2]
    emulator.set_faults(drop_event_ids=refused)  # always: the API keeps leaving them out
    wait_until(lambda: service.buffer.depth == 0, timeout_s=30, message="every event settled")
    letters = [letter for _, letter in service.buffer.dead_letters()]
    assert sorted(letter.event_id for letter in letters) == refused
    for letter in letters:
        assert letter.reason == "not_confirmed" and letter.api_status == 201
        assert '"eventIds":[]' in letter.api_body  # the API's last answer to its lone re-send
    stored = {str(event["eventId"]) for event in emulator.events()}
    assert len(stored) == 18 and not stored & set(refused)
    assert service.stats.count("events_unconfirmed") == 2 * 3
    assert service.stats.count("dead_letters", "not_confirmed") == 2


def test_billing_stop_keeps_everything_reports_the_reason_and_delivers_after_it_is_lifted(
        mosquitto: MosquittoBroker, emulator: Emulator, bridge_factory: BridgeFactory) -> None:
    """During a 402 period nothing is delivered or dead-lettered; /readyz, the status page and `mqtt-bridge status`
    say not ready with the API's billing message; once lifted everything is delivered at the next slow retry."""
    port = free_port()
    service = bridge_factory(mosquitto, emulator, health={"enabled": True, "port": port},
                             api={"billing_retry_s": 1.0})
    base = f"http://127.0.0.1:{port}"
    _subscribed(service)
    emulator.set_faults(status_always=402, status_message="Monthly event quota reached")
    _publish(mosquitto, 50, "billing-publisher")
    reason = "billing/quota: Monthly event quota reached (HTTP 402)"
    with requests.Session() as http:
        wait_until(lambda: http.get(f"{base}/readyz", timeout=5).status_code == 503, timeout_s=15,
                   message="not ready during the billing stop")
        ready = http.get(f"{base}/readyz", timeout=5).json()
        assert (ready["ready"], ready["api_ready"], ready["api_reason"]) == (False, False, reason)
        page = http.get(f"{base}/status.json", timeout=5).json()
        assert page["state"]["apiReason"] == reason
        wait_until(lambda: service.buffer.depth == 50, timeout_s=15, message="all 50 kept in the buffer")
        out = io.StringIO()
        assert status(service.config, out) == 1
        assert f"NOT READY: {reason}" in out.getvalue()
        assert emulator.events() == [] and service.buffer.dead_letter_count == 0
        assert _batch_statuses(emulator)[-1] == 402
        emulator.clear_faults()
        wait_until(lambda: service.buffer.depth == 0, timeout_s=15, message="delivered after the stop is lifted")
        wait_until(lambda: http.get(f"{base}/readyz", timeout=5).status_code == 200, timeout_s=10,
                   message="ready again")
        assert http.get(f"{base}/readyz", timeout=5).json()["api_reason"] == ""
    grouped = events_by_seq(emulator.events())
    assert sorted(grouped) == list(range(50)) and all(len(v) == 1 for v in grouped.values())
    assert service.buffer.dead_letter_count == 0
    assert service.stats.count("api_retries", "402") >= 1
