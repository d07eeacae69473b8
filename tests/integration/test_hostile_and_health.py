"""Hostile input mixed into a valid stream, and the health endpoints, against real Mosquitto and HTTP."""

from __future__ import annotations

import pytest
import requests

from mqtt_bridge.devtools.emulator.server import Emulator
from tests.helpers import BridgeFactory, MosquittoBroker, PahoClient, detection_message, events_by_seq, wait_until

pytestmark = pytest.mark.integration

VALID_TOPIC = "t/factory/L1/cam1/detections"
HOSTILE: list[tuple[str, bytes, str]] = [
    (VALID_TOPIC, b"{this is not json", "invalid_json"),
    (VALID_TOPIC, b"\xff\xfe\xfd not utf-8", "invalid_json"),
    (VALID_TOPIC, b"[" * 200_000 + b"]" * 200_000, "payload_too_large"),
    (VALID_TOPIC, b"[" * 3000 + b"]" * 3000, "invalid_json"),
    (VALID_TOPIC, b'{"detections": [{"class": 5}]}', "invalid_message"),
    (VALID_TOPIC, b'{"detections": [], "metadata": {"k": "v\\u0000"}, "timestamp": "yesterday"}', "bad_timestamp"),
    (VALID_TOPIC, b"9" * 5000, "invalid_json"),
    (VALID_TOPIC, b"\x00\x00\x00", "invalid_json"),
    (VALID_TOPIC, b'{"detections": [{"class": "a", "confidence": 1e400, "x": 1, "y": 1, "width": 1, "height": 1}]}',
     "invalid_json"),
]


def test_hostile_messages_are_dead_lettered_and_valid_ones_delivered(mosquitto: MosquittoBroker,
                                                                     emulator: Emulator,
                                                                     bridge_factory: BridgeFactory) -> None:
    """Every hostile message lands in the dead letters with its reason; the valid ones around them all arrive."""
    service = bridge_factory(mosquitto, emulator, mqtt={"max_payload_bytes": 100_000})
    messages: list[tuple[str, bytes]] = []
    for seq in range(300):
        messages.append((VALID_TOPIC, detection_message(seq)))
        if seq % 30 == 0 and seq // 30 < len(HOSTILE):
            topic, payload, _ = HOSTILE[seq // 30]
            messages.append((topic, payload))
    with PahoClient(mosquitto, client_id="hostile-publisher").connect() as publisher:
        publisher.publish_many(messages, timeout_s=60)
    wait_until(lambda: len(events_by_seq(emulator.events())) >= 300, timeout_s=30, message="valid delivered")
    wait_until(lambda: service.buffer.dead_letter_count >= len(HOSTILE), timeout_s=10, message="hostile dead-lettered")
    reasons = sorted(letter.reason for _, letter in service.buffer.dead_letters())
    expected = sorted(reason for _, _, reason in HOSTILE)
    assert reasons == expected
    payloads = {letter.payload for _, letter in service.buffer.dead_letters()}
    assert b"\xff\xfe\xfd not utf-8" in payloads
    assert all(letter.route == "inspection" for _, letter in service.buffer.dead_letters())
    assert service.state().is_alive
    assert service.stats.count("dead_letters") == len(expected)


def test_unrouted_topic_is_dead_lettered(mosquitto: MosquittoBroker, emulator: Emulator,
                                         bridge_factory: BridgeFactory) -> None:
    """A message on a subscribed filter that no route accepts is kept with reason no_route."""
    service = bridge_factory(mosquitto, emulator)
    with PahoClient(mosquitto, client_id="unrouted-publisher").connect() as publisher:
        publisher.publish("t/inference/cam1/extra/level", b"{}")  # matches no route template
        publisher.publish("t/inference/cam1", b'{"predictions": []}')
    wait_until(lambda: len(emulator.events()) == 1, timeout_s=15, message="the routed one delivered")
    assert service.buffer.dead_letter_count == 0  # not subscribed: the broker never hands it over


def test_health_endpoints_report_liveness_readiness_and_metrics(mosquitto: MosquittoBroker, emulator: Emulator,
                                                                bridge_factory: BridgeFactory) -> None:
    """/healthz is 200 while running; /readyz turns 503 on a bad API key; /metrics counts deliveries."""
    service = bridge_factory(mosquitto, emulator, health={"enabled": True, "port": 0})
    base = f"http://127.0.0.1:{service.health_port}"
    with requests.Session() as http:
        assert http.get(f"{base}/healthz", timeout=5).status_code == 200
        wait_until(lambda: http.get(f"{base}/readyz", timeout=5).status_code == 200, timeout_s=10,
                   message="ready")
        with PahoClient(mosquitto, client_id="health-publisher").connect() as publisher:
            publisher.publish(VALID_TOPIC, detection_message(1))
        wait_until(lambda: "mqtt_bridge_events_delivered_total 1.0\n" in http.get(f"{base}/metrics", timeout=5).text,
                   timeout_s=10, message="delivery counted")
        metrics = http.get(f"{base}/metrics", timeout=5).text
        assert len(emulator.events()) == 1
        assert "mqtt_bridge_mqtt_connected 1" in metrics
        emulator.set_faults(status_always=401)
        with PahoClient(mosquitto, client_id="health-publisher-2").connect() as publisher:
            publisher.publish(VALID_TOPIC, detection_message(2))
        wait_until(lambda: http.get(f"{base}/readyz", timeout=5).status_code == 503, timeout_s=10,
                   message="not ready with a refused key")
        assert http.get(f"{base}/readyz", timeout=5).json()["api_ready"] is False
