"""Against the emulator over real HTTP: a camera whose clock runs days ahead still delivers (the route's timestamp
policy), and ids taken from the payload are namespaced by the route (Mosquitto, the bridge in-process)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mqtt_bridge.devtools.emulator.server import Emulator
from mqtt_bridge.model.values import format_timestamp, parse_timestamp
from mqtt_bridge.sdk.publisher import Detection, build_message
from mqtt_bridge.transform.identity import namespaced_event_id
from tests.helpers import TEST_ROUTES, BridgeFactory, MosquittoBroker, PahoClient, events_by_seq, wait_until

pytestmark = pytest.mark.integration

TOPIC = "t/factory/L1/cam1/detections"


def _routes(**extra: object) -> list[dict[str, object]]:
    return [{**route, "topic": str(route["topic"]).replace("{prefix}", "t"), **extra} for route in TEST_ROUTES]


def test_a_camera_three_days_ahead_delivers_every_event_with_its_source_timestamp(
        mosquitto: MosquittoBroker, emulator: Emulator, bridge_factory: BridgeFactory) -> None:
    """Default policy: each payload time outside the API's window is replaced by the receive time, the original
    kept in customMetadata.sourceTimestamp, counted by route; nothing is dead-lettered."""
    service = bridge_factory(mosquitto, emulator, routes=_routes())
    ahead = datetime.now(UTC) + timedelta(days=3)
    messages = [(TOPIC, build_message(detections=[Detection("scratch", 0.9, 10, 10, 4, 4)], timestamp=ahead,
                                      metadata={"seq": seq, "run": "r"})) for seq in range(20)]
    with PahoClient(mosquitto, client_id="drifting-camera").connect() as publisher:
        publisher.publish_many(messages)
    wait_until(lambda: len(events_by_seq(emulator.events())) == 20, timeout_s=20, message="all delivered")
    delivered = [events[0] for events in events_by_seq(emulator.events()).values()]
    assert {event["customMetadata"]["sourceTimestamp"] for event in delivered} == {format_timestamp(ahead)}
    for event in delivered:
        stamp = parse_timestamp(event["timestamp"])
        assert stamp is not None and stamp < datetime.now(UTC) + timedelta(minutes=1)
    assert service.stats.count("timestamps_replaced", label="inspection") == 20
    assert service.buffer.dead_letter_count == 0


def test_payload_ids_on_two_routes_do_not_overwrite_each_other(mosquitto: MosquittoBroker, emulator: Emulator,
                                                               bridge_factory: BridgeFactory) -> None:
    """Two routes whose devices number their messages alike (the same own event_id): two events at the API, each
    UUIDv5 of its route and the id."""
    routes = [*_routes(), {"name": "line2", "topic": "t/line2/{camera}", "use_case": "uc-b",
                           "event_type": "quality_check"}]
    bridge_factory(mosquitto, emulator, routes=routes)
    with PahoClient(mosquitto, client_id="same-numbering").connect() as publisher:
        publisher.publish_many([(TOPIC, build_message(event_id="msg-1", metadata={"seq": 0, "run": "r"})),
                                ("t/line2/cam1", build_message(event_id="msg-1", metadata={"seq": 1, "run": "r"}))])
    wait_until(lambda: len(emulator.events()) == 2, timeout_s=20, message="both delivered")
    assert {event["eventId"] for event in emulator.events()} == {namespaced_event_id("inspection", "msg-1"),
                                                                 namespaced_event_id("line2", "msg-1")}
